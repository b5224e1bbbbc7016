//! Known-answer tests for chatvault's own formats: files written by format
//! version 1 and committed under `tests/fixtures/v1/` must open with today's
//! code and yield the known plaintext and auth key. A change that would
//! strand existing vaults or exports fails here.
//!
//! Nonces and salts are random, so these are decrypt-the-fixture tests, not
//! compare-the-ciphertext tests. To write missing files (existing ones are
//! never overwritten; a new format version gets a new folder):
//!
//! ```text
//! CHATVAULT_REGEN_FIXTURES=1 cargo test -p chatvault-crypto --test fixtures
//! ```

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;

use chatvault_crypto::{DecryptingReader, EncryptingWriter, KeyEnvelope, RecordAad};
use common::{fast, test_policy};

const PASSPHRASE: &str = "correct horse battery staple / fixture v1";
const RECORD_AAD: RecordAad<'static> = RecordAad {
    kind: "message",
    id: "0190f5b2-7c3e-7000-8000-00000000abcd",
    // Not bound by format 1 blobs; format 2 ones (written today) bind them.
    conversation: "0190f5b2-7c3e-7000-8000-00000000c0c0",
    version: "018c2a5e1f00-00000000-0000000000000001",
};
const RECORD_PLAINTEXT: &[u8] =
    "{\"role\":\"user\",\"content\":\"Hello from format v1 \u{1f510}\"}".as_bytes();

/// Two chunks: one full, one partial.
fn stream_plaintext() -> Vec<u8> {
    (0..64 * 1024 + 1000)
        .map(|i: usize| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; fixtures are committed (see this file's docs)",
            path.display()
        )
    })
}

#[test]
fn v1_key_envelope_still_unlocks() {
    let json = String::from_utf8(read("key-envelope.json")).unwrap();
    let envelope = KeyEnvelope::from_json(json.trim()).unwrap();
    assert_eq!(envelope.format_version(), 1);
    let keys = envelope
        .unlock_with_policy(PASSPHRASE, test_policy())
        .unwrap();
    // The server knows users by this key: its derivation must never drift.
    let expected_auth = String::from_utf8(read("auth-key.b64")).unwrap();
    assert_eq!(keys.auth.to_base64(), expected_auth.trim());
}

#[test]
fn v1_record_blob_still_opens() {
    // A format 1 blob from a format 1 envelope: key 1 of today's keyring,
    // associated data of kind and id only.
    let json = String::from_utf8(read("key-envelope.json")).unwrap();
    let keys = KeyEnvelope::from_json(json.trim())
        .unwrap()
        .unlock_with_policy(PASSPHRASE, test_policy())
        .unwrap();
    let blob = read("record.bin");
    assert_eq!(
        keys.keyring.open(&RECORD_AAD, &blob).unwrap(),
        RECORD_PLAINTEXT
    );
}

#[test]
fn v1_encrypted_stream_still_decrypts() {
    let file = read("export.cvenc");
    let mut reader =
        DecryptingReader::new_with_policy(&file[..], PASSPHRASE, test_policy()).unwrap();
    let mut plaintext = Vec::new();
    reader.read_to_end(&mut plaintext).unwrap();
    assert_eq!(plaintext, stream_plaintext());
}

/// Writes whichever fixture files are missing when
/// `CHATVAULT_REGEN_FIXTURES=1`; otherwise does nothing. Existing files are
/// never overwritten: they stand for data already in users' hands.
#[test]
fn regenerate_fixtures_when_asked() {
    if std::env::var("CHATVAULT_REGEN_FIXTURES").as_deref() != Ok("1") {
        return;
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let write_new = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, bytes).unwrap();
        }
    };

    // The record is sealed under the committed envelope's key if there is one.
    let envelope_path = dir.join("key-envelope.json");
    let (envelope, keys) = if envelope_path.exists() {
        let json = std::fs::read_to_string(&envelope_path).unwrap();
        let envelope = KeyEnvelope::from_json(json.trim()).unwrap();
        let keys = envelope
            .unlock_with_policy(PASSPHRASE, test_policy())
            .unwrap();
        (envelope, keys)
    } else {
        KeyEnvelope::create_with_policy(PASSPHRASE, fast(), test_policy()).unwrap()
    };
    write_new("key-envelope.json", (envelope.to_json() + "\n").as_bytes());
    write_new("auth-key.b64", (keys.auth.to_base64() + "\n").as_bytes());
    // record.bin is a format 1 blob, which this build can no longer write:
    // it stays as committed.

    let mut writer =
        EncryptingWriter::new_with_policy(Vec::new(), PASSPHRASE, fast(), test_policy()).unwrap();
    writer.write_all(&stream_plaintext()).unwrap();
    write_new("export.cvenc", &writer.finish().unwrap());
}
