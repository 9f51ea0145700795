//! No code: see Cargo.toml. The binaries depend on this crate only for the
//! dependency features it asks for.
