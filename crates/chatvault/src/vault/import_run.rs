//! Import: validate the whole file, then apply it in one transaction.
//!
//! **Pass 1** reads the whole file (decrypting it if it is an encrypted
//! export) and checks everything core's export rules check — format and
//! version, every record's shape, ids unique, counts, checksum — plus that
//! every message's conversation is in the file or the vault. Nothing has
//! been written yet, so a truncated, damaged, wrong-version,
//! wrong-passphrase, duplicate-id or invalid-role file changes nothing.
//!
//! **Pass 2** reads the file again on its own thread, re-encodes every
//! record with this vault's codec (so a plaintext export imports into an
//! encrypted vault and back) and streams them, a few hundred per batch
//! through a bounded channel, into **one** `Store::write_all`
//! transaction. Each record is a `MergeAndEnqueue`: the store keeps it
//! only if it wins by core's last-writer-wins rule (newer version), and
//! queues the winners for sync. Should the file change between the
//! passes (its checksum differs), the transaction is rolled back.
//!
//! Memory holds one batch, the file's conversation ids and a bounded set
//! for proving record ids unique (core's `ExportValidator`: the first 64k
//! ids exactly, then a fixed 8 MiB filter) — never the content, and
//! nothing that grows with the number of messages. The few ids the filter
//! could not clear are counted again in pass 2, where a repeat fails the
//! import and rolls the transaction back. Files from
//! seed-style TypeScript apps (`chatvault_core::lifecycle::parse_seed`),
//! which are localStorage-sized, are read in memory instead.

use super::{Progress, ProgressFn, ProgressPhase};
use crate::codec::{Codec, ConversationBody, MessageBody};
use crate::{Result, Vault, VaultError};
use chatvault_core::lifecycle::{
    looks_like_seed, parse_seed, read_export, ExportCounts, ExportItem, ExportReadError,
    ExportValidator, ValidatedExport, EXPORT_FORMAT, SEED_MAX_BYTES,
};
use chatvault_core::{
    ConversationId, ConversationRecord, CoreError, EntityKind, Hlc, Incoming, MessageRecord, OpId,
    RecordId, Timestamp, Tombstone, UserId, MAX_CLOCK_DRIFT_MS,
};
use chatvault_crypto::{CryptoError, DecryptingReader, KdfPolicy};
use chatvault_store::{StoreError, WriteBatch, WriteOp};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
#[cfg(not(target_family = "wasm"))]
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Operations per batch handed to the store.
const BATCH_OPS: usize = 512;
/// Batches in flight between the reading thread and the store.
#[cfg(not(target_family = "wasm"))]
const BATCHES_IN_FLIGHT: usize = 4;
/// Rejections listed in a report (all are counted).
const MAX_LISTED_REJECTIONS: usize = 100;

/// A reader an [`ImportSource`] opens: `Send` natively, where the import
/// reads on its own threads; any reader in a browser (one thread), so a
/// source may read a `Blob` through JS handles.
#[cfg(not(target_family = "wasm"))]
pub type ImportReader = Box<dyn Read + Send>;
/// A reader an [`ImportSource`] opens: `Send` natively, where the import
/// reads on its own threads; any reader in a browser (one thread), so a
/// source may read a `Blob` through JS handles.
#[cfg(target_family = "wasm")]
pub type ImportReader = Box<dyn Read>;

/// Where an import reads from. Opened once per pass (the file is read
/// twice: validated, then applied; in a browser, pass 2 in rounds).
/// `Send + Sync` natively.
pub trait ImportSource: chatvault_store::MaybeSendSync + 'static {
    /// A fresh reader from the start.
    fn open(&self) -> io::Result<ImportReader>;
    /// The size in bytes, if known (for progress).
    fn size(&self) -> Option<u64> {
        None
    }
}

impl ImportSource for PathBuf {
    fn open(&self) -> io::Result<ImportReader> {
        Ok(Box::new(std::fs::File::open(self)?))
    }
    fn size(&self) -> Option<u64> {
        std::fs::metadata(self).ok().map(|m| m.len())
    }
}

impl ImportSource for Vec<u8> {
    fn open(&self) -> io::Result<ImportReader> {
        Ok(Box::new(io::Cursor::new(self.clone())))
    }
    fn size(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

/// How to import.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// The passphrase of an encrypted export (asked for only if the file
    /// is encrypted; [`VaultError::ExportLocked`] without it).
    pub passphrase: Option<Zeroizing<String>>,
    /// Which key-derivation costs an encrypted file may ask for (keep the
    /// strict default outside tests).
    pub kdf_policy: KdfPolicy,
    /// Called as the file is read (units: bytes), from the import's own
    /// threads.
    pub progress: Option<ProgressFn>,
}

impl ImportOptions {
    /// Options with the passphrase of an encrypted export.
    pub fn with_passphrase(passphrase: &str) -> Self {
        Self {
            passphrase: Some(Zeroizing::new(passphrase.to_owned())),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// A record the import refused (the rest was imported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRejection {
    /// Kind of the record.
    pub kind: EntityKind,
    /// Its id.
    pub id: RecordId,
    /// Why.
    pub reason: String,
}

/// What an import did. `imported + skipped + rejected` is the number of
/// records in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// `chatvault-export`, or `app-export` for a seed-style app's file.
    pub format: String,
    /// The file's format version.
    pub version: u32,
    /// Whether the file was encrypted.
    pub encrypted: bool,
    /// Records in the file.
    pub records: ExportCounts,
    /// Records written (new, or newer than the vault's version).
    pub imported: u64,
    /// Records the vault already had in the same or a newer version.
    pub skipped: u64,
    /// Records refused.
    pub rejected: u64,
    /// Why, for the first hundred refused.
    pub rejections: Vec<ImportRejection>,
}

/// What pass 1 established.
struct Checked {
    format: Format,
    encrypted: bool,
    validated: ValidatedExport,
}

enum Format {
    /// A chatvault export; pass 2 reads it again and expects this checksum.
    Native { version: u32, checksum: String },
    /// An app export, small, already converted.
    Seed(Vec<ExportItem>),
}

/// The rules pass 2 applies to each record, fixed by pass 1.
struct Rules {
    now: Timestamp,
    /// Conversations of the file's messages found neither in the file nor
    /// in the vault.
    orphans: HashSet<ConversationId>,
    /// Records pass 1 could not prove unique: each must occur once.
    suspects: HashSet<(EntityKind, RecordId)>,
}

impl Rules {
    fn verdict(&self, item: &ExportItem) -> Option<String> {
        if let Some(ahead) = skew(item.version(), self.now) {
            return Some(format!(
                "its version is stamped {ahead} ms ahead of this device's clock (limit {MAX_CLOCK_DRIFT_MS} ms)"
            ));
        }
        match item {
            ExportItem::Message(m) if self.orphans.contains(&m.conversation_id) => Some(format!(
                "its conversation {} is neither in the file nor in this vault",
                m.conversation_id
            )),
            _ => None,
        }
    }
}

fn skew(version: Hlc, now: Timestamp) -> Option<u64> {
    let now = now.as_millis().max(0) as u64;
    (version.wall_ms() > now.saturating_add(MAX_CLOCK_DRIFT_MS)).then(|| version.wall_ms() - now)
}

impl Vault {
    /// Imports an export file (or a seed-style app's export): validates the
    /// whole file first, then applies it newer-wins in one transaction and
    /// reports what was imported, skipped and rejected. A file that fails
    /// validation changes nothing.
    pub async fn import(
        &self,
        source: impl ImportSource,
        options: ImportOptions,
    ) -> Result<ImportReport> {
        let source: Arc<dyn ImportSource> = Arc::new(source);
        let now = self.time.now();

        #[cfg(test)]
        let exact_ids = tests::EXACT_IDS
            .with(std::cell::Cell::get)
            .unwrap_or(ExportValidator::EXACT_IDS);
        #[cfg(not(test))]
        let exact_ids = ExportValidator::EXACT_IDS;
        let mut checked = {
            let (source, options, user) = (source.clone(), options.clone(), self.user.clone());
            on_thread(move || validate(source.as_ref(), &options, &user, exact_ids)).await??
        };

        let mut orphans = HashSet::new();
        for &id in &checked.validated.missing_parents {
            let known = self.store.conversation(id).await?.is_some()
                || self
                    .store
                    .tombstone(EntityKind::Conversation, id.into())
                    .await?
                    .is_some();
            if !known {
                orphans.insert(id);
            }
        }
        let rules = Rules {
            now,
            orphans,
            suspects: std::mem::take(&mut checked.validated.possible_duplicates),
        };
        let (format, version) = match &checked.format {
            Format::Native { version, .. } => (EXPORT_FORMAT, *version),
            Format::Seed(_) => ("app-export", 1),
        };
        let records = checked.validated.counts;
        if let Some(newest) = checked.validated.newest_version {
            if skew(newest, now).is_none() {
                self.lock_clock().observe(newest, now)?;
            }
        }

        let shared = Arc::new(Mutex::new(Applied::default()));
        let mut pass2_options = options.clone();
        pass2_options.progress = monotonic(options.progress.clone());
        let pass2 = Pass2 {
            source,
            options: pass2_options,
            format: checked.format,
            codec: Arc::clone(&self.codec),
            rules: Arc::new(rules),
            shared: Arc::clone(&shared),
        };
        #[cfg(test)]
        let batches = match tests::ROUNDS.with(std::cell::Cell::get) {
            Some(round) => Batches::in_rounds(pass2, round),
            None => Batches::start(pass2)?,
        };
        #[cfg(not(test))]
        let batches = Batches::start(pass2)?;
        // An encrypted vault's import seals with this handle's key: the
        // write (one transaction) first requires that key to be current.
        let fence = self.codec.is_encrypted().then(|| {
            let mut batch = WriteBatch::new();
            batch.push(self.key_fence_op());
            Ok(batch)
        });
        let outcome = self
            .store
            .write_all(Box::new(fence.into_iter().chain(batches)))
            .await;
        let applied = std::mem::take(&mut *lock(&shared));
        let outcome = match (outcome, applied.error) {
            (Ok(outcome), _) => outcome,
            (Err(_), Some(cause)) => return Err(cause),
            (Err(e), None) => return Err(super::stamps::fenced(e)),
        };
        // No clock mark to persist: the imported versions were stamped
        // elsewhere, and the mark covers only stamps this device issues
        // (the clock observed the newest above, so the next local stamp
        // still beats them).

        let report = ImportReport {
            format: format.to_owned(),
            version,
            encrypted: checked.encrypted,
            records,
            imported: outcome.merged,
            skipped: outcome.superseded,
            rejected: applied.rejected,
            rejections: applied.rejections,
        };
        tracing::info!(
            imported = report.imported,
            skipped = report.skipped,
            rejected = report.rejected,
            "imported an export"
        );
        Ok(report)
    }
}

/// Pass 1: reads and checks the whole file.
fn validate(
    source: &dyn ImportSource,
    options: &ImportOptions,
    default_user: &UserId,
    exact_ids: usize,
) -> Result<Checked> {
    let (reader, encrypted) = open_input(source, options, ProgressPhase::Validating)?;
    let mut validator = ExportValidator::with_exact_ids(exact_ids);
    let read = read_export(reader, |item| {
        validator.check(&item).map_err(VaultError::Invalid)
    });
    match read {
        Ok(summary) => Ok(Checked {
            format: Format::Native {
                version: summary.version,
                checksum: summary.checksum,
            },
            encrypted,
            validated: validator.finish(),
        }),
        Err(ExportReadError::Invalid(CoreError::NotAnExport(why))) if !encrypted => {
            let bytes = read_capped(source)?;
            if !looks_like_seed(&bytes) {
                return Err(VaultError::Invalid(CoreError::NotAnExport(format!(
                    "{why}, and it is not an app export either (no \"conversations\" array)"
                ))));
            }
            let items = parse_seed(&bytes, default_user)?;
            let mut validator = ExportValidator::with_exact_ids(exact_ids);
            for item in &items {
                validator.check(item)?;
            }
            Ok(Checked {
                format: Format::Seed(items),
                encrypted,
                validated: validator.finish(),
            })
        }
        Err(e) => Err(read_error(e)),
    }
}

/// Pass 2: reads the file again and streams its records to the store.
fn apply(
    source: &dyn ImportSource,
    options: &ImportOptions,
    format: &Format,
    batcher: &mut Batcher,
) -> Result<(), Stop> {
    match format {
        Format::Seed(items) => items
            .iter()
            .cloned()
            .try_for_each(|item| batcher.push(item)),
        Format::Native { checksum, .. } => {
            let (reader, _) = open_input(source, options, ProgressPhase::Importing)?;
            let summary = read_export(reader, |item| batcher.push(item)).map_err(|e| match e {
                ExportReadError::Stopped(stop) => stop,
                ExportReadError::Invalid(e) => Stop::Failed(VaultError::Invalid(e)),
                ExportReadError::Io(e) => Stop::Failed(io_error(e)),
            })?;
            if summary.checksum != *checksum {
                return Err(Stop::Failed(VaultError::Invalid(
                    CoreError::ExportInvalid {
                        at: "the whole file".into(),
                        reason: "it changed while it was being imported; nothing was imported"
                            .into(),
                    },
                )));
            }
            Ok(())
        }
    }
}

/// Why pass 2 stopped early.
enum Stop {
    /// The store gave up (its error is the one to report).
    ReceiverGone,
    /// This round took all the records it may (see [`Batches`]); the next
    /// round goes on after them.
    RoundFull,
    /// The file or the encoding failed.
    Failed(VaultError),
}

impl From<VaultError> for Stop {
    fn from(e: VaultError) -> Self {
        Stop::Failed(e)
    }
}

/// What pass 2 reports back besides the store's outcome.
#[derive(Default)]
struct Applied {
    error: Option<VaultError>,
    /// The suspects (see [`Rules::suspects`]) met so far.
    suspects_met: HashSet<(EntityKind, RecordId)>,
    rejected: u64,
    rejections: Vec<ImportRejection>,
}

fn lock(shared: &Mutex<Applied>) -> std::sync::MutexGuard<'_, Applied> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns records into store operations and sends them in batches.
struct Batcher {
    tx: BatchSender,
    batch: WriteBatch,
    codec: Arc<Codec>,
    rules: Arc<Rules>,
    shared: Arc<Mutex<Applied>>,
    /// Records of the file passed over: earlier rounds took them.
    skip: u64,
    /// Records this round may still take.
    room: u64,
    /// Records of the file seen so far in this round.
    seen: u64,
}

impl Batcher {
    fn push(&mut self, item: ExportItem) -> Result<(), Stop> {
        let index = self.seen;
        self.seen += 1;
        if index < self.skip {
            return Ok(());
        }
        if self.room == 0 {
            return Err(Stop::RoundFull);
        }
        self.room -= 1;
        let key = item.key();
        if self.rules.suspects.contains(&key) && !lock(&self.shared).suspects_met.insert(key) {
            return Err(Stop::Failed(VaultError::Invalid(
                CoreError::ExportDuplicate {
                    kind: key.0,
                    id: key.1,
                },
            )));
        }
        if let Some(reason) = self.rules.verdict(&item) {
            let (kind, id) = item.key();
            let mut shared = lock(&self.shared);
            shared.rejected += 1;
            if shared.rejections.len() < MAX_LISTED_REJECTIONS {
                shared.rejections.push(ImportRejection { kind, id, reason });
            }
            return Ok(());
        }
        let incoming = match item {
            ExportItem::Conversation(c) => {
                let body = ConversationBody::new(c.title, c.metadata);
                let record = ConversationRecord {
                    id: c.id,
                    user_id: c.user_id,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                    version: c.version,
                    body: self.codec.encode(
                        EntityKind::Conversation,
                        c.id.into(),
                        None,
                        c.version,
                        &body,
                    )?,
                };
                self.batch.push(WriteOp::MergeAndEnqueue(
                    Incoming::Conversation(record),
                    OpId::new(),
                ));
                // After the record, so a new conversation exists to raise.
                if let Some(at) = c.activity_at {
                    self.batch.push(WriteOp::RaiseActivity(c.id, at));
                }
                return self.maybe_send();
            }
            ExportItem::Message(m) => {
                let body = MessageBody::new(m.role, m.content, m.metadata);
                Incoming::Message(MessageRecord {
                    id: m.id,
                    conversation_id: m.conversation_id,
                    created_at: m.created_at,
                    updated_at: m.updated_at,
                    version: m.version,
                    body: self.codec.encode(
                        EntityKind::Message,
                        m.id.into(),
                        Some(m.conversation_id),
                        m.version,
                        &body,
                    )?,
                })
            }
            ExportItem::Tombstone(t) => {
                if t.kind == EntityKind::Conversation {
                    // The deletion covers the conversation's older messages
                    // and stays in its deletion mark even when the tombstone
                    // loses to a recreation this vault holds (core's rule,
                    // as a pull applies it).
                    self.batch
                        .push(WriteOp::CoverMessages(t.id.conversation(), t.version));
                }
                Incoming::Tombstone(Tombstone {
                    kind: t.kind,
                    id: t.id,
                    conversation_id: t.conversation_id,
                    version: t.version,
                    deleted_at: t.deleted_at,
                })
            }
        };
        self.batch
            .push(WriteOp::MergeAndEnqueue(incoming, OpId::new()));
        self.maybe_send()
    }

    fn maybe_send(&mut self) -> Result<(), Stop> {
        if self.batch.ops.len() >= BATCH_OPS {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), Stop> {
        let batch = std::mem::take(&mut self.batch);
        self.tx
            .send(Message::Batch(batch))
            .map_err(|_| Stop::ReceiverGone)
    }

    fn flush(&mut self) -> Result<(), Stop> {
        if !self.batch.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// What the reading thread sends the store.
enum Message {
    Batch(WriteBatch),
    /// Every record was sent and the file checked out.
    Done,
    /// The import failed; roll back.
    Failed,
}

/// Everything pass 2 needs, to run it whole (natively, on its own thread)
/// or in rounds (in a browser).
struct Pass2 {
    source: Arc<dyn ImportSource>,
    options: ImportOptions,
    format: Format,
    codec: Arc<Codec>,
    rules: Arc<Rules>,
    shared: Arc<Mutex<Applied>>,
}

impl Pass2 {
    /// Reads the file from the start and sends records `skip ..
    /// skip + room` as batches, then `Done` if the file ended (checked
    /// whole) or `Failed` if it failed. Returns whether more rounds are
    /// needed.
    fn round(&self, tx: &BatchSender, skip: u64, room: u64) -> bool {
        let mut batcher = Batcher {
            tx: tx.clone(),
            batch: WriteBatch::new(),
            codec: Arc::clone(&self.codec),
            rules: Arc::clone(&self.rules),
            shared: Arc::clone(&self.shared),
            skip,
            room,
            seen: 0,
        };
        let applied = apply(
            self.source.as_ref(),
            &self.options,
            &self.format,
            &mut batcher,
        );
        let (applied, more) = match applied {
            Err(Stop::RoundFull) => (Ok(()), true),
            other => (other, false),
        };
        let message = match applied.and_then(|()| batcher.flush()) {
            Ok(()) if more => return true,
            Ok(()) => Message::Done,
            Err(Stop::ReceiverGone) => return false,
            Err(Stop::RoundFull) => unreachable!("only `push` fills a round"),
            Err(Stop::Failed(e)) => {
                lock(&self.shared).error = Some(e);
                Message::Failed
            }
        };
        let _ = tx.send(message);
        false
    }
}

/// Records one round of a browser import takes: what the round holds in
/// memory (its encoded batches) before the store writes them.
#[cfg(target_family = "wasm")]
const ROUND_RECORDS: u64 = 20_000;

/// The store's view of pass 2: batches until `Done`. Anything else (a
/// failure, or the producer vanishing) is an error, so the transaction
/// never commits a partial import.
///
/// Natively a thread reads the file once and sends batches through a
/// bounded channel. A browser has no threads and the reader cannot pause
/// inside the file, so the batches come in rounds: when the store has
/// written a round's batches, the next round reads the file again from the
/// start, passes over the records taken before and takes the next
/// [`ROUND_RECORDS`]. Memory holds one round, not the import; the file is
/// read about `records / ROUND_RECORDS / 2` extra times over; the store
/// still writes everything in its one transaction, and the last round
/// checks the whole file against pass 1.
struct Batches {
    rx: Receiver<Message>,
    finished: bool,
    /// In rounds: what runs the next round, where it sends, how many
    /// records the rounds took so far, and how many each takes.
    #[cfg(any(target_family = "wasm", test))]
    rounds: Option<(Pass2, BatchSender, u64, u64)>,
}

impl Batches {
    #[cfg(not(target_family = "wasm"))]
    fn start(pass2: Pass2) -> Result<Batches> {
        let (tx, rx) = sync_channel(BATCHES_IN_FLIGHT);
        std::thread::Builder::new()
            .name("chatvault-import".into())
            .spawn(move || {
                pass2.round(&tx, 0, u64::MAX);
            })
            .map_err(VaultError::ExportFile)?;
        Ok(Batches {
            rx,
            finished: false,
            #[cfg(test)]
            rounds: None,
        })
    }

    #[cfg(target_family = "wasm")]
    fn start(pass2: Pass2) -> Result<Batches> {
        Ok(Batches::in_rounds(pass2, ROUND_RECORDS))
    }

    /// Pass 2 in rounds of `round` records, run as the store asks for
    /// batches. Natively only for tests: the channel is bounded there, so
    /// a round must fit in [`BATCHES_IN_FLIGHT`] batches.
    #[cfg(any(target_family = "wasm", test))]
    fn in_rounds(pass2: Pass2, round: u64) -> Batches {
        #[cfg(target_family = "wasm")]
        let (tx, rx) = std::sync::mpsc::channel();
        #[cfg(not(target_family = "wasm"))]
        let (tx, rx) = sync_channel(BATCHES_IN_FLIGHT);
        Batches {
            rx,
            finished: false,
            rounds: Some((pass2, tx, 0, round)),
        }
    }

    /// The next message: from the round in progress (running the next
    /// round when it is all written), else from the reading thread.
    fn receive(&mut self) -> Option<Message> {
        #[cfg(any(target_family = "wasm", test))]
        if let Some((pass2, tx, taken, round)) = self.rounds.as_mut() {
            if let Ok(message) = self.rx.try_recv() {
                return Some(message);
            }
            let more = pass2.round(tx, *taken, *round);
            *taken += *round;
            if !more {
                self.rounds = None;
            }
            return self.rx.try_recv().ok();
        }
        #[cfg(target_family = "wasm")]
        {
            self.rx.try_recv().ok()
        }
        #[cfg(not(target_family = "wasm"))]
        {
            self.rx.recv().ok()
        }
    }
}

impl Iterator for Batches {
    type Item = chatvault_store::Result<WriteBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.receive() {
            Some(Message::Batch(batch)) => Some(Ok(batch)),
            Some(Message::Done) => {
                self.finished = true;
                None
            }
            Some(Message::Failed) | None => {
                self.finished = true;
                Some(Err(StoreError::InvalidRequest(
                    "the import stopped before its end; nothing was written".into(),
                )))
            }
        }
    }
}

/// `progress` that never goes back (pass 2 in rounds reads the file from
/// the start each time).
fn monotonic(progress: Option<ProgressFn>) -> Option<ProgressFn> {
    let inner = progress?;
    let best = std::sync::atomic::AtomicU64::new(0);
    Some(Arc::new(move |p: Progress| {
        if p.done >= best.load(std::sync::atomic::Ordering::Relaxed) {
            best.store(p.done, std::sync::atomic::Ordering::Relaxed);
            inner(p);
        }
    }))
}

/// Opens the source, decrypting it if it starts like an encrypted export,
/// and reports progress on the raw bytes read.
fn open_input(
    source: &dyn ImportSource,
    options: &ImportOptions,
    phase: ProgressPhase,
) -> Result<(ImportReader, bool)> {
    let raw = source.open().map_err(VaultError::ExportFile)?;
    let mut counted = ProgressReader {
        inner: raw,
        done: 0,
        reported: 0,
        total: source.size(),
        phase,
        progress: options.progress.clone(),
    };
    let mut head = [0u8; 7];
    let mut got = 0;
    while got < head.len() {
        match counted.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VaultError::ExportFile(e)),
        }
    }
    let head = head[..got].to_vec();
    let encrypted = chatvault_crypto::is_encrypted_stream(&head);
    let chained = io::Cursor::new(head).chain(counted);
    if !encrypted {
        return Ok((Box::new(chained), false));
    }
    let passphrase = options
        .passphrase
        .as_ref()
        .ok_or(VaultError::ExportLocked)?;
    let reader = DecryptingReader::new_with_policy(chained, passphrase, options.kdf_policy)
        .map_err(io_error)?;
    Ok((Box::new(reader), true))
}

/// Reads a whole (small) app export, refusing one over the size cap.
fn read_capped(source: &dyn ImportSource) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    source
        .open()
        .and_then(|r| r.take(SEED_MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(VaultError::ExportFile)?;
    if bytes.len() as u64 > SEED_MAX_BYTES {
        return Err(VaultError::Invalid(CoreError::NotAnExport(format!(
            "it does not start like a chatvault export, and at over {} MiB it is too large to be an app export",
            SEED_MAX_BYTES >> 20
        ))));
    }
    Ok(bytes)
}

fn read_error(e: ExportReadError<VaultError>) -> VaultError {
    match e {
        ExportReadError::Invalid(e) => VaultError::Invalid(e),
        ExportReadError::Io(e) => io_error(e),
        ExportReadError::Stopped(e) => e,
    }
}

/// An I/O error of the file or of its decryption, as the user should read
/// it.
fn io_error(e: io::Error) -> VaultError {
    match CryptoError::from_io(&e) {
        Some(CryptoError::WrongPassphrase) => VaultError::WrongPassphrase,
        Some(CryptoError::Truncated) => VaultError::Invalid(CoreError::ExportTruncated {
            at: "its encrypted data".into(),
        }),
        Some(CryptoError::Tampered) | Some(CryptoError::Corrupt { .. }) => {
            VaultError::Invalid(CoreError::ExportInvalid {
                at: "its encrypted data".into(),
                reason: "it is damaged or was tampered with (authentication failed)".into(),
            })
        }
        Some(other) => VaultError::Crypto(other.clone()),
        None => VaultError::ExportFile(e),
    }
}

/// Counts the bytes read and reports progress every 256 KiB.
struct ProgressReader {
    inner: ImportReader,
    done: u64,
    reported: u64,
    total: Option<u64>,
    phase: ProgressPhase,
    progress: Option<ProgressFn>,
}

impl Read for ProgressReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if let Some(p) = &self.progress {
            if n == 0 || self.done - self.reported >= 256 * 1024 {
                self.reported = self.done;
                p(Progress {
                    phase: self.phase,
                    done: self.done,
                    total: self.total,
                });
            }
        }
        Ok(n)
    }
}

/// Runs blocking work on a thread of its own and awaits it without
/// depending on any async runtime.
#[cfg(not(target_family = "wasm"))]
async fn on_thread<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("chatvault-import-check".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(VaultError::ExportFile)?;
    rx.await
        .map_err(|_| VaultError::ExportFile(io::Error::other("the import thread failed")))
}

/// In a browser there are no threads: the work runs right here, blocking
/// the thread it is called on (a Web Worker, once the vault runs in one).
#[cfg(target_family = "wasm")]
async fn on_thread<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T,
{
    Ok(f())
}

/// The sending end of pass 2's batches: bounded natively, where the
/// reading thread waits for the store, so memory holds a few batches.
#[cfg(not(target_family = "wasm"))]
type BatchSender = SyncSender<Message>;
/// The sending end of pass 2's batches. A browser has no threads: one
/// round's batches wait here while the store writes them (see
/// [`Batches`]).
#[cfg(target_family = "wasm")]
type BatchSender = std::sync::mpsc::Sender<Message>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ExportOptions, ListConversations, ListMessages, ManualClock, MemoryStore, NewConversation,
        NewMessage, Role, VaultOptions,
    };
    use chatvault_crypto::KdfParams;
    use std::cell::Cell;

    thread_local! {
        /// Records per round for imports on this thread (`None`: one pass,
        /// as natively).
        pub(super) static ROUNDS: Cell<Option<u64>> = const { Cell::new(None) };
        /// Record ids pass 1 keeps exactly for imports on this thread
        /// (`None`: the validator's default).
        pub(super) static EXACT_IDS: Cell<Option<usize>> = const { Cell::new(None) };
    }

    async fn vault() -> Vault {
        Vault::builder()
            .store(Arc::new(MemoryStore::new()))
            .options(VaultOptions {
                clock: Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))),
                kdf: KdfParams::insecure_fast_for_tests(),
                kdf_policy: KdfPolicy::insecure_allow_weak_for_tests(),
                ..VaultOptions::default()
            })
            .open()
            .await
            .unwrap()
    }

    /// Every conversation and its messages (title, contents), oldest first.
    async fn contents(v: &Vault) -> Vec<(String, Vec<String>)> {
        let page = v
            .conversations(ListConversations {
                limit: 1000,
                ..ListConversations::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        for c in page.items {
            let messages = v
                .messages(
                    c.id,
                    ListMessages {
                        limit: 1000,
                        ..ListMessages::default()
                    },
                )
                .await
                .unwrap();
            out.push((
                c.title,
                messages
                    .items
                    .into_iter()
                    .rev()
                    .map(|m| m.content)
                    .collect(),
            ));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_import_in_rounds_writes_exactly_what_one_pass_does() {
        let source = vault().await;
        for title in ["Lisbon", "Porto", "Faro"] {
            let c = source
                .create_conversation(NewConversation::titled(title))
                .await
                .unwrap();
            let added = source
                .add_messages(
                    c.id,
                    (0..12)
                        .map(|i| NewMessage::new(Role::User, format!("{title} {i}")))
                        .collect(),
                )
                .await
                .unwrap();
            source.delete_message(added[3].id).await.unwrap();
        }
        let (file, _) = source
            .export(
                Vec::new(),
                ExportOptions {
                    encryption: None,
                    progress: None,
                },
            )
            .await
            .unwrap();

        let whole = vault().await;
        let expected = whole
            .import(file.clone(), ImportOptions::default())
            .await
            .unwrap();

        // Rounds of 5 records (3 + 33 + 3 records: 8 rounds), with progress.
        let rounds = vault().await;
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let options = ImportOptions {
            progress: Some({
                let seen = seen.clone();
                Arc::new(move |p: Progress| {
                    if p.phase == ProgressPhase::Importing {
                        lock_vec(&seen).push(p.done);
                    }
                })
            }),
            ..ImportOptions::default()
        };
        ROUNDS.with(|r| r.set(Some(5)));
        let report = rounds.import(file.clone(), options).await;
        ROUNDS.with(|r| r.set(None));
        let report = report.unwrap();
        assert_eq!(report.imported, expected.imported);
        assert_eq!(report.records, expected.records);
        assert_eq!(contents(&rounds).await, contents(&whole).await);
        assert_eq!(contents(&rounds).await, contents(&source).await);
        let seen = lock_vec(&seen).clone();
        assert!(!seen.is_empty());
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "progress never goes back: {seen:?}"
        );

        // Importing again in rounds changes nothing (every record is there).
        ROUNDS.with(|r| r.set(Some(7)));
        let again = rounds.import(file, ImportOptions::default()).await;
        ROUNDS.with(|r| r.set(None));
        assert_eq!(again.unwrap().imported, 0);
        assert_eq!(contents(&rounds).await, contents(&whole).await);
    }

    /// An export file of one conversation with `n` messages, the message
    /// `repeat` (if any) twice: as an app or a hand edit could produce.
    fn file_of(n: u32, repeat: Option<u32>) -> Vec<u8> {
        use chatvault_core::lifecycle::{ExportWriter, ExportedConversation, ExportedMessage};
        use chatvault_core::{DeviceId, MessageId, Metadata};
        let at = Timestamp(1_600_000_000_000);
        let version = |n: u64| Hlc::new(1_600_000_000_000 + n, 0, DeviceId(1)).unwrap();
        let conversation = ConversationId::from_bytes([1; 16]);
        let mut w = ExportWriter::new(Vec::new(), at).unwrap();
        w.conversation(&ExportedConversation {
            id: conversation,
            user_id: UserId::local(),
            title: "long".into(),
            created_at: at,
            updated_at: at,
            activity_at: None,
            version: version(0),
            metadata: Metadata::new(),
        })
        .unwrap();
        let message = |i: u32| {
            let mut id = [2u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            ExportedMessage {
                id: MessageId::from_bytes(id),
                conversation_id: conversation,
                role: Role::User,
                content: format!("message {i}"),
                created_at: at,
                updated_at: at,
                version: version(u64::from(i) + 1),
                metadata: Metadata::new(),
            }
        };
        for i in 0..n {
            w.message(&message(i)).unwrap();
        }
        if let Some(i) = repeat {
            w.message(&message(i)).unwrap();
        }
        w.finish().unwrap().0
    }

    #[tokio::test]
    async fn a_repeat_past_the_exact_ids_fails_the_import_and_changes_nothing() {
        EXACT_IDS.with(|e| e.set(Some(10)));
        let clean = vault().await;
        let report = clean
            .import(file_of(60, None), ImportOptions::default())
            .await;
        let target = vault().await;
        let whole = target
            .import(file_of(60, Some(30)), ImportOptions::default())
            .await;
        ROUNDS.with(|r| r.set(Some(7)));
        let rounds = target
            .import(file_of(60, Some(45)), ImportOptions::default())
            .await;
        ROUNDS.with(|r| r.set(None));
        EXACT_IDS.with(|e| e.set(None));

        assert_eq!(report.unwrap().imported, 61, "a clean file imports");
        for outcome in [whole, rounds] {
            assert!(
                matches!(
                    outcome,
                    Err(VaultError::Invalid(CoreError::ExportDuplicate { .. }))
                ),
                "{outcome:?}"
            );
        }
        assert!(contents(&target).await.is_empty(), "nothing was written");
    }

    fn lock_vec(m: &Mutex<Vec<u64>>) -> std::sync::MutexGuard<'_, Vec<u64>> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}
