//! Project automation: `cargo xtask <task>`.
//!
//! - `cargo xtask test` — the whole suite, exactly what CI runs: installs
//!   what is missing (wasm target, cargo-nextest), makes sure PostgreSQL is
//!   up, then runs `cargo fmt --check`, clippy with `-D warnings`, the
//!   wasm32 build of the pure crates, every test with cargo-nextest, and the
//!   doc tests. Installs are skipped when already present, so repeated runs
//!   are fast.
//! - `cargo xtask demo` — runs the sync server on embedded SQLite and
//!   prints the URL to open.
//!
//! Only this binary may use `anyhow` and print freely: it is a tool, not
//! a library.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "test" => test(),
        "demo" => demo(),
        "bench" => bench(),
        _ => {
            eprintln!("usage: cargo xtask <test|demo>");
            eprintln!("  test  install what is missing, then fmt, clippy, wasm build, all tests");
            eprintln!("  demo  run the sync server + web demo on embedded SQLite");
            eprintln!("  bench run the criterion benchmarks and print their ratios to baseline");
            std::process::exit(2);
        }
    }
}

/// Runs a command, failing with its description if it fails.
fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("    {what}: ok in {:.0?}", started.elapsed());
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Whether a command runs and succeeds (quietly).
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
        .unwrap_or(false);
    if !installed {
        run(
            "install the wasm32 target",
            Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
        )?;
    }
    Ok(())
}

fn ensure_nextest() -> Result<()> {
    if !succeeds(cargo().args(["nextest", "--version"])) {
        run(
            "install cargo-nextest",
            cargo().args(["install", "cargo-nextest", "--locked"]),
        )?;
    }
    Ok(())
}

/// The PostgreSQL the tests use: `CHATVAULT_TEST_POSTGRES_URL`'s server,
/// by default the machine's on 127.0.0.1:5432. Started if it is down and
/// this machine can start it; the tests fail (never skip) without it.
fn ensure_postgres() -> Result<()> {
    let addr: SocketAddr = "127.0.0.1:5432".parse()?;
    let up = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
    if std::env::var_os("CHATVAULT_TEST_POSTGRES_URL").is_some() || up() {
        return Ok(());
    }
    eprintln!("==> PostgreSQL is not answering on {addr}; trying to start it");
    if let Ok(versions) = std::fs::read_dir("/etc/postgresql") {
        for v in versions.flatten() {
            let version = v.file_name().to_string_lossy().into_owned();
            let _ = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &version, "main", "start"])
                .status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if up() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("PostgreSQL is not reachable on {addr}; start it or set CHATVAULT_TEST_POSTGRES_URL")
}

fn test() -> Result<()> {
    let started = Instant::now();
    ensure_wasm_target()?;
    ensure_nextest()?;
    ensure_postgres()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "wasm32 build of the pure crates",
        cargo().args([
            "build",
            "-p",
            "chatvault-core",
            "-p",
            "chatvault-crypto",
            "-p",
            "chatvault-store",
            "--target",
            "wasm32-unknown-unknown",
        ]),
    )?;
    run(
        "wasm32 build of the Vault facade (no SQLite)",
        cargo().args([
            "build",
            "-p",
            "chatvault",
            "--no-default-features",
            "--target",
            "wasm32-unknown-unknown",
        ]),
    )?;
    run(
        "tests (nextest)",
        cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]),
    )?;
    run(
        "doc tests",
        cargo().args(["test", "--doc", "--workspace", "--all-features"]),
    )?;
    eprintln!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Pairs of (group, measured, baseline) whose ratio the report prints.
const RATIOS: &[(&str, &str, &str)] = &[
    ("import_10k_1KiB", "vault_sqlite", "raw_rusqlite"),
    ("import_10k_1KiB", "raw_with_outbox", "raw_rusqlite"),
    ("import_10k_1KiB", "vault_sqlite", "raw_with_outbox"),
    ("single_durable_write_1KiB", "vault_sqlite", "raw_rusqlite"),
    (
        "single_durable_write_1KiB",
        "vault_sqlite_encrypted",
        "raw_rusqlite",
    ),
    ("write_1000_1KiB", "encrypted", "plaintext"),
    ("read_100_1KiB", "encrypted", "plaintext"),
    ("push_500_1KiB", "http", "raw_rusqlite"),
    ("pull_500_1KiB", "http", "raw_rusqlite"),
];

/// Runs the benchmarks, then prints each measurement next to its baseline
/// from the same run as a Markdown table (for BENCHMARKS.md).
fn bench() -> Result<()> {
    run(
        "criterion benchmarks: vault",
        cargo().args([
            "bench",
            "-p",
            "chatvault",
            "--features",
            "testing",
            "--bench",
            "write",
        ]),
    )?;
    run(
        "criterion benchmarks: sync server",
        cargo().args(["bench", "-p", "chatvault-server", "--bench", "sync"]),
    )?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("criterion");
    let mean = |group: &str, function: &str| -> Result<f64> {
        let path = root
            .join(group)
            .join(function)
            .join("new")
            .join("estimates.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no estimate at {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v["mean"]["point_estimate"]
            .as_f64()
            .context("estimate without a mean")
    };
    println!("| benchmark | measured | mean | baseline | mean | ratio |");
    println!("|---|---|---|---|---|---|");
    for (group, measured, baseline) in RATIOS {
        let (m, b) = (mean(group, measured)?, mean(group, baseline)?);
        println!(
            "| {group} | {measured} | {} | {baseline} | {} | {:.2}x |",
            human(m),
            human(b),
            m / b
        );
    }
    Ok(())
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// Runs the sync server on embedded SQLite (under `target/demo/`) with the
/// web demo at `/`; the server prints the URL to open.
fn demo() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask is not inside the workspace")?
        .to_path_buf();
    let data = root.join("target").join("demo");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let database = format!("sqlite://{}", data.join("chatvault-server.db").display());
    let web_root = root.join("web").join("demo");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--release".into(),
        "-p".into(),
        "chatvault-server".into(),
        "--".into(),
        "--database".into(),
        database,
        "--web-root".into(),
        web_root.display().to_string(),
        // Plain HTTP on localhost: a Secure cookie would never be sent back.
        "--insecure-cookies".into(),
    ];
    args.extend(std::env::args().skip(2));
    eprintln!("==> building and starting the sync server (first build takes a few minutes)");
    let status = cargo().args(&args).status()?;
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(())
}
