//! chatvault for web apps: the [`Vault`](chatvault::Vault) on IndexedDB and
//! key-value state on localStorage, sessionStorage and IndexedDB, exported
//! to JavaScript with wasm-bindgen.
//!
//! This is the raw binding: the TypeScript package (`web/packages/chatvault`)
//! wraps it into the API people use (typed objects, `ChatvaultError`
//! instances, `Date`-free numbers). The boundary is deliberately narrow:
//! structured arguments and answers cross as JSON text (the serde shapes of
//! the Rust types, camelCase), errors as plain `{code, message}` objects
//! the package turns into `ChatvaultError`s, so the binding needs no
//! hand-written JS glue per type and the package's `.d.ts` is the one place
//! the shapes are described for people.
//!
//! On any target but wasm32 the crate is empty.
//!
//! # Layout
//! - `vault` — `openVault` and the `WasmVault` handle.
//! - `kv` — `openKv` and `WasmKv`.
//! - `lifecycle` — export to bytes and import from bytes, with progress.
//! - `migrate` — `migrateVault`: a vault moved between IndexedDB and
//!   SQLite on OPFS.
//! - `sync` — `WasmVault.sync`, `joinVault` and the `WasmSync` handle.
//! - `boundary` — JSON in and out, errors out, promises.

#[cfg(target_family = "wasm")]
mod boundary;
#[cfg(target_family = "wasm")]
mod kv;
#[cfg(target_family = "wasm")]
mod lifecycle;
#[cfg(target_family = "wasm")]
mod migrate;
#[cfg(target_family = "wasm")]
mod sync;
#[cfg(target_family = "wasm")]
mod vault;
