//! The key envelope: create / unlock / rewrap / rotate, the JSON form, the
//! prelogin auth-key flow, and headers edited by someone hostile.

mod common;

use chatvault_crypto::{
    derive_auth_key, derive_auth_key_with_policy, CryptoError, KdfParams, KdfPolicy, KeyEnvelope,
    PassphraseKeys, RecordAad, Salt,
};
use common::{create, fast, test_policy};
use serde_json::Value;

const AAD: RecordAad<'static> = RecordAad {
    kind: "conversation",
    id: "0190f5b2-7c3e-7000-8000-00000000000c",
    conversation: "",
    version: "018c2a5e1f00-00000000-0000000000000001",
};

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn edit_json(envelope: &KeyEnvelope, edit: impl FnOnce(&mut Value)) -> KeyEnvelope {
    let mut json: Value = serde_json::from_str(&envelope.to_json()).unwrap();
    edit(&mut json);
    KeyEnvelope::from_json(&json.to_string()).unwrap()
}

#[test]
fn unlock_yields_the_same_keys_as_create() {
    let (envelope, created) = create("correct horse");
    let blob = created.keyring.seal(&AAD, b"title").unwrap();

    let unlocked = envelope
        .unlock_with_policy("correct horse", test_policy())
        .unwrap();
    assert_eq!(unlocked.keyring.open(&AAD, &blob).unwrap(), b"title");
    assert_eq!(unlocked.auth.to_base64(), created.auth.to_base64());
}

#[test]
fn every_vault_gets_its_own_salt_and_data_key() {
    let (a, a_keys) = create("same passphrase");
    let (b, b_keys) = create("same passphrase");
    assert_ne!(a.salt(), b.salt());
    assert_ne!(a_keys.auth.to_base64(), b_keys.auth.to_base64());
    let blob = a_keys.keyring.seal(&AAD, b"x").unwrap();
    assert_eq!(b_keys.keyring.open(&AAD, &blob), Err(CryptoError::Tampered));
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    let (envelope, _) = create("correct horse");
    for wrong in ["Correct horse", "correct horse ", "", "🐴"] {
        assert_eq!(
            envelope
                .unlock_with_policy(wrong, test_policy())
                .unwrap_err(),
            CryptoError::WrongPassphrase,
            "{wrong:?}"
        );
    }
}

#[test]
fn an_empty_new_passphrase_is_refused() {
    assert_eq!(
        KeyEnvelope::create_with_policy("", fast(), test_policy()).unwrap_err(),
        CryptoError::EmptyPassphrase
    );
    let (envelope, _) = create("old");
    assert_eq!(
        envelope
            .rewrap_with_policy("old", "", fast(), test_policy())
            .unwrap_err(),
        CryptoError::EmptyPassphrase
    );
}

#[test]
fn json_has_the_documented_shape() {
    let (envelope, _) = create("pw");
    let json: Value = serde_json::from_str(&envelope.to_json()).unwrap();
    assert_eq!(json["formatVersion"], 2);
    assert_eq!(json["generation"], 1);
    assert_eq!(json["keyIds"], serde_json::json!([1]));
    assert_eq!(json["vaultId"].as_str().unwrap().len(), 24);
    assert_eq!(
        json["kdf"],
        serde_json::json!({"mCostKib": 64, "tCost": 1, "pCost": 1})
    );
    let salt = Salt::from_base64(json["salt"].as_str().unwrap()).unwrap();
    assert_eq!(&salt, envelope.salt());
    use base64::Engine as _;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(json["wrappedKeys"].as_str().unwrap())
        .unwrap();
    assert_eq!(wrapped.len(), 24 + 32 + 16);
    assert_eq!(json.as_object().unwrap().len(), 7);

    let parsed = KeyEnvelope::from_json(&envelope.to_json()).unwrap();
    assert_eq!(parsed, envelope);
    assert!(parsed.unlock_with_policy("pw", test_policy()).is_ok());
}

#[test]
fn malformed_json_is_corrupt() {
    let (envelope, _) = create("pw");
    let good: Value = serde_json::from_str(&envelope.to_json()).unwrap();
    let mut short_key = good.clone();
    short_key["wrappedKeys"] = Value::String("AAAA".into());
    let mut more_ids_than_keys = good.clone();
    more_ids_than_keys["keyIds"] = serde_json::json!([1, 2]);
    let mut unordered_ids = good.clone();
    unordered_ids["keyIds"] = serde_json::json!([2, 1]);
    let mut key_zero = good.clone();
    key_zero["keyIds"] = serde_json::json!([0]);
    let mut no_ids = good.clone();
    no_ids["keyIds"] = serde_json::json!([]);
    let mut short_vault_id = good.clone();
    short_vault_id["vaultId"] = Value::String("AAAA".into());
    let mut short_salt = good.clone();
    short_salt["salt"] = Value::String("AAAA".into());
    let mut no_kdf = good.clone();
    no_kdf.as_object_mut().unwrap().remove("kdf");

    for bad in [
        "".to_string(),
        "not json".to_string(),
        "{}".to_string(),
        short_key.to_string(),
        more_ids_than_keys.to_string(),
        unordered_ids.to_string(),
        key_zero.to_string(),
        no_ids.to_string(),
        short_vault_id.to_string(),
        short_salt.to_string(),
        no_kdf.to_string(),
    ] {
        assert!(
            matches!(
                KeyEnvelope::from_json(&bad),
                Err(CryptoError::Corrupt { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn a_newer_envelope_asks_for_an_upgrade_even_if_its_shape_changed() {
    let future = r#"{"formatVersion":3,"kdf":{"algorithm":"argon2id2"},"keys":[]}"#;
    assert_eq!(
        KeyEnvelope::from_json(future).unwrap_err(),
        CryptoError::UnsupportedVersion {
            found: 3,
            newest: 2
        }
    );
}

#[test]
fn an_edited_header_never_unlocks() {
    let (envelope, _) = create("pw");
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("tCost", Box::new(|j| j["kdf"]["tCost"] = 2.into())),
        ("mCostKib", Box::new(|j| j["kdf"]["mCostKib"] = 128.into())),
        ("pCost", Box::new(|j| j["kdf"]["pCost"] = 2.into())),
        (
            "salt",
            Box::new(|j| j["salt"] = Salt::from_bytes([0; 16]).to_base64().into()),
        ),
        (
            "wrappedKeys",
            Box::new(|j| {
                use base64::Engine as _;
                let engine = base64::engine::general_purpose::STANDARD;
                let mut bytes = engine.decode(j["wrappedKeys"].as_str().unwrap()).unwrap();
                bytes[40] ^= 1;
                j["wrappedKeys"] = engine.encode(bytes).into();
            }),
        ),
        (
            "vaultId",
            Box::new(|j| j["vaultId"] = base64_of(&[0; 16]).into()),
        ),
        ("generation", Box::new(|j| j["generation"] = 7.into())),
        ("keyIds", Box::new(|j| j["keyIds"] = serde_json::json!([2]))),
    ];
    for (field, edit) in edits {
        let edited = edit_json(&envelope, |j| edit(j));
        // Without the right key an edit cannot be told from a wrong
        // passphrase; what matters is that it never yields a key.
        assert_eq!(
            edited.unlock_with_policy("pw", test_policy()).unwrap_err(),
            CryptoError::WrongPassphrase,
            "{field}"
        );
    }
}

#[test]
fn a_hostile_header_cannot_downgrade_the_kdf() {
    // A real vault whose stored parameters were swapped for cheap ones
    // (which the attacker could then brute-force on the next rewrap).
    let (envelope, _) = create("pw");
    let err = envelope.unlock("pw").unwrap_err();
    assert!(matches!(err, CryptoError::WeakKdfParams { .. }), "{err:?}");
}

#[test]
fn a_hostile_header_cannot_exhaust_memory() {
    let (envelope, _) = create("pw");
    for (m, t) in [
        (u32::MAX, 1u32),
        (4 * 1024 * 1024 + 1, 1),
        (1024 * 1024 + 1, 1),
        (1024 * 1024, 5),
    ] {
        let edited = edit_json(&envelope, |j| {
            j["kdf"]["mCostKib"] = m.into();
            j["kdf"]["tCost"] = t.into();
        });
        // Refused before any memory is allocated, under either policy.
        for policy in [KdfPolicy::strict(), test_policy()] {
            let err = edited.unlock_with_policy("pw", policy).unwrap_err();
            assert!(
                matches!(err, CryptoError::ExcessiveKdfParams { .. }),
                "m={m} t={t}: {err:?}"
            );
        }
    }
}

#[test]
fn strict_create_refuses_insecure_params() {
    let err = KeyEnvelope::create("pw", fast()).unwrap_err();
    assert!(matches!(err, CryptoError::WeakKdfParams { .. }), "{err:?}");
}

#[test]
fn rewrap_changes_the_passphrase_but_not_the_data_key() {
    let (envelope, old_keys) = create("old passphrase");
    let blob = old_keys
        .keyring
        .seal(&AAD, b"written before the change")
        .unwrap();

    let stronger = KdfParams {
        t_cost: 2,
        ..fast()
    };
    let (rewrapped, new_keys) = envelope
        .rewrap_with_policy("old passphrase", "new passphrase", stronger, test_policy())
        .unwrap();

    assert_eq!(rewrapped.kdf(), &stronger);
    assert_ne!(rewrapped.salt(), envelope.salt(), "a fresh salt");
    assert_ne!(new_keys.auth.to_base64(), old_keys.auth.to_base64());
    assert_eq!(
        new_keys.keyring.open(&AAD, &blob).unwrap(),
        b"written before the change"
    );

    let unlocked = rewrapped
        .unlock_with_policy("new passphrase", test_policy())
        .unwrap();
    assert_eq!(
        unlocked.keyring.open(&AAD, &blob).unwrap(),
        b"written before the change"
    );
    assert_eq!(unlocked.auth.to_base64(), new_keys.auth.to_base64());
    assert_eq!(
        rewrapped
            .unlock_with_policy("old passphrase", test_policy())
            .unwrap_err(),
        CryptoError::WrongPassphrase
    );
    // The old envelope is untouched.
    assert!(envelope
        .unlock_with_policy("old passphrase", test_policy())
        .is_ok());
}

#[test]
fn rewrap_with_the_wrong_old_passphrase_fails() {
    let (envelope, _) = create("old");
    assert_eq!(
        envelope
            .rewrap_with_policy("not old", "new", fast(), test_policy())
            .unwrap_err(),
        CryptoError::WrongPassphrase
    );
}

#[test]
fn prelogin_auth_key_matches_the_envelope() {
    // The server hands out salt + params before login; the client derives
    // its auth key without the envelope.
    let (envelope, keys) = create("pw");
    let auth =
        derive_auth_key_with_policy("pw", envelope.kdf(), envelope.salt(), test_policy()).unwrap();
    assert_eq!(auth.to_base64(), keys.auth.to_base64());

    let wrong =
        derive_auth_key_with_policy("pw2", envelope.kdf(), envelope.salt(), test_policy()).unwrap();
    assert_ne!(wrong.to_base64(), keys.auth.to_base64());

    // And a hostile server cannot make the client derive with cheap params.
    assert!(matches!(
        derive_auth_key("pw", envelope.kdf(), envelope.salt()),
        Err(CryptoError::WeakKdfParams { .. })
    ));
}

#[test]
fn login_keys_unlock_the_envelope_without_a_second_argon2_run() {
    let (envelope, created) = create("pw");
    let keys =
        PassphraseKeys::derive_with_policy("pw", envelope.kdf(), envelope.salt(), test_policy())
            .unwrap();
    assert_eq!(keys.auth_key().to_base64(), created.auth.to_base64());

    let unlocked = envelope.unlock_with_keys(&keys).unwrap();
    let blob = created.keyring.seal(&AAD, b"x").unwrap();
    assert_eq!(unlocked.keyring.open(&AAD, &blob).unwrap(), b"x");

    let wrong =
        PassphraseKeys::derive_with_policy("nope", envelope.kdf(), envelope.salt(), test_policy())
            .unwrap();
    assert_eq!(
        envelope.unlock_with_keys(&wrong).unwrap_err(),
        CryptoError::WrongPassphrase
    );

    let other_salt = PassphraseKeys::derive_with_policy(
        "pw",
        envelope.kdf(),
        &Salt::from_bytes([1; 16]),
        test_policy(),
    )
    .unwrap();
    assert_eq!(
        envelope.unlock_with_keys(&other_salt).unwrap_err(),
        CryptoError::KeysDoNotMatchEnvelope
    );
}

#[test]
fn auth_key_travels_as_base64() {
    let (_, keys) = create("pw");
    let text = keys.auth.to_base64();
    let parsed = chatvault_crypto::AuthKey::from_base64(&text).unwrap();
    assert_eq!(parsed.as_bytes(), keys.auth.as_bytes());
}

/// The one test at real (default, OWASP) parameters, so the production path
/// is exercised end to end at least once.
#[test]
fn real_default_params_round_trip() {
    let (envelope, keys) = KeyEnvelope::create("a real passphrase", KdfParams::default()).unwrap();
    assert_eq!(envelope.kdf(), &KdfParams::default());
    let blob = keys.keyring.seal(&AAD, b"real").unwrap();
    let unlocked = envelope.unlock("a real passphrase").unwrap();
    assert_eq!(unlocked.keyring.open(&AAD, &blob).unwrap(), b"real");
    assert_eq!(unlocked.auth.to_base64(), keys.auth.to_base64());
}

#[test]
fn debug_output_holds_no_secrets() {
    let (envelope, keys) = create("pw");
    let debug = format!("{envelope:?} {keys:?}");
    assert!(!debug.contains(&keys.auth.to_base64()), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn rotation_adds_a_key_that_an_old_envelope_cannot_open() {
    let (envelope, before) = create("pw");
    let old_blob = before.keyring.seal(&AAD, b"before").unwrap();
    let (rotated, after) = envelope
        .rotate_with_policy("pw", "pw", fast(), test_policy())
        .unwrap();
    assert_eq!(rotated.generation(), envelope.generation() + 1);
    assert_eq!(
        rotated
            .key_ids()
            .iter()
            .map(|k| k.get())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_ne!(rotated.salt(), envelope.salt(), "a fresh salt");
    assert_eq!(after.keyring.vault_id(), before.keyring.vault_id());
    assert!(after.keyring.contains(&before.keyring));

    let new_blob = after.keyring.seal(&AAD, b"after").unwrap();
    assert_eq!(after.keyring.open(&AAD, &old_blob).unwrap(), b"before");
    // The pre-rotation envelope with the (unchanged) old passphrase opens
    // what was there before, never what is written afterwards.
    let stale = envelope.unlock_with_policy("pw", test_policy()).unwrap();
    assert_eq!(stale.keyring.open(&AAD, &old_blob).unwrap(), b"before");
    assert_eq!(
        stale.keyring.open(&AAD, &new_blob),
        Err(CryptoError::UnknownKey { id: 2 })
    );
    let reopened = KeyEnvelope::from_json(&rotated.to_json())
        .unwrap()
        .unlock_with_policy("pw", test_policy())
        .unwrap();
    assert_eq!(reopened.keyring.open(&AAD, &new_blob).unwrap(), b"after");
    assert_eq!(
        rotated
            .rotate_with_policy("wrong", "pw", fast(), test_policy())
            .unwrap_err(),
        CryptoError::WrongPassphrase
    );
}

#[test]
fn rewrap_keeps_the_keyring_and_counts_a_generation() {
    let (envelope, before) = create("old");
    let (rotated, _) = envelope
        .rotate_with_policy("old", "old", fast(), test_policy())
        .unwrap();
    let (rewrapped, after) = rotated
        .rewrap_with_policy("old", "new", fast(), test_policy())
        .unwrap();
    assert_eq!(rewrapped.generation(), 3);
    assert_eq!(rewrapped.key_ids(), rotated.key_ids());
    assert!(after.keyring.contains(&before.keyring));
    assert_eq!(after.keyring.vault_id(), before.keyring.vault_id());
}
