//! Paging: typed cursors that encode a position in a listing's order, and
//! the [`Page`] a listing returns. Cursors travel through apps as opaque
//! strings.

use crate::{ConversationId, CoreError, MessageId, RecordId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T, C> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// Pass this back to get the next page; `None` when there is no more.
    pub next_cursor: Option<C>,
    /// Records in this page's range that are stored but cannot be read
    /// (damaged, or tampered with): left out of `items` so the rest stays
    /// usable, and named here so the caller can say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<RecordId>,
}

macro_rules! cursor {
    ($(#[$doc:meta])* $name:ident, $time:ident, $id:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            /// Sort time of the last item returned.
            pub $time: Timestamp,
            /// Id of the last item returned (tie-break).
            pub id: $id,
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}.{}", self.$time.as_millis(), self.id)
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(s: &str) -> Result<Self, CoreError> {
                let bad = || CoreError::InvalidCursor(s.to_owned());
                let (t, id) = s.split_once('.').ok_or_else(bad)?;
                Ok(Self {
                    $time: Timestamp(t.parse().map_err(|_| bad())?),
                    id: id.parse().map_err(|_| bad())?,
                })
            }
        }

        serde_as_text!($name);
    };
}

cursor!(
    /// Position in a conversation list (newest activity first).
    ConversationCursor,
    updated_at,
    ConversationId
);
cursor!(
    /// Position in a message list (newest first, paging back in time).
    MessageCursor,
    created_at,
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = MessageCursor {
            created_at: Timestamp(42),
            id: MessageId::new(),
        };
        assert_eq!(c.to_string().parse::<MessageCursor>().unwrap(), c);
        assert!("42".parse::<MessageCursor>().is_err());
        assert!("x.y".parse::<ConversationCursor>().is_err());
    }
}
