//! Where the vault gets the time. A parameter, so tests control it.

use chatvault_core::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// In a browser, `Date.now()`: `std::time::SystemTime` panics on
    /// wasm32-unknown-unknown.
    #[cfg(target_family = "wasm")]
    fn now(&self) -> Timestamp {
        Timestamp(js_sys::Date::now() as i64)
    }

    #[cfg(not(target_family = "wasm"))]
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock stopped at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(std::sync::atomic::AtomicI64::new(t.as_millis()))
    }
    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        self.0
            .store(t.as_millis(), std::sync::atomic::Ordering::SeqCst);
    }
    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
