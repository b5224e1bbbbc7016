//! The steps of signing in, as free functions over the transport:
//! prelogin, key derivation (Argon2id on a blocking thread, once per
//! sign-in), register, login, fetching the key envelope.
//!
//! Must never send anything derived from the passphrase but the auth key,
//! and never hold the passphrase longer than the derivation.

use chatvault_core::ErrorCode;
use chatvault_crypto::{AuthKey, KdfParams, KdfPolicy, KeyEnvelope, PassphraseKeys, Salt};
use zeroize::Zeroizing;

use crate::error::{Result, SyncError};
use crate::http::Api;
use crate::transport::{Method, SessionMode};
use crate::wire::{
    KeysResponse, LoginRequest, LoginResponse, PreloginRequest, PreloginResponse, RegisterRequest,
};

/// A signed-in session: the bearer token (none when the session is an
/// HttpOnly cookie the browser keeps) and the account it belongs to.
pub(crate) struct Session {
    pub token: Option<Zeroizing<String>>,
    pub user_id: String,
}

impl Session {
    /// The bearer token to present, if the session is one.
    pub(crate) fn bearer(&self) -> Option<&str> {
        self.token.as_deref().map(String::as_str)
    }
}

/// The account's KDF parameters and salt (fake but stable ones for an
/// unknown username: the server does not reveal which names exist).
pub(crate) async fn prelogin(api: &Api, username: &str) -> Result<(KdfParams, Salt)> {
    let body = serde_json::to_vec(&PreloginRequest { username }).map_err(protocol)?;
    let r: PreloginResponse = api
        .send(Method::Post, "v1/auth/prelogin", &[], None, Some(body))
        .await
        .map_err(|e| bad_username(e, username))?;
    Ok((r.kdf, r.salt))
}

/// Argon2id + HKDF for `passphrase` under `kdf` and `salt`, on a blocking
/// thread (in a browser, inline: a page that must stay responsive runs
/// the client in a worker). `policy` also bounds parameters a server
/// hands out: a hostile server cannot make this device derive with weak or
/// absurd ones.
pub(crate) async fn derive(
    passphrase: &str,
    kdf: KdfParams,
    salt: Salt,
    policy: KdfPolicy,
) -> Result<PassphraseKeys> {
    let passphrase = Zeroizing::new(passphrase.to_owned());
    #[cfg(not(target_family = "wasm"))]
    let keys = tokio::task::spawn_blocking(move || {
        PassphraseKeys::derive_with_policy(&passphrase, &kdf, &salt, policy)
    })
    .await
    .map_err(|e| SyncError::Protocol(format!("key derivation did not finish: {e}")))?;
    #[cfg(target_family = "wasm")]
    let keys = PassphraseKeys::derive_with_policy(&passphrase, &kdf, &salt, policy);
    keys.map_err(SyncError::from)
}

/// Creates the account with the vault's own envelope and the auth key
/// derived from the same passphrase, salt and parameters.
pub(crate) async fn register(
    api: &Api,
    username: &str,
    envelope: &KeyEnvelope,
    keys: &PassphraseKeys,
) -> Result<()> {
    let auth_key = Zeroizing::new(keys.auth_key().to_base64());
    let key_envelope = serde_json::from_str(&envelope.to_json()).map_err(protocol)?;
    let body = serde_json::to_vec(&RegisterRequest {
        username,
        kdf: envelope.kdf(),
        salt: envelope.salt(),
        auth_key: &auth_key,
        key_envelope,
    })
    .map_err(protocol)?;
    api.send::<serde_json::Value>(Method::Post, "v1/auth/register", &[], None, Some(body))
        .await
        .map_err(|e| match e.server_code() {
            Some(ErrorCode::UsernameTaken) => SyncError::UsernameTaken(username.to_owned()),
            _ => bad_username(e, username),
        })?;
    tracing::info!(username, "registered a sync account");
    Ok(())
}

/// Signs in with an auth key: a new session, as a bearer token or (in a
/// browser) an HttpOnly cookie only the browser holds.
pub(crate) async fn login(api: &Api, username: &str, auth_key: &AuthKey) -> Result<Session> {
    let key = Zeroizing::new(auth_key.to_base64());
    let body = Zeroizing::new(
        serde_json::to_vec(&LoginRequest {
            username,
            auth_key: &key,
            client: match api.session_mode() {
                SessionMode::Bearer => "native",
                SessionMode::Cookie => "browser",
            },
        })
        .map_err(protocol)?,
    );
    let r: LoginResponse = api
        .send(
            Method::Post,
            "v1/auth/login",
            &[],
            None,
            Some(body.to_vec()),
        )
        .await
        .map_err(|e| match e {
            SyncError::Server { status: 401, .. } => SyncError::InvalidCredentials {
                username: username.to_owned(),
            },
            SyncError::Server {
                status: 429,
                retry_after,
                ..
            } => SyncError::TooManyAttempts {
                retry_after: retry_after.unwrap_or(std::time::Duration::from_secs(1)),
            },
            other => bad_username(other, username),
        })?;
    let token = match api.session_mode() {
        SessionMode::Bearer => {
            Some(Zeroizing::new(r.token.ok_or_else(|| {
                SyncError::Protocol("login answered without a token".into())
            })?))
        }
        SessionMode::Cookie => None,
    };
    Ok(Session {
        token,
        user_id: r.user_id,
    })
}

/// The account's key envelope, as JSON text.
pub(crate) async fn fetch_envelope(api: &Api, token: Option<&str>) -> Result<String> {
    let r: KeysResponse = api.send(Method::Get, "v1/keys", &[], token, None).await?;
    if !r.key_envelope.is_object() {
        return Err(SyncError::Protocol(
            "the key envelope is not a JSON object".into(),
        ));
    }
    Ok(r.key_envelope.to_string())
}

/// Revokes a session (best effort: an unreachable server lets it expire).
pub(crate) async fn logout(api: &Api, token: Option<&str>) -> Result<()> {
    api.send::<()>(
        Method::Post,
        "v1/auth/logout",
        &[],
        token,
        Some(b"{}".to_vec()),
    )
    .await
}

fn bad_username(e: SyncError, username: &str) -> SyncError {
    match e {
        SyncError::Server {
            status: 400,
            code,
            message,
            retry_after,
        } if code == ErrorCode::InvalidRequest => SyncError::Server {
            status: 400,
            code,
            message: format!("{message} (username {username:?})"),
            retry_after,
        },
        other => other,
    }
}

fn protocol(e: serde_json::Error) -> SyncError {
    SyncError::Protocol(e.to_string())
}
