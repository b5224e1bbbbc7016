//! Accounts: refusals are clear errors that change nothing; a passphrase
//! change reaches the server and the vault, signs the other device out,
//! and that device recovers with the new passphrase — also from a store
//! it can no longer open locally.

use std::sync::Arc;

use chatvault::{MemoryStore, NewConversation, Store, SystemClock, Vault, VaultError};
use chatvault_sync::{SyncClient, SyncError};

use crate::common::*;

const NEW_PASS: &str = "a brand new passphrase";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passphrases_and_other_refusals_are_clear() {
    let server = TestServer::start().await;
    let url = server.url();
    let mine = vault().await;

    // Registering with a passphrase that does not open the vault: refused
    // locally, nothing reaches the server.
    let err = SyncClient::register(mine.clone(), &url, "erin", "not it", options())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::WrongPassphrase), "{err:?}");
    assert_eq!(err.to_string(), "wrong passphrase for this vault");
    let err = SyncClient::login(mine.clone(), &url, "erin", PASS, options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::InvalidCredentials { .. }),
        "no account yet: {err:?}"
    );

    SyncClient::register(mine.clone(), &url, "erin", PASS, options())
        .await
        .expect("register");

    // Login on the vault with a wrong passphrase: the salt matches the
    // vault's, so it is refused without spending a login attempt.
    let err = SyncClient::login(mine.clone(), &url, "Erin", "not it", options())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::WrongPassphrase), "{err:?}");

    // A new device with a wrong passphrase: the server refuses the key.
    let err = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "erin",
        "not it",
        options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SyncError::InvalidCredentials { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("wrong passphrase"), "{err}");

    // Usernames are case-insensitive; a right passphrase still works.
    SyncClient::login(mine.clone(), &url, "ERIN", PASS, options())
        .await
        .expect("login");

    let err = SyncClient::register(vault().await, &url, "erin", PASS, options())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::UsernameTaken(_)), "{err:?}");

    // A plaintext vault never syncs.
    let plain = Arc::new(
        Vault::open(
            Arc::new(MemoryStore::new()),
            vault_options(Arc::new(SystemClock)),
        )
        .await
        .unwrap(),
    );
    let err = SyncClient::register(plain, &url, "frank", PASS, options())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::NotEncrypted), "{err:?}");

    let err = SyncClient::login(mine, "ftp://nowhere", "erin", PASS, options())
        .await
        .unwrap_err();
    assert!(matches!(err, SyncError::InvalidUrl { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_change_reaches_server_vault_and_other_devices() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "gina", PASS, options())
        .await
        .unwrap();
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("before the change"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = SyncClient::join(
        store_b.clone(),
        vault_options(Arc::new(SystemClock)),
        &url,
        "gina",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    let store_c: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let c = SyncClient::join(
        store_c.clone(),
        vault_options(Arc::new(SystemClock)),
        &url,
        "gina",
        PASS,
        options(),
    )
    .await
    .unwrap();
    c.sync_once().await.unwrap();

    // A wrong old passphrase changes nothing anywhere.
    let err = a.change_passphrase("not it", NEW_PASS).await.unwrap_err();
    assert!(matches!(err, SyncError::WrongPassphrase), "{err:?}");
    b.sync_once().await.expect("B still signed in");

    // A second client on B's vault (another process or tab of device B),
    // resumed from the session B saved.
    let b2 = SyncClient::resume(b.vault().clone(), &url, "gina", options())
        .await
        .unwrap()
        .expect("B's saved session");
    b2.sync_once().await.expect("B's second client syncs");

    a.change_passphrase(PASS, NEW_PASS).await.expect("change");
    a.sync_once()
        .await
        .expect("A's own session survives the change");
    let a_store = a.vault().store().clone();
    assert!(matches!(
        Vault::open_encrypted(a_store.clone(), PASS, vault_options(Arc::new(SystemClock))).await,
        Err(chatvault::VaultError::WrongPassphrase)
    ));
    Vault::open_encrypted(a_store, NEW_PASS, vault_options(Arc::new(SystemClock)))
        .await
        .expect("A's vault opens with the new passphrase");

    // B was signed out by the server; its old key no longer signs in.
    let err = b.sync_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("passphrase"), "{err}");
    assert!(matches!(
        b.status().borrow().state,
        chatvault_sync::SyncState::Error(_)
    ));
    assert_eq!(
        b.status().borrow().error_code.as_deref(),
        Some("unauthorized")
    );
    let err = b2.sync_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
    let err = b.sign_in(PASS).await.unwrap_err();
    assert!(
        matches!(err, SyncError::InvalidCredentials { .. }),
        "{err:?}"
    );
    b.sign_in(NEW_PASS)
        .await
        .expect("sign in with the new passphrase");
    b.sync_once().await.expect("B syncs again");
    assert_eq!(b.status().borrow().error_code, None);
    // B's second client adopts that sign-in from the vault, no passphrase.
    assert!(b2.reload_saved_session().await.unwrap());
    b2.sync_once()
        .await
        .expect("B's second client syncs on the adopted session");
    // B adopted the account's envelope: its vault opens with the new one.
    Vault::open_encrypted(store_b, NEW_PASS, vault_options(Arc::new(SystemClock)))
        .await
        .expect("B's vault opens with the new passphrase");

    // C restarts knowing only the new passphrase (as after a change whose
    // local half never happened): join on its old store recovers it.
    drop(c);
    assert!(Vault::open_encrypted(
        store_c.clone(),
        NEW_PASS,
        vault_options(Arc::new(SystemClock))
    )
    .await
    .is_err());
    let c = SyncClient::join(
        store_c,
        vault_options(Arc::new(SystemClock)),
        &url,
        "gina",
        NEW_PASS,
        options(),
    )
    .await
    .expect("join on the old store with the new passphrase");
    assert_eq!(
        c.vault().conversation(conv.id).await.unwrap().title,
        "before the change"
    );
    c.sync_once().await.expect("C syncs");

    // Logging out ends the session; syncing needs a sign-in again.
    c.logout().await.expect("logout");
    let err = c.sync_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
    c.sign_in(NEW_PASS).await.expect("sign in after logout");
    c.sync_once().await.expect("C syncs again");

    // A vault of another account is never given this account's key.
    let stranger = vault().await;
    stranger
        .create_conversation(NewConversation::titled("someone else's"))
        .await
        .unwrap();
    let err = SyncClient::join(
        stranger.store().clone(),
        vault_options(Arc::new(SystemClock)),
        &url,
        "gina",
        NEW_PASS,
        options(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SyncError::Vault(VaultError::ForeignAccountKey)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reaches_server_and_other_devices() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "hal", PASS, options())
        .await
        .unwrap();
    a.vault()
        .create_conversation(NewConversation::titled("before the rotation"))
        .await
        .unwrap();
    a.sync_once().await.unwrap();
    let store_b: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = SyncClient::join(
        store_b.clone(),
        vault_options(Arc::new(SystemClock)),
        &url,
        "hal",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    let before = a.vault().replica().key_envelope_json().await.unwrap();

    // A wrong passphrase rotates nothing anywhere.
    let err = a.rotate_data_key("not it").await.unwrap_err();
    assert!(matches!(err, SyncError::WrongPassphrase), "{err:?}");
    assert_eq!(
        a.vault().replica().key_envelope_json().await.unwrap(),
        before
    );
    b.sync_once().await.expect("B still signed in");

    a.rotate_data_key(PASS).await.expect("rotate");
    let after = a.vault().replica().key_envelope_json().await.unwrap();
    assert_ne!(after, before);
    let after = chatvault_crypto::KeyEnvelope::from_json(&after.unwrap()).unwrap();
    assert_eq!(after.key_ids().len(), 2, "the rotation added a key");
    let conv = a
        .vault()
        .create_conversation(NewConversation::titled("after the rotation"))
        .await
        .unwrap();
    a.sync_once().await.expect("A's own session survives");

    // B was signed out (the auth key changed with the salt); signing in
    // with the same passphrase adopts the rotated envelope, so what A
    // wrote under the new key reads on B.
    let err = b.sync_once().await.unwrap_err();
    assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
    b.sign_in(PASS).await.expect("sign in again");
    b.sync_once().await.expect("B pulls");
    assert_eq!(
        b.vault().conversation(conv.id).await.unwrap().title,
        "after the rotation"
    );
    let b_envelope = b.vault().replica().key_envelope_json().await.unwrap();
    assert_eq!(
        chatvault_crypto::KeyEnvelope::from_json(&b_envelope.unwrap())
            .unwrap()
            .key_ids(),
        after.key_ids()
    );
}

/// "Sign out everywhere else" sticks: the other device is told it was
/// signed out and does not quietly sign in again with the key it keeps (a
/// new session would undo what the account's owner asked for); its
/// changes stay pending until its user signs in with the passphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_devices_ask_for_the_passphrase_instead_of_signing_in_again() {
    let server = TestServer::start().await;
    let url = server.url();
    let a = SyncClient::register(vault().await, &url, "ivy", PASS, options())
        .await
        .unwrap();
    let b = SyncClient::join(
        Arc::new(MemoryStore::new()),
        vault_options(Arc::new(SystemClock)),
        &url,
        "ivy",
        PASS,
        options(),
    )
    .await
    .unwrap();
    b.sync_once().await.unwrap();
    assert_eq!(a.sessions().await.unwrap().len(), 2);

    assert_eq!(a.revoke_other_sessions().await.unwrap(), 1);
    let conv = b
        .vault()
        .create_conversation(NewConversation::titled("written after the revocation"))
        .await
        .unwrap();
    for _ in 0..3 {
        let err = b.sync_once().await.unwrap_err();
        assert!(matches!(err, SyncError::Unauthorized(_)), "{err:?}");
        assert_eq!(err.code(), "unauthorized");
        assert!(
            err.to_string().contains("signed out from another device"),
            "{err}"
        );
    }
    assert_eq!(
        a.sessions().await.unwrap().len(),
        1,
        "B did not sign in again by itself"
    );
    assert_eq!(b.status().borrow().pending, 1, "B's change waits");

    b.sign_in(PASS).await.expect("sign in with the passphrase");
    b.sync_once().await.expect("B pushes");
    a.sync_once().await.unwrap();
    assert_eq!(
        a.vault().conversation(conv.id).await.unwrap().title,
        "written after the revocation"
    );
    assert_eq!(a.sessions().await.unwrap().len(), 2);
}
