//! Server configuration as a library value: what the binary builds from its
//! command line, what the `chatvault` CLI or a test builds in code.
//!
//! This module owns the defaults and the database URL syntax; it must never
//! read the environment or the command line itself (that is `main.rs`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{SessionPolicy, ThrottlePolicy};
use crate::clock::{ServerClock, SystemServerClock};
use crate::kdf_pool::KdfPoolConfig;
use crate::limits::RateLimits;
use crate::listen::Timeouts;
use crate::types::Invalid;

/// Where the server keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file (`sqlite://PATH`): one server process.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://...`): any number of
    /// server processes may share it.
    Postgres(String),
}

impl FromStr for DatabaseUrl {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(Invalid(
                    "sqlite:// needs a file path, e.g. sqlite://./chatvault-server.db".into(),
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(s.to_owned()));
        }
        Err(Invalid(
            "database must be sqlite://PATH or postgres://USER@HOST/DB".into(),
        ))
    }
}

impl fmt::Display for DatabaseUrl {
    /// Printable form with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Query parameters of a PostgreSQL URL that carry a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// Every credential in a PostgreSQL URL replaced by `***`: the userinfo
/// password (`postgres://user:secret@host/db`) and `?password=` /
/// `?sslpassword=` parameters.
fn redact_password(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Everything the server needs to run. Build with [`Config::new`] and
/// adjust the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where data lives.
    pub database: DatabaseUrl,
    /// Omit the cookie's `Secure` flag (plain-HTTP localhost only).
    pub insecure_cookies: bool,
    /// Largest request body accepted (default 4 MiB).
    pub max_body_bytes: usize,
    /// Tombstones older than this many days are purged (default 30); a
    /// client whose cursor predates a purge must resync from a snapshot.
    pub tombstone_horizon_days: u32,
    /// Serve this directory at `/` (with `index.html` as the fallback).
    pub web_root: Option<PathBuf>,
    /// Accept client KDF parameters below the OWASP minimum. **Tests only.**
    pub allow_weak_kdf: bool,
    /// How often a WebSocket is pinged; one left unanswered for a whole
    /// interval drops the socket (default 30 s).
    pub ws_ping_interval: Duration,
    /// Pokes queued per socket before a client counts as too slow and is
    /// disconnected (default 16).
    pub ws_queue: usize,
    /// How often expired tombstones, sessions and throttle entries are
    /// purged (default 1 hour; also once at startup).
    pub maintenance_interval: Duration,
    /// Session lifetimes.
    pub sessions: SessionPolicy,
    /// Failed-login backoff, per (username, source address) for logins and
    /// per account for passphrase changes.
    pub throttle: ThrottlePolicy,
    /// The origin browsers load this server's web app from (e.g.
    /// `https://chat.example.com`), checked against `Origin` on
    /// cookie-authenticated changes and WebSockets. Default: the request's
    /// `Host` with `https` (`http` with `insecure_cookies`).
    pub public_origin: Option<String>,
    /// Other origins whose pages may use this server with the session
    /// cookie: a web app served elsewhere than the API (add each with
    /// [`Config::allow_origin`]). They get CORS with credentials — for
    /// exactly these origins, never `*` — and pass the `Origin` checks of
    /// cookie-authenticated changes and WebSockets. Empty by default: no
    /// CORS at all.
    pub allowed_origins: Vec<String>,
    /// Rate limits on prelogin, register and login.
    pub rate_limits: RateLimits,
    /// Charge requests to the last `X-Forwarded-For` address instead of
    /// the TCP peer. Only behind a reverse proxy that sets it (otherwise
    /// clients choose their own address).
    pub trust_proxy: bool,
    /// Header-read (and keep-alive idle) and body timeouts.
    pub timeouts: Timeouts,
    /// The password-hashing pool: workers, queue bound and Argon2 cost.
    pub kdf: KdfPoolConfig,
    /// Record bytes one account may store (default 1 GiB; `None`:
    /// unlimited). A push that would pass it has its new or growing records
    /// refused (`quota_exceeded`) while deletions still apply.
    pub account_quota_bytes: Option<u64>,
    /// The time source.
    pub clock: Arc<dyn ServerClock>,
}

impl Config {
    /// Default request body limit: 4 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
    /// Default tombstone horizon: 30 days.
    pub const DEFAULT_TOMBSTONE_HORIZON_DAYS: u32 = 30;
    /// Default per-account storage quota: 1 GiB of record bodies.
    pub const DEFAULT_ACCOUNT_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;

    /// Defaults for everything but the database.
    pub fn new(database: DatabaseUrl) -> Self {
        Config {
            database,
            insecure_cookies: false,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            tombstone_horizon_days: Self::DEFAULT_TOMBSTONE_HORIZON_DAYS,
            web_root: None,
            allow_weak_kdf: false,
            ws_ping_interval: Duration::from_secs(30),
            ws_queue: 16,
            maintenance_interval: Duration::from_secs(3600),
            sessions: SessionPolicy::default(),
            throttle: ThrottlePolicy::default(),
            public_origin: None,
            allowed_origins: Vec::new(),
            rate_limits: RateLimits::default(),
            trust_proxy: false,
            timeouts: Timeouts::default(),
            kdf: KdfPoolConfig::default(),
            account_quota_bytes: Some(Self::DEFAULT_ACCOUNT_QUOTA_BYTES),
            clock: Arc::new(SystemServerClock),
        }
    }

    /// Lets pages of `origin` (`scheme://host[:port]`, e.g.
    /// `https://app.example.com`) use this server with the session cookie
    /// (see [`Config::allowed_origins`]). Refuses `*`, paths, queries and
    /// anything that is not an http(s) origin.
    pub fn allow_origin(&mut self, origin: &str) -> Result<(), Invalid> {
        let origin = parse_origin(origin)?;
        if !self.allowed_origins.contains(&origin) {
            self.allowed_origins.push(origin);
        }
        Ok(())
    }

    /// The tombstone horizon as a duration.
    pub fn tombstone_horizon(&self) -> Duration {
        Duration::from_secs(u64::from(self.tombstone_horizon_days) * 86_400)
    }
}

/// An origin as browsers send it in `Origin`: lowercase
/// `scheme://host[:port]`, no trailing slash.
fn parse_origin(text: &str) -> Result<String, Invalid> {
    let invalid = |why: &str| Invalid(format!("allowed origin {text:?}: {why}"));
    let origin = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://host[:port], e.g. https://app.example.com"))?;
    if scheme != "http" && scheme != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@', '*', ' ', ','])
        || rest.starts_with(':')
    {
        return Err(invalid(
            "expected an exact origin: scheme://host[:port], no path, no wildcard",
        ));
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_are_exact_origins() {
        let mut c = Config::new(DatabaseUrl::Sqlite("x.db".into()));
        c.allow_origin("HTTP://127.0.0.1:9000/").unwrap();
        c.allow_origin("https://app.example.com").unwrap();
        c.allow_origin("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            c.allowed_origins,
            ["http://127.0.0.1:9000", "https://app.example.com"]
        );
        for bad in [
            "*",
            "null",
            "https://*.example.com",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://user@app.example.com",
            "https://",
            "https://a.example, https://b.example",
        ] {
            assert!(c.allow_origin(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn database_urls_parse_and_redact() {
        assert_eq!(
            "sqlite://./x.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("./x.db"))
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("/tmp/x.db"))
        );
        let pg: DatabaseUrl = "postgres://u:hunter2@h:5432/db".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://u:***@h:5432/db");
        let pg: DatabaseUrl = "postgres://u@h/db?sslmode=require&password=hunter2&PASSWORD=x"
            .parse()
            .unwrap();
        assert_eq!(
            pg.to_string(),
            "postgres://u@h/db?sslmode=require&password=***&PASSWORD=***"
        );
        let pg: DatabaseUrl = "postgres://u:p@ss@h/db".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://u:***@h/db");
        assert!(!format!("{pg:?}").contains("ss@"));
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
        assert!("sqlite://".parse::<DatabaseUrl>().is_err());
    }
}
