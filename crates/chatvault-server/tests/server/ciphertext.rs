//! What the server's database holds after a real session: every text and
//! blob column of every table is dumped and searched. The record body is
//! ciphertext of a marker only this test knows (a one-time pad the server
//! never sees): the ciphertext must be stored verbatim, and neither the
//! marker nor the auth key nor the session token may appear in any form.

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chatvault_core::{ConversationId, MessageId};

use crate::backend_tests;
use crate::common::{auth_key_for, body_of, conversation, message, Backend, TestServer};

/// Every text and blob value in the database, as bytes.
async fn dump(srv: &TestServer) -> Vec<Vec<u8>> {
    let db = srv.db.as_ref().expect("the test's own database");
    if let Some(path) = &db.sqlite_path {
        let conn = rusqlite::Connection::open(path).expect("open SQLite copy");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut values = Vec::new();
        for table in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..columns {
                    match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => values.push(t.to_vec()),
                        rusqlite::types::ValueRef::Blob(b) => values.push(b.to_vec()),
                        _ => {}
                    }
                }
            }
        }
        return values;
    }
    let url = &db.pg.as_ref().expect("a PostgreSQL database").url;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect for dump");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = 'public' \
             AND data_type IN ('text', 'bytea', 'character varying', 'json', 'jsonb')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        columns.len() > 10,
        "dumped too few columns: {}",
        columns.len()
    );
    let mut values = Vec::new();
    for column in columns {
        let (table, name, kind): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let sql = match kind.as_str() {
            "bytea" => format!("SELECT \"{name}\" FROM \"{table}\""),
            _ => format!("SELECT \"{name}\"::text FROM \"{table}\""),
        };
        for row in client.query(&sql, &[]).await.unwrap() {
            let value: Option<Vec<u8>> = if kind == "bytea" {
                row.get(0)
            } else {
                row.get::<_, Option<String>>(0).map(String::into_bytes)
            };
            values.extend(value);
        }
    }
    values
}

fn contains(haystack: &[Vec<u8>], needle: &[u8]) -> bool {
    haystack
        .iter()
        .any(|v| v.windows(needle.len()).any(|w| w == needle))
}

fn forms(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("raw", secret.to_vec()),
        ("base64", BASE64.encode(secret).into_bytes()),
        ("base64url", URL_SAFE_NO_PAD.encode(secret).into_bytes()),
        ("hex", hex.into_bytes()),
    ]
}

async fn database_holds_ciphertext_verbatim_and_no_secrets(backend: Backend) {
    let Some(srv) = TestServer::start(backend).await else {
        return;
    };
    let api = srv.user("alice").await;
    let token = api.token.clone().expect("token");

    let marker = b"PLAINTEXT-MARKER: the quarterly numbers are 42 and 17";
    let mut pad = vec![0u8; marker.len()];
    getrandom::getrandom(&mut pad).expect("OS randomness");
    let ciphertext: Vec<u8> = marker.iter().zip(&pad).map(|(m, k)| m ^ k).collect();

    let now = srv.now_ms();
    let conv = ConversationId::new();
    api.push(&[
        conversation(conv, now, &ciphertext),
        message(MessageId::new(), conv, now, &ciphertext),
    ])
    .await;
    let (pulled, _) = api.pull_all(None).await;
    assert!(
        pulled.iter().all(|c| body_of(c) == ciphertext),
        "bodies come back byte for byte"
    );

    let values = dump(&srv).await;
    assert!(
        contains(&values, &ciphertext),
        "the body is stored exactly as sent"
    );
    for (what, secret) in [
        ("plaintext marker", marker.to_vec()),
        ("auth key", auth_key_for("alice").to_vec()),
        ("session token", token.clone().into_bytes()),
    ] {
        for (form, bytes) in forms(&secret) {
            assert!(
                !contains(&values, &bytes),
                "{what} found in the database ({form})"
            );
        }
    }
}

backend_tests!(database_holds_ciphertext_verbatim_and_no_secrets);
