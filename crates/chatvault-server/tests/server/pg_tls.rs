//! PostgreSQL over TLS: the server's `sslmode` values against the running
//! PostgreSQL (Debian's ships TLS on, with a self-signed `localhost`
//! certificate). A server without TLS still runs the refusals.

use chatvault_server::store::{PostgresServerStore, ServerStore as _, ServerStoreError};

use crate::common::{admin_client, PgDatabase};

/// `url` with its host replaced by `host` and `params` appended.
fn variant(url: &str, host: &str, params: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, path) = rest.split_once('/').expect("path");
    let (user, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
    let port = host_port.rsplit_once(':').map(|(_, p)| p).unwrap_or("5432");
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{scheme}://{user}{host}:{port}/{path}{sep}{params}")
}

/// Whether the store's pooled connections to `database` are encrypted.
async fn encrypted_connections(admin: &tokio_postgres::Client, database: &str) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn sslmodes_encrypt_and_verify_as_libpq_does() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let admin = admin_client(&db.url).await;
    let ssl_on: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let host = db.url.split("://").nth(1).unwrap();
    let ip = host
        .split('@')
        .next_back()
        .unwrap()
        .split([':', '/'])
        .next()
        .unwrap()
        .to_owned();

    if ssl_on != "on" {
        // Without TLS on the server, every mode that needs it must refuse.
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = variant(&db.url, &ip, &format!("sslmode={mode}&sslrootcert=system"));
            assert!(
                PostgresServerStore::connect(&url).await.is_err(),
                "{mode} connected without TLS"
            );
        }
        eprintln!("PostgreSQL has ssl=off: only the refusals were tested");
        return;
    }
    let cert: String = admin
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    // require: encrypted, certificate not checked (the self-signed one passes).
    let store = PostgresServerStore::connect(&variant(&db.url, &ip, "sslmode=require"))
        .await
        .expect("sslmode=require connects");
    store.server_secret().await.expect("query over TLS");
    let (encrypted, all) = encrypted_connections(&admin, &name).await;
    assert!(
        all > 0 && encrypted == all,
        "{encrypted} of {all} encrypted"
    );
    drop(store);

    // verify-full with the server's certificate as the root, by its name.
    let root = format!("sslrootcert={cert}");
    let full = variant(&db.url, "localhost", &format!("sslmode=verify-full&{root}"));
    let store = PostgresServerStore::connect(&full)
        .await
        .expect("verify-full with the right root and name connects");
    store.server_secret().await.expect("query over TLS");
    drop(store);

    // verify-full by IP address: the certificate names localhost only.
    let wrong_name = variant(&db.url, &ip, &format!("sslmode=verify-full&{root}"));
    let refused = PostgresServerStore::connect(&wrong_name).await;
    assert!(
        matches!(&refused, Err(ServerStoreError::Postgres(e)) if format!("{e:?}").contains("NotValidForName")),
        "verify-full must refuse a certificate for another name: {:?}",
        refused.map(|_| ())
    );
    // verify-ca checks the chain only: the same address is fine.
    let ca = variant(&db.url, &ip, &format!("sslmode=verify-ca&{root}"));
    PostgresServerStore::connect(&ca)
        .await
        .expect("verify-ca ignores the name");

    // verify-full against a root that signed nothing of the server's: refused.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, OTHER_CA).unwrap();
    let stranger = variant(
        &db.url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    );
    let refused = PostgresServerStore::connect(&stranger).await;
    assert!(
        matches!(&refused, Err(ServerStoreError::Postgres(e)) if format!("{e:?}").contains("UnknownIssuer")),
        "a certificate its roots did not sign must be refused: {:?}",
        refused.map(|_| ())
    );
}

/// A self-signed CA that signed nothing (P-256, valid until 2126).
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUdcG7jRfqHfJVkC0/T40it6LEKkkwCgYIKoZIzj0EAwIw
LDEqMCgGA1UEAwwhY2hhdHZhdWx0IHRlc3QgQ0EgKHNpZ25zIG5vdGhpbmcpMCAX
DTI2MTIwMjAxMTIwOVoYDzIxMjYxMTA4MDExMjA5WjAsMSowKAYDVQQDDCFjaGF0
dmF1bHQgdGVzdCBDQSAoc2lnbnMgbm90aGluZykwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAS7suXGrEVoXYm37y81yG2wnBdcQs+66OgX0svD8PZ0P3ietsFr+fgU
uSrlt30g4JX0abLbYqD49UDQpCVFtZX1o1MwUTAdBgNVHQ4EFgQUV+hU82uyse/L
4H3e1AzIdUkyqCowHwYDVR0jBBgwFoAUV+hU82uyse/L4H3e1AzIdUkyqCowDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBnyPgegjLesmy/2ECYW2KQ
SjNKq0hLBbd4p8NHRfsdtQIhAMyLHMnjdbO4UVphponjuX7r9gBAoX6KSLPYpMSC
qveM
-----END CERTIFICATE-----
";
