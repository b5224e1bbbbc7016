//! Integration tests for chatvault-server, one binary (one link) for all:
//!
//! - `store_suite` — the `ServerStore` contract, run against SQLite and
//!   PostgreSQL.
//! - `http_api` — the HTTP API end to end on a real listener, per backend.
//! - `websocket` — pokes, pings and socket auth, per backend.
//! - `ciphertext` — what the database holds after a push: ciphertext
//!   verbatim, no secrets.
//! - `hardening` — bounded work per unauthenticated request: the KDF
//!   pool's memory, rate limits, timeouts, database file checks.
//! - `pg_tls` — PostgreSQL connections under each `sslmode`.
//! - `binary` — the compiled `chatvault-server`: ready line, SIGTERM, and
//!   two processes fanning pokes out through one PostgreSQL database.
//!
//! PostgreSQL: `CHATVAULT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); tests fail if it is
//! unreachable unless `CHATVAULT_SKIP_POSTGRES=1`.

mod common;

mod binary;
mod ciphertext;
mod hardening;
mod hostile;
mod http_api;
mod pg_tls;
mod store_suite;
mod websocket;
