//! Criterion benchmarks: record seal/open at 1 KiB and key derivation at
//! the default (OWASP) parameters. Never run in CI as a gate.
//!
//! - `record_1KiB/{seal,open}`: a 1 KiB message body through the record
//!   format the vault's codec seals every body with (`Keyring::seal`:
//!   format byte, key id, fresh random nonce, the record's identity as
//!   associated data) — against its baseline, `record_1KiB/{seal,open}_primitive`:
//!   XChaCha20-Poly1305 from `chacha20poly1305` called directly on the
//!   same bytes, with a fresh random nonce and associated data of the same
//!   length. The ratio is the record format's own cost.
//! - `kdf/argon2id_default_params`: one key derivation, the bulk of
//!   unlocking a vault (`crates/chatvault/examples/unlock_time.rs` times the
//!   whole unlock; `cargo xtask bench` prints both).
//!
//! `cargo bench -p chatvault-crypto`

use std::hint::black_box;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatvault_crypto::{derive_auth_key, KdfParams, Keyring, RecordAad, Salt};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn records(c: &mut Criterion) {
    let key = Keyring::generate().unwrap();
    let aad = RecordAad::new("message", "0190f5b2-7c3e-7000-8000-000000000001")
        .with_conversation("0190f5b2-7c3e-7000-8000-0000000000c1")
        .with_version("018c2a5e1f00-00000000-0000000000000001");
    let plaintext = vec![0x5Au8; 1024];
    let blob = key.seal(&aad, &plaintext).unwrap();

    let mut group = c.benchmark_group("record_1KiB");
    group.throughput(Throughput::Bytes(plaintext.len() as u64));
    group.bench_function("seal", |b| {
        b.iter(|| key.seal(black_box(&aad), black_box(&plaintext)).unwrap())
    });
    group.bench_function("open", |b| {
        b.iter(|| key.open(black_box(&aad), black_box(&blob)).unwrap())
    });

    // The primitive alone. The record's associated data is the vault id,
    // key id, kind, ids and version: about this long.
    let cipher = XChaCha20Poly1305::new(&[0x42u8; 32].into());
    let primitive_aad = vec![0x11u8; 128];
    let nonce = || {
        let mut n = [0u8; 24];
        getrandom::getrandom(&mut n).unwrap();
        XNonce::from(n)
    };
    let sealed_nonce = nonce();
    let sealed = cipher
        .encrypt(
            &sealed_nonce,
            Payload {
                msg: &plaintext,
                aad: &primitive_aad,
            },
        )
        .unwrap();
    group.bench_function("seal_primitive", |b| {
        b.iter(|| {
            cipher
                .encrypt(
                    &nonce(),
                    Payload {
                        msg: black_box(&plaintext),
                        aad: black_box(&primitive_aad),
                    },
                )
                .unwrap()
        })
    });
    group.bench_function("open_primitive", |b| {
        b.iter(|| {
            cipher
                .decrypt(
                    &sealed_nonce,
                    Payload {
                        msg: black_box(&sealed),
                        aad: black_box(&primitive_aad),
                    },
                )
                .unwrap()
        })
    });
    group.finish();
}

fn key_derivation(c: &mut Criterion) {
    let kdf = KdfParams::default();
    let salt = Salt::from_bytes([7; 16]);
    let mut group = c.benchmark_group("kdf");
    // Each iteration is tens of milliseconds: keep the sample small.
    group.sample_size(10);
    group.bench_function("argon2id_default_params", |b| {
        b.iter(|| derive_auth_key(black_box("correct horse battery staple"), &kdf, &salt).unwrap())
    });
    group.finish();
}

criterion_group!(benches, records, key_derivation);
criterion_main!(benches);
