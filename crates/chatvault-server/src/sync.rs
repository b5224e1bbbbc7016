//! The server's sync rules as pure functions, shared by every store: which
//! pushed changes are admissible at all (shape, clock skew), and whether an
//! admissible change replaces what the server holds (core's
//! `resolve_incoming`: last-writer-wins plus conversation tombstones
//! covering their messages).
//!
//! Must never touch a store or read a clock; the stores call [`decide`]
//! inside their transactions and the HTTP layer calls [`admit`] before.

use chatvault_core::{
    resolve_incoming, Change, ChangeOp, Cover, EntityKind, Resolution, Timestamp, VersionedState,
    MAX_CLOCK_DRIFT_MS,
};

/// Why a pushed change was refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
// The OpenAPI name stays what clients generated code from.
#[schema(as = RejectReason)]
pub enum PushRejectReason {
    /// Not a valid change (wrong shape, missing field, bad id or stamp).
    InvalidChange,
    /// Stamped further ahead of the server's clock than
    /// `chatvault_core::MAX_CLOCK_DRIFT_MS`; fix the device clock.
    ClockSkew,
    /// Storing it would take the account past its storage quota; delete
    /// something, then retry. Deletions are never refused for this.
    QuotaExceeded,
}

/// A refused change: why, in a code and in words, and its op id if one
/// could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRejection {
    /// The change's `opId` if it was a readable UUID.
    pub op_id: Option<String>,
    /// Machine-readable reason.
    pub reason: PushRejectReason,
    /// Human-readable detail.
    pub message: String,
}

/// Parses one element of a push batch and checks it can be applied at all.
/// Each element is judged alone, so one bad change never sinks its batch.
pub fn admit(value: serde_json::Value, now: Timestamp) -> Result<Change, PushRejection> {
    let op_id = value
        .get("opId")
        .and_then(|v| v.as_str())
        .filter(|s| uuid::Uuid::parse_str(s).is_ok())
        .map(str::to_owned);
    let reject = |reason, message: String| PushRejection {
        op_id: op_id.clone(),
        reason,
        message,
    };
    let change: Change = serde_json::from_value(value)
        .map_err(|e| reject(PushRejectReason::InvalidChange, e.to_string()))?;
    // Core's own rules (a message names its conversation, a conversation
    // upsert its owner), checked without copying the payload.
    change
        .validate()
        .map_err(|e| reject(PushRejectReason::InvalidChange, e.to_string()))?;
    let limit = u64::try_from(now.as_millis())
        .unwrap_or(0)
        .saturating_add(MAX_CLOCK_DRIFT_MS);
    if change.version.wall_ms() > limit {
        return Err(reject(
            PushRejectReason::ClockSkew,
            format!(
                "version {} is more than {} ms ahead of the server clock; check the device clock",
                change.version, MAX_CLOCK_DRIFT_MS
            ),
        ));
    }
    Ok(change)
}

/// Holds an admitted batch to the account's storage quota: walking it in
/// order, each upsert whose body would take `stored` (what the account
/// holds now) plus the bodies let in before it past `quota` is refused
/// with [`PushRejectReason::QuotaExceeded`]; deletions always pass, so an
/// account over its quota can still free space. Replacing a record counts
/// its new body in full, so the check errs on the side of refusing.
pub fn hold_to_quota(
    batch: Vec<Result<Change, PushRejection>>,
    stored: u64,
    quota: u64,
) -> Vec<Result<Change, PushRejection>> {
    let mut let_in = 0u64;
    batch
        .into_iter()
        .map(|admitted| {
            let change = admitted?;
            let size = match &change.op {
                chatvault_core::ChangeOp::Upsert(p) => p.body.0.len() as u64,
                chatvault_core::ChangeOp::Delete(_) => return Ok(change),
            };
            if stored.saturating_add(let_in).saturating_add(size) > quota {
                return Err(PushRejection {
                    op_id: Some(change.op_id.to_string()),
                    reason: PushRejectReason::QuotaExceeded,
                    message: format!(
                        "the account stores {stored} of its {quota} bytes; this record \
                         ({size} bytes) does not fit: delete something, then retry"
                    ),
                });
            }
            let_in += size;
            Ok(change)
        })
        .collect()
}

/// What a store does with an admitted change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it: it is newer than what the server holds.
    Apply,
    /// Keep what the server holds: the change lost the last-writer-wins
    /// comparison (or its conversation was deleted later).
    Supersede,
}

/// The LWW view of a change.
pub fn state_of(change: &Change) -> VersionedState<'_> {
    match &change.op {
        ChangeOp::Upsert(p) => VersionedState {
            version: change.version,
            deleted: false,
            body: p.body.as_bytes(),
        },
        ChangeOp::Delete(_) => VersionedState {
            version: change.version,
            deleted: true,
            body: &[],
        },
    }
}

/// Decides an admitted change against the stored version of the same
/// record (`current`) and what else covers it: for a message, its
/// conversation's deletion mark; for any record the server holds nothing
/// of, the account's purge mark.
///
/// This is core's [`resolve_incoming`], the rule client stores apply too;
/// on the server a conversation's deletion covers every message change
/// stamped at or before it, deletions included.
pub fn decide(change: &Change, current: Option<VersionedState<'_>>, cover: Cover) -> Verdict {
    let cover = match change.kind {
        EntityKind::Message => cover,
        EntityKind::Conversation => Cover {
            conversation_deleted: None,
            ..cover
        },
    };
    match resolve_incoming(current, state_of(change), cover) {
        Resolution::TakeRemote => Verdict::Apply,
        Resolution::KeepLocal => Verdict::Supersede,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_core::{
        Body, ConversationId, DeviceId, Hlc, MessageId, MessageRecord, OpId, Tombstone,
    };
    use serde_json::json;

    fn hlc(wall: u64) -> Hlc {
        Hlc::new(wall, 0, DeviceId(1)).unwrap()
    }

    fn none() -> Cover {
        Cover::default()
    }

    fn deleted(wall: u64) -> Cover {
        Cover {
            conversation_deleted: Some(hlc(wall)),
            purged: None,
        }
    }

    fn message(wall: u64, conv: ConversationId) -> Change {
        Change::upsert_message(
            OpId::new(),
            &MessageRecord {
                id: MessageId::new(),
                conversation_id: conv,
                created_at: Timestamp(1),
                updated_at: Timestamp(1),
                version: hlc(wall),
                body: Body(b"ciphertext".to_vec()),
            },
        )
    }

    #[test]
    fn the_quota_refuses_growth_in_batch_order_and_never_deletions() {
        let conv = ConversationId::new();
        // Bodies of 10 bytes ("ciphertext"); 25 stored, quota 50.
        let gone = Change::delete(
            OpId::new(),
            &Tombstone::message(MessageId::new(), conv, hlc(9), Timestamp(9)),
        );
        let invalid = Err(PushRejection {
            op_id: None,
            reason: PushRejectReason::InvalidChange,
            message: "bad".into(),
        });
        let batch = vec![
            Ok(message(1, conv)),
            invalid,
            Ok(message(2, conv)),
            Ok(message(3, conv)),
            Ok(gone.clone()),
            Ok(message(4, conv)),
        ];
        let held = hold_to_quota(batch, 25, 50);
        let reasons: Vec<Option<PushRejectReason>> = held
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.reason))
            .collect();
        use PushRejectReason::{InvalidChange, QuotaExceeded};
        assert_eq!(
            reasons,
            [
                None,
                Some(InvalidChange),
                None,
                Some(QuotaExceeded),
                None,
                Some(QuotaExceeded)
            ]
        );
        // Far over the quota, a deletion still passes.
        let held = hold_to_quota(vec![Ok(gone)], 1_000, 50);
        assert!(held[0].is_ok());
    }

    #[test]
    fn admit_rejects_bad_shapes_alone_and_keeps_the_op_id() {
        let op = OpId::new().to_string();
        let err = admit(json!({"opId": op, "kind": "note"}), Timestamp(0)).unwrap_err();
        assert_eq!(err.reason, PushRejectReason::InvalidChange);
        assert_eq!(err.op_id.as_deref(), Some(op.as_str()));
        let err = admit(json!(42), Timestamp(0)).unwrap_err();
        assert_eq!(err.op_id, None);
    }

    #[test]
    fn admit_rejects_message_without_conversation() {
        let mut c = message(5, ConversationId::new());
        c.conversation_id = None;
        let err = admit(serde_json::to_value(&c).unwrap(), Timestamp(10)).unwrap_err();
        assert_eq!(err.reason, PushRejectReason::InvalidChange);
    }

    #[test]
    fn admit_rejects_far_future_versions() {
        let now = 1_000_000;
        let ok = message(now + MAX_CLOCK_DRIFT_MS, ConversationId::new());
        assert!(admit(serde_json::to_value(&ok).unwrap(), Timestamp(now as i64)).is_ok());
        let skewed = message(now + MAX_CLOCK_DRIFT_MS + 1, ConversationId::new());
        let err = admit(
            serde_json::to_value(&skewed).unwrap(),
            Timestamp(now as i64),
        )
        .unwrap_err();
        assert_eq!(err.reason, PushRejectReason::ClockSkew);
    }

    #[test]
    fn newer_applies_older_and_equal_supersede() {
        let conv = ConversationId::new();
        let c = message(10, conv);
        assert_eq!(decide(&c, None, none()), Verdict::Apply);
        let older = VersionedState {
            version: hlc(9),
            deleted: false,
            body: b"x",
        };
        assert_eq!(decide(&c, Some(older), none()), Verdict::Apply);
        let newer = VersionedState {
            version: hlc(11),
            deleted: false,
            body: b"x",
        };
        assert_eq!(decide(&c, Some(newer), none()), Verdict::Supersede);
        assert_eq!(decide(&c, Some(state_of(&c)), none()), Verdict::Supersede);
    }

    #[test]
    fn conversation_tombstone_covers_older_messages_only() {
        let conv = ConversationId::new();
        let c = message(10, conv);
        assert_eq!(decide(&c, None, deleted(10)), Verdict::Supersede);
        assert_eq!(decide(&c, None, deleted(11)), Verdict::Supersede);
        assert_eq!(decide(&c, None, deleted(9)), Verdict::Apply);
        // A conversation change is never covered by "its own" tombstone rule.
        let del = Change::delete(
            OpId::new(),
            &Tombstone::conversation(conv, hlc(12), Timestamp(0)),
        );
        assert_eq!(decide(&del, None, deleted(20)), Verdict::Apply);
    }
}
