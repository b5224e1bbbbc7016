//! chatvault's browser storage: the [`Store`](chatvault_store::Store)
//! contract on IndexedDB, for `wasm32` in a page or a Web Worker, and
//! key-value state on localStorage, sessionStorage and IndexedDB ([`kv`]).
//!
//! On any other target the crate is empty, so the native workspace builds
//! and lints nothing of the browser.
//!
//! # What it stores where
//! One IndexedDB database per vault (its name is the caller's), with one
//! object store per table of the contract: `conversations`, `messages`,
//! `tombstones`, `marks` (deletion marks), `totals` (per-conversation
//! message counts and bytes, kept by every write so `usage` never reads
//! every message) and `meta`. The outbox has no store of its own: a
//! record's pending change is a property of the record (or tombstone)
//! itself, written in the same put, and one sparse index per record store
//! lists the pending and parked ones in sequence order. Each query the trait serves is one key range on an index whose
//! ascending order is the order the contract asks for (newest-first lists
//! store negated times and reversed ids). Record bodies are kept as the
//! store is handed them (`Uint8Array`; ciphertext in an encrypted vault);
//! ids, foreign keys, times and versions stay clear so queries work
//! without the key. The module docs of `schema` list every store and index.
//!
//! # The transaction rule
//! Every [`WriteBatch`](chatvault_store::WriteBatch) is **one** readwrite
//! IndexedDB transaction over all object stores: a record, its outbox entry
//! and the totals commit together, and a tab closed mid-write leaves all or
//! nothing. Checks that decide a write ([`WriteOp::RequireConversation`],
//! the last-writer-wins decision of [`WriteOp::Merge`], stamp claims) read
//! inside that same transaction. [`Store::write_all`] applies its whole
//! source in one transaction too, streaming: batches are pulled as their
//! ops are needed (a window of a few hundred ahead, in which a change is
//! queued in its record's own put) and the writer never lets more
//! than a few hundred writes wait in the browser, so memory stays flat in
//! the input size. A transaction is only ever kept
//! alive by chaining its own requests; nothing else is awaited inside it
//! (IndexedDB would commit it early). Writes open with
//! `{durability: "strict"}` by default ([`Durability`]).
//!
//! # Schema and migrations
//! The database version is the schema version ([`SCHEMA_VERSION`]).
//! Opening an older database runs the registered migrations in order in
//! the browser's one versionchange transaction (all or nothing, as SQLite's
//! migrations are); a database written by a newer chatvault is refused with
//! [`StoreError::NewerSchema`](chatvault_store::StoreError::NewerSchema).
//! A connection closes itself when another tab needs to upgrade.
//!
//! # Errors
//! DOM errors become [`StoreError`](chatvault_store::StoreError)s with the
//! DOM error (name and message) as their source: `QuotaExceededError` is
//! [`StoreError::Full`](chatvault_store::StoreError::Full) with nothing of
//! the batch kept, as is reaching [`IndexedDbOptions::max_bytes`]; a
//! missing object store is `Corrupt`; a closed, deleted or blocked database
//! is `Unavailable`; anything else is `Backend`.
//!
//! # Layout
//! - `store` — [`IndexedDbStore`], [`IndexedDbOptions`], [`Durability`].
//! - `schema` — object stores, indexes, the version and migrations.
//! - `read` — the queries, one readonly transaction each.
//! - `write` — batch application in one readwrite transaction.
//! - `codec` — records to and from the stored JS objects.
//! - `storage_manager` — the browser's usage, quota and persistence
//!   figures for the site (`navigator.storage`), behind `footprint`.
//! - `idb` — opening databases, awaiting requests and transactions; DOM
//!   errors.
//! - [`kv`] — key-value state on localStorage, sessionStorage and
//!   IndexedDB (its own database).

#[cfg(target_family = "wasm")]
mod codec;
#[cfg(target_family = "wasm")]
mod idb;
#[cfg(target_family = "wasm")]
pub mod kv;
#[cfg(target_family = "wasm")]
mod read;
#[cfg(target_family = "wasm")]
mod schema;
#[cfg(target_family = "wasm")]
mod storage_manager;
#[cfg(target_family = "wasm")]
mod store;
#[cfg(target_family = "wasm")]
mod write;

#[cfg(target_family = "wasm")]
pub use schema::SCHEMA_VERSION;
#[cfg(target_family = "wasm")]
pub use store::{Durability, IndexedDbOptions, IndexedDbStore};
