//! Passphrase → keys: Argon2id parameters and the limits they must respect,
//! the per-vault salt, and the HKDF split of the master key into purpose
//! keys.
//!
//! Derivation: `master = Argon2id(passphrase, salt, m, t, p) -> 32 bytes`,
//! then `HKDF-SHA256(ikm = master, salt = salt)` expanded with a distinct
//! info string per purpose (`"chatvault v1 key-encryption-key"`,
//! `"chatvault v1 server-auth-key"`, and the stream keys in `stream`).
//!
//! Owns: [`KdfParams`] and their validation, [`KdfPolicy`], [`Salt`],
//! [`PassphraseKeys`] and [`derive_auth_key`].
//! Must never: run Argon2 on parameters that did not pass validation (a
//! hostile header could downgrade the vault or exhaust memory), keep the
//! master key alive after the purpose keys are expanded, or expose the
//! key-encryption key outside the crate.

use std::fmt;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hkdf::Hkdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::AuthKey;
use crate::random::random_array;
use crate::CryptoError;

/// Length of every symmetric key in this crate.
pub(crate) const KEY_LEN: usize = 32;

/// 32 secret bytes that are wiped when dropped.
pub(crate) type Secret32 = Zeroizing<[u8; KEY_LEN]>;

const INFO_KEY_ENCRYPTION_KEY: &[u8] = b"chatvault v1 key-encryption-key";
const INFO_SERVER_AUTH_KEY: &[u8] = b"chatvault v1 server-auth-key";

/// Argon2id cost parameters, stored next to every salt so a vault can be
/// opened with the parameters it was created with.
///
/// Serialized as `{"mCostKib": 19456, "tCost": 2, "pCost": 1}`.
/// `Default` is the OWASP minimum for Argon2id (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Number of passes over the memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// Least memory accepted by [`validate`](Self::validate) (19 MiB, OWASP).
    pub const MIN_M_COST_KIB: u32 = 19 * 1024;
    /// Least memory × passes accepted (19 MiB × 2), so more memory may buy
    /// fewer passes (OWASP's `m=46 MiB, t=1` passes) but never less work.
    pub const MIN_WORK_KIB_PASSES: u64 = Self::MIN_M_COST_KIB as u64 * 2;
    /// Most memory accepted (1 GiB), under every policy: 50 times the
    /// OWASP minimum, more than any legitimate vault or export needs, and
    /// small enough that a hostile export header or prelogin answer cannot
    /// make a client allocate gigabytes before the passphrase is checked.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    /// Most memory × passes accepted (1 GiB × 4), under every policy, so
    /// one derivation stays within seconds on a laptop.
    pub const MAX_WORK_KIB_PASSES: u64 = 4 * 1024 * 1024;
    /// Most passes accepted, under every policy (with little memory many
    /// passes would still be cheap per pass but unbounded in time).
    pub const MAX_T_COST: u32 = 64;
    /// Most lanes accepted, under every policy.
    pub const MAX_P_COST: u32 = 16;

    /// Parameters that derive a key in well under a millisecond: for tests
    /// only.
    ///
    /// **Insecure.** A passphrase protected with these can be brute-forced
    /// cheaply. [`validate`](Self::validate) and every `create`/`unlock`
    /// refuse them unless the caller passes
    /// [`KdfPolicy::insecure_allow_weak_for_tests`] to the `*_with_policy`
    /// variant, so a hostile header can never select them.
    #[doc(hidden)]
    pub fn insecure_fast_for_tests() -> KdfParams {
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Checks the parameters under the strict policy: at least
    /// [`MIN_M_COST_KIB`](Self::MIN_M_COST_KIB) and
    /// [`MIN_WORK_KIB_PASSES`](Self::MIN_WORK_KIB_PASSES), at most
    /// [`MAX_M_COST_KIB`](Self::MAX_M_COST_KIB),
    /// [`MAX_WORK_KIB_PASSES`](Self::MAX_WORK_KIB_PASSES),
    /// [`MAX_T_COST`](Self::MAX_T_COST) and
    /// [`MAX_P_COST`](Self::MAX_P_COST).
    ///
    /// Parameters read from a file or a server must pass this before they
    /// are used, so nobody can downgrade a vault or make a client allocate
    /// absurd amounts of memory.
    pub fn validate(&self) -> Result<(), CryptoError> {
        self.validate_with_policy(KdfPolicy::strict())
    }

    /// [`validate`](Self::validate) under an explicit policy. The upper
    /// limits apply under every policy; only the test policy waives the
    /// minimum.
    pub fn validate_with_policy(&self, policy: KdfPolicy) -> Result<(), CryptoError> {
        let KdfParams {
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
        } = *self;
        let work = u64::from(m) * u64::from(t);
        let excessive = |detail: String| Err(CryptoError::ExcessiveKdfParams { detail });
        let weak = |detail: String| Err(CryptoError::WeakKdfParams { detail });

        if m > Self::MAX_M_COST_KIB {
            return excessive(format!(
                "m={m} KiB, at most {} KiB allowed",
                Self::MAX_M_COST_KIB
            ));
        }
        if work > Self::MAX_WORK_KIB_PASSES {
            return excessive(format!(
                "m*t={work} KiB-passes, at most {} allowed",
                Self::MAX_WORK_KIB_PASSES
            ));
        }
        if t > Self::MAX_T_COST {
            return excessive(format!("t={t}, at most {} allowed", Self::MAX_T_COST));
        }
        if p > Self::MAX_P_COST {
            return excessive(format!("p={p}, at most {} allowed", Self::MAX_P_COST));
        }
        if t == 0 || p == 0 {
            return weak(format!("t={t}, p={p}; both must be at least 1"));
        }
        // Argon2 itself needs 8 blocks of 1 KiB per lane.
        if u64::from(m) < 8 * u64::from(p) {
            return weak(format!("m={m} KiB is less than 8 KiB per lane (p={p})"));
        }
        if policy.allow_insecure {
            return Ok(());
        }
        if m < Self::MIN_M_COST_KIB {
            return weak(format!("m={m} KiB"));
        }
        if work < Self::MIN_WORK_KIB_PASSES {
            return weak(format!("m={m} KiB with t={t}"));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: Self::MIN_M_COST_KIB,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// Which [`KdfParams`] a derivation accepts. `Default` is
/// [`strict`](Self::strict); production code never needs anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KdfPolicy {
    allow_insecure: bool,
}

impl KdfPolicy {
    /// Enforce the OWASP minimum (and the upper limits).
    pub fn strict() -> KdfPolicy {
        KdfPolicy {
            allow_insecure: false,
        }
    }

    /// Accept parameters below the minimum, such as
    /// [`KdfParams::insecure_fast_for_tests`], so test suites stay fast.
    /// The upper limits still apply.
    ///
    /// **For tests only**: an app that unlocks with this policy lets anyone
    /// who can edit its stored envelope weaken the key derivation of the
    /// next passphrase change.
    #[doc(hidden)]
    pub fn insecure_allow_weak_for_tests() -> KdfPolicy {
        KdfPolicy {
            allow_insecure: true,
        }
    }
}

/// The 16-byte random salt of a vault or an encrypted file. Public: the sync
/// server hands it out before login. Serialized as standard base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt([u8; Salt::LEN]);

impl Salt {
    /// Salt length in bytes.
    pub const LEN: usize = 16;

    /// A fresh random salt.
    pub fn generate() -> Result<Salt, CryptoError> {
        Ok(Salt(random_array()?))
    }

    /// Wraps existing salt bytes.
    pub fn from_bytes(bytes: [u8; Salt::LEN]) -> Salt {
        Salt(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; Salt::LEN] {
        &self.0
    }

    /// Standard base64 with padding, as in the envelope JSON.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses [`to_base64`](Self::to_base64) output.
    pub fn from_base64(text: &str) -> Result<Salt, CryptoError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|_| CryptoError::corrupt("salt is not valid base64"))?;
        let bytes: [u8; Salt::LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::corrupt("salt must be 16 bytes"))?;
        Ok(Salt(bytes))
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", self.to_base64())
    }
}

impl Serialize for Salt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Salt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Salt::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// The keys a passphrase yields for one salt and parameter set: the
/// key-encryption key (kept inside the crate) and the server auth key.
///
/// Derive once at login — the auth key proves the passphrase to the server,
/// then [`KeyEnvelope::unlock_with_keys`](crate::KeyEnvelope::unlock_with_keys)
/// opens the envelope fetched afterwards — so Argon2id runs once, not twice.
/// Wiped on drop.
pub struct PassphraseKeys {
    kdf: KdfParams,
    salt: Salt,
    kek: Secret32,
    auth: AuthKey,
}

impl PassphraseKeys {
    /// Runs Argon2id + HKDF under the strict policy.
    pub fn derive(
        passphrase: &str,
        kdf: &KdfParams,
        salt: &Salt,
    ) -> Result<PassphraseKeys, CryptoError> {
        Self::derive_with_policy(passphrase, kdf, salt, KdfPolicy::strict())
    }

    /// [`derive`](Self::derive) under an explicit [`KdfPolicy`].
    pub fn derive_with_policy(
        passphrase: &str,
        kdf: &KdfParams,
        salt: &Salt,
        policy: KdfPolicy,
    ) -> Result<PassphraseKeys, CryptoError> {
        let master = master_key(passphrase, kdf, salt, policy)?;
        let kek = subkey(&master, salt, INFO_KEY_ENCRYPTION_KEY)?;
        let auth = AuthKey::from_secret(&*subkey(&master, salt, INFO_SERVER_AUTH_KEY)?);
        Ok(PassphraseKeys {
            kdf: *kdf,
            salt: *salt,
            kek,
            auth,
        })
    }

    /// The server-auth key these were derived into.
    pub fn auth_key(&self) -> &AuthKey {
        &self.auth
    }

    /// Consumes the keys, keeping only the auth key.
    pub fn into_auth_key(self) -> AuthKey {
        self.auth
    }

    /// The parameters these keys were derived with.
    pub fn kdf(&self) -> &KdfParams {
        &self.kdf
    }

    /// The salt these keys were derived with.
    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    pub(crate) fn kek(&self) -> &[u8; KEY_LEN] {
        &self.kek
    }
}

impl fmt::Debug for PassphraseKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseKeys")
            .field("kdf", &self.kdf)
            .field("salt", &self.salt)
            .finish_non_exhaustive()
    }
}

/// The server-auth key for `passphrase` under a user's public salt and
/// parameters (as the sync server returns them at prelogin), without the
/// key envelope. Strict policy.
pub fn derive_auth_key(
    passphrase: &str,
    kdf: &KdfParams,
    salt: &Salt,
) -> Result<AuthKey, CryptoError> {
    derive_auth_key_with_policy(passphrase, kdf, salt, KdfPolicy::strict())
}

/// [`derive_auth_key`] under an explicit [`KdfPolicy`].
pub fn derive_auth_key_with_policy(
    passphrase: &str,
    kdf: &KdfParams,
    salt: &Salt,
    policy: KdfPolicy,
) -> Result<AuthKey, CryptoError> {
    Ok(PassphraseKeys::derive_with_policy(passphrase, kdf, salt, policy)?.into_auth_key())
}

/// Argon2id(passphrase, salt) after validating the parameters. The working
/// memory is allocated fallibly (a failed allocation is an error, not an
/// abort) and wiped afterwards: it holds passphrase-derived state.
pub(crate) fn master_key(
    passphrase: &str,
    kdf: &KdfParams,
    salt: &Salt,
    policy: KdfPolicy,
) -> Result<Secret32, CryptoError> {
    kdf.validate_with_policy(policy)?;
    let params =
        Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(KEY_LEN)).map_err(|err| {
            CryptoError::WeakKdfParams {
                detail: err.to_string(),
            }
        })?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);

    let block_count = argon2.params().block_count();
    let mut blocks: Vec<Block> = Vec::new();
    blocks
        .try_reserve_exact(block_count)
        .map_err(|_| CryptoError::KdfOutOfMemory {
            m_cost_kib: kdf.m_cost_kib,
        })?;
    blocks.resize(block_count, Block::default());

    let mut master = Zeroizing::new([0u8; KEY_LEN]);
    let result = argon2.hash_password_into_with_memory(
        passphrase.as_bytes(),
        salt.as_bytes(),
        master.as_mut_slice(),
        &mut blocks,
    );
    blocks.iter_mut().for_each(Zeroize::zeroize);
    result.map_err(|err| CryptoError::KeyDerivation {
        detail: err.to_string(),
    })?;
    Ok(master)
}

/// HKDF-SHA256 expand of the master key for one purpose.
pub(crate) fn subkey(
    master: &[u8; KEY_LEN],
    salt: &Salt,
    info: &[u8],
) -> Result<Secret32, CryptoError> {
    let hkdf = Hkdf::<Sha256>::new(Some(salt.as_bytes()), master);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hkdf.expand(info, key.as_mut_slice())
        .map_err(|err| CryptoError::KeyDerivation {
            detail: err.to_string(),
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(m: u32, t: u32, p: u32) -> KdfParams {
        KdfParams {
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
        }
    }

    #[test]
    fn default_is_the_owasp_minimum_and_passes() {
        assert_eq!(KdfParams::default(), params(19456, 2, 1));
        assert_eq!(KdfParams::default().validate(), Ok(()));
    }

    #[test]
    fn serializes_camel_case() {
        let json = serde_json::to_string(&KdfParams::default()).unwrap();
        assert_eq!(json, r#"{"mCostKib":19456,"tCost":2,"pCost":1}"#);
    }

    #[test]
    fn strict_policy_refuses_anything_below_the_minimum() {
        for weak in [
            KdfParams::insecure_fast_for_tests(),
            params(19455, 2, 1),
            params(19456, 1, 1),
            params(19456, 2, 0),
            params(19456, 0, 1),
            params(0, 0, 0),
        ] {
            assert!(
                matches!(weak.validate(), Err(CryptoError::WeakKdfParams { .. })),
                "{weak:?} was accepted"
            );
        }
    }

    #[test]
    fn more_memory_may_buy_fewer_passes() {
        assert_eq!(params(46 * 1024, 1, 1).validate(), Ok(()));
        assert_eq!(params(64 * 1024, 3, 4).validate(), Ok(()));
    }

    #[test]
    fn upper_limits_hold_under_every_policy() {
        for policy in [
            KdfPolicy::strict(),
            KdfPolicy::insecure_allow_weak_for_tests(),
        ] {
            for absurd in [
                params(KdfParams::MAX_M_COST_KIB + 1, 1, 1),
                params(u32::MAX, u32::MAX, u32::MAX),
                params(1024 * 1024, 5, 1),
                params(19456, 2, KdfParams::MAX_P_COST + 1),
                // What the 4 GiB bound of earlier builds still let through.
                params(4 * 1024 * 1024, 1, 1),
                params(2 * 1024 * 1024, 1, 1),
                params(19456, KdfParams::MAX_T_COST + 1, 1),
            ] {
                assert!(
                    matches!(
                        absurd.validate_with_policy(policy),
                        Err(CryptoError::ExcessiveKdfParams { .. })
                    ),
                    "{absurd:?} was accepted under {policy:?}"
                );
            }
        }
        assert_eq!(params(KdfParams::MAX_M_COST_KIB, 4, 1).validate(), Ok(()));
    }

    #[test]
    fn test_policy_only_waives_the_minimum() {
        let policy = KdfPolicy::insecure_allow_weak_for_tests();
        assert_eq!(
            KdfParams::insecure_fast_for_tests().validate_with_policy(policy),
            Ok(())
        );
        // Still impossible for Argon2: under 8 KiB per lane, or zero passes.
        assert!(params(8, 1, 2).validate_with_policy(policy).is_err());
        assert!(params(64, 0, 1).validate_with_policy(policy).is_err());
    }

    #[test]
    fn master_key_refuses_weak_params_before_running_argon2() {
        let salt = Salt::from_bytes([7; 16]);
        let err = master_key(
            "pw",
            &KdfParams::insecure_fast_for_tests(),
            &salt,
            KdfPolicy::strict(),
        )
        .unwrap_err();
        assert!(matches!(err, CryptoError::WeakKdfParams { .. }));
    }

    #[test]
    fn purpose_keys_differ_and_depend_on_salt_and_passphrase() {
        let fast = KdfParams::insecure_fast_for_tests();
        let policy = KdfPolicy::insecure_allow_weak_for_tests();
        let salt_a = Salt::from_bytes([1; 16]);
        let salt_b = Salt::from_bytes([2; 16]);
        let a = PassphraseKeys::derive_with_policy("pw", &fast, &salt_a, policy).unwrap();
        let a2 = PassphraseKeys::derive_with_policy("pw", &fast, &salt_a, policy).unwrap();
        let b = PassphraseKeys::derive_with_policy("pw", &fast, &salt_b, policy).unwrap();
        let c = PassphraseKeys::derive_with_policy("pw2", &fast, &salt_a, policy).unwrap();

        assert_eq!(a.kek(), a2.kek(), "derivation is deterministic");
        assert_ne!(a.kek(), a.auth_key().as_bytes(), "KEK and auth key differ");
        assert_ne!(a.kek(), b.kek());
        assert_ne!(a.kek(), c.kek());
        assert_eq!(
            a.auth_key().to_base64(),
            derive_auth_key_with_policy("pw", &fast, &salt_a, policy)
                .unwrap()
                .to_base64()
        );
    }

    #[test]
    fn salt_base64_round_trips_and_checks_length() {
        let salt = Salt::from_bytes(*b"0123456789abcdef");
        assert_eq!(Salt::from_base64(&salt.to_base64()), Ok(salt));
        assert!(Salt::from_base64("AAAA").is_err());
        assert!(Salt::from_base64("not base64!").is_err());
        let json = serde_json::to_string(&salt).unwrap();
        assert_eq!(serde_json::from_str::<Salt>(&json).unwrap(), salt);
    }

    #[test]
    fn debug_does_not_print_keys() {
        let keys = PassphraseKeys::derive_with_policy(
            "pw",
            &KdfParams::insecure_fast_for_tests(),
            &Salt::from_bytes([3; 16]),
            KdfPolicy::insecure_allow_weak_for_tests(),
        )
        .unwrap();
        let debug = format!("{keys:?}");
        assert!(!debug.contains("kek"), "{debug}");
        assert!(!debug.contains(&keys.auth_key().to_base64()), "{debug}");
    }
}
