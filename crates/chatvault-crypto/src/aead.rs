//! The one AEAD this crate uses, XChaCha20-Poly1305, behind two small
//! in-place helpers shared by records, the key envelope and streams.
//!
//! Owns: building the cipher from a key and the detached-tag layout
//! `ciphertext || tag`.
//! Must never: hand out plaintext whose tag did not verify, or pick nonces
//! (callers own their nonce scheme: random for records and envelopes, a
//! counter for stream chunks).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

use crate::kdf::KEY_LEN;
use crate::CryptoError;

/// XChaCha20 nonce length.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub(crate) const TAG_LEN: usize = 16;

/// A cipher instance; it wipes its copy of the key when dropped.
pub(crate) fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(Key::from_slice(key))
}

/// Encrypts `buf[start..]` in place and appends the tag.
pub(crate) fn seal_in_place(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<(), CryptoError> {
    let plaintext_len = buf.len().saturating_sub(start);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf[start..])
        // The only failure is a message over 256 GiB.
        .map_err(|_| CryptoError::TooLarge { len: plaintext_len })?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// Verifies and decrypts `buf` (= `ciphertext || tag`) in place, leaving
/// the plaintext. On failure `buf` is cleared and `Err(())` returned: the
/// caller decides which [`CryptoError`] that means.
pub(crate) fn open_in_place(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), ()> {
    let Some(tag_at) = buf.len().checked_sub(TAG_LEN) else {
        buf.clear();
        return Err(());
    };
    let tag = Tag::clone_from_slice(&buf[tag_at..]);
    buf.truncate(tag_at);
    if cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, buf, &tag)
        .is_err()
    {
        buf.clear();
        return Err(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// draft-irtf-cfrg-xchacha-03, Appendix A.3.1, through our helpers (the
    /// same vector is checked against the library directly in
    /// tests/vectors.rs).
    #[test]
    fn xchacha_draft_vector_through_helpers() {
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce: [u8; 24] = core::array::from_fn(|i| 0x40 + i as u8);
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";
        let expected = hex::decode(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e",
            "c0875924c1c7987947deafd8780acf49",
        ))
        .unwrap();

        let cipher = cipher(&key);
        let mut buf = plaintext.to_vec();
        seal_in_place(&cipher, &nonce, &aad, &mut buf, 0).unwrap();
        assert_eq!(buf, expected);

        open_in_place(&cipher, &nonce, &aad, &mut buf).unwrap();
        assert_eq!(buf, plaintext);

        let mut tampered = expected.clone();
        tampered[0] ^= 1;
        assert_eq!(open_in_place(&cipher, &nonce, &aad, &mut tampered), Err(()));
        assert!(
            tampered.is_empty(),
            "no unauthenticated plaintext is left behind"
        );
    }

    #[test]
    fn seal_in_place_leaves_the_prefix_alone() {
        let cipher = cipher(&[1; 32]);
        let mut buf = b"headerbody".to_vec();
        seal_in_place(&cipher, &[2; 24], b"", &mut buf, 6).unwrap();
        assert_eq!(&buf[..6], b"header");
        assert_eq!(buf.len(), 10 + TAG_LEN);
        let mut sealed = buf[6..].to_vec();
        open_in_place(&cipher, &[2; 24], b"", &mut sealed).unwrap();
        assert_eq!(sealed, b"body");
    }

    #[test]
    fn open_in_place_rejects_input_shorter_than_a_tag() {
        let mut buf = vec![0u8; TAG_LEN - 1];
        assert_eq!(
            open_in_place(&cipher(&[1; 32]), &[0; 24], b"", &mut buf),
            Err(())
        );
    }
}
