//! The export file format, version 1 (specified in `docs/export-format.md`):
//! its records, a writer and a reader that both stream, so neither side
//! ever holds more than one record, however long the history.
//!
//! ```text
//! {"format":"chatvault-export","version":1,"exportedAt":1700000000000,
//! "conversations":[
//! {"id":"…","userId":"local","title":"…","createdAt":…,"updatedAt":…,"activityAt":…,"version":"…"},
//! …
//! ],
//! "messages":[
//! {"id":"…","conversationId":"…","role":"user","content":"…","createdAt":…,"updatedAt":…,"version":"…"},
//! …
//! ],
//! "tombstones":[
//! {"kind":"conversation","id":"…","version":"…","deletedAt":…},
//! …
//! ],
//! "counts":{"conversations":…,"messages":…,"tombstones":…},
//! "checksum":"sha256:…"}
//! ```
//!
//! Records are the decrypted model (titles, contents, metadata, ids, times,
//! versions), so a file imports into any vault, encrypted or not. The
//! checksum (see [`Checksum`]) covers every record's exact text, so a
//! damaged or edited file is refused rather than half-trusted; the counts
//! make a file cut at a record boundary fail too.
//!
//! The reader identifies a file by its **first member**, which must be
//! `"format"`, and refuses a newer `version` before reading any record.
//! Everything here is pure: the only I/O goes through the `Read`/`Write`
//! values callers hand in.

use crate::{
    ConversationId, CoreError, EntityKind, Hlc, MessageId, Metadata, RecordId, Role, Timestamp,
    UserId,
};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};

/// The `format` member of every chatvault export.
pub const EXPORT_FORMAT: &str = "chatvault-export";
/// The newest export version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// A conversation as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportedConversation {
    /// Its id.
    pub id: ConversationId,
    /// Its owner.
    pub user_id: UserId,
    /// Its title.
    pub title: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When the conversation record itself was last edited (synced).
    pub updated_at: Timestamp,
    /// Its last activity (the later of its own edits and its messages'),
    /// which lists and retention order by; restored on import. Optional:
    /// derived from the records when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_at: Option<Timestamp>,
    /// Last-writer-wins version.
    pub version: Hlc,
    /// Application metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// A message as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportedMessage {
    /// Its id.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who spoke.
    pub role: Role,
    /// The text.
    pub content: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last edited.
    pub updated_at: Timestamp,
    /// Last-writer-wins version.
    pub version: Hlc,
    /// Application metadata.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// A deletion as exported (so it reaches the importing vault too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportedTombstone {
    /// Kind of the deleted record.
    pub kind: EntityKind,
    /// Its id.
    pub id: RecordId,
    /// For a message, its conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// Version of the deletion.
    pub version: Hlc,
    /// When it was deleted.
    pub deleted_at: Timestamp,
}

/// One record of an export.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportItem {
    /// A conversation.
    Conversation(ExportedConversation),
    /// A message.
    Message(ExportedMessage),
    /// A deletion.
    Tombstone(ExportedTombstone),
}

impl ExportItem {
    /// The kind and id of the record.
    pub fn key(&self) -> (EntityKind, RecordId) {
        match self {
            ExportItem::Conversation(c) => (EntityKind::Conversation, c.id.into()),
            ExportItem::Message(m) => (EntityKind::Message, m.id.into()),
            ExportItem::Tombstone(t) => (t.kind, t.id),
        }
    }

    /// The record's version.
    pub fn version(&self) -> Hlc {
        match self {
            ExportItem::Conversation(c) => c.version,
            ExportItem::Message(m) => m.version,
            ExportItem::Tombstone(t) => t.version,
        }
    }
}

/// How many records of each kind a file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportCounts {
    /// Conversations.
    pub conversations: u64,
    /// Messages.
    pub messages: u64,
    /// Tombstones.
    pub tombstones: u64,
}

impl ExportCounts {
    /// All records.
    pub fn total(&self) -> u64 {
        self.conversations + self.messages + self.tombstones
    }
}

/// The three record arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Conversations,
    Messages,
    Tombstones,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Conversations => "conversations",
            Section::Messages => "messages",
            Section::Tombstones => "tombstones",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Section::Conversations => b'c',
            Section::Messages => b'm',
            Section::Tombstones => b't',
        }
    }
}

/// The file checksum: SHA-256 over, for every record in file order, its
/// section tag (`c`, `m` or `t`), the record's exact JSON text and a
/// newline; then `exportedAt:` and that member's decimal value and a
/// newline. Written as `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Default)]
pub struct Checksum(Sha256);

impl Checksum {
    fn record(&mut self, section: Section, json: &[u8]) {
        self.0.update([section.tag()]);
        self.0.update(json);
        self.0.update(b"\n");
    }

    fn finish(mut self, exported_at: Timestamp) -> String {
        self.0
            .update(format!("exportedAt:{}\n", exported_at.as_millis()).as_bytes());
        let digest = self.0.finalize();
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Writes an export file record by record: conversations, then messages,
/// then tombstones (calling them out of that order is an error), then
/// [`finish`](Self::finish). Memory stays at one record.
pub struct ExportWriter<W: Write> {
    out: W,
    section: Section,
    empty_section: bool,
    counts: ExportCounts,
    checksum: Checksum,
    exported_at: Timestamp,
    scratch: Vec<u8>,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header and opens the conversations.
    pub fn new(mut out: W, exported_at: Timestamp) -> io::Result<Self> {
        write!(
            out,
            "{{\"format\":\"{EXPORT_FORMAT}\",\"version\":{EXPORT_VERSION},\"exportedAt\":{},\n\"conversations\":[",
            exported_at.as_millis()
        )?;
        Ok(Self {
            out,
            section: Section::Conversations,
            empty_section: true,
            counts: ExportCounts::default(),
            checksum: Checksum::default(),
            exported_at,
            scratch: Vec::with_capacity(4096),
        })
    }

    fn enter(&mut self, section: Section) -> io::Result<()> {
        if section < self.section {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "export records must be written in order: {} after {}",
                    section.name(),
                    self.section.name()
                ),
            ));
        }
        while self.section < section {
            let next = match self.section {
                Section::Conversations => Section::Messages,
                _ => Section::Tombstones,
            };
            let close = if self.empty_section { "]" } else { "\n]" };
            write!(self.out, "{close},\n\"{}\":[", next.name())?;
            self.section = next;
            self.empty_section = true;
        }
        Ok(())
    }

    fn record<T: Serialize>(&mut self, section: Section, value: &T) -> io::Result<()> {
        self.enter(section)?;
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, value)?;
        self.out
            .write_all(if self.empty_section { b"\n" } else { b",\n" })?;
        self.out.write_all(&self.scratch)?;
        self.checksum.record(section, &self.scratch);
        self.empty_section = false;
        Ok(())
    }

    /// Writes a conversation.
    pub fn conversation(&mut self, c: &ExportedConversation) -> io::Result<()> {
        self.record(Section::Conversations, c)?;
        self.counts.conversations += 1;
        Ok(())
    }

    /// Writes a message.
    pub fn message(&mut self, m: &ExportedMessage) -> io::Result<()> {
        self.record(Section::Messages, m)?;
        self.counts.messages += 1;
        Ok(())
    }

    /// Writes a tombstone.
    pub fn tombstone(&mut self, t: &ExportedTombstone) -> io::Result<()> {
        self.record(Section::Tombstones, t)?;
        self.counts.tombstones += 1;
        Ok(())
    }

    /// What has been written so far.
    pub fn counts(&self) -> ExportCounts {
        self.counts
    }

    /// Closes the arrays, writes the counts and the checksum, flushes and
    /// returns the output.
    pub fn finish(mut self) -> io::Result<(W, ExportCounts)> {
        self.enter(Section::Tombstones)?;
        let close = if self.empty_section { "]" } else { "\n]" };
        let counts = serde_json::to_string(&self.counts)?;
        let checksum = self.checksum.finish(self.exported_at);
        write!(
            self.out,
            "{close},\n\"counts\":{counts},\n\"checksum\":\"{checksum}\"}}\n"
        )?;
        self.out.flush()?;
        Ok((self.out, self.counts))
    }
}

/// What reading a whole file established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The file's version.
    pub version: u32,
    /// When it was written.
    pub exported_at: Timestamp,
    /// The records it holds (checked against its declared counts).
    pub counts: ExportCounts,
    /// Its checksum (verified).
    pub checksum: String,
}

/// Why reading an export stopped.
#[derive(Debug)]
pub enum ExportReadError<E> {
    /// The file is not a valid export (its reason says where and why).
    Invalid(CoreError),
    /// The input failed (a file error, or a decrypting reader's
    /// authentication failure: recover it from the `io::Error`).
    Io(io::Error),
    /// The callback stopped the reading with this error.
    Stopped(E),
}

impl<E> From<CoreError> for ExportReadError<E> {
    fn from(e: CoreError) -> Self {
        ExportReadError::Invalid(e)
    }
}

/// Reads an export from `input`, handing each record to `on_item` in file
/// order, and checks the whole file: its format and version, every record's
/// shape (ids, roles, versions), the declared counts and the checksum. The
/// arrays are never held in memory. A record handed to `on_item` is only
/// known to be authentic once the whole read returned `Ok`: validate
/// everything first, apply on a second read.
pub fn read_export<R, E, F>(input: R, on_item: F) -> Result<ExportSummary, ExportReadError<E>>
where
    R: Read,
    F: FnMut(ExportItem) -> Result<(), E>,
{
    let mut state = ReadState {
        on_item,
        failure: None,
        position: Position::Start,
        checksum: Checksum::default(),
        counts: ExportCounts::default(),
    };
    let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counting = Counting {
        inner: input,
        read: std::rc::Rc::clone(&read),
    };
    let mut de =
        serde_json::Deserializer::from_reader(io::BufReader::with_capacity(64 * 1024, counting));
    let result = TopLevel(&mut state)
        .deserialize(&mut de)
        .and_then(|header| de.end().map(|()| header));
    let header = match result {
        Ok(header) => header,
        Err(e) => {
            return Err(state
                .failure
                .take()
                .unwrap_or_else(|| classify(e, state.position, read.get())))
        }
    };
    finish(header, state.counts, state.checksum)
}

/// Where the reader is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Start,
    Header,
    Record(Section, u64),
    Trailer,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Start => f.write_str("the start of the file"),
            Position::Header => f.write_str("the file header"),
            Position::Record(s, i) => write!(f, "{}[{i}]", s.name()),
            Position::Trailer => f.write_str("the end of the file"),
        }
    }
}

/// Counts the bytes read, to tell an empty input from a cut one.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

fn classify<E>(e: serde_json::Error, at: Position, bytes_read: u64) -> ExportReadError<E> {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => ExportReadError::Io(e.into()),
        Category::Eof if bytes_read == 0 => {
            ExportReadError::Invalid(CoreError::NotAnExport("the file is empty".into()))
        }
        Category::Eof => {
            ExportReadError::Invalid(CoreError::ExportTruncated { at: at.to_string() })
        }
        Category::Syntax | Category::Data if at == Position::Start => {
            ExportReadError::Invalid(CoreError::NotAnExport(format!("it is not JSON ({e})")))
        }
        Category::Syntax | Category::Data => ExportReadError::Invalid(CoreError::ExportInvalid {
            at: at.to_string(),
            reason: e.to_string(),
        }),
    }
}

struct ReadState<F, E> {
    on_item: F,
    failure: Option<ExportReadError<E>>,
    position: Position,
    checksum: Checksum,
    counts: ExportCounts,
}

impl<F, E> ReadState<F, E> {
    /// Records a typed failure and returns the serde error that unwinds the
    /// parser (the typed one is what the caller sees).
    fn fail<D: de::Error>(&mut self, failure: ExportReadError<E>) -> D {
        self.failure = Some(failure);
        D::custom("stopped")
    }

    fn invalid<D: de::Error>(&mut self, reason: impl Into<String>) -> D {
        let at = self.position.to_string();
        self.fail(ExportReadError::Invalid(CoreError::ExportInvalid {
            at,
            reason: reason.into(),
        }))
    }
}

/// The top-level members other than the records.
#[derive(Default)]
struct Header {
    version: Option<u32>,
    exported_at: Option<Timestamp>,
    counts: Option<ExportCounts>,
    checksum: Option<String>,
    sections: Vec<Section>,
}

struct TopLevel<'a, F, E>(&'a mut ReadState<F, E>);

impl<'de, F, E> DeserializeSeed<'de> for TopLevel<'_, F, E>
where
    F: FnMut(ExportItem) -> Result<(), E>,
{
    type Value = Header;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Header, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F, E> Visitor<'de> for TopLevel<'_, F, E>
where
    F: FnMut(ExportItem) -> Result<(), E>,
{
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chatvault export object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let state = self.0;
        let mut header = Header::default();
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            state.position = Position::Header;
            if first && key != "format" {
                return Err(
                    state.fail(ExportReadError::Invalid(CoreError::NotAnExport(format!(
                        "its first member is {key:?}, not \"format\""
                    )))),
                );
            }
            if !first && header.version.is_none() && key != "version" {
                return Err(
                    state.invalid(format!("\"version\" must follow \"format\", found {key:?}"))
                );
            }
            first = false;
            match key.as_str() {
                "format" => {
                    let format: String = map.next_value()?;
                    if format != EXPORT_FORMAT {
                        return Err(state.fail(ExportReadError::Invalid(CoreError::NotAnExport(
                            format!("its format is {format:?}, not {EXPORT_FORMAT:?}"),
                        ))));
                    }
                }
                "version" => {
                    let version: u32 = map.next_value()?;
                    if version == 0 || version > EXPORT_VERSION {
                        return Err(state.fail(ExportReadError::Invalid(
                            CoreError::UnsupportedExportVersion {
                                found: version,
                                newest: EXPORT_VERSION,
                            },
                        )));
                    }
                    header.version = Some(version);
                }
                "exportedAt" => once(state, &mut header.exported_at, map.next_value()?, &key)?,
                "counts" => {
                    state.position = Position::Trailer;
                    once(state, &mut header.counts, map.next_value()?, &key)?;
                }
                "checksum" => {
                    state.position = Position::Trailer;
                    once(state, &mut header.checksum, map.next_value()?, &key)?;
                }
                "conversations" | "messages" | "tombstones" => {
                    let section = match key.as_str() {
                        "conversations" => Section::Conversations,
                        "messages" => Section::Messages,
                        _ => Section::Tombstones,
                    };
                    if header.sections.contains(&section) {
                        return Err(state.invalid(format!("{key:?} appears twice")));
                    }
                    header.sections.push(section);
                    map.next_value_seed(Records {
                        state: &mut *state,
                        section,
                    })?;
                }
                other => return Err(state.invalid(format!("unknown member {other:?}"))),
            }
        }
        state.position = Position::Trailer;
        Ok(header)
    }
}

fn once<T, F, E, D: de::Error>(
    state: &mut ReadState<F, E>,
    slot: &mut Option<T>,
    value: T,
    key: &str,
) -> Result<(), D> {
    if slot.is_some() {
        return Err(state.invalid(format!("{key:?} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

struct Records<'a, F, E> {
    state: &'a mut ReadState<F, E>,
    section: Section,
}

impl<'de, F, E> DeserializeSeed<'de> for Records<'_, F, E>
where
    F: FnMut(ExportItem) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for Records<'_, F, E>
where
    F: FnMut(ExportItem) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", self.section.name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.state;
        let mut index = 0u64;
        loop {
            state.position = Position::Record(self.section, index);
            let Some(raw) = seq.next_element::<Box<RawValue>>()? else {
                return Ok(());
            };
            let text = raw.get();
            state.checksum.record(self.section, text.as_bytes());
            let parsed = match self.section {
                Section::Conversations => serde_json::from_str(text).map(ExportItem::Conversation),
                Section::Messages => serde_json::from_str(text).map(ExportItem::Message),
                Section::Tombstones => serde_json::from_str(text).map(ExportItem::Tombstone),
            };
            let item = match parsed {
                Ok(item) => item,
                Err(e) => return Err(state.invalid(strip_position(&e))),
            };
            drop(raw);
            match self.section {
                Section::Conversations => state.counts.conversations += 1,
                Section::Messages => state.counts.messages += 1,
                Section::Tombstones => state.counts.tombstones += 1,
            }
            if let Err(e) = (state.on_item)(item) {
                return Err(state.fail(ExportReadError::Stopped(e)));
            }
            index += 1;
        }
    }
}

/// A record's parse error without serde_json's "at line 1 column N" (the
/// position within one record's text says nothing useful).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn finish<E>(
    header: Header,
    counts: ExportCounts,
    checksum: Checksum,
) -> Result<ExportSummary, ExportReadError<E>> {
    let missing = |what: &str| {
        ExportReadError::Invalid(CoreError::ExportInvalid {
            at: Position::Trailer.to_string(),
            reason: format!("the {what:?} member is missing"),
        })
    };
    let version = header.version.ok_or_else(|| missing("version"))?;
    let exported_at = header.exported_at.ok_or_else(|| missing("exportedAt"))?;
    for section in [
        Section::Conversations,
        Section::Messages,
        Section::Tombstones,
    ] {
        if !header.sections.contains(&section) {
            return Err(missing(section.name()));
        }
    }
    let declared = header.counts.ok_or_else(|| missing("counts"))?;
    let declared_checksum = header.checksum.ok_or_else(|| missing("checksum"))?;
    if declared != counts {
        return Err(ExportReadError::Invalid(CoreError::ExportInvalid {
            at: Position::Trailer.to_string(),
            reason: format!(
                "it declares {} conversations, {} messages and {} tombstones but holds {}, {} and {}",
                declared.conversations,
                declared.messages,
                declared.tombstones,
                counts.conversations,
                counts.messages,
                counts.tombstones
            ),
        }));
    }
    let actual = checksum.finish(exported_at);
    if actual != declared_checksum {
        return Err(ExportReadError::Invalid(CoreError::ExportChecksum));
    }
    Ok(ExportSummary {
        version,
        exported_at,
        counts,
        checksum: actual,
    })
}

/// The whole-file checks an import makes before applying anything, fed one
/// record at a time: every id appears once (a record is either live or
/// deleted, never both), and every message's conversation is known. Never
/// keeps content, and its memory is bounded whatever the file's length:
/// the first [`EXACT_IDS`](Self::EXACT_IDS) record ids are kept exactly
/// (a repeat is reported at once), after which a fixed-size filter (8 MiB)
/// stands in for them. A repeat after that point is reported at once when
/// it is certain, and otherwise listed in
/// [`ValidatedExport::possible_duplicates`] — ids the filter could not
/// clear, a few per million records — which the caller must check on its
/// next reading of the file (each must occur once). Only conversation ids
/// (16 bytes each) are kept in full, for the parent check.
#[derive(Debug)]
pub struct ExportValidator {
    seen: SeenIds,
    /// Ids the filter has seen before, or appears to have.
    suspects: HashSet<(EntityKind, RecordId)>,
    exact_ids: usize,
    conversations: HashSet<ConversationId>,
    parents: HashSet<ConversationId>,
    counts: ExportCounts,
    newest: Option<Hlc>,
}

impl Default for ExportValidator {
    fn default() -> Self {
        Self::with_exact_ids(Self::EXACT_IDS)
    }
}

/// What a validator remembers of the ids it checked.
#[derive(Debug)]
enum SeenIds {
    /// Every id (up to [`ExportValidator::EXACT_IDS`] of them).
    Exact(HashSet<(EntityKind, RecordId)>),
    /// All of them, in a filter of fixed size.
    Filtered(IdFilter),
}

/// A Bloom filter over record ids: fixed memory, no false negatives. Sized
/// so a million ids leave about one false positive, five million ten
/// thousand — never more memory, only more ids for the caller to recheck.
struct IdFilter {
    /// `1 << IdFilter::BITS_LOG2` bits (zeroed pages are only touched as
    /// bits are set).
    words: Vec<u64>,
}

impl fmt::Debug for IdFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdFilter")
            .field("bits", &(1u64 << Self::BITS_LOG2))
            .finish_non_exhaustive()
    }
}

impl IdFilter {
    const BITS_LOG2: u32 = 26;
    const HASHES: u64 = 6;

    fn new() -> Self {
        IdFilter {
            words: vec![0; 1 << (Self::BITS_LOG2 - 6)],
        }
    }

    /// Adds `key`; whether it was (or appeared to be) there already.
    fn insert(&mut self, key: &(EntityKind, RecordId)) -> bool {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: deterministic, and well mixed even for
        // time-ordered (UUIDv7) ids.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let a = hasher.finish();
        let b = (a.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15) | 1;
        let mut present = true;
        for i in 0..Self::HASHES {
            let bit = a.wrapping_add(i.wrapping_mul(b)) >> (64 - Self::BITS_LOG2);
            let (word, mask) = ((bit >> 6) as usize, 1u64 << (bit & 63));
            if self.words[word] & mask == 0 {
                present = false;
                self.words[word] |= mask;
            }
        }
        present
    }
}

/// What [`ExportValidator`] established about a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedExport {
    /// Records of each kind.
    pub counts: ExportCounts,
    /// Conversations that messages of the file belong to but that the file
    /// does not hold (live or deleted): the importing vault must have them.
    pub missing_parents: HashSet<ConversationId>,
    /// The newest version in the file.
    pub newest_version: Option<Hlc>,
    /// Records that may occur more than once (see [`ExportValidator`]):
    /// the file is valid only if each occurs once. Empty for files of up
    /// to [`ExportValidator::EXACT_IDS`] records.
    pub possible_duplicates: HashSet<(EntityKind, RecordId)>,
}

impl ExportValidator {
    /// Record ids a validator keeps exactly before its filter takes over
    /// (about 1–2 MiB of them).
    pub const EXACT_IDS: usize = 1 << 16;

    /// A validator that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator keeping `exact_ids` ids exactly (instead of
    /// [`EXACT_IDS`](Self::EXACT_IDS)): lets tests reach the filtered path
    /// with small files.
    pub fn with_exact_ids(exact_ids: usize) -> Self {
        Self {
            seen: SeenIds::Exact(HashSet::new()),
            suspects: HashSet::new(),
            exact_ids,
            conversations: HashSet::new(),
            parents: HashSet::new(),
            counts: ExportCounts::default(),
            newest: None,
        }
    }

    /// Remembers `key`; an error if it was certainly seen before.
    fn remember(&mut self, key: (EntityKind, RecordId)) -> Result<(), CoreError> {
        let duplicate = || CoreError::ExportDuplicate {
            kind: key.0,
            id: key.1,
        };
        match &mut self.seen {
            SeenIds::Exact(ids) => {
                if !ids.insert(key) {
                    return Err(duplicate());
                }
                if ids.len() > self.exact_ids {
                    let mut filter = IdFilter::new();
                    for id in ids.drain() {
                        filter.insert(&id);
                    }
                    self.seen = SeenIds::Filtered(filter);
                }
            }
            // A second hit on a suspect is certain: its first hit put it
            // in the filter for sure.
            SeenIds::Filtered(filter) => {
                if filter.insert(&key) && !self.suspects.insert(key) {
                    return Err(duplicate());
                }
            }
        }
        Ok(())
    }

    /// Checks one record; `at` names it in an error (e.g. `messages[12]`).
    pub fn check(&mut self, item: &ExportItem) -> Result<(), CoreError> {
        self.remember(item.key())?;
        self.newest = self.newest.max(Some(item.version()));
        match item {
            ExportItem::Conversation(c) => {
                self.counts.conversations += 1;
                self.conversations.insert(c.id);
            }
            ExportItem::Message(m) => {
                self.counts.messages += 1;
                self.parents.insert(m.conversation_id);
            }
            ExportItem::Tombstone(t) => {
                self.counts.tombstones += 1;
                match (t.kind, t.conversation_id) {
                    (EntityKind::Conversation, _) => {
                        self.conversations.insert(t.id.conversation());
                    }
                    (EntityKind::Message, None) => {
                        return Err(CoreError::ExportInvalid {
                            at: format!("tombstone of message {}", t.id),
                            reason: "a message tombstone must name its conversation".into(),
                        })
                    }
                    (EntityKind::Message, Some(_)) => {}
                }
            }
        }
        Ok(())
    }

    /// The verdict on the whole file.
    pub fn finish(self) -> ValidatedExport {
        let missing_parents = self
            .parents
            .difference(&self.conversations)
            .copied()
            .collect();
        ValidatedExport {
            counts: self.counts,
            missing_parents,
            newest_version: self.newest,
            possible_duplicates: self.suspects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;

    fn hlc(wall: u64) -> Hlc {
        Hlc::new(wall, 0, DeviceId(7)).unwrap()
    }

    fn conversation(n: u8) -> ExportedConversation {
        let mut metadata = Metadata::new();
        if n % 2 == 0 {
            metadata.insert("pinned".into(), true.into());
        }
        ExportedConversation {
            id: ConversationId::from_bytes([n; 16]),
            user_id: UserId::local(),
            title: format!("conversation {n} ✈️ \"quoted\"\n"),
            created_at: Timestamp(1000),
            updated_at: Timestamp(2000),
            activity_at: Some(Timestamp(3000)),
            version: hlc(2000),
            metadata,
        }
    }

    fn message(n: u8, c: u8) -> ExportedMessage {
        ExportedMessage {
            id: MessageId::from_bytes([100 + n; 16]),
            conversation_id: ConversationId::from_bytes([c; 16]),
            role: Role::ALL[n as usize % 4],
            content: format!("message {n} 🙂"),
            created_at: Timestamp(1000 + i64::from(n)),
            updated_at: Timestamp(1000 + i64::from(n)),
            version: hlc(1000 + u64::from(n)),
            metadata: Metadata::new(),
        }
    }

    fn tombstone(n: u8) -> ExportedTombstone {
        ExportedTombstone {
            kind: EntityKind::Conversation,
            id: RecordId::from_bytes([200 + n; 16]),
            conversation_id: None,
            version: hlc(5000),
            deleted_at: Timestamp(5000),
        }
    }

    fn sample() -> (Vec<u8>, Vec<ExportItem>) {
        let mut items = vec![
            ExportItem::Conversation(conversation(1)),
            ExportItem::Conversation(conversation(2)),
        ];
        items.extend((0..5).map(|n| ExportItem::Message(message(n, 1 + n % 2))));
        items.push(ExportItem::Tombstone(tombstone(0)));
        let mut w = ExportWriter::new(Vec::new(), Timestamp(1_700_000_000_000)).unwrap();
        for item in &items {
            match item {
                ExportItem::Conversation(c) => w.conversation(c).unwrap(),
                ExportItem::Message(m) => w.message(m).unwrap(),
                ExportItem::Tombstone(t) => w.tombstone(t).unwrap(),
            }
        }
        let (bytes, counts) = w.finish().unwrap();
        assert_eq!(counts.total(), items.len() as u64);
        (bytes, items)
    }

    fn read_all(bytes: &[u8]) -> Result<(ExportSummary, Vec<ExportItem>), CoreError> {
        let mut items = Vec::new();
        read_export(bytes, |item| {
            items.push(item);
            Ok::<(), ()>(())
        })
        .map(|s| (s, items))
        .map_err(|e| match e {
            ExportReadError::Invalid(e) => e,
            other => panic!("unexpected {other:?}"),
        })
    }

    #[test]
    fn written_files_read_back_record_for_record() {
        let (bytes, items) = sample();
        let (summary, read) = read_all(&bytes).unwrap();
        assert_eq!(read, items);
        assert_eq!(summary.version, EXPORT_VERSION);
        assert_eq!(summary.exported_at, Timestamp(1_700_000_000_000));
        assert_eq!(
            summary.counts,
            ExportCounts {
                conversations: 2,
                messages: 5,
                tombstones: 1
            }
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"format":"chatvault-export","version":1,"#));
        assert_eq!(
            text.lines().count(),
            items.len() + 9,
            "one record per line:\n{text}"
        );
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("plain JSON");
    }

    #[test]
    fn an_empty_export_is_valid() {
        let (bytes, _) = ExportWriter::new(Vec::new(), Timestamp(5))
            .unwrap()
            .finish()
            .unwrap();
        let (summary, items) = read_all(&bytes).unwrap();
        assert!(items.is_empty());
        assert_eq!(summary.counts.total(), 0);
    }

    #[test]
    fn records_out_of_order_are_refused_by_the_writer() {
        let mut w = ExportWriter::new(Vec::new(), Timestamp(5)).unwrap();
        w.message(&message(1, 1)).unwrap();
        assert!(w.conversation(&conversation(1)).is_err());
    }

    #[test]
    fn every_cut_is_refused() {
        let (bytes, _) = sample();
        for cut in 1..bytes.len() - 1 {
            let err = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CoreError::ExportTruncated { .. } | CoreError::ExportInvalid { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        // Cut at a record boundary with the end re-attached: the counts and
        // checksum catch what the JSON cannot.
        let text = String::from_utf8(bytes).unwrap();
        let dropped = text.replacen(
            &format!(",\n{}", serde_json::to_string(&message(4, 1)).unwrap()),
            "",
            1,
        );
        assert!(read_all(dropped.as_bytes()).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let (bytes, _) = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    read_all(&flipped).is_err(),
                    "flipping bit {bit} of byte {i} ({:?}) went unnoticed",
                    bytes[i] as char
                );
            }
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let (bytes, _) = sample();
        let text = String::from_utf8(bytes).unwrap();
        let msg = |t: &str| read_all(t.as_bytes()).unwrap_err().to_string();

        assert_eq!(
            msg(&text.replacen("\"version\":1", "\"version\":7", 1)),
            "export file is version 7, newest supported is 1; upgrade chatvault to import it"
        );
        let bad_role = msg(&text.replacen("\"role\":\"assistant\"", "\"role\":\"robot\"", 1));
        assert!(
            bad_role.starts_with("export file is invalid at messages[1]: invalid role \"robot\""),
            "{bad_role}"
        );
        let edited = msg(&text.replacen("message 1 ", "message 9 ", 1));
        assert!(edited.contains("checksum"), "{edited}");
        assert!(msg("").contains("empty"));
        assert!(msg("{\"version\":1}").contains("first member"));
        assert!(msg("\u{1}garbage").contains("not JSON"));
        let cut = msg(&text[..text.len() / 2]);
        assert!(cut.starts_with("export file is truncated"), "{cut}");
        let extra = msg(&text.replacen("\"counts\"", "\"extra\":1,\"counts\"", 1));
        assert!(extra.contains("unknown member \"extra\""), "{extra}");
    }

    fn nth_message(n: u32) -> ExportItem {
        let mut m = message(1, 1);
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        m.id = MessageId::from_bytes(id);
        ExportItem::Message(m)
    }

    #[test]
    fn past_its_exact_ids_the_validator_still_never_lets_a_repeat_pass() {
        let mut v = ExportValidator::with_exact_ids(100);
        for n in 0..1000 {
            v.check(&nth_message(n)).unwrap();
        }
        // A repeat of an id kept exactly before the filter took over, and
        // of one only in the filter: suspected, for the caller to check...
        v.check(&nth_message(5)).unwrap();
        v.check(&nth_message(700)).unwrap();
        // ...and refused outright the next time.
        assert!(matches!(
            v.check(&nth_message(700)),
            Err(CoreError::ExportDuplicate { .. })
        ));
        let done = v.finish();
        assert!(done.possible_duplicates.contains(&nth_message(5).key()));
        assert!(done.possible_duplicates.contains(&nth_message(700).key()));
    }

    #[test]
    fn the_filter_suspects_few_unique_ids() {
        let mut v = ExportValidator::with_exact_ids(1000);
        for n in 0..200_000 {
            v.check(&nth_message(n)).unwrap();
        }
        let done = v.finish();
        assert_eq!(done.counts.messages, 200_000);
        assert!(
            done.possible_duplicates.len() < 10,
            "{} suspects",
            done.possible_duplicates.len()
        );
    }

    #[test]
    fn the_validator_finds_duplicates_and_unknown_parents() {
        let mut v = ExportValidator::new();
        v.check(&ExportItem::Conversation(conversation(1))).unwrap();
        v.check(&ExportItem::Message(message(1, 1))).unwrap();
        v.check(&ExportItem::Message(message(2, 9))).unwrap();
        let err = v.check(&ExportItem::Message(message(1, 1))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "export file holds message {} more than once",
                MessageId::from_bytes([101; 16])
            )
        );
        let mut deleted = tombstone(0);
        deleted.id = ConversationId::from_bytes([1; 16]).into();
        assert!(matches!(
            v.check(&ExportItem::Tombstone(deleted)),
            Err(CoreError::ExportDuplicate { .. })
        ));
        let done = v.finish();
        assert_eq!(
            done.missing_parents,
            HashSet::from([ConversationId::from_bytes([9; 16])])
        );
        assert_eq!(done.counts.messages, 2);
    }

    #[test]
    fn a_stopping_callback_stops_the_read() {
        let (bytes, _) = sample();
        let mut seen = 0;
        let err = read_export(&bytes[..], |_| {
            seen += 1;
            if seen == 3 {
                Err("enough")
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, ExportReadError::Stopped("enough")));
        assert_eq!(seen, 3);
    }
}
