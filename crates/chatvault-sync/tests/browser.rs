//! The sync client in a browser (headless Chromium, wasm-bindgen-test)
//! against a real `chatvault-server`: the one `cargo xtask test` starts on
//! embedded SQLite in a temporary directory, on a free loopback port,
//! allowing the test page's origin (`--allowed-origin`). Its URL arrives
//! at compile time in `CHATVAULT_BROWSER_TEST_SERVER`; without it the test
//! fails (run it through `cargo xtask test`).
//!
//! Two encrypted IndexedDB vaults of one account in one page: A registers
//! and writes, B joins as a second device and receives the history, then
//! A's next write reaches B through the realtime poke (B's periodic sync is
//! an hour away, so nothing else can bring it); while the page is offline
//! B pauses and gets nothing, and the `online` event brings it all.
//!
//! Sessions are the server's HttpOnly cookie (login as `browser`): the
//! page never holds a token, which the test checks (`document.cookie`, Web
//! Storage). Both vaults talk to the same host, so they
//! share the browser's one cookie jar — as two tabs of one app do — and
//! B's sign-in replaces A's cookie; both then ride B's session, which is
//! the same account (see `browser.rs` in the crate for why that is fine).

#![cfg(target_family = "wasm")]
// One thread in a browser: vaults and stores hold JS handles (not `Send`)
// and their `Arc`s are plain reference counts.
#![allow(clippy::arc_with_non_send_sync)]

use std::sync::Arc;
use std::time::Duration;

use chatvault::{
    ConversationId, ListConversations, ListMessages, NewConversation, NewMessage, Role, Store,
    SystemClock, Vault,
};
use chatvault_indexeddb::{IndexedDbOptions, IndexedDbStore};
use chatvault_sync::{SyncClient, SyncOptions, SyncState, SyncStatus};
use tokio::sync::watch;
use wasm_bindgen::JsCast as _;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const PASS: &str = "correct horse battery staple";

fn server() -> &'static str {
    match option_env!("CHATVAULT_BROWSER_TEST_SERVER") {
        Some(url) => url,
        None => panic!(
            "CHATVAULT_BROWSER_TEST_SERVER is not set: run the browser tests with \
             `cargo xtask test`, which starts the server they sync with"
        ),
    }
}

/// A database name no earlier run used.
fn unique(what: &str) -> String {
    let nonce = (js_sys::Math::random() * 1e12) as u64;
    format!("chatvault-sync-test-{what}-{nonce}")
}

async fn store(name: &str) -> Arc<dyn Store> {
    Arc::new(
        IndexedDbStore::open(name, IndexedDbOptions::default())
            .await
            .expect("IndexedDB opens"),
    )
}

fn options() -> SyncOptions {
    SyncOptions {
        // No periodic sync to hide behind: only pokes bring changes.
        interval: Duration::from_secs(3600),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..SyncOptions::default()
    }
}

fn sleep(ms: i32) -> wasm_bindgen_futures::JsFuture {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .expect("a window")
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("setTimeout");
    });
    wasm_bindgen_futures::JsFuture::from(promise)
}

/// Waits (at most `secs`) until the status satisfies `ok`.
async fn wait_status(
    rx: &mut watch::Receiver<SyncStatus>,
    secs: u32,
    ok: impl Fn(&SyncStatus) -> bool,
) {
    for _ in 0..secs * 20 {
        if ok(&rx.borrow_and_update()) {
            return;
        }
        let _ = sleep(50).await;
    }
    panic!("status never got there: {:?}", *rx.borrow());
}

/// The contents of the conversation's messages, oldest first.
async fn contents(vault: &Vault, conversation: ConversationId) -> Vec<String> {
    let page = vault
        .messages(conversation, ListMessages::default())
        .await
        .expect("messages");
    let mut all: Vec<String> = page.items.into_iter().map(|m| m.content).collect();
    all.reverse();
    all
}

/// Waits (at most `secs`) until the vault holds `want` in the conversation.
async fn wait_contents(vault: &Vault, conversation: ConversationId, want: &[&str], secs: u32) {
    for _ in 0..secs * 20 {
        if contents(vault, conversation).await == want {
            return;
        }
        let _ = sleep(50).await;
    }
    panic!(
        "the vault holds {:?}, expected {want:?}",
        contents(vault, conversation).await
    );
}

fn dispatch(event: &str) {
    let window = web_sys::window().expect("a window");
    let event = web_sys::Event::new(event).expect("an event");
    window
        .unchecked_ref::<web_sys::EventTarget>()
        .dispatch_event(&event)
        .expect("dispatched");
}

#[wasm_bindgen_test]
async fn a_second_browser_vault_joins_gets_the_history_and_realtime_pokes() {
    let user = unique("user").replace("chatvault-sync-test-", "");
    let (db_a, db_b) = (unique("a"), unique("b"));
    let vault_options = chatvault::testing::fast_options(Arc::new(SystemClock));

    // A: a new encrypted vault registers and writes.
    let vault_a = Vault::builder()
        .store(store(&db_a).await)
        .options(vault_options.clone())
        .passphrase(PASS)
        .open()
        .await
        .expect("A's vault opens");
    let a = SyncClient::register(Arc::new(vault_a), server(), &user, PASS, options())
        .await
        .expect("A registers");
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("trip"))
        .await
        .expect("conversation");
    for text in ["where to?", "lisbon"] {
        a.vault()
            .add_message(conv.id, NewMessage::new(Role::User, text))
            .await
            .expect("message");
    }
    let report = a.sync_once().await.expect("A syncs");
    assert_eq!(report.push.applied, 3, "{report:?}");
    assert_eq!(a.status().borrow().pending, 0);

    // B: a second device joins with an empty database and gets the history.
    let b = SyncClient::join(
        store(&db_b).await,
        vault_options,
        server(),
        &user,
        PASS,
        options(),
    )
    .await
    .expect("B joins");
    b.sync_once().await.expect("B syncs");
    let listed = b
        .vault()
        .conversations(ListConversations::default())
        .await
        .expect("conversations");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].title, "trip");
    assert_eq!(contents(b.vault(), conv.id).await, ["where to?", "lisbon"]);

    // Signed in twice, yet nothing a page script can read holds a session:
    // the cookie is HttpOnly and nothing went to Web Storage.
    let window = web_sys::window().expect("a window");
    let document = js_sys::Reflect::get(&window, &"document".into()).expect("a document");
    let cookies = js_sys::Reflect::get(&document, &"cookie".into())
        .ok()
        .and_then(|c| c.as_string())
        .unwrap_or_default();
    assert!(
        !cookies.contains("cv_session"),
        "script-readable: {cookies:?}"
    );
    for storage in ["localStorage", "sessionStorage"] {
        let storage = js_sys::Reflect::get(&window, &storage.into()).expect("web storage");
        let length = js_sys::Reflect::get(&storage, &"length".into())
            .ok()
            .and_then(|l| l.as_f64());
        assert_eq!(length, Some(0.0), "something was put in web storage");
    }

    // B runs its loop: it connects its WebSocket and settles.
    let task = b.spawn();
    let mut status = b.status();
    wait_status(&mut status, 10, |s| {
        s.realtime && s.state == SyncState::Idle
    })
    .await;
    let synced_before = b.status().borrow().last_synced_at;

    // A writes again; only the poke can bring it to B within the hour.
    a.vault()
        .add_message(conv.id, NewMessage::new(Role::Assistant, "book it"))
        .await
        .expect("message");
    a.sync_once().await.expect("A syncs");
    wait_contents(b.vault(), conv.id, &["where to?", "lisbon", "book it"], 10).await;
    wait_status(&mut status, 5, |s| {
        s.last_synced_at != synced_before && s.state == SyncState::Idle
    })
    .await;

    // Offline: B pauses (no requests, no socket) and misses A's write ...
    dispatch("offline");
    wait_status(&mut status, 5, |s| {
        s.state == SyncState::Offline && !s.realtime
    })
    .await;
    a.vault()
        .add_message(conv.id, NewMessage::new(Role::User, "while you were out"))
        .await
        .expect("message");
    a.sync_once().await.expect("A syncs");
    let _ = sleep(1000).await;
    assert_eq!(
        contents(b.vault(), conv.id).await,
        ["where to?", "lisbon", "book it"],
        "a paused client pulled"
    );
    assert_eq!(b.status().borrow().state, SyncState::Offline);
    // ... and catches up as soon as the browser is online again.
    dispatch("online");
    wait_contents(
        b.vault(),
        conv.id,
        &["where to?", "lisbon", "book it", "while you were out"],
        10,
    )
    .await;
    wait_status(&mut status, 10, |s| s.realtime).await;
    task.stop().await;

    drop((a, b));
    // In the background: a deletion waits for the connections to close.
    for name in [db_a, db_b] {
        wasm_bindgen_futures::spawn_local(async move {
            let _ = IndexedDbStore::delete(&name).await;
        });
    }
}
