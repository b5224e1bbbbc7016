//! Key-value state sealed by a vault: the key-value conformance suite over
//! a sealed in-memory area, and the attacks the seal must stop — values
//! moved between keys, namespaces or vaults, edited bytes, plain values
//! slipped in — plus key changes and locking.

use chatvault::testing::{fast_options, SealedKvBackend, PASSPHRASE};
use chatvault::{
    KvError, KvLimits, KvStore, ManualClock, MemoryKvArea, MemoryStore, Timestamp, Vault,
    VaultError,
};
use chatvault_store::testing::KvBackend;
use std::sync::Arc;

/// Namespaces of one in-memory area, as in the store crate's own run.
struct Memory(MemoryKvArea);

impl KvBackend for Memory {
    async fn open(&self, name: &str, limits: KvLimits) -> chatvault::KvResult<Arc<dyn KvStore>> {
        Ok(Arc::new(self.0.namespace(name, limits)?))
    }
}

async fn backend() -> SealedKvBackend<Memory> {
    SealedKvBackend::new(Memory(MemoryKvArea::new())).await
}

mod sealed_memory {
    chatvault_store::kv_conformance_tests!(#[tokio::test], crate::backend);
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)))
}

async fn encrypted_vault() -> Vault {
    Vault::open_encrypted(
        Arc::new(MemoryStore::new()),
        PASSPHRASE,
        fast_options(clock()),
    )
    .await
    .unwrap()
}

fn damaged(result: chatvault::KvResult<Option<String>>) -> bool {
    matches!(result, Err(KvError::Damaged { .. }))
}

#[tokio::test]
async fn storage_holds_no_plaintext_of_a_sealed_value() {
    let vault = encrypted_vault().await;
    let area = MemoryKvArea::new();
    let kv = vault
        .sealed_kv(area.namespace("app", KvLimits::unbounded()).unwrap())
        .unwrap();
    kv.set("settings", r#"{"theme":"midnight-orchid"}"#)
        .await
        .unwrap();
    let raw = area
        .namespace("app", KvLimits::unbounded())
        .unwrap()
        .get("settings")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("cv1:"), "{raw}");
    assert!(!raw.contains("midnight"), "{raw}");
    assert_eq!(
        kv.get("settings").await.unwrap().as_deref(),
        Some(r#"{"theme":"midnight-orchid"}"#)
    );
    // Sealing twice gives two different texts (fresh nonces).
    kv.set("again", r#"{"theme":"midnight-orchid"}"#)
        .await
        .unwrap();
    let sealer = vault.kv_sealer().unwrap();
    assert_ne!(
        sealer.seal("app", "k", "same").unwrap(),
        sealer.seal("app", "k", "same").unwrap()
    );
}

#[tokio::test]
async fn a_value_moved_to_another_key_namespace_or_vault_does_not_open() {
    let vault = encrypted_vault().await;
    let sealer = vault.kv_sealer().unwrap();
    let sealed = sealer.seal("app", "draft", "meet at noon").unwrap();
    assert_eq!(
        sealer.open("app", "draft", &sealed).unwrap(),
        "meet at noon"
    );

    let area = MemoryKvArea::new();
    let raw = area.namespace("app", KvLimits::unbounded()).unwrap();
    let kv = vault.sealed_kv(raw.clone()).unwrap();
    raw.set("settings", &sealed).await.unwrap();
    assert!(damaged(kv.get("settings").await), "moved to another key");

    let other_ns = area.namespace("other", KvLimits::unbounded()).unwrap();
    other_ns.set("draft", &sealed).await.unwrap();
    let kv_other = vault.sealed_kv(other_ns).unwrap();
    assert!(
        damaged(kv_other.get("draft").await),
        "moved to another namespace"
    );

    let another = encrypted_vault().await;
    let theirs = another.sealed_kv(raw.clone()).unwrap();
    raw.set("draft", &sealed).await.unwrap();
    assert!(damaged(theirs.get("draft").await), "read by another vault");
    // The stored value is left alone: the rightful vault still reads it.
    assert_eq!(
        kv.get("draft").await.unwrap().as_deref(),
        Some("meet at noon")
    );
}

#[tokio::test]
async fn edited_truncated_or_plain_values_are_damaged_not_garbage() {
    let vault = encrypted_vault().await;
    let raw = MemoryKvArea::new()
        .namespace("app", KvLimits::unbounded())
        .unwrap();
    let kv = vault.sealed_kv(raw.clone()).unwrap();
    kv.set("k", "a secret of some length").await.unwrap();
    let sealed = raw.get("k").await.unwrap().unwrap();

    let mut flipped = sealed.clone().into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let edited = [
        String::from_utf8(flipped).unwrap(),
        sealed[..sealed.len() - 10].to_owned(),
        "cv1:".to_owned(),
        "cv1:not base64!".to_owned(),
        r#"{"theme":"dark"}"#.to_owned(),
        String::new(),
    ];
    for value in edited {
        raw.set("k", &value).await.unwrap();
        let result = kv.get("k").await;
        assert!(damaged(result.clone()), "{value:?}: {result:?}");
        assert_eq!(raw.get("k").await.unwrap().as_deref(), Some(value.as_str()));
    }
}

#[tokio::test]
async fn values_outlive_passphrase_changes_and_key_rotation() {
    let vault = encrypted_vault().await;
    let raw = MemoryKvArea::new()
        .namespace("app", KvLimits::unbounded())
        .unwrap();
    let kv = vault.sealed_kv(raw.clone()).unwrap();
    kv.set("before", "sealed with key 1").await.unwrap();
    vault
        .change_passphrase(PASSPHRASE, "a new passphrase")
        .await
        .unwrap();
    vault.rotate_data_key("a new passphrase").await.unwrap();
    assert_eq!(
        kv.get("before").await.unwrap().as_deref(),
        Some("sealed with key 1")
    );
    kv.set("after", "sealed with key 2").await.unwrap();
    let before = raw.get("before").await.unwrap().unwrap();
    let after = raw.get("after").await.unwrap().unwrap();
    let key_id = |stored: &str| {
        use base64::Engine;
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&stored[4..])
            .unwrap();
        u32::from_be_bytes(blob[1..5].try_into().unwrap())
    };
    assert_eq!(
        (key_id(&before), key_id(&after)),
        (1, 2),
        "sealed with the newest key"
    );
    assert_eq!(
        kv.get("after").await.unwrap().as_deref(),
        Some("sealed with key 2")
    );
}

#[tokio::test]
async fn a_locked_vault_seals_and_opens_nothing() {
    let vault = encrypted_vault().await;
    let raw = MemoryKvArea::new()
        .namespace("app", KvLimits::unbounded())
        .unwrap();
    let kv = vault.sealed_kv(raw.clone()).unwrap();
    kv.set("k", "v").await.unwrap();
    vault.lock();
    for result in [kv.get("k").await.map(|_| ()), kv.set("k", "w").await] {
        assert!(
            matches!(&result, Err(KvError::Unavailable { detail }) if detail.contains("locked")),
            "{result:?}"
        );
    }
    assert!(raw.get("k").await.unwrap().unwrap().starts_with("cv1:"));
}

#[tokio::test]
async fn a_plaintext_vault_has_no_sealer() {
    let vault = Vault::open(Arc::new(MemoryStore::new()), fast_options(clock()))
        .await
        .unwrap();
    assert!(matches!(vault.kv_sealer(), Err(VaultError::NotEncrypted)));
}

#[tokio::test]
async fn the_guard_of_the_wrapped_store_applies_to_the_sealed_form() {
    let vault = encrypted_vault().await;
    let limits = KvLimits {
        max_value_bytes: Some(200),
        max_total_bytes: None,
    };
    let raw = MemoryKvArea::new().namespace("app", limits).unwrap();
    let kv = vault.sealed_kv(raw).unwrap();
    kv.set("k", &"x".repeat(50)).await.unwrap();
    // 150 bytes fit plain but not sealed (about 4/3 of it plus 60).
    let err = kv.set("k", &"x".repeat(150)).await.unwrap_err();
    assert!(matches!(err, KvError::TooLarge { .. }), "{err:?}");
    assert_eq!(kv.get("k").await.unwrap().map(|v| v.len()), Some(50));
}
