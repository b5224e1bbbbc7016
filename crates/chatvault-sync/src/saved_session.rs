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
    token: String,
    auth_key: String,
}

impl Drop for Saved {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.token.zeroize();
        self.auth_key.zeroize();
    }
}

/// Seals `session` (and the key that opened it) into the vault. A cookie
/// session (a browser's) is not saved: it has no token, and the auth key
/// is not kept anywhere page scripts can reach.
pub(crate) async fn save(
    vault: &Vault,
    server: &str,
    username: &str,
    session: &Session,
    auth_key: &AuthKey,
) -> Result<()> {
    let Some(token) = &session.token else {
        return Ok(());
    };
    let saved = Saved {
        server: server.to_owned(),
        username: username.to_ascii_lowercase(),
        user_id: session.user_id.clone(),
        token: token.as_str().to_owned(),
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
            token: Some(Zeroizing::new(saved.token.clone())),
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
