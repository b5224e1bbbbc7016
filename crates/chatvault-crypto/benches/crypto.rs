//! Criterion benchmarks: record seal/open at 1 KiB and key derivation at
//! the default (OWASP) parameters. Never run in CI as a gate.
//!
//! `cargo bench -p chatvault-crypto`

use std::hint::black_box;

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
