//! Credentials and the rules around them, as plain functions: hashing and
//! verifying auth keys (Argon2id), minting and hashing session tokens,
//! deterministic fake prelogin answers, session lifetimes and the failed-login
//! backoff.
//!
//! Owns every secret-handling decision of the server. Must never store or
//! log an auth key or a session token (only their hashes), and never make a
//! rule depend on a clock it reads itself: time is always a parameter.

use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chatvault_core::Timestamp;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::clock::plus;
use crate::types::{AuthKey, Salt, SessionHash, Username, WireKdfParams};

/// Argon2id cost for hashing auth keys. The default is the OWASP minimum
/// (19 MiB, 2 passes): the auth key is 256 bits of HKDF output, so the hash
/// only has to make a stolen database useless for offline guessing of the
/// (already Argon2-stretched) passphrase, not to stretch a weak secret.
/// Lower it only for tests and load measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthHashCost {
    /// Memory in KiB (default 19,456).
    pub m_kib: u32,
    /// Passes over the memory (default 2).
    pub t: u32,
}

impl Default for AuthHashCost {
    fn default() -> Self {
        AuthHashCost {
            m_kib: 19_456,
            t: 2,
        }
    }
}

impl AuthHashCost {
    fn params(self) -> Result<Params, CredentialError> {
        Params::new(self.m_kib, self.t, 1, Some(HASH_LEN))
            .map_err(|e| CredentialError(format!("auth hash cost: {e}")))
    }
}

/// Length of the stored Argon2id output.
const HASH_LEN: usize = 32;

/// Failure of the OS random source or of the hasher; never caused by input.
#[derive(Debug, thiserror::Error)]
#[error("credential machinery failed: {0}")]
pub struct CredentialError(String);

impl CredentialError {
    pub(crate) fn new(detail: String) -> Self {
        CredentialError(detail)
    }
}

/// Argon2 working memory owned by one hashing worker and reused for every
/// hash it computes, so the server's memory does not depend on how many
/// logins it has served (a fresh 19 MiB buffer per login left glibc arenas
/// holding gigabytes). It only grows, once, to verify a stored hash made
/// with a larger cost than today's.
pub(crate) struct HashMemory(Vec<Block>);

impl HashMemory {
    /// Memory for hashes of `cost`, allocated (and touched) now.
    pub(crate) fn new(cost: AuthHashCost) -> Result<HashMemory, CredentialError> {
        Ok(HashMemory(vec![
            Block::default();
            cost.params()?.block_count()
        ]))
    }

    fn for_params(&mut self, params: &Params) -> &mut [Block] {
        let needed = params.block_count();
        if self.0.len() < needed {
            self.0.resize(needed, Block::default());
        }
        &mut self.0[..needed]
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CredentialError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| CredentialError(e.to_string()))?;
    Ok(buf)
}

/// Hashes an auth key into a PHC string (`$argon2id$v=19$...`) in
/// `memory`. Slow on purpose: call from a hashing worker.
pub(crate) fn hash_auth_key(
    key: &AuthKey,
    cost: AuthHashCost,
    memory: &mut HashMemory,
) -> Result<String, CredentialError> {
    let salt_bytes: [u8; 16] = random_bytes()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| CredentialError(e.to_string()))?;
    let params = cost.params()?;
    let mut out = [0u8; HASH_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            key.as_bytes(),
            &salt_bytes,
            &mut out,
            memory.for_params(&params),
        )
        .map_err(|e| CredentialError(e.to_string()))?;
    let output = Output::new(&out).map_err(|e| CredentialError(e.to_string()))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| CredentialError(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `key` matches the stored PHC hash, computed in `memory`. Slow on
/// purpose: call from a hashing worker. A hash that does not parse is an
/// error, not a "no".
pub(crate) fn verify_auth_key(
    phc: &str,
    key: &AuthKey,
    memory: &mut HashMemory,
) -> Result<bool, CredentialError> {
    let stored = |e: &dyn std::fmt::Display| CredentialError(format!("stored hash: {e}"));
    let parsed = PasswordHash::new(phc).map_err(|e| stored(&e))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(stored(&"not argon2id"));
    }
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|e| stored(&e))?;
    let params = Params::try_from(&parsed).map_err(|e| stored(&e))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(stored(&"no salt or hash"));
    };
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| stored(&e))?;
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    Argon2::new(Algorithm::Argon2id, version, params.clone())
        .hash_password_into_with_memory(
            key.as_bytes(),
            salt_bytes,
            &mut out,
            memory.for_params(&params),
        )
        .map_err(|e| CredentialError(e.to_string()))?;
    let actual = Output::new(&out).map_err(|e| CredentialError(e.to_string()))?;
    // `Output`'s equality is constant-time.
    Ok(actual == expected)
}

/// A session token as handed to a client (43 characters of URL-safe
/// base64 for 256 random bits) and the hash it is stored under.
pub(crate) struct NewToken {
    /// The bearer token / cookie value. Never stored.
    pub token: Zeroizing<String>,
    /// What the store keeps.
    pub hash: SessionHash,
}

/// Mints a fresh session token.
pub(crate) fn new_session_token() -> Result<NewToken, CredentialError> {
    let bytes = Zeroizing::new(random_bytes::<32>()?);
    let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(*bytes));
    let hash = SessionHash(Sha256::digest(token.as_bytes()).into());
    Ok(NewToken { token, hash })
}

/// The stored hash for a token presented by a client, or `None` when the
/// string cannot be a token this server minted (so junk is never hashed or
/// looked up).
pub(crate) fn token_hash(token: &str) -> Option<SessionHash> {
    let plausible = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plausible.then(|| SessionHash(Sha256::digest(token.as_bytes()).into()))
}

/// `HMAC-SHA256(server secret, purpose || username)`: stable for a name,
/// unpredictable without the secret.
fn prelogin_mac(server_secret: &[u8; 32], purpose: &[u8], username: &Username) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(server_secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(purpose);
    mac.update(username.as_str().as_bytes());
    mac.finalize().into_bytes().into()
}

/// The salt prelogin reports for a username that has no account:
/// `HMAC-SHA256(server secret, username)` truncated to 16 bytes. Stable for
/// a name and unpredictable without the secret, so probing prelogin cannot
/// tell registered names from unregistered ones.
pub(crate) fn fake_salt(server_secret: &[u8; 32], username: &Username) -> Salt {
    let full = prelogin_mac(server_secret, b"chatvault prelogin salt\0", username);
    let mut salt = [0u8; Salt::LEN];
    salt.copy_from_slice(&full[..Salt::LEN]);
    Salt(salt)
}

/// The KDF parameters prelogin reports for a username that has no account:
/// drawn from `census` (how many accounts use each parameter set) at a point
/// derived from the server secret and the name, so unknown names get
/// parameter sets in the same proportions as real accounts — an account
/// with non-default parameters does not stand out. The point is a fraction
/// of the total, so a name's answer only moves when the proportions move,
/// not whenever an account registers. With no accounts: the defaults.
pub(crate) fn fake_kdf(
    server_secret: &[u8; 32],
    username: &Username,
    census: &[(WireKdfParams, u64)],
) -> WireKdfParams {
    let total: u64 = census.iter().map(|(_, n)| n).sum();
    let mac = prelogin_mac(server_secret, b"chatvault prelogin kdf\0", username);
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    let fraction = u128::from(u64::from_be_bytes(first));
    // floor(fraction / 2^64 * total) < total.
    let point = u64::try_from((fraction * u128::from(total)) >> 64).unwrap_or(u64::MAX);
    let mut below = 0u64;
    for (params, count) in census {
        below = below.saturating_add(*count);
        if point < below {
            return *params;
        }
    }
    WireKdfParams::default()
}

/// How long sessions live. A session ends at whichever comes first: `idle`
/// after its last use, or `absolute` after login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Unused this long → expired (default 7 days).
    pub idle: Duration,
    /// Older than this → expired, however busy (default 30 days).
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(7 * 86_400),
            absolute: Duration::from_secs(30 * 86_400),
        }
    }
}

impl SessionPolicy {
    /// When a session created at `created_at` and last used at `last_used_at`
    /// expires.
    pub fn expires_at(&self, created_at: Timestamp, last_used_at: Timestamp) -> Timestamp {
        plus(last_used_at, self.idle).min(plus(created_at, self.absolute))
    }

    /// How often a session's last-use time is written back. Writing on every
    /// request would turn every read into a disk write; a minute of slack on
    /// a 7-day idle timeout is invisible.
    pub(crate) fn touch_granularity(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Consecutive failed logins for one username and when the last one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Failures since the last success.
    pub failures: u32,
    /// Time of the latest failure.
    pub last_failure_at: Timestamp,
}

/// Failed-login backoff. The first `free_failures` failures cost nothing;
/// each one after locks for `base`, doubling up to `max`. A success resets
/// the count. Logins apply it per (username, source address), so a
/// stranger's guesses lock only the stranger; passphrase changes apply it
/// per account. The lock always ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before backoff starts (default 5).
    pub free_failures: u32,
    /// First lock (default 1 s).
    pub base: Duration,
    /// Longest lock (default 15 min).
    pub max: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
        }
    }
}

impl ThrottlePolicy {
    /// Until when a username in `state` is locked (`None`: not locked at
    /// all; a time in the past: no longer locked).
    pub fn locked_until(&self, state: ThrottleState) -> Option<Timestamp> {
        let over = state.failures.checked_sub(self.free_failures)?;
        if state.failures == 0 {
            return None;
        }
        let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
        let delay = self.base.saturating_mul(factor).min(self.max);
        Some(plus(state.last_failure_at, delay))
    }

    /// After how long a throttle entry is forgotten: well past the longest
    /// lock, so the count only resets once the attempts have stopped.
    pub(crate) fn forget_after(&self) -> Duration {
        self.max.saturating_mul(4).max(Duration::from_secs(86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_hash_and_verify() {
        let key = AuthKey::from_bytes([3; 32]);
        let cost = AuthHashCost::default();
        let mut memory = HashMemory::new(cost).unwrap();
        let phc = hash_auth_key(&key, cost, &mut memory).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_auth_key(&phc, &key, &mut memory).unwrap());
        assert!(!verify_auth_key(&phc, &AuthKey::from_bytes([4; 32]), &mut memory).unwrap());
        assert!(verify_auth_key("garbage", &key, &mut memory).is_err());
        // The reference implementation agrees with the reused-memory path.
        use argon2::password_hash::PasswordVerifier as _;
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(key.as_bytes(), &parsed)
            .is_ok());
    }

    fn kdf(m_cost_kib: u32) -> WireKdfParams {
        WireKdfParams {
            m_cost_kib,
            t_cost: 2,
            p_cost: 1,
        }
    }

    fn names(n: usize) -> impl Iterator<Item = Username> {
        (0..n).map(|i| format!("ghost{i}").parse::<Username>().unwrap())
    }

    #[test]
    fn fake_kdf_follows_the_census_and_stays_put_when_proportions_do() {
        let secret = [9u8; 32];
        assert_eq!(
            fake_kdf(&secret, &"x".parse::<Username>().unwrap(), &[]),
            WireKdfParams::default()
        );
        let census = [(kdf(19_456), 90), (kdf(65_536), 10)];
        let answers: Vec<_> = names(10_000)
            .map(|n| fake_kdf(&secret, &n, &census))
            .collect();
        let strong = answers.iter().filter(|p| **p == kdf(65_536)).count();
        assert!((800..=1_200).contains(&strong), "{strong} of 10,000");
        assert!(answers.iter().all(|p| census.iter().any(|(c, _)| c == p)));

        // Ten times the accounts in the same proportions: the same answers.
        let grown = [(kdf(19_456), 900), (kdf(65_536), 100)];
        let moved = names(10_000)
            .zip(&answers)
            .filter(|(n, before)| fake_kdf(&secret, n, &grown) != **before)
            .count();
        assert_eq!(moved, 0);

        // Only accounts with custom parameters: every unknown name gets them.
        let only = [(kdf(65_536), 1)];
        assert!(names(100).all(|n| fake_kdf(&secret, &n, &only) == kdf(65_536)));
        // Another server (secret) draws other names.
        let other: Vec<_> = names(10_000)
            .map(|n| fake_kdf(&[8u8; 32], &n, &census))
            .collect();
        assert_ne!(other, answers);
    }

    #[test]
    fn tokens_are_random_and_hash_only_when_plausible() {
        let a = new_session_token().unwrap();
        let b = new_session_token().unwrap();
        assert_ne!(*a.token, *b.token);
        assert_eq!(a.token.len(), 43);
        assert_eq!(token_hash(&a.token), Some(a.hash));
        assert_eq!(token_hash("short"), None);
        assert_eq!(token_hash(&"!".repeat(43)), None);
    }

    #[test]
    fn fake_salts_are_stable_per_name_and_secret() {
        let alice: Username = "alice".parse().unwrap();
        let bob: Username = "bob".parse().unwrap();
        assert_eq!(fake_salt(&[1; 32], &alice), fake_salt(&[1; 32], &alice));
        assert_ne!(fake_salt(&[1; 32], &alice), fake_salt(&[1; 32], &bob));
        assert_ne!(fake_salt(&[1; 32], &alice), fake_salt(&[2; 32], &alice));
    }

    #[test]
    fn backoff_starts_after_free_failures_doubles_and_caps() {
        let p = ThrottlePolicy::default();
        let at = |failures| ThrottleState {
            failures,
            last_failure_at: Timestamp(0),
        };
        assert_eq!(p.locked_until(at(0)), None);
        assert_eq!(p.locked_until(at(4)), None);
        assert_eq!(p.locked_until(at(5)), Some(Timestamp(1_000)));
        assert_eq!(p.locked_until(at(6)), Some(Timestamp(2_000)));
        assert_eq!(p.locked_until(at(8)), Some(Timestamp(8_000)));
        assert_eq!(p.locked_until(at(40)), Some(Timestamp(900_000)));
        assert_eq!(p.locked_until(at(u32::MAX)), Some(Timestamp(900_000)));
    }

    #[test]
    fn sessions_expire_on_idle_or_absolute_age() {
        let p = SessionPolicy::default();
        let day = 86_400_000;
        assert_eq!(p.expires_at(Timestamp(0), Timestamp(0)), Timestamp(7 * day));
        assert_eq!(
            p.expires_at(Timestamp(0), Timestamp(28 * day)),
            Timestamp(30 * day)
        );
    }
}
