//! One rule for deleting a conversation against concurrent edits and
//! messages (docs/protocol.md, "Deleting a conversation"), through real
//! devices and a real server, in every order: A deletes the conversation,
//! B renames it, B adds a message; each device syncs right after its own
//! writes (online) or only at the end (offline); the server purges
//! tombstones past its horizon before the end, or not.
//!
//! The rule predicts the end state from the stamps alone: the conversation
//! exists iff B's rename came after A's delete; it then holds B's message
//! iff that came after the delete too; the message from before everything
//! is gone in every case. Both devices must show exactly that.

use std::collections::BTreeMap;
use std::time::Duration;

use chatvault::{ConversationUpdate, NewConversation, NewMessage, Role, VaultError};
use chatvault_server::RateLimit;

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A deletes the conversation.
    Delete,
    /// B renames it.
    Rename,
    /// B adds a message.
    Message,
}

const ORDERS: [[Event; 3]; 6] = {
    use Event::*;
    [
        [Delete, Rename, Message],
        [Delete, Message, Rename],
        [Rename, Delete, Message],
        [Rename, Message, Delete],
        [Message, Delete, Rename],
        [Message, Rename, Delete],
    ]
};

/// Whether a device refused a write because the conversation was already
/// gone there (it pulled the deletion first): the write never happened.
fn happened<T>(result: Result<T, VaultError>) -> bool {
    match result {
        Ok(_) => true,
        Err(VaultError::NotFound { .. }) => false,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

struct Scenario {
    order: [Event; 3],
    a_online: bool,
    b_online: bool,
    horizon: bool,
}

impl Scenario {
    async fn run(&self, server: &TestServer, user: &str) {
        let url = server.url();
        let (a, b, clock_a, clock_b) = two_devices(server, &url, user).await;
        let conv = a
            .vault()
            .create_conversation(NewConversation::titled("original"))
            .await
            .unwrap();
        a.vault()
            .add_message(conv.id, NewMessage::new(Role::User, "from before"))
            .await
            .unwrap();
        a.sync_once().await.unwrap();
        b.sync_once().await.unwrap();

        // Each event a second after the last, so stamps follow the order.
        let mut at: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, event) in self.order.iter().enumerate() {
            clock_a.advance(1_000);
            clock_b.advance(1_000);
            server.clock.advance(Duration::from_secs(1));
            match event {
                Event::Delete => {
                    a.vault().delete_conversation(conv.id).await.unwrap();
                    at.insert("delete", i);
                    if self.a_online {
                        a.sync_once().await.unwrap();
                    }
                }
                Event::Rename | Event::Message => {
                    let done = if *event == Event::Rename {
                        let update = ConversationUpdate {
                            title: Some("renamed".into()),
                            ..Default::default()
                        };
                        happened(b.vault().update_conversation(conv.id, update).await)
                    } else {
                        let late = NewMessage::new(Role::User, "late");
                        happened(b.vault().add_message(conv.id, late).await)
                    };
                    if done {
                        at.insert(
                            if *event == Event::Rename {
                                "rename"
                            } else {
                                "message"
                            },
                            i,
                        );
                    }
                    if self.b_online {
                        b.sync_once().await.unwrap();
                    }
                }
            }
        }
        if self.horizon {
            server.clock.advance(Duration::from_secs(31 * 86_400));
            server.server().run_maintenance().await.unwrap();
        }
        for _ in 0..2 {
            a.sync_once().await.unwrap();
            b.sync_once().await.unwrap();
        }

        let deleted_at = at["delete"];
        let after_delete = |event: &str| at.get(event).is_some_and(|i| *i > deleted_at);
        let mut expected = BTreeMap::new();
        if after_delete("rename") {
            let messages = if after_delete("message") {
                vec!["late".to_owned()]
            } else {
                vec![]
            };
            expected.insert(conv.id.to_string(), ("renamed".to_owned(), messages));
        }
        let on_a = visible_state(a.vault()).await;
        let on_b = visible_state(b.vault()).await;
        assert_eq!(on_a, expected, "device A; happened: {at:?}");
        assert_eq!(on_b, expected, "device B; happened: {at:?}");
        for device in [&a, &b] {
            let (pending, parked) = device.vault().replica().outbox_counts().await.unwrap();
            assert_eq!((pending, parked), (0, 0), "nothing left to sync or parked");
        }
    }
}

async fn every_order(horizon: bool) {
    // Dozens of sign-ins from one address: no rate limits here.
    let server = TestServer::start_with(|c| {
        c.rate_limits.per_address = RateLimit::UNLIMITED;
        c.rate_limits.global = RateLimit::UNLIMITED;
    })
    .await;
    let mut n = 0;
    for order in ORDERS {
        for (a_online, b_online) in [(true, true), (true, false), (false, true), (false, false)] {
            let scenario = Scenario {
                order,
                a_online,
                b_online,
                horizon,
            };
            n += 1;
            tracing::info!(?order, a_online, b_online, horizon, "deletion scenario");
            scenario.run(&server, &format!("del{n}")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_rename_and_message_in_every_order_end_as_the_rule_says() {
    every_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_holds_past_the_tombstone_horizon() {
    every_order(true).await;
}

/// Retention deletes a conversation as any local deletion does: its
/// tombstone is stamped above the conversation's version and every message
/// of it the device holds (docs/protocol.md, "Clock rules on a device" and
/// "Deleting a conversation"), not merely at the device's clock. Here that
/// clock is behind what it deletes: B's clock runs ten minutes ahead
/// (within the server's bound), and A restarted after pulling B's
/// conversations, so its clock resumed from its own mark, at its wall
/// clock. (In the simulation, seed 464 at 100 steps: a device whose clock
/// re-based on restart stamped a retention tombstone twelve minutes below
/// the rename it replaced; an older version the restored server served
/// then beat the tombstone, and the device listed the conversation again,
/// older than it had shown it.) Stamped below, the deletion loses to the
/// version it deleted: the server supersedes it and the conversation comes
/// back on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_above_versions_ahead_of_the_clock() {
    use chatvault::{MemoryStore, RetentionMode, RetentionPolicy, Store, Vault};
    use chatvault_core::EntityKind;
    use chatvault_sync::SyncClient;
    use std::sync::Arc;

    let server = TestServer::start().await;
    let url = server.url();
    let (clock_a, clock_b) = (clock_at(&server), clock_at(&server));
    let store_a: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let vault_a = Vault::open_encrypted(store_a.clone(), PASS, vault_options(clock_a.clone()))
        .await
        .unwrap();
    let a = SyncClient::register(Arc::new(vault_a), &url, "ruth", PASS, options())
        .await
        .unwrap();
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(clock_b.clone()),
        &url,
        "ruth",
        PASS,
        options(),
    )
    .await
    .unwrap();

    clock_b.advance(10 * 60_000);
    let old = b
        .vault()
        .create_conversation(NewConversation::titled("old"))
        .await
        .unwrap();
    let in_old = b
        .vault()
        .add_message(old.id, NewMessage::new(Role::User, "in old"))
        .await
        .unwrap();
    clock_b.advance(1_000);
    let new = b
        .vault()
        .create_conversation(NewConversation::titled("new"))
        .await
        .unwrap();
    b.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    drop(a);

    // A restarts; its clock resumes at its wall clock, below B's stamps.
    let vault_a = Vault::open_encrypted(store_a.clone(), PASS, vault_options(clock_a.clone()))
        .await
        .unwrap();
    let a = SyncClient::resume(Arc::new(vault_a), &url, "ruth", options())
        .await
        .unwrap()
        .expect("a saved session");
    let policy = RetentionPolicy {
        max_conversations: Some(1),
        ..RetentionPolicy::default()
    };
    let run = a
        .vault()
        .run_retention(&policy, RetentionMode::Apply)
        .await
        .unwrap();
    let deleted: Vec<_> = run.plan.delete.iter().map(|d| d.id).collect();
    assert_eq!(deleted, vec![old.id]);
    let tombstone = store_a
        .tombstone(EntityKind::Conversation, old.id.into())
        .await
        .unwrap()
        .expect("a tombstone")
        .version;
    assert!(
        tombstone > old.version && tombstone > in_old.version,
        "retention stamped its tombstone {tombstone} at or below what it deleted: the \
         conversation at {}, its message at {}",
        old.version,
        in_old.version
    );

    for device in [&a, &b, &a] {
        device.sync_once().await.unwrap();
    }
    let expected: BTreeMap<String, (String, Vec<String>)> =
        [(new.id.to_string(), ("new".to_owned(), Vec::new()))]
            .into_iter()
            .collect();
    assert_eq!(visible_state(a.vault()).await, expected, "on A");
    assert_eq!(visible_state(b.vault()).await, expected, "on B");
}
