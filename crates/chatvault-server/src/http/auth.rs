//! Account routes: prelogin (how to derive keys), register, login (a fresh
//! session every time, with per-(username, address) backoff after
//! failures), logout. The unauthenticated ones are rate limited per source
//! address and globally (see `limits`).
//!
//! The server never sees a passphrase, only the derived auth key, and keeps
//! only an Argon2id hash of that. Wrong usernames and wrong keys get the
//! same answer after the same work, so logins cannot enumerate accounts.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatvault_core::ErrorCode;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::extract::{ApiJson, Authenticated, ClientAddress, SESSION_COOKIE};
use super::{AppError, AppState};
use crate::api::{
    ErrorBody, LoginRequest, LoginResponse, PreloginRequest, PreloginResponse, RegisterRequest,
    RegisterResponse,
};
use crate::auth::{fake_kdf, fake_salt, new_session_token};
use crate::clock::minus;
use crate::limits::Refusal;
use crate::store::{NewAccount, NewSession, ServerStore, ServerStoreResult};
use crate::types::{AccountId, ClientKind, Username, WireKdfParams};

/// How to derive keys for a username.
#[utoipa::path(
    post, path = "/v1/auth/prelogin", tag = "auth",
    request_body = PreloginRequest,
    responses(
        (status = 200, description = "KDF parameters and salt (stable fake values for unknown usernames)", body = PreloginResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 415, description = "The body was sent without `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 429, description = "Too many sign-in requests from this address or in all (`rate_limited`); see `Retry-After`", body = ErrorBody),
    )
)]
pub(crate) async fn prelogin(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<PreloginRequest>,
) -> Result<Json<PreloginResponse>, AppError> {
    admit(&state, address)?;
    let answer = match state.store().account_by_username(&req.username).await? {
        Some(account) => PreloginResponse {
            kdf: account.kdf,
            salt: account.salt,
        },
        None => PreloginResponse {
            kdf: fake_kdf(
                state.server_secret(),
                &req.username,
                &state.kdf_census().get(state.store()).await?,
            ),
            salt: fake_salt(state.server_secret(), &req.username),
        },
    };
    Ok(Json(answer))
}

/// How long prelogin reuses a count of the accounts' KDF parameters.
const CENSUS_TTL: Duration = Duration::from_secs(300);

/// The accounts' KDF parameter sets and how many use each, counted at most
/// every [`CENSUS_TTL`] (and again after a local register or passphrase
/// change), for prelogin's answers to unknown names.
#[derive(Default)]
pub(crate) struct KdfCensus(Mutex<Option<(Instant, Census)>>);

/// KDF parameter sets and how many accounts use each.
type Census = Arc<[(WireKdfParams, u64)]>;

impl KdfCensus {
    async fn get(&self, store: &dyn ServerStore) -> ServerStoreResult<Census> {
        if let Some((at, census)) = &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            if at.elapsed() < CENSUS_TTL {
                return Ok(Arc::clone(census));
            }
        }
        let fresh: Arc<[_]> = store.kdf_census().await?.into();
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&fresh)));
        Ok(fresh)
    }

    /// Forgets the count (an account's parameters changed here).
    pub(crate) fn invalidate(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Creates an account.
#[utoipa::path(
    post, path = "/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = RegisterResponse),
        (status = 400, description = "Invalid username, KDF parameters, salt, key or envelope", body = ErrorBody),
        (status = 409, description = "Username taken (`username_taken`)", body = ErrorBody),
        (status = 415, description = "The body was sent without `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 429, description = "Too many sign-in requests from this address or in all (`rate_limited`); see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Password hashing queue full (`server_busy`); see `Retry-After`", body = ErrorBody),
    )
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), AppError> {
    admit(&state, address)?;
    req.kdf
        .validate(state.config().allow_weak_kdf)
        .map_err(|e| AppError::client(ErrorCode::InvalidKdf, e.0))?;
    let key = req.auth_key;
    let auth_hash = state.kdf().hash(key).await?;
    let id = AccountId::new();
    state
        .store()
        .create_account(NewAccount {
            id,
            username: req.username,
            auth_hash,
            kdf: req.kdf,
            salt: req.salt,
            key_envelope: req.key_envelope,
            created_at: state.now(),
        })
        .await?;
    state.kdf_census().invalidate();
    tracing::info!(account = %id, "account registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user_id: id.to_string(),
        }),
    ))
}

/// Takes a token from the source address's and the global bucket of the
/// account routes, or answers 429 `rate_limited`.
fn admit(state: &AppState, address: IpAddr) -> Result<(), AppError> {
    state.limiter().admit(address, state.now()).map_err(refused)
}

fn refused(refusal: Refusal) -> AppError {
    match refusal {
        Refusal::RateLimited { retry_after } => AppError::rate_limited(retry_after),
        Refusal::Backoff { retry_after } => AppError::too_many_attempts(retry_after),
    }
}

/// Refuses with 429 while `username` is in (account-wide) backoff; used
/// by passphrase changes, which are already authenticated.
pub(super) async fn check_throttle(state: &AppState, username: &Username) -> Result<(), AppError> {
    let Some(throttle) = state.store().throttle(username).await? else {
        return Ok(());
    };
    let now = state.now();
    match state.config().throttle.locked_until(throttle) {
        Some(until) if until > now => {
            let ms = u64::try_from(until.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
            let seconds = ms.div_ceil(1000).max(1);
            Err(AppError::too_many_attempts(seconds))
        }
        _ => Ok(()),
    }
}

fn cookie_header(value: &str, max_age_secs: u64, secure: bool) -> Result<HeaderValue, AppError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly{secure}; SameSite=Strict; Path=/; Max-Age={max_age_secs}"
    ))
    .map_err(AppError::internal)
}

/// Opens a session.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie: cv_session=...; HttpOnly; Secure; SameSite=Strict` unless `client` is `native`", body = LoginResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 415, description = "The body was sent without `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 401, description = "Wrong username or auth key (`invalid_credentials`)", body = ErrorBody),
        (status = 429, description = "Too many failures (`too_many_attempts`) or requests (`rate_limited`); see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Password hashing queue full (`server_busy`); see `Retry-After`", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, AppError> {
    admit(&state, address)?;
    // Counted as a failure before the (slow) verification, so concurrent
    // guesses see each other's backoff.
    state
        .limiter()
        .reserve_login(&req.username, address, state.now())
        .map_err(refused)?;
    let store = state.store();
    let account = store.account_by_username(&req.username).await?;
    let hash = account
        .as_ref()
        .map_or_else(|| state.dummy_hash().to_owned(), |a| a.auth_hash.clone());
    let matches = state.kdf().verify(hash, req.auth_key).await?;
    let now = state.now();
    let account = match account {
        Some(account) if matches => account,
        _ => {
            tracing::info!("failed login");
            return Err(AppError::invalid_credentials());
        }
    };
    state.limiter().succeeded(&req.username, address);

    let token = new_session_token()?;
    let client = req.client.unwrap_or(ClientKind::Any);
    store
        .create_session(NewSession {
            hash: token.hash,
            account: account.id,
            client,
            created_at: now,
        })
        .await?;
    let policy = state.config().sessions;
    let body = LoginResponse {
        token: (client != ClientKind::Browser).then(|| token.token.to_string()),
        expires_at: policy.expires_at(now, now).as_millis(),
        user_id: account.id.to_string(),
    };
    let mut response = Json(body).into_response();
    if client != ClientKind::Native {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(
                &token.token,
                policy.absolute.as_secs(),
                !state.config().insecure_cookies,
            )?,
        );
    }
    tracing::info!(account = %account.id, client = client.as_str(), "signed in");
    Ok(response)
}

/// Ends the current session.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Session revoked; the cookie is cleared"),
        (status = 401, description = "No valid session", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, AppError> {
    state.store().revoke_session(&auth.session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header("", 0, !state.config().insecure_cookies)?,
    );
    Ok(response)
}

/// One session in [`SessionList`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionEntry {
    /// A short, stable label for the session (a prefix of its token's
    /// hash; it authenticates nothing).
    id: String,
    /// `browser`, `native` or `any`.
    client: String,
    /// Login time, Unix ms.
    created_at: i64,
    /// Last use (to within a minute), Unix ms.
    last_used_at: i64,
    /// Whether this is the session making the request.
    current: bool,
}

/// `GET /v1/auth/sessions`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SessionList {
    /// Most recently used first.
    sessions: Vec<SessionEntry>,
}

/// `POST /v1/auth/sessions/revoke-others`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RevokedSessions {
    /// How many sessions were signed out.
    revoked: u64,
}

/// Lists the account's sessions (devices signed in).
#[utoipa::path(
    get, path = "/v1/auth/sessions", tag = "auth",
    responses(
        (status = 200, description = "The account's sessions", body = SessionList),
        (status = 401, description = "No valid session", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SessionList>, AppError> {
    let sessions = state
        .store()
        .sessions_of(auth.account)
        .await?
        .into_iter()
        .map(|s| SessionEntry {
            id: s.hash.0[..8].iter().map(|b| format!("{b:02x}")).collect(),
            client: s.client,
            created_at: s.created_at.as_millis(),
            last_used_at: s.last_used_at.as_millis(),
            current: s.hash == auth.session,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// Signs out every other session of the account (their WebSockets close
/// at their next ping tick).
#[utoipa::path(
    post, path = "/v1/auth/sessions/revoke-others", tag = "auth",
    responses(
        (status = 200, description = "Other sessions revoked", body = RevokedSessions),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 403, description = "Cookie request from another origin (`cross_origin`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn revoke_other_sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<RevokedSessions>, AppError> {
    // A revoked session is remembered as long as it could have lived, so
    // its client is told to ask for the passphrase rather than sign in again.
    let now = state.now();
    let forget_before = minus(now, state.config().sessions.absolute);
    let revoked = state
        .store()
        .revoke_other_sessions(auth.account, &auth.session, now, forget_before)
        .await?;
    tracing::info!(account = %auth.account, revoked, "other sessions revoked");
    Ok(Json(RevokedSessions { revoked }))
}
