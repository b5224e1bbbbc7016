//! Domain types the server speaks, shared by the HTTP layer and the stores:
//! validated usernames, KDF parameters, salts, auth keys, key envelopes,
//! account ids, sequence numbers and the opaque cursors built on them.
//!
//! Every type here validates on construction (and on deserialization), so a
//! value that exists is a value the server accepts. This module must never
//! do I/O or read a clock.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chatvault_core::{EntityKind, RecordId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Why a value was refused, in words a client author can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// An account name: 1–64 characters of `[a-zA-Z0-9_.@-]`, compared
/// case-insensitively (stored lowercased, so `Alice` and `alice` are one
/// account).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Most characters a username may have.
    pub const MAX_LEN: usize = 64;

    /// The normalized (lowercase) name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-');
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(ok_char) {
            return Err(Invalid(
                "username must be 1 to 64 characters of letters, digits, '_', '.', '@' or '-'"
                    .into(),
            ));
        }
        Ok(Username(s.to_ascii_lowercase()))
    }
}

impl FromStr for Username {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::try_from(s.to_owned())
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Argon2id cost parameters the client derives its keys with. The server
/// only stores and hands them back; it checks them so that nobody can
/// register a cheaply brute-forced vault or make other clients allocate
/// absurd amounts of memory. JSON: `{"mCostKib": 19456, "tCost": 2, "pCost": 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
// The OpenAPI name stays what clients generated code from.
#[schema(as = KdfParams)]
pub struct WireKdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Parallelism (Argon2 lanes).
    pub p_cost: u32,
}

impl WireKdfParams {
    /// Checks the parameters with `chatvault-crypto`'s rule — the one the
    /// clients derive with, so server and clients accept exactly the same
    /// set. Upper limits always apply; `allow_weak` (a test-only server
    /// flag) waives the minimum.
    pub fn validate(&self, allow_weak: bool) -> Result<(), Invalid> {
        let policy = if allow_weak {
            chatvault_crypto::KdfPolicy::insecure_allow_weak_for_tests()
        } else {
            chatvault_crypto::KdfPolicy::strict()
        };
        chatvault_crypto::KdfParams::from(*self)
            .validate_with_policy(policy)
            .map_err(|e| Invalid(format!("KDF parameters: {e}")))
    }
}

impl From<WireKdfParams> for chatvault_crypto::KdfParams {
    fn from(p: WireKdfParams) -> Self {
        chatvault_crypto::KdfParams {
            m_cost_kib: p.m_cost_kib,
            t_cost: p.t_cost,
            p_cost: p.p_cost,
        }
    }
}

impl Default for WireKdfParams {
    /// The OWASP minimum, also what prelogin answers for unknown usernames.
    fn default() -> Self {
        let d = chatvault_crypto::KdfParams::default();
        WireKdfParams {
            m_cost_kib: d.m_cost_kib,
            t_cost: d.t_cost,
            p_cost: d.p_cost,
        }
    }
}

/// Decodes standard base64 into exactly `N` bytes.
fn decode_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N], Invalid> {
    let bytes = BASE64
        .decode(s.as_bytes())
        .map_err(|_| Invalid(format!("{what} must be standard base64")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| Invalid(format!("{what} must be exactly {N} bytes")))
}

/// The client's 16-byte KDF salt. Public: prelogin hands it out.
/// Serialized as standard base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub [u8; Salt::LEN]);

impl Salt {
    /// Salt length in bytes (the same as `chatvault-crypto`'s salt).
    pub const LEN: usize = 16;
}

impl Serialize for Salt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Salt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode_fixed(&s, "salt")
            .map(Salt)
            .map_err(serde::de::Error::custom)
    }
}

/// The 32-byte server-auth key a client derives from its passphrase. The
/// server hashes it and forgets it; the bytes are wiped on drop and never
/// printed.
#[derive(Clone)]
pub struct AuthKey(Zeroizing<[u8; AuthKey::LEN]>);

impl AuthKey {
    /// Key length in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        AuthKey(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Standard base64, as sent on the wire.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.as_bytes())
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl<'de> Deserialize<'de> for AuthKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        decode_fixed(&s, "authKey")
            .map(AuthKey::from_bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// The client's wrapped key material: an opaque JSON object (at most
/// [`KeyEnvelope::MAX_BYTES`] serialized) the server stores and returns
/// untouched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct KeyEnvelope(serde_json::Map<String, serde_json::Value>);

impl KeyEnvelope {
    /// Largest serialized envelope accepted (16 KiB).
    pub const MAX_BYTES: usize = 16 * 1024;

    /// The envelope as compact JSON text (what the stores keep).
    pub fn to_json(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }

    /// Parses stored or received JSON text.
    pub fn from_json(text: &str) -> Result<Self, Invalid> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Invalid(format!("keyEnvelope is not JSON: {e}")))?;
        Self::try_from(value)
    }
}

impl TryFrom<serde_json::Value> for KeyEnvelope {
    type Error = Invalid;
    fn try_from(value: serde_json::Value) -> Result<Self, Invalid> {
        let serde_json::Value::Object(map) = value else {
            return Err(Invalid("keyEnvelope must be a JSON object".into()));
        };
        let envelope = KeyEnvelope(map);
        if envelope.to_json().len() > Self::MAX_BYTES {
            return Err(Invalid(format!(
                "keyEnvelope must be at most {} bytes of JSON",
                Self::MAX_BYTES
            )));
        }
        Ok(envelope)
    }
}

impl<'de> Deserialize<'de> for KeyEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KeyEnvelope::try_from(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Identifies an account on this server (a UUIDv7). Every stored row is
/// keyed by it, so one account's data is invisible to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(uuid::Uuid);

impl AccountId {
    /// A fresh id.
    pub fn new() -> Self {
        AccountId(uuid::Uuid::now_v7())
    }
}

impl Default for AccountId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for AccountId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        uuid::Uuid::parse_str(s)
            .map(AccountId)
            .map_err(|_| Invalid(format!("{s:?} is not an account id")))
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A per-account server sequence number: every applied change gets the
/// next one. 0 means "nothing yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// As a database integer (sequence numbers never get near `i64::MAX`).
    pub fn to_db(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// From a database integer; negative values (never written) read as 0.
    pub fn from_db(v: i64) -> Seq {
        Seq(u64::try_from(v).unwrap_or(0))
    }
}

/// Text form of cursors and snapshot keys before epochs (still read, so a
/// device's stored cursor survives a server upgrade).
const LEGACY_PREFIX: &str = "v1.";
/// Text form of cursors and snapshot keys that name their epoch.
const EPOCH_PREFIX: &str = "v2.";

/// One run of the server on its database: a random id the store creates
/// (and records in the database) every time a server opens it. Cursors
/// and snapshot keys name the epoch they were issued in, so a server whose
/// database was restored from a backup — which lacks the epochs begun
/// after the backup, and sees a new one at the restart — can tell a cursor
/// it can continue from one that points into a feed it no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub uuid::Uuid);

impl Epoch {
    /// A fresh epoch: a UUIDv7 (74 random bits under the time, so two
    /// openings never share one).
    pub fn random() -> Epoch {
        Epoch(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl FromStr for Epoch {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        // Only the form `Display` writes (32 lowercase hex digits), so one
        // epoch has one text.
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Invalid(format!("{s:?} is not an epoch")));
        }
        uuid::Uuid::parse_str(s)
            .map(Epoch)
            .map_err(|_| Invalid(format!("{s:?} is not an epoch")))
    }
}

/// Splits `v2.<epoch>.<rest>` / `v1.<rest>` into the epoch (`None` for a
/// legacy text) and the rest.
fn split_epoch(s: &str) -> Option<(Option<Epoch>, &str)> {
    if let Some(rest) = s.strip_prefix(EPOCH_PREFIX) {
        let (epoch, rest) = rest.split_once('.')?;
        return Some((Some(epoch.parse().ok()?), rest));
    }
    s.strip_prefix(LEGACY_PREFIX).map(|rest| (None, rest))
}

fn write_epoch(f: &mut fmt::Formatter<'_>, epoch: Option<Epoch>) -> fmt::Result {
    match epoch {
        Some(e) => write!(f, "{EPOCH_PREFIX}{e}."),
        None => f.write_str(LEGACY_PREFIX),
    }
}

/// An opaque position in an account's change feed: "everything up to and
/// including this sequence number, as issued in this epoch". Clients pass
/// it back exactly as given. `epoch` is `None` only for a cursor issued
/// before epochs existed (`v1.N`) or for "from the start".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The epoch it was issued in.
    pub epoch: Option<Epoch>,
    /// The position.
    pub seq: Seq,
}

impl Cursor {
    /// The position `seq` as issued in `epoch`.
    pub fn new(epoch: Epoch, seq: Seq) -> Cursor {
        Cursor {
            epoch: Some(epoch),
            seq,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_epoch(f, self.epoch)?;
        write!(f, "{}", self.seq.0)
    }
}

impl FromStr for Cursor {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let bad = || Invalid(format!("{s:?} is not a cursor this server issued"));
        let (epoch, digits) = split_epoch(s).ok_or_else(bad)?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        if n > i64::MAX as u64 {
            return Err(bad());
        }
        Ok(Cursor { epoch, seq: Seq(n) })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An opaque position in a snapshot listing (records ordered by kind, then
/// id), naming the epoch it was issued in (`None`: a legacy `v1.` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotKey {
    /// The epoch it was issued in.
    pub epoch: Option<Epoch>,
    /// Kind of the last record returned.
    pub kind: EntityKind,
    /// Id of the last record returned.
    pub id: RecordId,
}

impl fmt::Display for SnapshotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_epoch(f, self.epoch)?;
        write!(f, "{}.{}", self.kind, self.id)
    }
}

impl FromStr for SnapshotKey {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let bad = || Invalid(format!("{s:?} is not a snapshot key this server issued"));
        let (epoch, rest) = split_epoch(s).ok_or_else(bad)?;
        let (kind, id) = rest.split_once('.').ok_or_else(bad)?;
        Ok(SnapshotKey {
            epoch,
            kind: kind.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for SnapshotKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The hash under which a session is stored (SHA-256 of its token): a
/// leaked database does not leak usable tokens.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHash(pub [u8; 32]);

impl fmt::Debug for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines.
        write!(f, "SessionHash({})", &URL_SAFE_NO_PAD.encode(self.0)[..8])
    }
}

/// Which kind of client a session was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A web page: gets an HttpOnly cookie, never a token its scripts could
    /// keep in localStorage.
    Browser,
    /// A native app or tool: gets a bearer token, no cookie.
    Native,
    /// Unspecified: gets both.
    Any,
}

impl ClientKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Browser => "browser",
            ClientKind::Native => "native",
            ClientKind::Any => "any",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_validated_and_lowercased() {
        assert_eq!(
            "Alice.B@x-y_z".parse::<Username>().unwrap().as_str(),
            "alice.b@x-y_z"
        );
        for bad in ["", "a b", "ä", &"x".repeat(65), "a/b"] {
            assert!(bad.parse::<Username>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kdf_params_enforce_minimum_unless_weak_allowed() {
        assert!(WireKdfParams::default().validate(false).is_ok());
        let weak = WireKdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(weak.validate(false).is_err());
        assert!(weak.validate(true).is_ok());
        let absurd = WireKdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(absurd.validate(true).is_err());
        let zero = WireKdfParams {
            m_cost_kib: 64,
            t_cost: 0,
            p_cost: 1,
        };
        assert!(zero.validate(true).is_err());
        // More memory may buy fewer passes.
        let wide = WireKdfParams {
            m_cost_kib: 46 * 1024,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(wide.validate(false).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let epoch = Epoch::random();
        let c = Cursor::new(epoch, Seq(42));
        assert_eq!(c.to_string(), format!("v2.{epoch}.42"));
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        // A cursor issued before epochs still reads, as the legacy epoch.
        let legacy = "v1.42".parse::<Cursor>().unwrap();
        assert_eq!(
            legacy,
            Cursor {
                epoch: None,
                seq: Seq(42)
            }
        );
        assert_eq!(legacy.to_string(), "v1.42");
        let upper = epoch.to_string().to_uppercase();
        for bad in [
            "",
            "42",
            "v1.",
            "v1.-1",
            "v1.x",
            "v3.1",
            "v2.1",
            "v2..1",
            &format!("v2.{epoch}"),
            &format!("v2.{epoch}."),
            &format!("v2.{upper}.1"),
            &format!("v2.{}.1", uuid::Uuid::now_v7()),
            "v1.99999999999999999999",
            "v1.9223372036854775808",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
        for epoch in [Some(epoch), None] {
            let k = SnapshotKey {
                epoch,
                kind: EntityKind::Message,
                id: RecordId::from_uuid(uuid::Uuid::now_v7()),
            };
            assert_eq!(k.to_string().parse::<SnapshotKey>().unwrap(), k);
        }
        assert!("v1.note.x".parse::<SnapshotKey>().is_err());
        assert!(format!("v2.{epoch}.note.x").parse::<SnapshotKey>().is_err());
    }

    #[test]
    fn key_envelope_must_be_a_small_object() {
        assert!(KeyEnvelope::try_from(serde_json::json!({"a": 1})).is_ok());
        assert!(KeyEnvelope::try_from(serde_json::json!([1])).is_err());
        let big = "x".repeat(KeyEnvelope::MAX_BYTES);
        assert!(KeyEnvelope::try_from(serde_json::json!({ "a": big })).is_err());
    }

    #[test]
    fn auth_key_and_salt_need_exact_lengths() {
        let ok = format!("\"{}\"", BASE64.encode([7u8; 32]));
        assert!(serde_json::from_str::<AuthKey>(&ok).is_ok());
        let short = format!("\"{}\"", BASE64.encode([7u8; 31]));
        assert!(serde_json::from_str::<AuthKey>(&short).is_err());
        assert!(serde_json::from_str::<Salt>("\"not base64!\"").is_err());
        assert_eq!(format!("{:?}", AuthKey::from_bytes([1; 32])), "AuthKey(..)");
    }
}
