//! The platform's random source (the OS natively, `crypto.getRandomValues`
//! in a browser), for the few random values the facade itself needs.

use crate::{Result, VaultError};

/// Fills `buf` with random bytes.
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf).map_err(|e| VaultError::NoRandomness(e.to_string()))
}

/// A random 64-bit number.
pub(crate) fn u64() -> Result<u64> {
    let mut bytes = [0u8; 8];
    fill(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}
