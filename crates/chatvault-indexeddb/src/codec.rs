//! Records to and from the JS objects the object stores hold (the field
//! names are the schema's, see `schema`). Decoding never trusts the
//! database: a missing or malformed field is a [`StoreError::Decode`], not
//! a panic.

use chatvault_core::{
    Body, ConversationId, ConversationRecord, EntityKind, Hlc, MessageId, MessageRecord, OpId,
    RecordId, Timestamp, Tombstone, UserId,
};
use chatvault_store::{ConversationRow, ParkReason, Result, StoreError, StoredOutboxEntry};
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// An id as a key: lowercase hex sorts like the bytes.
pub(crate) fn hex_id(bytes: &[u8; 16]) -> String {
    hex::encode(bytes)
}

/// An id as a key that sorts in **reverse** byte order (for newest-first
/// indexes read as ascending ranges).
pub(crate) fn desc_id(bytes: &[u8; 16]) -> String {
    hex::encode(bytes.map(|b| !b))
}

/// A time as a key number. Epoch milliseconds fit an `f64` exactly.
pub(crate) fn num(t: Timestamp) -> JsValue {
    JsValue::from_f64(t.as_millis() as f64)
}

/// A time as a key number that sorts in reverse.
pub(crate) fn neg(t: Timestamp) -> JsValue {
    JsValue::from_f64(-(t.as_millis() as f64))
}

/// A compound key.
pub(crate) fn key(parts: &[JsValue]) -> JsValue {
    parts.iter().collect::<Array>().into()
}

/// A key above every `[prefix, <string or number>]` key: arrays sort after
/// numbers and strings, so `[prefix, []]` closes a range over a prefix.
pub(crate) fn above(prefix: &JsValue) -> JsValue {
    key(&[prefix.clone(), Array::new().into()])
}

/// The tombstone key of a record.
pub(crate) fn tombstone_key(kind: EntityKind, id: RecordId) -> JsValue {
    key(&[
        JsValue::from_str(kind.as_str()),
        JsValue::from_str(&hex_id(id.as_bytes())),
    ])
}

fn set(o: &Object, field: &str, value: &JsValue) {
    // Setting a data property on a plain object cannot fail.
    let _ = Reflect::set(o, &JsValue::from_str(field), value);
}

fn bytes(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

fn field(o: &JsValue, name: &str) -> Result<JsValue> {
    let v = Reflect::get(o, &JsValue::from_str(name)).map_err(|_| {
        StoreError::Decode(format!("stored value is not an object (reading {name})"))
    })?;
    if v.is_undefined() {
        return Err(StoreError::Decode(format!("stored value lacks `{name}`")));
    }
    Ok(v)
}

fn optional(o: &JsValue, name: &str) -> Result<Option<JsValue>> {
    let v = Reflect::get(o, &JsValue::from_str(name)).map_err(|_| {
        StoreError::Decode(format!("stored value is not an object (reading {name})"))
    })?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

pub(crate) fn get_str(o: &JsValue, name: &str) -> Result<String> {
    field(o, name)?
        .as_string()
        .ok_or_else(|| StoreError::Decode(format!("`{name}` is not text")))
}

pub(crate) fn get_f64(o: &JsValue, name: &str) -> Result<f64> {
    field(o, name)?
        .as_f64()
        .ok_or_else(|| StoreError::Decode(format!("`{name}` is not a number")))
}

fn get_time(o: &JsValue, name: &str) -> Result<Timestamp> {
    Ok(Timestamp(get_f64(o, name)? as i64))
}

fn get_bytes(o: &JsValue, name: &str) -> Result<Vec<u8>> {
    let v = field(o, name)?;
    v.dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .ok_or_else(|| StoreError::Decode(format!("`{name}` is not bytes")))
}

/// Length in bytes of a stored body, without copying it out of JS.
pub(crate) fn body_len(o: &JsValue) -> Result<u64> {
    let v = field(o, "body")?;
    v.dyn_ref::<Uint8Array>()
        .map(|a| u64::from(a.length()))
        .ok_or_else(|| StoreError::Decode("`body` is not bytes".into()))
}

fn id16(s: &str, what: &str) -> Result<[u8; 16]> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out)
        .map_err(|e| StoreError::Decode(format!("{what} id `{s}`: {e}")))?;
    Ok(out)
}

pub(crate) fn get_conversation_id(o: &JsValue, name: &str) -> Result<ConversationId> {
    Ok(ConversationId::from_bytes(id16(
        &get_str(o, name)?,
        "conversation",
    )?))
}

fn get_kind(o: &JsValue) -> Result<EntityKind> {
    get_str(o, "kind")?
        .parse()
        .map_err(|e: chatvault_core::CoreError| StoreError::Decode(e.to_string()))
}

/// The optional `conv` of a tombstone (a message's conversation).
fn get_parent(o: &JsValue) -> Result<Option<ConversationId>> {
    optional(o, "conv")?
        .map(|_| get_conversation_id(o, "conv"))
        .transpose()
}

/// Decodes what a `get` found; `None` for `undefined` (no such key).
pub(crate) fn found<T>(v: &JsValue, decode: fn(&JsValue) -> Result<T>) -> Result<Option<T>> {
    if v.is_undefined() {
        return Ok(None);
    }
    decode(v).map(Some)
}

fn get_hlc(o: &JsValue, name: &str) -> Result<Hlc> {
    get_str(o, name)?
        .parse()
        .map_err(|e: chatvault_core::CoreError| StoreError::Decode(e.to_string()))
}

pub(crate) fn version_text(h: Hlc) -> JsValue {
    JsValue::from_str(&h.to_string())
}

/// A conversation row as stored.
pub(crate) fn conversation_value(row: &ConversationRow) -> Object {
    let r = &row.record;
    let o = Object::new();
    set(&o, "id", &JsValue::from_str(&hex_id(r.id.as_bytes())));
    set(&o, "descId", &JsValue::from_str(&desc_id(r.id.as_bytes())));
    set(&o, "user", &JsValue::from_str(r.user_id.as_str()));
    set(&o, "created", &num(r.created_at));
    set(&o, "updated", &num(r.updated_at));
    set(&o, "version", &version_text(r.version));
    set(&o, "body", &bytes(r.body.as_bytes()));
    set(&o, "activity", &num(row.activity_at));
    set(&o, "negActivity", &neg(row.activity_at));
    o
}

pub(crate) fn conversation_row(o: &JsValue) -> Result<ConversationRow> {
    Ok(ConversationRow {
        record: ConversationRecord {
            id: get_conversation_id(o, "id")?,
            user_id: get_str(o, "user")?
                .parse::<UserId>()
                .map_err(|e| StoreError::Decode(e.to_string()))?,
            created_at: get_time(o, "created")?,
            updated_at: get_time(o, "updated")?,
            version: get_hlc(o, "version")?,
            body: Body(get_bytes(o, "body")?),
        },
        activity_at: get_time(o, "activity")?,
    })
}

/// The version and activity of a stored conversation, without its body.
pub(crate) fn conversation_activity(o: &JsValue) -> Result<Timestamp> {
    get_time(o, "activity")
}

/// Sets a stored conversation's activity time (both its fields).
pub(crate) fn set_activity(o: &JsValue, at: Timestamp) {
    if let Some(o) = o.dyn_ref::<Object>() {
        set(o, "activity", &num(at));
        set(o, "negActivity", &neg(at));
    }
}

/// A message as stored.
pub(crate) fn message_value(m: &MessageRecord) -> Object {
    let o = Object::new();
    set(&o, "id", &JsValue::from_str(&hex_id(m.id.as_bytes())));
    set(&o, "descId", &JsValue::from_str(&desc_id(m.id.as_bytes())));
    set(
        &o,
        "conv",
        &JsValue::from_str(&hex_id(m.conversation_id.as_bytes())),
    );
    set(&o, "created", &num(m.created_at));
    set(&o, "negCreated", &neg(m.created_at));
    set(&o, "updated", &num(m.updated_at));
    set(&o, "version", &version_text(m.version));
    set(&o, "body", &bytes(m.body.as_bytes()));
    o
}

pub(crate) fn message_record(o: &JsValue) -> Result<MessageRecord> {
    Ok(MessageRecord {
        id: MessageId::from_bytes(id16(&get_str(o, "id")?, "message")?),
        conversation_id: get_conversation_id(o, "conv")?,
        created_at: get_time(o, "created")?,
        updated_at: get_time(o, "updated")?,
        version: get_hlc(o, "version")?,
        body: Body(get_bytes(o, "body")?),
    })
}

/// A stored record's version (conversation, message or tombstone).
pub(crate) fn version(o: &JsValue) -> Result<Hlc> {
    get_hlc(o, "version")
}

/// A stored record's version and body (conversation or message).
pub(crate) fn version_and_body(o: &JsValue) -> Result<(Hlc, Vec<u8>)> {
    Ok((get_hlc(o, "version")?, get_bytes(o, "body")?))
}

/// A tombstone as stored.
pub(crate) fn tombstone_value(t: &Tombstone) -> Object {
    let o = Object::new();
    set(&o, "kind", &JsValue::from_str(t.kind.as_str()));
    set(&o, "id", &JsValue::from_str(&hex_id(t.id.as_bytes())));
    if let Some(c) = t.conversation_id {
        set(&o, "conv", &JsValue::from_str(&hex_id(c.as_bytes())));
    }
    set(&o, "version", &version_text(t.version));
    set(&o, "deleted", &num(t.deleted_at));
    o
}

/// A conversation's deletion mark as stored in `marks`.
pub(crate) fn mark_value(conversation: ConversationId, version: Hlc) -> Object {
    let o = Object::new();
    set(
        &o,
        "conv",
        &JsValue::from_str(&hex_id(conversation.as_bytes())),
    );
    set(&o, "version", &version_text(version));
    o
}

/// The stamp of a stored deletion mark.
pub(crate) fn mark(o: &JsValue) -> Result<Hlc> {
    get_hlc(o, "version")
}

pub(crate) fn tombstone(o: &JsValue) -> Result<Tombstone> {
    Ok(Tombstone {
        kind: get_kind(o)?,
        id: RecordId::from_bytes(id16(&get_str(o, "id")?, "record")?),
        conversation_id: get_parent(o)?,
        version: get_hlc(o, "version")?,
        deleted_at: get_time(o, "deleted")?,
    })
}

/// The property of a record (conversation, message or tombstone) that
/// holds its outbox entry: the one change of it waiting for sync. Records
/// without one are not in the `outbox` index (see `schema`).
pub(crate) const ENTRY: &str = "outbox";

/// A new, pending outbox entry: sequence number `seq`, op id `op`.
pub(crate) fn fresh_entry(seq: f64, op: OpId) -> JsValue {
    let o = Object::new();
    set(&o, "seq", &JsValue::from_f64(seq));
    set(&o, "op", &JsValue::from_str(&hex_id(op.as_bytes())));
    set(&o, "parked", &JsValue::from_f64(0.0));
    set(&o, "attempts", &JsValue::from_f64(0.0));
    o.into()
}

/// A stored record's outbox entry, if it has one.
pub(crate) fn entry(record: &JsValue) -> Result<Option<JsValue>> {
    if record.is_undefined() {
        return Ok(None);
    }
    optional(record, ENTRY)
}

/// Gives a record (about to be written) its outbox entry, or removes it.
pub(crate) fn set_entry(record: &JsValue, entry: Option<&JsValue>) {
    let Some(o) = record.dyn_ref::<Object>() else {
        return;
    };
    match entry {
        Some(e) => set(o, ENTRY, e),
        None => {
            // Deleting a property of a plain object cannot fail.
            let _ = Reflect::delete_property(o, &JsValue::from_str(ENTRY));
        }
    }
}

/// An outbox entry's sequence number.
pub(crate) fn entry_seq(entry: &JsValue) -> Result<u64> {
    Ok(get_f64(entry, "seq")? as u64)
}

/// An outbox entry's op id.
pub(crate) fn entry_op(entry: &JsValue) -> Result<OpId> {
    Ok(OpId::from_bytes(id16(&get_str(entry, "op")?, "op")?))
}

/// The conversation a stored record's outbox entry counts for (see
/// [`ConversationUsage::pending`](chatvault_store::ConversationUsage)),
/// as stored hex: a conversation's own id, a message's (or message
/// tombstone's) conversation.
pub(crate) fn entry_conversation(record: &JsValue) -> Result<Option<String>> {
    let own = || get_str(record, "id").map(Some);
    match optional(record, "kind")? {
        // A tombstone: conversation tombstones have no `conv`.
        Some(kind) if kind.as_string().as_deref() == Some("conversation") => own(),
        Some(_) => Ok(optional(record, "conv")?.and_then(|c| c.as_string())),
        // A live record: messages have a `conv`, conversations do not.
        None => match optional(record, "conv")? {
            Some(c) => Ok(c.as_string()),
            None => own(),
        },
    }
}

/// Whether an outbox entry is parked.
pub(crate) fn is_parked(entry: &JsValue) -> Result<bool> {
    Ok(get_f64(entry, "parked")? != 0.0)
}

/// Parks an outbox entry (one more refusal).
pub(crate) fn park(entry: &JsValue, reason: &ParkReason) -> Result<()> {
    let attempts = get_f64(entry, "attempts")?;
    let o = entry
        .dyn_ref::<Object>()
        .ok_or_else(|| StoreError::Decode("an outbox entry is not an object".into()))?;
    set(o, "parked", &JsValue::from_f64(1.0));
    set(o, "attempts", &JsValue::from_f64(attempts + 1.0));
    set(o, "code", &JsValue::from_str(&reason.code));
    set(o, "message", &JsValue::from_str(&reason.message));
    set(o, "at", &num(reason.at));
    Ok(())
}

/// An outbox entry exactly as another store kept it
/// ([`WriteOp::RestoreOutbox`](chatvault_store::WriteOp::RestoreOutbox)).
pub(crate) fn restored_entry(e: &StoredOutboxEntry) -> JsValue {
    let o = Object::new();
    set(&o, "seq", &JsValue::from_f64(e.seq as f64));
    set(
        &o,
        "op",
        &JsValue::from_str(&hex_id(e.item.op_id.as_bytes())),
    );
    let parked = if e.parked.is_some() { 1.0 } else { 0.0 };
    set(&o, "parked", &JsValue::from_f64(parked));
    set(&o, "attempts", &JsValue::from_f64(f64::from(e.attempts)));
    if let Some(reason) = &e.parked {
        set(&o, "code", &JsValue::from_str(&reason.code));
        set(&o, "message", &JsValue::from_str(&reason.message));
        set(&o, "at", &num(reason.at));
    }
    o.into()
}

/// Makes an outbox entry pending again (the refusal count stays).
pub(crate) fn unpark(entry: &JsValue) {
    if let Some(o) = entry.dyn_ref::<Object>() {
        set(o, "parked", &JsValue::from_f64(0.0));
    }
}

/// A parked entry's refusal and count.
pub(crate) fn park_reason(entry: &JsValue) -> Result<(ParkReason, u32)> {
    Ok((
        ParkReason {
            code: get_str(entry, "code")?,
            message: get_str(entry, "message")?,
            at: get_time(entry, "at")?,
        },
        get_f64(entry, "attempts")? as u32,
    ))
}

/// The outbox entry a version-2 `outbox` row becomes on its record (the
/// schema's version-3 migration): its sequence number, op id, parking
/// and refusal count; the pointer fields are the record's own now.
pub(crate) fn entry_from_v2(row: &JsValue) -> Result<JsValue> {
    let o = Object::new();
    for name in ["seq", "op", "parked", "attempts"] {
        set(&o, name, &field(row, name)?);
    }
    for name in ["code", "message", "at"] {
        if let Some(v) = optional(row, name)? {
            set(&o, name, &v);
        }
    }
    Ok(o.into())
}

/// A row of the `totals` store.
pub(crate) fn totals_value(conv: &str, messages: i64, bytes: i64) -> Object {
    let o = Object::new();
    set(&o, "conv", &JsValue::from_str(conv));
    set(&o, "messages", &JsValue::from_f64(messages as f64));
    set(&o, "bytes", &JsValue::from_f64(bytes as f64));
    o
}

/// `(messages, bytes)` of a `totals` row; zeros when there is none.
pub(crate) fn totals(o: &JsValue) -> Result<(i64, i64)> {
    if o.is_undefined() {
        return Ok((0, 0));
    }
    Ok((get_f64(o, "messages")? as i64, get_f64(o, "bytes")? as i64))
}

/// Metadata values are stored as `Uint8Array`s.
pub(crate) fn meta_value(v: &[u8]) -> JsValue {
    bytes(v)
}

pub(crate) fn meta_bytes(v: &JsValue) -> Result<Option<Vec<u8>>> {
    if v.is_undefined() {
        return Ok(None);
    }
    v.dyn_ref::<Uint8Array>()
        .map(|a| Some(a.to_vec()))
        .ok_or_else(|| StoreError::Decode("a metadata value is not bytes".into()))
}

/// The last outbox sequence number issued, as kept in `meta` (decimal
/// text, like the clock mark); 0 when none was.
pub(crate) fn last_seq(v: &JsValue) -> Result<f64> {
    let Some(bytes) = meta_bytes(v)? else {
        return Ok(0.0);
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|n| n as f64)
        .ok_or_else(|| StoreError::Decode("the outbox sequence counter is not a number".into()))
}

/// The `meta` value of the outbox sequence counter.
pub(crate) fn last_seq_value(seq: f64) -> JsValue {
    meta_value((seq as u64).to_string().as_bytes())
}
