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
//!   Natively, sessions are bearer tokens kept in memory, renewed from the
//!   auth key when they expire; in a browser, an HttpOnly cookie (below).
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
//! # In a browser (wasm32)
//!
//! The same client, API and loop build for `wasm32-unknown-unknown`; only
//! the transport and the runtime seam differ (picked by target, nothing to
//! configure):
//! - HTTP is `fetch` with `credentials: 'include'`; login asks for
//!   `client: "browser"`, so the session is the server's HttpOnly
//!   `cv_session` cookie and no token ever reaches Rust, JS or storage.
//!   The vault keeps (sealed under its data key) which account the cookie
//!   belongs to and the auth key, so [`SyncClient::resume`] works in a
//!   reloaded page or another tab without a second Argon2 run or a new
//!   server session, renewing the cookie from the key if it expired. The realtime
//!   socket is a browser `WebSocket`; the browser sends the cookie on it.
//! - A page on another origin than the server needs the server's
//!   `--allowed-origin` (CORS with credentials for exactly that origin),
//!   and the two must be the same site: the cookie is `SameSite=Strict`.
//! - The loop pauses while the browser is offline (`navigator.onLine`, the
//!   `offline` event): no requests, no socket, [`SyncState::Offline`]; the
//!   `online` event resumes it at once. Backoff, dead letters and
//!   [`SyncStatus`] are the native ones.
//! - [`SyncClient::spawn`] runs the loop with `spawn_local`; Argon2 runs
//!   inline (a page that must stay responsive runs the client in a worker).
//! - One cookie jar per browser profile: every vault of a page (or tab)
//!   that talks to one server host shares the newest sign-in's session. For
//!   one account that is harmless — the server scopes by account, not by
//!   session — but a logout signs all of them out.
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
//! - `transport` — the network seam: one HTTP request, the realtime
//!   WebSocket, the platform's online flag; `native` implements it with
//!   reqwest and tokio-tungstenite (bearer tokens), `browser` with `fetch`
//!   and a browser `WebSocket` (an HttpOnly session cookie).
//! - `rt` — the runtime seam: sleep, timeout, spawn, a monotonic clock.
//! - `http` — the API over a transport and error decoding; `wire` — JSON
//!   bodies.
//! - `error` — [`SyncError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
mod backoff;
#[cfg(target_family = "wasm")]
mod browser;
mod client;
mod dead_letter;
mod error;
mod http;
#[cfg(not(target_family = "wasm"))]
mod native;
mod pull;
mod push;
mod rt;
mod runner;
mod saved_session;
mod status;
mod transport;
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
#[cfg(all(feature = "tls", not(target_family = "wasm")))]
pub fn install_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: a
        // provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
