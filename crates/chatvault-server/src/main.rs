//! `chatvault-server`: the sync server binary. Parses flags (with
//! `CHATVAULT_*` environment fallbacks), sets up logging to stderr, binds,
//! prints exactly one line to stdout once ready —
//! `chatvault server listening on http://ADDR` — and serves until Ctrl-C or
//! SIGTERM.
//!
//! Everything else is the library's job; this file must never print
//! anything else to stdout (scripts and tests read that line).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chatvault_server::{shutdown_signal, Config, DatabaseUrl, RateLimit, Server};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// chatvault sync server: end-to-end-encrypted sync for chat apps.
#[derive(Debug, Parser)]
#[command(name = "chatvault-server", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CHATVAULT_LISTEN", default_value = "127.0.0.1:8787")]
    listen: String,
    /// sqlite://PATH (one process) or postgres://USER@HOST/DB (several).
    #[arg(
        long,
        env = "CHATVAULT_DATABASE",
        default_value = "sqlite://./chatvault-server.db"
    )]
    database: DatabaseUrl,
    /// Omit the session cookie's Secure flag (plain-HTTP localhost only).
    #[arg(long)]
    insecure_cookies: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Purge tombstones older than this many days (clients behind it resync).
    #[arg(long, default_value_t = Config::DEFAULT_TOMBSTONE_HORIZON_DAYS)]
    tombstone_horizon_days: u32,
    /// Serve this directory at / (index.html for unknown paths).
    #[arg(long)]
    web_root: Option<PathBuf>,
    /// Threads hashing auth keys (each holds one Argon2 buffer, 19 MiB at
    /// the default cost). Default: the number of cores.
    #[arg(long, env = "CHATVAULT_KDF_WORKERS")]
    kdf_workers: Option<usize>,
    /// Logins/registrations that may wait for a hashing thread; beyond it
    /// they get 503 + Retry-After. Default: 32 per worker.
    #[arg(long, env = "CHATVAULT_KDF_QUEUE")]
    kdf_queue: Option<usize>,
    /// Charge requests to the last X-Forwarded-For address (only behind a
    /// reverse proxy that sets it; otherwise clients pick their address).
    #[arg(long, env = "CHATVAULT_TRUST_PROXY")]
    trust_proxy: bool,
    /// Origin of the web app (e.g. https://chat.example.com) that
    /// cookie-authenticated changes and WebSockets must come from. Default:
    /// the request's Host with https (http with --insecure-cookies).
    #[arg(long, env = "CHATVAULT_PUBLIC_ORIGIN")]
    public_origin: Option<String>,
    /// Another origin whose web app may use this server with the session
    /// cookie (CORS with credentials for exactly this origin, never `*`);
    /// repeat for several, e.g. --allowed-origin https://app.example.com.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// prelogin/register/login per source address: BURST/PER_MINUTE.
    #[arg(long, value_parser = parse_rate, default_value = "30/60")]
    rate_per_address: RateLimit,
    /// prelogin/register/login from all sources: BURST/PER_MINUTE.
    #[arg(long, value_parser = parse_rate, default_value = "600/3000")]
    rate_global: RateLimit,
    /// Login attempts per username from addresses that never signed in to
    /// it: BURST/PER_MINUTE.
    #[arg(long, value_parser = parse_rate, default_value = "10/6")]
    rate_per_username: RateLimit,
    /// Seconds a connection may take to send a complete request head, also
    /// between requests on a kept-alive connection.
    #[arg(long, default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Record bytes one account may store, e.g. 1GiB, 500MiB, or `none`.
    /// Over it, new records are refused (quota_exceeded); deletes still work.
    #[arg(long, env = "CHATVAULT_ACCOUNT_QUOTA", value_parser = parse_quota, default_value = "1GiB")]
    account_quota: Quota,
    /// Seconds a request body may take to arrive in full.
    #[arg(long, default_value_t = 60)]
    body_timeout_secs: u64,
    /// Argon2id memory of stored auth-key hashes, in KiB. Load tests only.
    #[arg(long, hide = true, default_value_t = 19_456)]
    auth_hash_m_kib: u32,
    /// Argon2id passes of stored auth-key hashes. Load tests only.
    #[arg(long, hide = true, default_value_t = 2)]
    auth_hash_t: u32,
    /// Accept client KDF parameters below the OWASP minimum. Tests only.
    #[arg(long, hide = true)]
    allow_weak_kdf: bool,
    /// WebSocket ping interval in milliseconds. Tests only.
    #[arg(long, hide = true, default_value_t = 30_000)]
    ws_ping_interval_ms: u64,
}

/// `BURST/PER_MINUTE`, e.g. `30/60`.
fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let (burst, per_minute) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected BURST/PER_MINUTE, e.g. 30/60"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|e| format!("{text:?}: {e}"))
    };
    let limit = RateLimit {
        burst: number(burst)?,
        per_minute: number(per_minute)?,
    };
    if limit.burst == 0 {
        return Err(format!("{text:?}: a burst of 0 refuses everything"));
    }
    Ok(limit)
}

/// `--account-quota`: bytes, or `None` for no limit. (A newtype: clap
/// reads a bare `Option` field as "the flag may be absent".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quota(Option<u64>);

/// A byte count with an optional binary unit (`1GiB`, `500MiB`, `64KiB`,
/// `1048576`), or `none` for no limit.
fn parse_quota(text: &str) -> Result<Quota, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(Quota(None));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB or none)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes, e.g. 1GiB, or none"))?;
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too large"))?;
    if bytes == 0 {
        return Err(format!(
            "{text:?}: a quota of 0 refuses every record; use none for no limit"
        ));
    }
    Ok(Quota(Some(bytes)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(root) = &args.web_root {
        if !root.is_dir() {
            bail!("--web-root {}: not a directory", root.display());
        }
        if !root.join("index.html").is_file() {
            tracing::warn!(root = %root.display(), "--web-root has no index.html yet; unknown paths will 404");
        }
    }
    if args.max_body_bytes < 1024 {
        bail!("--max-body-bytes must be at least 1024");
    }
    let mut config = Config::new(args.database);
    config.insecure_cookies = args.insecure_cookies;
    config.max_body_bytes = args.max_body_bytes;
    config.tombstone_horizon_days = args.tombstone_horizon_days;
    config.account_quota_bytes = args.account_quota.0;
    config.web_root = args.web_root;
    config.allow_weak_kdf = args.allow_weak_kdf;
    config.ws_ping_interval = Duration::from_millis(args.ws_ping_interval_ms.max(10));
    if let Some(workers) = args.kdf_workers {
        if workers == 0 {
            bail!("--kdf-workers must be at least 1");
        }
        config.kdf.workers = workers;
        config.kdf.queue = 32 * workers;
    }
    if let Some(queue) = args.kdf_queue {
        config.kdf.queue = queue;
    }
    if args.header_read_timeout_secs == 0 || args.body_timeout_secs == 0 {
        bail!("timeouts must be at least 1 second");
    }
    config.timeouts.header_read = Duration::from_secs(args.header_read_timeout_secs);
    config.timeouts.body = Duration::from_secs(args.body_timeout_secs);
    config.trust_proxy = args.trust_proxy;
    config.public_origin = args.public_origin;
    for origin in &args.allowed_origins {
        config.allow_origin(origin)?;
    }
    config.rate_limits.per_address = args.rate_per_address;
    config.rate_limits.global = args.rate_global;
    config.rate_limits.per_username = args.rate_per_username;
    config.kdf.cost.m_kib = args.auth_hash_m_kib;
    config.kdf.cost.t = args.auth_hash_t;
    if config.allow_weak_kdf {
        tracing::warn!("--allow-weak-kdf: accepting insecure KDF parameters (tests only)");
    }

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let database = config.database.to_string();
    let server = Server::open(config)
        .await
        .with_context(|| format!("cannot open {database}"))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "chatvault server listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    server.run(listener, shutdown_signal()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(chatvault_server::log_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        ))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_quota, Args, Quota};
    use clap::{CommandFactory as _, Parser as _};

    #[test]
    fn quotas_parse_with_binary_units_or_none() {
        assert_eq!(parse_quota("1GiB"), Ok(Quota(Some(1 << 30))));
        assert_eq!(parse_quota("500 MiB"), Ok(Quota(Some(500 << 20))));
        assert_eq!(parse_quota("4096"), Ok(Quota(Some(4096))));
        assert_eq!(parse_quota("none"), Ok(Quota(None)));
        for bad in ["0", "0GiB", "1GB", "-1", "lots", "99999999999TiB"] {
            assert!(parse_quota(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_flag_reads_back_with_its_declared_type() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["chatvault-server"]).unwrap();
        assert_eq!(args.account_quota, Quota(Some(1 << 30)));
        let args = Args::try_parse_from(["chatvault-server", "--account-quota", "none"]).unwrap();
        assert_eq!(args.account_quota, Quota(None));
    }
}
