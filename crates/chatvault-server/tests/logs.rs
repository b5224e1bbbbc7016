//! No secret and no record content in the server's logs, even at TRACE:
//! a register / login / push / pull / WebSocket / logout flow on each
//! backend runs with every target (the server's and its dependencies':
//! hyper, axum, rusqlite, tokio-postgres) logging at TRACE into a buffer,
//! and no line may contain the auth key, the session token or a record
//! body, in any of the encodings they travel in.
//!
//! Its own test binary: the capture is the process-wide subscriber, which
//! nothing else in this process may set. The passphrase never reaches the
//! server (clients send a key derived from it), so the auth key stands for
//! it here.

#[path = "server/common.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chatvault_core::{ConversationId, MessageId};
use common::{auth_key_for, conversation, message, Backend, TestServer};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

/// Every log line written so far.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const BODY: &[u8] = b"PLAINTEXT meet me at the old mill at nine";

/// The whole flow against one backend; returns the secrets it used.
async fn flow(backend: Backend) -> Option<Vec<(String, String)>> {
    let srv = TestServer::start(backend).await?;
    let anonymous = srv.anonymous();
    anonymous
        .post(
            "/v1/auth/prelogin",
            &serde_json::json!({"username": "alice"}),
        )
        .await;
    let api = srv.user("alice").await;
    // A failed login logs too (backoff); its key is a secret as well.
    let wrong = [0x5au8; 32];
    let _ = anonymous.login("alice", &wrong, None).await;
    let token = api.token.clone().expect("a bearer token");

    let ws = format!("{}/v1/ws", srv.base.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.expect("ws");
    socket
        .send(Message::text(format!(
            r#"{{"type":"auth","token":"{token}"}}"#
        )))
        .await
        .expect("send auth");
    let conv = ConversationId::new();
    let now = srv.now_ms();
    api.push(&[
        conversation(conv, now, BODY),
        message(MessageId::new(), conv, now + 1, BODY),
    ])
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.next()).await;
    let pulled = api.pull(None, None).await;
    assert!(pulled.status.is_success());
    api.post("/v1/auth/logout", &serde_json::json!({})).await;
    drop(socket);

    let key = auth_key_for("alice");
    let mut secrets = Vec::new();
    for (what, bytes) in [
        ("auth key", &key[..]),
        ("wrong auth key", &wrong[..]),
        ("record body", BODY),
    ] {
        secrets.push((format!("{what} (base64)"), STANDARD.encode(bytes)));
        secrets.push((format!("{what} (base64url)"), URL_SAFE_NO_PAD.encode(bytes)));
        secrets.push((format!("{what} (hex)"), hex_of(bytes)));
        secrets.push((format!("{what} (byte list)"), format!("{:?}", &bytes[..8])));
    }
    secrets.push((
        "record body (text)".into(),
        "meet me at the old mill".into(),
    ));
    secrets.push(("session token".into(), token));
    Some(secrets)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_record_content_in_trace_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    // `try_init` also routes the `log` crate's records (tokio-postgres,
    // rusqlite's dependencies) into the capture.
    tracing_subscriber::fmt()
        // Asked for TRACE everywhere, tungstenite by name too: the
        // server's filter must still hold back what would leak.
        .with_env_filter(chatvault_server::log_filter(
            tracing_subscriber::EnvFilter::new("trace,tungstenite=trace"),
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber");

    let mut secrets = Vec::new();
    let mut backends = 0;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(used) = flow(backend).await {
            secrets.extend(used);
            backends += 1;
        }
    }
    let text = String::from_utf8_lossy(&capture.0.lock().expect("capture lock")).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    // The capture works: a TRACE run of this flow logs plenty.
    assert!(lines.len() > 100, "only {} log lines captured", lines.len());
    let mut targets: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|t| t.ends_with(':'))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    println!("targets that logged: {}", targets.join(" "));
    for (what, secret) in &secrets {
        if let Some(line) = lines.iter().find(|l| l.contains(secret.as_str())) {
            panic!("the {what} appears in a log line: {line}");
        }
    }
    println!(
        "{} TRACE lines from {backends} backends, none with any of {} secret forms",
        lines.len(),
        secrets.len()
    );
}
