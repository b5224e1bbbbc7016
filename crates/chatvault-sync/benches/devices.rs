//! The `devices` benchmark (see `native/devices.rs` for what it measures and
//! its baseline). It needs a native server, so on wasm32 (where
//! `cargo clippy --all-targets` also builds benchmarks) it is empty.

#[cfg(not(target_family = "wasm"))]
#[path = "native/devices.rs"]
mod native;

fn main() {
    #[cfg(not(target_family = "wasm"))]
    native::main();
}
