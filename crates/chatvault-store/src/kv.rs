//! Key-value state: the small, app-shaped data a chat app keeps beside its
//! conversations (settings, drafts, UI state, a zustand `persist` store).
//!
//! A [`KvStore`] is one **namespace** of string keys mapping to string
//! values, on some storage area: memory ([`MemoryKv`]), and in a browser
//! localStorage, sessionStorage or IndexedDB (`chatvault-indexeddb`).
//! Several namespaces share an area without seeing each other's keys. The
//! values are text because that is what the browser areas hold and what
//! state libraries serialize to; an encrypted vault seals them (the
//! `chatvault` crate's `SealedKv`) into text as well.
//!
//! # The contract every backend keeps
//! - A `set` writes the whole value or nothing: a refused write (a size
//!   guard, the browser's quota) leaves the previous value in place.
//! - The **size guard** ([`KvLimits`]) refuses, with
//!   [`KvError::TooLarge`] and before touching storage, a value over
//!   `max_value_bytes` or a write that would take the namespace past
//!   `max_total_bytes`. Sizes are [`entry_bytes`]: key plus value in UTF-8.
//!   For localStorage and sessionStorage the default guard
//!   ([`KvLimits::web_storage`]) stays well below the browsers' quota of
//!   about 5 MiB per origin, so a full quota — shared with everything
//!   else the origin stores — is the rare case, and is still
//!   [`KvError::Full`] with nothing written.
//! - [`keys`](KvStore::keys) lists this namespace only, sorted;
//!   [`clear`](KvStore::clear) removes this namespace only.
//!
//! Must never: hand back a value it did not store whole, or touch keys of
//! another namespace.

use crate::MaybeSendSync;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a key-value operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The write was refused by the namespace's size guard; nothing was
    /// written and the previous value is intact.
    #[error(
        "value for \"{key}\" is too large: {bytes} bytes would exceed the {limit}-byte limit of \
         {what}; nothing was written (store large state in the IndexedDB kv instead)"
    )]
    TooLarge {
        /// The key being written.
        key: String,
        /// The size the write would have (the value alone, or the namespace
        /// after the write, as `what` says).
        bytes: u64,
        /// The limit it would exceed.
        limit: u64,
        /// Which limit: `"one value"` or `"the namespace"`.
        what: &'static str,
    },
    /// The storage area is out of space (the browser's quota for this
    /// origin); nothing was written.
    #[error(
        "storage is full ({detail}); nothing was written: remove some state or data to make room"
    )]
    Full {
        /// What the storage reported.
        detail: String,
    },
    /// The storage area cannot be used here: disabled by the user or a
    /// policy, not offered in this context (localStorage in a Web Worker),
    /// or closed.
    #[error("key-value storage is unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
    /// A namespace name or key that is not allowed (see
    /// [`check_namespace`] and [`check_key`]).
    #[error("invalid key-value {what} {name:?}: {reason}")]
    Invalid {
        /// `"namespace"` or `"key"`.
        what: &'static str,
        /// The name given (cut to 64 characters).
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A stored value that cannot be read: an encrypted value that does not
    /// open with this vault's keys for this key and namespace (damaged,
    /// moved from another key, written by another vault), or a plain value
    /// where a sealed one is expected. The stored value is left as it is.
    #[error("stored value for \"{key}\" cannot be read: {reason}")]
    Damaged {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other failure of the underlying storage.
    #[error("key-value storage failed: {detail}")]
    Backend {
        /// What the storage reported.
        detail: String,
    },
}

impl KvError {
    /// A stable, machine-readable name of the situation (see
    /// `VaultError::code` in the `chatvault` crate).
    pub fn code(&self) -> &'static str {
        match self {
            KvError::TooLarge { .. } => "too_large",
            KvError::Full { .. } => "storage_full",
            KvError::Unavailable { .. } => "unavailable",
            KvError::Invalid { .. } => "invalid",
            KvError::Damaged { .. } => "damaged",
            KvError::Backend { .. } => "storage_failed",
        }
    }
}

/// Result of a key-value operation.
pub type KvResult<T> = std::result::Result<T, KvError>;

/// The size guard of one namespace. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Largest single entry ([`entry_bytes`]) a `set` accepts.
    pub max_value_bytes: Option<u64>,
    /// Largest total of the namespace's entries after a `set`.
    pub max_total_bytes: Option<u64>,
}

impl KvLimits {
    /// No guard: only the storage's own quota applies.
    pub const fn unbounded() -> KvLimits {
        KvLimits {
            max_value_bytes: None,
            max_total_bytes: None,
        }
    }

    /// The default for localStorage and sessionStorage: 512 KiB per entry
    /// and 1 MiB per namespace. Browsers give an origin about 5 MiB (5 M
    /// UTF-16 units in Chromium), and at most two bytes per UTF-8 byte are
    /// stored, so a namespace at its limit uses under half of it.
    pub const fn web_storage() -> KvLimits {
        KvLimits {
            max_value_bytes: Some(512 * 1024),
            max_total_bytes: Some(1024 * 1024),
        }
    }

    /// The default for the IndexedDB kv: 16 MiB per entry (a value is read
    /// and written whole), no namespace limit (the browser's quota for the
    /// origin applies).
    pub const fn indexed_db() -> KvLimits {
        KvLimits {
            max_value_bytes: Some(16 * 1024 * 1024),
            max_total_bytes: None,
        }
    }

    /// Refuses a write of `value` under `key` in a namespace whose entries
    /// total `total_before` bytes, `previous` of which belong to the entry
    /// being replaced (0 for a new key). Backends call it before they touch
    /// storage.
    pub fn check(&self, key: &str, value: &str, total_before: u64, previous: u64) -> KvResult<()> {
        let bytes = entry_bytes(key, value);
        if let Some(limit) = self.max_value_bytes {
            if bytes > limit {
                return Err(KvError::TooLarge {
                    key: key.to_owned(),
                    bytes,
                    limit,
                    what: "one value",
                });
            }
        }
        if let Some(limit) = self.max_total_bytes {
            let after = total_before.saturating_sub(previous) + bytes;
            if after > limit {
                return Err(KvError::TooLarge {
                    key: key.to_owned(),
                    bytes: after,
                    limit,
                    what: "the namespace",
                });
            }
        }
        Ok(())
    }
}

impl KvLimits {
    /// [`check`](Self::check) for a namespace holding `entries` (its
    /// `(key, value)` pairs): sums them and finds the entry `key` replaces.
    pub fn check_among<'a>(
        &self,
        key: &str,
        value: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> KvResult<()> {
        let (mut total, mut previous) = (0, 0);
        for (k, v) in entries {
            let bytes = entry_bytes(k, v);
            total += bytes;
            if k == key {
                previous = bytes;
            }
        }
        self.check(key, value, total, previous)
    }
}

/// The size an entry counts for against [`KvLimits`]: its key and value in
/// UTF-8 bytes.
pub fn entry_bytes(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64
}

/// What a namespace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvUsage {
    /// Number of keys.
    pub entries: u64,
    /// Sum of [`entry_bytes`] over them.
    pub bytes: u64,
}

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Namespaces are 1–64 ASCII letters, digits, `.`, `_` or `-`: they become
/// part of storage keys and database names, and a separator can never
/// occur in one, so two namespaces never share a stored key.
pub fn check_namespace(name: &str) -> KvResult<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAMESPACE_LEN {
        Some("it is longer than 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(invalid("namespace", name, reason)),
    }
}

/// Keys are any non-empty text up to 1 KiB.
pub fn check_key(key: &str) -> KvResult<()> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("it is longer than 1024 bytes")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(invalid("key", key, reason)),
    }
}

fn invalid(what: &'static str, name: &str, reason: &'static str) -> KvError {
    KvError::Invalid {
        what,
        name: name.chars().take(64).collect(),
        reason,
    }
}

/// One namespace of key-value state. See the [module docs](self) for the
/// contract.
#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
pub trait KvStore: MaybeSendSync {
    /// The namespace's name.
    fn namespace(&self) -> &str;

    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> KvResult<Option<String>>;

    /// Stores `value` under `key`, whole or not at all.
    async fn set(&self, key: &str, value: &str) -> KvResult<()>;

    /// Removes `key`; removing a missing key is not an error.
    async fn remove(&self, key: &str) -> KvResult<()>;

    /// This namespace's keys, sorted.
    async fn keys(&self) -> KvResult<Vec<String>>;

    /// Removes every key of this namespace (and of no other).
    async fn clear(&self) -> KvResult<()>;

    /// What this namespace holds.
    async fn usage(&self) -> KvResult<KvUsage>;
}

/// A shared or boxed namespace is a namespace.
macro_rules! forward_kv_store {
    ($($holder:ident),*) => {$(
        #[cfg_attr(target_family = "wasm", async_trait(?Send))]
        #[cfg_attr(not(target_family = "wasm"), async_trait)]
        impl<T: KvStore + ?Sized> KvStore for $holder<T> {
            fn namespace(&self) -> &str {
                (**self).namespace()
            }

            async fn get(&self, key: &str) -> KvResult<Option<String>> {
                (**self).get(key).await
            }

            async fn set(&self, key: &str, value: &str) -> KvResult<()> {
                (**self).set(key, value).await
            }

            async fn remove(&self, key: &str) -> KvResult<()> {
                (**self).remove(key).await
            }

            async fn keys(&self) -> KvResult<Vec<String>> {
                (**self).keys().await
            }

            async fn clear(&self) -> KvResult<()> {
                (**self).clear().await
            }

            async fn usage(&self) -> KvResult<KvUsage> {
                (**self).usage().await
            }
        }
    )*};
}

forward_kv_store!(Arc, Box);

/// An in-memory storage area that namespaces share, as a browser origin's
/// localStorage is shared by everything on it. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryKvArea {
    entries: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl MemoryKvArea {
    /// An empty area.
    pub fn new() -> MemoryKvArea {
        MemoryKvArea::default()
    }

    /// Namespace `name` of this area, guarded by `limits`.
    pub fn namespace(&self, name: &str, limits: KvLimits) -> KvResult<MemoryKv> {
        check_namespace(name)?;
        Ok(MemoryKv {
            area: self.clone(),
            namespace: name.to_owned(),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), String>> {
        // Every operation leaves the map whole (one insert or remove), so a
        // poisoned lock still guards consistent data.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One namespace of a [`MemoryKvArea`]: for tests, and for state that
/// should last only as long as the process.
#[derive(Debug, Clone)]
pub struct MemoryKv {
    area: MemoryKvArea,
    namespace: String,
    limits: KvLimits,
}

impl MemoryKv {
    /// A namespace of its own fresh area.
    pub fn new(name: &str, limits: KvLimits) -> KvResult<MemoryKv> {
        MemoryKvArea::new().namespace(name, limits)
    }

    fn usage_of(&self, entries: &BTreeMap<(String, String), String>) -> KvUsage {
        let mut usage = KvUsage::default();
        for ((_, key), value) in self.range(entries) {
            usage.entries += 1;
            usage.bytes += entry_bytes(key, value);
        }
        usage
    }

    fn range<'a>(
        &self,
        entries: &'a BTreeMap<(String, String), String>,
    ) -> impl Iterator<Item = (&'a (String, String), &'a String)> {
        let namespace = self.namespace.clone();
        entries
            .range((self.namespace.clone(), String::new())..)
            .take_while(move |((ns, _), _)| *ns == namespace)
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl KvStore for MemoryKv {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn get(&self, key: &str) -> KvResult<Option<String>> {
        check_key(key)?;
        let entries = self.area.lock();
        Ok(entries
            .get(&(self.namespace.clone(), key.to_owned()))
            .cloned())
    }

    async fn set(&self, key: &str, value: &str) -> KvResult<()> {
        check_key(key)?;
        let mut entries = self.area.lock();
        let slot = (self.namespace.clone(), key.to_owned());
        let held = self
            .range(&entries)
            .map(|((_, k), v)| (k.as_str(), v.as_str()));
        self.limits.check_among(key, value, held)?;
        entries.insert(slot, value.to_owned());
        Ok(())
    }

    async fn remove(&self, key: &str) -> KvResult<()> {
        check_key(key)?;
        self.area
            .lock()
            .remove(&(self.namespace.clone(), key.to_owned()));
        Ok(())
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        let entries = self.area.lock();
        Ok(self.range(&entries).map(|((_, k), _)| k.clone()).collect())
    }

    async fn clear(&self) -> KvResult<()> {
        let mut entries = self.area.lock();
        let keys: Vec<_> = self.range(&entries).map(|(slot, _)| slot.clone()).collect();
        for slot in keys {
            entries.remove(&slot);
        }
        Ok(())
    }

    async fn usage(&self) -> KvResult<KvUsage> {
        Ok(self.usage_of(&self.area.lock()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_cannot_hold_a_separator_or_be_empty() {
        for bad in ["", "a:b", "a b", "ä", "/x", &"n".repeat(65)] {
            assert!(
                matches!(
                    check_namespace(bad),
                    Err(KvError::Invalid {
                        what: "namespace",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        for good in ["app", "my-app.settings_v2", &"n".repeat(64)] {
            check_namespace(good).unwrap();
        }
    }

    #[test]
    fn the_guard_counts_the_replaced_entry_once() {
        let limits = KvLimits {
            max_value_bytes: Some(10),
            max_total_bytes: Some(20),
        };
        // 15 bytes held, 5 of them the entry being replaced: 10 + 10 = 20.
        limits.check("k", "123456789", 15, 5).unwrap();
        let err = limits.check("k", "123456789", 16, 5).unwrap_err();
        assert!(
            matches!(
                err,
                KvError::TooLarge {
                    bytes: 21,
                    limit: 20,
                    what: "the namespace",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = limits.check("k", "1234567890", 0, 0).unwrap_err();
        assert!(
            matches!(
                err,
                KvError::TooLarge {
                    what: "one value",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
