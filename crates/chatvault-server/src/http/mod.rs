//! The HTTP face of the server: the axum router, its shared state, and one
//! module per route group.
//!
//! Layout:
//! - [`auth`] — prelogin, register, login, logout.
//! - [`keys`] — the key envelope and passphrase changes.
//! - [`sync`] — push, pull, snapshot.
//! - [`ws`] — the realtime poke socket.
//! - [`openapi`] — the OpenAPI document.
//! - [`error`] — [`AppError`] and the error-logging middleware.
//! - [`extract`] — JSON/query extractors with JSON errors; sessions.
//!
//! Handlers validate and translate; they never hold SQL, and every store
//! call that touches account data passes the authenticated account id.

mod auth;
mod error;
mod extract;
mod keys;
pub(crate) mod openapi;
mod sync;
mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use chatvault_core::Timestamp;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

pub use error::AppError;

use crate::api::Health;
use crate::config::Config;
use crate::hub::Hub;
use crate::kdf_pool::KdfPool;
use crate::limits::Limiter;
use crate::store::ServerStore;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

struct Shared {
    store: Arc<dyn ServerStore>,
    hub: Hub,
    config: Config,
    server_secret: [u8; 32],
    /// A hash of a random key, verified against for unknown usernames so a
    /// login for a name that does not exist costs the same time.
    dummy_hash: String,
    /// Flips to `true` when the server shuts down (WebSockets close).
    shutdown: watch::Receiver<bool>,
    /// The fixed pool that runs every Argon2 hash and verification.
    kdf: KdfPool,
    /// Rate limits and login backoff of the account routes.
    limiter: Limiter,
    /// The accounts' KDF parameters, for prelogin's unknown-name answers.
    kdf_census: auth::KdfCensus,
}

impl AppState {
    pub(crate) fn new(
        store: Arc<dyn ServerStore>,
        hub: Hub,
        config: Config,
        server_secret: [u8; 32],
        dummy_hash: String,
        shutdown: watch::Receiver<bool>,
        kdf: KdfPool,
    ) -> Self {
        let limiter = Limiter::new(config.rate_limits, config.throttle);
        AppState(Arc::new(Shared {
            store,
            hub,
            config,
            server_secret,
            dummy_hash,
            shutdown,
            kdf,
            limiter,
            kdf_census: auth::KdfCensus::default(),
        }))
    }

    pub(crate) fn store(&self) -> &dyn ServerStore {
        self.0.store.as_ref()
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.0.hub
    }

    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.0.config.clock.now()
    }

    pub(crate) fn server_secret(&self) -> &[u8; 32] {
        &self.0.server_secret
    }

    pub(crate) fn dummy_hash(&self) -> &str {
        &self.0.dummy_hash
    }

    pub(crate) fn shutdown(&self) -> watch::Receiver<bool> {
        self.0.shutdown.clone()
    }

    pub(crate) fn limiter(&self) -> &Limiter {
        &self.0.limiter
    }

    pub(crate) fn kdf(&self) -> &KdfPool {
        &self.0.kdf
    }

    pub(crate) fn kdf_census(&self) -> &auth::KdfCensus {
        &self.0.kdf_census
    }
}

/// Liveness probe.
#[utoipa::path(
    get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn not_found() -> AppError {
    AppError::not_found()
}

async fn method_not_allowed() -> AppError {
    AppError::client(
        chatvault_core::ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// Builds the complete application: `/healthz`, the `/v1` API and, if
/// configured, the static web root at `/`.
pub(crate) fn router(state: AppState) -> Router {
    let config = state.config().clone();
    let v1 = Router::new()
        .route("/auth/prelogin", post(auth::prelogin))
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/sessions", get(auth::sessions))
        .route(
            "/auth/sessions/revoke-others",
            post(auth::revoke_other_sessions),
        )
        .route("/keys", get(keys::get_keys).put(keys::put_keys))
        .route("/sync/push", post(sync::push))
        .route("/sync/pull", get(sync::pull))
        .route("/sync/snapshot", get(sync::snapshot))
        .route("/ws", get(ws::connect))
        .route("/openapi.json", get(openapi::document))
        // Unknown API paths answer JSON, never the web app's index.html.
        .fallback(not_found);
    let app = Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", v1);
    let app = match &config.web_root {
        Some(root) => app.fallback_service(
            ServeDir::new(root).fallback(ServeFile::new(root.join("index.html"))),
        ),
        None => app.fallback(not_found),
    };
    let app = app
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn({
            let limit = config.max_body_bytes as u64;
            move |request, next| error::refuse_oversized(limit, request, next)
        }))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(middleware::from_fn(error::log_server_errors));
    // Outermost, so preflights are answered before anything else runs.
    match cors(&config) {
        Some(cors) => app.layer(cors).with_state(state),
        None => app.with_state(state),
    }
}

/// CORS for the configured `allowed_origins` only: credentials (the
/// session cookie) allowed for exactly those origins, never `*`; other
/// origins get no CORS headers, so browsers keep their pages out. `Date`
/// and `Retry-After` are exposed (the client reads the server's time and
/// how long to wait). `None` without allowed origins.
fn cors(config: &Config) -> Option<CorsLayer> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let origins: Vec<HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(extract::CLIENT_HEADER),
            ])
            .expose_headers([header::DATE, header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
