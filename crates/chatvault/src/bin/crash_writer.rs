//! The writer process of the crash-consistency test (`tests/crash.rs`), not
//! a tool: built only with the `testing` feature.
//!
//! Opens an encrypted SQLite vault and writes to it through the public
//! [`Vault`] API with a seeded mix of operations (single and bulk message
//! writes, edits, deletions, retention runs, imports, passphrase changes,
//! and acknowledging the outbox as a sync client does after a push)
//! until the test kills it with SIGKILL. Stdout is the protocol the test
//! reads, one JSON line per event, each flushed at once:
//! - `begin {...}` before an operation is called: what it will write (the
//!   test accepts the state before or after it, nothing in between);
//! - `ok {...}` after the call returned `Ok`: the operation is
//!   acknowledged and must survive the kill.
//!
//! Usage: `crash_writer <vault> <passphrase> <start-ms> <seed> <run>`.
//! Its clock starts at `start-ms` (the test sets it behind the newest
//! stamp already in the vault, as after a restart on a device whose clock
//! stepped back) and moves 0-2 ms per operation.

use chatvault::testing::{fast_options, Snapshot, SplitMix64};
use chatvault::{
    ConversationId, ExportOptions, ImportOptions, ManualClock, MemoryStore, MessageId,
    MessageUpdate, NewConversation, NewMessage, RetentionMode, RetentionPolicy, Role, Timestamp,
    Vault,
};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;

fn say(kind: &str, line: Value) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{kind} {line}")?;
    out.flush()?;
    Ok(())
}

/// What this process knows is in the vault, to pick targets from.
struct Known {
    conversations: Vec<ConversationId>,
    messages: Vec<(MessageId, ConversationId)>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, passphrase, start, seed, run] = args.as_slice() else {
        return Err("usage: crash_writer <vault> <passphrase> <start-ms> <seed> <run>".into());
    };
    let clock = Arc::new(ManualClock::new(Timestamp(start.parse()?)));
    let mut rng = SplitMix64(seed.parse()?);
    let mut passphrase = passphrase.clone();
    let vault = Vault::builder()
        .sqlite(path)
        .passphrase(&passphrase)
        .options(fast_options(clock.clone()))
        .open()
        .await?;
    let snapshot = Snapshot::of(&vault).await?;
    let mut known = Known {
        conversations: snapshot.conversations.keys().copied().collect(),
        messages: snapshot
            .messages
            .values()
            .map(|m| (m.id, m.conversation_id))
            .collect(),
    };
    say("ready", json!({}))?;

    for op in 0u64.. {
        clock.advance(rng.below(3) as i64);
        let tag = format!("{run}-{op}");
        let roll = rng.below(100) as usize;
        if known.conversations.is_empty() || (roll < 10 && known.conversations.len() < 12) {
            say("begin", json!({"op": "conv", "title": tag}))?;
            let c = vault
                .create_conversation(NewConversation::titled(tag))
                .await?;
            known.conversations.push(c.id);
            say(
                "ok",
                json!({"op": "conv", "id": c.id, "version": c.version.to_string()}),
            )?;
        } else if roll < 55 {
            // Single writes and bulk writes (one atomic batch).
            let conv = known.conversations[rng.below(known.conversations.len() as u64) as usize];
            let n = if roll < 40 {
                1
            } else {
                2 + rng.below(19) as usize
            };
            let contents: Vec<String> = (0..n).map(|k| format!("{tag}-{k}")).collect();
            say(
                "begin",
                json!({"op": "add", "conv": conv, "contents": contents}),
            )?;
            let news = contents
                .iter()
                .map(|c| NewMessage::new(Role::User, c.clone()))
                .collect();
            let written = vault.add_messages(conv, news).await?;
            known.messages.extend(written.iter().map(|m| (m.id, conv)));
            let ids: Vec<_> = written.iter().map(|m| m.id).collect();
            let versions: Vec<_> = written.iter().map(|m| m.version.to_string()).collect();
            say("ok", json!({"op": "add", "ids": ids, "versions": versions}))?;
        } else if roll < 67 && !known.messages.is_empty() {
            let (id, _) = known.messages[rng.below(known.messages.len() as u64) as usize];
            say("begin", json!({"op": "edit", "id": id, "content": tag}))?;
            let update = MessageUpdate {
                content: Some(tag),
                metadata: None,
            };
            let m = vault.update_message(id, update).await?;
            say(
                "ok",
                json!({"op": "edit", "version": m.version.to_string()}),
            )?;
        } else if roll < 77 && !known.messages.is_empty() {
            let (id, _) = known
                .messages
                .swap_remove(rng.below(known.messages.len() as u64) as usize);
            say("begin", json!({"op": "del_msg", "id": id}))?;
            vault.delete_message(id).await?;
            say("ok", json!({"op": "del_msg"}))?;
        } else if roll < 82 {
            let conv = known
                .conversations
                .swap_remove(rng.below(known.conversations.len() as u64) as usize);
            say("begin", json!({"op": "del_conv", "id": conv}))?;
            vault.delete_conversation(conv).await?;
            known.messages.retain(|(_, c)| *c != conv);
            say("ok", json!({"op": "del_conv"}))?;
        } else if roll < 88 {
            let keep = known
                .conversations
                .len()
                .saturating_sub(1 + rng.below(2) as usize);
            let policy = RetentionPolicy {
                max_conversations: Some(keep.max(1) as u64),
                ..RetentionPolicy::default()
            };
            let planned: Vec<ConversationId> = vault
                .plan_retention(&policy)
                .await?
                .delete
                .iter()
                .map(|d| d.id)
                .collect();
            say("begin", json!({"op": "retention", "delete": planned}))?;
            let report = vault.run_retention(&policy, RetentionMode::Apply).await?;
            let deleted: Vec<ConversationId> = report.plan.delete.iter().map(|d| d.id).collect();
            known.conversations.retain(|c| !deleted.contains(c));
            known.messages.retain(|(_, c)| !deleted.contains(c));
            say("ok", json!({"op": "retention", "delete": deleted}))?;
        } else if roll < 92 {
            // An export of another vault, imported in one transaction.
            let source =
                Vault::open(Arc::new(MemoryStore::new()), fast_options(clock.clone())).await?;
            let c = source
                .create_conversation(NewConversation::titled(tag.clone()))
                .await?;
            let news = (0..1 + rng.below(8) as usize)
                .map(|k| NewMessage::new(Role::Assistant, format!("{tag}-{k}")))
                .collect();
            let written = source.add_messages(c.id, news).await?;
            let (file, _) = source.export(Vec::new(), ExportOptions::default()).await?;
            let messages: Vec<Value> = written
                .iter()
                .map(|m| json!({"id": m.id, "content": m.content}))
                .collect();
            say(
                "begin",
                json!({"op": "import", "conv": c.id, "title": tag, "messages": messages}),
            )?;
            let report = vault.import(file, ImportOptions::default()).await?;
            if report.rejected > 0 {
                return Err(format!("import rejected records: {:?}", report.rejections).into());
            }
            known.conversations.push(c.id);
            known.messages.extend(written.iter().map(|m| (m.id, c.id)));
            say("ok", json!({"op": "import"}))?;
        } else if roll < 97 {
            // What a sync client does once the server took the changes.
            let pending = vault.replica().pending_changes(1_000_000).await?;
            let seqs: Vec<u64> = pending.iter().map(|e| e.seq).collect();
            let entities: Vec<String> = pending
                .iter()
                .map(|e| e.change.entity_id.to_string())
                .collect();
            say("begin", json!({"op": "ack", "entities": entities}))?;
            vault.replica().acknowledge(&seqs).await?;
            say("ok", json!({"op": "ack"}))?;
        } else {
            let next = format!("pass-{tag}");
            say("begin", json!({"op": "passwd", "to": next}))?;
            vault.change_passphrase(&passphrase, &next).await?;
            passphrase = next;
            say("ok", json!({"op": "passwd"}))?;
        }
    }
    Ok(())
}
