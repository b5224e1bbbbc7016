//! The key envelope routes: fetch the client's wrapped keys, replace them,
//! and change credentials after a passphrase change.
//!
//! Replacing the envelope, and changing the auth key, need the current
//! auth key (a stolen session alone can neither take over an account nor
//! swap the wrapped keys), count wrong guesses against a per-account
//! backoff (so this is no side door for online guessing), and a credential
//! change signs out every other session.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::auth::check_throttle;
use super::extract::{ApiJson, Authenticated};
use super::{AppError, AppState};
use crate::api::{ErrorBody, KeysResponse, PutKeysRequest};
use crate::store::{KeysUpdate, NewCredentials};
use chatvault_core::ErrorCode;

/// The stored key envelope and KDF settings.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "The envelope", body = KeysResponse),
        (status = 401, description = "No valid session", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn get_keys(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<KeysResponse>, AppError> {
    let account = state
        .store()
        .account(auth.account)
        .await?
        .ok_or_else(AppError::unauthorized)?;
    Ok(Json(KeysResponse {
        key_envelope: account.key_envelope,
        kdf: account.kdf,
        salt: account.salt,
    }))
}

/// Replaces the key envelope (and maybe the credentials).
#[utoipa::path(
    put, path = "/v1/keys", tag = "keys",
    request_body = PutKeysRequest,
    responses(
        (status = 204, description = "Replaced; after a credential change every other session is revoked"),
        (status = 400, description = "Invalid envelope, missing current key (`auth_key_required`), incomplete credential change (`incomplete_credentials`) or weak KDF (`invalid_kdf`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "The current auth key is wrong (`wrong_auth_key`)", body = ErrorBody),
        (status = 415, description = "The body was sent without `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 429, description = "Too many wrong keys; see `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn put_keys(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(req): ApiJson<PutKeysRequest>,
) -> Result<StatusCode, AppError> {
    let store = state.store();
    let new_credentials = match (req.new_auth_key, req.kdf, req.salt) {
        (None, None, None) => None,
        (Some(new_key), Some(kdf), Some(salt)) => {
            kdf.validate(state.config().allow_weak_kdf)
                .map_err(|e| AppError::client(ErrorCode::InvalidKdf, e.0))?;
            Some((new_key, kdf, salt))
        }
        _ => {
            return Err(AppError::client(
                ErrorCode::IncompleteCredentials,
                "newAuthKey, kdf and salt must be sent together",
            ))
        }
    };
    // Any write of the envelope needs the current auth key: a stolen
    // session alone must not be able to swap the wrapped keys (a client
    // would then wrap new data for the thief).
    let current = req.auth_key.ok_or_else(|| {
        AppError::client(
            ErrorCode::AuthKeyRequired,
            "replacing the key envelope needs the current authKey",
        )
    })?;
    let account = store
        .account(auth.account)
        .await?
        .ok_or_else(AppError::unauthorized)?;
    check_throttle(&state, &account.username).await?;
    if !state
        .kdf()
        .verify(account.auth_hash.clone(), current)
        .await?
    {
        store
            .record_login_failure(&account.username, state.now())
            .await?;
        return Err(AppError::client(
            ErrorCode::WrongAuthKey,
            "the current authKey does not match",
        ));
    }
    store.clear_login_failures(&account.username).await?;
    let credentials = match new_credentials {
        None => None,
        Some((new_key, kdf, salt)) => Some(NewCredentials {
            auth_hash: state.kdf().hash(new_key).await?,
            kdf,
            salt,
        }),
    };
    let changed_credentials = credentials.is_some();
    let found = store
        .update_keys(
            auth.account,
            KeysUpdate {
                key_envelope: req.key_envelope,
                credentials,
                keep_session: auth.session,
            },
        )
        .await?;
    if !found {
        return Err(AppError::unauthorized());
    }
    if changed_credentials {
        state.kdf_census().invalidate();
        tracing::info!(account = %auth.account, "credentials changed; other sessions revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}
