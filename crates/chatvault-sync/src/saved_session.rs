//! The device's server session, kept in the vault sealed under its data
//! key, so short-lived processes (each CLI command) reuse one session —
//! one line in the account's session list per device — instead of signing
//! in (and leaving a session behind) every time.
//!
//! Kept with it: the auth key the session was opened with, so an expired
//! session is renewed without the passphrase (and without Argon2). Whoever
//! can unseal the vault holds the data key already; the auth key adds
//! nothing a passphrase guess against the vault would not give.
//!
//! In a browser the session itself is the server's HttpOnly cookie, which
//! page code never sees: what is saved is who it belongs to and the auth
//! key, so a reloaded page (or another tab) resumes on the cookie and
//! renews it from the key when it expired — one Argon2 run per unlock, not
//! two, and no new server session per page load.
//!
//! Must never store the token or key in the clear, and never hand a saved
//! session to another server or account than the one it was opened on.

use chatvault::Vault;
use chatvault_crypto::AuthKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::account::Session;
use crate::error::{Result, SyncError};

/// Where the sealed session lives in the vault's metadata.
const KEY: &str = chatvault::meta_keys::SYNC_SESSION;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    server: String,
    username: String,
    user_id: String,
    /// The bearer token; none for a cookie session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    auth_key: String,
}

impl Drop for Saved {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        if let Some(token) = &mut self.token {
            token.zeroize();
        }
        self.auth_key.zeroize();
    }
}

/// Seals `session` (and the key that opened it) into the vault. For a
/// cookie session (a browser's) there is no token to seal: the account and
/// the auth key are.
pub(crate) async fn save(
    vault: &Vault,
    server: &str,
    username: &str,
    session: &Session,
    auth_key: &AuthKey,
) -> Result<()> {
    let saved = Saved {
        server: server.to_owned(),
        username: username.to_ascii_lowercase(),
        user_id: session.user_id.clone(),
        token: session.token.as_ref().map(|t| t.as_str().to_owned()),
        auth_key: auth_key.to_base64(),
    };
    let json =
        Zeroizing::new(serde_json::to_vec(&saved).map_err(|e| SyncError::Protocol(e.to_string()))?);
    vault
        .replica()
        .set_sealed_sync_meta(KEY, Some(&json))
        .await?;
    Ok(())
}

/// The saved session for `username` on `server`, if the vault holds one.
/// One saved for another server or account is not returned.
pub(crate) async fn load(
    vault: &Vault,
    server: &str,
    username: &str,
) -> Result<Option<(Session, AuthKey)>> {
    let Some(json) = vault.replica().sealed_sync_meta(KEY).await? else {
        return Ok(None);
    };
    let saved: Saved = serde_json::from_slice(&json)
        .map_err(|e| SyncError::Protocol(format!("saved session: {e}")))?;
    if saved.server != server || !saved.username.eq_ignore_ascii_case(username) {
        return Ok(None);
    }
    let auth_key = AuthKey::from_base64(&saved.auth_key)?;
    Ok(Some((
        Session {
            token: saved.token.clone().map(Zeroizing::new),
            user_id: saved.user_id.clone(),
        },
        auth_key,
    )))
}

/// Removes the saved session (after a logout, or when linking elsewhere).
pub(crate) async fn forget(vault: &Vault) -> Result<()> {
    vault.replica().set_sealed_sync_meta(KEY, None).await?;
    Ok(())
}
