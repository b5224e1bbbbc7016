//! The store's reads, each in one readonly transaction: every answer comes
//! from one consistent snapshot, and a page is one `getAll(range, limit)`
//! on an index whose ascending order is the order the contract asks for.

use crate::codec::{self, above, hex_id, key, neg, tombstone_key};
use crate::idb::{self, store_error, wait, DomError};
use crate::schema::{
    CONVERSATIONS, MARKS, MESSAGES, META, OUTBOX_INDEX, RECORD_STORES, SEQ_KEY, TOMBSTONES, TOTALS,
};
use chatvault_core::{
    Change, ConversationId, EntityKind, Hlc, MessageId, MessageRecord, RecordId, Tombstone,
};
use chatvault_store::{
    check_limit, ConversationQuery, ConversationRow, ConversationUsage, DeletionMark, MessageQuery,
    MetaEntry, OutboxEntry, OutboxItem, ParkedEntry, Result, StoreError, StoredOutboxEntry,
    TombstoneQuery, Usage,
};
use js_sys::Array;
use std::collections::{HashMap, HashSet};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{IdbDatabase, IdbKeyRange, IdbObjectStore, IdbTransaction};

/// Turns a thrown JS value into a store error for a read.
fn js(e: JsValue) -> StoreError {
    store_error("reading", DomError::from_js(&e))
}

fn dom(e: DomError) -> StoreError {
    store_error("reading", e)
}

/// A readonly transaction over `stores`.
pub(crate) fn begin(db: &IdbDatabase, stores: &[&str]) -> Result<IdbTransaction> {
    idb::readonly(db, stores).map_err(dom)
}

pub(crate) fn object_store(tx: &IdbTransaction, name: &str) -> Result<IdbObjectStore> {
    tx.object_store(name).map_err(js)
}

/// `store.get(key)`: the stored value, `undefined` when there is none.
pub(crate) async fn get(store: &IdbObjectStore, key: &JsValue) -> Result<JsValue> {
    wait(&store.get(key).map_err(js)?).await.map_err(dom)
}

/// `getAll(range, limit)` on an index or a store (`None`: the store).
async fn get_all(
    store: &IdbObjectStore,
    index: Option<&str>,
    range: &JsValue,
    limit: usize,
) -> Result<Vec<JsValue>> {
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    let request = match index {
        Some(name) => store
            .index(name)
            .map_err(js)?
            .get_all_with_key_and_limit(range, limit),
        None => store.get_all_with_key_and_limit(range, limit),
    }
    .map_err(js)?;
    let all: Array = wait(&request).await.map_err(dom)?.unchecked_into();
    Ok(all.iter().collect())
}

/// A key range; `None` when it is empty (lower above upper), which
/// IndexedDB would refuse with a `DataError`.
fn range(
    lower: Option<(JsValue, bool)>,
    upper: Option<(JsValue, bool)>,
) -> Result<Option<JsValue>> {
    let made = match (lower, upper) {
        (Some((l, lo)), Some((u, uo))) => {
            if web_sys::IdbFactory::cmp(&idb::factory()?, &l, &u).map_err(js)? > 0 {
                return Ok(None);
            }
            IdbKeyRange::bound_with_lower_open_and_upper_open(&l, &u, lo, uo)
        }
        (Some((l, lo)), None) => IdbKeyRange::lower_bound_with_open(&l, lo),
        (None, Some((u, uo))) => IdbKeyRange::upper_bound_with_open(&u, uo),
        (None, None) => return Ok(Some(JsValue::UNDEFINED)),
    };
    match made {
        Ok(r) => Ok(Some(r.into())),
        // Equal bounds with an open end: nothing can match.
        Err(e) if DomError::from_js(&e).name == "DataError" => Ok(None),
        Err(e) => Err(js(e)),
    }
}

/// One page of `store`'s `index` in `range`, decoded, in its own readonly
/// transaction.
async fn page<T>(
    db: &IdbDatabase,
    store: &str,
    index: &str,
    range: &JsValue,
    limit: usize,
    decode: fn(&JsValue) -> Result<T>,
) -> Result<Vec<T>> {
    let tx = begin(db, &[store])?;
    let rows = get_all(&object_store(&tx, store)?, Some(index), range, limit).await?;
    rows.iter().map(decode).collect()
}

/// The value at `key` of `store`, in its own readonly transaction
/// (`undefined` when there is none).
async fn one(db: &IdbDatabase, store: &str, key: &JsValue) -> Result<JsValue> {
    let tx = begin(db, &[store])?;
    get(&object_store(&tx, store)?, key).await
}

pub(crate) async fn conversation(
    db: &IdbDatabase,
    id: ConversationId,
) -> Result<Option<ConversationRow>> {
    let v = one(db, CONVERSATIONS, &hex_id(id.as_bytes()).into()).await?;
    codec::found(&v, codec::conversation_row)
}

/// Newest activity first: the `activity` index holds `[-activity,
/// reversed id]`, so the contract's order is its ascending order.
pub(crate) async fn conversations(
    db: &IdbDatabase,
    q: &ConversationQuery,
) -> Result<Vec<ConversationRow>> {
    check_limit(q.limit)?;
    // `active_to` bounds from below, the cursor too (exclusive); the
    // later of the two in index order is the tighter one.
    let to = q.active_to.map(|t| (key(&[neg(t)]), false));
    let after = q.after.map(|c| {
        let k = key(&[neg(c.updated_at), codec::desc_id(c.id.as_bytes()).into()]);
        (k, true)
    });
    let lower = match (to, after) {
        (Some(to), Some(after)) => {
            let f = idb::factory()?;
            if f.cmp(&after.0, &to.0).map_err(js)? >= 0 {
                Some(after)
            } else {
                Some(to)
            }
        }
        (to, after) => after.or(to),
    };
    let upper = q.active_from.map(|t| (above(&neg(t)), false));
    let Some(range) = range(lower, upper)? else {
        return Ok(Vec::new());
    };
    let rows = page(
        db,
        CONVERSATIONS,
        "activity",
        &range,
        q.limit,
        codec::conversation_row,
    )
    .await?;
    Ok(rows.into_iter().filter(|r| q.matches(r)).collect())
}

pub(crate) async fn message(db: &IdbDatabase, id: MessageId) -> Result<Option<MessageRecord>> {
    let v = one(db, MESSAGES, &hex_id(id.as_bytes()).into()).await?;
    codec::found(&v, codec::message_record)
}

/// Newest first through the `latest` index (`[conv, -created, reversed id]`).
pub(crate) async fn messages(db: &IdbDatabase, q: &MessageQuery) -> Result<Vec<MessageRecord>> {
    check_limit(q.limit)?;
    let conv: JsValue = hex_id(q.conversation_id.as_bytes()).into();
    let lower = match q.before {
        Some(c) => (
            key(&[
                conv.clone(),
                neg(c.created_at),
                codec::desc_id(c.id.as_bytes()).into(),
            ]),
            true,
        ),
        None => (key(std::slice::from_ref(&conv)), false),
    };
    let Some(range) = range(Some(lower), Some((above(&conv), false)))? else {
        return Ok(Vec::new());
    };
    let rows = page(
        db,
        MESSAGES,
        "latest",
        &range,
        q.limit,
        codec::message_record,
    )
    .await?;
    Ok(rows.into_iter().filter(|m| q.matches(m)).collect())
}

pub(crate) async fn tombstone(
    db: &IdbDatabase,
    kind: EntityKind,
    id: RecordId,
) -> Result<Option<Tombstone>> {
    let v = one(db, TOMBSTONES, &tombstone_key(kind, id)).await?;
    codec::found(&v, codec::tombstone)
}

/// The later of the kept mark and the conversation's tombstone (see the
/// schema docs).
pub(crate) async fn deletion_mark(db: &IdbDatabase, id: ConversationId) -> Result<Option<Hlc>> {
    let tx = begin(db, &[MARKS, TOMBSTONES])?;
    let mark = get(&object_store(&tx, MARKS)?, &hex_id(id.as_bytes()).into()).await?;
    let mark = codec::found(&mark, codec::mark)?;
    let t = get(
        &object_store(&tx, TOMBSTONES)?,
        &tombstone_key(EntityKind::Conversation, id.into()),
    )
    .await?;
    let t = codec::found(&t, codec::tombstone)?.map(|t| t.version);
    Ok(mark.max(t))
}

/// In key order, `[kind, id]`: the contract's `(kind, id)` order.
pub(crate) async fn tombstones(db: &IdbDatabase, q: &TombstoneQuery) -> Result<Vec<Tombstone>> {
    check_limit(q.limit)?;
    let lower = q.after.map(|(kind, id)| (tombstone_key(kind, id), true));
    let Some(range) = range(lower, None)? else {
        return Ok(Vec::new());
    };
    let tx = begin(db, &[TOMBSTONES])?;
    let rows = get_all(&object_store(&tx, TOMBSTONES)?, None, &range, q.limit).await?;
    rows.iter().map(codec::tombstone).collect()
}

async fn count(store: &IdbObjectStore, index: Option<&str>, range: &JsValue) -> Result<u64> {
    let request = match index {
        Some(name) => store.index(name).map_err(js)?.count_with_key(range),
        None => store.count_with_key(range),
    }
    .map_err(js)?;
    let n = wait(&request).await.map_err(dom)?;
    Ok(n.as_f64().unwrap_or(0.0) as u64)
}

/// The `outbox` index range of pending (`0`) or parked (`1`) changes
/// after `after` (exclusive).
fn state_range(parked: bool, after: Option<u64>) -> Result<Option<JsValue>> {
    let state = JsValue::from_f64(if parked { 1.0 } else { 0.0 });
    let lower = match after {
        Some(seq) => (key(&[state.clone(), JsValue::from_f64(seq as f64)]), true),
        None => (key(std::slice::from_ref(&state)), false),
    };
    range(Some(lower), Some((above(&state), false)))
}

/// Counts and sizes: the totals the writes keep (one row per conversation),
/// never every message.
/// The body bytes of every live record: the `totals` row with the empty
/// key, which every write keeps (see the schema docs).
pub(crate) async fn stored_bytes(db: &IdbDatabase) -> Result<u64> {
    let row = one(db, TOTALS, &JsValue::from_str("")).await?;
    Ok(codec::totals(&row)?.1.max(0) as u64)
}

pub(crate) async fn usage(db: &IdbDatabase) -> Result<Usage> {
    let tx = begin(db, &[CONVERSATIONS, MESSAGES, TOMBSTONES, TOTALS])?;
    let conversations = object_store(&tx, CONVERSATIONS)?;
    let records = RECORD_STORES
        .iter()
        .map(|name| object_store(&tx, name))
        .collect::<Result<Vec<_>>>()?;
    let tombstones = count(&object_store(&tx, TOMBSTONES)?, None, &JsValue::UNDEFINED).await?;
    let pending_range = state_range(false, None)?.unwrap_or(JsValue::UNDEFINED);
    let parked_range = state_range(true, None)?.unwrap_or(JsValue::UNDEFINED);
    let (mut pending_changes, mut parked_changes) = (0, 0);
    for store in &records {
        pending_changes += count(store, Some(OUTBOX_INDEX), &pending_range).await?;
        parked_changes += count(store, Some(OUTBOX_INDEX), &parked_range).await?;
    }

    let mut totals: HashMap<String, (i64, i64)> = HashMap::new();
    for row in get_all(
        &object_store(&tx, TOTALS)?,
        None,
        &JsValue::UNDEFINED,
        usize::MAX,
    )
    .await?
    {
        totals.insert(codec::get_str(&row, "conv")?, codec::totals(&row)?);
    }
    let bytes = totals.remove("").map_or(0, |(_, b)| b.max(0) as u64);
    let messages = totals.values().map(|(n, _)| n.max(&0)).sum::<i64>() as u64;

    let unsynced = unsynced_conversations(&records.iter().collect::<Vec<_>>()).await?;

    let mut per_conversation = Vec::new();
    for v in get_all(
        &conversations,
        Some("activity"),
        &JsValue::UNDEFINED,
        usize::MAX,
    )
    .await?
    {
        let id = codec::get_str(&v, "id")?;
        let (n, message_bytes) = totals.get(&id).copied().unwrap_or((0, 0));
        per_conversation.push(ConversationUsage {
            id: codec::get_conversation_id(&v, "id")?,
            activity_at: codec::conversation_activity(&v)?,
            messages: n.max(0) as u64,
            bytes: codec::body_len(&v)? + message_bytes.max(0) as u64,
            pending: unsynced.contains(&id),
        });
    }
    Ok(Usage {
        conversations: per_conversation.len() as u64,
        messages,
        tombstones,
        pending_changes,
        parked_changes,
        bytes,
        per_conversation,
    })
}

/// Records of `stores` with a pending or parked change, a page of the
/// `outbox` index at a time: the conversations those changes count for
/// (their own, or their message's), as stored hex. Reads in whatever
/// transaction the stores belong to.
pub(crate) async fn unsynced_conversations(stores: &[&IdbObjectStore]) -> Result<HashSet<String>> {
    const PAGE: usize = 1000;
    let mut unsynced = HashSet::new();
    for store in stores {
        let mut after: Option<JsValue> = None;
        loop {
            let lower = after.take().map(|k| (k, true));
            let Some(r) = range(lower, None)? else {
                break;
            };
            let page = get_all(store, Some(OUTBOX_INDEX), &r, PAGE).await?;
            for record in &page {
                unsynced.extend(codec::entry_conversation(record)?);
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(outbox_key(last)?),
                _ => break,
            }
        }
    }
    Ok(unsynced)
}

/// A record's key in the `outbox` index: `[parked, seq]`.
fn outbox_key(record: &JsValue) -> Result<JsValue> {
    let entry = codec::entry(record)?
        .ok_or_else(|| StoreError::Decode("a record of the outbox index has no entry".into()))?;
    Ok(key(&[
        codec::get_f64(&entry, "parked")?.into(),
        codec::get_f64(&entry, "seq")?.into(),
    ]))
}

/// The change a record with an outbox entry stands for: an upsert of a
/// live record, a delete of a tombstone.
fn change_of(store: &str, record: &JsValue, entry: &JsValue) -> Result<Change> {
    let op = codec::entry_op(entry)?;
    Ok(match store {
        CONVERSATIONS => Change::upsert_conversation(op, &codec::conversation_row(record)?.record),
        MESSAGES => Change::upsert_message(op, &codec::message_record(record)?),
        _ => Change::delete(op, &codec::tombstone(record)?),
    })
}

/// The first `limit` pending (or parked) changes after `after` in
/// sequence order: the merge of the three stores' `outbox` index ranges,
/// each read with one `getAll` (all three issued together), in one
/// readonly transaction. Returns each change's entry too.
async fn walk_outbox(
    db: &IdbDatabase,
    parked: bool,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(JsValue, u64, Change)>> {
    let Some(r) = state_range(parked, after)? else {
        return Ok(Vec::new());
    };
    let tx = begin(db, &RECORD_STORES)?;
    let count = u32::try_from(limit).unwrap_or(u32::MAX);
    let mut requests = Vec::new();
    for name in RECORD_STORES {
        let index = object_store(&tx, name)?.index(OUTBOX_INDEX).map_err(js)?;
        requests.push((
            name,
            index.get_all_with_key_and_limit(&r, count).map_err(js)?,
        ));
    }
    let mut found = Vec::new();
    for (name, request) in requests {
        let page: Array = wait(&request).await.map_err(dom)?.unchecked_into();
        for record in page.iter() {
            let entry = codec::entry(&record)?.ok_or_else(|| {
                StoreError::Decode("a record of the outbox index has no entry".into())
            })?;
            let change = change_of(name, &record, &entry)?;
            found.push((entry.clone(), codec::entry_seq(&entry)?, change));
        }
    }
    found.sort_unstable_by_key(|(_, seq, _)| *seq);
    found.truncate(limit);
    Ok(found)
}

pub(crate) async fn outbox(db: &IdbDatabase, limit: usize) -> Result<Vec<OutboxEntry>> {
    check_limit(limit)?;
    Ok(walk_outbox(db, false, None, limit)
        .await?
        .into_iter()
        .map(|(_, seq, change)| OutboxEntry { seq, change })
        .collect())
}

pub(crate) async fn parked(
    db: &IdbDatabase,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<ParkedEntry>> {
    check_limit(limit)?;
    walk_outbox(db, true, after, limit)
        .await?
        .into_iter()
        .map(|(entry, seq, change)| {
            let (reason, attempts) = codec::park_reason(&entry)?;
            Ok(ParkedEntry {
                seq,
                change,
                reason,
                attempts,
            })
        })
        .collect()
}

pub(crate) async fn meta(db: &IdbDatabase, key: &str) -> Result<Option<Vec<u8>>> {
    let v = one(db, crate::schema::META, &JsValue::from_str(key)).await?;
    codec::meta_bytes(&v)
}

/// Metadata in key order (IndexedDB's string order: UTF-16 code units,
/// the same as byte order for the ASCII keys a vault uses), without the
/// outbox's sequence counter, which is this backend's bookkeeping.
pub(crate) async fn meta_entries(
    db: &IdbDatabase,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<MetaEntry>> {
    check_limit(limit)?;
    let lower = after.map(|a| (JsValue::from_str(a), true));
    let Some(r) = range(lower, None)? else {
        return Ok(Vec::new());
    };
    let tx = begin(db, &[META])?;
    let store = object_store(&tx, META)?;
    // One more than asked: the counter may be among them.
    let count = u32::try_from(limit.saturating_add(1)).unwrap_or(u32::MAX);
    let keys = store
        .get_all_keys_with_key_and_limit(&r, count)
        .map_err(js)?;
    let values = store.get_all_with_key_and_limit(&r, count).map_err(js)?;
    let keys: Array = wait(&keys).await.map_err(dom)?.unchecked_into();
    let values: Array = wait(&values).await.map_err(dom)?.unchecked_into();
    let mut out = Vec::with_capacity(limit);
    for (k, v) in keys.iter().zip(values.iter()) {
        let key = k
            .as_string()
            .ok_or_else(|| StoreError::Decode("a metadata key is not text".into()))?;
        if key == SEQ_KEY {
            continue;
        }
        let value = codec::meta_bytes(&v)?
            .ok_or_else(|| StoreError::Decode("a metadata value is missing".into()))?;
        out.push(MetaEntry { key, value });
    }
    out.truncate(limit);
    Ok(out)
}

/// Messages in id order (the store's key, lowercase hex, sorts like the
/// id bytes).
pub(crate) async fn all_messages(
    db: &IdbDatabase,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Vec<MessageRecord>> {
    check_limit(limit)?;
    let lower = after.map(|a| (JsValue::from_str(&hex_id(a.as_bytes())), true));
    let Some(r) = range(lower, None)? else {
        return Ok(Vec::new());
    };
    let tx = begin(db, &[MESSAGES])?;
    let rows = get_all(&object_store(&tx, MESSAGES)?, None, &r, limit).await?;
    rows.iter().map(codec::message_record).collect()
}

/// Kept deletion marks in conversation id order (the `marks` key).
pub(crate) async fn deletion_marks(
    db: &IdbDatabase,
    after: Option<ConversationId>,
    limit: usize,
) -> Result<Vec<DeletionMark>> {
    check_limit(limit)?;
    let lower = after.map(|a| (JsValue::from_str(&hex_id(a.as_bytes())), true));
    let Some(r) = range(lower, None)? else {
        return Ok(Vec::new());
    };
    let tx = begin(db, &[MARKS])?;
    let rows = get_all(&object_store(&tx, MARKS)?, None, &r, limit).await?;
    rows.iter()
        .map(|o| {
            Ok(DeletionMark {
                conversation_id: codec::get_conversation_id(o, "conv")?,
                version: codec::mark(o)?,
            })
        })
        .collect()
}

/// Every outbox entry, pending and parked, in sequence order: the pending
/// and the parked range of the `outbox` indexes after `after`, merged.
pub(crate) async fn outbox_entries(
    db: &IdbDatabase,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredOutboxEntry>> {
    check_limit(limit)?;
    let mut all = Vec::new();
    for parked in [false, true] {
        for (entry, seq, change) in walk_outbox(db, parked, after, limit).await? {
            let parked = match codec::is_parked(&entry)? {
                true => Some(codec::park_reason(&entry)?.0),
                false => None,
            };
            all.push(StoredOutboxEntry {
                seq,
                item: OutboxItem {
                    op_id: change.op_id,
                    kind: change.kind,
                    entity_id: change.entity_id,
                    conversation_id: change.conversation_id,
                },
                parked,
                attempts: codec::get_f64(&entry, "attempts")? as u32,
            });
        }
    }
    all.sort_unstable_by_key(|e| e.seq);
    all.truncate(limit);
    Ok(all)
}
