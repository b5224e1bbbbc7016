//! Record blobs: `Keyring::seal` / `Keyring::open` round trips and every
//! way a stored blob can be damaged, cut, or moved onto another record,
//! conversation or version.

mod common;

use chatvault_crypto::{CryptoError, Keyring, RecordAad};

const AAD: RecordAad<'static> = RecordAad {
    kind: "message",
    id: "0190f5b2-7c3e-7000-8000-000000000001",
    conversation: "0190f5b2-7c3e-7000-8000-0000000000c1",
    version: "018c2a5e1f00-00000000-0000000000000001",
};

fn key() -> Keyring {
    Keyring::generate().unwrap()
}

#[test]
fn round_trips_plaintexts_of_any_size() {
    let key = key();
    for len in [0usize, 1, 15, 16, 17, 1000, 100_000] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let blob = key.seal(&AAD, &plaintext).unwrap();
        assert_eq!(blob.len(), len + Keyring::SEAL_OVERHEAD);
        assert_eq!(blob[0], 2, "format version byte");
        assert_eq!(&blob[1..5], &[0, 0, 0, 1], "key id");
        assert_eq!(key.open(&AAD, &blob).unwrap(), plaintext);
    }
}

#[test]
fn every_seal_uses_a_fresh_nonce() {
    let key = key();
    let a = key.seal(&AAD, b"same").unwrap();
    let b = key.seal(&AAD, b"same").unwrap();
    assert_ne!(a[5..29], b[5..29]);
    assert_ne!(a, b);
}

#[test]
fn a_blob_moved_to_another_record_is_tampered() {
    let key = key();
    let blob = key.seal(&AAD, b"secret").unwrap();
    for other in [
        RecordAad {
            id: "0190f5b2-7c3e-7000-8000-000000000002",
            ..AAD
        },
        RecordAad {
            kind: "conversation",
            ..AAD
        },
        RecordAad { kind: "", ..AAD },
        RecordAad { id: "", ..AAD },
        // Same concatenation, different split: the length prefixes matter.
        RecordAad {
            kind: "messag",
            id: "e0190f5b2-7c3e-7000-8000-000000000001",
            ..AAD
        },
        // Moved to another conversation, or out of any.
        AAD.with_conversation("0190f5b2-7c3e-7000-8000-0000000000c2"),
        AAD.with_conversation(""),
        // Re-dated or rolled back: another version of the same record.
        AAD.with_version("018c2a5e1f00-00000001-0000000000000001"),
        AAD.with_version(""),
    ] {
        assert_eq!(
            key.open(&other, &blob),
            Err(CryptoError::Tampered),
            "{other:?}"
        );
    }
}

#[test]
fn another_key_cannot_open_it() {
    let blob = key().seal(&AAD, b"secret").unwrap();
    assert_eq!(key().open(&AAD, &blob), Err(CryptoError::Tampered));
}

#[test]
fn every_bit_flip_in_every_byte_is_detected() {
    let key = key();
    let blob = key.seal(&AAD, b"a small message").unwrap();
    for at in 0..blob.len() {
        for bit in 0..8 {
            let mut damaged = blob.clone();
            damaged[at] ^= 1 << bit;
            let result = key.open(&AAD, &damaged);
            match at {
                // The version byte: a higher version is "upgrade", 0 is
                // corrupt, 1 (the legacy layout) no longer authenticates.
                0 => assert!(
                    matches!(
                        result,
                        Err(CryptoError::UnsupportedVersion { .. }
                            | CryptoError::Corrupt { .. }
                            | CryptoError::Tampered)
                    ),
                    "byte {at} bit {bit}: {result:?}"
                ),
                // The key id: another key this keyring lacks (or 0).
                1..=4 => {
                    let id = 1u32 ^ ((1u32 << bit) << (8 * (4 - at)));
                    let expected = if id == 0 {
                        matches!(result, Err(CryptoError::Corrupt { .. }))
                    } else {
                        result == Err(CryptoError::UnknownKey { id })
                    };
                    assert!(expected, "byte {at} bit {bit}: {result:?}");
                }
                _ => assert_eq!(result, Err(CryptoError::Tampered), "byte {at} bit {bit}"),
            }
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let key = key();
    let blob = key.seal(&AAD, b"a small message").unwrap();
    for len in 0..blob.len() {
        let result = key.open(&AAD, &blob[..len]);
        if len < Keyring::SEAL_OVERHEAD {
            assert_eq!(result, Err(CryptoError::Truncated), "length {len}");
        } else {
            // Long enough to hold a tag: indistinguishable from damage.
            assert_eq!(result, Err(CryptoError::Tampered), "length {len}");
        }
    }
}

#[test]
fn an_extended_blob_is_tampered() {
    let key = key();
    let mut blob = key.seal(&AAD, b"x").unwrap();
    blob.push(0);
    assert_eq!(key.open(&AAD, &blob), Err(CryptoError::Tampered));
}

#[test]
fn a_newer_format_version_asks_for_an_upgrade() {
    let key = key();
    let mut blob = key.seal(&AAD, b"x").unwrap();
    blob[0] = 3;
    assert_eq!(
        key.open(&AAD, &blob),
        Err(CryptoError::UnsupportedVersion {
            found: 3,
            newest: 2
        })
    );
    assert_eq!(
        key.open(&AAD, &[3]),
        Err(CryptoError::UnsupportedVersion {
            found: 3,
            newest: 2
        }),
        "the version is checked before the length"
    );
}

#[test]
fn keys_from_an_unlocked_envelope_seal_and_open() {
    let (envelope, keys) = common::create("pw");
    let blob = keys.keyring.seal(&AAD, b"across unlocks").unwrap();
    let reopened = envelope
        .unlock_with_policy("pw", common::test_policy())
        .unwrap();
    assert_eq!(
        reopened.keyring.open(&AAD, &blob).unwrap(),
        b"across unlocks"
    );
}
