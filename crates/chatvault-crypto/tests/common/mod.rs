//! Helpers shared by the integration tests: the fast, insecure KDF setup
//! every test but one uses.

#![allow(dead_code)]

use chatvault_crypto::{KdfParams, KdfPolicy, KeyEnvelope, VaultKeys};

/// Argon2id parameters that run in well under a millisecond.
pub fn fast() -> KdfParams {
    KdfParams::insecure_fast_for_tests()
}

/// The policy that lets [`fast`] parameters through.
pub fn test_policy() -> KdfPolicy {
    KdfPolicy::insecure_allow_weak_for_tests()
}

/// A new envelope under `passphrase` with fast parameters.
pub fn create(passphrase: &str) -> (KeyEnvelope, VaultKeys) {
    KeyEnvelope::create_with_policy(passphrase, fast(), test_policy()).unwrap()
}
