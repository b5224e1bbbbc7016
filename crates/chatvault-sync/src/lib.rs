//! chatvault's sync client: keeps one encrypted [`Vault`](chatvault::Vault)
//! in step with one `chatvault-server` account, so every device of a user
//! converges (the wire protocol is `docs/protocol.md`).
//!
//! ```no_run
//! # async fn demo(vault: std::sync::Arc<chatvault::Vault>) -> Result<(), chatvault_sync::SyncError> {
//! use chatvault_sync::{SyncClient, SyncOptions};
//! // First device: create the account from the vault's own key envelope.
//! let sync = SyncClient::register(vault, "https://sync.example", "alice", "passphrase", SyncOptions::default()).await?;
//! let task = sync.spawn();          // sync now, on every poke, on notify(), periodically
//! // ... app writes to sync.vault(), then:
//! sync.notify();
//! let status = sync.status();      // watch::Receiver<SyncStatus>
//! # drop(status);
//! task.stop().await;
//! # Ok(()) }
//! ```
//!
//! What it does, and the promises it keeps:
//! - **Accounts**: [`SyncClient::register`], [`SyncClient::login`] and, on a
//!   new device, [`SyncClient::join`] — one passphrase yields both the
//!   server-auth key and the key-encryption key (Argon2id runs once per
//!   sign-in; joining also creates and opens the vault), and every device
//!   uses the account's one data key, so the server only ever holds
//!   ciphertext. Plaintext vaults are refused. A passphrase change goes to
//!   the server first, then the vault ([`SyncClient::change_passphrase`]).
//!   Sessions are bearer tokens kept in memory, renewed from the auth key
//!   when they expire.
//! - **Push**: the vault's outbox in batches; applied and superseded
//!   changes leave the outbox, rejected ones go to a persisted dead-letter
//!   list ([`SyncClient::dead_letters`], [`SyncClient::retry_dead_letter`])
//!   — never dropped, never blocking the rest. An oversized change is
//!   isolated by splitting its batch.
//! - **Pull**: pages after the stored cursor, applied by last-writer-wins
//!   with the cursor in the same atomic write; `410 resync_required`
//!   rebuilds from a snapshot without touching the outbox, once (a second
//!   410 right after is [`SyncError::ResyncLoop`], not a loop);
//!   `410 server_restored` (the server's database was restored from a
//!   backup) rebuilds deleting nothing and pushes back what the server
//!   lost ([`PullReport::requeued`]).
//! - **Loop**: [`SyncClient::run`] syncs on start, on [`SyncClient::notify`],
//!   on every WebSocket poke and (re)connect, and periodically; transient
//!   failures retry forever with capped, jittered exponential backoff. A
//!   missed poke costs latency, never data.
//! - **Status**: [`SyncStatus`] through a `tokio::sync::watch` receiver.
//!
//! Must never send plaintext or a passphrase to the server, drop a local
//! change, or retry a refused sign-in on its own (that would lock the
//! account out): a device whose key the server stopped accepting shows
//! [`SyncError::Unauthorized`] until the app calls [`SyncClient::sign_in`].
//!
//! # Layout
//! - `client` — [`SyncClient`], [`SyncOptions`]: construction, sessions,
//!   `sync_once`, passphrase change.
//! - `account` — sign-in steps: prelogin, key derivation, login, keys.
//! - `push` — outbox → `/v1/sync/push`, dead-lettering.
//! - `pull` — `/v1/sync/pull`, resync from `/v1/sync/snapshot`.
//! - `dead_letter` — [`DeadLetter`] and its persistence in vault metadata.
//! - `runner` — [`SyncClient::run`]: the background loop and the WebSocket.
//! - `status` — [`SyncStatus`], [`SyncState`], the reports.
//! - `backoff` — [`Backoff`]: capped, jittered exponential delays.
//! - `http` — the HTTP transport and error decoding; `wire` — JSON bodies.
//! - `error` — [`SyncError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
mod backoff;
mod client;
mod dead_letter;
mod error;
mod http;
mod pull;
mod push;
mod runner;
mod saved_session;
mod status;
mod wire;

pub use backoff::{Backoff, BackoffPolicy};
pub use client::{AccountSession, SyncClient, SyncOptions};
pub use dead_letter::{DeadLetter, RejectReason};
pub use error::{Result, SyncError};
pub use runner::SyncTask;
pub use status::{PullReport, PushReport, SyncReport, SyncState, SyncStatus};

/// Makes `ring` the process's rustls crypto provider, unless one is
/// installed already. The sync client calls it before it builds its HTTP
/// client; call it yourself before building other `reqwest` clients in a
/// process that links this crate with `tls`.
///
/// Why: with `tls`, reqwest is built without a bundled provider (its own
/// would compile aws-lc, a large C library, for the same TLS), and cargo
/// unifies features, so *every* reqwest client in the build then expects a
/// process-wide provider and panics when building without one.
#[cfg(feature = "tls")]
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: a
        // provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
