//! [`Limiter`]: how often unauthenticated clients may make the server do
//! expensive work (prelogin, register, login), as plain state plus time.
//!
//! - Token buckets per source address and for the whole process cap the
//!   request rate on the account routes.
//! - A login attempt is **reserved before** the key is verified: it counts
//!   as a failure for its (username, address) pair until it succeeds, so a
//!   burst of concurrent guesses sees the backoff its predecessors caused
//!   (check-then-act raced: 40 concurrent wrong logins were all verified).
//! - Backoff after failures is per (username, address), so guesses from a
//!   stranger's address never lock the owner's address. What bounds
//!   guessing across many addresses is a per-username token bucket, which
//!   an address that has signed in to that name before skips: the owner's
//!   usual devices are never slowed by strangers, and a new device waits at
//!   most one refill interval.
//!
//! State lives in this process's memory, bounded by `max_tracked` entries
//! per table (stale entries are pruned first; beyond the bound a new
//! address or pair is not tracked, and only the global and per-username
//! buckets apply to it). Must never read a clock itself (time is a
//! parameter) nor block: callers hold its lock only for a map update.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use chatvault_core::Timestamp;

use crate::auth::{ThrottlePolicy, ThrottleState};
use crate::types::Username;

/// A token bucket's shape: up to `burst` requests at once, refilled at
/// `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Sustained requests per minute.
    pub per_minute: u32,
}

impl RateLimit {
    /// A limit so high it never applies (tests, or a proxy that limits).
    pub const UNLIMITED: RateLimit = RateLimit {
        burst: u32::MAX,
        per_minute: u32::MAX,
    };

    /// Milli-tokens regained per millisecond, as a fraction per_minute/60_000
    /// of a token: kept as integers so refill is exact.
    fn refill(self, bucket: &mut Bucket, now: Timestamp) {
        // A clock that stepped back refills nothing (never negative).
        let elapsed =
            u128::try_from(now.as_millis().saturating_sub(bucket.at.as_millis())).unwrap_or(0);
        let gained = elapsed * u128::from(self.per_minute) * 1000 / 60_000;
        let cap = u128::from(self.burst) * 1000;
        bucket.milli_tokens = (u128::from(bucket.milli_tokens) + gained)
            .min(cap)
            .try_into()
            .unwrap_or(u64::MAX);
        bucket.at = now;
    }

    /// Seconds until a bucket with `milli_tokens` has one whole token.
    fn wait_secs(self, milli_tokens: u64) -> u64 {
        let missing = 1000u64.saturating_sub(milli_tokens);
        if self.per_minute == 0 {
            return 3600;
        }
        // ms = missing milli-tokens / (per_minute / 60_000 ms) / 1000
        let ms = (u128::from(missing) * 60_000).div_ceil(u128::from(self.per_minute) * 1000);
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    fn full(self, at: Timestamp) -> Bucket {
        Bucket {
            milli_tokens: u64::from(self.burst).saturating_mul(1000),
            at,
        }
    }
}

/// Every unauthenticated-route limit. Each applies per server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// prelogin + register + login from one source address (default 30
    /// at once, 60 a minute).
    pub per_address: RateLimit,
    /// prelogin + register + login from everyone (default 600 at once,
    /// 3,000 a minute).
    pub global: RateLimit,
    /// Login attempts for one username from addresses that never signed in
    /// to it (default 10 at once, 6 a minute).
    pub per_username: RateLimit,
    /// Entries kept per table before new ones go untracked (default
    /// 100,000: a few MiB).
    pub max_tracked: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_address: RateLimit {
                burst: 30,
                per_minute: 60,
            },
            global: RateLimit {
                burst: 600,
                per_minute: 3_000,
            },
            per_username: RateLimit {
                burst: 10,
                per_minute: 6,
            },
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at: Timestamp,
}

/// Backoff state of one (username, address) pair.
#[derive(Debug, Clone, Copy)]
struct Pair {
    throttle: ThrottleState,
    /// This address has signed in to this name: it skips the per-username
    /// bucket.
    trusted: bool,
}

/// Why a request is refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over an address or global rate: 429 `rate_limited`.
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// In login backoff (pair or username): 429 `too_many_attempts`.
    Backoff {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
}

#[derive(Default)]
struct Tables {
    global: Option<Bucket>,
    addresses: HashMap<IpAddr, Bucket>,
    usernames: HashMap<Username, Bucket>,
    pairs: HashMap<(Username, IpAddr), Pair>,
}

/// The process's limiter state. Cheap to share behind the app state.
pub(crate) struct Limiter {
    limits: RateLimits,
    throttle: ThrottlePolicy,
    tables: Mutex<Tables>,
}

fn secs_until(until: Timestamp, now: Timestamp) -> u64 {
    let ms = u64::try_from(until.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
    ms.div_ceil(1000).max(1)
}

/// Makes room in `map` for one more key: drops entries `stale` says are
/// indistinguishable from new ones. `false` when still full.
fn room<K: Eq + Hash, V>(map: &mut HashMap<K, V>, max: usize, stale: impl Fn(&V) -> bool) -> bool {
    if map.len() < max {
        return true;
    }
    map.retain(|_, v| !stale(v));
    map.len() < max
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits, throttle: ThrottlePolicy) -> Limiter {
        Limiter {
            limits,
            throttle,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves plain counters behind:
        // still valid, so keep using them.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one token for a request on an account route from `address`.
    pub(crate) fn admit(&self, address: IpAddr, now: Timestamp) -> Result<(), Refusal> {
        let limits = self.limits;
        let mut tables = self.tables();
        let tables = &mut *tables;
        let global = tables.global.get_or_insert_with(|| limits.global.full(now));
        limits.global.refill(global, now);
        let tracked = tables.addresses.contains_key(&address)
            || room(&mut tables.addresses, limits.max_tracked, |b| {
                let mut b = *b;
                limits.per_address.refill(&mut b, now);
                b.milli_tokens >= u64::from(limits.per_address.burst) * 1000
            });
        let mut address_bucket = None;
        if tracked {
            let bucket = tables
                .addresses
                .entry(address)
                .or_insert_with(|| limits.per_address.full(now));
            limits.per_address.refill(bucket, now);
            if bucket.milli_tokens < 1000 {
                return Err(Refusal::RateLimited {
                    retry_after: limits.per_address.wait_secs(bucket.milli_tokens),
                });
            }
            address_bucket = Some(bucket);
        }
        if global.milli_tokens < 1000 {
            return Err(Refusal::RateLimited {
                retry_after: limits.global.wait_secs(global.milli_tokens),
            });
        }
        global.milli_tokens -= 1000;
        if let Some(bucket) = address_bucket {
            bucket.milli_tokens -= 1000;
        }
        Ok(())
    }

    /// Reserves a login attempt for `username` from `address`: refused while
    /// the pair is in backoff or (for an address that never signed in to
    /// this name) the name's bucket is empty; otherwise counted as a
    /// failure until [`succeeded`](Self::succeeded) says otherwise.
    pub(crate) fn reserve_login(
        &self,
        username: &Username,
        address: IpAddr,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let limits = self.limits;
        let throttle = self.throttle;
        let forget = crate::clock::minus(now, throttle.forget_after());
        let mut tables = self.tables();
        let tables = &mut *tables;
        let key = (username.clone(), address);
        let pair = tables.pairs.get(&key).copied();
        if let Some(until) = pair.and_then(|p| throttle.locked_until(p.throttle)) {
            if until > now {
                return Err(Refusal::Backoff {
                    retry_after: secs_until(until, now),
                });
            }
        }
        if !pair.is_some_and(|p| p.trusted) {
            let tracked = tables.usernames.contains_key(username)
                || room(&mut tables.usernames, limits.max_tracked, |b| {
                    let mut b = *b;
                    limits.per_username.refill(&mut b, now);
                    b.milli_tokens >= u64::from(limits.per_username.burst) * 1000
                });
            if tracked {
                let bucket = tables
                    .usernames
                    .entry(username.clone())
                    .or_insert_with(|| limits.per_username.full(now));
                limits.per_username.refill(bucket, now);
                if bucket.milli_tokens < 1000 {
                    return Err(Refusal::Backoff {
                        retry_after: limits.per_username.wait_secs(bucket.milli_tokens),
                    });
                }
                bucket.milli_tokens -= 1000;
            }
        }
        let fresh = Pair {
            throttle: ThrottleState {
                failures: 0,
                last_failure_at: now,
            },
            trusted: false,
        };
        let mut entry = pair.unwrap_or(fresh);
        entry.throttle.failures = entry.throttle.failures.saturating_add(1);
        entry.throttle.last_failure_at = now;
        if pair.is_some()
            || room(&mut tables.pairs, limits.max_tracked, |p| {
                !p.trusted && p.throttle.last_failure_at < forget
            })
        {
            tables.pairs.insert(key, entry);
        }
        Ok(())
    }

    /// The reserved attempt of `username` from `address` proved the key:
    /// clears the pair's failures and trusts the address for this name.
    pub(crate) fn succeeded(&self, username: &Username, address: IpAddr) {
        let mut tables = self.tables();
        if let Some(pair) = tables.pairs.get_mut(&(username.clone(), address)) {
            pair.throttle.failures = 0;
            pair.trusted = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn name(s: &str) -> Username {
        s.parse().unwrap()
    }

    #[test]
    fn address_buckets_refill_at_their_rate() {
        let limits = RateLimits {
            per_address: RateLimit {
                burst: 2,
                per_minute: 60,
            },
            ..RateLimits::default()
        };
        let l = Limiter::new(limits, ThrottlePolicy::default());
        let t = Timestamp(1_000_000);
        assert!(l.admit(ip(2), t).is_ok());
        assert!(l.admit(ip(2), t).is_ok());
        assert_eq!(
            l.admit(ip(2), t),
            Err(Refusal::RateLimited { retry_after: 1 })
        );
        assert!(l.admit(ip(3), t).is_ok(), "another address has its own");
        assert!(l.admit(ip(2), Timestamp(1_001_000)).is_ok());
    }

    #[test]
    fn a_full_table_stops_tracking_new_keys_instead_of_growing() {
        let limits = RateLimits {
            max_tracked: 2,
            ..RateLimits::default()
        };
        let l = Limiter::new(limits, ThrottlePolicy::default());
        let t = Timestamp(0);
        for last in 1..=10 {
            assert!(l.admit(ip(last), t).is_ok());
        }
        assert!(l.tables().addresses.len() <= 2);
    }

    #[test]
    fn strangers_never_lock_a_trusted_address() {
        let l = Limiter::new(RateLimits::default(), ThrottlePolicy::default());
        let alice = name("alice");
        let t = Timestamp(0);
        l.reserve_login(&alice, ip(1), t).unwrap();
        l.succeeded(&alice, ip(1));
        // Strangers drain the name's bucket and lock their own pairs.
        for last in 2..40 {
            let _ = l.reserve_login(&alice, ip(last), t);
        }
        assert!(matches!(
            l.reserve_login(&alice, ip(200), t),
            Err(Refusal::Backoff { retry_after: 10 })
        ));
        assert!(l.reserve_login(&alice, ip(1), t).is_ok());
    }
}
