//! The fuzz targets: each builds its own valid seeds and checks one
//! parser's contract on any bytes — no panic, an error with a message for
//! bad input, and the round trip or authenticity property where cheap.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault::{ExportOptions, ImportOptions, MemoryStore, Vault, VaultOptions};
use chatvault_core::{
    Body, Change, ConversationId, ConversationRecord, DeviceId, Hlc, MessageId, MessageRecord,
    OpId, Timestamp, Tombstone, UserId,
};
use chatvault_crypto::{
    is_encrypted_stream, DecryptingReader, EncryptingWriter, KdfParams, KdfPolicy, KeyEnvelope,
    Keyring, RecordAad,
};
use chatvault_server::api::WsAuth;
use chatvault_server::{Config, Server};
use serde_json::json;
use tower::ServiceExt as _;

/// What a target made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid input, handled.
    Accepted,
    /// Invalid input, refused with an error that says why.
    Rejected,
    /// Not run: the input asks for work the harness will not spend
    /// (an Argon2 cost above the test parameters; bounded by design).
    Skipped,
    /// A broken property (panics become this too).
    Fail(String),
}

/// One fuzz target.
pub trait Target {
    /// Short name: the CLI's `--target` and the regressions folder.
    fn name(&self) -> &'static str;
    /// Valid inputs to start from.
    fn seeds(&self) -> &[Vec<u8>];
    /// Runs one input through the parser and checks its contract.
    fn check(&mut self, input: &[u8]) -> Verdict;
}

/// Every target, set up (each builds its seeds; the server target starts
/// an in-process server on a temporary SQLite file).
pub fn all_targets() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(ImportTarget::new()),
        Box::new(EnvelopeTarget::new()),
        Box::new(RecordTarget::new()),
        Box::new(StreamTarget::new()),
        Box::new(PushTarget::new()),
        Box::new(PullTarget::new()),
        Box::new(WsAuthTarget::new()),
    ]
}

const PASSPHRASE: &str = "fuzz passphrase";

fn fast() -> (KdfParams, KdfPolicy) {
    (
        KdfParams::insecure_fast_for_tests(),
        KdfPolicy::insecure_allow_weak_for_tests(),
    )
}

/// An error must say something a user can act on.
fn refused(error: impl std::fmt::Display) -> Verdict {
    if error.to_string().trim().is_empty() {
        Verdict::Fail("an error without a message".into())
    } else {
        Verdict::Rejected
    }
}

/// Whether an encrypted stream's header asks for more Argon2 than the test
/// parameters (up to the crate's `MAX_*` limits, by design): such inputs
/// would turn the fuzzer into a KDF benchmark.
fn costly_stream(input: &[u8]) -> bool {
    if !is_encrypted_stream(input) || input.len() < 19 {
        return false;
    }
    let field = |i: usize| u32::from_be_bytes([input[i], input[i + 1], input[i + 2], input[i + 3]]);
    field(7) > 1024 || field(11) > 2 || field(15) > 2
}

fn encrypt(plain: &[u8]) -> Vec<u8> {
    let (kdf, policy) = fast();
    let mut writer = EncryptingWriter::new_with_policy(Vec::new(), PASSPHRASE, kdf, policy)
        .expect("fast KDF parameters are accepted by the test policy");
    writer.write_all(plain).expect("writing to memory");
    writer.finish().expect("writing to memory")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

// ------------------------------------------------------------------ import

/// `Vault::import` on a fresh memory vault: chatvault-export JSON, the
/// encrypted export stream, and app-export (zustand persisted-store) JSON.
/// Accepted files must export and import again.
struct ImportTarget {
    rt: tokio::runtime::Runtime,
    seeds: Vec<Vec<u8>>,
}

impl ImportTarget {
    fn new() -> Self {
        let native = include_bytes!("../../chatvault/tests/fixtures/export-v1.json").to_vec();
        let seed = include_bytes!("../../chatvault/tests/fixtures/seed-app-export.json").to_vec();
        let encrypted = encrypt(&native);
        ImportTarget {
            rt: runtime(),
            seeds: vec![native, seed, encrypted],
        }
    }

    fn options() -> ImportOptions {
        ImportOptions {
            passphrase: Some(PASSPHRASE.to_owned().into()),
            kdf_policy: fast().1,
            progress: None,
        }
    }
}

async fn fresh_vault() -> Vault {
    let (kdf, kdf_policy) = fast();
    let options = VaultOptions {
        kdf,
        kdf_policy,
        ..VaultOptions::default()
    };
    Vault::open(Arc::new(MemoryStore::new()), options)
        .await
        .expect("a memory vault opens")
}

impl Target for ImportTarget {
    fn name(&self) -> &'static str {
        "import"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        if costly_stream(input) {
            return Verdict::Skipped;
        }
        self.rt.block_on(async {
            let vault = fresh_vault().await;
            match vault.import(input.to_vec(), Self::options()).await {
                Err(e) => refused(e),
                Ok(_) => {
                    let options = ExportOptions {
                        encryption: None,
                        progress: None,
                    };
                    let exported = match vault.export(Vec::new(), options).await {
                        Ok((bytes, _)) => bytes,
                        Err(e) => return Verdict::Fail(format!("imported, then export: {e}")),
                    };
                    match fresh_vault().await.import(exported, Self::options()).await {
                        Ok(_) => Verdict::Accepted,
                        Err(e) => Verdict::Fail(format!("its own export re-imported: {e}")),
                    }
                }
            }
        })
    }
}

// ---------------------------------------------------------------- envelope

/// `KeyEnvelope::from_json`: accepted envelopes survive `to_json` and
/// back unchanged, and unlock (when their KDF is cheap) without a panic.
struct EnvelopeTarget {
    seeds: Vec<Vec<u8>>,
}

impl EnvelopeTarget {
    fn new() -> Self {
        let (kdf, policy) = fast();
        let (envelope, _) = KeyEnvelope::create_with_policy(PASSPHRASE, kdf, policy)
            .expect("fast parameters accepted");
        let fixture = include_bytes!("../../chatvault-crypto/tests/fixtures/v1/key-envelope.json");
        EnvelopeTarget {
            seeds: vec![envelope.to_json().into_bytes(), fixture.to_vec()],
        }
    }
}

impl Target for EnvelopeTarget {
    fn name(&self) -> &'static str {
        "key_envelope"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        let text = String::from_utf8_lossy(input);
        let envelope = match KeyEnvelope::from_json(&text) {
            Ok(envelope) => envelope,
            Err(e) => return refused(e),
        };
        let json = envelope.to_json();
        match KeyEnvelope::from_json(&json) {
            Ok(again) if again.to_json() == json => {}
            Ok(_) => return Verdict::Fail("to_json → from_json → to_json changed it".into()),
            Err(e) => return Verdict::Fail(format!("its own to_json is refused: {e}")),
        }
        let kdf = envelope.kdf();
        if kdf.m_cost_kib <= 1024 && kdf.t_cost <= 2 && kdf.p_cost <= 2 {
            let _ = envelope.unlock_with_policy(PASSPHRASE, fast().1);
        }
        Verdict::Accepted
    }
}

// ------------------------------------------------------------------ record

const RECORD_ID: &str = "0190f5b2-7c3e-7000-8000-000000000001";

/// `Keyring::open` of record blobs: only the blobs sealed here open (to
/// their plaintext); every other byte string is refused. Also seals each
/// input as plaintext and opens it again.
struct RecordTarget {
    keyring: Keyring,
    seeds: Vec<Vec<u8>>,
    plaintexts: Vec<Vec<u8>>,
}

impl RecordTarget {
    fn new() -> Self {
        let keyring = Keyring::generate().expect("OS randomness");
        let plaintexts: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello".to_vec(),
            br#"{"role":"user","content":"a message body"}"#.repeat(20),
        ];
        let seeds = plaintexts
            .iter()
            .map(|p| keyring.seal(&aad(), p).expect("sealing"))
            .collect();
        RecordTarget {
            keyring,
            seeds,
            plaintexts,
        }
    }
}

fn aad() -> RecordAad<'static> {
    RecordAad::new("message", RECORD_ID).with_version("018c2a5e1f00-00000000-0000000000000001")
}

impl Target for RecordTarget {
    fn name(&self) -> &'static str {
        "record_blob"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        let _ = self.keyring.is_current(input);
        let sealed = match self.keyring.seal(&aad(), input) {
            Ok(sealed) => sealed,
            Err(e) => return Verdict::Fail(format!("sealing {} bytes: {e}", input.len())),
        };
        if self.keyring.open(&aad(), &sealed).ok().as_deref() != Some(input) {
            return Verdict::Fail("seal → open did not give the plaintext back".into());
        }
        match self.keyring.open(&aad(), input) {
            Err(e) => refused(e),
            Ok(plain) => match self.seeds.iter().position(|s| s == input) {
                Some(i) if plain == self.plaintexts[i] => Verdict::Accepted,
                Some(_) => Verdict::Fail("a sealed blob opened to other plaintext".into()),
                None => Verdict::Fail("a blob that was never sealed opened".into()),
            },
        }
    }
}

// ------------------------------------------------------------------ stream

/// `DecryptingReader`: only the streams encrypted here decrypt (to their
/// plaintext); any other bytes fail with an error. Also encrypts each
/// input and decrypts it again.
struct StreamTarget {
    seeds: Vec<Vec<u8>>,
    plaintexts: Vec<Vec<u8>>,
}

impl StreamTarget {
    fn new() -> Self {
        // Empty, one short chunk, and past the 64 KiB chunk boundary.
        let plaintexts: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a short export".to_vec(),
            (0..70_000u32).map(|i| (i % 251) as u8).collect(),
        ];
        let seeds = plaintexts.iter().map(|p| encrypt(p)).collect();
        StreamTarget { seeds, plaintexts }
    }
}

fn decrypt(input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut reader = DecryptingReader::new_with_policy(input, PASSPHRASE, fast().1)?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain)?;
    Ok(plain)
}

impl Target for StreamTarget {
    fn name(&self) -> &'static str {
        "stream"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        if costly_stream(input) {
            return Verdict::Skipped;
        }
        if input.len() < 1024 && decrypt(&encrypt(input)).ok().as_deref() != Some(input) {
            return Verdict::Fail("encrypt → decrypt did not give the input back".into());
        }
        match decrypt(input) {
            Err(e) => refused(e),
            Ok(plain) => match self.seeds.iter().position(|s| s == input) {
                Some(i) if plain == self.plaintexts[i] => Verdict::Accepted,
                Some(_) => Verdict::Fail("a stream decrypted to other plaintext".into()),
                None => Verdict::Fail("a stream that was never encrypted decrypted".into()),
            },
        }
    }
}

// ------------------------------------------------------------------ server

/// An in-process server on a temporary SQLite file with one account
/// signed in; requests go through the real router (extractors,
/// validation, store), without a socket.
struct FuzzServer {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    token: String,
    _data: tempfile::TempDir,
}

impl FuzzServer {
    fn start() -> Self {
        let rt = runtime();
        let data = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", data.path().join("server.db").display());
        let mut config = Config::new(url.parse().expect("a SQLite URL"));
        config.allow_weak_kdf = true;
        let router = rt.block_on(async {
            Server::open(config)
                .await
                .expect("the server opens")
                .router()
        });
        let mut server = FuzzServer {
            rt,
            router,
            token: String::new(),
            _data: data,
        };
        let key = BASE64.encode([7u8; 32]);
        let register = json!({
            "username": "fuzz",
            "kdf": {"mCostKib": 64, "tCost": 1, "pCost": 1},
            "salt": BASE64.encode([7u8; 16]),
            "authKey": key,
            "keyEnvelope": {"v": 1, "wrapped": "opaque"},
        });
        let (status, _) = server
            .send("POST", "/v1/auth/register", register.to_string())
            .expect("a valid request");
        assert!(status.is_success(), "register: {status}");
        let login = json!({"username": "fuzz", "authKey": key});
        let (status, body) = server
            .send("POST", "/v1/auth/login", login.to_string())
            .expect("a valid request");
        assert!(status.is_success(), "login: {status}");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("login answers JSON");
        server.token = body["token"].as_str().expect("a session token").to_owned();
        server
    }

    /// The answer's status and body; `None` if the request cannot be built.
    fn send(
        &mut self,
        method: &str,
        uri: &str,
        body: impl Into<HttpBody>,
    ) -> Option<(StatusCode, Vec<u8>)> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.token))
            .body(body.into());
        let request = match request {
            Ok(request) => request,
            // Not even a valid URI: no client can send it to a server.
            Err(_) => return None,
        };
        let router = self.router.clone();
        Some(self.rt.block_on(async move {
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            (status, body)
        }))
    }

    /// No 5xx; every answer is JSON, and a refusal carries a code and a
    /// message.
    fn judge(status: StatusCode, body: &[u8]) -> Verdict {
        if status.is_server_error() {
            return Verdict::Fail(format!("{status}: {}", String::from_utf8_lossy(body)));
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Verdict::Fail(format!("{status} with a body that is not JSON"));
        };
        if status.is_success() {
            return Verdict::Accepted;
        }
        let error = &json["error"];
        if error["code"].as_str().is_some_and(|c| !c.is_empty())
            && error["message"].as_str().is_some_and(|m| !m.is_empty())
        {
            Verdict::Rejected
        } else {
            Verdict::Fail(format!(
                "{status} without an error code and message: {json}"
            ))
        }
    }
}

fn hlc(wall_ms: u64) -> Hlc {
    Hlc::new(wall_ms, 0, DeviceId(0xd1)).expect("stamp in range")
}

/// `POST /v1/sync/push` with the input as its body.
struct PushTarget {
    server: FuzzServer,
    seeds: Vec<Vec<u8>>,
}

impl PushTarget {
    fn new() -> Self {
        let (conv, msg) = (ConversationId::new(), MessageId::new());
        let wall = 1_700_000_000_000;
        let changes = vec![
            Change::upsert_conversation(
                OpId::new(),
                &ConversationRecord {
                    id: conv,
                    user_id: UserId::local(),
                    created_at: Timestamp(1),
                    updated_at: Timestamp(wall as i64),
                    version: hlc(wall),
                    body: Body(b"sealed conversation".to_vec()),
                },
            ),
            Change::upsert_message(
                OpId::new(),
                &MessageRecord {
                    id: msg,
                    conversation_id: conv,
                    created_at: Timestamp(1),
                    updated_at: Timestamp(wall as i64),
                    version: hlc(wall + 1),
                    body: Body(b"sealed message".to_vec()),
                },
            ),
            Change::delete(
                OpId::new(),
                &Tombstone::message(msg, conv, hlc(wall + 2), Timestamp(wall as i64)),
            ),
        ];
        let seeds = vec![
            json!({ "changes": changes }).to_string().into_bytes(),
            json!({ "changes": changes[..1] }).to_string().into_bytes(),
            br#"{"changes":[]}"#.to_vec(),
        ];
        PushTarget {
            server: FuzzServer::start(),
            seeds,
        }
    }
}

impl Target for PushTarget {
    fn name(&self) -> &'static str {
        "server_push"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        match self.server.send("POST", "/v1/sync/push", input.to_vec()) {
            Some((status, body)) => FuzzServer::judge(status, &body),
            None => Verdict::Fail("a push request could not be built".into()),
        }
    }
}

/// `GET /v1/sync/pull` and `/v1/sync/snapshot` with the input as the
/// query string.
struct PullTarget {
    server: FuzzServer,
    seeds: Vec<Vec<u8>>,
}

impl PullTarget {
    fn new() -> Self {
        let mut server = FuzzServer::start();
        let cursor = server
            .send("GET", "/v1/sync/pull", HttpBody::empty())
            .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .and_then(|b| b["cursor"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let seeds = vec![
            b"pull?limit=10".to_vec(),
            format!("pull?after={cursor}&limit=500").into_bytes(),
            b"snapshot?limit=2".to_vec(),
            format!("snapshot?after={cursor}").into_bytes(),
        ];
        PullTarget { server, seeds }
    }
}

impl Target for PullTarget {
    fn name(&self) -> &'static str {
        "server_pull"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        let uri = format!("/v1/sync/{}", String::from_utf8_lossy(input));
        let Some((status, body)) = self.server.send("GET", &uri, HttpBody::empty()) else {
            return Verdict::Rejected;
        };
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            // The path was mutated away from pull/snapshot: the router's
            // own answer, outside what this target is about.
            return Verdict::Rejected;
        }
        FuzzServer::judge(status, &body)
    }
}

/// The WebSocket's first message, `{"type":"auth","token":"..."}`, parsed
/// as the server does (`serde_json` into [`WsAuth`]); its `Debug` must
/// never show the token.
struct WsAuthTarget {
    seeds: Vec<Vec<u8>>,
}

impl WsAuthTarget {
    fn new() -> Self {
        WsAuthTarget {
            seeds: vec![
                br#"{"type":"auth","token":"c2Vzc2lvbiB0b2tlbg"}"#.to_vec(),
                br#"{"token":"x","type":"auth","extra":[1,2,{}]}"#.to_vec(),
            ],
        }
    }
}

impl Target for WsAuthTarget {
    fn name(&self) -> &'static str {
        "ws_auth"
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn check(&mut self, input: &[u8]) -> Verdict {
        let Ok(text) = std::str::from_utf8(input) else {
            // A binary frame: the server closes the socket without parsing.
            return Verdict::Rejected;
        };
        match serde_json::from_str::<WsAuth>(text) {
            Err(e) => refused(e),
            Ok(auth) => {
                let blank = WsAuth {
                    kind: auth.kind.clone(),
                    token: String::new(),
                };
                if format!("{auth:?}") == format!("{blank:?}") {
                    Verdict::Accepted
                } else {
                    Verdict::Fail("WsAuth's Debug shows the token".into())
                }
            }
        }
    }
}
