//! Key-value state in the browser: the [`KvStore`](chatvault_store::KvStore)
//! contract on localStorage and sessionStorage ([`WebStorageKv`]) for
//! small state, and on IndexedDB ([`IndexedDbKv`]) for state too big for
//! them. Any of them can be sealed by an encrypted vault
//! (`chatvault::SealedKv`).
//!
//! | | localStorage | sessionStorage | IndexedDB |
//! |---|---|---|---|
//! | lasts | until cleared | this tab's session | until cleared |
//! | shared by | every tab of the origin | this tab | every tab of the origin |
//! | size guard by default | 512 KiB a value, 1 MiB a namespace | same | 16 MiB a value |
//! | in a Web Worker | no | no | yes |
//! | a write is | one `setItem` | one `setItem` | one transaction |
//!
//! Every write is whole or absent: web storage replaces an item in one
//! call (which either stores all of it or throws), IndexedDB in one
//! transaction. The size guard ([`KvLimits`](chatvault_store::KvLimits))
//! refuses before anything is written; a browser quota error is
//! [`KvError::Full`](chatvault_store::KvError::Full), with nothing written
//! either.

mod indexed_db;
mod web_storage;

pub use indexed_db::{IndexedDbKv, IndexedDbKvArea, KV_DATABASE};
pub use web_storage::{WebStorage, WebStorageKv};

use crate::idb::DomError;
use chatvault_store::{KvError, StoreError};

/// A DOM error of a key-value operation, as the error a user can act on.
fn kv_error(doing: &str, e: &DomError) -> KvError {
    match e.name.as_str() {
        "QuotaExceededError" => KvError::Full {
            detail: format!("{doing}: the browser's storage quota for this site is used up ({e})"),
        },
        "SecurityError" | "InvalidStateError" | "UnknownError" | "InvalidAccessError" => {
            KvError::Unavailable {
                detail: format!(
                    "{doing}: storage is blocked for this site, or the database was closed ({e})"
                ),
            }
        }
        _ => KvError::Backend {
            detail: format!("{doing}: {e}"),
        },
    }
}

/// A store error (from opening the IndexedDB area) as a key-value error.
fn from_store_error(e: StoreError) -> KvError {
    match e {
        StoreError::Full { detail, .. } => KvError::Full { detail },
        StoreError::Unavailable { .. } | StoreError::NewerSchema { .. } => KvError::Unavailable {
            detail: e.to_string(),
        },
        other => KvError::Backend {
            detail: other.to_string(),
        },
    }
}
