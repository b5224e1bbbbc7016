//! Passphrase-encrypted streams for encrypted exports: constant memory
//! however large the file, and every reordering, truncation, extension or
//! bit flip is detected.
//!
//! File layout (format version 1; integers big-endian):
//!
//! ```text
//! header (67 bytes)
//!   magic        "CVENC1\n"                          7 bytes
//!   kdf          mCostKib u32 || tCost u32 || pCost u32   12
//!   salt         random                              16
//!   nonce prefix random                              16
//!   key check    tag of XChaCha20-Poly1305(header key, nonce 0^24,
//!                aad = the 51 header bytes above, plaintext "")  16
//! chunks
//!   chunk i      XChaCha20-Poly1305(payload key,
//!                  nonce = prefix || i (u32) || last (u8: 0/1) || 0 0 0,
//!                  aad = "", 64 KiB of plaintext) || tag
//!   ...          every chunk but the last holds exactly 64 KiB; the last
//!                holds 0..=64 KiB and has last = 1
//! trailer        u32: length of the last chunk as stored (plaintext + 16)
//! ```
//!
//! Keys: `master = Argon2id(passphrase, salt, kdf)`, then HKDF-SHA256
//! (salt = salt) with infos `"chatvault v1 stream-payload-key"` and
//! `"chatvault v1 stream-header-key"`. The salt is fresh per file, so each
//! file has its own keys and the header key is used exactly once.
//!
//! This is the STREAM construction of age and Tink: the counter in the
//! nonce pins each chunk's position, the last-chunk flag makes cutting the
//! file at a chunk boundary detectable, and the key check tells a wrong
//! passphrase (or an edited header) apart from damaged data. The trailer
//! tells a cut inside a chunk ([`CryptoError::Truncated`]) from a damaged
//! last chunk ([`CryptoError::Tampered`]).
//!
//! Owns: [`EncryptingWriter`], [`DecryptingReader`], [`is_encrypted_stream`].
//! Must never: buffer more than one chunk, release plaintext of a chunk whose
//! tag did not verify, or report a stream as complete before its last chunk
//! verified.

use std::io::{self, Read, Write};

use chacha20poly1305::XChaCha20Poly1305;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::{master_key, subkey, KdfParams, KdfPolicy, Salt};
use crate::random::random_array;
use crate::CryptoError;

const MAGIC: &[u8; MAGIC_LEN] = b"CVENC1\n";
const MAGIC_LEN: usize = 7;
const STREAM_FORMAT_VERSION: u32 = 1;
const CHUNK_LEN: usize = 64 * 1024;
const SEALED_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;
const TRAILER_LEN: usize = 4;
const NONCE_PREFIX_LEN: usize = 16;
const KDF_AT: usize = MAGIC_LEN;
const SALT_AT: usize = KDF_AT + 12;
const PREFIX_AT: usize = SALT_AT + Salt::LEN;
const CHECK_AT: usize = PREFIX_AT + NONCE_PREFIX_LEN;
const HEADER_LEN: usize = CHECK_AT + TAG_LEN;
const INFO_PAYLOAD_KEY: &[u8] = b"chatvault v1 stream-payload-key";
const INFO_HEADER_KEY: &[u8] = b"chatvault v1 stream-header-key";

/// Whether `first_bytes` start like a chatvault encrypted stream (of any
/// format version), so an importer can tell an encrypted export from a
/// plain one. Give it at least the first 7 bytes; fewer always answer
/// `false`.
pub fn is_encrypted_stream(first_bytes: &[u8]) -> bool {
    first_bytes.len() >= MAGIC_LEN && magic_prefix_ok(&first_bytes[..MAGIC_LEN])
}

/// Whether `bytes` (at most 7) agree with `"CVENC" <digit> "\n"` so far.
fn magic_prefix_ok(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match i {
        0..=4 => b == MAGIC[i],
        5 => b.is_ascii_digit(),
        _ => b == b'\n',
    })
}

/// Per-file keys; both wipe themselves on drop.
struct StreamKeys {
    payload: XChaCha20Poly1305,
    header: XChaCha20Poly1305,
}

impl StreamKeys {
    fn derive(
        passphrase: &str,
        kdf: &KdfParams,
        salt: &Salt,
        policy: KdfPolicy,
    ) -> Result<StreamKeys, CryptoError> {
        let master = master_key(passphrase, kdf, salt, policy)?;
        Ok(StreamKeys {
            payload: aead::cipher(&*subkey(&master, salt, INFO_PAYLOAD_KEY)?),
            header: aead::cipher(&*subkey(&master, salt, INFO_HEADER_KEY)?),
        })
    }
}

fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    nonce[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_PREFIX_LEN + 4] = u8::from(last);
    nonce
}

/// Encrypts everything written to it into `inner`, in the format described
/// in the module docs.
///
/// **Call [`finish`](Self::finish)**: it writes the last chunk. A writer
/// dropped without it leaves a file that [`DecryptingReader`] rejects as
/// [`CryptoError::Truncated`] — which is what an interrupted export should
/// look like. `flush` only flushes `inner`; it cannot emit a partial chunk.
///
/// Nothing reaches `inner` until 64 KiB are buffered or `finish` is called.
/// If a write to `inner` fails, the writer refuses all further use
/// ([`CryptoError::StreamPoisoned`]): the output is incomplete.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    payload: XChaCha20Poly1305,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The header, until it is written ahead of the first chunk.
    pending_header: Option<[u8; HEADER_LEN]>,
    counter: u32,
    /// Plaintext of the current chunk; sealed in place when emitted.
    buf: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> EncryptingWriter<W> {
    /// Starts an encrypted stream over `inner`, stretching `passphrase` with
    /// `kdf` (strict policy) under a fresh salt. Runs Argon2id, so it takes
    /// as long as unlocking a vault.
    pub fn new(inner: W, passphrase: &str, kdf: KdfParams) -> Result<Self, CryptoError> {
        Self::new_with_policy(inner, passphrase, kdf, KdfPolicy::strict())
    }

    /// [`new`](Self::new) under an explicit [`KdfPolicy`].
    pub fn new_with_policy(
        inner: W,
        passphrase: &str,
        kdf: KdfParams,
        policy: KdfPolicy,
    ) -> Result<Self, CryptoError> {
        if passphrase.is_empty() {
            return Err(CryptoError::EmptyPassphrase);
        }
        let salt = Salt::generate()?;
        let nonce_prefix: [u8; NONCE_PREFIX_LEN] = random_array()?;
        let keys = StreamKeys::derive(passphrase, &kdf, &salt, policy)?;

        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC_LEN].copy_from_slice(MAGIC);
        for (i, field) in [kdf.m_cost_kib, kdf.t_cost, kdf.p_cost]
            .into_iter()
            .enumerate()
        {
            header[KDF_AT + 4 * i..KDF_AT + 4 * (i + 1)].copy_from_slice(&field.to_be_bytes());
        }
        header[SALT_AT..PREFIX_AT].copy_from_slice(salt.as_bytes());
        header[PREFIX_AT..CHECK_AT].copy_from_slice(&nonce_prefix);
        let mut check = Vec::with_capacity(TAG_LEN);
        aead::seal_in_place(
            &keys.header,
            &[0; NONCE_LEN],
            &header[..CHECK_AT],
            &mut check,
            0,
        )?;
        header[CHECK_AT..].copy_from_slice(&check);

        Ok(EncryptingWriter {
            inner,
            payload: keys.payload,
            nonce_prefix,
            pending_header: Some(header),
            counter: 0,
            buf: Vec::with_capacity(SEALED_CHUNK_LEN),
            poisoned: false,
        })
    }

    /// Seals and writes the last chunk and the trailer, flushes `inner` and
    /// returns it. Without this call the file is unreadable.
    pub fn finish(mut self) -> io::Result<W> {
        self.check_usable()?;
        self.emit_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(CryptoError::StreamPoisoned.into());
        }
        Ok(())
    }

    fn emit_chunk(&mut self, last: bool) -> io::Result<()> {
        let result = self.try_emit_chunk(last);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn try_emit_chunk(&mut self, last: bool) -> io::Result<()> {
        // The chunk after this one needs a counter of its own.
        let next_counter = match (last, self.counter.checked_add(1)) {
            (true, _) => self.counter,
            (false, Some(next)) => next,
            (false, None) => return Err(CryptoError::StreamTooLong.into()),
        };
        let nonce = chunk_nonce(&self.nonce_prefix, self.counter, last);
        aead::seal_in_place(&self.payload, &nonce, &[], &mut self.buf, 0)?;
        if let Some(header) = self.pending_header.take() {
            self.inner.write_all(&header)?;
        }
        self.inner.write_all(&self.buf)?;
        if last {
            // At most 64 KiB + 16, so it always fits a u32.
            let sealed_len = self.buf.len() as u32;
            self.inner.write_all(&sealed_len.to_be_bytes())?;
        }
        self.buf.clear();
        self.counter = next_counter;
        Ok(())
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_usable()?;
        if data.is_empty() {
            return Ok(0);
        }
        // A full chunk is only emitted once more data arrives, so that
        // `finish` can still mark it as the last one.
        if self.buf.len() == CHUNK_LEN {
            self.emit_chunk(false)?;
        }
        let take = (CHUNK_LEN - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        self.inner.flush()
    }
}

impl<W: Write> std::fmt::Debug for EncryptingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptingWriter")
            .field("chunks_written", &self.counter)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

enum ReadState {
    Chunks,
    Finished,
    Failed(CryptoError),
}

/// Decrypts a stream written by [`EncryptingWriter`], verifying each 64 KiB
/// chunk before releasing its plaintext.
///
/// Failures come out as `std::io::Error` carrying a [`CryptoError`] (get it
/// back with [`CryptoError::from_io`]): [`CryptoError::WrongPassphrase`]
/// from [`new`](Self::new), [`CryptoError::Truncated`] if the stream ends
/// early, [`CryptoError::Tampered`] if a chunk fails to verify. Once it
/// failed, every further read repeats the error; a reader never reports a
/// clean end of file before the last chunk verified.
///
/// Plaintext released before a later chunk fails *was* authentic, but the
/// file as a whole is not: an importer should validate the whole file before
/// applying any of it.
pub struct DecryptingReader<R: Read> {
    inner: R,
    payload: XChaCha20Poly1305,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    counter: u32,
    /// Ciphertext read ahead of decryption: up to one chunk, the trailer and
    /// one byte, enough to know whether the chunk is the last.
    sealed: Vec<u8>,
    plain: Vec<u8>,
    plain_at: usize,
    state: ReadState,
}

impl<R: Read> DecryptingReader<R> {
    /// Reads and checks the header of `inner` and derives the file's keys
    /// from `passphrase` (strict policy for the stored parameters).
    pub fn new(inner: R, passphrase: &str) -> io::Result<Self> {
        Self::new_with_policy(inner, passphrase, KdfPolicy::strict())
    }

    /// [`new`](Self::new) under an explicit [`KdfPolicy`].
    pub fn new_with_policy(mut inner: R, passphrase: &str, policy: KdfPolicy) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_up_to(&mut inner, &mut header[..MAGIC_LEN])?;
        check_magic(&header[..got])?;
        let got = read_up_to(&mut inner, &mut header[MAGIC_LEN..])?;
        if got < HEADER_LEN - MAGIC_LEN {
            return Err(CryptoError::Truncated.into());
        }

        let field = |i: usize| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&header[KDF_AT + 4 * i..KDF_AT + 4 * (i + 1)]);
            u32::from_be_bytes(bytes)
        };
        let kdf = KdfParams {
            m_cost_kib: field(0),
            t_cost: field(1),
            p_cost: field(2),
        };
        let mut salt = [0u8; Salt::LEN];
        salt.copy_from_slice(&header[SALT_AT..PREFIX_AT]);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&header[PREFIX_AT..CHECK_AT]);

        let keys = StreamKeys::derive(passphrase, &kdf, &Salt::from_bytes(salt), policy)?;
        let mut check = header[CHECK_AT..].to_vec();
        aead::open_in_place(
            &keys.header,
            &[0; NONCE_LEN],
            &header[..CHECK_AT],
            &mut check,
        )
        .map_err(|()| CryptoError::WrongPassphrase)?;

        Ok(DecryptingReader {
            inner,
            payload: keys.payload,
            nonce_prefix,
            counter: 0,
            sealed: Vec::with_capacity(SEALED_CHUNK_LEN + TRAILER_LEN + 1),
            plain: Vec::with_capacity(SEALED_CHUNK_LEN),
            plain_at: 0,
            state: ReadState::Chunks,
        })
    }

    /// Reads ahead until more than a final piece (last chunk + trailer) is
    /// buffered, or the input ends.
    fn fill_sealed(&mut self) -> io::Result<()> {
        let want = SEALED_CHUNK_LEN + TRAILER_LEN + 1;
        while self.sealed.len() < want {
            let start = self.sealed.len();
            self.sealed.resize(want, 0);
            let result = self.inner.read(&mut self.sealed[start..]);
            match result {
                Ok(0) => {
                    self.sealed.truncate(start);
                    return Ok(());
                }
                Ok(n) => self.sealed.truncate(start + n),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => self.sealed.truncate(start),
                Err(err) => {
                    self.sealed.truncate(start);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        self.fill_sealed()?;
        let result = if self.sealed.len() > SEALED_CHUNK_LEN + TRAILER_LEN {
            self.open_middle_chunk()
        } else {
            self.open_final_piece()
        };
        self.plain_at = 0;
        if let Err(err) = result {
            self.plain.clear();
            self.state = ReadState::Failed(err.clone());
            return Err(err.into());
        }
        Ok(())
    }

    /// More follows, so the first chunk-length of ciphertext is a full,
    /// non-last chunk.
    fn open_middle_chunk(&mut self) -> Result<(), CryptoError> {
        self.plain.clear();
        self.plain
            .extend_from_slice(&self.sealed[..SEALED_CHUNK_LEN]);
        let nonce = chunk_nonce(&self.nonce_prefix, self.counter, false);
        aead::open_in_place(&self.payload, &nonce, &[], &mut self.plain)
            .map_err(|()| CryptoError::Tampered)?;
        self.sealed.drain(..SEALED_CHUNK_LEN);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| CryptoError::corrupt("stream has more chunks than its format allows"))?;
        Ok(())
    }

    /// The input ended: what is buffered must be the last chunk and its
    /// trailer.
    fn open_final_piece(&mut self) -> Result<(), CryptoError> {
        let piece = std::mem::take(&mut self.sealed);
        if piece.len() < TAG_LEN + TRAILER_LEN {
            return Err(CryptoError::Truncated);
        }
        let body_len = piece.len() - TRAILER_LEN;
        let mut trailer = [0u8; TRAILER_LEN];
        trailer.copy_from_slice(&piece[body_len..]);
        let trailer_matches = u32::from_be_bytes(trailer) as usize == body_len;

        self.plain.clear();
        self.plain.extend_from_slice(&piece[..body_len]);
        let nonce = chunk_nonce(&self.nonce_prefix, self.counter, true);
        let opened = aead::open_in_place(&self.payload, &nonce, &[], &mut self.plain).is_ok();
        match (trailer_matches, opened) {
            (true, true) => {
                self.state = ReadState::Finished;
                Ok(())
            }
            // An intact last chunk behind a wrong trailer, or a right-looking
            // trailer on a bad chunk: damaged.
            (false, true) | (true, false) => Err(CryptoError::Tampered),
            // Neither: the input stops somewhere before the real end.
            (false, false) => Err(CryptoError::Truncated),
        }
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_at < self.plain.len() {
                let n = out.len().min(self.plain.len() - self.plain_at);
                out[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
                self.plain_at += n;
                return Ok(n);
            }
            match &self.state {
                ReadState::Finished => return Ok(0),
                ReadState::Failed(err) => return Err(err.clone().into()),
                ReadState::Chunks => {}
            }
            if out.is_empty() {
                return Ok(0);
            }
            self.next_chunk()?;
        }
    }
}

impl<R: Read> std::fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            ReadState::Chunks => "reading",
            ReadState::Finished => "finished",
            ReadState::Failed(_) => "failed",
        };
        f.debug_struct("DecryptingReader")
            .field("chunks_read", &self.counter)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            // `min` guards against a reader that claims more than it was given.
            Ok(n) => filled += n.min(buf.len() - filled),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Checks the (possibly short) magic read from the start of a stream.
fn check_magic(bytes: &[u8]) -> Result<(), CryptoError> {
    if !magic_prefix_ok(bytes) {
        return Err(CryptoError::NotEncrypted);
    }
    if bytes.len() < MAGIC_LEN {
        // Empty, or a prefix of the magic: a file cut off (or never
        // finished) right at its start.
        return Err(CryptoError::Truncated);
    }
    let version = u32::from(bytes[5] - b'0');
    match version {
        STREAM_FORMAT_VERSION => Ok(()),
        0 => Err(CryptoError::corrupt(
            "encrypted stream version 0 does not exist",
        )),
        _ => Err(CryptoError::UnsupportedVersion {
            found: version,
            newest: STREAM_FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets_add_up() {
        assert_eq!(
            (KDF_AT, SALT_AT, PREFIX_AT, CHECK_AT, HEADER_LEN),
            (7, 19, 35, 51, 67)
        );
    }

    #[test]
    fn chunk_nonce_layout() {
        let nonce = chunk_nonce(&[0xAA; 16], 0x0102_0304, true);
        assert_eq!(&nonce[..16], &[0xAA; 16]);
        assert_eq!(&nonce[16..], &[1, 2, 3, 4, 1, 0, 0, 0]);
        assert_ne!(nonce, chunk_nonce(&[0xAA; 16], 0x0102_0304, false));
    }

    #[test]
    fn magic_sniffing() {
        assert!(is_encrypted_stream(b"CVENC1\nrest"));
        assert!(
            is_encrypted_stream(b"CVENC2\n"),
            "newer versions are still ours"
        );
        assert!(!is_encrypted_stream(b"CVENC1"));
        assert!(!is_encrypted_stream(b"{\"version\":1}"));
        assert!(!is_encrypted_stream(b""));
    }

    #[test]
    fn magic_checks() {
        assert_eq!(check_magic(b"CVENC1\n"), Ok(()));
        assert_eq!(check_magic(b""), Err(CryptoError::Truncated));
        assert_eq!(check_magic(b"CVE"), Err(CryptoError::Truncated));
        assert_eq!(check_magic(b"{\"a\":1"), Err(CryptoError::NotEncrypted));
        assert_eq!(
            check_magic(b"CVENC3\n"),
            Err(CryptoError::UnsupportedVersion {
                found: 3,
                newest: 1
            })
        );
        assert!(matches!(
            check_magic(b"CVENC0\n"),
            Err(CryptoError::Corrupt { .. })
        ));
    }
}
