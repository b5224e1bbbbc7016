//! The background loop ([`SyncClient::run`], [`SyncClient::spawn`]) and
//! its realtime WebSocket.
//!
//! The loop syncs on start, after [`SyncClient::notify`], on every poke and
//! WebSocket (re)connect, and every `interval`. Transient failures are
//! retried forever after a capped, jittered exponential backoff (or the
//! server's `Retry-After`, whichever is longer); failures that need a fix
//! elsewhere (a clock, a server) are retried at the backoff cap, and a
//! signed-out client makes no requests at all until
//! [`SyncClient::sign_in`]. The WebSocket only ever triggers a sync — a
//! lost poke or a dead socket costs latency, never data — and reconnects
//! with its own jittered backoff.

use std::future::Future;
use std::time::Duration;

use futures::future::RemoteHandle;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::client::SyncClient;
use crate::error::{Result, SyncError};
use crate::rt::{self, sleep, Instant};
use crate::status::SyncState;
use crate::transport::{Incoming, RealtimeSocket};
use crate::wire::Poke;

/// A connection that lasted this long resets the reconnect backoff; one
/// that keeps dropping sooner backs off further.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// A running [`SyncClient::spawn`] loop. Dropping it stops the loop too
/// (without waiting).
pub struct SyncTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<RemoteHandle<()>>,
}

impl std::fmt::Debug for SyncTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncTask")
            .field("running", &self.stop.is_some())
            .finish()
    }
}

impl SyncTask {
    /// Stops the loop and waits until it has (an in-flight sync finishes
    /// first; nothing is cut off mid-write).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await;
        }
    }
}

impl Drop for SyncTask {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Detached, not cancelled: the loop finishes an in-flight sync and
        // then sees the stop.
        if let Some(handle) = self.handle.take() {
            handle.forget();
        }
    }
}

/// How a WebSocket session ended.
enum Ended {
    /// The loop is stopping.
    Stop,
    /// The socket closed or broke after `lasted`.
    Closed { lasted: Duration },
}

/// Completes when the platform's online flag changes (never, where the
/// platform cannot tell).
async fn online_changed(online: &mut Option<watch::Receiver<bool>>) {
    match online {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The socket's next message, or `None` if `idle` (when set) passes first.
async fn next_within(
    idle: Option<Duration>,
    socket: &mut dyn RealtimeSocket,
) -> Option<Option<Result<Incoming>>> {
    match idle {
        Some(idle) => rt::timeout(idle, socket.next()).await,
        None => Some(socket.next().await),
    }
}

fn is_offline(online: &Option<watch::Receiver<bool>>) -> bool {
    online.as_ref().is_some_and(|rx| !*rx.borrow())
}

impl SyncClient {
    /// Runs [`run`](Self::run) in the background (a tokio task natively, a
    /// `spawn_local` task in a browser) until the returned handle is
    /// stopped or dropped.
    pub fn spawn(&self) -> SyncTask {
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.clone();
        let handle = rt::spawn(async move {
            client
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        SyncTask {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Keeps the vault in sync until `shutdown` completes (see the module
    /// docs for when it syncs and how it retries). While the platform says
    /// it is offline (a browser's `offline` event), it makes no requests
    /// and shows [`SyncState::Offline`]; going online syncs at once.
    pub async fn run<F: Future<Output = ()>>(&self, shutdown: F) {
        tokio::pin!(shutdown);
        let (stop_realtime, stopped) = watch::channel(false);
        // Dropping the handle cancels the socket task.
        let realtime = self.inner.options.realtime.then(|| {
            let client = self.clone();
            rt::spawn(async move { client.realtime(stopped).await })
        });
        let interval = self.inner.options.interval;
        let mut online = self.inner.api.transport().online();
        let mut backoff = Backoff::new(self.inner.options.backoff);
        let mut paused = false;
        loop {
            if is_offline(&online) {
                if !paused {
                    tracing::info!("offline; sync paused until the platform is online");
                    self.set_state(SyncState::Offline);
                    paused = true;
                }
                let stop = tokio::select! {
                    () = &mut shutdown => true,
                    () = online_changed(&mut online) => false,
                    // Nothing goes out, but the app writes on: keep the
                    // pending count it shows ("3 changes waiting") true.
                    () = self.inner.local.notified() => {
                        self.refresh_counts().await;
                        false
                    }
                };
                if stop {
                    break;
                }
                continue;
            }
            paused = false;
            let outcome = self.sync_once().await;
            let retry_in = match &outcome {
                Ok(_) => {
                    backoff.reset();
                    None
                }
                // Nothing to retry until the app signs in again.
                Err(SyncError::Unauthorized(_)) => None,
                Err(e) if e.is_transient() => {
                    let delay = self.jitter(&mut backoff);
                    Some(delay.max(e.retry_after().unwrap_or_default()))
                }
                Err(_) => Some(self.inner.options.backoff.max),
            };
            let stop = match retry_in {
                None => tokio::select! {
                    () = &mut shutdown => true,
                    () = self.inner.local.notified() => false,
                    () = self.inner.remote.notified() => false,
                    () = online_changed(&mut online) => false,
                    () = sleep(interval) => false,
                },
                // Local writes wait for the backoff; a (re)connected socket,
                // a poke or the platform coming online says the server may
                // be back and cuts it short.
                Some(delay) => tokio::select! {
                    () = &mut shutdown => true,
                    () = sleep(delay) => false,
                    () = self.inner.remote.notified() => false,
                    () = online_changed(&mut online) => false,
                },
            };
            if stop {
                break;
            }
        }
        let _ = stop_realtime.send(true);
        drop(realtime);
        self.set_realtime(false);
        tracing::debug!("sync loop stopped");
    }

    pub(crate) fn jitter(&self, backoff: &mut Backoff) -> Duration {
        let mut rng = self.inner.rng.lock().unwrap_or_else(|p| p.into_inner());
        backoff.next(&mut *rng)
    }

    fn set_realtime(&self, connected: bool) {
        self.inner.status.send_if_modified(|s| {
            let changed = s.realtime != connected;
            s.realtime = connected;
            changed
        });
    }

    /// Keeps a WebSocket open, reconnecting with backoff, until `stop`;
    /// while the platform is offline it waits for it to come online.
    async fn realtime(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.inner.options.backoff);
        let mut online = self.inner.api.transport().online();
        loop {
            if is_offline(&online) {
                tokio::select! {
                    _ = stop.changed() => return,
                    () = online_changed(&mut online) => continue,
                }
            }
            match self.listen(&mut stop, &mut online).await {
                Ok(Ended::Stop) => return,
                Ok(Ended::Closed { lasted }) => {
                    tracing::debug!(?lasted, "realtime socket closed; reconnecting");
                    if lasted >= STABLE_CONNECTION {
                        backoff.reset();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "realtime socket unavailable; retrying"),
            }
            self.set_realtime(false);
            let delay = self.jitter(&mut backoff);
            tokio::select! {
                _ = stop.changed() => return,
                () = sleep(delay) => {}
                () = online_changed(&mut online) => {}
            }
        }
    }

    /// One WebSocket session: connect, then turn pokes into syncs. Going
    /// offline ends it.
    async fn listen(
        &self,
        stop: &mut watch::Receiver<bool>,
        online: &mut Option<watch::Receiver<bool>>,
    ) -> Result<Ended> {
        if *stop.borrow() {
            return Ok(Ended::Stop);
        }
        let session = self.token().await?;
        let url = self.inner.api.ws_url("v1/ws")?;
        let transport = self.inner.api.transport();
        let connect = transport.connect(&url, session.bearer());
        let mut socket = match rt::timeout(self.inner.options.connect_timeout, connect).await {
            None => return Err(SyncError::Network("WebSocket connect timed out".into())),
            Some(Err(e)) if e.is_status(401) => {
                self.reauthenticate(session.generation).await?;
                return Ok(Ended::Closed {
                    lasted: Duration::ZERO,
                });
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(socket)) => socket,
        };
        let since = Instant::now();
        self.set_realtime(true);
        tracing::debug!("realtime socket connected");
        // Pokes sent while this device had no socket are gone: pull once.
        self.inner.remote.notify_one();
        // Silence means a dead connection only where pings are visible.
        let idle = socket
            .sees_pings()
            .then_some(self.inner.options.realtime_idle_timeout);
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    socket.close().await;
                    return Ok(Ended::Stop);
                }
                () = online_changed(online) => {
                    if is_offline(online) {
                        socket.close().await;
                        return Ok(Ended::Closed { lasted: since.elapsed() });
                    }
                }
                next = next_within(idle, socket.as_mut()) => match next {
                    None => {
                        socket.close().await;
                        return Err(SyncError::Network(format!(
                            "realtime socket silent for {:?}; reconnecting",
                            idle.unwrap_or_default()
                        )));
                    }
                    Some(None) => return Ok(Ended::Closed { lasted: since.elapsed() }),
                    Some(Some(Err(e))) => return Err(e),
                    Some(Some(Ok(Incoming::Text(text)))) => self.on_poke(&text),
                    Some(Some(Ok(Incoming::Alive))) => {}
                },
            }
        }
    }

    fn on_poke(&self, text: &str) {
        match serde_json::from_str::<Poke>(text) {
            Ok(poke) if poke.kind == "poke" => {
                let current = self.inner.status.borrow().cursor.clone();
                if poke.cursor.is_some() && poke.cursor == current {
                    tracing::trace!("poke for a cursor already pulled");
                    return;
                }
                tracing::debug!(cursor = ?poke.cursor, "poke");
                self.inner.remote.notify_one();
            }
            Ok(other) => tracing::debug!(kind = %other.kind, "ignoring a realtime message"),
            Err(e) => tracing::debug!(error = %e, "ignoring an unreadable realtime message"),
        }
    }
}

#[cfg(all(test, feature = "tls", not(target_family = "wasm")))]
mod tests {
    use tokio::net::TcpListener;

    /// `wss://` builds its TLS configuration (crypto provider, roots) and
    /// fails cleanly against a peer that does not speak TLS.
    #[tokio::test]
    async fn wss_fails_cleanly_against_a_plain_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let url = format!("wss://localhost:{}/v1/ws", addr.port());
        assert!(tokio_tungstenite::connect_async(url).await.is_err());
    }
}
