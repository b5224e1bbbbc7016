//! Load with exact accounting: many devices of several accounts write and
//! sync against one server at once, the server restarts in the middle,
//! and afterwards the server holds exactly the union of what the devices
//! wrote — nothing lost, nothing duplicated — and every device converges
//! to it. Reports throughput, sync latency (p50/p99) and errors.
//!
//! CI runs a short version on each server store. The long one:
//! `CHATVAULT_LOAD_DEVICES=200 CHATVAULT_LOAD_SECONDS=60 cargo test -p
//! chatvault-sync --test sync load:: -- --nocapture` (or `cargo xtask
//! load`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatvault::{ConversationId, MemoryStore, NewConversation, NewMessage, Role, SystemClock};
use chatvault_server::{Config, DatabaseUrl, RateLimit};
use chatvault_sync::{SyncClient, SyncError};

use crate::common::*;

/// Devices per account.
const PER_ACCOUNT: usize = 4;

struct Plan {
    devices: usize,
    run: Duration,
}

fn plan() -> Plan {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Plan {
        devices: number("CHATVAULT_LOAD_DEVICES", 24).max(PER_ACCOUNT as u64) as usize,
        run: Duration::from_secs(number("CHATVAULT_LOAD_SECONDS", 6).max(2)),
    }
}

fn unlimited(config: &mut Config) {
    // Every device signs in from 127.0.0.1: a real deployment would see
    // as many addresses as devices.
    config.rate_limits.per_address = RateLimit::UNLIMITED;
    config.rate_limits.global = RateLimit::UNLIMITED;
    config.rate_limits.per_username = RateLimit::UNLIMITED;
}

/// One simulated device: its client, its own conversation, and every
/// message content its vault acknowledged.
struct Device {
    index: usize,
    account: usize,
    client: SyncClient,
    conversation: ConversationId,
    written: Vec<String>,
}

/// What one device's load loop measured.
#[derive(Default)]
struct Measured {
    syncs: usize,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
}

async fn device_loop(mut device: Device, until: Instant) -> (Device, Measured) {
    let mut measured = Measured::default();
    let mut n = 0usize;
    while Instant::now() < until {
        // One to three messages, then a sync (push and pull).
        for _ in 0..=(n % 3) {
            let content = format!("a{}-d{}-{n}", device.account, device.index);
            device
                .client
                .vault()
                .add_message(device.conversation, NewMessage::new(Role::User, &content))
                .await
                .expect("a local write");
            device.written.push(content);
            n += 1;
        }
        let started = Instant::now();
        match device.client.sync_once().await {
            Ok(_) => {
                measured.syncs += 1;
                measured.latencies.push(started.elapsed());
            }
            Err(e) => {
                *measured.errors.entry(error_kind(&e)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (device, measured)
}

fn error_kind(e: &SyncError) -> String {
    match e {
        SyncError::Network(_) => "network (server restarting)".into(),
        other => format!("{} ({other})", other.code()),
    }
}

/// Syncs until nothing is pending and a sync went through cleanly.
async fn drain(client: &SyncClient) {
    for _ in 0..200 {
        if client.sync_once().await.is_ok() && client.status().borrow().pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "a device could not push everything: {:?}",
        *client.status().borrow()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn load(name: &str, database: Option<DatabaseUrl>) {
    let plan = plan();
    let mut server = TestServer::start_on(database, unlimited).await;
    let url = server.url();
    let accounts = plan.devices.div_ceil(PER_ACCOUNT);

    // Accounts and devices: the first device of each registers, the others
    // join; each device writes to a conversation of its own.
    let mut devices = Vec::with_capacity(plan.devices);
    for index in 0..plan.devices {
        let account = index / PER_ACCOUNT;
        let user = format!("{name}-{account}");
        let client = if index % PER_ACCOUNT == 0 {
            SyncClient::register(vault().await, &url, &user, PASS, options()).await
        } else {
            SyncClient::join(
                Arc::new(MemoryStore::new()),
                vault_options(Arc::new(SystemClock)),
                &url,
                &user,
                PASS,
                options(),
            )
            .await
        }
        .expect("a device signs in");
        let conversation = client
            .vault()
            .create_conversation(NewConversation::titled(format!("device {index}")))
            .await
            .expect("a conversation")
            .id;
        devices.push(Device {
            index,
            account,
            client,
            conversation,
            written: Vec::new(),
        });
    }

    // The load, with the server restarted halfway through.
    let started = Instant::now();
    let until = started + plan.run;
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|device| tokio::spawn(device_loop(device, until)))
        .collect();
    tokio::time::sleep(plan.run / 2).await;
    let restart = Instant::now();
    server.restart_with(unlimited).await;
    let restart = restart.elapsed();
    let mut devices = Vec::new();
    let mut total = Measured::default();
    for task in tasks {
        let (device, measured) = task.await.expect("a device task");
        devices.push(device);
        total.syncs += measured.syncs;
        total.latencies.extend(measured.latencies);
        for (kind, count) in measured.errors {
            *total.errors.entry(kind).or_default() += count;
        }
    }
    let elapsed = started.elapsed();

    // Everyone pushes what is left, then everyone pulls everything.
    for device in &devices {
        drain(&device.client).await;
    }
    for device in &devices {
        drain(&device.client).await;
    }

    // Exact accounting, per account: a new device rebuilt from the server
    // holds exactly the union of what the account's devices wrote (each
    // message once: a duplicate would be a second record with the same
    // content), and every device shows the same.
    let written: usize = devices.iter().map(|d| d.written.len()).sum();
    for account in 0..accounts {
        let members: Vec<&Device> = devices.iter().filter(|d| d.account == account).collect();
        let fresh = SyncClient::join(
            Arc::new(MemoryStore::new()),
            vault_options(Arc::new(SystemClock)),
            &url,
            &format!("{name}-{account}"),
            PASS,
            options(),
        )
        .await
        .expect("a fresh device joins");
        drain(&fresh).await;
        let server_state = visible_state(fresh.vault()).await;
        let mut expected = BTreeMap::new();
        for device in &members {
            let mut contents = device.written.clone();
            contents.sort();
            expected.insert(
                device.conversation.to_string(),
                (format!("device {}", device.index), contents),
            );
        }
        assert_eq!(
            server_state.len(),
            expected.len(),
            "account {account}: conversations on the server"
        );
        for (id, (title, contents)) in &expected {
            let (got_title, got) = server_state
                .get(id)
                .unwrap_or_else(|| panic!("account {account}: conversation {id} lost"));
            assert_eq!(got_title, title);
            if got != contents {
                let lost = contents.iter().filter(|c| !got.contains(c)).count();
                panic!(
                    "account {account}, {title}: {} messages on the server, {} written \
                     ({lost} lost, {} extra)",
                    got.len(),
                    contents.len(),
                    got.len() + lost - contents.len()
                );
            }
        }
        for device in &members {
            let shown = visible_state(device.client.vault()).await;
            if shown != server_state {
                let counts = |state: &BTreeMap<String, (String, Vec<String>)>| {
                    state
                        .values()
                        .map(|(title, messages)| format!("{title}: {}", messages.len()))
                        .collect::<Vec<_>>()
                };
                panic!(
                    "account {account}: a device did not converge: it shows {:?}, the server {:?}",
                    counts(&shown),
                    counts(&server_state)
                );
            }
        }
    }

    total.latencies.sort();
    let errors: usize = total.errors.values().sum();
    eprintln!(
        "load ({name}): {} devices in {accounts} accounts for {:.1} s, server restarted \
         (down {:.0} ms): {written} messages written ({:.0}/s), {} syncs ({:.0}/s), sync p50 \
         {:.1} ms, p99 {:.1} ms, {errors} failed syncs {:?}; after draining: the server holds \
         exactly the {written} messages written (0 lost, 0 duplicated), every device converged",
        plan.devices,
        elapsed.as_secs_f64(),
        restart.as_secs_f64() * 1e3,
        written as f64 / elapsed.as_secs_f64(),
        total.syncs,
        total.syncs as f64 / elapsed.as_secs_f64(),
        percentile(&total.latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&total.latencies, 0.99).as_secs_f64() * 1e3,
        total.errors,
    );
    // Errors only while the server restarts: the client's kinds that mean
    // "try again", never a refusal.
    for kind in total.errors.keys() {
        assert!(
            kind.starts_with("network"),
            "a sync failed for another reason than the restart: {kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_sqlite() {
    load("load-sqlite", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_postgres() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let schema = pg_schema(&db, "load").await;
    load("load-pg", Some(DatabaseUrl::Postgres(schema.url.clone()))).await;
    schema.drop_all().await;
}
