//! The simulation: deterministic and seeded (`StdRng::seed_from_u64`).
//! Three devices on one account make random creates, renames, edits and
//! deletes of conversations and messages, sync, go offline and back,
//! restart (reopen their vault from its store and resume the saved
//! session) and run retention, while the server restarts, purges its
//! tombstones past the horizon, is backed up and restored from an older
//! backup, the clocks move or are skewed (within and beyond the allowed
//! bound), and the transport cuts requests, loses answers after the server
//! committed and answers 5xx or 429 itself. Every write a device
//! acknowledged is kept in a [`Model`] with its stamp; every read a device
//! makes is checked for monotonic reads and read-your-writes as it
//! happens. Then everything heals (clocks right, all online, every device
//! synced until quiet) and each record's final state — on every device and
//! on the server — is checked against the rules of docs/protocol.md ("What
//! the simulation checks").
//!
//! `SIM_SEEDS` (default [`DEFAULT_SEEDS`]) seeds of `SIM_STEPS` (default
//! [`STEPS`]) steps are run starting at `SIM_SEED_START` (default 0),
//! `SIM_JOBS` at a time; `cargo xtask soak --seeds N --start S` runs more.
//! A failing seed prints the one command that replays it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chatvault::{
    ConversationUpdate, Hlc, ManualClock, MemoryStore, MessageUpdate, NewConversation, NewMessage,
    RetentionMode, RetentionPolicy, Role, Store, Vault,
};
use chatvault_core::EntityKind;
use chatvault_sync::{SyncClient, SyncError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

/// Seeds run by default (CI, on each server store): the issue asks for at
/// least 200 on both stores within 3 minutes. `cargo xtask soak` runs more.
const DEFAULT_SEEDS: u64 = 200;
/// Seeds run side by side by default (`SIM_JOBS`): a seed mostly waits
/// on its server's database and its loopback connections.
const DEFAULT_JOBS: u64 = 4;
/// Random actions per seed before healing: short histories, many seeds
/// (a long history is many short ones back to back, and `soak` runs
/// thousands).
const STEPS: usize = 35;
const DEVICES: usize = 3;
/// Clock skew within the allowed bound (ms, either way): 25 minutes, so
/// two devices are never an hour apart.
const SKEW_WITHIN: i64 = 25 * 60_000;
/// Clock skew beyond the server's one-hour bound (ms ahead).
const SKEW_BEYOND: std::ops::RangeInclusive<i64> = 90 * 60_000..=180 * 60_000;
/// The server refuses stamps this far ahead of its clock (`clock_skew`).
const SERVER_BOUND_MS: u64 = 3_600_000;
/// Attempts of one sync, as the sync loop makes them: the first may meet
/// an injected fault, a connection cut earlier may fail the next.
const SYNC_ATTEMPTS: usize = 6;

/// What one acknowledged write wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A conversation's title or a message's content (unique per write).
    Upsert(String),
    Delete,
}

/// One write a device acknowledged (the vault call returned `Ok`).
#[derive(Debug)]
struct Write {
    /// The record's id.
    id: String,
    device: usize,
    /// The step that made it (read only by failure messages, through
    /// `Debug`).
    #[allow(dead_code)]
    step: usize,
    value: Value,
    /// Its stamp as written: the highest it can end with.
    stamp: Hlc,
    /// The lowest stamp it can end with. Equal to `stamp`, unless the
    /// write was stamped beyond the server's bound: the server may then
    /// refuse it as `clock_skew` and the device re-stamps it at the
    /// server's time (never lower than the server's clock at the write).
    /// Pinned to the real stamp once a device is seen holding it.
    low: Hlc,
    /// Seen held below the stamp it was written at: refused as
    /// `clock_skew` and re-stamped at the server's time.
    restamped: bool,
    /// On the server for sure: its device completed a sync with nothing
    /// pending since (cleared by a restore, which may lose it).
    synced: bool,
    /// Possibly superseded by the purge rule: a purge happened while it
    /// was not synced, and it is stamped at or below the purge mark.
    exposed: bool,
}

/// Every acknowledged write, by record: the oracle.
#[derive(Default)]
struct Model {
    writes: Vec<Write>,
    /// Upsert text → its write.
    by_text: HashMap<String, usize>,
    /// Record id → its writes, in the order they were made.
    by_record: HashMap<String, Vec<usize>>,
    /// Message id → its conversation's id.
    conversation_of: HashMap<String, String>,
    /// Writes seen re-stamped (held below the stamp they were written at).
    restamped: u64,
}

impl Model {
    fn record(&mut self, write: Write) {
        let i = self.writes.len();
        if let Value::Upsert(text) = &write.value {
            assert!(
                self.by_text.insert(text.clone(), i).is_none(),
                "text {text:?} written twice"
            );
        }
        self.by_record.entry(write.id.clone()).or_default().push(i);
        self.writes.push(write);
    }

    fn writes_of<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a Write> + 'a {
        self.by_record
            .get(id)
            .into_iter()
            .flatten()
            .map(|&i| &self.writes[i])
    }

    /// A device holds write `w` at `version`. Below the stamp it was
    /// written at, that is its re-stamp, for good (a re-stamp is at the
    /// server's time, which the server accepts); at it, the write may
    /// still be re-stamped later if it was stamped beyond the bound.
    fn pin(&mut self, w: usize, version: Hlc) {
        let write = &mut self.writes[w];
        assert!(
            write.low <= version && version <= write.stamp,
            "{write:?} is held at {version:?}, outside the stamps it can have"
        );
        if version < write.stamp {
            self.restamped += 1;
            write.restamped = true;
            write.low = version;
            write.stamp = version;
        }
    }

    /// Whether write `i` may have been replaced, before it ever reached the
    /// server, by a later write of its device to the same record that was
    /// then re-stamped below it: docs/protocol.md, Push — a `clock_skew`
    /// re-stamp "may end below the version the write replaced on the
    /// device: an earlier write of its own that never reached the server
    /// (the outbox holds one change per record, so that one was never sent
    /// and is gone), or a version from another device stamped in between,
    /// which then wins". Such a write is not required, whichever write the
    /// record ends with (the re-stamped one, or one in between). A later
    /// write may have ended below `i` if the lowest stamp it can end with
    /// is (it was stamped beyond the server's bound, or seen re-stamped);
    /// an accepted write of the device is never passed this way (the
    /// re-stamp stays above it), so `i` was never on the server.
    fn replaced_by_own_restamp(&self, i: usize) -> bool {
        let write = &self.writes[i];
        self.by_record[&write.id].iter().any(|&j| {
            j > i && self.writes[j].device == write.device && self.writes[j].low < write.stamp
        })
    }

    /// Deletions of conversation `conv` that may have reached the server
    /// (their stamps are its deletion mark).
    fn conversation_deletes<'a>(&'a self, conv: &str) -> impl Iterator<Item = &'a Write> + 'a {
        self.writes_of(conv).filter(|w| w.value == Value::Delete)
    }
}

/// A listed record: conversation or message.
struct Listed<'a> {
    id: &'a str,
    text: &'a str,
    version: Hlc,
    /// A message's conversation.
    conversation: Option<&'a str>,
}

/// A conversation as a device lists it.
#[derive(Debug, PartialEq, Eq)]
struct ConversationView {
    title: String,
    version: Hlc,
    /// Message id → (content, version).
    messages: BTreeMap<String, (String, Hlc)>,
}

/// What a device lists, by conversation id.
type State = BTreeMap<String, ConversationView>;

fn listed(state: &State) -> impl Iterator<Item = Listed<'_>> {
    state.iter().flat_map(|(id, c)| {
        std::iter::once(Listed {
            id,
            text: &c.title,
            version: c.version,
            conversation: None,
        })
        .chain(c.messages.iter().map(move |(m, (text, version))| Listed {
            id: m,
            text,
            version: *version,
            conversation: Some(id),
        }))
    })
}

async fn state_of(vault: &Vault) -> State {
    let conversations = vault
        .conversations(chatvault::ListConversations {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("conversations");
    assert!(conversations.next_cursor.is_none());
    let mut all = State::new();
    for c in conversations.items {
        let messages = vault
            .messages(
                c.id,
                chatvault::ListMessages {
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .expect("messages");
        assert!(messages.next_cursor.is_none());
        let messages = messages
            .items
            .into_iter()
            .map(|m| (m.id.to_string(), (m.content, m.version)))
            .collect();
        all.insert(
            c.id.to_string(),
            ConversationView {
                title: c.title,
                version: c.version,
                messages,
            },
        );
    }
    all
}

/// The version of a record's tombstone in `store`, if it has one.
async fn tombstone_version(store: &dyn Store, kind: EntityKind, id: &str) -> Option<Hlc> {
    let record: chatvault_core::RecordId = match kind {
        EntityKind::Conversation => id
            .parse::<chatvault::ConversationId>()
            .expect("conversation id")
            .into(),
        EntityKind::Message => id
            .parse::<chatvault::MessageId>()
            .expect("message id")
            .into(),
    };
    store
        .tombstone(kind, record)
        .await
        .expect("tombstone")
        .map(|t| t.version)
}

/// What a device has read so far: per record, the highest version it
/// listed and the write that version showed.
#[derive(Default)]
struct Reads {
    seen: HashMap<String, (Hlc, usize)>,
}

struct Device {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    client: SyncClient,
    online: bool,
    reads: Reads,
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.random_range(0..items.len())])
    }
}

/// One seed's world: the server, the devices, the model.
struct Sim {
    seed: u64,
    server: TestServer,
    url: String,
    user: String,
    devices: Vec<Device>,
    model: Model,
    /// The newest backup taken of the server, if any.
    backup: Option<Backup>,
    /// The clocks jumped past the tombstone horizon (a purge step ran):
    /// from then on every server start may purge too.
    past_horizon: bool,
    stats: Stats,
}

/// What the seeds exercised (logged at `info` when they are done, with
/// `RUST_LOG=sync=info`), so a quiet run is evidence, not luck.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    writes: u64,
    /// Writes stamped beyond the server's bound.
    ahead: u64,
    /// Of those, seen re-stamped by their device.
    restamped: u64,
    faults: u64,
    /// Sync attempts that failed with a transient error and were retried.
    retried: u64,
    retention_deletes: u64,
    purges: u64,
    /// Writes a purge left exempt (possibly superseded by the purge mark).
    exposed: u64,
    backups: u64,
    restores: u64,
    /// Records whose final state the rules were checked against.
    records_checked: u64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.writes += o.writes;
        self.ahead += o.ahead;
        self.restamped += o.restamped;
        self.faults += o.faults;
        self.retried += o.retried;
        self.retention_deletes += o.retention_deletes;
        self.purges += o.purges;
        self.exposed += o.exposed;
        self.backups += o.backups;
        self.restores += o.restores;
        self.records_checked += o.records_checked;
    }
}

impl Sim {
    /// Advances every clock (server and devices) by `ms`.
    fn advance(&mut self, ms: u64) {
        self.server.clock.advance(Duration::from_millis(ms));
        for dev in &self.devices {
            dev.clock.advance(ms as i64);
        }
    }

    /// A purge may just have run on the server: a write not yet known to be
    /// on it, stamped at or below the purge mark it may have left (at most
    /// the highest deletion stamp), may now be superseded, so the model
    /// stops requiring it.
    fn purge_may_have_run(&mut self) {
        let mark = self
            .model
            .writes
            .iter()
            .filter(|w| w.value == Value::Delete)
            .map(|w| w.stamp)
            .max();
        for w in &mut self.model.writes {
            if !w.synced && !w.exposed && mark.is_some_and(|m| w.low <= m) {
                self.stats.exposed += 1;
                w.exposed = true;
            }
        }
    }

    /// A server start runs maintenance: once the clocks have passed the
    /// tombstone horizon, it may purge (a database restored from an older
    /// backup holds tombstones past the horizon, purged before any device
    /// pushes back what the backup lacks).
    fn after_server_start(&mut self) {
        if self.past_horizon {
            self.purge_may_have_run();
        }
    }

    /// Records what device `d` just wrote to record `id` at `stamp`.
    fn wrote(&mut self, d: usize, step: usize, id: String, value: Value, stamp: Hlc) {
        let server_now = self.server.now().as_millis() as u64;
        let low = if stamp.wall_ms() > server_now + SERVER_BOUND_MS {
            self.stats.ahead += 1;
            Hlc::new(server_now, 0, stamp.device()).expect("a stamp")
        } else {
            stamp
        };
        self.stats.writes += 1;
        self.model.record(Write {
            id,
            device: d,
            step,
            value,
            stamp,
            low,
            restamped: false,
            synced: false,
            exposed: false,
        });
    }

    /// Records the deletion device `d` just made of record `id`, at the
    /// stamp of the tombstone it left.
    async fn deleted(&mut self, d: usize, step: usize, kind: EntityKind, id: String) {
        let stamp = tombstone_version(self.devices[d].store.as_ref(), kind, &id)
            .await
            .unwrap_or_else(|| panic!("device {d} deleted {id} but holds no tombstone"));
        self.wrote(d, step, id, Value::Delete, stamp);
    }

    /// Device `d`'s (pending, parked) changes.
    async fn outbox(&self, d: usize) -> (u64, u64) {
        self.devices[d]
            .client
            .vault()
            .replica()
            .outbox_counts()
            .await
            .expect("outbox counts")
    }

    /// Syncs device `d` once as the sync loop does: transient failures
    /// (network, 5xx, 429) are tried again — after `Retry-After`, on the
    /// manual clocks — any other error breaks the simulation. `fault`, if
    /// any, happens to the first new connection. Afterwards nothing may be
    /// parked (no cause for parking occurs here), and the device's reads
    /// are checked.
    async fn sync(&mut self, d: usize, fault: Option<Fault>) {
        self.server.proxy.inject(fault);
        self.stats.faults += u64::from(fault.is_some());
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.devices[d].client.sync_once().await {
                Ok(_) => break,
                Err(e) if e.is_transient() && attempt < SYNC_ATTEMPTS => {
                    self.stats.retried += 1;
                    tracing::debug!(device = d, ?fault, error = %e, "transient sync failure, retrying");
                    if let Some(Fault::TooManyRequests { retry_after_secs }) = fault {
                        if matches!(e, SyncError::Server { status: 429, .. }) {
                            assert_eq!(
                                e.retry_after(),
                                Some(Duration::from_secs(retry_after_secs)),
                                "a 429's Retry-After is reported"
                            );
                        }
                    }
                    if let Some(wait) = e.retry_after() {
                        self.advance(wait.as_millis() as u64);
                    }
                }
                Err(e) => panic!("device {d} sync failed ({fault:?}): {e}"),
            }
        }
        self.server.proxy.inject(None);
        let (pending, parked) = self.outbox(d).await;
        if parked > 0 {
            let letters = self.devices[d]
                .client
                .dead_letters()
                .await
                .expect("dead letters");
            panic!("device {d} parked changes without a cause: {letters:?}");
        }
        if pending == 0 {
            for w in &mut self.model.writes {
                if w.device == d {
                    w.synced = true;
                }
            }
        }
        self.check_reads(d).await;
    }

    /// Monotonic reads and read-your-writes for device `d`, on what it
    /// lists now; pins the stamps of the writes it shows.
    async fn check_reads(&mut self, d: usize) {
        let state = state_of(self.devices[d].client.vault()).await;
        for l in listed(&state) {
            let Some(&w) = self.model.by_text.get(l.text) else {
                panic!(
                    "device {d} lists {} as {:?}, which nobody wrote",
                    l.id, l.text
                );
            };
            assert_eq!(
                self.model.writes[w].id, l.id,
                "device {d} lists {:?} under another record",
                l.text
            );
            self.model.pin(w, l.version);
            let reads = &mut self.devices[d].reads;
            if let Some(&(before, shown)) = reads.seen.get(l.id) {
                // A version stamped beyond the server's bound is
                // provisional: refused as clock skew and re-stamped, it
                // may end below its first stamp (and lose to a version
                // in between). Older than the lowest it can end at is a
                // step back.
                assert!(
                    l.version >= before.min(self.model.writes[shown].low) || shown == w,
                    "monotonic reads: device {d} read {} at {before:?} ({:?}), now at the older \
                     {:?} ({:?})",
                    l.id,
                    self.model.writes[shown],
                    l.version,
                    self.model.writes[w]
                );
            }
            reads.seen.insert(l.id.to_owned(), (l.version, w));
        }

        // Read-your-writes: each record's latest own write, unless a purge
        // may have superseded it.
        let mut latest: HashMap<&str, &Write> = HashMap::new();
        for w in self.model.writes.iter().filter(|w| w.device == d) {
            latest.insert(&w.id, w);
        }
        for (id, w) in latest {
            if w.exposed {
                continue;
            }
            let shown = match self.model.conversation_of.get(id) {
                None => state.get(id).map(|c| (c.title.as_str(), c.version)),
                Some(conv) => state
                    .get(conv)
                    .and_then(|c| c.messages.get(id))
                    .map(|(text, v)| (text.as_str(), *v)),
            };
            match (&w.value, shown) {
                (Value::Upsert(text), Some((held, _))) if held == text => {}
                (_, Some((_, version))) => assert!(
                    version > w.low,
                    "read-your-writes: device {d} shows {id} at {version:?}, not newer than its \
                     own {w:?}"
                ),
                (Value::Delete, None) => {}
                (Value::Upsert(_), None) => {
                    // Superseded by a newer deletion — which this device
                    // may hold as a tombstone or, after a resync from a
                    // snapshot, not at all.
                    let deleted_later = self
                        .model
                        .writes_of(id)
                        .any(|x| x.value == Value::Delete && x.stamp > w.low);
                    let covered = match self.model.conversation_of.get(id) {
                        None => false,
                        Some(conv) => {
                            !state.contains_key(conv)
                                || self
                                    .model
                                    .conversation_deletes(conv)
                                    .any(|del| del.stamp >= w.low)
                        }
                    };
                    assert!(
                        deleted_later || covered,
                        "read-your-writes: device {d} lost its own {w:?}"
                    );
                }
            }
        }
    }

    /// Every record's final state in `state` (what every device and the
    /// server hold) is what the rules make of the acknowledged writes:
    /// last writer wins on the stamp, a conversation's deletion covers its
    /// messages stamped at or before it, and only what the purge rule may
    /// have superseded is exempt.
    fn check_rules(&mut self, state: &State, whose: &str) {
        for l in listed(state) {
            let w = self.model.by_text[l.text];
            self.model.pin(w, l.version);
            // A re-stamped write stays above its device's own writes the
            // server accepted, not above those it replaced before they
            // were ever pushed (protocol.md, Push: "never goes below one
            // of its own accepted writes"; the outbox holds one change
            // per record): such an earlier write of the same device may
            // be stamped above it — and above the listed write, which
            // may be the re-stamped one or another device's in between.
            let newer = self.model.by_record[l.id]
                .iter()
                .filter(|&&i| !self.model.replaced_by_own_restamp(i))
                .map(|&i| &self.model.writes[i])
                .find(|other| !other.exposed && other.low > l.version);
            assert!(
                newer.is_none(),
                "{whose}: {} holds {:?} at {:?} but {:?} is newer (last writer wins)",
                l.id,
                self.model.writes[w],
                l.version,
                newer
            );
            if let Some(conv) = l.conversation {
                let cover = self
                    .model
                    .conversation_deletes(conv)
                    .find(|del| !del.exposed && del.low >= l.version);
                assert!(
                    cover.is_none(),
                    "{whose}: message {} at {:?} is listed though the deletion {:?} of its \
                     conversation covers it",
                    l.id,
                    l.version,
                    cover
                );
            }
        }
        for (id, writes) in &self.model.by_record {
            let conv = self.model.conversation_of.get(id);
            let shown = match conv {
                None => state.contains_key(id),
                Some(c) => match state.get(c) {
                    Some(view) => view.messages.contains_key(id),
                    // Its conversation is not listed: judged there.
                    None => continue,
                },
            };
            if shown {
                continue;
            }
            let deletes: Vec<&Write> = writes
                .iter()
                .map(|&i| &self.model.writes[i])
                .filter(|w| w.value == Value::Delete)
                .chain(
                    conv.into_iter()
                        .flat_map(|c| self.model.conversation_deletes(c)),
                )
                .collect();
            // An upsert its device replaced before pushing it, by a write
            // then re-stamped below it, is not required either (see
            // `Model::replaced_by_own_restamp`).
            let winner = writes
                .iter()
                .filter(|&&i| !self.model.replaced_by_own_restamp(i))
                .map(|&i| &self.model.writes[i])
                .find(|w| {
                    !w.exposed
                        && matches!(w.value, Value::Upsert(_))
                        && deletes.iter().all(|del| w.low > del.stamp)
                });
            assert!(
                winner.is_none(),
                "{whose}: {id} is gone, but {winner:?} is newer than every deletion of it \
                 (acknowledged write lost)"
            );
        }
    }

    /// One random action of device `d` at `step`.
    async fn step(&mut self, rng: &mut StdRng, step: usize) {
        let d = rng.random_range(0..DEVICES);
        let action = rng.random_range(0..100u32);
        let vault = self.devices[d].client.vault().clone();
        let seen = state_of(&vault).await;
        let convs: Vec<&String> = seen.keys().collect();
        let messages: Vec<&String> = seen.values().flat_map(|c| c.messages.keys()).collect();
        let text = format!("seed {} step {step} device {d}", self.seed);
        tracing::debug!(step, device = d, action, server_now = ?self.server.now(), "sim step");
        match action {
            0..=9 => {
                let c = vault
                    .create_conversation(NewConversation::titled(text.clone()))
                    .await
                    .expect("create conversation");
                self.wrote(d, step, c.id.to_string(), Value::Upsert(text), c.version);
            }
            10..=17 => {
                if let Some(id) = pick(rng, &convs) {
                    let c = vault
                        .update_conversation(
                            id.parse().expect("conversation id"),
                            ConversationUpdate {
                                title: Some(text.clone()),
                                ..Default::default()
                            },
                        )
                        .await
                        .expect("rename");
                    self.wrote(d, step, c.id.to_string(), Value::Upsert(text), c.version);
                }
            }
            18..=20 => {
                if let Some(id) = pick(rng, &convs) {
                    vault
                        .delete_conversation(id.parse().expect("conversation id"))
                        .await
                        .expect("delete conversation");
                    self.deleted(d, step, EntityKind::Conversation, (*id).clone())
                        .await;
                }
            }
            21..=35 => {
                if let Some(id) = pick(rng, &convs) {
                    let m = vault
                        .add_message(
                            id.parse().expect("conversation id"),
                            NewMessage::new(Role::User, text.clone()),
                        )
                        .await
                        .expect("add message");
                    self.model
                        .conversation_of
                        .insert(m.id.to_string(), m.conversation_id.to_string());
                    self.wrote(d, step, m.id.to_string(), Value::Upsert(text), m.version);
                }
            }
            36..=47 => {
                if let Some(id) = pick(rng, &messages) {
                    let parsed = id.parse().expect("message id");
                    if action < 44 {
                        let m = vault
                            .update_message(
                                parsed,
                                MessageUpdate {
                                    content: Some(text.clone()),
                                    metadata: None,
                                },
                            )
                            .await
                            .expect("edit message");
                        self.wrote(d, step, m.id.to_string(), Value::Upsert(text), m.version);
                    } else {
                        vault.delete_message(parsed).await.expect("delete message");
                        self.deleted(d, step, EntityKind::Message, (*id).clone())
                            .await;
                    }
                }
            }
            48..=62 => {
                if self.devices[d].online {
                    self.sync(d, None).await;
                }
            }
            63..=68 => {
                // A sync through a faulty transport: a request cut before
                // the server sees it, an answer lost after the server
                // committed (the retry repeats the op ids), a 5xx, a 429
                // with Retry-After.
                if self.devices[d].online {
                    let fault = match rng.random_range(0..4u32) {
                        0 => Fault::DropRequest,
                        1 => Fault::LoseResponse,
                        2 => Fault::Status(*pick(rng, &[500, 502, 503]).expect("a status")),
                        _ => Fault::TooManyRequests {
                            retry_after_secs: rng.random_range(1..=30),
                        },
                    };
                    self.sync(d, Some(fault)).await;
                }
            }
            69..=72 => self.devices[d].online = !self.devices[d].online,
            73..=74 => {
                // Skew this device's clock: mostly within the allowed
                // bound (pairwise under an hour), sometimes far ahead of
                // it (the server refuses its stamps as `clock_skew`; the
                // device re-stamps them at the server's time).
                let skew = if rng.random_bool(0.8) {
                    rng.random_range(-SKEW_WITHIN..=SKEW_WITHIN)
                } else {
                    rng.random_range(SKEW_BEYOND)
                };
                self.devices[d]
                    .clock
                    .set(chatvault::Timestamp(self.server.now().as_millis() + skew));
            }
            75..=78 => {
                // Restart: reopen the vault from its store, resume the
                // saved session.
                let dev = &mut self.devices[d];
                let vault = Vault::open_encrypted(
                    dev.store.clone(),
                    PASS,
                    vault_options(dev.clock.clone()),
                )
                .await
                .expect("vault reopens");
                dev.client = SyncClient::resume(Arc::new(vault), &self.url, &self.user, options())
                    .await
                    .expect("resume")
                    .expect("a saved session");
            }
            79..=80 => {
                self.server.restart_with(|_| {}).await;
                self.after_server_start();
            }
            81..=84 => {
                // Retention on the device: keep its one or two most
                // recently active conversations (never one with unsynced
                // changes).
                let policy = RetentionPolicy {
                    max_conversations: Some(rng.random_range(1..=2)),
                    ..Default::default()
                };
                let report = vault
                    .run_retention(&policy, RetentionMode::Apply)
                    .await
                    .expect("retention");
                for doomed in report.plan.delete {
                    self.stats.retention_deletes += 1;
                    self.deleted(d, step, EntityKind::Conversation, doomed.id.to_string())
                        .await;
                }
            }
            85 => {
                // Past the tombstone horizon: the server purges its
                // tombstones (and op results and sessions), leaving the
                // purge mark; every device behind it resyncs. A write not
                // yet on the server and stamped at or below the mark may
                // now be superseded: the model stops requiring it.
                let horizon = self.server.server().config().tombstone_horizon();
                self.advance(horizon.as_millis() as u64 + 86_400_000);
                let purged = self.server.server().run_maintenance().await.expect("purge");
                self.stats.purges += 1;
                tracing::debug!(?purged, "purged past the horizon");
                self.past_horizon = true;
                self.purge_may_have_run();
            }
            86..=91 => match self.backup.take() {
                Some(backup) if rng.random_bool(0.6) => {
                    // The operator restores the older backup: the server
                    // loses everything written since; devices push it
                    // back. Nothing is known to be on the server any more.
                    self.server.restore(&backup).await;
                    self.stats.restores += 1;
                    self.backup = Some(backup);
                    for w in &mut self.model.writes {
                        w.synced = false;
                    }
                    self.after_server_start();
                }
                _ => {
                    self.backup = Some(self.server.backup().await);
                    self.stats.backups += 1;
                }
            },
            _ => {
                let ms = rng.random_range(1..5_000u64);
                self.advance(ms);
            }
        }
        self.check_reads(d).await;
    }
}

/// Runs one seed to the end on `database` (SQLite when `None`); panics on
/// the first broken rule.
async fn run_seed(seed: u64, database: Option<chatvault_server::DatabaseUrl>) -> Stats {
    let mut rng = StdRng::seed_from_u64(seed);
    let user = format!("sim{seed}");
    let server = TestServer::start_on(database, |_| {}).await;
    let url = server.url();

    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = clock_at(&server);
        let client = if i == 0 {
            let vault = Vault::open_encrypted(store.clone(), PASS, vault_options(clock.clone()))
                .await
                .expect("vault opens");
            SyncClient::register(Arc::new(vault), &url, &user, PASS, options())
                .await
                .expect("register")
        } else {
            SyncClient::join(
                store.clone(),
                vault_options(clock.clone()),
                &url,
                &user,
                PASS,
                options(),
            )
            .await
            .expect("join")
        };
        devices.push(Device {
            store,
            clock,
            client,
            online: true,
            reads: Reads::default(),
        });
    }
    let mut sim = Sim {
        seed,
        server,
        url,
        user,
        devices,
        model: Model::default(),
        backup: None,
        past_horizon: false,
        stats: Stats::default(),
    };

    for step in 0..env_u64("SIM_STEPS", STEPS as u64) as usize {
        sim.step(&mut rng, step).await;
    }

    // Heal: every clock right, everyone online, every device synced until
    // quiet, three times round.
    let now = sim.server.now();
    for dev in &mut sim.devices {
        dev.clock.set(now);
        dev.online = true;
    }
    for _round in 0..3 {
        for d in 0..DEVICES {
            sim.sync(d, None).await;
        }
    }

    // Nothing pending or parked anywhere.
    for d in 0..DEVICES {
        let counts = sim.outbox(d).await;
        assert_eq!(counts, (0, 0), "device {d}: (pending, parked) changes left");
    }

    // Each device's state, and the server's (what a new device joining now
    // rebuilds from it alone), is what the rules make of the acknowledged
    // writes; so they are all the same, at the same versions.
    let mut states = Vec::new();
    for dev in &sim.devices {
        states.push(state_of(dev.client.vault()).await);
    }
    let fresh = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_at(&sim.server)),
        &sim.url,
        &sim.user,
        PASS,
        options(),
    )
    .await
    .expect("a new device joins");
    fresh.sync_once().await.expect("the new device syncs");
    states.push(state_of(fresh.vault()).await);
    for (i, state) in states.iter().enumerate() {
        let whose = if i < DEVICES {
            format!("device {i}")
        } else {
            "the server (as a new device rebuilds it)".to_owned()
        };
        sim.check_rules(state, &whose);
        assert_eq!(state, &states[0], "{whose} differs from device 0");
    }
    sim.stats.records_checked = sim.model.by_record.len() as u64;
    sim.stats.restamped = sim.model.restamped;
    sim.stats
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// Runs the seeds `SIM_SEED_START..+SIM_SEEDS`, `SIM_JOBS` (default
/// [`DEFAULT_JOBS`]) at a time, each on the database `database(seed)`
/// gives (SQLite when `None`); `test` names the test for the replay
/// command. Seeds share nothing (each has its own server, database and
/// devices), so running them side by side changes no seed's history.
async fn run_seeds<F, Fut>(test: &str, database: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Option<(chatvault_server::DatabaseUrl, PgSchema)>>,
{
    use futures::StreamExt as _;
    let start = env_u64("SIM_SEED_START", 0);
    let seeds = env_u64("SIM_SEEDS", DEFAULT_SEEDS);
    let jobs = env_u64("SIM_JOBS", DEFAULT_JOBS).max(1) as usize;
    let database = &database;
    let mut runs = futures::stream::iter(start..start + seeds)
        .map(|seed| async move {
            let (url, schema) = match database(seed).await {
                Some((url, schema)) => (Some(url), Some(schema)),
                None => (None, None),
            };
            let outcome = tokio::spawn(run_seed(seed, url)).await;
            if outcome.is_ok() {
                if let Some(schema) = schema {
                    schema.drop_all().await;
                }
            }
            (seed, outcome)
        })
        .buffer_unordered(jobs);
    let mut total = Stats::default();
    while let Some((seed, outcome)) = runs.next().await {
        match outcome {
            Ok(stats) => total.add(stats),
            Err(e) => panic!(
                "{test} seed {seed} failed ({e}); replay it with:\n  \
                 {steps}SIM_SEED_START={seed} SIM_SEEDS=1 cargo nextest run -p chatvault-sync \
                 --all-features -E 'test(/^sim::{test}$/)'",
                steps = match std::env::var("SIM_STEPS") {
                    Ok(steps) => format!("SIM_STEPS={steps} "),
                    Err(_) => String::new(),
                }
            ),
        }
    }
    tracing::info!(test, seeds, ?total, "simulation done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation() {
    run_seeds("simulation", |_| async { None }).await;
}

/// The simulation on a PostgreSQL server store: a fresh database on
/// `CHATVAULT_TEST_POSTGRES_URL`'s server (default 127.0.0.1:5432),
/// dropped afterwards, with a schema of its own per seed (so each seed's
/// server restarts and restores touch only its own epochs, and seeds could
/// run in parallel). Fails when PostgreSQL is unreachable, unless
/// `CHATVAULT_SKIP_POSTGRES=1` (as the server's own tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_postgres() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let db = &db;
    run_seeds("simulation_postgres", |seed| async move {
        let schema = pg_schema(db, &format!("sim_{seed}")).await;
        Some((
            chatvault_server::DatabaseUrl::Postgres(schema.url.clone()),
            schema,
        ))
    })
    .await;
}
