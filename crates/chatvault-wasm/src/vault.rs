//! `openVault` and the `WasmVault` handle: the app API of
//! [`Vault`] on an IndexedDB store, or (feature `opfs`, `backend:
//! "opfs-sqlite"`) on the SQLite store on OPFS.

use crate::boundary::{id, invalid, json, parse, promise, with, Failure};
use chatvault::{
    ConversationCursor, ConversationId, ConversationUpdate, Hlc, ListConversations, ListMessages,
    Message, MessageCursor, MessageId, MessageUpdate, Metadata, NewConversation, NewMessage,
    RetentionMode, RetentionPolicy, Role, Store, Timestamp, Vault,
};
use chatvault_indexeddb::{Durability, IndexedDbOptions, IndexedDbStore};
use js_sys::Promise;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wasm_bindgen::prelude::*;

/// Largest page a listing hands out in one call.
const MAX_PAGE: usize = 1000;

/// What `openVault` takes besides the name.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptions {
    /// Encrypt (or unlock) with this passphrase; plaintext without one.
    passphrase: Option<String>,
    /// `"strict"` (default: reported once on disk) or `"relaxed"`.
    durability: Option<String>,
    /// `"indexeddb"` (default) or `"opfs-sqlite"`.
    backend: Option<String>,
}

/// Opens (creating on first use) the vault stored in the IndexedDB
/// database `name`, or with `backend: "opfs-sqlite"` in the SQLite
/// database `name` on OPFS. `options` is JSON: `{passphrase?, durability?,
/// backend?}`. Resolves to a [`WasmVault`]; rejects with
/// `wrong_passphrase`, `locked` (encrypted, no passphrase),
/// `not_encrypted`, `newer_schema`, `unsupported` (OPFS outside a
/// dedicated worker, or a build without SQLite), `busy` (another tab owns
/// the OPFS databases)...
#[wasm_bindgen(js_name = openVault)]
pub fn open_vault(name: String, options: String) -> Promise {
    promise(async move {
        let options: OpenOptions = parse("vault options", &options)?;
        let durability = options.durability.as_deref();
        let store: Arc<dyn Store> = match options.backend.as_deref() {
            None | Some("indexeddb") => open_store(&name, durability).await?,
            Some("opfs-sqlite") => open_sqlite_store(&name, durability).await?,
            Some(other) => {
                return Err(invalid(format!(
                    "backend {other:?}: expected \"indexeddb\" or \"opfs-sqlite\""
                )))
            }
        };
        let mut builder = Vault::builder().store(store);
        if let Some(passphrase) = &options.passphrase {
            builder = builder.passphrase(passphrase);
        }
        let vault = builder.open().await?;
        tracing::debug!(name, encrypted = vault.is_encrypted(), "opened a vault");
        // `Arc`, as the sync client takes it; one thread: a plain count.
        #[allow(clippy::arc_with_non_send_sync)]
        let vault = Arc::new(vault);
        Ok(WasmVault::new(vault, name).into())
    })
}

/// The IndexedDB store of the vault `name` (`durability`: `"strict"`, the
/// default, or `"relaxed"`).
pub(crate) async fn open_store(
    name: &str,
    durability: Option<&str>,
) -> Result<Arc<IndexedDbStore>, Failure> {
    let durability = match durability {
        None | Some("strict") => Durability::Strict,
        Some("relaxed") => Durability::Relaxed,
        Some(other) => {
            return Err(invalid(format!(
                "durability {other:?}: expected \"strict\" or \"relaxed\""
            )))
        }
    };
    let store = IndexedDbStore::open(
        name,
        IndexedDbOptions {
            durability,
            ..IndexedDbOptions::default()
        },
    )
    .await?;
    // The store API takes `Arc`s on every target; in a browser the store
    // holds JS handles and the one thread makes it a plain count.
    #[allow(clippy::arc_with_non_send_sync)]
    Ok(Arc::new(store))
}

/// The SQLite store of the vault `name` on OPFS (`durability` as for
/// IndexedDB: `"strict"` commits with `synchronous=FULL`, `"relaxed"` with
/// `NORMAL`). Works only in a dedicated worker.
#[cfg(feature = "opfs")]
pub(crate) async fn open_sqlite_store(
    name: &str,
    durability: Option<&str>,
) -> Result<Arc<dyn Store>, Failure> {
    use chatvault_sqlite::{Durability, SqliteOptions, SqliteStore};
    let durability = match durability {
        None | Some("strict") => Durability::Full,
        Some("relaxed") => Durability::Normal,
        Some(other) => {
            return Err(invalid(format!(
                "durability {other:?}: expected \"strict\" or \"relaxed\""
            )))
        }
    };
    let options = SqliteOptions {
        durability,
        ..SqliteOptions::default()
    };
    Ok(Arc::new(SqliteStore::open(name, options).await?))
}

/// Without the `opfs` feature the binding has no SQLite (and stays
/// smaller): say so, rather than falling back behind the caller's back.
#[cfg(not(feature = "opfs"))]
pub(crate) async fn open_sqlite_store(_: &str, _: Option<&str>) -> Result<Arc<dyn Store>, Failure> {
    Err(crate::boundary::failure(
        "unsupported",
        "this build of chatvault has no SQLite backend (chatvault-wasm's `opfs` feature); \
         use backend \"indexeddb\"",
    )
    .into())
}

/// An open vault. Every method returns a promise of JSON text (parsed by
/// the package) or `undefined`; methods may run concurrently (the vault
/// orders its writes itself).
#[wasm_bindgen]
pub struct WasmVault {
    vault: Arc<Vault>,
    name: String,
}

impl WasmVault {
    pub(crate) fn new(vault: Arc<Vault>, name: String) -> WasmVault {
        WasmVault { vault, name }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewConversationIn {
    #[serde(default)]
    id: Option<ConversationId>,
    title: String,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConversationPatch {
    title: Option<String>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConversationsQuery {
    limit: Option<usize>,
    after: Option<ConversationCursor>,
    active_from: Option<Timestamp>,
    active_to: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewMessageIn {
    #[serde(default)]
    id: Option<MessageId>,
    role: Role,
    content: String,
    #[serde(default)]
    metadata: Metadata,
}

/// What the vault chose for an added message (`addMessagesBrief`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Chosen {
    id: MessageId,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: Hlc,
}

impl From<&Message> for Chosen {
    fn from(m: &Message) -> Chosen {
        Chosen {
            id: m.id,
            created_at: m.created_at,
            updated_at: m.updated_at,
            version: m.version,
        }
    }
}

impl From<NewMessageIn> for NewMessage {
    fn from(input: NewMessageIn) -> NewMessage {
        NewMessage {
            id: input.id,
            metadata: input.metadata,
            ..NewMessage::new(input.role, input.content)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessagePatch {
    content: Option<String>,
    metadata: Option<Metadata>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessagesQuery {
    limit: Option<usize>,
    before: Option<MessageCursor>,
}

fn page_size(limit: Option<usize>) -> Result<usize, crate::boundary::Failure> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(invalid(format!("limit {n}: expected 1 to {MAX_PAGE}"))),
    }
}

#[wasm_bindgen]
impl WasmVault {
    /// The IndexedDB database the vault lives in.
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Whether content is encrypted at rest.
    #[wasm_bindgen(getter, js_name = isEncrypted)]
    pub fn is_encrypted(&self) -> bool {
        self.vault.is_encrypted()
    }

    /// Creates a conversation from `{id?, title, metadata?}` (with an `id`,
    /// a repeated create returns the first one's conversation).
    #[wasm_bindgen(js_name = createConversation)]
    pub fn create_conversation(&self, input: String) -> Promise {
        with(&self.vault, |vault| async move {
            let input: NewConversationIn = parse("conversation", &input)?;
            let created = vault
                .create_conversation(NewConversation {
                    id: input.id,
                    title: input.title,
                    metadata: input.metadata,
                })
                .await?;
            json(&created)
        })
    }

    /// The conversation `id`.
    pub fn conversation(&self, id_text: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: ConversationId = id("conversation id", &id_text)?;
            json(&vault.conversation(id).await?)
        })
    }

    /// A page of conversations, most recent activity first:
    /// `{limit?, after?, activeFrom?, activeTo?}`.
    pub fn conversations(&self, query: String) -> Promise {
        with(&self.vault, |vault| async move {
            let query: ConversationsQuery = parse("conversation query", &query)?;
            let page = vault
                .conversations(ListConversations {
                    active_from: query.active_from,
                    active_to: query.active_to,
                    after: query.after,
                    limit: page_size(query.limit)?,
                })
                .await?;
            json(&page)
        })
    }

    /// Changes a conversation's title and/or metadata: `{title?, metadata?}`.
    #[wasm_bindgen(js_name = updateConversation)]
    pub fn update_conversation(&self, id_text: String, patch: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: ConversationId = id("conversation id", &id_text)?;
            let patch: ConversationPatch = parse("conversation change", &patch)?;
            let updated = vault
                .update_conversation(
                    id,
                    ConversationUpdate {
                        title: patch.title,
                        metadata: patch.metadata,
                    },
                )
                .await?;
            json(&updated)
        })
    }

    /// Deletes a conversation and its messages (synced as a deletion).
    #[wasm_bindgen(js_name = deleteConversation)]
    pub fn delete_conversation(&self, id_text: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: ConversationId = id("conversation id", &id_text)?;
            vault.delete_conversation(id).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Adds `{id?, role, content, metadata?}` to a conversation (with an
    /// `id`, a repeated add returns the first one's message).
    #[wasm_bindgen(js_name = addMessage)]
    pub fn add_message(&self, conversation: String, input: String) -> Promise {
        with(&self.vault, |vault| async move {
            let conversation: ConversationId = id("conversation id", &conversation)?;
            let input: NewMessageIn = parse("message", &input)?;
            json(&vault.add_message(conversation, input.into()).await?)
        })
    }

    /// Adds many messages `[{id?, role, content, metadata?}, ...]` to one
    /// conversation in one write.
    #[wasm_bindgen(js_name = addMessages)]
    pub fn add_messages(&self, conversation: String, inputs: String) -> Promise {
        with(&self.vault, |vault| async move {
            let conversation: ConversationId = id("conversation id", &conversation)?;
            let inputs: Vec<NewMessageIn> = parse("messages", &inputs)?;
            let messages = inputs.into_iter().map(NewMessage::from).collect();
            json(&vault.add_messages(conversation, messages).await?)
        })
    }

    /// [`addMessages`](Self::add_messages) answering only what the vault
    /// chose for each message, in order: `[{id, createdAt, updatedAt,
    /// version}]`. For a caller that holds the content already (the page
    /// of a worker vault, a tab served by another): a bulk add's echo of
    /// every message is then neither encoded here nor copied there.
    #[wasm_bindgen(js_name = addMessagesBrief)]
    pub fn add_messages_brief(&self, conversation: String, inputs: String) -> Promise {
        with(&self.vault, |vault| async move {
            let conversation: ConversationId = id("conversation id", &conversation)?;
            let inputs: Vec<NewMessageIn> = parse("messages", &inputs)?;
            let messages = inputs.into_iter().map(NewMessage::from).collect();
            let added = vault.add_messages(conversation, messages).await?;
            json(&added.iter().map(Chosen::from).collect::<Vec<_>>())
        })
    }

    /// The message `id`.
    pub fn message(&self, id_text: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: MessageId = id("message id", &id_text)?;
            json(&vault.message(id).await?)
        })
    }

    /// A page of a conversation's messages, newest first: `{limit?, before?}`.
    pub fn messages(&self, conversation: String, query: String) -> Promise {
        with(&self.vault, |vault| async move {
            let conversation: ConversationId = id("conversation id", &conversation)?;
            let query: MessagesQuery = parse("message query", &query)?;
            let page = vault
                .messages(
                    conversation,
                    ListMessages {
                        before: query.before,
                        limit: page_size(query.limit)?,
                    },
                )
                .await?;
            json(&page)
        })
    }

    /// Edits a message: `{content?, metadata?}`.
    #[wasm_bindgen(js_name = updateMessage)]
    pub fn update_message(&self, id_text: String, patch: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: MessageId = id("message id", &id_text)?;
            let patch: MessagePatch = parse("message change", &patch)?;
            let updated = vault
                .update_message(
                    id,
                    MessageUpdate {
                        content: patch.content,
                        metadata: patch.metadata,
                    },
                )
                .await?;
            json(&updated)
        })
    }

    /// Deletes a message (synced as a deletion).
    #[wasm_bindgen(js_name = deleteMessage)]
    pub fn delete_message(&self, id_text: String) -> Promise {
        with(&self.vault, |vault| async move {
            let id: MessageId = id("message id", &id_text)?;
            vault.delete_message(id).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Resolves if opening this vault with `passphrase` (`undefined` for a
    /// plaintext vault) would succeed; otherwise rejects as that open
    /// would (`wrong_passphrase`, `locked`, `not_encrypted`). What a tab
    /// serving the vault to other tabs asks before it serves them.
    #[wasm_bindgen(js_name = checkPassphrase)]
    pub fn check_passphrase(&self, passphrase: Option<String>) -> Promise {
        with(&self.vault, |vault| async move {
            vault.check_passphrase(passphrase.as_deref()).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Counts and sizes: conversations, messages, tombstones, pending
    /// changes, stored bytes, per conversation.
    pub fn stats(&self) -> Promise {
        with(
            &self.vault,
            |vault| async move { json(&vault.stats().await?) },
        )
    }

    /// The stored retention policy, or `null`.
    #[wasm_bindgen(js_name = retentionPolicy)]
    pub fn retention_policy(&self) -> Promise {
        with(&self.vault, |vault| async move {
            json(&vault.retention_policy().await?)
        })
    }

    /// Stores a retention policy (`{maxAgeDays?, maxConversations?,
    /// maxBytes?}`), or removes it with `null`. Storing does not delete.
    #[wasm_bindgen(js_name = setRetentionPolicy)]
    pub fn set_retention_policy(&self, policy: String) -> Promise {
        with(&self.vault, |vault| async move {
            let policy: Option<RetentionPolicy> = parse("retention policy", &policy)?;
            vault.set_retention_policy(policy.as_ref()).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Runs `policy`: with `dryRun` only reports what it would delete.
    #[wasm_bindgen(js_name = runRetention)]
    pub fn run_retention(&self, policy: String, dry_run: bool) -> Promise {
        with(&self.vault, |vault| async move {
            let policy: RetentionPolicy = parse("retention policy", &policy)?;
            let mode = if dry_run {
                RetentionMode::DryRun
            } else {
                RetentionMode::Apply
            };
            json(&vault.run_retention(&policy, mode).await?)
        })
    }

    /// Changes the passphrase (re-wraps the key; rewrites no record).
    #[wasm_bindgen(js_name = changePassphrase)]
    pub fn change_passphrase(&self, old: String, new: String) -> Promise {
        with(&self.vault, |vault| async move {
            vault.change_passphrase(&old, &new).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Starts a new data key for what is written from now on.
    #[wasm_bindgen(js_name = rotateDataKey)]
    pub fn rotate_data_key(&self, passphrase: String) -> Promise {
        with(&self.vault, |vault| async move {
            vault.rotate_data_key(&passphrase).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The whole vault as an export file, encrypted under `passphrase` if
    /// given: resolves to `[blob, reportJson]`, the `Blob` assembled from
    /// parts made as the export runs. `progress` is called with
    /// `{phase, done, total}` as records are written.
    #[wasm_bindgen(js_name = exportBlob)]
    pub fn export_blob(
        &self,
        passphrase: Option<String>,
        progress: Option<js_sys::Function>,
    ) -> Promise {
        crate::lifecycle::export(self.vault.clone(), passphrase, progress)
    }

    /// Imports an export file (`passphrase` for an encrypted one): resolves
    /// to the report's JSON. A damaged or truncated file changes nothing.
    #[wasm_bindgen(js_name = importBytes)]
    pub fn import_bytes(
        &self,
        bytes: Vec<u8>,
        passphrase: Option<String>,
        progress: Option<js_sys::Function>,
    ) -> Promise {
        crate::lifecycle::import(self.vault.clone(), bytes, passphrase, progress)
    }

    /// Signs this vault in to a sync server account: `{server, username,
    /// passphrase?, mode?, intervalSeconds?, realtime?}` (see
    /// `sync::SyncIn`). Resolves to a `WasmSync`, or `null` when `mode` is
    /// `"resume"` and no session was saved. The loop is not started.
    pub fn sync(&self, input: String) -> Promise {
        with(&self.vault, |vault| async move {
            Ok(match crate::sync::connect(vault, &input).await? {
                Some(sync) => sync.into(),
                None => JsValue::NULL,
            })
        })
    }

    /// Imports a `Blob` or `File` read in 1 MiB slices (`FileReaderSync`:
    /// in a worker only; elsewhere it rejects and `importBytes` is the
    /// way): resolves to the report's JSON.
    #[wasm_bindgen(js_name = importBlob)]
    pub fn import_blob(
        &self,
        blob: web_sys::Blob,
        passphrase: Option<String>,
        progress: Option<js_sys::Function>,
    ) -> Promise {
        crate::lifecycle::import_blob(self.vault.clone(), blob, passphrase, progress)
    }

    /// A key-value namespace of `area` (`"local"`, `"session"` or
    /// `"indexeddb"`) sealed by this vault's keys.
    #[wasm_bindgen(js_name = sealedKv)]
    pub fn sealed_kv(&self, area: String, namespace: String) -> Promise {
        with(&self.vault, |vault| async move {
            let kv = crate::kv::open(&area, &namespace).await?;
            let sealed = vault.sealed_kv(kv)?;
            Ok(crate::kv::WasmKv::new(Box::new(sealed)).into())
        })
    }
}
