//! Encrypted export streams: round trips at every interesting size, and
//! every way a file can be cut, damaged, reordered, extended or opened with
//! the wrong passphrase.

mod common;

use std::io::{self, Read, Write};

use chatvault_crypto::{
    is_encrypted_stream, CryptoError, DecryptingReader, EncryptingWriter, KdfPolicy,
};
use common::{fast, test_policy};
use proptest::prelude::*;

const PASS: &str = "export passphrase";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SEALED_CHUNK: usize = CHUNK + TAG;
const HEADER: usize = 67;
const TRAILER: usize = 4;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Encrypts `plaintext`, handing it to the writer in pieces of `piece`
/// bytes.
fn encrypt_in_pieces(plaintext: &[u8], piece: usize) -> Vec<u8> {
    let mut writer =
        EncryptingWriter::new_with_policy(Vec::new(), PASS, fast(), test_policy()).unwrap();
    for part in plaintext.chunks(piece.max(1)) {
        writer.write_all(part).unwrap();
    }
    writer.finish().unwrap()
}

fn encrypt(plaintext: &[u8]) -> Vec<u8> {
    encrypt_in_pieces(plaintext, 10_000)
}

fn decrypt_with(file: &[u8], passphrase: &str) -> io::Result<Vec<u8>> {
    let mut reader = DecryptingReader::new_with_policy(file, passphrase, test_policy())?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out)?;
    Ok(out)
}

fn decrypt(file: &[u8]) -> io::Result<Vec<u8>> {
    decrypt_with(file, PASS)
}

/// The `CryptoError` inside a failed decryption.
fn crypto_err(result: io::Result<Vec<u8>>) -> CryptoError {
    let err = result.expect_err("decryption should fail");
    CryptoError::from_io(&err)
        .unwrap_or_else(|| panic!("not a CryptoError: {err:?}"))
        .clone()
}

fn expected_len(plaintext_len: usize) -> usize {
    let chunks = plaintext_len.div_ceil(CHUNK).max(1);
    HEADER + plaintext_len + chunks * TAG + TRAILER
}

#[test]
fn round_trips_at_chunk_boundaries() {
    for len in [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        1024 * 1024 + 3,
    ] {
        let plaintext = data(len);
        let file = encrypt(&plaintext);
        assert_eq!(file.len(), expected_len(len), "size {len}");
        assert!(is_encrypted_stream(&file));
        assert_eq!(decrypt(&file).unwrap(), plaintext, "size {len}");
    }
}

#[test]
fn how_it_is_written_does_not_matter() {
    let plaintext = data(3 * CHUNK + 5);
    for piece in [1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK] {
        // Byte-at-a-time writes are slow only in debug builds; 1 is kept
        // small by using a shorter input.
        let input = if piece == 1 {
            &plaintext[..CHUNK + 3]
        } else {
            &plaintext[..]
        };
        let file = encrypt_in_pieces(input, piece);
        assert_eq!(file.len(), expected_len(input.len()));
        assert_eq!(decrypt(&file).unwrap(), input, "piece {piece}");
    }
}

#[test]
fn reading_in_small_pieces_works() {
    let plaintext = data(CHUNK + 100);
    let file = encrypt(&plaintext);
    let mut reader = DecryptingReader::new_with_policy(&file[..], PASS, test_policy()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, plaintext);
    assert_eq!(reader.read(&mut buf).unwrap(), 0, "stays at end of file");
}

#[test]
fn same_plaintext_encrypts_differently_every_time() {
    let plaintext = data(100);
    assert_ne!(encrypt(&plaintext), encrypt(&plaintext));
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let file = encrypt(&data(10));
    for wrong in ["Export passphrase", "", "export passphrase\n"] {
        let err = DecryptingReader::new_with_policy(&file[..], wrong, test_policy()).unwrap_err();
        assert_eq!(
            CryptoError::from_io(&err),
            Some(&CryptoError::WrongPassphrase),
            "{wrong:?}"
        );
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}

#[test]
fn truncation_anywhere_is_reported_as_truncated() {
    let plaintext = data(2 * CHUNK + 1000);
    let file = encrypt(&plaintext);
    let chunk_starts = [HEADER, HEADER + SEALED_CHUNK, HEADER + 2 * SEALED_CHUNK];
    let mut cuts = vec![
        0,
        3,
        HEADER - 1,
        HEADER,     // header only
        HEADER + 1, // mid first chunk
        file.len() - 1,
        file.len() - TRAILER, // trailer missing
        file.len() - TRAILER - 1,
    ];
    for start in chunk_starts {
        cuts.extend([
            start,
            start + 1,
            start + CHUNK / 2,
            start + SEALED_CHUNK - 1,
        ]);
    }
    for cut in cuts.into_iter().filter(|&cut| cut < file.len()) {
        assert_eq!(
            crypto_err(decrypt(&file[..cut])),
            CryptoError::Truncated,
            "cut at {cut} of {}",
            file.len()
        );
    }
}

#[test]
fn truncation_keeps_reporting_and_never_looks_like_eof() {
    let file = encrypt(&data(CHUNK + 10));
    let cut = &file[..HEADER + SEALED_CHUNK];
    let mut reader = DecryptingReader::new_with_policy(cut, PASS, test_policy()).unwrap();
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(CryptoError::from_io(&err), Some(&CryptoError::Truncated));
    let mut buf = [0u8; 16];
    let again = reader.read(&mut buf).unwrap_err();
    assert_eq!(CryptoError::from_io(&again), Some(&CryptoError::Truncated));
}

#[test]
fn a_bit_flip_in_any_chunk_or_the_trailer_is_tampering() {
    let plaintext = data(2 * CHUNK + 1000);
    let file = encrypt(&plaintext);
    let last_chunk_at = HEADER + 2 * SEALED_CHUNK;
    for at in [
        HEADER,                    // first byte of chunk 0
        HEADER + CHUNK / 2,        // middle of chunk 0
        HEADER + SEALED_CHUNK - 1, // last byte of chunk 0's tag
        HEADER + SEALED_CHUNK + 5, // chunk 1
        last_chunk_at,             // last chunk
        file.len() - TRAILER - 1,  // last chunk's tag
        file.len() - TRAILER,      // trailer
        file.len() - 1,            // trailer
    ] {
        let mut damaged = file.clone();
        damaged[at] ^= 0x10;
        assert_eq!(
            crypto_err(decrypt(&damaged)),
            CryptoError::Tampered,
            "flip at {at}"
        );
    }
}

#[test]
fn every_bit_flip_in_a_small_file_is_detected() {
    let file = encrypt(b"a small export");
    for at in 0..file.len() {
        for bit in [0, 3, 7] {
            let mut damaged = file.clone();
            damaged[at] ^= 1 << bit;
            let err = crypto_err(decrypt(&damaged));
            if at >= HEADER {
                assert_eq!(err, CryptoError::Tampered, "byte {at} bit {bit}");
            } else {
                // Header damage: not ours, newer version, absurd parameters,
                // or (salt, prefix, key check) indistinguishable from a
                // wrong passphrase. Never plaintext.
                assert!(
                    matches!(
                        err,
                        CryptoError::NotEncrypted
                            | CryptoError::UnsupportedVersion { .. }
                            | CryptoError::Corrupt { .. }
                            | CryptoError::ExcessiveKdfParams { .. }
                            | CryptoError::WeakKdfParams { .. }
                            | CryptoError::WrongPassphrase
                    ),
                    "byte {at} bit {bit}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn reordered_chunks_are_tampering() {
    let file = encrypt(&data(3 * CHUNK + 10));
    let mut swapped = file.clone();
    let (a, b) = (HEADER, HEADER + SEALED_CHUNK);
    swapped[a..a + SEALED_CHUNK].copy_from_slice(&file[b..b + SEALED_CHUNK]);
    swapped[b..b + SEALED_CHUNK].copy_from_slice(&file[a..a + SEALED_CHUNK]);
    assert_eq!(crypto_err(decrypt(&swapped)), CryptoError::Tampered);
}

#[test]
fn a_chunk_from_another_file_is_tampering() {
    let plaintext = data(2 * CHUNK + 10);
    let file = encrypt(&plaintext);
    let other = encrypt(&plaintext);
    let mut spliced = file.clone();
    spliced[HEADER..HEADER + SEALED_CHUNK].copy_from_slice(&other[HEADER..HEADER + SEALED_CHUNK]);
    assert_eq!(crypto_err(decrypt(&spliced)), CryptoError::Tampered);
}

#[test]
fn extension_is_detected() {
    let file = encrypt(&data(CHUNK + 10));
    let tail_len = file.len() - HEADER - SEALED_CHUNK;
    let extensions: [Vec<u8>; 4] = [
        vec![0],
        vec![0; 100],
        vec![0xAB; SEALED_CHUNK + 50],
        // The real last chunk and trailer again.
        file[file.len() - tail_len..].to_vec(),
    ];
    for extra in extensions {
        let mut extended = file.clone();
        extended.extend_from_slice(&extra);
        let err = crypto_err(decrypt(&extended));
        assert!(
            matches!(err, CryptoError::Tampered | CryptoError::Truncated),
            "{} extra bytes: {err:?}",
            extra.len()
        );
    }
}

#[test]
fn a_writer_dropped_without_finish_leaves_a_truncated_file() {
    for len in [10, CHUNK, CHUNK + 1, 3 * CHUNK] {
        let mut file = Vec::new();
        {
            let mut writer =
                EncryptingWriter::new_with_policy(&mut file, PASS, fast(), test_policy()).unwrap();
            writer.write_all(&data(len)).unwrap();
            writer.flush().unwrap();
            // Dropped here, as on a crash or an early return.
        }
        assert_eq!(
            crypto_err(decrypt(&file)),
            CryptoError::Truncated,
            "len {len}"
        );
    }
}

#[test]
fn not_an_encrypted_file() {
    assert!(!is_encrypted_stream(br#"{"version":1,"conversations":[]}"#));
    let err = crypto_err(decrypt(br#"{"version":1,"conversations":[]}"#));
    assert_eq!(err, CryptoError::NotEncrypted);
}

#[test]
fn a_newer_stream_version_asks_for_an_upgrade() {
    let mut file = encrypt(b"x");
    file[5] = b'2';
    assert!(is_encrypted_stream(&file));
    assert_eq!(
        crypto_err(decrypt(&file)),
        CryptoError::UnsupportedVersion {
            found: 2,
            newest: 1
        }
    );
}

#[test]
fn strict_readers_and_writers_refuse_insecure_params() {
    let file = encrypt(b"x");
    let err = DecryptingReader::new(&file[..], PASS).unwrap_err();
    assert!(matches!(
        CryptoError::from_io(&err),
        Some(CryptoError::WeakKdfParams { .. })
    ));
    assert!(matches!(
        EncryptingWriter::new(Vec::new(), PASS, fast()).unwrap_err(),
        CryptoError::WeakKdfParams { .. }
    ));
    let err = DecryptingReader::new_with_policy(&file[..], PASS, KdfPolicy::strict()).unwrap_err();
    assert!(CryptoError::from_io(&err).is_some());
}

/// A hostile export header asking for 2 GiB (accepted by the old 4 GiB
/// bound, which then allocated it before checking the passphrase) or
/// absurd passes/lanes is refused before any key derivation runs.
#[test]
fn a_crafted_header_with_excessive_kdf_cost_is_refused_before_deriving() {
    let file = encrypt(b"x");
    for (field, value) in [(0, 2 * 1024 * 1024u32), (0, u32::MAX), (1, 1_000), (2, 255)] {
        let mut crafted = file.clone();
        let at = 7 + 4 * field;
        crafted[at..at + 4].copy_from_slice(&value.to_be_bytes());
        for policy in [KdfPolicy::strict(), test_policy()] {
            let err = DecryptingReader::new_with_policy(&crafted[..], PASS, policy).unwrap_err();
            assert!(
                matches!(
                    CryptoError::from_io(&err),
                    Some(CryptoError::ExcessiveKdfParams { .. })
                ),
                "field {field} = {value}: {err}"
            );
        }
    }
}

/// A sink that fails once it has accepted `budget` bytes.
#[derive(Debug)]
struct FailingSink {
    budget: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_poisons_the_writer() {
    let mut writer = EncryptingWriter::new_with_policy(
        FailingSink { budget: 1000 },
        PASS,
        fast(),
        test_policy(),
    )
    .unwrap();
    let err = writer.write_all(&data(3 * CHUNK)).unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    let err = writer.write(b"more").unwrap_err();
    assert_eq!(
        CryptoError::from_io(&err),
        Some(&CryptoError::StreamPoisoned)
    );
    let err = writer.finish().unwrap_err();
    assert_eq!(
        CryptoError::from_io(&err),
        Some(&CryptoError::StreamPoisoned)
    );
}

#[test]
fn empty_passphrase_is_refused_for_writing() {
    assert_eq!(
        EncryptingWriter::new_with_policy(Vec::new(), "", fast(), test_policy()).unwrap_err(),
        CryptoError::EmptyPassphrase
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_data_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..(3 * CHUNK)),
        piece in 1usize..(2 * CHUNK),
    ) {
        let file = encrypt_in_pieces(&plaintext, piece);
        prop_assert_eq!(file.len(), expected_len(plaintext.len()));
        prop_assert_eq!(decrypt(&file).unwrap(), plaintext);
    }

    #[test]
    fn chunk_boundary_sizes_round_trip(
        chunks in 0usize..4,
        offset in -2isize..=2,
        piece in prop_oneof![Just(CHUNK), Just(CHUNK - 1), Just(CHUNK + 1), 1000usize..CHUNK],
    ) {
        let len = (chunks * CHUNK) as isize + offset;
        prop_assume!(len >= 0);
        let plaintext = data(len as usize);
        let file = encrypt_in_pieces(&plaintext, piece);
        prop_assert_eq!(decrypt(&file).unwrap(), plaintext);
    }
}
