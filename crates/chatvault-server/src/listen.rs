//! The accept loop: serves the axum app over HTTP/1 on a TCP listener with
//! the timeouts `axum::serve` does not have, and shuts down gracefully.
//!
//! - **Header read** (`Timeouts::header_read`): a connection must deliver a
//!   complete request head this soon after it opens or after its previous
//!   response — so it is also the keep-alive idle timeout (hyper runs the
//!   same timer while a kept-alive connection waits for its next request).
//! - **Body** (`Timeouts::body`): the whole request body must arrive within
//!   this; a trickling upload ends with an error and the connection closes.
//!
//! Upgraded connections (WebSockets) leave hyper, so neither applies to
//! them: their liveness is the ping/pong in `http::ws`. Must never read a
//! request body itself (only wrap it) nor hold a connection past shutdown
//! longer than the requests in flight need.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// How long the server waits for slow clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time to receive a complete request head, on a new connection and
    /// between requests on a kept-alive one (default 10 s).
    pub header_read: Duration,
    /// Time to receive a whole request body (default 60 s: 4 MiB at about
    /// 70 KiB/s).
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            body: Duration::from_secs(60),
        }
    }
}

/// The body did not arrive within [`Timeouts::body`].
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
struct BodyTimedOut(Duration);

/// `body` that fails once `limit` has passed since the request arrived,
/// however steadily it trickles.
fn with_deadline(body: Incoming, limit: Duration) -> Body {
    let deadline = tokio::time::Instant::now() + limit;
    let frames = Body::new(body).into_data_stream();
    let bounded = futures::stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(item)) => Some((item, Some(frames))),
            Ok(None) => None,
            Err(_) => Some((Err(axum::Error::new(BodyTimedOut(limit))), None)),
        }
    });
    Body::from_stream(bounded)
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish and returns once every
/// connection has closed.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    // Each connection holds a receiver; `closed()` on the sender completes
    // when the last one is gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep
                    // serving the connections already open.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo::<SocketAddr>(peer));
            let request = hyper::Request::from_parts(parts, with_deadline(body, timeouts.body));
            let app = app.clone();
            // The router never fails (`Infallible`): errors are responses.
            app.oneshot(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                // Timeouts and resets: the client's problem, not ours.
                tracing::debug!(error = %e, %peer, "connection ended");
            }
            drop(stop);
        });
    }
    drop(listener);
    drop(stop_rx);
    stop_tx.send_replace(true);
    stop_tx.closed().await;
    Ok(())
}
