//! [`Backoff`]: how long to wait before the next attempt after a failure —
//! exponential, capped, and jittered so a fleet of clients that lost the
//! server together does not come back together.
//!
//! Pure: no clock, no sleeping; the caller owns the random source (seeded
//! in tests) and the waiting.

use std::time::Duration;

use rand::Rng;

/// The shape of a backoff: first delay and cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failure (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Default for BackoffPolicy {
    /// 1 s, doubling up to 2 minutes.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120),
        }
    }
}

/// Consecutive-failure state: each [`next`](Backoff::next) doubles the
/// base delay up to the cap and returns a delay drawn uniformly from
/// `[base / 2, base]` ("equal jitter": never zero, never above the cap).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    /// No failures yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// The delay before the next attempt, counting one more failure.
    pub fn next(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.base();
        self.failures = self.failures.saturating_add(1);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=spread))
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn base(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    #[test]
    fn delays_double_within_jitter_and_stay_capped() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(policy());
        let mut base = Duration::from_millis(100);
        for _ in 0..40 {
            let d = b.next(&mut rng);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(Duration::from_secs(5));
        }
        assert_eq!(b.failures(), 40);
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(policy());
        for _ in 0..10 {
            b.next(&mut rng);
        }
        b.reset();
        assert!(b.next(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn seeded_jitter_is_reproducible_and_actually_jitters() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(BackoffPolicy {
                initial: Duration::from_secs(8),
                max: Duration::from_secs(8),
            });
            (0..8).map(|_| b.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        let delays = run(3);
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }
}
