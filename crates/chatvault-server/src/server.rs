//! [`Server`]: a configured server's lifecycle. Opening connects the store
//! (creating or migrating the schema), loads the server secret, and — on
//! PostgreSQL — subscribes to other processes' pokes; running serves HTTP
//! on a listener with periodic maintenance until a shutdown future fires.
//!
//! Owns the background tasks and stops them; must never print to stdout
//! (the binary prints its one ready line itself).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::random_bytes;
use crate::clock::minus;
use crate::config::Config;
use crate::http::{router, AppState};
use crate::hub::Hub;
use crate::kdf_pool::KdfPool;
use crate::store::{self, PokeSink, PurgePlan, PurgeReport, ServerStore, ServerStoreError};
use crate::types::AuthKey;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] ServerStoreError),
    /// Listening or serving failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// Startup work (key generation) failed.
    #[error("startup: {0}")]
    Startup(String),
}

/// Aborts a background task when the last [`Server`] handle goes away.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// An opened server. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Server {
    state: AppState,
    shutdown: Arc<watch::Sender<bool>>,
    _poke_listener: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("database", &self.state.config().database)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the database `config` names and prepares to serve.
    pub async fn open(config: Config) -> Result<Server, ServeError> {
        let store = store::open(&config.database).await?;
        Self::with_store(config, store).await
    }

    /// Prepares to serve from an already opened store (e.g. one wrapped
    /// with fault injection in tests); `config.database` is only reported.
    pub async fn with_store(
        config: Config,
        store: Arc<dyn ServerStore>,
    ) -> Result<Server, ServeError> {
        let server_secret = store.server_secret().await?;
        let kdf = KdfPool::start(config.kdf).map_err(|e| ServeError::Startup(e.to_string()))?;
        // Verified against for unknown usernames, at the same cost as real
        // hashes so a login for a missing name takes as long.
        let dummy_key =
            AuthKey::from_bytes(random_bytes().map_err(|e| ServeError::Startup(e.to_string()))?);
        let dummy_hash = kdf
            .hash(dummy_key)
            .await
            .map_err(|e| ServeError::Startup(e.to_string()))?;
        let hub = Hub::default();
        let sink_hub = hub.clone();
        let sink: PokeSink = Arc::new(move |account, head| sink_hub.poke(account, head));
        let poke_listener = store.start_poke_listener(sink).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        Ok(Server {
            state: AppState::new(
                store,
                hub,
                config,
                server_secret,
                dummy_hash,
                shutdown_rx,
                kdf,
            ),
            shutdown: Arc::new(shutdown),
            _poke_listener: Arc::new(AbortOnDrop(poke_listener)),
        })
    }

    /// The complete axum application (for embedding or in-process tests).
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        self.state.config()
    }

    /// One maintenance pass at the configured clock's "now": purges
    /// tombstones and remembered push results older than the horizon,
    /// expired sessions and stale throttle entries. Runs at startup and
    /// every `maintenance_interval` while serving.
    pub async fn run_maintenance(&self) -> Result<PurgeReport, ServerStoreError> {
        let config = self.state.config();
        let now = self.state.now();
        let horizon = minus(now, config.tombstone_horizon());
        let report = self
            .state
            .store()
            .purge(PurgePlan {
                tombstones_before: horizon,
                op_results_before: horizon,
                sessions_used_before: minus(now, config.sessions.idle),
                sessions_created_before: minus(now, config.sessions.absolute),
                throttle_before: minus(now, config.throttle.forget_after()),
            })
            .await?;
        if report != PurgeReport::default() {
            tracing::info!(?report, "maintenance purged expired data");
        }
        Ok(report)
    }

    /// WebSockets currently open in this process.
    pub fn open_sockets(&self) -> usize {
        self.state.hub().socket_count()
    }

    /// Serves on `listener` until `shutdown` completes, then closes open
    /// WebSockets and finishes in-flight requests.
    pub async fn run<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        tracing::info!(
            url = %format_args!("http://{addr}"),
            database = %self.state.config().database,
            "chatvault server listening"
        );
        let maintenance = AbortOnDrop(Some(tokio::spawn(maintenance_loop(self.clone()))));
        let notify = Arc::clone(&self.shutdown);
        let app = self.router();
        let timeouts = self.state.config().timeouts;
        let served = crate::listen::serve(listener, app, timeouts, async move {
            shutdown.await;
            tracing::info!("shutting down");
            // Sockets close themselves when this flips.
            notify.send_replace(true);
        })
        .await;
        // Upgraded connections are not hyper's any more: wait (bounded) for
        // the socket tasks to send their close frames before returning.
        if !self.state.hub().wait_for_sockets(SOCKET_CLOSE_GRACE).await {
            tracing::warn!("some WebSockets did not close in time");
        }
        drop(maintenance);
        served.map_err(ServeError::Io)
    }
}

/// How long shutdown waits for open WebSockets to send their close frames.
const SOCKET_CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn maintenance_loop(server: Server) {
    let mut ticker = tokio::time::interval(server.state.config().maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = server.run_maintenance().await {
            tracing::error!(error = %e, "maintenance failed; retrying next interval");
        }
    }
}

/// Opens the server `config` describes and serves on `listener` until
/// Ctrl-C or SIGTERM. The entry point for embedding (`chatvault serve`).
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServeError> {
    Server::open(config)
        .await?
        .run(listener, shutdown_signal())
        .await
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
