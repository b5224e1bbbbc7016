//! Fuzzing on stable Rust: every parser that reads bytes a hostile party
//! can choose, driven by a seeded mutator for a bounded time or count.
//!
//! cargo-fuzz needs nightly, so this is a plain loop: each target starts
//! from valid inputs it builds itself (a real export, a key envelope, a
//! sealed record, an encrypted stream, a push body), mutates them — bit
//! flips, byte and token substitutions, truncation, deletion, duplication,
//! splicing two inputs — and also tries fully random bytes. A target
//! fails on a panic (caught, with the input kept) or when an input breaks
//! a property: an error without a message, a forged ciphertext that
//! opens, a round trip that does not come back, a 5xx from the server.
//!
//! No coverage feedback, so it finds shallow bugs fast and deep ones by
//! luck; what it proves is that each parser answers garbage with an error.
//! A failing input is written to `regressions/<target>/` and replayed by
//! `tests/regressions.rs` from then on.
//!
//! Must never: touch anything but temporary directories, or depend on the
//! clock for what it checks (the time budget only decides when to stop).
//!
//! # Layout
//! - `engine` — [`fuzz`], [`Budget`], [`Report`], the mutator.
//! - `targets` — [`Target`], [`Verdict`] and [`all_targets`]: import,
//!   key envelope, record blob, stream, server push/pull, WebSocket auth.

mod engine;
mod targets;

pub use engine::{fuzz, mutate, Budget, Failure, Report};
pub use targets::{all_targets, Target, Verdict};
