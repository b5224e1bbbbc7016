//! Conformance cases for the data lifecycle: the store contract behind
//! retention, stats, compaction, export and import, held to the same rules
//! on every backend and in both vault modes. (Edge cases of the rules
//! themselves are tested once, in `tests/lifecycle.rs` and in core.)

use super::{open, vault_on, Mode, TestBackend, TestResult, T0};
use crate::{
    ExportOptions, ImportOptions, ListMessages, ManualClock, Metadata, NewConversation, NewMessage,
    RetentionMode, RetentionPolicy, Role, Vault,
};
use chatvault_core::EntityKind;
use chatvault_store::TombstoneQuery;
use std::sync::Arc;

const DAY: i64 = 86_400_000;

/// Three conversations a day apart (the oldest pinned), with messages, one
/// deleted message and one deleted conversation.
async fn history(v: &Vault, clock: &ManualClock) -> TestResult {
    for i in 0..4 {
        let mut metadata = Metadata::new();
        if i == 0 {
            metadata.insert("pinned".into(), true.into());
        }
        let c = v
            .create_conversation(NewConversation {
                id: None,
                title: format!("day {i} ✈️"),
                metadata,
            })
            .await?;
        let added = v
            .add_messages(
                c.id,
                (0..3)
                    .map(|j| NewMessage::new(Role::ALL[j], format!("{i}.{j} 🙂")))
                    .collect(),
            )
            .await?;
        v.delete_message(added[1].id).await?;
        if i == 3 {
            v.delete_conversation(c.id).await?;
        }
        clock.advance(DAY);
    }
    Ok(())
}

async fn export(v: &Vault) -> TestResult<Vec<u8>> {
    Ok(v.export(Vec::new(), ExportOptions::default()).await?.0)
}

vault_cases! {($) __vault_conformance_lifecycle;

/// Tombstones list completely, in `(kind, id)` order, page by page.
async fn tombstones_list_in_pages(b, mode) {
    let (v, clock) = open(b, mode).await?;
    history(&v, &clock).await?;
    let store = v.store();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .tombstones(&TombstoneQuery { after, limit: 2 })
            .await?;
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.kind, last.id));
        seen.extend(page.into_iter().map(|t| (t.kind, t.id)));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered, no repeats");
    // Three message tombstones survive; the fourth went with its
    // conversation, whose own tombstone covers it.
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen.iter()
            .filter(|(k, _)| *k == EntityKind::Message)
            .count(),
        3
    );
    assert_eq!(v.stats().await?.tombstones, 4);
    Ok(())
}

/// An export imported into fresh storage of the same backend reproduces
/// the vault; importing it again changes nothing.
async fn export_import_reproduces_the_vault(b, mode) {
    let (v, clock) = open(b, mode).await?;
    history(&v, &clock).await?;
    let file = export(&v).await?;

    let target = vault_on(b.open_with_quota(1 << 30).await, mode, clock.clone()).await?;
    let report = target
        .import(file.clone(), ImportOptions::default())
        .await?;
    assert_eq!(report.imported, report.records.total());
    assert_eq!(
        export(&target).await?,
        file,
        "the same records, byte for byte"
    );
    let (a, b) = (v.stats().await?, target.stats().await?);
    assert_eq!(
        (a.conversations, a.messages, a.tombstones),
        (b.conversations, b.messages, b.tombstones)
    );
    let again = target.import(file, ImportOptions::default()).await?;
    assert_eq!((again.imported, again.skipped), (0, again.records.total()));
    Ok(())
}

/// Retention deletes conversations with their messages in one write,
/// leaves synced deletions, keeps pinned ones, and a dry run changes
/// nothing.
async fn retention_deletes_as_synced_deletions(b, mode) {
    let (v, clock) = open(b, mode).await?;
    history(&v, &clock).await?;
    let policy = RetentionPolicy {
        max_age_days: Some(0),
        ..Default::default()
    };
    let before = (export(&v).await?, v.stats().await?);
    let dry = v
        .run_retention(&policy, RetentionMode::DryRun)
        .await?;
    assert_eq!((export(&v).await?, v.stats().await?), before);
    assert_eq!(dry.plan.delete.len(), 2);
    assert_eq!(dry.plan.kept.len(), 1, "the pinned one");

    let done = v
        .run_retention(&policy, RetentionMode::Apply)
        .await?;
    assert_eq!(done.plan, dry.plan);
    let stats = v.stats().await?;
    assert_eq!((stats.conversations, stats.messages), (1, 2));
    let pending = v.replica().pending_changes(1000).await?;
    for d in &done.plan.delete {
        assert!(v.messages(d.id, ListMessages::default()).await.is_err());
        assert!(pending
            .iter()
            .any(|e| e.change.entity_id == d.id.into() && e.change.is_delete()));
        assert!(pending
            .iter()
            .all(|e| e.change.conversation_id != Some(d.id)));
    }
    Ok(())
}

/// The backend reports its footprint (or nothing), and compaction keeps
/// every record.
async fn footprint_and_compaction_keep_data(b, mode) {
    let (v, clock) = open(b, mode).await?;
    history(&v, &clock).await?;
    let before = export(&v).await?;
    if let Some(f) = v.storage().await? {
        assert!(f.used_bytes > 0);
        assert!(f.reclaimable_bytes <= f.used_bytes);
    }
    v.compact().await?;
    assert_eq!(export(&v).await?, before);
    let v = vault_on(b.open().await, mode, Arc::new(ManualClock::new(T0))).await?;
    assert_eq!(v.stats().await?.conversations, 3);
    Ok(())
}

}
