//! Dead letters: changes the server refused, **parked in the vault's
//! outbox** (not a separate list). A parked change is not pushed until it
//! is retried, but it stays in the outbox, so it counts as unsynced: a
//! resync never deletes its record, retention keeps its conversation. It
//! stays until the user retries or discards it, or a new local write of
//! the record replaces it with a pending change. Each is a row of its own,
//! so two processes parking changes at once cannot overwrite each other.
//!
//! This module translates between the store's parked entries (a reason
//! code and message) and the sync client's [`DeadLetter`] and
//! [`RejectReason`]; it owns the vocabulary of the codes.
//!
//! Must never hold content: a dead letter names a record (kind, ids,
//! version), the record itself stays in the vault.

use std::time::Duration;

use chatvault::{ConversationId, Hlc, ParkReason, ParkedEntry, Timestamp};
use chatvault_core::{EntityKind, OpId, RecordId};
use serde::{Deserialize, Serialize};

/// First automatic retry of a clock-skew rejection; doubles per attempt.
const SKEW_RETRY_FIRST: Duration = Duration::from_secs(60);
/// Longest wait between automatic retries of a clock-skew rejection.
const SKEW_RETRY_MAX: Duration = Duration::from_secs(3600);

/// Why the server refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a valid change (a bug in the writing client). Retrying the same
    /// record will fail the same way until it is changed.
    InvalidChange,
    /// Stamped more than an hour ahead of the server's clock: this device's
    /// clock ran ahead. Retried automatically (after 1 min, doubling up to
    /// hourly); it passes once the server's time is within an hour of the
    /// stamp.
    ClockSkew,
    /// Larger on its own than the server accepts in one request.
    PayloadTooLarge,
    /// Storing it would take the account past its storage quota on the
    /// server. Delete something (deletions always sync), then retry it.
    QuotaExceeded,
    /// A reason this build does not know (a newer server).
    #[serde(other)]
    Other,
}

impl RejectReason {
    pub(crate) fn from_code(code: Option<&str>) -> Self {
        match code {
            Some("invalid_change") => RejectReason::InvalidChange,
            Some("clock_skew") => RejectReason::ClockSkew,
            Some("payload_too_large") => RejectReason::PayloadTooLarge,
            Some("quota_exceeded") => RejectReason::QuotaExceeded,
            _ => RejectReason::Other,
        }
    }

    /// The code stored with a parked change (the server's code).
    pub fn as_code(self) -> &'static str {
        match self {
            RejectReason::InvalidChange => "invalid_change",
            RejectReason::ClockSkew => "clock_skew",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::QuotaExceeded => "quota_exceeded",
            RejectReason::Other => "other",
        }
    }
}

/// A change the server refused: which record, why and when. The record
/// stays in the vault, unsynced, until the dead letter is retried or
/// discarded (or the record is written again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The refused change's op id (pass to
    /// [`retry_dead_letter`](crate::SyncClient::retry_dead_letter)).
    pub op_id: OpId,
    /// Whether a conversation or a message was refused.
    pub kind: EntityKind,
    /// Which record the refused change was for.
    pub entity_id: RecordId,
    /// For messages, their conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<ConversationId>,
    /// The version that was refused (the record's current version).
    pub version: Hlc,
    /// Whether the refused change was a deletion.
    pub delete: bool,
    /// Why the server refused it, as a stable code.
    pub reason: RejectReason,
    /// The server's explanation.
    pub message: String,
    /// When it was refused (vault clock).
    pub at: Timestamp,
    /// How many times this change has been refused.
    pub attempts: u32,
    /// Its position in the outbox (identifies exactly this parked entry).
    pub seq: u64,
}

impl DeadLetter {
    /// The dead letter a parked outbox entry stands for.
    pub fn from_parked(p: ParkedEntry) -> Self {
        DeadLetter {
            op_id: p.change.op_id,
            kind: p.change.kind,
            entity_id: p.change.entity_id,
            conversation_id: p.change.conversation_id,
            version: p.change.version,
            delete: p.change.is_delete(),
            reason: RejectReason::from_code(Some(&p.reason.code)),
            message: p.reason.message,
            at: p.reason.at,
            attempts: p.attempts,
            seq: p.seq,
        }
    }

    /// When a clock-skew rejection is retried automatically (`None` for
    /// reasons that need a person).
    pub fn next_retry_at(&self) -> Option<Timestamp> {
        if self.reason != RejectReason::ClockSkew {
            return None;
        }
        let doublings = self.attempts.saturating_sub(1).min(16);
        let wait = SKEW_RETRY_FIRST
            .saturating_mul(1u32 << doublings)
            .min(SKEW_RETRY_MAX);
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp(self.at.as_millis().saturating_add(wait_ms)))
    }

    /// Whether `id` names this dead letter: its op id or its record's id.
    pub fn is_named_by(&self, id: &str) -> bool {
        let id = id.trim();
        self.op_id.to_string().eq_ignore_ascii_case(id)
            || self.entity_id.to_string().eq_ignore_ascii_case(id)
    }
}

/// The parking of a refused change, as the store keeps it.
pub(crate) fn park_reason(reason: RejectReason, message: String, at: Timestamp) -> ParkReason {
    ParkReason {
        code: reason.as_code().to_owned(),
        message,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault::Change;
    use chatvault_core::{DeviceId, MessageId, Tombstone};

    fn letter(reason: RejectReason, at: i64, attempts: u32) -> DeadLetter {
        let t = Tombstone::message(
            MessageId::new(),
            ConversationId::new(),
            Hlc::new(5, 0, DeviceId(1)).unwrap(),
            Timestamp(1),
        );
        DeadLetter::from_parked(ParkedEntry {
            seq: 1,
            change: Change::delete(OpId::new(), &t),
            reason: park_reason(reason, "no".into(), Timestamp(at)),
            attempts,
        })
    }

    #[test]
    fn only_clock_skew_is_retried_on_a_doubling_capped_schedule() {
        let skew = letter(RejectReason::ClockSkew, 0, 1);
        assert_eq!(skew.next_retry_at(), Some(Timestamp(60_000)));
        assert_eq!(
            letter(RejectReason::ClockSkew, 0, 3).next_retry_at(),
            Some(Timestamp(240_000))
        );
        assert_eq!(
            letter(RejectReason::ClockSkew, 0, 30).next_retry_at(),
            Some(Timestamp(3_600_000))
        );
        assert_eq!(
            letter(RejectReason::InvalidChange, 0, 1).next_retry_at(),
            None
        );
    }

    #[test]
    fn codes_round_trip_and_unknown_ones_read_as_other() {
        for r in [
            RejectReason::InvalidChange,
            RejectReason::ClockSkew,
            RejectReason::PayloadTooLarge,
            RejectReason::QuotaExceeded,
        ] {
            assert_eq!(RejectReason::from_code(Some(r.as_code())), r);
        }
        assert_eq!(
            RejectReason::from_code(Some("a_reason_from_the_future")),
            RejectReason::Other
        );
        let l = letter(RejectReason::PayloadTooLarge, 9, 1);
        assert!(l.is_named_by(&l.op_id.to_string()));
        assert!(l.is_named_by(&l.entity_id.to_string().to_uppercase()));
        assert!(!l.is_named_by("nope"));
    }
}
