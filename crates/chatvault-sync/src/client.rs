//! [`SyncClient`]: one vault, one server account. Owns the session (a bearer
//! token in memory, or in a browser the cookie the browser holds;
//! re-established from the auth key when it expires), the
//! lock that keeps push and pull of one vault strictly one at a time, and
//! the published [`SyncStatus`].
//!
//! Sessions are never persisted: a token is as good as the passphrase for
//! the server, and a native app has the passphrase at hand when it opens
//! its encrypted vault anyway.

// In a browser the vault and the transport hold JS handles (not `Send`)
// and there is one thread: the `Arc`s are plain reference counts there.
#![cfg_attr(target_family = "wasm", allow(clippy::arc_with_non_send_sync))]

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use chatvault::{Store, Vault, VaultOptions};
use chatvault_core::{EntityKind, ErrorCode, OpId};
use chatvault_crypto::{AuthKey, KeyEnvelope};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Mutex, Notify};
use zeroize::Zeroizing;

use crate::account::{self, Session};
use crate::backoff::BackoffPolicy;
use crate::dead_letter::DeadLetter;
use crate::error::{Result, SyncError};
use crate::http::{Api, Body};
use crate::saved_session;
use crate::status::{PullReport, PushReport, SyncReport, SyncState, SyncStatus};
use crate::transport::{Method, Transport};
pub use crate::wire::AccountSession;
use crate::wire::{PutKeysRequest, RevokedSessions, SessionList};

/// Tuning. `Default` suits production; tests shorten the times.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Outbox entries read per round (at most 1000, the server's limit).
    pub push_batch: usize,
    /// Rounds of `push_batch` one push makes at most; `None` (the default)
    /// drains the outbox. A bound makes a push return (asking a running
    /// loop to come straight back) on a device writing faster than it can
    /// push.
    pub max_push_rounds: Option<usize>,
    /// Request body budget per push; batches are split below it (the
    /// server's default limit is 4 MiB). A single larger change is still
    /// sent alone, in case the server accepts more.
    pub max_push_bytes: usize,
    /// Changes per pull or snapshot page (1–1000).
    pub page_limit: u32,
    /// Sync this often even without pokes or local writes.
    pub interval: Duration,
    /// Backoff after transient failures (and for WebSocket reconnects).
    pub backoff: BackoffPolicy,
    /// TCP/TLS connect timeout (natively; a browser has its own), and the
    /// time a WebSocket gets to open.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Keep a WebSocket open for realtime pokes while running.
    pub realtime: bool,
    /// Reconnect a WebSocket that has been silent this long (the server
    /// pings every 30 s by default). Natively only: a browser answers pings
    /// without showing them to the page.
    pub realtime_idle_timeout: Duration,
    /// Seed for the backoff jitter (tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            push_batch: 500,
            max_push_rounds: None,
            max_push_bytes: 3 * 1024 * 1024,
            page_limit: 500,
            interval: Duration::from_secs(300),
            backoff: BackoffPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            realtime: true,
            realtime_idle_timeout: Duration::from_secs(75),
            jitter_seed: None,
        }
    }
}

/// The credentials a session is (re-)established from.
struct Credentials {
    auth_key: AuthKey,
    session: Option<Session>,
    /// Counts sessions: a request that failed with `401` names the one it
    /// used, so a renewal by another task is not repeated. (A cookie
    /// session has no token to compare.)
    generation: u64,
    /// Why the client is signed out, once the server refused its key.
    signed_out: Option<String>,
}

/// The session a request is made with.
pub(crate) struct Presented {
    /// Which session (see `Credentials::generation`).
    pub(crate) generation: u64,
    /// Its bearer token; `None` for a cookie session.
    pub(crate) token: Option<Zeroizing<String>>,
}

impl Presented {
    pub(crate) fn bearer(&self) -> Option<&str> {
        self.token.as_deref().map(String::as_str)
    }
}

pub(crate) struct Inner {
    pub(crate) vault: Arc<Vault>,
    pub(crate) api: Api,
    pub(crate) username: String,
    pub(crate) options: SyncOptions,
    credentials: Mutex<Credentials>,
    /// One push or pull at a time per client.
    pub(crate) sync_lock: Mutex<()>,
    pub(crate) status: watch::Sender<SyncStatus>,
    /// Local writes (`notify`).
    pub(crate) local: Notify,
    /// Pokes, WebSocket (re)connects, sign-ins.
    pub(crate) remote: Notify,
    pub(crate) rng: StdMutex<StdRng>,
}

/// Syncs one encrypted [`Vault`] with one account on a chatvault server.
/// Cheap to clone; clones share the session, the status and the lock.
#[derive(Clone)]
pub struct SyncClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("server", &self.inner.api.base())
            .field("username", &self.inner.username)
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Creates an account for `vault` on `server` and signs in. The account
    /// gets the vault's own key envelope; the server-auth key is derived
    /// from the same passphrase, salt and parameters, so one passphrase
    /// serves both (Argon2id runs once).
    ///
    /// Errors: [`SyncError::WrongPassphrase`] if `passphrase` does not open
    /// the vault, [`SyncError::UsernameTaken`], [`SyncError::NotEncrypted`].
    /// If only the sign-in after registering fails (say, the network went
    /// away), the account exists: use [`login`](Self::login).
    pub async fn register(
        vault: Arc<Vault>,
        server: &str,
        username: &str,
        passphrase: &str,
        options: SyncOptions,
    ) -> Result<SyncClient> {
        let api = api(server, &options)?;
        let envelope = local_envelope(&vault).await?;
        let (_, policy) = vault.replica().kdf_settings();
        let keys = account::derive(passphrase, *envelope.kdf(), *envelope.salt(), policy).await?;
        // Proves the passphrase locally before anything reaches the server.
        envelope.unlock_with_keys(&keys)?;
        account::register(&api, username, &envelope, &keys).await?;
        let session = account::login(&api, username, keys.auth_key()).await?;
        Self::start(
            vault,
            api,
            username,
            keys.auth_key().clone(),
            session,
            options,
            true,
        )
        .await
    }

    /// Signs in to an existing account for an open `vault`.
    ///
    /// If the account's passphrase was changed on another device (or a
    /// change here was interrupted after the server took it), the server's
    /// key envelope is adopted — after checking that it wraps this vault's
    /// data key; a vault of another account is refused.
    ///
    /// Errors: [`SyncError::InvalidCredentials`] (the server refused the
    /// key), [`SyncError::WrongPassphrase`] (refused locally, without
    /// spending a login attempt, when the account still uses the vault's
    /// salt and the passphrase does not open the vault),
    /// [`SyncError::TooManyAttempts`].
    pub async fn login(
        vault: Arc<Vault>,
        server: &str,
        username: &str,
        passphrase: &str,
        options: SyncOptions,
    ) -> Result<SyncClient> {
        let api = api(server, &options)?;
        let (auth_key, session) = sign_in_to(&api, &vault, username, passphrase).await?;
        Self::start(vault, api, username, auth_key, session, options, true).await
    }

    /// A new device: signs in, fetches the account's key envelope and opens
    /// a vault in `store` on it, so records pushed by the account's other
    /// devices decrypt here. An empty store gets a new vault; a store that
    /// already holds this account's vault is opened (adopting the server's
    /// envelope if the passphrase changed) — so this is also how a device
    /// recovers when only the new passphrase is known.
    pub async fn join(
        store: Arc<dyn Store>,
        vault_options: VaultOptions,
        server: &str,
        username: &str,
        passphrase: &str,
        options: SyncOptions,
    ) -> Result<SyncClient> {
        let api = api(server, &options)?;
        let (kdf, salt) = account::prelogin(&api, username).await?;
        let keys = account::derive(passphrase, kdf, salt, vault_options.kdf_policy).await?;
        let session = account::login(&api, username, keys.auth_key()).await?;
        let opened = match account::fetch_envelope(&api, session.bearer()).await {
            Ok(envelope) => Vault::builder()
                .store(store)
                .options(vault_options)
                .account_envelope(&envelope)
                .passphrase(passphrase)
                .open()
                .await
                .map_err(SyncError::from),
            Err(e) => Err(e),
        };
        let vault = match opened {
            Ok(vault) => vault,
            Err(e) => {
                // Do not leave a session behind for a device that did not join.
                let _ = account::logout(&api, session.bearer()).await;
                return Err(e);
            }
        };
        Self::start(
            Arc::new(vault),
            api,
            username,
            keys.auth_key().clone(),
            session,
            options,
            true,
        )
        .await
    }

    /// Resumes the session this device saved in `vault` (sealed under its
    /// data key) when it last registered, signed in or joined as
    /// `username` on `server` — no passphrase, no Argon2, no round trip, and
    /// no new session on the server. `None` when there is none: use
    /// [`login`](Self::login).
    ///
    /// An expired or revoked session is renewed with the saved auth key on
    /// first use; if the server refuses that key (the passphrase changed on
    /// another device), requests fail with [`SyncError::Unauthorized`] and
    /// [`sign_in`](Self::sign_in) with the current passphrase recovers.
    pub async fn resume(
        vault: Arc<Vault>,
        server: &str,
        username: &str,
        options: SyncOptions,
    ) -> Result<Option<SyncClient>> {
        let api = api(server, &options)?;
        let Some((session, auth_key)) = saved_session::load(&vault, api.base(), username).await?
        else {
            return Ok(None);
        };
        let client = Self::start(vault, api, username, auth_key, session, options, false).await?;
        Ok(Some(client))
    }

    /// Signs in from a saved session when there is one, else with
    /// `passphrase` ([`resume`](Self::resume), then [`login`](Self::login)).
    pub async fn resume_or_login(
        vault: Arc<Vault>,
        server: &str,
        username: &str,
        passphrase: &str,
        options: SyncOptions,
    ) -> Result<SyncClient> {
        match Self::resume(vault.clone(), server, username, options.clone()).await {
            Ok(Some(client)) => Ok(client),
            Ok(None) => Self::login(vault, server, username, passphrase, options).await,
            Err(e) => {
                tracing::warn!(error = %e, "the saved session cannot be used; signing in");
                Self::login(vault, server, username, passphrase, options).await
            }
        }
    }

    async fn start(
        vault: Arc<Vault>,
        api: Api,
        username: &str,
        auth_key: AuthKey,
        session: Session,
        options: SyncOptions,
        save: bool,
    ) -> Result<SyncClient> {
        vault.replica().set_sync_remote(Some(api.base())).await?;
        if save {
            if let Err(e) =
                saved_session::save(&vault, api.base(), username, &session, &auth_key).await
            {
                tracing::warn!(error = %e, "cannot save the session; the next process signs in again");
            }
        }
        let rng = match options.jitter_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let client = SyncClient {
            inner: Arc::new(Inner {
                vault,
                api,
                username: username.to_owned(),
                options,
                credentials: Mutex::new(Credentials {
                    auth_key,
                    session: Some(session),
                    generation: 0,
                    signed_out: None,
                }),
                sync_lock: Mutex::new(()),
                status: watch::channel(SyncStatus::default()).0,
                local: Notify::new(),
                remote: Notify::new(),
                rng: StdMutex::new(rng),
            }),
        };
        let cursor = client.load_cursor().await?;
        let (pending, parked) = client.inner.vault.replica().outbox_counts().await?;
        let last_error = client.stored_last_error().await;
        client.inner.status.send_modify(|s| {
            s.cursor = cursor;
            s.pending = pending;
            s.dead_letters = parked as usize;
            s.last_error = last_error;
        });
        tracing::info!(
            server = client.inner.api.base(),
            username,
            "signed in to the sync server"
        );
        Ok(client)
    }

    /// Signs in again with `passphrase` (after [`SyncError::Unauthorized`],
    /// typically because the passphrase was changed on another device),
    /// adopting the account's key envelope as [`login`](Self::login) does.
    pub async fn sign_in(&self, passphrase: &str) -> Result<()> {
        let (auth_key, session) = sign_in_to(
            &self.inner.api,
            &self.inner.vault,
            &self.inner.username,
            passphrase,
        )
        .await?;
        self.save_session(&session, &auth_key).await;
        self.use_session(auth_key, session).await;
        Ok(())
    }

    /// Makes `session` (opened with `auth_key`) the one requests present,
    /// and wakes the loop to use it.
    async fn use_session(&self, auth_key: AuthKey, session: Session) {
        let mut creds = self.inner.credentials.lock().await;
        creds.auth_key = auth_key;
        creds.session = Some(session);
        creds.generation += 1;
        creds.signed_out = None;
        drop(creds);
        self.inner.remote.notify_one();
    }

    /// Adopts the session saved in the vault since this client started —
    /// by another process or browser tab of this device that signed in
    /// (after [`SyncError::Unauthorized`], say) — so this client goes on
    /// without its own sign-in. `false` (and nothing changes) when the
    /// vault holds no session for this server and account.
    pub async fn reload_saved_session(&self) -> Result<bool> {
        let saved = saved_session::load(
            &self.inner.vault,
            self.inner.api.base(),
            &self.inner.username,
        )
        .await?;
        let Some((session, auth_key)) = saved else {
            return Ok(false);
        };
        self.use_session(auth_key, session).await;
        tracing::info!("adopted the session saved by another sign-in on this device");
        Ok(true)
    }

    /// Changes the passphrase of the vault and of the account: the server
    /// first (the current auth key proves the change), then the vault.
    ///
    /// Crash window: if the process dies (or the local write fails) after
    /// the server took the change, the server has the new passphrase and
    /// the vault the old one. Nothing is lost: the vault still opens with
    /// the old passphrase and [`sign_in`](Self::sign_in) /
    /// [`login`](Self::login) with the new one adopts the server's envelope
    /// (same data key); or, knowing only the new passphrase,
    /// [`join`](Self::join) on the same store does. Done the other way
    /// round, a failed server call would leave a vault and an account that
    /// open with different passphrases and nothing to reconcile them.
    ///
    /// Other sessions of the account are signed out by the server; other
    /// devices see [`SyncError::Unauthorized`] until they sign in with the
    /// new passphrase.
    pub async fn change_passphrase(&self, old: &str, new: &str) -> Result<()> {
        let change = self
            .inner
            .vault
            .replica()
            .prepare_passphrase_change(old, new)
            .await?;
        self.replace_envelope(&change).await?;
        tracing::info!("passphrase changed on the server and in the vault");
        Ok(())
    }

    /// Rotates the data key of the vault and of the account (see
    /// [`Vault::rotate_data_key`]): the server gets the new envelope first,
    /// then the vault stores it and seals everything written from then on
    /// with the new key. The passphrase stays `passphrase`, under a fresh
    /// salt, so the auth key changes too: the server signs the account's
    /// other sessions out, and other devices adopt the new envelope when
    /// they sign in again. Same crash window as
    /// [`change_passphrase`](Self::change_passphrase).
    ///
    /// [`SyncError::WrongPassphrase`] if `passphrase` does not open the
    /// vault; nothing changes anywhere.
    pub async fn rotate_data_key(&self, passphrase: &str) -> Result<()> {
        let change = self
            .inner
            .vault
            .replica()
            .prepare_key_rotation(passphrase)
            .await?;
        self.replace_envelope(&change).await?;
        tracing::info!("data key rotated on the server and in the vault");
        Ok(())
    }

    /// Gives the server a prepared envelope (proved by the current auth
    /// key), then commits it to the vault: the one path behind a passphrase
    /// change and a key rotation.
    async fn replace_envelope(&self, change: &chatvault::PassphraseChange) -> Result<()> {
        let current = Zeroizing::new(self.inner.credentials.lock().await.auth_key.to_base64());
        let new_key = Zeroizing::new(change.auth_key().to_base64());
        let key_envelope = serde_json::from_str(&change.envelope_json())
            .map_err(|e| SyncError::Protocol(e.to_string()))?;
        let body = Zeroizing::new(
            serde_json::to_vec(&PutKeysRequest {
                key_envelope,
                auth_key: &current,
                new_auth_key: &new_key,
                kdf: change.kdf(),
                salt: change.salt(),
            })
            .map_err(|e| SyncError::Protocol(e.to_string()))?,
        );
        self.authed::<()>(Method::Put, "v1/keys", &[], Some(body.to_vec()))
            .await?;
        self.inner.credentials.lock().await.auth_key = change.auth_key().clone();
        if let Err(e) = self
            .inner
            .vault
            .replica()
            .commit_passphrase_change(change)
            .await
        {
            tracing::error!(error = %e, "the server took the new key envelope but the vault did not; \
                sign in with the new passphrase to adopt it");
            return Err(e.into());
        }
        // The saved session now needs the new auth key (and is sealed
        // under the newest data key).
        let creds = self.inner.credentials.lock().await;
        if let Some(session) = &creds.session {
            self.save_session(session, &creds.auth_key).await;
        }
        drop(creds);
        Ok(())
    }

    /// Ends the session on the server. The client stays usable offline; a
    /// later sync needs [`sign_in`](Self::sign_in).
    pub async fn logout(&self) -> Result<()> {
        let mut creds = self.inner.credentials.lock().await;
        let session = creds.session.take();
        creds.signed_out = Some("logged out".into());
        drop(creds);
        saved_session::forget(&self.inner.vault).await?;
        if let Some(session) = session {
            account::logout(&self.inner.api, session.bearer()).await?;
        }
        Ok(())
    }

    /// The account's sessions (one per signed-in device or browser), most
    /// recently used first; [`AccountSession::current`] marks this one.
    pub async fn sessions(&self) -> Result<Vec<AccountSession>> {
        let list: SessionList = self
            .authed(Method::Get, "v1/auth/sessions", &[], None)
            .await?;
        Ok(list.sessions)
    }

    /// Signs out every other session of the account (a lost or stolen
    /// device, say); returns how many. This device stays signed in.
    pub async fn revoke_other_sessions(&self) -> Result<u64> {
        let revoked: RevokedSessions = self
            .authed(Method::Post, "v1/auth/sessions/revoke-others", &[], None)
            .await?;
        Ok(revoked.revoked)
    }

    /// Saves the session for the next process; failing to is only logged
    /// (the next process signs in with the passphrase instead).
    async fn save_session(&self, session: &Session, auth_key: &AuthKey) {
        let saved = saved_session::save(
            &self.inner.vault,
            self.inner.api.base(),
            &self.inner.username,
            session,
            auth_key,
        )
        .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save the session; the next process signs in again");
        }
    }

    /// The vault this client syncs.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.inner.vault
    }

    /// The account name.
    pub fn username(&self) -> &str {
        &self.inner.username
    }

    /// The account id, while signed in.
    pub async fn user_id(&self) -> Option<String> {
        let creds = self.inner.credentials.lock().await;
        creds.session.as_ref().map(|s| s.user_id.clone())
    }

    /// The sync status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.status.subscribe()
    }

    /// Tells a running [`run`](Self::run) loop that the app wrote to the
    /// vault: it pushes soon. Cheap; calls coalesce.
    pub fn notify(&self) {
        self.inner.local.notify_one();
    }

    /// Pushes the outbox, then pulls everything new.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        self.exclusively(true, || async {
            let mut push = self.push_locked().await?;
            let mut pull = self.pull_locked().await?;
            if pull.requeued > 0 {
                // The server's database was restored and the rebuild queued
                // what it lost: send it back now, and read the feed to the
                // end again so the cursor passes it.
                push.absorb(self.push_locked().await?);
                pull.absorb(self.pull_locked().await?);
            }
            if self.missed_a_winner(&push).await? {
                // The pull cursor is already past the winner of a change
                // the server superseded: read the feed again from the
                // start, so the winner is applied (last-writer-wins makes
                // re-applying the rest harmless).
                tracing::warn!(
                    "a superseded change's winner never came down; pulling the whole feed again"
                );
                self.inner
                    .vault
                    .replica()
                    .set_sync_meta(crate::pull::CURSOR_KEY, None)
                    .await?;
                pull.absorb(self.pull_locked().await?);
            }
            Ok(SyncReport { push, pull })
        })
        .await
    }

    /// Runs one sync step with the sync lock held (one at a time per
    /// vault), the state `syncing` meanwhile, and its outcome published
    /// to the status afterwards (`full`: a whole push-and-pull, which also
    /// records the last-synced time).
    async fn exclusively<T, F>(&self, full: bool, work: impl FnOnce() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let _running = self.inner.sync_lock.lock().await;
        self.set_state(SyncState::Syncing);
        let result = work().await;
        self.publish(result.as_ref().map(|_| ()), full).await;
        result
    }

    /// Whether, after a push and a pull, the vault still holds a record at
    /// a version the server answered `superseded` to: the server has a
    /// newer version the pull did not bring (the cursor was already past
    /// it), so the device would diverge for good.
    async fn missed_a_winner(&self, push: &PushReport) -> Result<bool> {
        let store = self.inner.vault.store();
        for (kind, id, version) in &push.superseded_records {
            let held = match kind {
                EntityKind::Conversation => store
                    .conversation(id.conversation())
                    .await
                    .map_err(chatvault::VaultError::from)?
                    .map(|row| row.record.version),
                EntityKind::Message => store
                    .message(id.message())
                    .await
                    .map_err(chatvault::VaultError::from)?
                    .map(|m| m.version),
            };
            let held = match held {
                Some(v) => Some(v),
                None => store
                    .tombstone(*kind, *id)
                    .await
                    .map_err(chatvault::VaultError::from)?
                    .map(|t| t.version),
            };
            if held == Some(*version) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Pushes the outbox only.
    pub async fn push(&self) -> Result<PushReport> {
        self.exclusively(false, || self.push_locked()).await
    }

    /// Pulls everything new only (resyncing from a snapshot if the server
    /// asks), leaving the outbox untouched.
    pub async fn pull(&self) -> Result<PullReport> {
        self.exclusively(false, || self.pull_locked()).await
    }

    /// Changes the server refused, parked in the outbox, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        Ok(self
            .inner
            .vault
            .replica()
            .all_parked_changes()
            .await?
            .into_iter()
            .map(DeadLetter::from_parked)
            .collect())
    }

    /// The dead letter of the parked change with this op id, if any.
    pub async fn dead_letter(&self, op: OpId) -> Result<Option<DeadLetter>> {
        Ok(self
            .dead_letters()
            .await?
            .into_iter()
            .find(|d| d.op_id == op))
    }

    /// Makes a dead letter (by op id) pending again, so the next push sends
    /// the record's current state. `false` if no parked change has this op
    /// id.
    pub async fn retry_dead_letter(&self, op: OpId) -> Result<bool> {
        let Some(letter) = self.dead_letter(op).await? else {
            return Ok(false);
        };
        self.inner
            .vault
            .replica()
            .unpark(letter.entity_id, vec![])
            .await?;
        tracing::info!(%op, "dead letter re-queued");
        self.refresh_counts().await;
        self.notify();
        Ok(true)
    }

    /// Makes every dead letter pending again; returns how many.
    pub async fn retry_all_dead_letters(&self) -> Result<usize> {
        let letters = self.dead_letters().await?;
        for letter in &letters {
            self.inner
                .vault
                .replica()
                .unpark(letter.entity_id, vec![])
                .await?;
        }
        if !letters.is_empty() {
            tracing::info!(count = letters.len(), "dead letters re-queued");
            self.refresh_counts().await;
            self.notify();
        }
        Ok(letters.len())
    }

    /// Discards a dead letter for good: the record stays in this vault but
    /// its refused change will never be pushed. Returns the discarded
    /// letter, or `None` if no parked change has this op id. A newer local
    /// write of the record made since it was parked stays pending.
    pub async fn discard_dead_letter(&self, op: OpId) -> Result<Option<DeadLetter>> {
        let Some(letter) = self.dead_letter(op).await? else {
            return Ok(None);
        };
        self.inner
            .vault
            .replica()
            .discard_parked(letter.seq)
            .await?;
        tracing::warn!(%op, entity = %letter.entity_id, "dead letter discarded; the record stays unsynced");
        self.refresh_counts().await;
        Ok(Some(letter))
    }

    /// Republishes the pending and parked counts.
    pub(crate) async fn refresh_counts(&self) {
        match self.inner.vault.replica().outbox_counts().await {
            Ok((pending, parked)) => self.inner.status.send_modify(|s| {
                s.pending = pending;
                s.dead_letters = parked as usize;
            }),
            Err(e) => tracing::warn!(error = %e, "cannot count pending changes"),
        }
    }

    /// The last sync error stored in the vault (see [`SyncStatus::last_error`]).
    async fn stored_last_error(&self) -> Option<String> {
        let bytes = self
            .inner
            .vault
            .replica()
            .sync_meta(LAST_ERROR_KEY)
            .await
            .ok()??;
        String::from_utf8(bytes).ok()
    }

    // ---- session ---------------------------------------------------------

    /// The current session, or [`SyncError::Unauthorized`] once signed
    /// out.
    pub(crate) async fn token(&self) -> Result<Presented> {
        let creds = self.inner.credentials.lock().await;
        match (&creds.session, &creds.signed_out) {
            (Some(s), None) => Ok(Presented {
                generation: creds.generation,
                token: s.token.clone(),
            }),
            (_, Some(why)) => Err(SyncError::Unauthorized(why.clone())),
            (None, None) => Err(SyncError::Unauthorized("no session".into())),
        }
    }

    /// After a `401` with session `stale` (its generation): signs in again
    /// with the stored auth key (unless another task already did). If the
    /// server refuses the key, the client is signed out for good — retrying
    /// a refused key would only lock the account.
    pub(crate) async fn reauthenticate(&self, stale: u64) -> Result<()> {
        let mut creds = self.inner.credentials.lock().await;
        if let Some(why) = &creds.signed_out {
            return Err(SyncError::Unauthorized(why.clone()));
        }
        if creds.session.is_some() && creds.generation != stale {
            return Ok(());
        }
        match account::login(&self.inner.api, &self.inner.username, &creds.auth_key).await {
            Ok(session) => {
                tracing::info!("session expired; signed in again");
                self.save_session(&session, &creds.auth_key).await;
                creds.session = Some(session);
                creds.generation += 1;
                Ok(())
            }
            Err(SyncError::InvalidCredentials { .. }) => {
                let why = "the server no longer accepts this device's key (was the passphrase \
                           changed on another device?); sign in with the current passphrase"
                    .to_owned();
                tracing::warn!("{why}");
                creds.session = None;
                creds.signed_out = Some(why.clone());
                Err(SyncError::Unauthorized(why))
            }
            Err(other) => Err(other),
        }
    }

    /// After the server said session `stale` was revoked ("sign out
    /// everywhere else" on another device): signed out until the user signs
    /// in with the passphrase — unless another task already signed in anew.
    /// `None` when a newer session already replaced the revoked one.
    async fn revoked(&self, stale: u64) -> Option<SyncError> {
        let mut creds = self.inner.credentials.lock().await;
        if let Some(why) = &creds.signed_out {
            return Some(SyncError::Unauthorized(why.clone()));
        }
        if creds.session.is_some() && creds.generation != stale {
            return None;
        }
        let why = "this device was signed out from another device; sign in with the passphrase"
            .to_owned();
        tracing::info!("{why}");
        creds.session = None;
        creds.signed_out = Some(why.clone());
        Some(SyncError::Unauthorized(why))
    }

    /// An authenticated request; a `401` signs in again once and retries,
    /// except after a revocation.
    pub(crate) async fn authed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body>,
    ) -> Result<T> {
        Ok(self.authed_dated(method, path, query, body).await?.0)
    }

    /// [`authed`](Self::authed), also returning the server's time (its
    /// `Date` header), if it sent one.
    pub(crate) async fn authed_dated<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body>,
    ) -> Result<(T, Option<chatvault::Timestamp>)> {
        let mut retried = false;
        loop {
            let session = self.token().await?;
            let result = self
                .inner
                .api
                .send_dated(method, path, query, session.bearer(), body.clone())
                .await;
            match result {
                // Ended from another device: signing in again with the
                // stored key would undo what its owner asked for.
                Err(e) if e.server_code() == Some(&ErrorCode::SessionRevoked) => {
                    match self.revoked(session.generation).await {
                        Some(signed_out) => return Err(signed_out),
                        // Another task signed in anew meanwhile: retry once.
                        None if !retried => retried = true,
                        None => return Err(e),
                    }
                }
                Err(e) if e.is_status(401) && !retried => {
                    retried = true;
                    self.reauthenticate(session.generation).await?;
                }
                other => return other,
            }
        }
    }

    // ---- status ----------------------------------------------------------

    pub(crate) fn set_state(&self, state: SyncState) {
        self.inner.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    /// Publishes the outcome of an operation: state, counts, and (after a
    /// complete sync) the time.
    async fn publish(&self, outcome: std::result::Result<(), &SyncError>, complete: bool) {
        let vault = &self.inner.vault;
        let (pending, dead) = match vault.replica().outbox_counts().await {
            Ok((pending, parked)) => (Some(pending), Some(parked as usize)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count pending changes");
                (None, None)
            }
        };
        // The last error is kept in the vault, so `sync status` in another
        // process (or after a restart) can show why sync stopped.
        let last_error = outcome.err().map(|e| e.to_string());
        let error_code = outcome.err().map(|e| e.code().to_owned());
        let stored = match &last_error {
            Some(e) => Some(e.as_bytes().to_vec()),
            None if complete => None,
            None => self.stored_last_error().await.map(String::into_bytes),
        };
        if let Err(e) = vault.replica().set_sync_meta(LAST_ERROR_KEY, stored).await {
            tracing::warn!(error = %e, "cannot store the last sync error");
        }
        let now = vault.replica().now();
        let state = match outcome {
            Ok(()) => SyncState::Idle,
            Err(SyncError::Network(_)) => SyncState::Offline,
            Err(e) => SyncState::Error(e.to_string()),
        };
        match outcome {
            Ok(()) => tracing::debug!(complete, "sync step done"),
            Err(e) if e.is_transient() => tracing::info!(error = %e, "sync failed; will retry"),
            // The app's to handle (sign in again), and the CLI does.
            Err(e @ SyncError::Unauthorized(_)) => {
                tracing::info!(error = %e, "sync needs a new sign-in")
            }
            Err(e) => tracing::warn!(error = %e, "sync failed"),
        }
        self.inner.status.send_modify(|s| {
            s.state = state;
            if let Some(p) = pending {
                s.pending = p;
            }
            if let Some(d) = dead {
                s.dead_letters = d;
            }
            if complete && outcome.is_ok() {
                s.last_synced_at = Some(now);
                s.last_error = None;
            }
            if last_error.is_some() {
                s.last_error = last_error;
            }
            if outcome.is_ok() {
                s.error_code = None;
            } else {
                s.error_code = error_code;
            }
        });
    }
}

/// Metadata key of the last sync error (text), removed by a complete sync.
pub(crate) const LAST_ERROR_KEY: &str = chatvault::meta_keys::SYNC_LAST_ERROR;

/// The API of `server` over this platform's transport.
fn api(server: &str, options: &SyncOptions) -> Result<Api> {
    Api::new(server, platform_transport(options)?)
}

#[cfg(not(target_family = "wasm"))]
fn platform_transport(options: &SyncOptions) -> Result<Arc<dyn Transport>> {
    Ok(Arc::new(crate::native::NativeTransport::new(
        options.connect_timeout,
        options.request_timeout,
    )?))
}

#[cfg(target_family = "wasm")]
fn platform_transport(options: &SyncOptions) -> Result<Arc<dyn Transport>> {
    Ok(Arc::new(crate::browser::BrowserTransport::new(
        options.request_timeout,
    )?))
}

async fn local_envelope(vault: &Vault) -> Result<KeyEnvelope> {
    let json = vault
        .replica()
        .key_envelope_json()
        .await?
        .ok_or(SyncError::NotEncrypted)?;
    Ok(KeyEnvelope::from_json(&json)?)
}

/// Prelogin → derive (once) → login for an open vault; adopts the
/// account's envelope when its salt differs from the vault's.
async fn sign_in_to(
    api: &Api,
    vault: &Vault,
    username: &str,
    passphrase: &str,
) -> Result<(AuthKey, Session)> {
    let local = local_envelope(vault).await?;
    let (kdf, salt) = account::prelogin(api, username).await?;
    let (_, policy) = vault.replica().kdf_settings();
    let keys = account::derive(passphrase, kdf, salt, policy).await?;
    let same_keys = local.kdf() == &kdf && local.salt() == &salt;
    if same_keys {
        // Same salt: a passphrase that does not open the vault cannot be the
        // account's either; say so without spending a login attempt.
        local.unlock_with_keys(&keys)?;
    }
    let session = account::login(api, username, keys.auth_key()).await?;
    if !same_keys {
        let envelope = account::fetch_envelope(api, session.bearer()).await?;
        if let Err(e) = vault.replica().adopt_key_envelope(&envelope, &keys).await {
            // Do not leave a session of an account this vault cannot use.
            let _ = account::logout(api, session.bearer()).await;
            return Err(e.into());
        }
    }
    Ok((keys.auth_key().clone(), session))
}
