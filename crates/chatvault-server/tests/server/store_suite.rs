//! The `ServerStore` contract, written once and run against every backend:
//! accounts, sessions, throttle state, key updates, push (LWW, idempotency,
//! conversation tombstones, sequence numbers under concurrency), pull,
//! snapshot, purge, and account isolation.

use std::sync::Arc;

use chatvault_core::{Change, ConversationId, EntityKind, MessageId, Timestamp};
use chatvault_server::store::{
    KeysUpdate, NewAccount, NewCredentials, NewSession, Outcome, Pull, PurgePlan, ServerStore,
    ServerStoreError, Snapshot, SnapshotPage, SyncedChange,
};
use chatvault_server::{
    AccountId, ClientKind, Cursor, Epoch, KeyEnvelope, Salt, Seq, SessionHash, SnapshotKey,
    Username, WireKdfParams,
};
use serde_json::json;

use crate::backend_tests;
use crate::common::{conversation, delete_conversation, delete_message, message, Backend, TestDb};

struct Fixture {
    store: Arc<dyn ServerStore>,
    db: TestDb,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let db = TestDb::new(backend).await?;
    let store = chatvault_server::store::open(&db.url)
        .await
        .expect("store opens");
    Some(Fixture { store, db })
}

fn name(s: &str) -> Username {
    s.parse().expect("valid username")
}

async fn account(store: &dyn ServerStore, username: &str) -> AccountId {
    let id = AccountId::new();
    store
        .create_account(NewAccount {
            id,
            username: name(username),
            auth_hash: format!("$argon2id$fake-hash-of-{username}"),
            kdf: WireKdfParams::default(),
            salt: Salt([1; 16]),
            key_envelope: KeyEnvelope::try_from(json!({ "owner": username })).expect("envelope"),
            created_at: Timestamp(0),
        })
        .await
        .expect("account created");
    id
}

fn applied(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Applied(seq) => seq.0,
        Outcome::Superseded => panic!("expected applied, got superseded"),
    }
}

/// A position in the store's current epoch.
fn at(store: &dyn ServerStore, seq: u64) -> Cursor {
    Cursor::new(store.epoch(), Seq(seq))
}

async fn pull_from(store: &dyn ServerStore, id: AccountId, after: Cursor) -> Vec<SyncedChange> {
    match store.pull(id, after, 1000).await.expect("pull") {
        Pull::Changes {
            changes, has_more, ..
        } => {
            assert!(!has_more);
            changes
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn pull_all(store: &dyn ServerStore, id: AccountId, after: u64) -> Vec<SyncedChange> {
    pull_from(store, id, at(store, after)).await
}

async fn snapshot_page(
    store: &dyn ServerStore,
    id: AccountId,
    after: Option<SnapshotKey>,
    limit: u32,
) -> SnapshotPage {
    match store.snapshot(id, after, limit).await.expect("snapshot") {
        Snapshot::Page(page) => page,
        Snapshot::Restored => panic!("unexpected restore"),
    }
}

async fn live_snapshot(store: &dyn ServerStore, id: AccountId) -> Vec<SyncedChange> {
    let page = snapshot_page(store, id, None, 1000).await;
    assert!(!page.has_more);
    page.changes
}

fn bodies(changes: &[SyncedChange]) -> Vec<Vec<u8>> {
    changes
        .iter()
        .map(|c| match &c.change.op {
            chatvault_core::ChangeOp::Upsert(p) => p.body.0.clone(),
            chatvault_core::ChangeOp::Delete(_) => b"<deleted>".to_vec(),
        })
        .collect()
}

const NOW: Timestamp = Timestamp(1_000_000);

async fn accounts_round_trip_and_names_are_unique(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "Alice").await;
    let found = store
        .account_by_username(&name("ALICE"))
        .await
        .unwrap()
        .expect("found case-insensitively");
    assert_eq!(found.id, id);
    assert_eq!(found.username.as_str(), "alice");
    assert_eq!(found.auth_hash, "$argon2id$fake-hash-of-Alice");
    assert_eq!(found.kdf, WireKdfParams::default());
    assert_eq!(found.salt, Salt([1; 16]));
    assert_eq!(found.key_envelope.to_json(), r#"{"owner":"Alice"}"#);
    assert_eq!(store.account(id).await.unwrap().map(|a| a.id), Some(id));

    let again = store
        .create_account(NewAccount {
            id: AccountId::new(),
            username: name("alice"),
            auth_hash: "x".into(),
            kdf: WireKdfParams::default(),
            salt: Salt([2; 16]),
            key_envelope: KeyEnvelope::try_from(json!({})).unwrap(),
            created_at: Timestamp(0),
        })
        .await;
    assert!(
        matches!(again, Err(ServerStoreError::UsernameTaken)),
        "{again:?}"
    );
    assert!(store
        .account_by_username(&name("bob"))
        .await
        .unwrap()
        .is_none());
    assert!(store.account(AccountId::new()).await.unwrap().is_none());
}

async fn server_secret_is_created_once(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let first = f.store.server_secret().await.unwrap();
    let second = f.store.server_secret().await.unwrap();
    assert_eq!(first, second);
    assert_ne!(first, [0; 32]);
}

async fn sessions_are_stored_touched_and_revoked(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let hash = SessionHash([9; 32]);
    store
        .create_session(NewSession {
            hash,
            account: id,
            client: ClientKind::Native,
            created_at: Timestamp(1_000),
        })
        .await
        .unwrap();
    let info = store.session(&hash).await.unwrap().expect("session");
    assert_eq!(
        (info.account, info.created_at, info.last_used_at),
        (id, Timestamp(1_000), Timestamp(1_000))
    );
    store.touch_session(&hash, Timestamp(5_000)).await.unwrap();
    store.touch_session(&hash, Timestamp(3_000)).await.unwrap();
    assert_eq!(
        store.session(&hash).await.unwrap().unwrap().last_used_at,
        Timestamp(5_000)
    );
    assert!(store
        .session(&SessionHash([8; 32]))
        .await
        .unwrap()
        .is_none());
    store.revoke_session(&hash).await.unwrap();
    assert!(store.session(&hash).await.unwrap().is_none());
}

async fn throttle_counts_failures_per_username_and_clears(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let (alice, bob) = (name("alice"), name("bob"));
    assert!(store.throttle(&alice).await.unwrap().is_none());
    for (i, t) in [10, 20, 30].into_iter().enumerate() {
        let state = store
            .record_login_failure(&alice, Timestamp(t))
            .await
            .unwrap();
        assert_eq!(state.failures, i as u32 + 1);
        assert_eq!(state.last_failure_at, Timestamp(t));
    }
    store
        .record_login_failure(&bob, Timestamp(40))
        .await
        .unwrap();
    assert_eq!(store.throttle(&alice).await.unwrap().unwrap().failures, 3);
    store.clear_login_failures(&alice).await.unwrap();
    assert!(store.throttle(&alice).await.unwrap().is_none());
    assert_eq!(store.throttle(&bob).await.unwrap().unwrap().failures, 1);
}

async fn credential_change_revokes_every_other_session(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let other = account(store, "bob").await;
    let (mine, theirs, bobs) = (
        SessionHash([1; 32]),
        SessionHash([2; 32]),
        SessionHash([3; 32]),
    );
    for (hash, account) in [(mine, id), (theirs, id), (bobs, other)] {
        store
            .create_session(NewSession {
                hash,
                account,
                client: ClientKind::Any,
                created_at: Timestamp(0),
            })
            .await
            .unwrap();
    }
    let envelope = |v: u32| KeyEnvelope::try_from(json!({ "v": v })).unwrap();
    // Envelope only: sessions stay.
    assert!(store
        .update_keys(
            id,
            KeysUpdate {
                key_envelope: envelope(2),
                credentials: None,
                keep_session: mine
            }
        )
        .await
        .unwrap());
    assert!(store.session(&theirs).await.unwrap().is_some());

    let kdf = WireKdfParams {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 1,
    };
    assert!(store
        .update_keys(
            id,
            KeysUpdate {
                key_envelope: envelope(3),
                credentials: Some(NewCredentials {
                    auth_hash: "new-hash".into(),
                    kdf,
                    salt: Salt([5; 16])
                }),
                keep_session: mine,
            },
        )
        .await
        .unwrap());
    assert!(store.session(&mine).await.unwrap().is_some());
    assert!(store.session(&theirs).await.unwrap().is_none());
    assert!(
        store.session(&bobs).await.unwrap().is_some(),
        "other accounts untouched"
    );
    let a = store.account(id).await.unwrap().unwrap();
    assert_eq!(
        (a.auth_hash.as_str(), a.kdf, a.salt),
        ("new-hash", kdf, Salt([5; 16]))
    );
    assert_eq!(a.key_envelope.to_json(), r#"{"v":3}"#);

    assert!(!store
        .update_keys(
            AccountId::new(),
            KeysUpdate {
                key_envelope: envelope(4),
                credentials: None,
                keep_session: mine
            }
        )
        .await
        .unwrap());
}

async fn push_assigns_sequence_numbers_and_pull_returns_changes_verbatim(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let conv = ConversationId::new();
    let batch = vec![
        conversation(conv, 100, b"title"),
        message(MessageId::new(), conv, 101, b"hello"),
        delete_message(MessageId::new(), conv, 102),
    ];
    let out = store.push(id, &batch, NOW).await.unwrap();
    assert_eq!(
        out.results,
        vec![
            Outcome::Applied(Seq(1)),
            Outcome::Applied(Seq(2)),
            Outcome::Applied(Seq(3))
        ]
    );
    assert_eq!(out.head.seq, Seq(3));
    assert_eq!(out.head.epoch, Some(store.epoch()));
    let pulled = pull_all(store, id, 0).await;
    assert_eq!(
        pulled.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        pulled
            .into_iter()
            .map(|c| c.change)
            .collect::<Vec<Change>>(),
        batch
    );
    assert!(pull_all(store, id, 3).await.is_empty());
    // An empty push only reports the head.
    let empty = store.push(id, &[], NOW).await.unwrap();
    assert_eq!((empty.results.len(), empty.head.seq), (0, Seq(3)));
}

async fn replayed_ops_get_the_same_outcome_and_change_nothing(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let conv = ConversationId::new();
    let newer = conversation(conv, 200, b"newer");
    let older = conversation(conv, 100, b"older");
    let first = store
        .push(id, &[newer.clone(), older.clone()], NOW)
        .await
        .unwrap();
    assert_eq!(
        first.results,
        vec![Outcome::Applied(Seq(1)), Outcome::Superseded]
    );

    // A later write, then the first batch again (a client retrying after a
    // lost response): same answers, and the later write survives.
    let latest = conversation(conv, 300, b"latest");
    store
        .push(id, std::slice::from_ref(&latest), NOW)
        .await
        .unwrap();
    let replay = store.push(id, &[newer.clone(), older], NOW).await.unwrap();
    assert_eq!(replay.results, first.results);
    assert_eq!(replay.head.seq, Seq(2));
    let state = pull_all(store, id, 0).await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].change, latest);

    // The same op twice in one batch: the second is a replay of the first.
    let fresh = message(MessageId::new(), conv, 400, b"m");
    let twice = store.push(id, &[fresh.clone(), fresh], NOW).await.unwrap();
    assert_eq!(
        twice.results,
        vec![Outcome::Applied(Seq(3)), Outcome::Applied(Seq(3))]
    );
}

async fn last_writer_wins_by_version_including_deletes(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let conv = ConversationId::new();
    let results = |o: chatvault_server::store::PushOutcome| o.results[0];
    assert_eq!(
        results(
            store
                .push(id, &[conversation(conv, 10, b"v10")], NOW)
                .await
                .unwrap()
        ),
        Outcome::Applied(Seq(1))
    );
    assert_eq!(
        results(
            store
                .push(id, &[conversation(conv, 5, b"v5")], NOW)
                .await
                .unwrap()
        ),
        Outcome::Superseded
    );
    assert_eq!(
        results(
            store
                .push(id, &[conversation(conv, 20, b"v20")], NOW)
                .await
                .unwrap()
        ),
        Outcome::Applied(Seq(2))
    );
    assert_eq!(bodies(&pull_all(store, id, 0).await), vec![b"v20".to_vec()]);
    assert_eq!(
        results(
            store
                .push(id, &[delete_conversation(conv, 15)], NOW)
                .await
                .unwrap()
        ),
        Outcome::Superseded
    );
    // The older delete lost, but it still deleted the conversation's
    // messages up to 15: the winner moves to the end of the feed carrying
    // that mark, so devices learn it.
    let remarked = pull_all(store, id, 2).await;
    assert_eq!(remarked.len(), 1);
    assert_eq!(remarked[0].seq, 3);
    match &remarked[0].change.op {
        chatvault_core::ChangeOp::Upsert(p) => {
            assert_eq!(p.deleted_through, Some(crate::common::hlc(15)));
            assert_eq!(p.body.0, b"v20");
        }
        other => panic!("expected the conversation, got {other:?}"),
    }
    assert_eq!(
        results(
            store
                .push(id, &[delete_conversation(conv, 25)], NOW)
                .await
                .unwrap()
        ),
        Outcome::Applied(Seq(4))
    );
    // A stale update cannot resurrect the record; a newer one can.
    assert_eq!(
        results(
            store
                .push(id, &[conversation(conv, 22, b"v22")], NOW)
                .await
                .unwrap()
        ),
        Outcome::Superseded
    );
    let pulled = pull_all(store, id, 0).await;
    assert_eq!((pulled.len(), pulled[0].change.is_delete()), (1, true));
    assert_eq!(
        results(
            store
                .push(id, &[conversation(conv, 30, b"v30")], NOW)
                .await
                .unwrap()
        ),
        Outcome::Applied(Seq(5))
    );
    assert_eq!(
        bodies(&live_snapshot(store, id).await),
        vec![b"v30".to_vec()]
    );
}

async fn conversation_delete_covers_its_older_messages(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let (conv, other) = (ConversationId::new(), ConversationId::new());
    let (m_old, m_new, m_other) = (MessageId::new(), MessageId::new(), MessageId::new());
    store
        .push(
            id,
            &[
                conversation(conv, 10, b"c"),
                message(m_old, conv, 11, b"old"),
                message(m_new, conv, 30, b"after-delete"),
                conversation(other, 10, b"o"),
                message(m_other, other, 11, b"elsewhere"),
            ],
            NOW,
        )
        .await
        .unwrap();
    let del = store
        .push(id, &[delete_conversation(conv, 20)], NOW)
        .await
        .unwrap();
    assert_eq!(del.results, vec![Outcome::Applied(Seq(6))]);

    let live = live_snapshot(store, id).await;
    let mut live_bodies = bodies(&live);
    live_bodies.sort();
    assert_eq!(
        live_bodies,
        vec![
            b"after-delete".to_vec(),
            b"elsewhere".to_vec(),
            b"o".to_vec()
        ]
    );
    let feed = pull_all(store, id, 0).await;
    assert!(
        feed.iter().all(|c| c.change.entity_id != m_old.into()),
        "covered message removed"
    );
    assert!(feed
        .iter()
        .any(|c| c.change.entity_id == conv.into() && c.change.is_delete()));

    // Late writes older than the tombstone are superseded, newer ones apply.
    let late = store
        .push(
            id,
            &[
                message(MessageId::new(), conv, 15, b"late"),
                delete_message(m_old, conv, 12),
                message(MessageId::new(), conv, 25, b"newer"),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        late.results,
        vec![
            Outcome::Superseded,
            Outcome::Superseded,
            Outcome::Applied(Seq(7))
        ]
    );
}

async fn rewritten_records_move_to_the_end_of_the_feed(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let (a, b) = (ConversationId::new(), ConversationId::new());
    store
        .push(
            id,
            &[conversation(a, 1, b"a1"), conversation(b, 1, b"b1")],
            NOW,
        )
        .await
        .unwrap();
    store
        .push(id, &[conversation(a, 2, b"a2")], NOW)
        .await
        .unwrap();
    let feed = pull_all(store, id, 0).await;
    assert_eq!(feed.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(bodies(&feed), vec![b"b1".to_vec(), b"a2".to_vec()]);
    match store.pull(id, at(store, 0), 1).await.unwrap() {
        Pull::Changes {
            changes,
            has_more,
            epoch,
        } => {
            assert!(has_more);
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].seq, 2);
            assert_eq!(epoch, store.epoch());
        }
        other => panic!("no resync expected: {other:?}"),
    }
}

async fn purge_drops_old_tombstones_and_forces_resync(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let bystander = account(store, "bob").await;
    let (a, b, c, d) = (
        ConversationId::new(),
        ConversationId::new(),
        ConversationId::new(),
        ConversationId::new(),
    );
    store
        .push(
            id,
            &[conversation(a, 1, b"a"), delete_conversation(b, 1)],
            Timestamp(1_000),
        )
        .await
        .unwrap();
    store
        .push(
            id,
            &[conversation(c, 1, b"c"), delete_conversation(d, 1)],
            Timestamp(5_000),
        )
        .await
        .unwrap();
    store
        .push(bystander, &[conversation(a, 1, b"bob")], Timestamp(1_000))
        .await
        .unwrap();

    let far = Timestamp(i64::MIN);
    let report = store
        .purge(PurgePlan {
            tombstones_before: Timestamp(2_000),
            op_results_before: far,
            sessions_used_before: far,
            sessions_created_before: far,
            throttle_before: far,
        })
        .await
        .unwrap();
    assert_eq!(report.tombstones, 1);

    for stale in [0, 1] {
        assert_eq!(
            store.pull(id, at(store, stale), 10).await.unwrap(),
            Pull::ResyncRequired,
            "cursor {stale}"
        );
    }
    let rest = pull_all(store, id, 2).await;
    assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(pull_all(store, id, 4).await.is_empty());
    // A cursor from beyond this server's feed was issued by another copy
    // of the database.
    assert_eq!(
        store.pull(id, at(store, 99), 10).await.unwrap(),
        Pull::Restored
    );
    // Other accounts are unaffected.
    assert_eq!(pull_all(store, bystander, 0).await.len(), 1);
    // The snapshot still has every live record.
    let mut live = bodies(&live_snapshot(store, id).await);
    live.sort();
    assert_eq!(live, vec![b"a".to_vec(), b"c".to_vec()]);
}

async fn snapshot_pages_live_records_in_key_order(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let (c1, c2) = (ConversationId::new(), ConversationId::new());
    let gone = MessageId::new();
    store
        .push(
            id,
            &[
                message(MessageId::new(), c1, 5, b"m1"),
                conversation(c2, 5, b"c2"),
                message(MessageId::new(), c2, 5, b"m2"),
                conversation(c1, 5, b"c1"),
                message(gone, c1, 5, b"gone"),
                message(MessageId::new(), c1, 6, b"m3"),
            ],
            NOW,
        )
        .await
        .unwrap();
    store
        .push(id, &[delete_message(gone, c1, 9)], NOW)
        .await
        .unwrap();

    let first = snapshot_page(store, id, None, 2).await;
    assert_eq!(first.head, Some(Cursor::new(store.epoch(), Seq(7))));
    assert!(first.has_more);
    let mut all = first.changes.clone();
    let mut after = all.last().map(|c| SnapshotKey {
        epoch: Some(first.epoch),
        kind: c.change.kind,
        id: c.change.entity_id,
    });
    loop {
        let page = snapshot_page(store, id, after, 2).await;
        assert_eq!(page.head, None, "only the first page reports the head");
        all.extend(page.changes.iter().cloned());
        after = page.changes.last().map(|c| SnapshotKey {
            epoch: Some(page.epoch),
            kind: c.change.kind,
            id: c.change.entity_id,
        });
        if !page.has_more {
            break;
        }
    }
    assert_eq!(all.len(), 5, "live records only");
    assert!(all.iter().all(|c| !c.change.is_delete()));
    let keys: Vec<(EntityKind, String)> = all
        .iter()
        .map(|c| (c.change.kind, c.change.entity_id.to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "conversations first, then by id");
    assert_eq!(keys[0].0, EntityKind::Conversation);
}

/// Pull and snapshot pages end at `PAGE_BYTES` of bodies (a page of 1,000
/// multi-megabyte records once took 747 MB of server memory), always carry
/// at least one record, and keep `has_more` right; paging through them
/// returns everything once.
async fn pages_are_bounded_by_bytes_as_well_as_count(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let budget = chatvault_server::store::PAGE_BYTES as usize;
    let conv = ConversationId::new();
    let mut sizes = vec![budget * 2 / 5; 5]; // two per page
    sizes.push(budget + 1); // alone, over the budget
    sizes.push(10);
    for (i, size) in sizes.iter().enumerate() {
        let body = vec![b'a' + i as u8; *size];
        store
            .push(
                id,
                &[message(MessageId::new(), conv, 10 + i as u64, &body)],
                NOW,
            )
            .await
            .unwrap();
    }
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let Pull::Changes {
            changes, has_more, ..
        } = store.pull(id, at(store, after), 1000).await.unwrap()
        else {
            panic!("unexpected resync");
        };
        assert!(
            !changes.is_empty(),
            "a page is never empty while more follow"
        );
        let bytes: usize = bodies(&changes).iter().map(Vec::len).sum();
        assert!(
            changes.len() == 1 || bytes <= budget,
            "{bytes} bytes in {}",
            changes.len()
        );
        after = changes.last().unwrap().seq;
        pages.push(changes.len());
        if !has_more {
            break;
        }
    }
    // Two and two; the fifth alone (with the sixth it would pass the
    // budget); the sixth, over the budget by itself, alone; the last.
    assert_eq!(pages, vec![2, 2, 1, 1, 1]);

    // Snapshot pages (in key order) obey the same bound and miss nothing.
    let mut seen = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let page = snapshot_page(store, id, after, 1000).await;
        assert!(!page.changes.is_empty());
        let bytes: usize = bodies(&page.changes).iter().map(Vec::len).sum();
        assert!(page.changes.len() == 1 || bytes <= budget, "{bytes} bytes");
        for c in &page.changes {
            assert!(seen.insert(c.change.entity_id), "listed twice");
        }
        after = page.changes.last().map(|c| SnapshotKey {
            epoch: Some(page.epoch),
            kind: c.change.kind,
            id: c.change.entity_id,
        });
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen.len(), sizes.len());
}

async fn accounts_never_see_each_other(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let alice = account(store, "alice").await;
    let mallory = account(store, "mallory").await;
    let conv = ConversationId::new();
    let alices = conversation(conv, 50, b"alice's secret");
    store
        .push(alice, std::slice::from_ref(&alices), NOW)
        .await
        .unwrap();

    assert!(pull_all(store, mallory, 0).await.is_empty());
    assert!(live_snapshot(store, mallory).await.is_empty());

    // Same entity id, older version, even the same op id: it is Mallory's
    // own record, and Alice's is untouched.
    let mut forged = conversation(conv, 10, b"mallory's overwrite");
    forged.op_id = alices.op_id;
    let out = store.push(mallory, &[forged], NOW).await.unwrap();
    assert_eq!(out.results, vec![Outcome::Applied(Seq(1))]);
    let deletion = store
        .push(mallory, &[delete_conversation(conv, 99)], NOW)
        .await
        .unwrap();
    assert_eq!(deletion.results, vec![Outcome::Applied(Seq(2))]);

    let alice_view = pull_all(store, alice, 0).await;
    assert_eq!(alice_view.len(), 1);
    assert_eq!(alice_view[0].change, alices);
    assert_eq!(
        bodies(&live_snapshot(store, alice).await),
        vec![b"alice's secret".to_vec()]
    );
}

async fn concurrent_pushes_get_distinct_gapless_sequence_numbers(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let id = account(f.store.as_ref(), "alice").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&f.store);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for _ in 0..5 {
                    let change = conversation(ConversationId::new(), 1, b"x");
                    let out = store.push(id, &[change], NOW).await.expect("push");
                    seqs.push(applied(out.results[0]));
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<u64>>());
    assert_eq!(pull_all(f.store.as_ref(), id, 0).await.len(), 40);
}

async fn purge_expires_sessions_throttle_and_remembered_ops(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let (idle, young) = (SessionHash([1; 32]), SessionHash([2; 32]));
    for (hash, at) in [(idle, 1_000), (young, 9_000)] {
        store
            .create_session(NewSession {
                hash,
                account: id,
                client: ClientKind::Any,
                created_at: Timestamp(at),
            })
            .await
            .unwrap();
    }
    store
        .record_login_failure(&name("alice"), Timestamp(1_000))
        .await
        .unwrap();
    let change = conversation(ConversationId::new(), 1, b"x");
    store
        .push(id, std::slice::from_ref(&change), Timestamp(1_000))
        .await
        .unwrap();

    let report = store
        .purge(PurgePlan {
            tombstones_before: Timestamp(5_000),
            op_results_before: Timestamp(5_000),
            sessions_used_before: Timestamp(5_000),
            sessions_created_before: Timestamp(0),
            throttle_before: Timestamp(5_000),
        })
        .await
        .unwrap();
    assert_eq!(
        (
            report.sessions,
            report.throttle,
            report.op_results,
            report.tombstones
        ),
        (1, 1, 1, 0)
    );
    assert!(store.session(&idle).await.unwrap().is_none());
    assert!(store.session(&young).await.unwrap().is_some());
    assert!(store.throttle(&name("alice")).await.unwrap().is_none());
    // Forgotten op: a replay is now judged by LWW, which keeps the record.
    let replay = store.push(id, &[change], Timestamp(6_000)).await.unwrap();
    assert_eq!(replay.results, vec![Outcome::Superseded]);
    assert_eq!(pull_all(store, id, 0).await.len(), 1);
}

/// Every opening of the database begins an epoch; cursors name theirs. A
/// cursor continues only where the database it came from could have
/// issued it: its epoch is known here, it is not ahead of the feed, and no
/// later epoch wrote at or before its position (which is what a restored
/// backup does once it is written to again).
async fn cursors_from_another_copy_of_the_database_are_refused(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let first_epoch = store.epoch();
    let c = ConversationId::new();
    let pushed = store
        .push(
            id,
            &[
                conversation(c, 1, b"a"),
                conversation(ConversationId::new(), 1, b"b"),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(pushed.head, Cursor::new(first_epoch, Seq(2)));
    // Never issued here: an unknown epoch, or ahead of the feed.
    for foreign in [
        Cursor::new(Epoch::random(), Seq(1)),
        Cursor::new(first_epoch, Seq(3)),
    ] {
        assert_eq!(
            store.pull(id, foreign, 10).await.unwrap(),
            Pull::Restored,
            "{foreign}"
        );
    }
    let unknown_key = SnapshotKey {
        epoch: Some(Epoch::random()),
        kind: EntityKind::Conversation,
        id: c.into(),
    };
    assert_eq!(
        store.snapshot(id, Some(unknown_key), 10).await.unwrap(),
        Snapshot::Restored
    );

    // The server restarts: a new epoch, and old cursors still continue.
    let reopened = chatvault_server::store::open(&f.db.url)
        .await
        .expect("store reopens");
    let second_epoch = reopened.epoch();
    assert_ne!(second_epoch, first_epoch);
    assert_eq!(pull_from(reopened.as_ref(), id, pushed.head).await, vec![]);
    let again = reopened
        .push(id, &[conversation(c, 2, b"a2")], NOW)
        .await
        .unwrap();
    assert_eq!(again.head, Cursor::new(second_epoch, Seq(3)));
    let after_first = pull_from(reopened.as_ref(), id, pushed.head).await;
    assert_eq!(
        after_first.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(pull_from(reopened.as_ref(), id, again.head).await, vec![]);
    // The first epoch never reached 3: a cursor saying so came from a copy
    // that wrote more before it was replaced by an older backup.
    assert_eq!(
        reopened
            .pull(id, Cursor::new(first_epoch, Seq(3)), 10)
            .await
            .unwrap(),
        Pull::Restored
    );
    // Snapshot keys of known epochs keep working.
    let known_key = SnapshotKey {
        epoch: Some(first_epoch),
        ..unknown_key
    };
    assert!(matches!(
        reopened.snapshot(id, Some(known_key), 10).await.unwrap(),
        Snapshot::Page(_)
    ));
    // Another account's feed is judged on its own: it never wrote in the
    // second epoch.
    let bob = account(reopened.as_ref(), "bob").await;
    assert_eq!(
        pull_from(reopened.as_ref(), bob, Cursor::new(first_epoch, Seq(0))).await,
        vec![]
    );
}

/// An operator restores an older backup: every cursor issued after it —
/// ahead of the restored feed, from an epoch the backup never had, or at
/// a position the restored database hands out again — is refused as
/// `Restored`; cursors from before the backup continue.
async fn a_restored_backup_refuses_cursors_issued_after_it(backend: Backend) {
    let Some(Fixture { store, db }) = fixture(backend).await else {
        return;
    };
    let id = account(store.as_ref(), "alice").await;
    let write = |wall| vec![conversation(ConversationId::new(), wall, b"x")];
    let before = store.push(id, &write(1), NOW).await.unwrap().head;
    let backup = db.backup().await;
    // After the backup: a write in the same run, then one after a restart.
    let same_run = store.push(id, &write(2), NOW).await.unwrap().head;
    drop(store);
    let restarted = chatvault_server::store::open(&db.url).await.unwrap();
    let after_restart = restarted.push(id, &write(3), NOW).await.unwrap().head;
    let unknown_key = SnapshotKey {
        epoch: Some(restarted.epoch()),
        kind: EntityKind::Conversation,
        id: ConversationId::new().into(),
    };
    drop(restarted);

    db.restore(&backup).await;
    let restored = chatvault_server::store::open(&db.url).await.unwrap();
    for stale in [same_run, after_restart] {
        assert_eq!(
            restored.pull(id, stale, 10).await.unwrap(),
            Pull::Restored,
            "{stale}"
        );
    }
    assert_eq!(pull_from(restored.as_ref(), id, before).await, vec![]);
    assert_eq!(
        restored.snapshot(id, Some(unknown_key), 10).await.unwrap(),
        Snapshot::Restored
    );
    // A new write takes position 2 again: the cursor that named the lost
    // position 2 is still refused, the one from before the backup is not.
    let reused = restored.push(id, &write(4), NOW).await.unwrap().head;
    assert_eq!(reused.seq, same_run.seq);
    assert_eq!(
        restored.pull(id, same_run, 10).await.unwrap(),
        Pull::Restored
    );
    assert_eq!(pull_from(restored.as_ref(), id, before).await.len(), 1);
    assert_eq!(pull_from(restored.as_ref(), id, reused).await, vec![]);
}

/// The deletion rule's memory on the server: a recreated conversation
/// keeps covering messages from before its deletion and is served with
/// that mark, and a purged tombstone leaves a purge mark below which
/// writes to records the server forgot are superseded.
async fn deletion_and_purge_marks_outlive_their_tombstones(backend: Backend) {
    let Some(f) = fixture(backend).await else {
        return;
    };
    let store = f.store.as_ref();
    let id = account(store, "alice").await;
    let (conv, gone) = (ConversationId::new(), ConversationId::new());
    let push = |changes: Vec<Change>, now| async move {
        store.push(id, &changes, now).await.unwrap().results
    };
    push(
        vec![
            conversation(conv, 10, b"c"),
            message(MessageId::new(), conv, 11, b"m"),
            delete_conversation(conv, 20),
            conversation(conv, 30, b"again"),
        ],
        NOW,
    )
    .await;
    let served = live_snapshot(store, id).await;
    assert_eq!(served.len(), 1, "the message went with the deletion");
    match &served[0].change.op {
        chatvault_core::ChangeOp::Upsert(p) => {
            assert_eq!(p.deleted_through, Some(crate::common::hlc(20)));
        }
        other => panic!("expected the recreated conversation, got {other:?}"),
    }
    // Written before the deletion, pushed after the recreation: covered.
    assert_eq!(
        push(vec![message(MessageId::new(), conv, 15, b"late")], NOW).await,
        vec![Outcome::Superseded]
    );
    assert_eq!(
        push(vec![message(MessageId::new(), conv, 25, b"after")], NOW)
            .await
            .len(),
        1
    );

    // A conversation deleted at 40, its tombstone purged.
    push(
        vec![conversation(gone, 35, b"g"), delete_conversation(gone, 40)],
        Timestamp(1_000),
    )
    .await;
    let far = Timestamp(i64::MIN);
    let report = store
        .purge(PurgePlan {
            tombstones_before: Timestamp(2_000),
            op_results_before: far,
            sessions_used_before: far,
            sessions_created_before: far,
            throttle_before: far,
        })
        .await
        .unwrap();
    assert_eq!(report.tombstones, 1);
    // Stale writes to it, or to anything else the server holds nothing
    // of, stamped at or before the purge mark: superseded, not applied.
    assert_eq!(
        push(
            vec![
                conversation(gone, 38, b"stale edit"),
                message(MessageId::new(), gone, 39, b"stale message"),
            ],
            NOW
        )
        .await,
        vec![Outcome::Superseded, Outcome::Superseded]
    );
    // Held records are judged by their own versions; newer writes apply.
    let applied = push(
        vec![
            conversation(conv, 31, b"held"),
            conversation(gone, 41, b"new"),
        ],
        NOW,
    )
    .await;
    assert!(
        applied.iter().all(|o| matches!(o, Outcome::Applied(_))),
        "{applied:?}"
    );
}

backend_tests!(
    pages_are_bounded_by_bytes_as_well_as_count,
    deletion_and_purge_marks_outlive_their_tombstones,
    a_restored_backup_refuses_cursors_issued_after_it,
    cursors_from_another_copy_of_the_database_are_refused,
    accounts_round_trip_and_names_are_unique,
    server_secret_is_created_once,
    sessions_are_stored_touched_and_revoked,
    throttle_counts_failures_per_username_and_clears,
    credential_change_revokes_every_other_session,
    push_assigns_sequence_numbers_and_pull_returns_changes_verbatim,
    replayed_ops_get_the_same_outcome_and_change_nothing,
    last_writer_wins_by_version_including_deletes,
    conversation_delete_covers_its_older_messages,
    rewritten_records_move_to_the_end_of_the_feed,
    purge_drops_old_tombstones_and_forces_resync,
    snapshot_pages_live_records_in_key_order,
    accounts_never_see_each_other,
    concurrent_pushes_get_distinct_gapless_sequence_numbers,
    purge_expires_sessions_throttle_and_remembered_ops,
);
