//! Fresh randomness for salts, nonces and data keys.
//!
//! Owns: the single call into the platform random source (the OS, or
//! `crypto.getRandomValues` in the browser via getrandom's `js` feature).
//! Must never: fall back to a seeded or predictable generator — a failure is
//! reported, never papered over.

use crate::CryptoError;

/// `N` bytes from the platform's cryptographic random source.
pub(crate) fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|err| CryptoError::RandomSource {
        detail: err.to_string(),
    })?;
    Ok(bytes)
}
