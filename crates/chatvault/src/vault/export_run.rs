//! Export: the whole vault as a version-1 export file (see
//! `docs/export-format.md`), decrypted to the model so it imports into any
//! vault, optionally sealed as a whole under its own passphrase. Streams:
//! it pages through conversations, messages and tombstones, so memory
//! holds one page and one id per conversation, however long the history.

use super::records::PAGE;
use super::{Progress, ProgressFn, ProgressPhase, Vault};
use crate::{Result, VaultError};
use chatvault_core::lifecycle::{
    ExportCounts, ExportWriter, ExportedConversation, ExportedMessage, ExportedTombstone,
};
use chatvault_core::{ConversationId, Timestamp};
use chatvault_crypto::{EncryptingWriter, KdfParams, KdfPolicy};
use chatvault_store::TombstoneQuery;
use futures::TryStreamExt;
use serde::Serialize;
use std::io::{self, Write};

/// Encrypt the export file as a whole (the chunked stream format of
/// `chatvault_crypto`: Argon2id from the passphrase, XChaCha20-Poly1305).
#[derive(Clone, Copy)]
pub struct ExportEncryption<'a> {
    /// The file's passphrase (not the vault's, though it may be the same).
    pub passphrase: &'a str,
    /// Key-derivation cost.
    pub kdf: KdfParams,
    /// Which costs are accepted (keep strict outside tests).
    pub kdf_policy: KdfPolicy,
}

impl<'a> ExportEncryption<'a> {
    /// Encryption under `passphrase` with the default (OWASP) key
    /// derivation.
    pub fn new(passphrase: &'a str) -> Self {
        Self {
            passphrase,
            kdf: KdfParams::default(),
            kdf_policy: KdfPolicy::default(),
        }
    }
}

impl std::fmt::Debug for ExportEncryption<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportEncryption")
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

/// How to export.
#[derive(Default)]
pub struct ExportOptions<'a> {
    /// Encrypt the file; plain JSON if `None`.
    pub encryption: Option<ExportEncryption<'a>>,
    /// Called as records are written.
    pub progress: Option<ProgressFn>,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    /// The `exportedAt` of the file.
    pub exported_at: Timestamp,
    /// Records written.
    pub counts: ExportCounts,
    /// Bytes written (after encryption, if any).
    pub bytes: u64,
    /// Whether the file is encrypted.
    pub encrypted: bool,
}

impl Vault {
    /// Writes the whole vault to `out` as an export file and returns `out`
    /// (flushed) with what was written. On error the output holds an
    /// incomplete file that import refuses: write to a temporary file and
    /// rename it into place on success.
    ///
    /// The writes to `out` are blocking calls: give it a file or a buffer,
    /// not a socket the async runtime also serves.
    pub async fn export<W: Write + Send>(
        &self,
        out: W,
        options: ExportOptions<'_>,
    ) -> Result<(W, ExportReport)> {
        let usage = self.store.usage().await?;
        let total = usage.conversations + usage.messages + usage.tombstones;
        let exported_at = self.time.now();
        let counted = Counting {
            inner: out,
            bytes: 0,
        };
        let sink = match &options.encryption {
            None => Sink::Plain(counted),
            Some(e) => Sink::Sealed(EncryptingWriter::new_with_policy(
                counted,
                e.passphrase,
                e.kdf,
                e.kdf_policy,
            )?),
        };
        let mut writer =
            ExportWriter::new(io::BufWriter::with_capacity(64 * 1024, sink), exported_at)
                .map_err(VaultError::ExportFile)?;
        let progress = |w: &ExportWriter<_>| {
            if let Some(p) = &options.progress {
                p(Progress {
                    phase: ProgressPhase::Exporting,
                    done: w.counts().total(),
                    total: Some(total),
                });
            }
        };

        // Conversations, remembering their ids (16 bytes each) so the
        // messages come from exactly the conversations written.
        let mut ids: Vec<ConversationId> = Vec::with_capacity(usage.conversations as usize);
        let mut pages = std::pin::pin!(self.conversation_row_pages());
        while let Some(rows) = pages.try_next().await? {
            for row in rows {
                let (updated_at, activity_at) = (row.record.updated_at, row.activity_at);
                let c = self.decode_conversation(row)?;
                ids.push(c.id);
                writer
                    .conversation(&ExportedConversation {
                        id: c.id,
                        user_id: c.user_id,
                        title: c.title,
                        created_at: c.created_at,
                        updated_at,
                        activity_at: Some(activity_at),
                        version: c.version,
                        metadata: c.metadata,
                    })
                    .map_err(VaultError::ExportFile)?;
            }
            progress(&writer);
        }

        for id in ids {
            let mut pages = std::pin::pin!(self.message_record_pages(id));
            while let Some(records) = pages.try_next().await? {
                for record in records {
                    let m = self.decode_message(record)?;
                    writer
                        .message(&ExportedMessage {
                            id: m.id,
                            conversation_id: m.conversation_id,
                            role: m.role,
                            content: m.content,
                            created_at: m.created_at,
                            updated_at: m.updated_at,
                            version: m.version,
                            metadata: m.metadata,
                        })
                        .map_err(VaultError::ExportFile)?;
                }
                progress(&writer);
            }
        }

        let mut after = None;
        loop {
            let page = self
                .store
                .tombstones(&TombstoneQuery { after, limit: PAGE })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.kind, last.id));
            for t in page {
                writer
                    .tombstone(&ExportedTombstone {
                        kind: t.kind,
                        id: t.id,
                        conversation_id: t.conversation_id,
                        version: t.version,
                        deleted_at: t.deleted_at,
                    })
                    .map_err(VaultError::ExportFile)?;
            }
            progress(&writer);
        }

        let (buffered, counts) = writer.finish().map_err(VaultError::ExportFile)?;
        let sink = buffered
            .into_inner()
            .map_err(|e| VaultError::ExportFile(e.into_error()))?;
        let mut counted = match sink {
            Sink::Plain(c) => c,
            Sink::Sealed(w) => w.finish().map_err(VaultError::ExportFile)?,
        };
        counted.flush().map_err(VaultError::ExportFile)?;
        let report = ExportReport {
            exported_at,
            counts,
            bytes: counted.bytes,
            encrypted: options.encryption.is_some(),
        };
        tracing::info!(
            records = counts.total(),
            bytes = report.bytes,
            encrypted = report.encrypted,
            "exported the vault"
        );
        Ok((counted.inner, report))
    }
}

/// Counts what reaches the output.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Plain or encrypted output.
enum Sink<W: Write> {
    Plain(Counting<W>),
    Sealed(EncryptingWriter<Counting<W>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Sealed(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}
