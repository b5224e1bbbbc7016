//! Project automation: `cargo xtask <task>` (`cargo xtask --help` lists
//! the tasks).
//!
//! - `test` — the whole suite, exactly what CI runs: installs what is
//!   missing (wasm target, cargo-nextest, wasm-bindgen-cli at the version
//!   the workspace pins, Chromium and chromedriver and clang from Debian), makes sure
//!   PostgreSQL is up, then runs `cargo fmt --check`, clippy with
//!   `-D warnings` (natively, and for wasm32 on the browser crates), the
//!   browser tests in headless Chromium (IndexedDB, SQLite on OPFS, the
//!   sync client's against a real
//!   chatvault-server it starts on a free port and stops after), every
//!   native test with
//!   cargo-nextest, and the doc tests. Installs are skipped when already
//!   present, so repeated runs are fast.
//! - `package` — builds the TypeScript package `web/packages/chatvault`
//!   (the `chatvault-wasm` binding through the pinned wasm-bindgen-cli).
//! - `demo` — the main job: builds the wasm package and the demo chat app
//!   (`web/demo`, incrementally), runs the sync server on embedded SQLite
//!   with the app at `/` and prints the URL to open.
//! - `bench` — runs every benchmark (criterion means, and the harnesses
//!   measuring at scale: reads on 1M-message vaults, export/import rate and
//!   peak memory, retention, sync throughput, 200 devices, logins,
//!   realtime) and prints each figure next to its baseline and ratio;
//!   `--quick` runs them all at tiny sizes in the dev profile (part of
//!   `test`) and only proves they build and run.
//! - `load` — the load test with exact accounting at full size (200
//!   devices for 60 s by default, SQLite and PostgreSQL servers).
//! - `soak` — runs the sync simulation (SQLite and PostgreSQL server
//!   stores) over more seeds than CI does (`--seeds N`, from `--start S`).
//!
//! Only this binary may use `anyhow` and print freely: it is a tool, not
//! a library. It never decides whether a benchmark is fast enough: numbers
//! are reported, never gated on.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// chatvault's project automation.
#[derive(Parser)]
#[command(bin_name = "cargo xtask", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing, then fmt, clippy, browser tests, all tests and doc tests (what CI runs).
    Test,
    /// Build the demo chat app and run it: the sync server on embedded SQLite with the app at `/`.
    Demo(DemoArgs),
    /// Build the TypeScript package (web/packages/chatvault): the wasm binding and its JS glue.
    Package {
        /// Optimized (for benchmarks and serving); the test suite builds the dev profile.
        #[arg(long)]
        release: bool,
    },
    /// Run the criterion benchmarks and print each measurement's ratio to its baseline.
    Bench(BenchArgs),
    /// Run the sync simulation over many seeds (CI runs 200 on each server store).
    Soak(SoakArgs),
    /// Load with exact accounting: many devices sync at once through a server
    /// restart (SQLite and PostgreSQL); CI runs a short version.
    Load(LoadArgs),
    /// Fuzz the parsers of hostile input (chatvault-fuzz) for a time budget.
    Fuzz(FuzzArgs),
    /// Run schemathesis against the OpenAPI document of a test server: no
    /// 5xx, every answer as documented.
    Schemathesis(SchemathesisArgs),
}

#[derive(Args)]
struct FuzzArgs {
    /// CI's budget: about a minute for all targets together.
    #[arg(long, conflicts_with = "seconds")]
    quick: bool,
    /// Wall time for all targets together, shared equally.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Only this target (see `cargo run -p chatvault-fuzz -- --help`).
    #[arg(long)]
    target: Option<String>,
    /// The mutator's seed (default: from the clock; the run prints it).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct SchemathesisArgs {
    /// Time budget of the run (schemathesis' `--max-time`).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// schemathesis' seed, to replay a run.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct DemoArgs {
    /// Where the server listens.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: String,
    /// The server's data folder (its SQLite database); default `target/demo`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Extra arguments passed on to chatvault-server after `--`, e.g. `-- --account-quota 1GiB`.
    #[arg(last = true, value_name = "SERVER_ARGS")]
    server_args: Vec<String>,
}

#[derive(Args)]
struct LoadArgs {
    /// Simulated devices (four per account).
    #[arg(long, default_value_t = 200)]
    devices: u32,
    /// How long they write and sync.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
}

#[derive(Args)]
struct SoakArgs {
    /// How many seeds to run.
    #[arg(long)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
}

#[derive(Args)]
struct BenchArgs {
    /// The browser figures only: the wasm vault against plain-JS IndexedDB
    /// in headless Chromium, SQLite on OPFS against IndexedDB (each in a
    /// worker), and unlock in the browser against native. Builds the
    /// release package with SQLite (chatvault-wasm's `opfs` feature).
    #[arg(long, conflicts_with = "quick")]
    browser: bool,
    /// Smoke run for CI: every benchmark, dev profile, tiny sizes, brief measurements.
    ///
    /// Proves each benchmark (crypto too) still compiles and runs, in a
    /// fraction of a full run; its numbers are not for BENCHMARKS.md.
    #[arg(long)]
    quick: bool,
    /// Only these benchmarks (their `--bench` names, comma-separated:
    /// write, sync, crypto, scale, throughput, devices, logins, realtime).
    #[arg(long, value_delimiter = ',', conflicts_with = "browser")]
    only: Vec<String>,
}

fn main() -> Result<()> {
    // Unknown tasks and bad options exit 2 with the usage (clap's rule).
    match Cli::parse().task {
        Task::Test => test(),
        Task::Demo(args) => demo(&args),
        Task::Package { release } => {
            ensure_wasm_target()?;
            ensure_wasm_bindgen_cli()?;
            ensure_clang()?;
            package(release)
        }
        Task::Bench(args) => bench(&args),
        Task::Soak(args) => soak(&args),
        Task::Load(args) => load(&args),
        Task::Fuzz(args) => fuzz(&args),
        Task::Schemathesis(args) => schemathesis(&args),
    }
}

/// Seconds `cargo xtask fuzz --quick` (and so CI) gives all targets.
const QUICK_FUZZ_SECONDS: u64 = 42;

/// Builds and runs chatvault-fuzz; a failing input lands in
/// `crates/chatvault-fuzz/regressions/` and fails the task.
fn fuzz(args: &FuzzArgs) -> Result<()> {
    let seconds = if args.quick {
        QUICK_FUZZ_SECONDS
    } else {
        args.seconds
    };
    let mut cmd = cargo();
    cmd.args(["run", "-p", "chatvault-fuzz", "--", "--seconds"])
        .arg(seconds.to_string());
    if let Some(target) = &args.target {
        cmd.args(["--target", target]);
    }
    if let Some(seed) = args.seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    run(
        &format!("fuzz the parsers of hostile input ({seconds} s)"),
        &mut cmd,
    )
}

/// The schemathesis release the task installs (PyPI).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// schemathesis' `st` in a venv under the target directory, installed
/// from PyPI at the pinned version unless already there.
fn ensure_schemathesis() -> Result<PathBuf> {
    let venv = target_dir()?.join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let st = venv.join("bin").join("st");
    if st.exists() {
        return Ok(st);
    }
    run(
        "create a Python venv for schemathesis",
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    )?;
    run(
        &format!("install schemathesis {SCHEMATHESIS_VERSION} (PyPI)"),
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
    )?;
    Ok(st)
}

/// Starts a test server, signs an account in (so the sync and key
/// endpoints are reached past authentication), and runs schemathesis on
/// `/v1/openapi.json` for `args.seconds`: a 5xx, an undocumented status,
/// content type or body fails the task.
fn schemathesis(args: &SchemathesisArgs) -> Result<()> {
    let st = ensure_schemathesis()?;
    let port = free_port()?;
    let _server = start_test_server(port, &["--insecure-cookies".into()])?;
    let base = format!("http://127.0.0.1:{port}");
    // The venv's Python signs in (xtask has no HTTP client); the auth key
    // is fixed, the KDF parameters are the server's minimum.
    let sign_in = r#"
import base64, json, sys, urllib.request
base = sys.argv[1]
key = base64.b64encode(bytes([7] * 32)).decode()
def post(path, body):
    request = urllib.request.Request(base + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))
post("/v1/auth/register", {"username": "schemathesis",
     "kdf": {"mCostKib": 19456, "tCost": 2, "pCost": 1},
     "salt": base64.b64encode(bytes([7] * 16)).decode(),
     "authKey": key, "keyEnvelope": {"v": 1}})
print(post("/v1/auth/login", {"username": "schemathesis", "authKey": key})["token"])
"#;
    let python = st.with_file_name("python");
    let output = Command::new(&python)
        .args(["-c", sign_in, &base])
        .output()
        .with_context(|| format!("cannot start {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "signing in to the test server failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    let report = target_dir()?.join("schemathesis");
    std::fs::create_dir_all(&report)
        .with_context(|| format!("cannot create {}", report.display()))?;
    let mut cmd = Command::new(&st);
    // Its working directory too: schemathesis keeps a `.schemathesis`
    // cache there, which does not belong in the source tree.
    cmd.current_dir(&report)
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--checks")
        .arg("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance")
        .arg("--max-time")
        .arg(args.seconds.to_string())
        .args(["--warnings", "off", "--report", "junit", "--report-dir"])
        .arg(&report);
    if let Some(seed) = args.seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    run(
        &format!("schemathesis against /v1/openapi.json ({} s)", args.seconds),
        &mut cmd,
    )
}

/// The cargo-deny release the task installs.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Installs cargo-deny at the pinned version unless that version is there.
fn ensure_cargo_deny() -> Result<()> {
    let installed = cargo()
        .args(["deny", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY_VERSION))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    // `--debug`: an unoptimized build takes about 80 s on 2 cores against
    // about 7 minutes optimized, and the check it runs takes 5 s instead
    // of 2 — the difference a clean CI run can afford.
    let locked = run(
        &format!("install cargo-deny {CARGO_DENY_VERSION} (--locked, unoptimized)"),
        cargo().args([
            "install",
            "--debug",
            "--locked",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
        ]),
    );
    if locked.is_ok() {
        return Ok(());
    }
    // As with wasm-bindgen-cli (shared/TOOLCHAIN.md): a locked dependency
    // may be missing from the registry index.
    run(
        &format!("install cargo-deny {CARGO_DENY_VERSION} (unoptimized)"),
        cargo().args([
            "install",
            "--debug",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
        ]),
    )
}

/// Runs the simulation tests (chatvault-sync's `simulation` on SQLite and
/// `simulation_postgres`) over `args.seeds` seeds from `args.start` each;
/// a failing seed prints the command that replays it.
/// The load test (chatvault-sync `tests/sync/load.rs`) at full size, on
/// both server stores; its figures are printed.
fn load(args: &LoadArgs) -> Result<()> {
    ensure_postgres()?;
    run(
        &format!(
            "load: {} devices for {} s on SQLite and PostgreSQL servers, restarted halfway",
            args.devices, args.seconds
        ),
        cargo()
            .args([
                "test",
                "-p",
                "chatvault-sync",
                "--test",
                "sync",
                "load::",
                "--",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CHATVAULT_LOAD_DEVICES", args.devices.to_string())
            .env("CHATVAULT_LOAD_SECONDS", args.seconds.to_string()),
    )
}

fn soak(args: &SoakArgs) -> Result<()> {
    ensure_nextest()?;
    run(
        &format!(
            "simulation, seeds {}..{}",
            args.start,
            args.start + args.seeds
        ),
        cargo()
            .args([
                "nextest",
                "run",
                "-p",
                "chatvault-sync",
                "--all-features",
                "--no-capture",
                "-E",
                "test(/^sim::simulation/)",
            ])
            .env("SIM_SEEDS", args.seeds.to_string())
            .env("SIM_SEED_START", args.start.to_string()),
    )
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

/// The `wasm-bindgen` version the workspace pins (`wasm-bindgen = "=x.y.z"`
/// in `[workspace.dependencies]`): the test runner must be this very
/// version.
fn pinned_wasm_bindgen() -> Result<String> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("wasm-bindgen = \"="))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{} pins no wasm-bindgen version (expected `wasm-bindgen = \"=x.y.z\"`)",
                manifest.display()
            )
        })
}

/// wasm-bindgen-cli (its `wasm-bindgen-test-runner` runs the browser
/// tests) at exactly the pinned crate version; installed only when
/// `wasm-bindgen --version` says otherwise. Without `--locked`: the CLI's
/// lock file can name versions the registry index no longer serves.
fn ensure_wasm_bindgen_cli() -> Result<()> {
    let version = pinned_wasm_bindgen()?;
    let installed = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if installed != format!("wasm-bindgen {version}") {
        run(
            &format!("install wasm-bindgen-cli {version}"),
            cargo().args(["install", "wasm-bindgen-cli", "--version", &version]),
        )?;
    }
    Ok(())
}

/// Where Debian's chromium-driver puts chromedriver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and chromedriver from Debian (nothing can download its own
/// browser build here), installed only when chromedriver is missing.
fn ensure_chromium() -> Result<()> {
    if std::path::Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    run(
        "install chromium and chromium-driver (apt)",
        Command::new("sh")
            .args([
                "-c",
                "apt-get update && apt-get install -y chromium chromium-driver",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// clang from Debian: the C compiler of SQLite's wasm32 build
/// (`sqlite-wasm-rs`, behind chatvault-sqlite's `opfs` feature); installed
/// only when missing.
fn ensure_clang() -> Result<()> {
    if succeeds(Command::new("clang").arg("--version")) {
        return Ok(());
    }
    run(
        "install clang (apt)",
        Command::new("sh")
            .args(["-c", "apt-get update && apt-get install -y clang"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
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
    ensure_wasm_bindgen_cli()?;
    ensure_chromium()?;
    ensure_clang()?;
    ensure_nextest()?;
    ensure_postgres()?;
    ensure_cargo_deny()?;
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
    // The browser crates on wasm32: these two steps also build (and so
    // prove) the pure crates and the Vault facade without SQLite for wasm32.
    run(
        "cargo clippy -D warnings (wasm32: pure crates, Vault facade, IndexedDB store, JS binding)",
        cargo().args([
            "clippy",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "chatvault-core",
            "-p",
            "chatvault-crypto",
            "-p",
            "chatvault-store",
            "-p",
            "chatvault",
            "-p",
            "chatvault-indexeddb",
            "-p",
            "chatvault-sync",
            "-p",
            "chatvault-wasm",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "cargo clippy -D warnings (wasm32: the IndexedDB store's and the sync client's tests, SQLite on OPFS with its tests, the JS binding with SQLite)",
        cargo().args([
            "clippy",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "chatvault-indexeddb",
            "-p",
            "chatvault-sync",
            "-p",
            "chatvault-sqlite",
            "-p",
            "chatvault-wasm",
            "--features",
            "chatvault-sqlite/opfs,chatvault-wasm/opfs",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "browser tests (wasm-bindgen-test, headless Chromium): IndexedDB store, Store and Vault conformance, key-value state on localStorage, sessionStorage and IndexedDB",
        cargo()
            .args([
                "test",
                "-p",
                "chatvault-indexeddb",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .env("CHROMEDRIVER", CHROMEDRIVER)
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            ),
    )?;
    // The same SQLite store on OPFS: its browser test binaries only (the
    // conformance suites and the rules in a dedicated worker, the
    // main-thread refusal on the page, the refusal while another worker
    // owns the databases), not its native unit tests.
    run(
        "browser tests (wasm-bindgen-test, headless Chromium): SQLite on OPFS, Store and Vault conformance, one store per database, the main-thread and second-owner refusals, a vault moved between IndexedDB and OPFS",
        cargo()
            .args([
                "test",
                "-p",
                "chatvault-sqlite",
                "--features",
                "opfs",
                "--target",
                "wasm32-unknown-unknown",
                "--test",
                "opfs",
                "--test",
                "opfs_main_thread",
                "--test",
                "opfs_owner",
                "--test",
                "opfs_migrate",
            ])
            .env("CHROMEDRIVER", CHROMEDRIVER)
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            ),
    )?;
    run(
        "cargo deny: licences, banned and duplicate crates, sources (deny.toml; advisories need GitHub)",
        cargo().args(["deny", "check", "licenses", "bans", "sources"]),
    )?;
    browser_sync_tests()?;
    package(false)?;
    package_tests()?;
    demo_e2e()?;
    npm_audit(&package_dir()?)?;
    npm_audit(&demo_dir()?)?;
    fuzz(&FuzzArgs {
        quick: true,
        seconds: QUICK_FUZZ_SECONDS,
        target: None,
        seed: None,
    })?;
    schemathesis(&SchemathesisArgs {
        seconds: 40,
        seed: None,
    })?;
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
    // Every benchmark at tiny sizes in the dev profile (on what the tests
    // just built): keeps them compiling and running; no figure is checked.
    bench(&BenchArgs {
        browser: false,
        quick: true,
        only: Vec::new(),
    })?;
    run(
        "doc tests",
        cargo().args(["test", "--doc", "--workspace", "--all-features"]),
    )?;
    eprintln!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

/// A free loopback port (the OS picks one; it is released at once, so a
/// race with another process is possible but harmless: the start fails).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A chatvault-server child process with its temporary data directory,
/// killed and removed when dropped (also when a test step fails).
struct TestServer {
    child: std::process::Child,
    data: PathBuf,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Starts the debug chatvault-server on embedded SQLite in a temporary
/// directory, listening on `port`, with `args` added; waits until it
/// accepts connections.
fn start_test_server(port: u16, args: &[String]) -> Result<TestServer> {
    let binary = build_server()?;
    let data = std::env::temp_dir().join(format!(
        "chatvault-browser-test-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let child = Command::new(&binary)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!("sqlite://{}", data.join("server.db").display()))
        .args(args)
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = TestServer { child, data };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        if let Some(status) = server.child.try_wait()? {
            bail!("chatvault-server exited before listening ({status})");
        }
        if Instant::now() > deadline {
            bail!("chatvault-server did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// The sync client's browser test (chatvault-sync `tests/browser.rs`):
/// starts a real server on a free port, serves the test page on another
/// fixed for this run (the server allows exactly that origin), passes the
/// server's URL to the test at compile time, and stops the server after.
fn browser_sync_tests() -> Result<()> {
    let (server_port, page_port) = (free_port()?, free_port()?);
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let _server = start_test_server(
        server_port,
        &[
            // Plain HTTP on loopback: a Secure cookie would never be sent.
            "--insecure-cookies".into(),
            // The test vaults derive with fast, test-only parameters.
            "--allow-weak-kdf".into(),
            "--allowed-origin".into(),
            page_origin,
        ],
    )?;
    run(
        "browser tests (wasm-bindgen-test, headless Chromium): sync between two IndexedDB vaults through a real server",
        cargo()
            .args([
                "test",
                "-p",
                "chatvault-sync",
                "--target",
                "wasm32-unknown-unknown",
                "--test",
                "browser",
            ])
            .env("CHROMEDRIVER", CHROMEDRIVER)
            .env(
                "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                "wasm-bindgen-test-runner",
            )
            .env("WASM_BINDGEN_TEST_ADDRESS", format!("127.0.0.1:{page_port}"))
            .env(
                "CHATVAULT_BROWSER_TEST_SERVER",
                format!("http://127.0.0.1:{server_port}"),
            ),
    )
}

/// (benchmark, group, measured, baseline): the criterion means whose ratio
/// the report prints.
const RATIOS: &[(&str, &str, &str, &str)] = &[
    ("write", "import_10k_1KiB", "vault_sqlite", "raw_rusqlite"),
    (
        "write",
        "import_10k_1KiB",
        "vault_sqlite_encrypted",
        "raw_rusqlite",
    ),
    (
        "write",
        "import_10k_1KiB",
        "raw_with_outbox",
        "raw_rusqlite",
    ),
    (
        "write",
        "import_10k_1KiB",
        "vault_sqlite",
        "raw_with_outbox",
    ),
    (
        "write",
        "import_10k_1KiB",
        "store_sqlite",
        "raw_with_outbox",
    ),
    ("write", "import_10k_1KiB", "vault_sqlite", "store_sqlite"),
    (
        "write",
        "single_durable_write_1KiB",
        "vault_sqlite",
        "raw_rusqlite",
    ),
    (
        "write",
        "single_durable_write_1KiB",
        "vault_sqlite_encrypted",
        "raw_rusqlite",
    ),
    ("write", "write_1000_1KiB", "encrypted", "plaintext"),
    ("write", "read_100_1KiB", "encrypted", "plaintext"),
    ("sync", "push_500_1KiB", "http", "raw_rusqlite"),
    ("sync", "pull_500_1KiB", "http", "raw_rusqlite"),
    ("crypto", "record_1KiB", "seal", "seal_primitive"),
    ("crypto", "record_1KiB", "open", "open_primitive"),
];

/// One criterion benchmark target: a description and the `cargo bench`
/// arguments selecting it.
struct BenchTarget {
    what: &'static str,
    args: &'static [&'static str],
}

impl BenchTarget {
    /// Its `--bench` name.
    fn name(&self) -> &'static str {
        let at = self.args.iter().position(|a| *a == "--bench");
        at.and_then(|i| self.args.get(i + 1)).copied().unwrap_or("")
    }
}

const BENCH_TARGETS: &[BenchTarget] = &[
    BenchTarget {
        what: "vault",
        args: &[
            "-p",
            "chatvault",
            "--features",
            "testing",
            "--bench",
            "write",
        ],
    },
    BenchTarget {
        what: "sync server",
        args: &["-p", "chatvault-server", "--bench", "sync"],
    },
    BenchTarget {
        what: "crypto: record seal/open against the AEAD primitive, key derivation",
        args: &["-p", "chatvault-crypto", "--bench", "crypto"],
    },
];

/// Benchmarks with their own harness (sizes, peak memory, percentiles,
/// rates): each prints its figures with their baselines and ratios, and
/// takes `--quick` for tiny sizes.
const HARNESS_TARGETS: &[BenchTarget] = &[
    BenchTarget {
        what:
            "scale: reads on 10k/100k/1M-message vaults, export, import (rate, peak RSS), retention",
        args: &[
            "-p",
            "chatvault",
            "--features",
            "testing",
            "--bench",
            "scale",
        ],
    },
    BenchTarget {
        what: "sync throughput: push and new-device pull of 100k messages (SQLite, PostgreSQL)",
        args: &["-p", "chatvault-sync", "--bench", "throughput"],
    },
    BenchTarget {
        what: "200 devices: push and pull requests per second (SQLite, PostgreSQL)",
        args: &["-p", "chatvault-sync", "--bench", "devices"],
    },
    BenchTarget {
        what: "logins per second at the default cost",
        args: &["-p", "chatvault-server", "--bench", "logins"],
    },
    BenchTarget {
        what: "realtime: push to poke with many WebSocket clients, against a bare broadcast",
        args: &["-p", "chatvault-server", "--bench", "realtime"],
    },
];

/// Runs `cmd`, passing its standard output through as it comes and
/// returning its lines (a harness's figures, for the summary at the end).
fn run_collecting(what: &str, cmd: &mut Command) -> Result<Vec<String>> {
    use std::io::BufRead as _;
    let started = Instant::now();
    eprintln!("==> {what}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start: {what}"))?;
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            lines.push(line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("    {what}: ok in {:.0?}", started.elapsed());
    Ok(lines)
}

/// Runs the benchmarks, then prints each measurement next to its baseline
/// from the same run as a Markdown table (for BENCHMARKS.md).
/// Browser figures (see web/packages/chatvault/bench/browser.mjs), each
/// printed with its same-run baseline and ratio.
fn bench_browser() -> Result<()> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen_cli()?;
    ensure_chromium()?;
    ensure_clang()?;
    package(true)?;
    let dir = package_dir()?;
    ensure_npm_packages(&dir)?;
    let json_of = |what: &str, cmd: &mut Command| -> Result<serde_json::Value> {
        eprintln!("==> {what}");
        let output = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start: {what}"))?;
        if !output.status.success() {
            bail!("{what} failed ({})", output.status);
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().last().context("no output")?;
        serde_json::from_str(line).with_context(|| format!("{what}: not JSON: {line}"))
    };
    let native = json_of(
        "native unlock (release)",
        cargo().args([
            "run",
            "--release",
            "-q",
            "-p",
            "chatvault",
            "--example",
            "unlock_time",
        ]),
    )?;
    let web = json_of(
        "browser figures (headless Chromium)",
        Command::new("node")
            .arg("bench/browser.mjs")
            .env("CHROMIUM", "/usr/bin/chromium")
            .current_dir(&dir),
    )?;
    let ms = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let rows = [
        (
            "write 10,000 × 1 KiB, one call/transaction",
            "wasm vault, encrypted",
            ms(&web, "sealedWriteMs"),
            "plain-JS IndexedDB put loop",
            ms(&web, "rawWriteMs"),
        ),
        (
            "write 10,000 × 1 KiB, one call/transaction",
            "wasm vault, plaintext",
            ms(&web, "plainWriteMs"),
            "plain-JS IndexedDB put loop",
            ms(&web, "rawWriteMs"),
        ),
        (
            "write 10,000 × 1 KiB, one call/transaction",
            "wasm vault, encrypted",
            ms(&web, "sealedWriteMs"),
            "Dexie bulkPut (strict durability)",
            ms(&web, "dexieWriteMs"),
        ),
        (
            "write 10,000 × 1 KiB, one transaction",
            "Dexie bulkPut (strict durability)",
            ms(&web, "dexieWriteMs"),
            "plain-JS IndexedDB put loop",
            ms(&web, "rawWriteMs"),
        ),
        (
            "read latest 50 of 10,000",
            "wasm vault, encrypted",
            ms(&web, "sealedLatest50Ms"),
            "raw index getAll(range, 50)",
            ms(&web, "rawLatest50Ms"),
        ),
        (
            "write 10,000 × 1 KiB, encrypted, one call, in a worker",
            "wasm vault on SQLite/OPFS",
            ms(&web, "workerOpfsWriteMs"),
            "wasm vault on IndexedDB",
            ms(&web, "workerIdbWriteMs"),
        ),
        (
            "read latest 50 of 10,000, encrypted, in a worker",
            "wasm vault on SQLite/OPFS",
            ms(&web, "workerOpfsLatest50Ms"),
            "wasm vault on IndexedDB",
            ms(&web, "workerIdbLatest50Ms"),
        ),
        (
            "unlock (Argon2id, default parameters)",
            "wasm, in the page",
            ms(&web, "unlockMs"),
            "native, release",
            ms(&native, "unlockMs"),
        ),
    ];
    println!("| benchmark | measured | ms | baseline | ms | ratio |");
    println!("|---|---|---|---|---|---|");
    for (what, measured, m, baseline, b) in rows {
        println!(
            "| {what} | {measured} | {m:.1} | {baseline} | {b:.1} | **{:.2}×** |",
            m / b
        );
    }
    println!(
        "\n{}",
        web["userAgent"].as_str().unwrap_or("unknown browser")
    );
    Ok(())
}

fn bench(options: &BenchArgs) -> Result<()> {
    if options.browser {
        return bench_browser();
    }
    let started = Instant::now();
    // `--quick`: the dev profile reuses what the test build compiled (its
    // dependencies are optimized anyway, see the workspace manifest)
    // instead of a release build of the whole graph.
    let bench_cmd = |target: &BenchTarget| {
        let mut cmd = cargo();
        cmd.arg("bench");
        if options.quick {
            // Tells the criterion benchmarks to use small inputs (their
            // command line is criterion's). Built as the test run builds
            // (the whole workspace, every feature, dev profile), so the
            // dependencies compiled for the tests serve the benchmarks:
            // per package, each `cargo bench -p` resolved other features
            // and compiled the shared crates again (≈ 3 of CI's minutes).
            cmd.args(["--profile", "dev", "--workspace", "--all-features"])
                .args(["--bench", target.name()])
                .env("CHATVAULT_BENCH_QUICK", "1");
        } else {
            cmd.args(target.args);
        }
        cmd
    };
    let ran = |bench: &str| options.only.is_empty() || options.only.iter().any(|o| o == bench);
    let chosen = |t: &&BenchTarget| ran(t.name());
    for target in BENCH_TARGETS.iter().filter(chosen) {
        let mut cmd = bench_cmd(target);
        if options.quick {
            // Criterion's test mode: each benchmark runs once, without
            // analysis (so no means: the table below is for full runs).
            cmd.args(["--", "--test"]);
        }
        run(&format!("criterion benchmarks: {}", target.what), &mut cmd)?;
    }
    let mut figures = Vec::new();
    for target in HARNESS_TARGETS.iter().filter(chosen) {
        let mut cmd = bench_cmd(target);
        if options.quick {
            cmd.args(["--", "--quick"]);
        }
        figures.push(format!("\n{}:", target.what));
        figures.extend(run_collecting(target.what, &mut cmd)?);
    }
    // Unlock goes with the crypto figures (its baseline is their KDF mean).
    let unlock = if ran("crypto") {
        unlock_ms(options.quick)?
    } else {
        f64::NAN
    };
    if options.quick {
        println!("\nquick run (dev profile, tiny sizes): not for BENCHMARKS.md; native unlock {unlock:.1} ms");
        for line in figures {
            println!("{line}");
        }
        eprintln!("benchmarks ran in {:.0?}", started.elapsed());
        return Ok(());
    }

    let root = criterion_dir()?;
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
    println!();
    println!("| benchmark | measured | mean | baseline | mean | ratio |");
    println!("|---|---|---|---|---|---|");
    for (_, group, measured, baseline) in RATIOS.iter().filter(|r| ran(r.0)) {
        let (m, b) = (mean(group, measured)?, mean(group, baseline)?);
        println!(
            "| {group} | {measured} | {} | {baseline} | {} | {:.2}x |",
            human(m),
            human(b),
            m / b
        );
    }
    if ran("crypto") {
        let kdf = mean("kdf", "argon2id_default_params")?;
        println!(
            "| unlock (Argon2id, default parameters) | vault unlock, native | {unlock:.1} ms | one Argon2id derivation | {} | {:.2}x |",
            human(kdf),
            unlock * 1e6 / kdf
        );
    }
    for line in figures {
        println!("{line}");
    }
    eprintln!("benchmarks ran in {:.0?}", started.elapsed());
    Ok(())
}

/// The native unlock time (`examples/unlock_time.rs`), in milliseconds.
fn unlock_ms(quick: bool) -> Result<f64> {
    eprintln!("==> native unlock time");
    let mut cmd = if quick {
        // On what the test run built (see `bench`): `cargo run` cannot
        // take the workspace's features, so build, then run the binary.
        run(
            "build the unlock example (dev profile, as the tests built)",
            cargo().args([
                "build",
                "-q",
                "--workspace",
                "--all-features",
                "--example",
                "unlock_time",
            ]),
        )?;
        Command::new(
            target_dir()?
                .join("debug")
                .join("examples")
                .join("unlock_time"),
        )
    } else {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "-q",
            "--release",
            "-p",
            "chatvault",
            "--example",
            "unlock_time",
        ]);
        cmd
    };
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start the unlock example")?;
    if !output.status.success() {
        bail!("the unlock example failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().context("no output from unlock_time")?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("unlock_time: not JSON: {line}"))?;
    v["unlockMs"].as_f64().context("unlock_time: no unlockMs")
}

/// Where criterion writes its estimates, found the way criterion finds it:
/// `CRITERION_HOME`, else `criterion/` in cargo's target directory.
fn criterion_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Ok(PathBuf::from(home));
    }
    Ok(target_dir()?.join("criterion"))
}

/// Cargo's target directory (which `CARGO_TARGET_DIR` or a cargo config may
/// move out of the workspace).
fn target_dir() -> Result<PathBuf> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot start cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata without a target_directory")?;
    Ok(PathBuf::from(target))
}

/// The workspace root.
fn root() -> Result<PathBuf> {
    Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask is not inside the workspace")?
        .to_path_buf())
}

/// The TypeScript package's directory.
fn package_dir() -> Result<PathBuf> {
    Ok(root()?.join("web").join("packages").join("chatvault"))
}

/// Builds the TypeScript package: the `chatvault-wasm` binding for wasm32
/// (the dev profile the browser tests already built its dependencies in:
/// one profile, one build), then its JS glue with the pinned
/// wasm-bindgen-cli: the IndexedDB-only binding into `pkg/` (what pages
/// load) and the one with SQLite on OPFS into `pkg-opfs/` (fetched only by
/// the worker of an "opfs-sqlite" vault).
fn package(release: bool) -> Result<()> {
    package_with(release, false)?;
    package_with(release, true)
}

/// One binding of [`package`]: with `opfs`, chatvault-wasm's `opfs`
/// feature, into `pkg-opfs/`; otherwise the default build, into `pkg/`.
fn package_with(release: bool, opfs: bool) -> Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "chatvault-wasm",
    ]);
    if release {
        build.arg("--release");
    }
    if opfs {
        build.args(["--features", "opfs"]);
    }
    run(
        "build the wasm binding (chatvault-wasm, wasm32)",
        &mut build,
    )?;
    let wasm = target_dir()?
        .join("wasm32-unknown-unknown")
        .join(if release { "release" } else { "debug" })
        .join("chatvault_wasm.wasm");
    let out = package_dir()?.join(if opfs { "pkg-opfs" } else { "pkg" });
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let glued = modified(out.join("chatvault_wasm_bg.wasm"));
    // Which build the glue was made from: a newer glue of another build
    // (release, or with SQLite) must not stand in for this one.
    let stamp = out.join(".built-from");
    let source = format!("{} opfs={opfs}", wasm.display());
    let same_build = std::fs::read_to_string(&stamp).is_ok_and(|s| s == source);
    if same_build && matches!((glued, modified(wasm.clone())), (Some(g), Some(w)) if g >= w) {
        // Unchanged binding: keep the glue (and its times, so the demo
        // app's bundle stays up to date).
        return Ok(());
    }
    run(
        &format!(
            "wasm-bindgen: the package's JS glue (web/packages/chatvault/{})",
            if opfs { "pkg-opfs" } else { "pkg" }
        ),
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--out-dir"])
            .arg(&out)
            .arg(&wasm),
    )?;
    std::fs::write(&stamp, source).with_context(|| format!("writing {}", stamp.display()))
}

/// Installs the npm packages of `dir` (`npm ci`: exactly the lock file)
/// when its `node_modules` is missing or older than the lock file (a pull
/// that added a dependency).
fn ensure_npm_packages(dir: &std::path::Path) -> Result<()> {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules").join(".package-lock.json"));
    let locked = modified(dir.join("package-lock.json"));
    if matches!((installed, locked), (Some(i), Some(l)) if i >= l) {
        return Ok(());
    }
    let what = dir.strip_prefix(root()?).unwrap_or(dir).display();
    run(
        &format!("npm ci ({what}: exactly its package-lock.json)"),
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir),
    )
}

/// Runs the package's own checks: installs its npm dev dependencies when
/// missing (`npm ci`: exactly the lock file), type-checks the `.d.ts`
/// against a typed use of the API, and runs the tests in headless
/// Chromium (playwright-core drives Debian's Chromium).
fn package_tests() -> Result<()> {
    let dir = package_dir()?;
    ensure_npm_packages(&dir)?;
    // The sync tests' server also serves the package (--web-root), so the
    // test page and the API share an origin, as in a deployed app.
    let port = free_port()?;
    let _server = start_test_server(
        port,
        &[
            "--insecure-cookies".into(),
            "--allow-weak-kdf".into(),
            "--web-root".into(),
            dir.display().to_string(),
        ],
    )?;
    run(
        "type-check the package's .d.ts (tsc)",
        Command::new("npm")
            .args(["run", "--silent", "typecheck"])
            .current_dir(&dir),
    )?;
    run(
        "package tests (playwright-core, headless Chromium): reload, wrong passphrase, a tab closed mid-write, no plaintext in IndexedDB or localStorage, tabs hearing each other, the vault in a Web Worker, tabs sharing one SQLite/OPFS vault and its leader tab closing mid-write, a vault moved between IndexedDB and OPFS (migrateVault), export and import, sync between browsers and its leader tab, the React hooks, the example page",
        Command::new("npm")
            .args(["test", "--silent"])
            .env("CHROMIUM", "/usr/bin/chromium")
            .env("CHATVAULT_TEST_SERVER", format!("http://127.0.0.1:{port}"))
            .current_dir(&dir),
    )
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The demo app's directory (`web/demo`, React + zustand + Vite).
fn demo_dir() -> Result<PathBuf> {
    Ok(root()?.join("web").join("demo"))
}

/// The newest modification time of the files under `path` (`node_modules`
/// and build output skipped), or `None` when there are none.
fn newest(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|entry| !matches!(entry.file_name().to_str(), Some("node_modules" | "dist")))
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

/// Builds the wasm package and the demo app (`web/demo/dist`): type-checks
/// and bundles it with Vite, skipped when the bundle is newer than every
/// source of the app and the package (a second run starts in seconds).
fn build_demo() -> Result<PathBuf> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen_cli()?;
    // The demo keeps its chats in IndexedDB: the default binding only.
    package_with(false, false)?;
    let dir = demo_dir()?;
    ensure_npm_packages(&dir)?;
    let dist = dir.join("dist");
    let built = std::fs::metadata(dist.join("index.html"))
        .and_then(|m| m.modified())
        .ok();
    let sources = [newest(&dir), newest(&package_dir()?)]
        .into_iter()
        .flatten()
        .max();
    if matches!((built, sources), (Some(b), Some(s)) if b >= s) {
        eprintln!("==> the demo app is up to date (web/demo/dist)");
    } else {
        run(
            "build the demo app (tsc, vite: web/demo/dist)",
            Command::new("npm")
                .args(["run", "--silent", "build"])
                .current_dir(&dir),
        )?;
    }
    Ok(dist)
}

/// The main job: builds what is missing (wasm package, demo app, server in
/// the dev profile the tests share) and runs the sync server on embedded
/// SQLite with the demo app at `/`, printing the URL to open.
fn demo(options: &DemoArgs) -> Result<()> {
    let root = root()?;
    let dist = build_demo()?;
    let data = options
        .data
        .clone()
        .unwrap_or_else(|| root.join("target").join("demo"));
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let data = data.canonicalize()?;
    let binary = build_server()?;
    let mut child = Command::new(&binary)
        .arg("--listen")
        .arg(&options.listen)
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            data.join("chatvault-server.db").display()
        ))
        .arg("--web-root")
        .arg(&dist)
        // Plain HTTP on localhost: a Secure cookie would never be sent back.
        .arg("--insecure-cookies")
        .args(&options.server_args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    // The server prints its address once listening (the port may have been 0).
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(url) = line.split("listening on ").nth(1) {
                println!(
                    "\n  chatvault demo: open {url}/ in a browser (data in {}; Ctrl-C stops it)\n",
                    data.display()
                );
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("chatvault-server exited with {status}");
    }
    Ok(())
}

/// Builds `chatvault-server` in the dev profile (the one the tests share)
/// and returns its binary's path.
fn build_server() -> Result<PathBuf> {
    run(
        "build chatvault-server",
        cargo().args([
            "build",
            "-p",
            "chatvault-server",
            "--bin",
            "chatvault-server",
        ]),
    )?;
    Ok(target_dir()?.join("debug").join("chatvault-server"))
}

/// `npm audit` of `dir`'s locked dependencies: fails on a known high or
/// critical vulnerability. Where the registry refuses audits (this
/// workplace's npm mirror answers 405) it says so loudly and goes on: the
/// advisories are then unchecked, as cargo-deny's are without GitHub.
fn npm_audit(dir: &std::path::Path) -> Result<()> {
    let what = dir
        .strip_prefix(root()?)
        .unwrap_or(dir)
        .display()
        .to_string();
    eprintln!("==> npm audit ({what})");
    let output = Command::new("npm")
        .args(["audit", "--audit-level=high"])
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run npm audit in {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        eprintln!("    npm audit ({what}): ok");
        return Ok(());
    }
    if text.contains("audit endpoint returned an error") {
        eprintln!(
            "    npm audit ({what}): SKIPPED — the registry refuses audit requests here; \
             advisories of the npm dependencies are unchecked on this machine"
        );
        return Ok(());
    }
    eprintln!("{text}");
    bail!("npm audit ({what}) found high or critical vulnerabilities")
}

/// The demo's end-to-end tests (playwright-core, Debian's Chromium) against
/// a freshly started server serving the freshly built app.
fn demo_e2e() -> Result<()> {
    let dist = build_demo()?;
    let port = free_port()?;
    let _server = start_test_server(
        port,
        &[
            "--insecure-cookies".into(),
            "--web-root".into(),
            dist.display().to_string(),
        ],
    )?;
    let shots = target_dir()?.join("e2e-screenshots");
    run(
        "demo end-to-end tests (playwright-core, headless Chromium): register, reload and unlock, a second device, realtime, offline and back, retention, export and import (a tampered file refused), two tabs, keyboard only, sessions revoked, passphrase and key changes, log out and in, axe-core, screenshots",
        Command::new("npm")
            .args(["run", "--silent", "e2e"])
            .env("CHROMIUM", "/usr/bin/chromium")
            .env("CHATVAULT_DEMO_URL", format!("http://127.0.0.1:{port}"))
            .env("CHATVAULT_SCREENSHOTS", &shots)
            .current_dir(demo_dir()?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    #[test]
    fn demo_passes_server_flags_through() {
        let cli = Cli::try_parse_from([
            "xtask",
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--",
            "--account-quota",
            "1GiB",
        ]);
        match cli.map(|c| c.task) {
            Ok(Task::Demo(args)) => {
                assert_eq!(args.listen, "127.0.0.1:0");
                assert_eq!(args.data, None);
                assert_eq!(args.server_args, ["--account-quota", "1GiB"]);
            }
            _ => panic!("demo with server flags did not parse"),
        }
    }

    #[test]
    fn the_workspace_pins_one_exact_wasm_bindgen_version() {
        let version = pinned_wasm_bindgen().expect("a pinned version");
        let parts: Vec<&str> = version.split('.').collect();
        assert_eq!(parts.len(), 3, "{version}");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{version}");
    }

    #[test]
    fn unknown_task_is_a_usage_error() {
        let err = Cli::try_parse_from(["xtask", "frob"]).err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidSubcommand));
    }

    #[test]
    fn soak_parses_seeds_and_start() {
        match Cli::try_parse_from(["xtask", "soak", "--seeds", "500", "--start", "200"])
            .map(|c| c.task)
        {
            Ok(Task::Soak(args)) => assert_eq!((args.seeds, args.start), (500, 200)),
            _ => panic!("soak --seeds --start did not parse"),
        }
        match Cli::try_parse_from(["xtask", "soak", "--seeds", "3"]).map(|c| c.task) {
            Ok(Task::Soak(args)) => assert_eq!((args.seeds, args.start), (3, 0)),
            _ => panic!("soak --seeds did not parse"),
        }
        assert!(
            Cli::try_parse_from(["xtask", "soak"]).is_err(),
            "--seeds is required"
        );
    }

    #[test]
    fn fuzz_and_schemathesis_parse() {
        let cli = Cli::try_parse_from(["cargo xtask", "fuzz", "--quick"]).expect("parses");
        assert!(matches!(cli.task, Task::Fuzz(FuzzArgs { quick: true, .. })));
        let cli = Cli::try_parse_from(["cargo xtask", "fuzz", "--seconds", "30"]).expect("parses");
        assert!(matches!(cli.task, Task::Fuzz(FuzzArgs { seconds: 30, .. })));
        assert!(Cli::try_parse_from(["cargo xtask", "fuzz", "--quick", "--seconds", "5"]).is_err());
        let cli = Cli::try_parse_from(["cargo xtask", "schemathesis", "--seconds", "90"])
            .expect("parses");
        assert!(matches!(
            cli.task,
            Task::Schemathesis(SchemathesisArgs { seconds: 90, .. })
        ));
    }

    #[test]
    fn bench_quick_parses() {
        match Cli::try_parse_from(["xtask", "bench", "--quick"]).map(|c| c.task) {
            Ok(Task::Bench(args)) => assert!(args.quick),
            _ => panic!("bench --quick did not parse"),
        }
        match Cli::try_parse_from(["xtask", "bench", "--only", "scale,logins"]).map(|c| c.task) {
            Ok(Task::Bench(args)) => assert_eq!(args.only, ["scale", "logins"]),
            _ => panic!("bench --only did not parse"),
        }
        let names: Vec<_> = BENCH_TARGETS
            .iter()
            .chain(HARNESS_TARGETS)
            .map(BenchTarget::name)
            .collect();
        assert_eq!(
            names,
            [
                "write",
                "sync",
                "crypto",
                "scale",
                "throughput",
                "devices",
                "logins",
                "realtime"
            ]
        );
    }
}
