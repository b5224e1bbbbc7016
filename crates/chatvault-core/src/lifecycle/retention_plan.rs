//! The retention planner: given what a vault holds, a [`RetentionPolicy`]
//! and "now", which conversations to delete and why. Pure: the facade
//! gathers the [`ConversationSummary`]s, applies the plan in one atomic
//! write and syncs the deletions.
//!
//! # Rules
//! - Conversations are considered oldest activity first (ties by id), so
//!   the newest history is what stays.
//! - **Age** deletes every conversation last active before
//!   `now - max_age_days`.
//! - **Count** then deletes the oldest remaining ones until at most
//!   `max_conversations` remain.
//! - **Bytes** then deletes the oldest remaining ones until the stored
//!   bytes are at most `max_bytes`.
//! - A **pinned** conversation, or one with changes the sync server has not
//!   acknowledged (**unsynced**), is never deleted: a limit that selects it
//!   lists it in [`RetentionPlan::kept`] with the reason and moves on to the
//!   next oldest. A limit may therefore stay exceeded when only protected
//!   conversations are left. (Whether "unsynced" applies is the caller's
//!   call: without a sync server nothing is pending.)
//!
//! Applying a plan and planning again with the same policy and time deletes
//! nothing more: every limit holds, or only protected conversations are in
//! its way.

use crate::{ConversationId, CoreError, Timestamp};
use serde::{Deserialize, Serialize};

/// How much history to keep. Every limit is optional; an empty policy
/// deletes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Delete conversations inactive for longer than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
    /// Keep at most this many conversations (the most recently active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conversations: Option<u64>,
    /// Keep at most this many stored bytes (bodies as stored, after
    /// encryption), deleting the oldest conversations first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy sets no limit at all.
    pub fn is_empty(&self) -> bool {
        self.max_age_days.is_none() && self.max_conversations.is_none() && self.max_bytes.is_none()
    }

    /// Refuses a policy that cannot be meant: one without any limit (it
    /// would do nothing) or with a limit of zero (it would delete every
    /// conversation that is not pinned or unsynced — say, a typo for
    /// `--max-bytes 10MB`). Deleting everything is `clear`'s job, not a
    /// policy's.
    pub fn check(&self) -> Result<(), CoreError> {
        let invalid = |reason: &str| {
            Err(CoreError::Invalid {
                field: "retention policy",
                reason: reason.to_owned(),
            })
        };
        if self.is_empty() {
            return invalid("set at least one of max age, max conversations, max bytes");
        }
        let zero = [
            (self.max_age_days == Some(0), "max age 0 days"),
            (self.max_conversations == Some(0), "max 0 conversations"),
            (self.max_bytes == Some(0), "max 0 bytes"),
        ];
        if let Some((_, limit)) = zero.iter().find(|(is_zero, _)| *is_zero) {
            return invalid(&format!(
                "{limit} would delete every conversation; give a limit above zero"
            ));
        }
        Ok(())
    }
}

/// What the planner needs to know about one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub id: ConversationId,
    /// Its last activity (what "age" measures).
    pub updated_at: Timestamp,
    /// Stored bytes of it and its messages.
    pub bytes: u64,
    /// `metadata.pinned == true`.
    pub pinned: bool,
    /// It has changes a sync server has not acknowledged yet.
    pub pending: bool,
}

/// Which limit selected a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetentionReason {
    /// Older than `max_age_days`.
    Age,
    /// Beyond `max_conversations`.
    Count,
    /// Beyond `max_bytes`.
    Bytes,
}

impl RetentionReason {
    /// The reason in words.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionReason::Age => "age",
            RetentionReason::Count => "count",
            RetentionReason::Bytes => "bytes",
        }
    }
}

/// Why a conversation a limit selected is kept anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Protection {
    /// The app pinned it.
    Pinned,
    /// It has changes the sync server has not acknowledged: deleting it
    /// would lose them.
    Unsynced,
}

impl Protection {
    /// The reason in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Pinned => "pinned",
            Protection::Unsynced => "unsynced changes",
        }
    }
}

/// A conversation the plan deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// The conversation.
    pub id: ConversationId,
    /// Its last activity.
    pub updated_at: Timestamp,
    /// Bytes deleting it frees.
    pub bytes: u64,
    /// The first limit that selected it.
    pub reason: RetentionReason,
}

/// A conversation a limit selected but the plan keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    /// The conversation.
    pub id: ConversationId,
    /// Its last activity.
    pub updated_at: Timestamp,
    /// Its stored bytes.
    pub bytes: u64,
    /// The first limit that selected it.
    pub selected_by: RetentionReason,
    /// Why it stays.
    pub protection: Protection,
}

/// What to delete and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPlan {
    /// Conversations to delete (with their messages), oldest first.
    pub delete: Vec<Deletion>,
    /// Conversations a limit selected but that are protected, oldest first.
    pub kept: Vec<Kept>,
    /// Stored bytes the deletions free.
    pub bytes_freed: u64,
    /// Conversations left afterwards.
    pub remaining_conversations: u64,
    /// Stored bytes left afterwards.
    pub remaining_bytes: u64,
}

/// Plans what `policy` deletes from `conversations` at time `now`.
pub fn plan_retention(
    conversations: &[ConversationSummary],
    policy: &RetentionPolicy,
    now: Timestamp,
) -> RetentionPlan {
    let mut order: Vec<&ConversationSummary> = conversations.iter().collect();
    order.sort_by_key(|c| (c.updated_at, c.id));
    let protection = |c: &ConversationSummary| {
        if c.pinned {
            Some(Protection::Pinned)
        } else if c.pending {
            Some(Protection::Unsynced)
        } else {
            None
        }
    };

    // Per conversation (in `order`): the limit that selected it, if any.
    let mut selected: Vec<Option<RetentionReason>> = vec![None; order.len()];
    let mut remaining = order.len() as u64;
    let mut bytes: u64 = order.iter().map(|c| c.bytes).sum();
    let mut select = |i: usize, reason: RetentionReason, remaining: &mut u64, bytes: &mut u64| {
        if selected[i].is_none() {
            selected[i] = Some(reason);
            if protection(order[i]).is_none() {
                *remaining -= 1;
                *bytes -= order[i].bytes;
            }
        }
    };

    if let Some(days) = policy.max_age_days {
        let cutoff = now.minus_days(days);
        for (i, c) in order.iter().enumerate() {
            if c.updated_at < cutoff {
                select(i, RetentionReason::Age, &mut remaining, &mut bytes);
            }
        }
    }
    if let Some(max) = policy.max_conversations {
        for i in 0..order.len() {
            if remaining <= max {
                break;
            }
            select(i, RetentionReason::Count, &mut remaining, &mut bytes);
        }
    }
    if let Some(max) = policy.max_bytes {
        for i in 0..order.len() {
            if bytes <= max {
                break;
            }
            select(i, RetentionReason::Bytes, &mut remaining, &mut bytes);
        }
    }

    let mut plan = RetentionPlan {
        remaining_conversations: remaining,
        remaining_bytes: bytes,
        ..RetentionPlan::default()
    };
    for (c, reason) in order.iter().zip(selected) {
        let Some(reason) = reason else { continue };
        match protection(c) {
            Some(protection) => plan.kept.push(Kept {
                id: c.id,
                updated_at: c.updated_at,
                bytes: c.bytes,
                selected_by: reason,
                protection,
            }),
            None => {
                plan.bytes_freed += c.bytes;
                plan.delete.push(Deletion {
                    id: c.id,
                    updated_at: c.updated_at,
                    bytes: c.bytes,
                    reason,
                });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const DAY: i64 = 86_400_000;
    const NOW: Timestamp = Timestamp(1_000 * DAY);

    fn summary(n: u8, days_ago: i64, bytes: u64) -> ConversationSummary {
        ConversationSummary {
            id: ConversationId::from_bytes([n; 16]),
            updated_at: Timestamp(NOW.0 - days_ago * DAY),
            bytes,
            pinned: false,
            pending: false,
        }
    }

    fn ids(plan: &RetentionPlan) -> Vec<u8> {
        plan.delete.iter().map(|d| d.id.as_bytes()[0]).collect()
    }

    #[test]
    fn a_policy_without_limits_or_with_a_zero_limit_is_refused() {
        assert!(RetentionPolicy::default().check().is_err());
        for zero in [
            RetentionPolicy {
                max_age_days: Some(0),
                ..Default::default()
            },
            RetentionPolicy {
                max_conversations: Some(0),
                ..Default::default()
            },
            RetentionPolicy {
                max_bytes: Some(0),
                max_age_days: Some(30),
                ..Default::default()
            },
        ] {
            let err = zero.check().unwrap_err().to_string();
            assert!(err.contains("would delete every conversation"), "{err}");
        }
        let fine = RetentionPolicy {
            max_age_days: Some(1),
            max_conversations: Some(1),
            max_bytes: Some(1),
        };
        assert!(fine.check().is_ok());
    }

    #[test]
    fn age_count_and_bytes_each_delete_the_oldest_with_their_reason() {
        let all = [
            summary(1, 40, 100),
            summary(2, 31, 100),
            summary(3, 20, 100),
            summary(4, 10, 500),
            summary(5, 1, 100),
        ];
        let policy = RetentionPolicy {
            max_age_days: Some(30),
            max_conversations: Some(2),
            max_bytes: Some(150),
        };
        let plan = plan_retention(&all, &policy, NOW);
        assert_eq!(ids(&plan), [1, 2, 3, 4]);
        let reasons: Vec<_> = plan.delete.iter().map(|d| d.reason).collect();
        use RetentionReason::*;
        assert_eq!(reasons, [Age, Age, Count, Bytes]);
        assert_eq!(plan.bytes_freed, 800);
        assert_eq!(
            (plan.remaining_conversations, plan.remaining_bytes),
            (1, 100)
        );
    }

    #[test]
    fn pinned_and_unsynced_are_kept_and_the_next_oldest_goes_instead() {
        let mut pinned = summary(1, 50, 10);
        pinned.pinned = true;
        let mut unsynced = summary(2, 40, 10);
        unsynced.pending = true;
        let all = [pinned, unsynced, summary(3, 5, 10), summary(4, 1, 10)];
        let plan = plan_retention(
            &all,
            &RetentionPolicy {
                max_conversations: Some(2),
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(ids(&plan), [3, 4]);
        let kept: Vec<_> = plan
            .kept
            .iter()
            .map(|k| (k.id.as_bytes()[0], k.protection))
            .collect();
        assert_eq!(kept, [(1, Protection::Pinned), (2, Protection::Unsynced)]);
        assert_eq!(
            plan.remaining_conversations, 2,
            "the limit holds with protected ones"
        );
    }

    #[test]
    fn an_empty_policy_deletes_nothing() {
        let plan = plan_retention(
            &[summary(1, 9999, 1 << 40)],
            &RetentionPolicy::default(),
            NOW,
        );
        assert!(plan.delete.is_empty() && plan.kept.is_empty());
        assert!(RetentionPolicy::default().is_empty());
    }

    #[test]
    fn the_age_limit_is_exclusive_at_the_cutoff() {
        let plan = plan_retention(
            &[summary(1, 30, 1), summary(2, 31, 1)],
            &RetentionPolicy {
                max_age_days: Some(30),
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(ids(&plan), [2]);
    }

    #[test]
    fn policy_json_is_camel_case_and_strict() {
        let p = RetentionPolicy {
            max_age_days: Some(30),
            max_conversations: None,
            max_bytes: Some(10),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"maxAgeDays":30,"maxBytes":10}"#);
        assert_eq!(serde_json::from_str::<RetentionPolicy>(&json).unwrap(), p);
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"maxAge":1}"#).is_err());
    }

    fn summaries() -> impl Strategy<Value = Vec<ConversationSummary>> {
        proptest::collection::vec(
            (
                0i64..100,
                0u64..1000,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
            0..30,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(i, (days, bytes, pinned, pending, rare))| ConversationSummary {
                        id: ConversationId::from_bytes([i as u8; 16]),
                        updated_at: Timestamp(NOW.0 - days * DAY),
                        bytes,
                        // Protect about a quarter of them.
                        pinned: pinned && rare,
                        pending: pending && rare && !pinned,
                    },
                )
                .collect()
        })
    }

    fn policies() -> impl Strategy<Value = RetentionPolicy> {
        (
            proptest::option::of(0u32..120),
            proptest::option::of(0u64..35),
            proptest::option::of(0u64..20_000),
        )
            .prop_map(|(a, c, b)| RetentionPolicy {
                max_age_days: a,
                max_conversations: c,
                max_bytes: b,
            })
    }

    fn protected(c: &ConversationSummary) -> bool {
        c.pinned || c.pending
    }

    proptest! {
        #[test]
        fn never_deletes_pinned_or_unsynced(all in summaries(), policy in policies()) {
            let plan = plan_retention(&all, &policy, NOW);
            let doomed: HashSet<_> = plan.delete.iter().map(|d| d.id).collect();
            for c in &all {
                if protected(c) {
                    prop_assert!(!doomed.contains(&c.id));
                }
            }
            prop_assert_eq!(plan.delete.len() + plan.remaining_conversations as usize, all.len());
            prop_assert_eq!(plan.bytes_freed + plan.remaining_bytes, all.iter().map(|c| c.bytes).sum::<u64>());
        }

        #[test]
        fn each_limit_holds_after_applying_unless_only_protected_ones_are_left(
            all in summaries(), policy in policies()
        ) {
            let plan = plan_retention(&all, &policy, NOW);
            let doomed: HashSet<_> = plan.delete.iter().map(|d| d.id).collect();
            let left: Vec<_> = all.iter().filter(|c| !doomed.contains(&c.id)).collect();
            let unprotected_left = left.iter().filter(|c| !protected(c)).count();
            if let Some(days) = policy.max_age_days {
                let cutoff = NOW.minus_days(days);
                prop_assert!(left.iter().all(|c| c.updated_at >= cutoff || protected(c)));
            }
            if let Some(max) = policy.max_conversations {
                prop_assert!(left.len() as u64 <= max || unprotected_left == 0);
            }
            if let Some(max) = policy.max_bytes {
                let bytes: u64 = left.iter().map(|c| c.bytes).sum();
                prop_assert!(bytes <= max || unprotected_left == 0);
            }
        }

        #[test]
        fn deletes_oldest_first(all in summaries(), policy in policies()) {
            let plan = plan_retention(&all, &policy, NOW);
            let keys: Vec<_> = plan.delete.iter().map(|d| (d.updated_at, d.id)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&keys, &sorted, "listed oldest first");
            // Count and bytes never delete a conversation while an older
            // unprotected one stays.
            let doomed: HashSet<_> = plan.delete.iter().map(|d| d.id).collect();
            let newest_doomed_by_size = plan
                .delete
                .iter()
                .filter(|d| d.reason != RetentionReason::Age)
                .map(|d| (d.updated_at, d.id))
                .max();
            if let Some(newest) = newest_doomed_by_size {
                for c in all.iter().filter(|c| !protected(c) && !doomed.contains(&c.id)) {
                    prop_assert!((c.updated_at, c.id) > newest);
                }
            }
        }

        #[test]
        fn planning_again_on_the_result_deletes_nothing(all in summaries(), policy in policies()) {
            let plan = plan_retention(&all, &policy, NOW);
            let doomed: HashSet<_> = plan.delete.iter().map(|d| d.id).collect();
            let left: Vec<_> = all.iter().copied().filter(|c| !doomed.contains(&c.id)).collect();
            let again = plan_retention(&left, &policy, NOW);
            prop_assert!(again.delete.is_empty(), "{:?}", again.delete);
            prop_assert_eq!(again.remaining_bytes, plan.remaining_bytes);
        }
    }
}
