//! Typed identifiers. Records use UUIDv7 (time-ordered, generated offline
//! without coordination); a device is a random 64-bit number.

use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A UUID newtype: the struct, conversions to and from the UUID and its
/// bytes, and the hyphenated text form (`kind` names it in parse errors).
macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 raw bytes, for compact storage.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// From 16 raw bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self, CoreError> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| CoreError::InvalidId {
                    kind: $kind,
                    value: s.to_owned(),
                })
            }
        }
    };
}

/// An id a record of one kind is created with: a `uuid_newtype!` that
/// mints new time-ordered ids and widens into a [`RecordId`].
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        uuid_newtype!($(#[$doc])* $name, $kind);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<$name> for RecordId {
            fn from(id: $name) -> RecordId {
                RecordId(id.0)
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation.
    ConversationId,
    "conversation"
);
uuid_id!(
    /// Identifies a message.
    MessageId,
    "message"
);
uuid_id!(
    /// Identifies one change in the outbox; the server uses it to make
    /// replayed pushes idempotent.
    OpId,
    "operation"
);
uuid_newtype!(
    /// The id of any record, whatever its kind (used where the kind travels
    /// alongside, as in [`Change`](crate::Change)).
    RecordId,
    "record"
);

impl RecordId {
    /// Reinterprets as a conversation id.
    pub fn conversation(self) -> ConversationId {
        ConversationId::from_uuid(self.0)
    }
    /// Reinterprets as a message id.
    pub fn message(self) -> MessageId {
        MessageId::from_uuid(self.0)
    }
}

/// The owner of a conversation: an account name or an app-chosen id.
/// Opaque to chatvault; never empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The id used when an app has a single local user.
    pub fn local() -> Self {
        Self("local".to_owned())
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        if s.trim().is_empty() || s.len() > 256 {
            return Err(CoreError::Invalid {
                field: "userId",
                reason: "must be 1 to 256 characters".into(),
            });
        }
        Ok(Self(s))
    }
}

impl FromStr for UserId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        Self::try_from(s.to_owned())
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one device (one local store). Random, chosen once when a
/// store is created; breaks ties between clock stamps of different devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DeviceId(pub u64);

impl DeviceId {
    /// Builds a device id from caller-supplied randomness (core has no RNG).
    pub const fn from_random(bits: u64) -> Self {
        Self(bits)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for DeviceId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        if s.len() != 16 {
            return Err(CoreError::InvalidId {
                kind: "device",
                value: s.to_owned(),
            });
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| CoreError::InvalidId {
                kind: "device",
                value: s.to_owned(),
            })
    }
}

serde_as_text!(DeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = ConversationId::new();
        assert_eq!(id.to_string().parse::<ConversationId>().unwrap(), id);
        assert!("not-a-uuid".parse::<MessageId>().is_err());
        let dev = DeviceId(0xdead_beef);
        assert_eq!(dev.to_string(), "00000000deadbeef");
        assert_eq!(dev.to_string().parse::<DeviceId>().unwrap(), dev);
    }

    #[test]
    fn v7_ids_sort_by_creation() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a < b);
    }

    #[test]
    fn user_id_rejects_empty() {
        assert!("  ".parse::<UserId>().is_err());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
    }
}
