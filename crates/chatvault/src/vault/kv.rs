//! Key-value state sealed with the vault's keys: [`SealedKv`] wraps any
//! [`KvStore`] (localStorage, sessionStorage, IndexedDB, memory) so what
//! reaches storage is ciphertext, and [`KvSealer`] does the sealing alone
//! for a caller that moves values itself (a page writing localStorage for
//! a vault that lives in a Web Worker).
//!
//! # Stored form
//! `cv1:` followed by the keyring's record blob (XChaCha20-Poly1305, the
//! newest key; see `chatvault_crypto::record`) in unpadded URL-safe base64.
//! The blob's associated data binds the vault, the kind `"kv"`, the
//! namespace and the key, so a value copied onto another key, into another
//! namespace or from another vault does not open
//! ([`KvError::Damaged`]). What it cannot tell: an older value of the same
//! key put back (storage keeps no version to check it against); whoever
//! can write an origin's storage can also run script on it, which is the
//! stronger attack.
//!
//! Key rotation and passphrase changes need nothing here: the keyring
//! keeps every older key, so values sealed before still open, and each
//! `set` seals with the newest.
//!
//! Must never: write a plaintext value to the wrapped store, return a
//! value whose tag did not verify, or keep the vault's keys alive after
//! the vault is dropped (the sealer holds them weakly: a locked vault's
//! sealer answers [`KvError::Unavailable`]).

use super::Vault;
use crate::codec::Codec;
use crate::{Result, VaultError};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chatvault_crypto::{Keyring, RecordAad};
use chatvault_store::kv::{KvError, KvResult, KvStore, KvUsage};
use std::sync::{Arc, Weak};

/// Prefix of every sealed value (format 1 of sealed key-value values).
const PREFIX: &str = "cv1:";
/// The record kind sealed values are bound to.
const KIND: &str = "kv";

/// Seals and opens key-value values with a vault's keys. Get one from
/// [`Vault::kv_sealer`]; it stops working when the vault is dropped.
#[derive(Clone)]
pub struct KvSealer {
    codec: Weak<Codec>,
}

impl std::fmt::Debug for KvSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSealer")
            .field("unlocked", &(self.codec.strong_count() > 0))
            .finish()
    }
}

impl KvSealer {
    fn keyring(&self) -> KvResult<Arc<Keyring>> {
        self.codec
            .upgrade()
            .and_then(|codec| codec.keyring())
            .ok_or_else(|| KvError::Unavailable {
                detail: "the vault is locked: unlock it to read or write encrypted state".into(),
            })
    }

    /// The stored form of `value` under `key` in `namespace`.
    pub fn seal(&self, namespace: &str, key: &str, value: &str) -> KvResult<String> {
        let blob = self
            .keyring()?
            .seal(&aad(namespace, key), value.as_bytes())
            .map_err(|e| KvError::Backend {
                detail: format!("cannot seal the value for \"{key}\": {e}"),
            })?;
        let mut stored = String::with_capacity(PREFIX.len() + blob.len().div_ceil(3) * 4);
        stored.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&blob, &mut stored);
        Ok(stored)
    }

    /// The value `stored` holds, if it was sealed by this vault for `key`
    /// in `namespace`; [`KvError::Damaged`] otherwise.
    pub fn open(&self, namespace: &str, key: &str, stored: &str) -> KvResult<String> {
        let keyring = self.keyring()?;
        let damaged = |reason: String| KvError::Damaged {
            key: key.to_owned(),
            reason,
        };
        let Some(text) = stored.strip_prefix(PREFIX) else {
            return Err(damaged(
                "it is not an encrypted chatvault value (written in plain, or by something else)"
                    .into(),
            ));
        };
        let blob = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| damaged(format!("not valid base64: {e}")))?;
        let plain = keyring.open(&aad(namespace, key), &blob).map_err(|e| {
            damaged(format!(
                "it does not open with this vault's keys for this key (damaged, moved from \
                 another key or namespace, or written by another vault): {e}"
            ))
        })?;
        String::from_utf8(plain).map_err(|e| damaged(format!("not UTF-8 text: {e}")))
    }
}

/// The associated data of a sealed value: the namespace rides in the
/// record's `conversation` slot (the scope a record belongs to).
fn aad<'a>(namespace: &'a str, key: &'a str) -> RecordAad<'a> {
    RecordAad::new(KIND, key).with_conversation(namespace)
}

impl Vault {
    /// A sealer for key-value state under this vault's keys. Refused with
    /// [`VaultError::NotEncrypted`] for a plaintext vault: there is no key
    /// to seal with, and storing state in the clear while calling it
    /// encrypted would be worse than an error.
    pub fn kv_sealer(&self) -> Result<KvSealer> {
        if !self.codec.is_encrypted() {
            return Err(VaultError::NotEncrypted);
        }
        Ok(KvSealer {
            codec: Arc::downgrade(&self.codec),
        })
    }

    /// `inner`, with every value sealed by this vault's keys (see
    /// [`SealedKv`]).
    pub fn sealed_kv<S: KvStore>(&self, inner: S) -> Result<SealedKv<S>> {
        Ok(SealedKv {
            inner,
            sealer: self.kv_sealer()?,
        })
    }
}

/// A [`KvStore`] whose values are sealed by a vault's keys before they
/// reach `S`. Keys stay clear (they name state, like `"settings"`; put
/// nothing private in a key). The size guard of `S` applies to the sealed
/// form, which is about 4/3 of the value plus 60 bytes.
#[derive(Debug)]
pub struct SealedKv<S> {
    inner: S,
    sealer: KvSealer,
}

impl<S> SealedKv<S> {
    /// The wrapped store, which holds only sealed values.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[cfg_attr(target_family = "wasm", async_trait(?Send))]
#[cfg_attr(not(target_family = "wasm"), async_trait)]
impl<S: KvStore> KvStore for SealedKv<S> {
    fn namespace(&self) -> &str {
        self.inner.namespace()
    }

    async fn get(&self, key: &str) -> KvResult<Option<String>> {
        match self.inner.get(key).await? {
            None => Ok(None),
            Some(stored) => self.sealer.open(self.namespace(), key, &stored).map(Some),
        }
    }

    async fn set(&self, key: &str, value: &str) -> KvResult<()> {
        chatvault_store::kv::check_key(key)?;
        let stored = self.sealer.seal(self.namespace(), key, value)?;
        self.inner.set(key, &stored).await
    }

    async fn remove(&self, key: &str) -> KvResult<()> {
        self.inner.remove(key).await
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        self.inner.keys().await
    }

    async fn clear(&self) -> KvResult<()> {
        self.inner.clear().await
    }

    async fn usage(&self) -> KvResult<KvUsage> {
        self.inner.usage().await
    }
}
