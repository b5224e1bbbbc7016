//! Request extractors: JSON bodies and query strings whose rejections are
//! [`AppError`]s (so malformed input gets the JSON error envelope, never
//! axum's plain-text default), and [`Authenticated`], the session behind a
//! request.
//!
//! Sessions are accepted from `Authorization: Bearer <token>` or the
//! `cv_session` cookie, never from a URL (URLs end up in logs). A cookie is
//! sent by browsers on their own, so a cookie-authenticated request that
//! changes state must prove it comes from this server's own pages: an
//! `Origin` equal to the server's origin (scheme included) or one of the
//! configured `allowed_origins`, or, without
//! `Origin`, the `X-Chatvault-Client` header, which no other site's page can
//! send without a CORS preflight this server never grants. Must never log a
//! token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::de::DeserializeOwned;

use super::{AppError, AppState};
use crate::auth::token_hash;
use crate::clock::minus;
use crate::config::Config;
use crate::types::{AccountId, SessionHash};
use chatvault_core::ErrorCode;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "cv_session";

/// `axum::Json` with [`AppError`] rejections.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Query` with [`AppError`] rejections.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The address a request is charged to for rate limits: the TCP peer, or
/// with `trust_proxy` the last `X-Forwarded-For` entry (the one the proxy
/// in front of us appended; earlier entries are client-supplied and could
/// be forged). IPv6 addresses count per /64, the block one client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress(pub IpAddr);

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

fn rate_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded = if state.config().trust_proxy {
            forwarded_for(&parts.headers)
        } else {
            None
        };
        // No peer (an in-process router without connect info): one shared
        // bucket, never "unlimited".
        let address = forwarded
            .or(peer)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientAddress(rate_key(address)))
    }
}

/// Where a request's session token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `Authorization: Bearer`.
    Bearer,
    /// The `cv_session` cookie (sent by browsers on their own, so the one
    /// source that needs cross-origin care).
    Cookie,
    /// The first message on a WebSocket opened without credentials.
    Message,
}

/// The authenticated session of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated {
    /// Its account: every query the handler makes is scoped to this.
    pub account: AccountId,
    /// Its session (for logout and "revoke the others").
    pub session: SessionHash,
    /// Where the token came from.
    pub source: TokenSource,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == SESSION_COOKIE).then_some(value))
}

/// Header a same-origin script may add to a cookie-authenticated request
/// that carries no `Origin`.
pub(crate) const CLIENT_HEADER: &str = "x-chatvault-client";

/// The origin this server's own pages have: `public_origin` when
/// configured, else the request's `Host` with `https` (or `http` with
/// insecure cookies, or the proxy's `X-Forwarded-Proto` when trusted).
fn expected_origin(headers: &HeaderMap, config: &Config) -> Option<String> {
    if let Some(origin) = &config.public_origin {
        return Some(origin.trim_end_matches('/').to_ascii_lowercase());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let forwarded = config
        .trust_proxy
        .then(|| headers.get("x-forwarded-proto"))
        .flatten()
        .and_then(|v| v.to_str().ok());
    let scheme = match forwarded {
        Some(proto) => proto.trim(),
        None if config.insecure_cookies => "http",
        None => "https",
    };
    Some(format!("{scheme}://{host}").to_ascii_lowercase())
}

/// Whether the request's `Origin` (which must be present) is this
/// server's, scheme and port included.
pub(crate) fn same_origin(headers: &HeaderMap, config: &Config) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_ascii_lowercase);
    matches!((origin, expected_origin(headers, config)), (Some(o), Some(e)) if o == e)
}

/// Whether the request's `Origin` (which must be present) is this
/// server's or one of the configured `allowed_origins` (exactly).
pub(crate) fn trusted_origin(headers: &HeaderMap, config: &Config) -> bool {
    if same_origin(headers, config) {
        return true;
    }
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_ascii_lowercase)
        .is_some_and(|o| config.allowed_origins.contains(&o))
}

/// Refuses a cookie-authenticated state-changing request that does not
/// come from this server's pages or an allowed origin's (CSRF).
fn check_cookie_request(parts: &Parts, config: &Config) -> Result<(), AppError> {
    if parts.method.is_safe() {
        return Ok(());
    }
    let allowed = if parts.headers.contains_key(header::ORIGIN) {
        trusted_origin(&parts.headers, config)
    } else {
        parts.headers.contains_key(CLIENT_HEADER)
    };
    if allowed {
        Ok(())
    } else {
        Err(AppError::client(
            ErrorCode::CrossOrigin,
            "a cookie-authenticated change must come from this server's origin or an \
             allowed origin (or carry the X-Chatvault-Client header)",
        ))
    }
}

/// Finds and checks the session of a request.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Authenticated, AppError> {
    match presented_token(headers) {
        Some((token, source)) => authenticate_token(state, token, source).await,
        None => Err(AppError::unauthorized()),
    }
}

/// The session token a request carries and where it came from: the
/// `Authorization: Bearer` header first, then the cookie.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<(&str, TokenSource)> {
    bearer(headers)
        .map(|t| (t, TokenSource::Bearer))
        .or_else(|| cookie(headers).map(|t| (t, TokenSource::Cookie)))
}

/// Checks a session token (extending the session's idle lifetime).
pub(crate) async fn authenticate_token(
    state: &AppState,
    token: &str,
    source: TokenSource,
) -> Result<Authenticated, AppError> {
    let hash = token_hash(token).ok_or_else(AppError::unauthorized)?;
    let store = state.store();
    let Some(info) = store.session(&hash).await? else {
        return Err(if store.was_revoked(&hash).await? {
            AppError::session_revoked()
        } else {
            AppError::unauthorized()
        });
    };
    let now = state.now();
    let policy = state.config().sessions;
    if policy.expires_at(info.created_at, info.last_used_at) <= now {
        store.revoke_session(&hash).await?;
        return Err(AppError::unauthorized());
    }
    if info.last_used_at < minus(now, policy.touch_granularity()) {
        store.touch_session(&hash, now).await?;
    }
    Ok(Authenticated {
        account: info.account,
        session: hash,
        source,
    })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let auth = authenticate(state, &parts.headers).await?;
        if auth.source == TokenSource::Cookie {
            check_cookie_request(parts, state.config())?;
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_takes_the_proxys_entry_and_v6_counts_per_64() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 10.0.0.7"),
        );
        assert_eq!(forwarded_for(&h), Some(IpAddr::from([10, 0, 0, 7])));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_eq!(
            rate_key("::ffff:127.0.0.2".parse().unwrap()),
            IpAddr::from([127, 0, 0, 2])
        );
    }

    #[test]
    fn finds_bearer_and_cookie_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cv_session=tok; b=2"),
        );
        assert_eq!(cookie(&h), Some("tok"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        assert_eq!(cookie(&h), None);
    }
}
