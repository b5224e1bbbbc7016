//! The key-value conformance suite: one `async fn` per promise of the
//! [`KvStore`] contract, run by every key-value backend (memory,
//! localStorage, sessionStorage, IndexedDB, and each of them sealed by an
//! encrypted vault) through
//! [`kv_conformance_tests!`](crate::kv_conformance_tests).
//!
//! Sizes in these cases leave room for a sealing wrapper: what a backend
//! stores may be longer than what the case wrote (ciphertext, base64), so
//! no case depends on an exact stored size.

use super::TestResult;
use crate::kv::{KvError, KvLimits, KvResult, KvStore, MAX_KEY_LEN};
use std::future::Future;
use std::sync::Arc;

/// A key-value backend under test, as a test fixture builds it.
pub trait KvBackend {
    /// Namespace `name` of the fixture's storage area, guarded by
    /// `limits`. Opening the same name again reaches the same data; names
    /// are the fixture's to make unique per test (a browser area outlives
    /// a test), so cases compare contents, never
    /// [`namespace`](KvStore::namespace) texts.
    fn open(
        &self,
        name: &str,
        limits: KvLimits,
    ) -> impl Future<Output = KvResult<Arc<dyn KvStore>>>;
}

async fn open(b: &impl KvBackend, name: &str) -> KvResult<Arc<dyn KvStore>> {
    b.open(name, KvLimits::unbounded()).await
}

fn expect_kv_err<T: std::fmt::Debug>(
    result: KvResult<T>,
    expected: impl Fn(&KvError) -> bool,
    what: &str,
) -> TestResult {
    match result {
        Err(e) if expected(&e) => Ok(()),
        other => Err(format!("expected {what}, got {other:?}").into()),
    }
}

conformance_cases! {($) KvBackend, __kv_conformance_cases,

/// A key never written reads as absent, not as an error.
async fn kv_missing_key_reads_none(b) {
    let kv = open(b, "missing").await?;
    assert_eq!(kv.get("nothing here").await?, None);
    assert_eq!(kv.keys().await?, Vec::<String>::new());
    Ok(())
}

/// Values read back exactly as written: empty, JSON, every Unicode plane,
/// and keys that look like separators or object internals.
async fn kv_values_read_back_exactly(b) {
    let kv = open(b, "exact").await?;
    let big = "x".repeat(20_000);
    let values = [
        ("empty", ""),
        ("json", r#"{"state":{"theme":"dark","drafts":{"c1":"hi"}},"version":3}"#),
        ("unicode", "héllo — 日本語 — 🦀 \u{0} \u{FFFD} \n\t\"'\\"),
        ("a:b/c\\d", "separators in keys"),
        ("__proto__", "not an object internal"),
        ("🔑", "emoji key"),
        ("big", big.as_str()),
    ];
    for (key, value) in values {
        kv.set(key, value).await?;
    }
    for (key, value) in values {
        assert_eq!(kv.get(key).await?.as_deref(), Some(value), "key {key:?}");
    }
    Ok(())
}

/// A set replaces the previous value.
async fn kv_set_replaces(b) {
    let kv = open(b, "replace").await?;
    kv.set("k", "first").await?;
    kv.set("k", "second").await?;
    assert_eq!(kv.get("k").await?.as_deref(), Some("second"));
    assert_eq!(kv.keys().await?, vec!["k".to_owned()]);
    Ok(())
}

/// Remove deletes one key; removing a missing key is fine.
async fn kv_remove_deletes_one_key(b) {
    let kv = open(b, "remove").await?;
    kv.set("a", "1").await?;
    kv.set("b", "2").await?;
    kv.remove("a").await?;
    kv.remove("a").await?;
    kv.remove("never").await?;
    assert_eq!(kv.get("a").await?, None);
    assert_eq!(kv.get("b").await?.as_deref(), Some("2"));
    Ok(())
}

/// Keys come back sorted, and only this namespace's: the same key in two
/// namespaces holds two values.
async fn kv_namespaces_are_separate(b) {
    let one = open(b, "one").await?;
    let two = open(b, "two").await?;
    let one_more = open(b, "one-x").await?;
    for key in ["c", "a", "b"] {
        one.set(key, &format!("one {key}")).await?;
    }
    two.set("a", "two a").await?;
    one_more.set("z", "prefix of another namespace").await?;
    assert_eq!(one.keys().await?, vec!["a", "b", "c"]);
    assert_eq!(two.keys().await?, vec!["a"]);
    assert_eq!(one.get("a").await?.as_deref(), Some("one a"));
    assert_eq!(two.get("a").await?.as_deref(), Some("two a"));
    assert_eq!(two.get("b").await?, None);
    assert_eq!(one.get("z").await?, None);
    Ok(())
}

/// Clear empties this namespace and no other.
async fn kv_clear_empties_only_this_namespace(b) {
    let one = open(b, "clear-one").await?;
    let two = open(b, "clear-two").await?;
    one.set("a", "1").await?;
    one.set("b", "2").await?;
    two.set("a", "kept").await?;
    one.clear().await?;
    assert_eq!(one.keys().await?, Vec::<String>::new());
    assert_eq!(one.get("a").await?, None);
    assert_eq!(two.get("a").await?.as_deref(), Some("kept"));
    assert_eq!(one.usage().await?.entries, 0);
    Ok(())
}

/// Opening a namespace again reaches the same data.
async fn kv_reopening_sees_the_same_data(b) {
    open(b, "reopen").await?.set("k", "still here").await?;
    let again = open(b, "reopen").await?;
    assert_eq!(again.get("k").await?.as_deref(), Some("still here"));
    Ok(())
}

/// Usage counts this namespace's entries and at least their bytes.
async fn kv_usage_counts_entries_and_bytes(b) {
    let kv = open(b, "usage").await?;
    kv.set("a", &"1".repeat(100)).await?;
    kv.set("b", &"2".repeat(200)).await?;
    open(b, "usage-other").await?.set("c", &"3".repeat(5000)).await?;
    let usage = kv.usage().await?;
    assert_eq!(usage.entries, 2);
    assert!(
        (302..5000).contains(&usage.bytes),
        "bytes of this namespace only: {usage:?}"
    );
    Ok(())
}

/// A value over the one-value limit is refused before storage is touched,
/// and the previous value stays.
async fn kv_a_value_over_the_limit_is_refused_and_the_old_one_kept(b) {
    let limits = KvLimits { max_value_bytes: Some(1000), max_total_bytes: None };
    let kv = b.open("value-limit", limits).await?;
    kv.set("k", "small").await?;
    expect_kv_err(
        kv.set("k", &"x".repeat(2000)).await,
        |e| matches!(e, KvError::TooLarge { what: "one value", .. }),
        "TooLarge for one value",
    )?;
    assert_eq!(kv.get("k").await?.as_deref(), Some("small"));
    expect_kv_err(
        kv.set("new", &"x".repeat(2000)).await,
        |e| matches!(e, KvError::TooLarge { .. }),
        "TooLarge",
    )?;
    assert_eq!(kv.get("new").await?, None, "a refused new key is not created");
    Ok(())
}

/// The namespace limit counts what the namespace holds, with the entry a
/// write replaces counted once.
async fn kv_the_namespace_limit_counts_a_replaced_entry_once(b) {
    let limits = KvLimits { max_value_bytes: Some(4000), max_total_bytes: Some(2000) };
    let kv = b.open("total-limit", limits).await?;
    kv.set("a", &"a".repeat(600)).await?;
    expect_kv_err(
        kv.set("b", &"b".repeat(1500)).await,
        |e| matches!(e, KvError::TooLarge { what: "the namespace", .. }),
        "TooLarge for the namespace",
    )?;
    assert_eq!(kv.get("b").await?, None);
    // Replacing "a" with a value twice its size fits: the old one goes.
    kv.set("a", &"A".repeat(1200)).await?;
    assert_eq!(kv.get("a").await?.map(|v| v.len()), Some(1200));
    // Other namespaces of the area have their own budget.
    b.open("total-limit-2", limits).await?.set("a", &"c".repeat(1200)).await?;
    Ok(())
}

/// Empty and overlong keys are refused with a clear error.
async fn kv_invalid_keys_are_refused(b) {
    let kv = open(b, "keys").await?;
    for key in [String::new(), "k".repeat(MAX_KEY_LEN + 1)] {
        expect_kv_err(
            kv.set(&key, "v").await,
            |e| matches!(e, KvError::Invalid { what: "key", .. }),
            "Invalid key",
        )?;
    }
    kv.set(&"k".repeat(MAX_KEY_LEN), "longest key").await?;
    expect_kv_err(
        b.open("bad:name", KvLimits::unbounded()).await.map(|_| ()),
        |e| matches!(e, KvError::Invalid { what: "namespace", .. }),
        "Invalid namespace",
    )?;
    Ok(())
}

}
