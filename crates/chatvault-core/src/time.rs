//! Wall-clock time as plain data. The core never reads a clock: callers pass
//! "now" in, which keeps every rule deterministic and testable.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch (UTC), the unit JavaScript's
/// `Date.now()` speaks. Serialized as a plain JSON number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant minus a number of whole days (saturating).
    pub fn minus_days(self, days: u32) -> Timestamp {
        Timestamp(self.0.saturating_sub(i64::from(days) * 86_400_000))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
