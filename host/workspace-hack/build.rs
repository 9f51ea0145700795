// Cargo resolves `[build-dependencies]` only for a package with a build
// script: this empty one makes the syn entry in Cargo.toml count.
fn main() {}
