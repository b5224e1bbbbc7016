//! What the server benchmarks share: a server in this process on SQLite
//! in a temporary directory, with one registered and signed-in account.

#![allow(dead_code)] // each benchmark uses a different part

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault_server::{Config, DatabaseUrl, Server};
use serde_json::{json, Value};

pub struct Running {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Running {
    let dir = tempfile::tempdir().expect("dir");
    let base = serve(DatabaseUrl::Sqlite(dir.path().join("server.db"))).await;
    let http = client();
    let token = sign_in(&http, &base, true).await;
    Running {
        base,
        token,
        http,
        _dir: dir,
    }
}

/// Starts a server on `database` in this process; returns its base URL.
pub async fn serve(database: DatabaseUrl) -> String {
    let mut config = Config::new(database);
    config.allow_weak_kdf = true;
    config.insecure_cookies = true;
    let server = Server::open(config).await.expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    base
}

/// An HTTP client for the benchmarks' requests.
pub fn client() -> reqwest::Client {
    // reqwest's TLS is built without a bundled provider in this workspace.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::new()
}

/// Signs the benchmark's account in at `base` (registering it first when
/// `register`: once per database) and returns the session token.
pub async fn sign_in(http: &reqwest::Client, base: &str, register: bool) -> String {
    let key = BASE64.encode([9u8; 32]);
    if register {
        let register = json!({
            "username": "bench",
            "kdf": {"mCostKib": 64, "tCost": 1, "pCost": 1},
            "salt": BASE64.encode([7u8; 16]),
            "authKey": key,
            "keyEnvelope": {"opaque": true},
        });
        post_json(http, &format!("{base}/v1/auth/register"), &register, None).await;
    }
    let login = post_json(
        http,
        &format!("{base}/v1/auth/login"),
        &json!({"username": "bench", "authKey": key, "client": "native"}),
        None,
    )
    .await;
    let login: Value = serde_json::from_slice(&login).expect("login body");
    login["token"].as_str().expect("token").to_owned()
}

/// POSTs JSON (the server insists on the content type) and returns the body.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    token: Option<&str>,
) -> bytes::Bytes {
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("json"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("body")
}
