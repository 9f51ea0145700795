//! Component builds only: a 128 KiB guest stack instead of rustc's 1 MiB
//! default for wasm32.
//!
//! The host gives every decision a fresh instance and, after the call, resets
//! the pages the instance dirtied (it scans the instance's accessible linear
//! memory for them, see `host/plugin-host/src/runtime.rs`). The stack sits at
//! the bottom of linear memory, so its size is part of what every decision
//! scans; `place` and `rebalance` use a few KiB of it. A stack overflow in
//! the guest is still caught (it traps), it does not corrupt the heap.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=131072");
        println!("cargo:rustc-link-arg=--initial-memory=393216");
    }
}
