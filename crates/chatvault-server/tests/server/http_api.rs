//! The HTTP API end to end: a real server on 127.0.0.1:0 per test, driven
//! over HTTP, once per backend. Time is a manual clock: throttling, session
//! expiry and the tombstone horizon are tested by moving it, never by
//! sleeping.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chatvault_core::{ConversationId, MessageId, MAX_CLOCK_DRIFT_MS};
use reqwest::header::{CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::backend_tests;
use crate::common::{
    auth_key_for, body_of, conversation, delete_conversation, delete_message, message, seq_of,
    weak_kdf, Backend, TestServer,
};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

fn set_cookie(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .expect("ASCII cookie")
        .to_owned()
}

async fn health_and_openapi_are_served(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    let health = api.get("/healthz").await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let doc = api.get("/v1/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"]
        .as_str()
        .unwrap_or_default()
        .starts_with("3."));
    assert!(doc.body["paths"]["/v1/sync/push"]["post"].is_object());
    assert!(doc.body["components"]["schemas"]["Change"].is_object());
}

async fn login_sets_a_strict_http_only_secure_cookie(backend: Backend) {
    let Some(srv) = TestServer::start_with(backend, |c| c.insecure_cookies = false).await else {
        return;
    };
    let api = srv.anonymous();
    let key = auth_key_for("alice");
    assert_eq!(api.register("alice", &key).await.0, StatusCode::CREATED);
    let (status, headers, body) = api.login("alice", &key, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = set_cookie(&headers);
    assert!(cookie.starts_with("cv_session="), "{cookie}");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|p| p == flag),
            "{flag} missing in {cookie}"
        );
    }
    let token = body["token"]
        .as_str()
        .expect("token for unspecified client");
    assert_eq!(token.len(), 43, "256-bit token");
    assert!(cookie.starts_with(&format!("cv_session={token};")));
    assert!(body["expiresAt"].as_i64().expect("expiresAt") > srv.now_ms() as i64);
    assert!(body["userId"].as_str().is_some());
}

async fn insecure_cookies_omit_only_the_secure_flag(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    let key = auth_key_for("alice");
    api.register("alice", &key).await;
    let (_, headers, _) = api.login("alice", &key, None).await;
    let cookie = set_cookie(&headers);
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
}

async fn browser_gets_cookie_only_and_native_gets_token_only(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    let key = auth_key_for("alice");
    api.register("alice", &key).await;

    let (status, headers, body) = api.login("alice", &key, Some("browser")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.get("token").is_none(),
        "browser sessions keep the token out of JS: {body}"
    );
    let cookie = set_cookie(&headers);
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    // The cookie alone authenticates.
    let keys = api
        .send(
            api.http
                .get(format!("{}/v1/keys", srv.base))
                .header(COOKIE, pair),
        )
        .await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);

    let (status, headers, body) = api.login("alice", &key, Some("native")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(SET_COOKIE).is_none());
    assert!(body["token"].is_string());
}

async fn register_refuses_duplicates_and_bad_input(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    let key = auth_key_for("alice");
    assert_eq!(api.register("alice", &key).await.0, StatusCode::CREATED);
    let (status, body) = api.register("ALICE", &key).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "username_taken")
    );

    let valid = json!({
        "username": "bob", "kdf": weak_kdf(), "salt": BASE64.encode([1u8; 16]),
        "authKey": BASE64.encode([2u8; 32]), "keyEnvelope": {"k": 1},
    });
    let cases = [
        ("username", json!("has space")),
        ("username", json!("")),
        ("salt", json!(BASE64.encode([1u8; 15]))),
        ("authKey", json!(BASE64.encode([2u8; 31]))),
        ("authKey", json!("not base64!")),
        ("keyEnvelope", json!("a string")),
        ("keyEnvelope", json!({"big": "x".repeat(17 * 1024)})),
        (
            "kdf",
            json!({"mCostKib": 4294967295u32, "tCost": 1, "pCost": 1}),
        ),
        ("kdf", json!({"mCostKib": 64, "tCost": 0, "pCost": 1})),
    ];
    for (field, value) in cases {
        let mut body = valid.clone();
        body[field] = value.clone();
        let r = api.post("/v1/auth/register", &body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{field} = {value}: {}",
            r.body
        );
        assert!(r.body["error"]["message"].is_string());
    }
    assert_eq!(
        api.post("/v1/auth/register", &valid).await.status,
        StatusCode::CREATED
    );
}

async fn strict_server_refuses_weak_kdf_parameters(backend: Backend) {
    let Some(srv) = TestServer::start_with(backend, |c| c.allow_weak_kdf = false).await else {
        return;
    };
    let api = srv.anonymous();
    let (status, body) = api.register("alice", &auth_key_for("alice")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_kdf"),
        "{body}"
    );
    let strong = json!({
        "username": "alice", "kdf": {"mCostKib": 19456, "tCost": 2, "pCost": 1},
        "salt": BASE64.encode([1u8; 16]), "authKey": BASE64.encode([2u8; 32]), "keyEnvelope": {},
    });
    assert_eq!(
        api.post("/v1/auth/register", &strong).await.status,
        StatusCode::CREATED
    );
}

async fn prelogin_answers_real_values_and_stable_fakes(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    api.register("alice", &auth_key_for("alice")).await;
    let real = api
        .post("/v1/auth/prelogin", &json!({"username": "Alice"}))
        .await;
    assert_eq!(real.status, StatusCode::OK);
    assert_eq!(real.body["kdf"], weak_kdf());
    assert_eq!(real.body["salt"], json!(BASE64.encode([7u8; 16])));

    let ghost = api
        .post("/v1/auth/prelogin", &json!({"username": "ghost"}))
        .await;
    assert_eq!(ghost.status, StatusCode::OK);
    assert_eq!(
        ghost.body["kdf"],
        weak_kdf(),
        "unknown names get parameters drawn from the accounts' own (here: alice's only)"
    );
    let salt = BASE64
        .decode(ghost.body["salt"].as_str().expect("salt"))
        .expect("base64");
    assert_eq!(salt.len(), 16);
    let again = api
        .post("/v1/auth/prelogin", &json!({"username": "GHOST"}))
        .await;
    assert_eq!(again.body, ghost.body, "fake values are stable");
    let other = api
        .post("/v1/auth/prelogin", &json!({"username": "phantom"}))
        .await;
    assert_ne!(other.body["salt"], ghost.body["salt"]);
    assert_eq!(other.body["kdf"], weak_kdf());
}

async fn wrong_key_and_unknown_user_get_the_same_401(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    api.register("alice", &auth_key_for("alice")).await;
    let (s1, _, wrong_key) = api.login("alice", &[0u8; 32], None).await;
    let (s2, _, no_user) = api.login("nobody", &[0u8; 32], None).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(wrong_key, no_user);
    assert_eq!(code(&wrong_key), "invalid_credentials");
}

async fn keys_round_trip_and_passphrase_change_revokes_other_sessions(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let me = srv.user("alice").await;
    let mut other_device = srv.anonymous();
    let (_, _, body) = other_device
        .login("alice", &auth_key_for("alice"), None)
        .await;
    other_device.token = body["token"].as_str().map(str::to_owned);

    let keys = me.get("/v1/keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert_eq!(
        keys.body["keyEnvelope"],
        json!({"v": 1, "wrapped": "opaque"})
    );

    let r = me
        .put(
            "/v1/keys",
            &json!({"keyEnvelope": {"v": 2}, "authKey": BASE64.encode(auth_key_for("alice"))}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(
        other_device.get("/v1/keys").await.body["keyEnvelope"],
        json!({"v": 2})
    );

    let new_key = [42u8; 32];
    let change = |current: Option<[u8; 32]>| {
        let mut body = json!({
            "keyEnvelope": {"v": 3}, "newAuthKey": BASE64.encode(new_key),
            "kdf": weak_kdf(), "salt": BASE64.encode([9u8; 16]),
        });
        if let Some(k) = current {
            body["authKey"] = json!(BASE64.encode(k));
        }
        body
    };
    let r = me.put("/v1/keys", &change(None)).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::BAD_REQUEST, "auth_key_required")
    );
    let r = me
        .put(
            "/v1/keys",
            &json!({"keyEnvelope": {}, "newAuthKey": BASE64.encode(new_key)}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::BAD_REQUEST, "incomplete_credentials")
    );
    let r = me.put("/v1/keys", &change(Some([0u8; 32]))).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::FORBIDDEN, "wrong_auth_key")
    );
    let r = me
        .put("/v1/keys", &change(Some(auth_key_for("alice"))))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    assert_eq!(
        me.get("/v1/keys").await.status,
        StatusCode::OK,
        "the changing session stays"
    );
    assert_eq!(
        other_device.get("/v1/keys").await.status,
        StatusCode::UNAUTHORIZED
    );
    let anon = srv.anonymous();
    assert_eq!(
        anon.login("alice", &auth_key_for("alice"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(anon.login("alice", &new_key, None).await.0, StatusCode::OK);
    let pre = anon
        .post("/v1/auth/prelogin", &json!({"username": "alice"}))
        .await;
    assert_eq!(pre.body["salt"], json!(BASE64.encode([9u8; 16])));
}

/// Over its quota an account's new records are refused one by one
/// (`quota_exceeded`, nothing stored is touched), deletions still apply,
/// and a refused record goes in once space was freed.
async fn the_storage_quota_refuses_growth_but_never_deletions(backend: Backend) {
    let Some(srv) = TestServer::start_with(backend, |c| c.account_quota_bytes = Some(10_000)).await
    else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    let (m1, m2, m3) = (MessageId::new(), MessageId::new(), MessageId::new());
    let body = [b'x'; 4_000];
    let batch = [
        message(m1, conv, now, &body),
        message(m2, conv, now, &body),
        message(m3, conv, now, &body),
    ];
    let pushed = api.push(&batch).await;
    let status = |r: &Value| (r["status"].clone(), r["reason"].clone());
    let results = pushed["results"].as_array().expect("results");
    assert_eq!(status(&results[0]), (json!("applied"), Value::Null));
    assert_eq!(status(&results[1]), (json!("applied"), Value::Null));
    assert_eq!(
        status(&results[2]),
        (json!("rejected"), json!("quota_exceeded")),
        "{pushed}"
    );
    assert!(results[2]["message"]
        .as_str()
        .unwrap()
        .contains("delete something"));
    // 8,000 of 10,000 bytes used: 2,500 more do not fit; a deletion does.
    let more = api
        .push(&[message(MessageId::new(), conv, now + 1, &[b'y'; 2_500])])
        .await;
    assert_eq!(more["results"][0]["reason"], "quota_exceeded", "{more}");
    let freed = api.push(&[delete_message(m1, conv, now + 2)]).await;
    assert_eq!(freed["results"][0]["status"], "applied", "{freed}");
    // The refused record fits now (same change, same op id: a retry).
    let retried = api.push(&batch[2..]).await;
    assert_eq!(retried["results"][0]["status"], "applied", "{retried}");
    // Nothing stored was lost on the way: m2 and m3 are there, m1 deleted.
    let pulled = api.pull(None, Some(100)).await;
    let live: Vec<&Value> = pulled.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "upsert")
        .collect();
    assert_eq!(live.len(), 2, "{}", pulled.body);
}

async fn push_then_pull_pages_with_cursors(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    let mut batch = vec![conversation(conv, now, b"title")];
    for i in 0..4 {
        batch.push(message(
            MessageId::new(),
            conv,
            now + i,
            format!("m{i}").as_bytes(),
        ));
    }
    let pushed = api.push(&batch).await;
    let results = pushed["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["status"], "applied");
        assert_eq!(r["seq"], json!(i + 1));
        assert_eq!(r["opId"], json!(batch[i].op_id.to_string()));
    }
    assert_eq!(seq_of(&pushed["cursor"]), 5);
    let head = pushed["cursor"].as_str().expect("cursor").to_owned();

    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = api.pull(cursor.as_deref(), Some(2)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        pages += 1;
        let changes = r.body["changes"].as_array().expect("changes");
        seen.extend(changes.iter().map(|c| c["seq"].as_u64().expect("seq")));
        cursor = Some(
            r.body["nextCursor"]
                .as_str()
                .expect("nextCursor")
                .to_owned(),
        );
        if !r.body["hasMore"].as_bool().expect("hasMore") {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_eq!(cursor.as_deref(), Some(head.as_str()));
    let (all, _) = api.pull_all(None).await;
    assert_eq!(all[0]["opId"], json!(batch[0].op_id.to_string()));
    assert_eq!(body_of(&all[1]), b"m0");
    // Nothing new: empty page, cursor unchanged.
    let r = api.pull(Some(&head), None).await;
    assert_eq!(
        (
            r.body["changes"].as_array().map(Vec::len),
            r.body["nextCursor"].as_str()
        ),
        (Some(0), Some(head.as_str()))
    );
}

async fn replayed_push_gets_the_same_answer_and_changes_nothing(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    let batch = vec![
        conversation(conv, now, b"c"),
        message(MessageId::new(), conv, now, b"m"),
    ];
    let first = api.push(&batch).await;
    let (before, cursor) = api.pull_all(None).await;
    let second = api.push(&batch).await;
    assert_eq!(first, second);
    let (after, cursor_after) = api.pull_all(None).await;
    assert_eq!((before, cursor), (after, cursor_after));
}

async fn older_versions_are_superseded_newer_applied(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let phone = srv.user("alice").await;
    let laptop = phone.clone();
    let now = srv.now_ms();
    let conv = ConversationId::new();
    phone
        .push(&[conversation(conv, now - 1_000, b"base")])
        .await;
    let newer = laptop
        .push(&[conversation(conv, now, b"laptop wins")])
        .await;
    assert_eq!(newer["results"][0]["status"], "applied");
    let stale = phone
        .push(&[conversation(conv, now - 500, b"phone loses")])
        .await;
    assert_eq!(stale["results"][0]["status"], "superseded");
    assert!(stale["results"][0].get("seq").is_none());
    let (all, _) = phone.pull_all(None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(body_of(&all[0]), b"laptop wins");
}

async fn tombstones_sync_and_cover_their_messages(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    api.push(&[
        conversation(conv, now - 100, b"c"),
        message(MessageId::new(), conv, now - 90, b"m"),
    ])
    .await;
    let (_, cursor) = api.pull_all(None).await;
    let del = api.push(&[delete_conversation(conv, now - 50)]).await;
    assert_eq!(del["results"][0]["status"], "applied");

    let (changes, _) = api.pull_all(Some(&cursor)).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0]["op"].as_str(), changes[0]["kind"].as_str()),
        (Some("delete"), Some("conversation"))
    );
    assert!(changes[0]["payload"]["deletedAt"].is_i64());
    let late = api
        .push(&[message(MessageId::new(), conv, now - 60, b"late")])
        .await;
    assert_eq!(late["results"][0]["status"], "superseded");
    let snap = api.get("/v1/sync/snapshot").await;
    assert_eq!(
        snap.body["changes"].as_array().map(Vec::len),
        Some(0),
        "{}",
        snap.body
    );
}

async fn horizon_purge_answers_410_and_snapshot_recovers(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let live: Vec<ConversationId> = (0..5).map(|_| ConversationId::new()).collect();
    let doomed = ConversationId::new();
    let mut batch: Vec<_> = live
        .iter()
        .map(|c| conversation(*c, now, b"live"))
        .collect();
    batch.push(conversation(doomed, now, b"doomed"));
    api.push(&batch).await;
    let (_, old_cursor) = api.pull_all(None).await;
    api.push(&[delete_conversation(doomed, now + 1)]).await;

    srv.clock.advance(Duration::from_secs(31 * 86_400));
    let report = srv.server.run_maintenance().await.expect("maintenance");
    assert_eq!(report.tombstones, 1);
    // A month later the old session has expired too.
    assert_eq!(
        api.pull(Some(&old_cursor), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let api = srv.sign_in("alice").await;

    let stale = api.pull(Some(&old_cursor), None).await;
    assert_eq!(
        (stale.status, code(&stale.body)),
        (StatusCode::GONE, "resync_required")
    );
    assert_eq!(api.pull(None, None).await.status, StatusCode::GONE);

    let mut after: Option<String> = None;
    let mut records = Vec::new();
    let mut resume = None;
    loop {
        let path = match &after {
            Some(k) => format!("/v1/sync/snapshot?limit=2&after={k}"),
            None => "/v1/sync/snapshot?limit=2".to_owned(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if after.is_none() {
            resume = page.body["cursor"].as_str().map(str::to_owned);
        } else {
            assert!(page.body.get("cursor").is_none());
        }
        records.extend(
            page.body["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .cloned(),
        );
        if !page.body["hasMore"].as_bool().expect("hasMore") {
            assert!(page.body.get("nextKey").is_none());
            break;
        }
        after = page.body["nextKey"].as_str().map(str::to_owned);
    }
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| body_of(r) == b"live"));
    let resume = resume.expect("first snapshot page carries a cursor");
    let r = api.pull(Some(&resume), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A write after the snapshot arrives through the resumed pull.
    api.push(&[conversation(ConversationId::new(), srv.now_ms(), b"after")])
        .await;
    let (fresh, _) = api.pull_all(Some(&resume)).await;
    assert_eq!(fresh.len(), 1);
}

async fn oversized_body_gets_413(backend: Backend) {
    let Some(srv) = TestServer::start_with(backend, |c| c.max_body_bytes = 64 * 1024).await else {
        return;
    };
    let api = srv.user("alice").await;
    let big = conversation(ConversationId::new(), srv.now_ms(), &vec![0u8; 100 * 1024]);
    let r = api.post("/v1/sync/push", &json!({"changes": [big]})).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{}",
        r.body
    );
    let small = conversation(ConversationId::new(), srv.now_ms(), b"fits");
    assert_eq!(
        api.post("/v1/sync/push", &json!({"changes": [small]}))
            .await
            .status,
        StatusCode::OK
    );
}

async fn more_than_1000_changes_get_413(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let changes: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let r = api
        .post("/v1/sync/push", &json!({ "changes": changes }))
        .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large")
    );
}

async fn malformed_requests_get_json_4xx_never_500(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = api
            .http
            .post(format!("{}/v1/sync/push", srv.base))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        api.send(req)
    };
    let r = raw("{\"changes\": [", Some("application/json")).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let r = raw("{\"changes\": 5}", Some("application/json")).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let r = raw("{\"changes\": []}", None).await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    for (path, expected) in [
        ("/v1/sync/pull?after=garbage", "invalid_cursor"),
        ("/v1/sync/pull?after=v1.-3", "invalid_cursor"),
        ("/v1/sync/pull?limit=0", "invalid_limit"),
        ("/v1/sync/pull?limit=1001", "invalid_limit"),
        ("/v1/sync/pull?limit=many", "invalid_query"),
        ("/v1/sync/snapshot?after=v1.note.x", "invalid_cursor"),
    ] {
        let r = api.get(path).await;
        assert_eq!(
            (r.status, code(&r.body)),
            (StatusCode::BAD_REQUEST, expected),
            "{path}"
        );
    }
    let r = api.get("/v1/no/such/route").await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let r = api.get("/v1/sync/push").await;
    assert_eq!(
        (r.status, code(&r.body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let anon = srv.anonymous();
    for path in ["/v1/sync/pull", "/v1/keys", "/v1/sync/snapshot"] {
        let r = anon.get(path).await;
        assert_eq!(
            (r.status, code(&r.body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{path}"
        );
    }
    let mut forged = srv.anonymous();
    forged.token = Some("A".repeat(43));
    assert_eq!(
        forged.get("/v1/keys").await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = anon
        .post("/v1/auth/login", &json!({"username": "alice"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

async fn a_malformed_change_is_rejected_alone(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    let good = conversation(conv, now, b"ok");
    let mut orphan = serde_json::to_value(message(MessageId::new(), conv, now, b"m")).unwrap();
    orphan.as_object_mut().unwrap().remove("conversationId");
    let orphan_op = orphan["opId"].clone();
    let skewed = message(
        MessageId::new(),
        conv,
        now + MAX_CLOCK_DRIFT_MS + 60_000,
        b"future",
    );
    let also_good = message(MessageId::new(), conv, now, b"fine");
    let body = json!({"changes": [
        good, {"not": "a change"}, orphan, "just a string", skewed, {"opId": "x", "kind": "message"}, also_good,
    ]});
    let r = api.post("/v1/sync/push", &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let results = r.body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "rejected", "rejected", "rejected", "rejected", "rejected", "applied"]
    );
    let reasons: Vec<&str> = results
        .iter()
        .map(|x| x["reason"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        reasons,
        [
            "-",
            "invalid_change",
            "invalid_change",
            "invalid_change",
            "clock_skew",
            "invalid_change",
            "-"
        ]
    );
    assert_eq!(results[2]["opId"], orphan_op, "a readable op id is echoed");
    assert!(results[1].get("opId").is_none());
    assert!(results[2]["message"]
        .as_str()
        .unwrap()
        .contains("conversation"));
    assert_eq!(
        (results[0]["seq"].as_u64(), results[6]["seq"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(api.pull_all(None).await.0.len(), 2);
}

async fn users_cannot_see_or_overwrite_each_others_records(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let alice = srv.user("alice").await;
    let bob = srv.user("bob").await;
    let now = srv.now_ms();
    let conv = ConversationId::new();
    alice
        .push(&[conversation(conv, now - 10, b"alice only")])
        .await;

    let (bob_sees, _) = bob.pull_all(None).await;
    assert!(bob_sees.is_empty());
    assert_eq!(
        bob.get("/v1/sync/snapshot").await.body["changes"],
        json!([])
    );

    // Bob pushes Alice's entity id with a newer version, then deletes it:
    // both only ever touch Bob's own record.
    let r = bob.push(&[conversation(conv, now, b"bob's own")]).await;
    assert_eq!(
        (
            r["results"][0]["status"].as_str(),
            r["results"][0]["seq"].as_u64()
        ),
        (Some("applied"), Some(1))
    );
    bob.push(&[delete_conversation(conv, now + 1)]).await;
    let (alice_sees, _) = alice.pull_all(None).await;
    assert_eq!(alice_sees.len(), 1);
    assert_eq!(body_of(&alice_sees[0]), b"alice only");
    let (bob_sees, _) = bob.pull_all(None).await;
    assert_eq!(
        (bob_sees.len(), bob_sees[0]["op"].as_str()),
        (1, Some("delete"))
    );
    assert_eq!(
        bob.get("/v1/keys").await.body["keyEnvelope"],
        json!({"v": 1, "wrapped": "opaque"})
    );
}

async fn failed_logins_back_off_with_429_then_recover(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.anonymous();
    let key = auth_key_for("alice");
    api.register("alice", &key).await;
    for attempt in 1..=5 {
        let (status, _, _) = api.login("alice", &[attempt; 32], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Locked for 1 s: even the right key is refused meanwhile.
    let (status, headers, body) = api.login("alice", &key, None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    assert_eq!(
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Unknown usernames back off the same way (no enumeration by throttle).
    for _ in 0..5 {
        api.login("ghost", &key, None).await;
    }
    assert_eq!(
        api.login("ghost", &key, None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    srv.clock.advance(Duration::from_secs(1));
    let (status, _, _) = api.login("alice", &[9; 32], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "lock over, wrong key");
    let (status, headers, _) = api.login("alice", &key, None).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "6th failure doubled the lock"
    );
    assert_eq!(
        headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
        Some("2")
    );

    srv.clock.advance(Duration::from_secs(2));
    assert_eq!(api.login("alice", &key, None).await.0, StatusCode::OK);
    // Success reset the count: one failure is just a 401 again.
    assert_eq!(
        api.login("alice", &[1; 32], None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.login("alice", &key, None).await.0, StatusCode::OK);
}

async fn logout_revokes_the_session(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    assert_eq!(api.get("/v1/keys").await.status, StatusCode::OK);
    let r = api
        .request(reqwest::Method::POST, "/v1/auth/logout", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let cleared = set_cookie(&r.headers);
    assert!(
        cleared.starts_with("cv_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(api.get("/v1/keys").await.status, StatusCode::UNAUTHORIZED);
    let again = api
        .request(reqwest::Method::POST, "/v1/auth/logout", None)
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

async fn idle_sessions_expire(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    srv.clock.advance(Duration::from_secs(6 * 86_400));
    assert_eq!(
        api.get("/v1/keys").await.status,
        StatusCode::OK,
        "use extends the session"
    );
    srv.clock.advance(Duration::from_secs(6 * 86_400));
    assert_eq!(api.get("/v1/keys").await.status, StatusCode::OK);
    srv.clock.advance(Duration::from_secs(8 * 86_400));
    assert_eq!(api.get("/v1/keys").await.status, StatusCode::UNAUTHORIZED);
}

/// Found by schemathesis (`cargo xtask schemathesis`): a JSON body sent
/// without its content type is answered 415, which the document did not
/// list, so generated clients had no type for the answer.
async fn a_body_without_json_content_type_is_415_and_documented(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let doc = api.get("/v1/openapi.json").await.body;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if operation.get("requestBody").is_none() {
                continue;
            }
            assert!(
                operation["responses"]["415"].is_object(),
                "{method} {path} does not document 415"
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method");
            let reply = api
                .send(
                    api.http
                        .request(method.clone(), format!("{}{path}", srv.base))
                        .body("{}"),
                )
                .await;
            assert_eq!(
                (reply.status, reply.body["error"]["code"].as_str()),
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Some("unsupported_media_type")
                ),
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "prelogin, register, login, PUT keys, push");
}

backend_tests!(
    health_and_openapi_are_served,
    a_body_without_json_content_type_is_415_and_documented,
    login_sets_a_strict_http_only_secure_cookie,
    insecure_cookies_omit_only_the_secure_flag,
    browser_gets_cookie_only_and_native_gets_token_only,
    register_refuses_duplicates_and_bad_input,
    strict_server_refuses_weak_kdf_parameters,
    prelogin_answers_real_values_and_stable_fakes,
    the_storage_quota_refuses_growth_but_never_deletions,
    wrong_key_and_unknown_user_get_the_same_401,
    keys_round_trip_and_passphrase_change_revokes_other_sessions,
    push_then_pull_pages_with_cursors,
    replayed_push_gets_the_same_answer_and_changes_nothing,
    older_versions_are_superseded_newer_applied,
    tombstones_sync_and_cover_their_messages,
    horizon_purge_answers_410_and_snapshot_recovers,
    oversized_body_gets_413,
    more_than_1000_changes_get_413,
    malformed_requests_get_json_4xx_never_500,
    a_malformed_change_is_rejected_alone,
    users_cannot_see_or_overwrite_each_others_records,
    failed_logins_back_off_with_429_then_recover,
    logout_revokes_the_session,
    idle_sessions_expire,
);

/// The static web root: backend-independent, so SQLite only.
#[tokio::test]
async fn web_root_serves_files_with_index_fallback_but_api_404s_stay_json() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::write(root.path().join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(root.path().join("app.js"), "console.log(1)").unwrap();
    let dir = root.path().to_owned();
    let srv = TestServer::start_with(Backend::Sqlite, move |c| c.web_root = Some(dir))
        .await
        .expect("sqlite server");
    let http = crate::common::http_client();
    let text = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", srv.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        text("/").await,
        (StatusCode::OK, "<h1>demo</h1>".to_owned())
    );
    assert_eq!(
        text("/app.js").await,
        (StatusCode::OK, "console.log(1)".to_owned())
    );
    assert_eq!(
        text("/some/client/route").await,
        (StatusCode::OK, "<h1>demo</h1>".to_owned())
    );
    let (status, body) = text("/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"));
}
