//! Sync routes: push a batch of changes, pull the feed after a cursor, and
//! page through a snapshot of live records.
//!
//! Each pushed change is parsed and admitted on its own
//! ([`crate::sync::admit`]); the admitted ones go to the store in one
//! transaction; the answer lists every change in request order. After a
//! push that applied anything, the account's open sockets are poked.

use axum::extract::State;
use axum::Json;
use chatvault_core::{Change, ErrorCode};

use super::extract::{ApiJson, ApiQuery, Authenticated};
use super::{AppError, AppState};
use crate::api::{
    ErrorBody, PullQuery, PullResponse, PushRequest, PushResponse, PushResult, PushStatus,
    SnapshotQuery, SnapshotResponse, MAX_PUSH_CHANGES,
};
use crate::store::{Outcome, Pull, Snapshot};
use crate::sync::{admit, hold_to_quota, PushRejectReason, PushRejection};
use crate::types::{Cursor, Invalid, Seq, SnapshotKey};
use std::str::FromStr;

/// Page size when none is asked for.
const DEFAULT_LIMIT: u32 = 500;
/// Largest page.
const MAX_LIMIT: u32 = 1000;

fn page_limit(limit: Option<u32>) -> Result<u32, AppError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(AppError::client(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {MAX_LIMIT}, not {n}"),
        )),
    }
}

/// Reads a paging position from the `after` query parameter (absent or
/// empty: from the start); text this server did not issue is 400
/// `invalid_cursor`.
fn parse_after<T: FromStr<Err = Invalid>>(after: Option<&str>) -> Result<Option<T>, AppError> {
    match after {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e: Invalid| AppError::client(ErrorCode::InvalidCursor, e.0)),
    }
}

/// Uploads changes.
#[utoipa::path(
    post, path = "/v1/sync/push", tag = "sync",
    request_body = PushRequest,
    responses(
        (status = 200, description = "Per-change results (applied / superseded / rejected)", body = PushResponse),
        (status = 400, description = "Body is not `{\"changes\": [...]}` (`malformed_json`, `invalid_request`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 413, description = "More than 1000 changes (`batch_too_large`) or body over the limit (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body was sent without `Content-Type: application/json` (`unsupported_media_type`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn push(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(req): ApiJson<PushRequest>,
) -> Result<Json<PushResponse>, AppError> {
    if req.changes.total > MAX_PUSH_CHANGES {
        return Err(AppError::client(
            ErrorCode::BatchTooLarge,
            format!(
                "a push may carry at most {MAX_PUSH_CHANGES} changes, this one has {}; split it",
                req.changes.total
            ),
        ));
    }
    let now = state.now();
    let mut batch: Vec<Result<Change, PushRejection>> = req
        .changes
        .kept
        .into_iter()
        .map(|value| admit(value, now))
        .collect();
    let grows = batch
        .iter()
        .any(|c| c.as_ref().is_ok_and(|c| !c.is_delete()));
    if let (Some(quota), true) = (state.config().account_quota_bytes, grows) {
        let stored = state.store().stored_bytes(auth.account).await?;
        batch = hold_to_quota(batch, stored, quota);
    }
    let mut admitted = Vec::with_capacity(batch.len());
    let slots: Vec<Result<usize, PushRejection>> = batch
        .into_iter()
        .map(|checked| {
            checked.map(|change| {
                admitted.push(change);
                admitted.len() - 1
            })
        })
        .collect();
    // Runs even when nothing was admitted: it also reads the feed head.
    let outcome = state.store().push(auth.account, &admitted, now).await?;

    let mut applied_any = false;
    let results = slots
        .into_iter()
        .map(|slot| match slot {
            Ok(i) => {
                let op_id = Some(admitted[i].op_id.to_string());
                match outcome.results.get(i).copied() {
                    Some(Outcome::Applied(seq)) => {
                        applied_any = true;
                        PushResult {
                            op_id,
                            status: PushStatus::Applied,
                            reason: None,
                            message: None,
                            seq: Some(seq.0),
                            server_time: None,
                        }
                    }
                    _ => PushResult {
                        op_id,
                        status: PushStatus::Superseded,
                        reason: None,
                        message: None,
                        seq: None,
                        server_time: None,
                    },
                }
            }
            Err(rejection) => PushResult {
                op_id: rejection.op_id,
                status: PushStatus::Rejected,
                server_time: (rejection.reason == PushRejectReason::ClockSkew)
                    .then(|| now.as_millis()),
                reason: Some(rejection.reason),
                message: Some(rejection.message),
                seq: None,
            },
        })
        .collect();
    if applied_any {
        state.hub().poke(auth.account, outcome.head);
    }
    Ok(Json(PushResponse {
        results,
        cursor: outcome.head,
    }))
}

/// Downloads changes after a cursor.
#[utoipa::path(
    get, path = "/v1/sync/pull", tag = "sync",
    params(PullQuery),
    responses(
        (status = 200, description = "A page of the change feed", body = PullResponse),
        (status = 400, description = "Bad cursor (`invalid_cursor`) or limit (`invalid_limit`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 410, description = "The cursor predates purged tombstones: rebuild from `/v1/sync/snapshot` (`resync_required`); or another copy of the database issued it (`server_restored`): rebuild and push back what the snapshot lacks", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn pull(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<PullQuery>,
) -> Result<Json<PullResponse>, AppError> {
    let after: Cursor = parse_after(query.after.as_deref())?.unwrap_or_default();
    let limit = page_limit(query.limit)?;
    // What the client pushed since its last pull must still be here: a
    // cursor this database did not issue means it was restored without it.
    if let Some(seen) = parse_after::<Cursor>(query.seen.as_deref())? {
        if state.store().pull(auth.account, seen, 1).await? == Pull::Restored {
            return Err(restored());
        }
    }
    match state.store().pull(auth.account, after, limit).await? {
        Pull::ResyncRequired => Err(AppError::client(
            ErrorCode::ResyncRequired,
            "this cursor is older than the server's tombstone horizon: \
             rebuild from /v1/sync/snapshot, keeping your unsent changes",
        )),
        Pull::Restored => Err(restored()),
        Pull::Changes {
            changes,
            has_more,
            epoch,
        } => {
            let seq = changes.last().map_or(after.seq, |c| Seq(c.seq));
            let next_cursor = Cursor::new(epoch, seq);
            Ok(Json(PullResponse {
                changes,
                next_cursor,
                has_more,
            }))
        }
    }
}

/// Pages through all live records.
#[utoipa::path(
    get, path = "/v1/sync/snapshot", tag = "sync",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "A page of live records; the first page carries the cursor to pull from afterwards", body = SnapshotResponse),
        (status = 400, description = "Bad key (`invalid_cursor`) or limit (`invalid_limit`)", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
        (status = 410, description = "The key is from another copy of the database (`server_restored`): start the snapshot again", body = ErrorBody),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<SnapshotQuery>,
) -> Result<Json<SnapshotResponse>, AppError> {
    let after = parse_after::<SnapshotKey>(query.after.as_deref())?;
    let limit = page_limit(query.limit)?;
    let page = match state.store().snapshot(auth.account, after, limit).await? {
        Snapshot::Page(page) => page,
        Snapshot::Restored => return Err(restored()),
    };
    let next_key = page
        .changes
        .last()
        .filter(|_| page.has_more)
        .map(|c| SnapshotKey {
            epoch: Some(page.epoch),
            kind: c.change.kind,
            id: c.change.entity_id,
        });
    Ok(Json(SnapshotResponse {
        changes: page.changes,
        next_key,
        has_more: page.has_more,
        cursor: page.head,
    }))
}

/// The answer to a cursor or snapshot key this database did not issue.
fn restored() -> AppError {
    AppError::client(
        ErrorCode::ServerRestored,
        "this cursor was issued by another copy of the server's database (it was restored \
         from a backup since): rebuild from /v1/sync/snapshot and push back every record \
         the snapshot lacks or holds older, keeping your unsent changes",
    )
}
