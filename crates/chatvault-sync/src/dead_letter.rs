//! The dead-letter list: changes the server refused, kept in the vault's
//! metadata (`sync.deadLetters`) so they survive restarts, can be shown to
//! the user and retried. A record has at most one dead letter (its latest
//! refusal); one that later syncs — edited, deleted, or retried — leaves
//! the list by itself.
//!
//! Must never hold content: a dead letter names a record (kind, ids,
//! version), the record itself stays in the vault.

use std::time::Duration;

use chatvault::{ConversationId, Hlc, Timestamp, Vault};
use chatvault_core::{Change, EntityKind, OpId, RecordId};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SyncError};

/// Metadata key of the list (JSON array).
pub(crate) const DEAD_LETTERS_KEY: &str = chatvault::meta_keys::SYNC_DEAD_LETTERS;

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
            _ => RejectReason::Other,
        }
    }
}

/// A change the server refused: which record, why and when. The record
/// stays in the vault, unsynced, until the dead letter is retried (or the
/// record is written again).
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
    /// The version that was refused.
    pub version: Hlc,
    /// Whether the refused change was a deletion.
    pub delete: bool,
    /// Why the server refused it, as a stable code.
    pub reason: RejectReason,
    /// The server's explanation.
    pub message: String,
    /// When it was refused (vault clock).
    pub at: Timestamp,
    /// How many times this record has been refused in a row.
    pub attempts: u32,
}

impl DeadLetter {
    pub(crate) fn new(
        change: &Change,
        reason: RejectReason,
        message: String,
        at: Timestamp,
    ) -> Self {
        DeadLetter {
            op_id: change.op_id,
            kind: change.kind,
            entity_id: change.entity_id,
            conversation_id: change.conversation_id,
            version: change.version,
            delete: change.is_delete(),
            reason,
            message,
            at,
            attempts: 1,
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

    fn key(&self) -> (EntityKind, RecordId) {
        (self.kind, self.entity_id)
    }
}

/// The persisted list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeadLetters(pub Vec<DeadLetter>);

impl DeadLetters {
    pub(crate) async fn load(vault: &Vault) -> Result<DeadLetters> {
        match vault.replica().sync_meta(DEAD_LETTERS_KEY).await? {
            None => Ok(DeadLetters::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(DeadLetters)
                .map_err(|e| {
                    SyncError::Protocol(format!("the stored dead-letter list is unreadable: {e}"))
                }),
        }
    }

    /// The metadata write that stores this list.
    pub(crate) fn meta(&self) -> Result<(String, Option<Vec<u8>>)> {
        let value = if self.0.is_empty() {
            None
        } else {
            Some(serde_json::to_vec(&self.0).map_err(|e| {
                SyncError::Protocol(format!("cannot serialize the dead-letter list: {e}"))
            })?)
        };
        Ok((DEAD_LETTERS_KEY.to_owned(), value))
    }

    pub(crate) async fn save(&self, vault: &Vault) -> Result<()> {
        let (key, value) = self.meta()?;
        Ok(vault.replica().set_sync_meta(&key, value).await?)
    }

    /// Adds a refusal, replacing an older one of the same record (and
    /// counting the attempt).
    pub(crate) fn add(&mut self, mut letter: DeadLetter) {
        if let Some(i) = self.0.iter().position(|d| d.key() == letter.key()) {
            letter.attempts = self.0[i].attempts.saturating_add(1);
            self.0.remove(i);
        }
        self.0.push(letter);
    }

    /// Forgets the dead letters of records that have since synced.
    pub(crate) fn settle(&mut self, synced: &[(EntityKind, RecordId)]) -> bool {
        let before = self.0.len();
        self.0.retain(|d| !synced.contains(&d.key()));
        self.0.len() != before
    }

    pub(crate) fn take(&mut self, op: OpId) -> Option<DeadLetter> {
        let i = self.0.iter().position(|d| d.op_id == op)?;
        Some(self.0.remove(i))
    }

    /// Clock-skew refusals whose automatic retry is due at `now`.
    pub(crate) fn due(&self, now: Timestamp) -> Vec<OpId> {
        self.0
            .iter()
            .filter(|d| d.next_retry_at().is_some_and(|t| t <= now))
            .map(|d| d.op_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_core::{DeviceId, MessageId, Tombstone};

    fn letter(reason: RejectReason, at: i64) -> DeadLetter {
        let t = Tombstone::message(
            MessageId::new(),
            ConversationId::new(),
            Hlc::new(5, 0, DeviceId(1)).unwrap(),
            Timestamp(1),
        );
        DeadLetter::new(
            &Change::delete(OpId::new(), &t),
            reason,
            "no".into(),
            Timestamp(at),
        )
    }

    #[test]
    fn one_letter_per_record_counting_attempts() {
        let mut list = DeadLetters::default();
        let first = letter(RejectReason::ClockSkew, 0);
        let mut again = first.clone();
        again.op_id = OpId::new();
        list.add(first.clone());
        list.add(again.clone());
        assert_eq!(list.0.len(), 1);
        assert_eq!(list.0[0].attempts, 2);
        assert_eq!(list.0[0].op_id, again.op_id);
        assert!(list.settle(&[(first.kind, first.entity_id)]));
        assert!(list.0.is_empty());
    }

    #[test]
    fn only_clock_skew_is_retried_on_a_doubling_capped_schedule() {
        let mut skew = letter(RejectReason::ClockSkew, 0);
        assert_eq!(skew.next_retry_at(), Some(Timestamp(60_000)));
        skew.attempts = 3;
        assert_eq!(skew.next_retry_at(), Some(Timestamp(240_000)));
        skew.attempts = 30;
        assert_eq!(skew.next_retry_at(), Some(Timestamp(3_600_000)));
        assert_eq!(letter(RejectReason::InvalidChange, 0).next_retry_at(), None);

        let mut list = DeadLetters::default();
        list.add(skew.clone());
        list.add(letter(RejectReason::PayloadTooLarge, 0));
        assert!(list.due(Timestamp(3_599_999)).is_empty());
        assert_eq!(list.due(Timestamp(3_600_000)), vec![skew.op_id]);
    }

    #[test]
    fn letters_round_trip_and_tolerate_unknown_reasons() {
        let l = letter(RejectReason::PayloadTooLarge, 9);
        let json = serde_json::to_string(&vec![l.clone()]).unwrap();
        let back: Vec<DeadLetter> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![l]);
        let newer = json.replace("payload_too_large", "quota_exceeded");
        let back: Vec<DeadLetter> = serde_json::from_str(&newer).unwrap();
        assert_eq!(back[0].reason, RejectReason::Other);
    }
}
