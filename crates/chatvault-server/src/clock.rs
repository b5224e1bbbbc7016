//! Where "now" comes from. Every time-dependent rule in the server (session
//! expiry, login backoff, clock-skew checks, the tombstone horizon) reads
//! time through [`ServerClock`], so tests move time forward instead of sleeping.
//!
//! This module must never be bypassed: no other code calls
//! `SystemTime::now()` for a decision.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatvault_core::Timestamp;

/// A source of wall-clock time.
pub trait ServerClock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemServerClock;

impl ServerClock for SystemServerClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to: for tests. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualServerClock(Arc<AtomicI64>);

impl ManualServerClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualServerClock(Arc::new(AtomicI64::new(start.as_millis())))
    }

    /// A clock standing at the system's current time.
    pub fn starting_now() -> Self {
        Self::new(SystemServerClock.now())
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl ServerClock for ManualServerClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// `t + d`, saturating.
pub(crate) fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(
        t.as_millis()
            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// `t - d`, saturating.
pub(crate) fn minus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(
        t.as_millis()
            .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualServerClock::new(Timestamp(1_000));
        let shared = c.clone();
        c.advance(Duration::from_secs(2));
        assert_eq!(shared.now(), Timestamp(3_000));
        shared.set(Timestamp(5));
        assert_eq!(c.now(), Timestamp(5));
    }
}
