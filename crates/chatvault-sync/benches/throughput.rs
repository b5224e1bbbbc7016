//! The `throughput` benchmark (see `native/throughput.rs` for what it measures and
//! its baseline). It needs a native server, so on wasm32 (where
//! `cargo clippy --all-targets` also builds benchmarks) it is empty.

#[cfg(not(target_family = "wasm"))]
#[path = "native/throughput.rs"]
mod native;

fn main() {
    #[cfg(not(target_family = "wasm"))]
    native::main();
}
