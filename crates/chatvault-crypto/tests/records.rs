//! Record blobs: `DataKey::seal` / `DataKey::open` round trips and every way
//! a stored blob can be damaged, cut, or moved onto another record.

mod common;

use chatvault_crypto::{CryptoError, DataKey, RecordAad};

const AAD: RecordAad<'static> = RecordAad {
    kind: "message",
    id: "0190f5b2-7c3e-7000-8000-000000000001",
};

fn key() -> DataKey {
    DataKey::generate().unwrap()
}

#[test]
fn round_trips_plaintexts_of_any_size() {
    let key = key();
    for len in [0usize, 1, 15, 16, 17, 1000, 100_000] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let blob = key.seal(&AAD, &plaintext).unwrap();
        assert_eq!(blob.len(), len + DataKey::SEAL_OVERHEAD);
        assert_eq!(blob[0], 1, "format version byte");
        assert_eq!(key.open(&AAD, &blob).unwrap(), plaintext);
    }
}

#[test]
fn every_seal_uses_a_fresh_nonce() {
    let key = key();
    let a = key.seal(&AAD, b"same").unwrap();
    let b = key.seal(&AAD, b"same").unwrap();
    assert_ne!(a[1..25], b[1..25]);
    assert_ne!(a, b);
}

#[test]
fn a_blob_moved_to_another_record_is_tampered() {
    let key = key();
    let blob = key.seal(&AAD, b"secret").unwrap();
    for other in [
        RecordAad::new("message", "0190f5b2-7c3e-7000-8000-000000000002"),
        RecordAad::new("conversation", AAD.id),
        RecordAad::new("", AAD.id),
        RecordAad::new("message", ""),
        // Same concatenation, different split: the length prefixes matter.
        RecordAad::new("messag", "e0190f5b2-7c3e-7000-8000-000000000001"),
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
                // The version byte: a higher version is "upgrade", 0 is corrupt.
                0 => assert!(
                    matches!(
                        result,
                        Err(CryptoError::UnsupportedVersion { .. } | CryptoError::Corrupt { .. })
                    ),
                    "byte {at} bit {bit}: {result:?}"
                ),
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
        if len < DataKey::SEAL_OVERHEAD {
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
    blob[0] = 2;
    assert_eq!(
        key.open(&AAD, &blob),
        Err(CryptoError::UnsupportedVersion {
            found: 2,
            newest: 1
        })
    );
    assert_eq!(
        key.open(&AAD, &[2]),
        Err(CryptoError::UnsupportedVersion {
            found: 2,
            newest: 1
        }),
        "the version is checked before the length"
    );
}

#[test]
fn keys_from_an_unlocked_envelope_seal_and_open() {
    let (envelope, keys) = common::create("pw");
    let blob = keys.data.seal(&AAD, b"across unlocks").unwrap();
    let reopened = envelope
        .unlock_with_policy("pw", common::test_policy())
        .unwrap();
    assert_eq!(reopened.data.open(&AAD, &blob).unwrap(), b"across unlocks");
}
