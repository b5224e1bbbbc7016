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
