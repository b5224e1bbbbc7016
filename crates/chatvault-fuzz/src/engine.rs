//! The fuzz loop and its mutator: seeded, so a run's inputs are the same
//! for the same seed (what a target does with them may still depend on
//! time, e.g. random nonces).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::targets::{Target, Verdict};

/// When a target's run stops.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// After this many executions (tests: deterministic amount of work).
    Executions(u64),
    /// At this instant (the xtask: bounded wall time).
    Until(Instant),
}

/// An input that broke a target.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The input as handed to the target.
    pub input: Vec<u8>,
    /// The panic message or the broken property.
    pub message: String,
}

/// What one target's run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run (seeds included).
    pub executions: u64,
    /// Inputs the target declined (e.g. asking for a costly KDF).
    pub skipped: u64,
    /// Inputs the target accepted as valid.
    pub accepted: u64,
    /// The first failure, which ends the run.
    pub failure: Option<Failure>,
}

/// JSON-ish tokens worth splicing in: limits, wrong types, empties.
const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"-0.0",
    b"18446744073709551616",
    b"9223372036854775807",
    b"4294967296",
    b"\"\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"[]",
    b"{}",
    b"[[[[[[[[",
    b"\"AAAA\"",
    b"\"0190f5b2-7c3e-7000-8000-000000000001\"",
    b"\xff\xfe",
    b"\xf0\x9f\x98\x80",
];

/// Applies 1-4 random mutations to `input`; `others` are the inputs a
/// splice may take its tail from.
pub fn mutate(rng: &mut StdRng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                out[at] = match rng.random_range(0..4) {
                    0 => 0,
                    1 => 0xff,
                    2 => b"\"{}[],:0\\"[rng.random_range(0..9)],
                    _ => rng.random(),
                };
            }
            2 => out.truncate(rng.random_range(0..=len)),
            3 if len > 0 => {
                let from = rng.random_range(0..len);
                let to = rng.random_range(from..=len.min(from + 64));
                out.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.random_range(0..len);
                let to = rng.random_range(from..=len.min(from + 256));
                let copy = out[from..to].to_vec();
                let at = rng.random_range(0..=len);
                out.splice(at..at, copy);
            }
            5 if !others.is_empty() => {
                let other = &others[rng.random_range(0..others.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                let at = rng.random_range(0..=len);
                // Replace what stands there (a value, often) or insert.
                let end = if rng.random_bool(0.5) {
                    (at + token.len()).min(len)
                } else {
                    at
                };
                out.splice(at..end, token.iter().copied());
            }
            _ => {
                let at = rng.random_range(0..=len);
                let count = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..count).map(|_| rng.random()).collect();
                out.splice(at..at, bytes);
            }
        }
    }
    out
}

/// Runs `target`: every seed as it is, then mutated seeds (and, one time
/// in ten, random bytes) until `budget` is spent or an input fails.
/// Panics inside the target are caught and reported as failures; the
/// caller should silence the panic hook while this runs.
pub fn fuzz(target: &mut dyn Target, seed: u64, budget: Budget) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = target.seeds().to_vec();
    let mut report = Report {
        target: target.name(),
        executions: 0,
        skipped: 0,
        accepted: 0,
        failure: None,
    };
    let spent = |report: &Report| match budget {
        Budget::Executions(n) => report.executions >= n,
        Budget::Until(deadline) => Instant::now() >= deadline,
    };
    let mut next_seed = 0;
    while !spent(&report) {
        let input = if next_seed < seeds.len() {
            next_seed += 1;
            seeds[next_seed - 1].clone()
        } else if rng.random_ratio(1, 10) || seeds.is_empty() {
            let len = rng.random_range(0..512);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let base = &seeds[rng.random_range(0..seeds.len())];
            mutate(&mut rng, base, &seeds)
        };
        report.executions += 1;
        let verdict = catch_unwind(AssertUnwindSafe(|| target.check(&input)))
            .unwrap_or_else(|panic| Verdict::Fail(format!("panicked: {}", panic_message(&panic))));
        match verdict {
            Verdict::Rejected => {}
            Verdict::Accepted => report.accepted += 1,
            Verdict::Skipped => report.skipped += 1,
            Verdict::Fail(message) => {
                report.failure = Some(Failure { input, message });
                break;
            }
        }
    }
    report
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_change_the_input() {
        let input = br#"{"changes":[{"op":"upsert"}]}"#.to_vec();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &input, std::slice::from_ref(&input)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).iter().filter(|m| **m != input).count() > 40);
    }
}
