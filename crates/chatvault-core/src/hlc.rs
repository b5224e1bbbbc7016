//! Hybrid logical clock.
//!
//! Every write is stamped with an [`Hlc`]: wall-clock milliseconds, a
//! counter that orders writes within the same millisecond (or while the wall
//! clock lags a stamp already seen), and the writing device's id as the final
//! tie-break. Stamps are totally ordered, and that order is what
//! last-writer-wins compares — never raw `updated_at` times — so a device
//! whose clock runs backwards still orders its own writes correctly, and a
//! device whose clock runs far ahead is refused rather than allowed to win
//! every conflict.
//!
//! Clock rules (docs/protocol.md, "Clock"): a device persists the highest
//! stamp it issued (its *mark*) with the records it covers and resumes just
//! above it, never at a lease ahead of it; a mark more than
//! [`REBASE_AFTER_MS`] ahead of the wall clock means the clock ran ahead and
//! has been fixed, so the device re-bases to the wall clock instead of
//! continuing from it, and a write that replaces a record stamped that far
//! ahead gets a one-off stamp just above the record ([`HlcClock::tick_above`])
//! without dragging the clock forward again.
//!
//! Must never do I/O: persisting the mark is the caller's business.

use crate::{CoreError, DeviceId, Timestamp};
use std::fmt;
use std::str::FromStr;

/// How far ahead of the local clock a remote stamp may be before it is
/// refused as clock skew (one hour).
pub const MAX_CLOCK_DRIFT_MS: u64 = 60 * 60 * 1000;

/// How far ahead of the wall clock a device's persisted mark (or a
/// version it replaces) may be for the clock to continue from it (one
/// minute). Beyond that the clock re-bases to the wall clock: a mark that far
/// ahead was stamped while the device's clock was wrong, and continuing
/// from it would keep every later write that far ahead for good.
pub const REBASE_AFTER_MS: u64 = 60 * 1000;

/// Largest wall time a stamp can carry (48 bits of milliseconds: year 10889).
const MAX_WALL_MS: u64 = (1 << 48) - 1;

/// A hybrid logical clock stamp. Ordered by wall time, then counter, then
/// device id. Its text form (`WALL-COUNTER-DEVICE`, fixed-width lowercase
/// hex) sorts in the same order, so stores and servers can compare stamps as
/// strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    wall_ms: u64,
    counter: u32,
    device: DeviceId,
}

impl Hlc {
    /// The greatest stamp there can be (every other one is below it).
    pub const MAX: Hlc = Hlc {
        wall_ms: MAX_WALL_MS,
        counter: u32::MAX,
        device: DeviceId(u64::MAX),
    };

    /// Builds a stamp from its parts.
    pub fn new(wall_ms: u64, counter: u32, device: DeviceId) -> Result<Self, CoreError> {
        if wall_ms > MAX_WALL_MS {
            return Err(CoreError::InvalidHlc(format!(
                "wall time {wall_ms} out of range"
            )));
        }
        Ok(Self {
            wall_ms,
            counter,
            device,
        })
    }

    /// Wall-clock milliseconds of the stamp.
    pub fn wall_ms(&self) -> u64 {
        self.wall_ms
    }

    /// Orders stamps issued within one wall-clock millisecond.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The device that issued the stamp.
    pub fn device(&self) -> DeviceId {
        self.device
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:012x}-{:08x}-{}",
            self.wall_ms, self.counter, self.device
        )
    }
}

impl FromStr for Hlc {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let bad = || CoreError::InvalidHlc(s.to_owned());
        let mut parts = s.split('-');
        let (Some(wall), Some(counter), Some(device), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if wall.len() != 12 || counter.len() != 8 || device.len() != 16 {
            return Err(bad());
        }
        let hex = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(hex(wall) && hex(counter) && hex(device)) {
            return Err(bad());
        }
        Ok(Hlc {
            wall_ms: u64::from_str_radix(wall, 16).map_err(|_| bad())?,
            counter: u32::from_str_radix(counter, 16).map_err(|_| bad())?,
            device: device.parse().map_err(|_| bad())?,
        })
    }
}

serde_as_text!(Hlc);

/// One device's clock: issues strictly increasing stamps and folds in the
/// stamps it receives from other devices.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock for `device` that has issued nothing yet.
    pub fn new(device: DeviceId) -> Self {
        Self {
            last: Hlc {
                wall_ms: 0,
                counter: 0,
                device,
            },
            max_drift_ms: MAX_CLOCK_DRIFT_MS,
        }
    }

    /// A clock that resumes after `last` (e.g. the highest stamp found in a
    /// store on open), so a restarted device never reissues a stamp.
    pub fn resume(device: DeviceId, last: Option<Hlc>) -> Self {
        let mut clock = Self::new(device);
        if let Some(seen) = last {
            clock.last.wall_ms = seen.wall_ms;
            clock.last.counter = seen.counter;
        }
        clock
    }

    /// Whether `mark` is so far ahead of `now` (more than
    /// [`REBASE_AFTER_MS`]) that a clock must re-base instead of resuming
    /// from it.
    pub fn is_far_ahead(mark: Hlc, now: Timestamp) -> bool {
        mark.wall_ms > wall(now).saturating_add(REBASE_AFTER_MS)
    }

    /// Folds in a stamp this device issued elsewhere (another process on
    /// the same store claimed it first), so the next tick is above it. No
    /// drift check: the stamp is this device's own.
    pub fn fold(&mut self, issued: Hlc) {
        if (issued.wall_ms, issued.counter) > (self.last.wall_ms, self.last.counter) {
            self.last.wall_ms = issued.wall_ms;
            self.last.counter = issued.counter;
        }
    }

    /// A stamp greater than `floor` (the version of the record a write
    /// replaces) and, when it comes from the clock, greater than every stamp
    /// issued or observed so far.
    ///
    /// A floor within [`REBASE_AFTER_MS`] of `now` is folded into the clock
    /// first (ordinary HLC). A floor further ahead was stamped by a clock
    /// that ran ahead: the answer is then the one-off stamp just above it
    /// (same wall time, next counter, this device) and the clock itself
    /// stays at the wall clock, so one old record does not drag every later
    /// write into the future again. Tell the two apart by comparing the
    /// answer with [`HlcClock::last`].
    pub fn tick_above(&mut self, now: Timestamp, floor: Hlc) -> Result<Hlc, CoreError> {
        if !Self::is_far_ahead(floor, now) {
            self.fold(floor);
            return self.tick(now);
        }
        let stamp = self.tick(now)?;
        if stamp > floor {
            return Ok(stamp);
        }
        Ok(Hlc {
            wall_ms: floor.wall_ms,
            counter: floor
                .counter
                .checked_add(1)
                .ok_or(CoreError::ClockExhausted)?,
            device: self.last.device,
        })
    }

    /// Changes the tolerated remote drift (default [`MAX_CLOCK_DRIFT_MS`]).
    pub fn with_max_drift(mut self, max_drift_ms: u64) -> Self {
        self.max_drift_ms = max_drift_ms;
        self
    }

    /// This clock's device.
    pub fn device(&self) -> DeviceId {
        self.last.device
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new stamp, greater than every stamp issued or observed so far.
    pub fn tick(&mut self, now: Timestamp) -> Result<Hlc, CoreError> {
        let now = wall(now);
        if now > self.last.wall_ms {
            self.last.wall_ms = now;
            self.last.counter = 0;
        } else {
            self.last.counter = self
                .last
                .counter
                .checked_add(1)
                .ok_or(CoreError::ClockExhausted)?;
        }
        Ok(self.last)
    }

    /// Folds in a stamp received from elsewhere, so the next local stamp is
    /// greater than it. Refuses stamps implausibly far ahead of `now`.
    pub fn observe(&mut self, remote: Hlc, now: Timestamp) -> Result<(), CoreError> {
        let now_ms = now.as_millis().max(0) as u64;
        if remote.wall_ms > now_ms.saturating_add(self.max_drift_ms) {
            return Err(CoreError::ClockSkew {
                ahead_ms: remote.wall_ms - now_ms,
                limit_ms: self.max_drift_ms,
            });
        }
        if (remote.wall_ms, remote.counter) > (self.last.wall_ms, self.last.counter) {
            self.last.wall_ms = remote.wall_ms;
            self.last.counter = remote.counter;
        }
        Ok(())
    }
}

/// `now` as a stamp's wall time (clamped into the representable range).
fn wall(now: Timestamp) -> u64 {
    now.as_millis().clamp(0, MAX_WALL_MS as i64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(n: u64) -> DeviceId {
        DeviceId(n)
    }

    #[test]
    fn ticks_increase_even_when_wall_clock_goes_back() {
        let mut c = HlcClock::new(dev(1));
        let a = c.tick(Timestamp(1000)).unwrap();
        let b = c.tick(Timestamp(1000)).unwrap();
        let d = c.tick(Timestamp(500)).unwrap();
        let e = c.tick(Timestamp(2000)).unwrap();
        assert!(a < b && b < d && d < e);
        assert_eq!(d.wall_ms(), 1000);
        assert_eq!(e.counter(), 0);
    }

    #[test]
    fn observe_moves_clock_past_remote() {
        let mut c = HlcClock::new(dev(1));
        let remote = Hlc::new(5000, 7, dev(2)).unwrap();
        c.observe(remote, Timestamp(4000)).unwrap();
        let next = c.tick(Timestamp(4000)).unwrap();
        assert!(next > remote);
    }

    #[test]
    fn observe_refuses_far_future_stamps() {
        let mut c = HlcClock::new(dev(1)).with_max_drift(1000);
        let remote = Hlc::new(10_000, 0, dev(2)).unwrap();
        let err = c.observe(remote, Timestamp(1000)).unwrap_err();
        assert!(matches!(err, CoreError::ClockSkew { ahead_ms: 9000, .. }));
        // The clock did not move.
        assert!(c.tick(Timestamp(1000)).unwrap() < remote);
    }

    #[test]
    fn resume_never_reissues() {
        let seen = Hlc::new(9000, 3, dev(1)).unwrap();
        let mut c = HlcClock::resume(dev(1), Some(seen));
        assert!(c.tick(Timestamp(100)).unwrap() > seen);
    }

    #[test]
    fn tick_above_folds_a_near_floor_into_the_clock() {
        let mut c = HlcClock::new(dev(1));
        let floor = Hlc::new(5_000, 4, dev(2)).unwrap();
        let s = c.tick_above(Timestamp(4_000), floor).unwrap();
        assert!(s > floor);
        assert_eq!(s, c.last(), "a clock stamp");
        assert!(c.tick(Timestamp(4_000)).unwrap() > s);
    }

    #[test]
    fn tick_above_a_far_ahead_floor_leaves_the_clock_at_wall_time() {
        let now = Timestamp(1_000_000);
        let mut c = HlcClock::new(dev(1));
        let floor = Hlc::new(1_000_000 + REBASE_AFTER_MS + 1, 9, dev(1)).unwrap();
        let s = c.tick_above(now, floor).unwrap();
        assert!(s > floor);
        assert_eq!((s.wall_ms(), s.counter()), (floor.wall_ms(), 10));
        assert_ne!(s, c.last(), "a one-off stamp, not the clock's");
        assert_eq!(c.tick(now).unwrap().wall_ms(), 1_000_000);
    }

    #[test]
    fn far_ahead_means_beyond_the_rebase_bound() {
        let now = Timestamp(1_000_000);
        let at = |ms| Hlc::new(ms, 0, dev(1)).unwrap();
        assert!(!HlcClock::is_far_ahead(
            at(1_000_000 + REBASE_AFTER_MS),
            now
        ));
        assert!(HlcClock::is_far_ahead(at(1_000_001 + REBASE_AFTER_MS), now));
    }

    #[test]
    fn fold_moves_the_clock_above_a_stamp_issued_elsewhere() {
        let mut c = HlcClock::new(dev(1));
        let other = Hlc::new(9_000, 2, dev(1)).unwrap();
        c.fold(other);
        assert!(c.tick(Timestamp(100)).unwrap() > other);
    }

    #[test]
    fn text_form_rejects_garbage() {
        for bad in [
            "",
            "1-2-3",
            "00000000000g-00000000-0000000000000001",
            "000000000001-00000000-0000000000000001-x",
            "00000000000A-00000000-0000000000000001",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn text_order_matches_stamp_order(
            a in (0u64..MAX_WALL_MS, any::<u32>(), any::<u64>()),
            b in (0u64..MAX_WALL_MS, any::<u32>(), any::<u64>()),
        ) {
            let a = Hlc::new(a.0, a.1, dev(a.2)).unwrap();
            let b = Hlc::new(b.0, b.1, dev(b.2)).unwrap();
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
            prop_assert_eq!(a.to_string().parse::<Hlc>().unwrap(), a);
        }

        #[test]
        fn ticks_are_strictly_monotonic(times in proptest::collection::vec(0i64..10_000, 1..50)) {
            let mut c = HlcClock::new(dev(3));
            let mut prev = None;
            for t in times {
                let s = c.tick(Timestamp(t)).unwrap();
                if let Some(p) = prev { prop_assert!(s > p); }
                prev = Some(s);
            }
        }
    }
}
