//! The delivery state machine's writes: claim with a lease, then record the
//! outcome fenced on that lease.

use std::sync::Arc;
use std::time::Duration;

use super::{Db, DbConn};
use sqlx::QueryBuilder;

use super::Store;
use super::catalog::target_in;
use super::queries as q;
use super::requests::requests_in;
use crate::store::StoreError;
use crate::store::model::{
    AttemptOutcome, AttemptRecord, AttemptState, Breaker, ClaimedDelivery, DeliveryFilter,
    DeliverySummary, Micros, StoredRequest, new_record_id, now_micros,
};
use crate::store::rows::{AttemptRow, DeliveryRow, encode_headers};

impl Store {
    /// Gives back, untried, every delivery still leased by `worker_id`
    /// (a worker stopping).
    ///
    /// # Errors
    /// The store is unavailable; the leases will expire instead.
    pub async fn release_leases(&self, worker_id: &str) -> Result<u64, StoreError> {
        let released = sqlx::query(q::RELEASE_LEASE)
            .bind(now_micros())
            .bind(worker_id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(released)
    }

    /// Claims up to `limit` due deliveries under a new lease of `worker_id`
    /// (32 hex characters), after returning expired leases to pending.
    /// Targets in `skip` are left alone.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn claim_due_deliveries(
        &self,
        worker_id: &str,
        limit: u32,
        skip: &[i64],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let no_fresh = std::collections::HashMap::new();
        let mut targets = std::collections::HashMap::new();
        let (claimed, _) = claim_in(
            &mut tx,
            worker_id,
            limit,
            skip,
            true,
            &no_fresh,
            &mut targets,
        )
        .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Makes every write batch claim due deliveries for the worker at the
    /// other end of `handle` (None: for no worker), in its own transaction.
    ///
    /// # Errors
    /// The writer has stopped.
    pub async fn dispatch_to(
        &self,
        handle: Option<std::sync::Arc<crate::store::dispatch::DispatchHandle>>,
    ) -> Result<(), StoreError> {
        self.group.dispatch_to(handle).await
    }

    /// Asks the next write batch to claim due deliveries for the worker.
    pub fn kick(&self) {
        self.group.kick();
    }

    /// Gives a claimed delivery back without trying it, due again at
    /// `next_run_at` (the target's rate limit is used up).
    ///
    /// # Errors
    /// The store is unavailable; the lease will expire instead.
    pub async fn unclaim(
        &self,
        claimed: &ClaimedDelivery,
        next_run_at: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(q::UNCLAIM)
            .bind(next_run_at)
            .bind(now_micros())
            .bind(&claimed.delivery_id)
            .bind(&claimed.lease_token)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// When the worker should look for due deliveries again, if ever,
    /// leaving out the targets in `skip` as the claim does.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn next_due_at(&self, skip: &[i64]) -> Result<Option<Micros>, StoreError> {
        let skip = super::id_list(skip);
        Ok(sqlx::query_scalar(q::NEXT_DUE_AT)
            .bind(Option::<i64>::None)
            .bind(now_micros())
            .bind(Option::<i64>::None)
            .bind(skip)
            .fetch_one(&self.reader)
            .await?)
    }

    /// Records the outcome of a claimed attempt, its log record, the target's
    /// circuit breaker and (on 410) its disabling, in one transaction.
    /// Returns None when the lease was lost (expired and claimed again, or
    /// the target removed): a stale worker never overwrites a newer outcome.
    ///
    /// # Errors
    /// The store is unavailable; the lease stays and will expire.
    pub async fn finish_attempt(
        &self,
        claimed: &ClaimedDelivery,
        outcome: AttemptOutcome,
        breaker_cooldown: Duration,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        self.group
            .finish(claimed.clone(), outcome, breaker_cooldown)
            .await
    }

    /// Deliveries matching `filter`, newest first.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let mut query = delivery_list_query(filter, limit);
        // Planned with its values at each call, not prepared once: after
        // five runs of a prepared statement PostgreSQL may keep a generic
        // plan, which guesses a target's share of the failed deliveries
        // from the table's statistics; for a target with few or none it
        // walked every failed delivery (20 ms at 200,000) instead of
        // reading `deliveries_failed_of_target`.
        let rows: Vec<DeliveryRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(DeliverySummary::from).collect())
    }

    /// Unfinished deliveries of a target, the soonest due first.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn pending_deliveries(
        &self,
        target_id: i64,
        limit: u32,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(q::SELECT_PENDING_OF_TARGET)
            .bind(target_id)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(DeliverySummary::from).collect())
    }

    /// One delivery and all its attempts, oldest first.
    ///
    /// # Errors
    /// The store is unavailable or a row is corrupt.
    pub async fn get_delivery(
        &self,
        id: &str,
    ) -> Result<Option<(DeliverySummary, Vec<AttemptRecord>)>, StoreError> {
        let row: Option<DeliveryRow> = sqlx::query_as(q::SELECT_DELIVERY)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts: Vec<AttemptRow> = sqlx::query_as(q::SELECT_ATTEMPTS_OF_DELIVERY)
            .bind(&row.request_id)
            .bind(id)
            .fetch_all(&self.reader)
            .await?;
        let attempts = attempts
            .into_iter()
            .map(AttemptRecord::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((DeliverySummary::from(row), attempts)))
    }

    /// The requests whose delivery to `target_id` failed since `since`,
    /// oldest first.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn failed_requests(
        &self,
        target_id: i64,
        since: Micros,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(q::SELECT_FAILED_REQUESTS)
            .bind(target_id)
            .bind(since)
            .fetch_all(&self.reader)
            .await?)
    }
}

/// A row a claim took: delivery id, request id, target id, attempt.
pub(super) type ClaimRow = (String, String, i64, i64);

/// A new lease token of `worker_id`: the worker's id, then a record id.
pub(super) fn new_lease_token(worker_id: &str) -> String {
    format!("{worker_id}.{}", new_record_id())
}

/// Claims up to `limit` due deliveries under a new lease of `worker_id`
/// (after returning expired leases to pending, if `expire`), inside the
/// caller's transaction, and loads what sending them takes. Requests in
/// `fresh` (written by the same transaction) are not read back, nor are
/// targets in `targets`, which gets those read added. Returns the
/// claimed deliveries and how many rows the claim took (deliveries whose
/// request or target is gone are cancelled, not returned).
pub(super) async fn claim_in(
    conn: &mut DbConn,
    worker_id: &str,
    limit: u32,
    skip: &[i64],
    expire: bool,
    fresh: &std::collections::HashMap<&str, &Arc<StoredRequest>>,
    targets: &mut std::collections::HashMap<i64, Arc<crate::store::model::Target>>,
) -> Result<(Vec<ClaimedDelivery>, usize), StoreError> {
    let now = now_micros();
    let lease_token = new_lease_token(worker_id);
    if expire {
        expire_leases_in(&mut *conn, now).await?;
    }
    let claim = sqlx::query(q::CLAIM_DUE)
        .bind(&lease_token)
        .bind(now)
        .bind(i64::from(limit))
        .bind(super::id_list(skip));
    let rows: Vec<ClaimRow> = match q::CLAIMED {
        Some(claimed) => {
            // Nothing taken: no need to ask what.
            if claim.execute(&mut *conn).await?.rows_affected() == 0 {
                return Ok((Vec::new(), 0));
            }
            let json: String = sqlx::query_scalar(claimed)
                .bind(&lease_token)
                .fetch_one(&mut *conn)
                .await?;
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("claimed deliveries: {e}")))?
        }
        None => {
            use sqlx::Row;
            claim
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|row| {
                    Ok((
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()?
        }
    };
    let taken = rows.len();
    if rows.is_empty() {
        return Ok((Vec::new(), 0));
    }

    // The requests not in memory in one query, each target once.
    let loaded = requests_in(&mut *conn, &missing_requests(&rows, fresh)).await?;
    load_targets(&mut *conn, &rows, targets).await?;
    let (claimed, gone) = assemble_claims(rows, &lease_token, fresh, loaded, targets);
    cancel_claimed_in(&mut *conn, &gone, &lease_token, now).await?;
    Ok((claimed, taken))
}

/// The query of `Store::list_deliveries`. Deliveries in flight, few rows
/// of a long history, are read through their own index (see
/// SELECT_IN_FLIGHT_DELIVERIES); failed ones through theirs (FAILED_ONLY).
pub(super) fn delivery_list_query(
    filter: &DeliveryFilter,
    limit: u32,
) -> QueryBuilder<'static, Db> {
    let mut query;
    if filter.state.as_deref() == Some("in_flight") {
        query = QueryBuilder::<Db>::new(q::SELECT_IN_FLIGHT_DELIVERIES);
        if let Some(target_id) = filter.target_id {
            query.push(q::IN_FLIGHT_OF_TARGET).push_bind(target_id);
        }
        query.push(q::IN_FLIGHT_TAIL);
    } else {
        query = QueryBuilder::<Db>::new(q::SELECT_DELIVERIES);
        match filter.state.as_deref() {
            None => {}
            Some("retrying") => {
                query.push(" AND d.state = 'pending' AND d.attempt > 0");
            }
            Some("pending") => {
                query.push(" AND d.state = 'pending' AND d.attempt = 0");
            }
            Some("failed") => {
                query.push(q::FAILED_ONLY);
            }
            Some(state) => {
                query.push(" AND d.state = ").push_bind(state.to_owned());
            }
        }
        if let Some(target_id) = filter.target_id {
            query.push(" AND d.target_id = ").push_bind(target_id);
        }
        query.push(q::NEWEST_FIRST);
    }
    query.push_bind(i64::from(limit));
    query
}

/// The text of `delivery_list_query` for one state, and a limit (its one
/// parameter): for plan tests.
#[cfg(test)]
pub(super) fn delivery_list_sql_of_state(state: &str) -> String {
    let filter = DeliveryFilter {
        state: Some(state.to_owned()),
        target_id: None,
    };
    delivery_list_query(&filter, 10).sql().to_owned()
}

/// The text of `delivery_list_query` for one state of one target: the
/// target's id, then the limit.
#[cfg(test)]
pub(super) fn delivery_list_sql_of_target(state: &str) -> String {
    let filter = DeliveryFilter {
        state: Some(state.to_owned()),
        target_id: Some(1),
    };
    delivery_list_query(&filter, 10).sql().to_owned()
}

/// Cancels the claimed deliveries in `gone` (their request or target is
/// gone), fenced on the claim's lease.
pub(super) async fn cancel_claimed_in(
    conn: &mut DbConn,
    gone: &[String],
    lease_token: &str,
    now: Micros,
) -> Result<(), StoreError> {
    for delivery_id in gone {
        sqlx::query(q::CANCEL_CLAIMED)
            .bind(now)
            .bind(delivery_id)
            .bind(lease_token)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Returns the deliveries whose lease has expired by `now` to pending.
pub(super) async fn expire_leases_in(conn: &mut DbConn, now: Micros) -> Result<(), StoreError> {
    sqlx::query(q::EXPIRE_LEASES)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The requests of claimed `rows` that are not in `fresh`, each once.
pub(super) fn missing_requests<'r>(
    rows: &'r [ClaimRow],
    fresh: &std::collections::HashMap<&str, &Arc<StoredRequest>>,
) -> Vec<&'r str> {
    let mut missing: Vec<&str> = rows
        .iter()
        .map(|(_, request_id, _, _)| request_id.as_str())
        .filter(|id| !fresh.contains_key(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

/// Reads into `targets`, on `conn`, the targets of claimed `rows` not in it yet.
pub(super) async fn load_targets(
    conn: &mut DbConn,
    rows: &[ClaimRow],
    targets: &mut std::collections::HashMap<i64, Arc<crate::store::model::Target>>,
) -> Result<(), StoreError> {
    for (_, _, target_id, _) in rows {
        if !targets.contains_key(target_id)
            && let Some(target) = target_in(&mut *conn, *target_id).await?
        {
            targets.insert(*target_id, Arc::new(target));
        }
    }
    Ok(())
}

/// Claimed `rows` made ready to send, with their requests (from `fresh`
/// or `loaded`) and targets; then the ids of those whose request or
/// target is gone, to cancel.
pub(super) fn assemble_claims(
    rows: Vec<ClaimRow>,
    lease_token: &str,
    fresh: &std::collections::HashMap<&str, &Arc<StoredRequest>>,
    loaded: std::collections::HashMap<String, StoredRequest>,
    targets: &std::collections::HashMap<i64, Arc<crate::store::model::Target>>,
) -> (Vec<ClaimedDelivery>, Vec<String>) {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut gone = Vec::new();
    // Several deliveries of one request share it.
    let loaded: std::collections::HashMap<String, Arc<StoredRequest>> = loaded
        .into_iter()
        .map(|(id, request)| (id, Arc::new(request)))
        .collect();
    for (delivery_id, request_id, target_id, attempt) in rows {
        let request = fresh
            .get(request_id.as_str())
            .map(|r| Arc::clone(r))
            .or_else(|| loaded.get(&request_id).cloned());
        let target = targets.get(&target_id).cloned();
        let (Some(request), Some(target)) = (request, target) else {
            // Removed since: nothing left to send.
            tracing::warn!(%delivery_id, "claimed delivery lost its request or target: cancelled");
            gone.push(delivery_id);
            continue;
        };
        claimed.push(ClaimedDelivery {
            delivery_id,
            lease_token: lease_token.to_owned(),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            request,
            target,
        });
    }
    (claimed, gone)
}

pub(super) async fn finish_in(
    tx: &mut DbConn,
    claimed: &ClaimedDelivery,
    outcome: AttemptOutcome,
    breaker_cooldown: Duration,
) -> Result<Option<AttemptRecord>, StoreError> {
    let now = outcome.finished_at;
    let delivery_state = match outcome.state {
        AttemptState::Retrying => "pending",
        AttemptState::Delivered => "delivered",
        AttemptState::Failed => "failed",
    };
    let updated = sqlx::query(q::FINISH_DELIVERY)
        .bind(delivery_state)
        .bind(outcome.next_run_at)
        .bind(now)
        .bind(&claimed.delivery_id)
        .bind(&claimed.lease_token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    let target_id = claimed.target.id;
    // A success to a target whose breaker was closed when claimed changes nothing.
    let breaker_untouched =
        outcome.target_failed == Some(false) && claimed.target.breaker == Breaker::default();
    if outcome.target_failed.is_some() && !breaker_untouched {
        let current: Option<(i64, Option<i64>, i64, i64)> = sqlx::query_as(q::SELECT_BREAKER)
            .bind(target_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((failures, until, opens, break_after)) = current {
            let before = Breaker {
                consecutive_failures: u32::try_from(failures).unwrap_or(0),
                open_until: until,
                opens: u32::try_from(opens).unwrap_or(0),
            };
            let after = before.after(
                outcome.target_failed,
                u32::try_from(break_after).unwrap_or(0),
                now,
                breaker_cooldown,
            );
            if after != before {
                if after.open_until != before.open_until && after.is_open(now) {
                    tracing::warn!(
                        target_id,
                        failures = after.consecutive_failures,
                        "circuit breaker open"
                    );
                }
                sqlx::query(q::UPDATE_BREAKER)
                    .bind(i64::from(after.consecutive_failures))
                    .bind(after.open_until)
                    .bind(i64::from(after.opens))
                    .bind(target_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    if let Some(reason) = &outcome.disable_target {
        tracing::warn!(target_id, %reason, "target disabled");
        sqlx::query(q::DISABLE_TARGET)
            .bind(reason)
            .bind(target_id)
            .execute(&mut *tx)
            .await?;
    }
    let record = attempt_record(claimed, outcome);
    insert_attempt(&mut *tx, &record).await?;
    Ok(Some(record))
}

/// Whether an outcome needs only the delivery update and the attempt row
/// (no breaker change, no disabling), so it can be written in bulk.
pub(super) fn is_simple(claimed: &ClaimedDelivery, outcome: &AttemptOutcome) -> bool {
    outcome.disable_target.is_none()
        && (outcome.target_failed.is_none()
            || (outcome.target_failed == Some(false)
                && claimed.target.breaker == Breaker::default()))
}

pub(super) fn delivery_state_of(state: AttemptState) -> &'static str {
    match state {
        AttemptState::Retrying => "pending",
        AttemptState::Delivered => "delivered",
        AttemptState::Failed => "failed",
    }
}

pub(super) fn attempt_record(claimed: &ClaimedDelivery, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        id: new_record_id(),
        delivery_id: claimed.delivery_id.clone(),
        request_id: claimed.request.id.clone(),
        source_id: claimed.request.source_id,
        target_id: claimed.target.id,
        target_name: Some(claimed.target.name.clone()),
        url: claimed.target.url.clone(),
        attempt: claimed.attempt,
        state: outcome.state,
        outcome: outcome.outcome,
        elapsed: outcome.elapsed,
        created_at: outcome.finished_at,
        next_run_at: outcome.next_run_at,
    }
}

/// Many simple outcomes (see [`is_simple`]) in two statements: one fenced
/// UPDATE of the deliveries, one INSERT of the attempts of those whose lease
/// still held. Returns, in order, the record or None (lease lost).
pub(super) async fn finish_many_in(
    tx: &mut DbConn,
    finishes: Vec<(&ClaimedDelivery, AttemptOutcome)>,
) -> Result<Vec<Option<AttemptRecord>>, StoreError> {
    let mut update = QueryBuilder::<Db>::new(q::FINISH_MANY_HEAD);
    update.push_values(&finishes, |mut row, (claimed, outcome)| {
        row.push_bind(claimed.delivery_id.clone())
            .push_bind(delivery_state_of(outcome.state))
            .push_bind(outcome.next_run_at)
            .push_bind(outcome.finished_at)
            .push_bind(claimed.lease_token.clone());
    });
    update.push(q::FINISH_MANY_TAIL);
    let count = finishes.len();
    let records: Vec<Option<AttemptRecord>> = if q::FINISH_MANY_RETURNS {
        let updated: Vec<String> = update.build_query_scalar().fetch_all(&mut *tx).await?;
        let updated: std::collections::HashSet<String> = updated.into_iter().collect();
        finishes
            .into_iter()
            .map(|(claimed, outcome)| {
                updated
                    .contains(&claimed.delivery_id)
                    .then(|| attempt_record(claimed, outcome))
            })
            .collect()
    } else {
        let updated = update.build().execute(&mut *tx).await?.rows_affected();
        if usize::try_from(updated).ok() != Some(count) {
            // Which lease went is known only one by one.
            return Err(StoreError::LeaseLost);
        }
        finishes
            .into_iter()
            .map(|(claimed, outcome)| Some(attempt_record(claimed, outcome)))
            .collect()
    };
    let written: Vec<&AttemptRecord> = records.iter().flatten().collect();
    insert_attempts(&mut *tx, &written).await?;
    Ok(records)
}

/// The response or error columns of an attempt row.
#[allow(clippy::type_complexity)]
pub(super) fn attempt_columns(
    record: &AttemptRecord,
) -> (
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    bool,
    Option<String>,
    Option<String>,
) {
    match &record.outcome {
        Ok(r) => (
            Some(i64::from(r.status_code)),
            Some(encode_headers(&r.headers)),
            Some(r.body.to_vec()),
            r.body_truncated,
            None,
            None,
        ),
        Err(e) => (
            None,
            None,
            None,
            false,
            Some(e.kind.clone()),
            Some(e.message.clone()),
        ),
    }
}

async fn insert_attempt(conn: &mut DbConn, record: &AttemptRecord) -> Result<(), StoreError> {
    insert_attempts(conn, &[record]).await
}

/// Attempt rows, many to a statement.
async fn insert_attempts(conn: &mut DbConn, records: &[&AttemptRecord]) -> Result<(), StoreError> {
    // Seventeen parameters a row; SQLite takes up to 32766 per statement.
    for chunk in records.chunks(1000) {
        let mut insert = QueryBuilder::<Db>::new(q::INSERT_ATTEMPTS_HEAD);
        insert.push_values(chunk, |mut row, record| {
            let (status, headers, body, truncated, kind, message) = attempt_columns(record);
            row.push_bind(record.id.clone())
                .push_bind(record.delivery_id.clone())
                .push_bind(record.request_id.clone())
                .push_bind(record.source_id)
                .push_bind(record.target_id)
                .push_bind(record.url.clone())
                .push_bind(i64::from(record.attempt))
                .push_bind(record.state.as_str())
                .push_bind(status)
                .push_bind(headers)
                .push_bind(body)
                .push_bind(truncated)
                .push_bind(kind)
                .push_bind(message)
                .push_bind(i64::try_from(record.elapsed.as_micros()).unwrap_or(i64::MAX))
                .push_bind(record.created_at)
                .push_bind(record.next_run_at);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::super::test_fixtures::{attach, request, store_with_targets};
    use super::*;
    use crate::store::model::{AttemptResponse, RetryPolicy};

    async fn store_with_one_delivery() -> (super::super::TestKeep, Store) {
        let (keep, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        assert_eq!(store.ingest(&Arc::new(request())).await.ok(), Some(1));
        (keep, store)
    }

    fn delivered(at: Micros) -> AttemptOutcome {
        AttemptOutcome {
            finished_at: at,
            outcome: Ok(AttemptResponse {
                status_code: 200,
                headers: vec![],
                body: Bytes::new(),
                body_truncated: false,
            }),
            state: AttemptState::Delivered,
            elapsed: Duration::from_millis(1),
            next_run_at: None,
            disable_target: None,
            target_failed: Some(false),
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_claimed_again_and_the_stale_worker_is_fenced_out() {
        let (_dir, store) = store_with_one_delivery().await;
        let worker_a = new_record_id();
        let worker_b = new_record_id();
        let first = store
            .claim_due_deliveries(&worker_a, 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].attempt, 1);
        // Nothing else is due while the lease holds: no delivery has two live leases.
        assert!(
            store
                .claim_due_deliveries(&worker_b, 10, &[])
                .await
                .unwrap_or_default()
                .is_empty()
        );

        // Worker A dies; its lease runs out.
        sqlx::query("UPDATE deliveries SET lease_expires_at = 0")
            .execute(&store.writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let second = store
            .claim_due_deliveries(&worker_b, 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(second.len(), 1, "the expired lease is claimed again");
        assert_eq!(second[0].delivery_id, first[0].delivery_id);
        assert_eq!(second[0].attempt, 2);

        // A's late outcome is refused; B's is recorded, and then it is final.
        let cooldown = Duration::from_secs(1);
        let stale = store
            .finish_attempt(&first[0], delivered(now_micros()), cooldown)
            .await;
        assert!(
            matches!(stale, Ok(None)),
            "a stale worker never overwrites a newer lease"
        );
        let fresh = store
            .finish_attempt(&second[0], delivered(now_micros()), cooldown)
            .await;
        assert!(matches!(fresh, Ok(Some(_))));
        let again = store
            .finish_attempt(&second[0], delivered(now_micros()), cooldown)
            .await;
        assert!(matches!(again, Ok(None)), "terminal states stay terminal");
        assert!(
            store
                .claim_due_deliveries(&worker_a, 10, &[])
                .await
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_stopping_worker_gives_its_leases_back_untried() {
        let (_dir, store) = store_with_one_delivery().await;
        let worker = new_record_id();
        let claimed = store
            .claim_due_deliveries(&worker, 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            store.release_leases(&new_record_id()).await.ok(),
            Some(0),
            "only its own"
        );
        assert_eq!(store.release_leases(&worker).await.ok(), Some(1));
        let again = store
            .claim_due_deliveries(&worker, 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 1, "the given-back attempt did not count");
    }

    /// The next hand-over that carries deliveries (within a second).
    async fn handed_over(
        feed: &mut crate::store::dispatch::DispatchFeed,
    ) -> crate::store::dispatch::Dispatched {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(1), feed.receiver.recv()).await;
            match next {
                Ok(Some(dispatched)) if !dispatched.deliveries.is_empty() => return dispatched,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the writer dropped the hand-over channel"),
                Err(_) => panic!("nothing handed over within a second"),
            }
        }
    }

    /// Whether no deliveries are handed over within 200 ms.
    async fn nothing_more(feed: &mut crate::store::dispatch::DispatchFeed) -> bool {
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => return true,
                next = feed.receiver.recv() => match next {
                    Some(dispatched) if dispatched.deliveries.is_empty() => {}
                    Some(_) => return false,
                    None => return true,
                },
            }
        }
    }

    /// A batch that fails as a whole is written again one write at a time,
    /// with no claim; the webhooks of it that went in are claimed by the
    /// writer's next batch, made for that if nothing else is waiting,
    /// rather than left for the worker's next look at the store.
    #[tokio::test]
    async fn a_batch_written_one_by_one_has_its_deliveries_claimed_after_it() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        let mut feed = attach(&store, &new_record_id(), 8).await;
        let stored = Arc::new(request());
        assert_eq!(store.ingest(&stored).await.ok(), Some(1));
        assert_eq!(handed_over(&mut feed).await.deliveries.len(), 1);

        // The writer's connection held: the next webhook's batch waits for
        // it, and two more queue behind, one of them a request id stored
        // already, which fails their batch as a whole.
        let held = store
            .group_writers_pool()
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ingest = |request: Arc<StoredRequest>| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(&request).await })
        };
        let (first, again, other) = (Arc::new(request()), stored, Arc::new(request()));
        let first_done = ingest(Arc::clone(&first));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again_done = ingest(again);
        let other_done = ingest(Arc::clone(&other));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        let outcome = |done: tokio::task::JoinHandle<Result<u32, StoreError>>| async move {
            done.await.unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(outcome(first_done).await.ok(), Some(1));
        assert!(
            outcome(again_done).await.is_err(),
            "a request id stored already"
        );
        assert_eq!(outcome(other_done).await.ok(), Some(1));

        // No worker looks at the store here: only claims hand over.
        let mut claimed = Vec::new();
        while claimed.len() < 2 {
            claimed.extend(handed_over(&mut feed).await.deliveries);
        }
        let mut ids: Vec<&str> = claimed.iter().map(|d| d.request.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = vec![first.id.as_str(), other.id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(nothing_more(&mut feed).await);
        store.close().await;
    }

    #[tokio::test]
    async fn commits_hand_due_deliveries_to_the_worker_as_far_as_it_has_slots() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        let worker = new_record_id();
        let mut feed = attach(&store, &worker, 2).await;

        // Each webhook's commit claims its delivery while a slot is free,
        // with the body from memory; the third stays pending.
        let mut sent = Vec::new();
        for i in 0..3u8 {
            let mut webhook = request();
            webhook.body = Bytes::from(vec![b'a' + i; 3]);
            let webhook = Arc::new(webhook);
            sent.push(Arc::clone(&webhook));
            assert_eq!(store.ingest(&webhook).await.ok(), Some(1));
        }
        // Handed over right after each commit's answers.
        let mut claimed = Vec::new();
        while claimed.len() < 2 {
            claimed.extend(handed_over(&mut feed).await.deliveries);
        }
        assert!(
            nothing_more(&mut feed).await,
            "two slots, two deliveries handed over"
        );
        assert_eq!(feed.slots.free(), 0);
        for (delivery, webhook) in claimed.iter().zip(&sent) {
            assert_eq!(delivery.request.id, webhook.id);
            assert_eq!(delivery.request.body, webhook.body);
            assert_eq!(delivery.attempt, 1);
            assert!(delivery.lease_token.starts_with(&format!("{worker}.")));
        }
        let waiting = store
            .list_deliveries(&DeliveryFilter::default(), 10)
            .await
            .unwrap_or_default();
        assert_eq!(
            waiting.iter().filter(|d| d.state == "pending").count(),
            1,
            "the third waits in the store"
        );

        // Recording an outcome frees its slot and, in the same commit,
        // claims the waiting delivery (read back from the store).
        let first = claimed.remove(0);
        let record = store
            .finish_attempt(&first, delivered(now_micros()), Duration::from_secs(1))
            .await;
        assert!(matches!(record, Ok(Some(_))));
        let next = handed_over(&mut feed).await;
        assert_eq!(next.deliveries.len(), 1);
        assert_eq!(next.deliveries[0].request.id, sent[2].id);
        assert_eq!(next.deliveries[0].request.body, sent[2].body);
        assert_eq!(feed.slots.free(), 0, "one slot freed, one taken");

        // Detached: commits claim nothing more for it.
        store
            .dispatch_to(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let second = claimed.remove(0);
        let record = store
            .finish_attempt(&second, delivered(now_micros()), Duration::from_secs(1))
            .await;
        assert!(matches!(record, Ok(Some(_))));
        assert_eq!(store.ingest(&Arc::new(request())).await.ok(), Some(1));
        assert!(nothing_more(&mut feed).await);
        assert_eq!(
            feed.slots.free(),
            0,
            "a detached worker's slots are its own business"
        );
    }

    #[tokio::test]
    async fn outcomes_are_recorded_in_bulk_when_every_lease_holds() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        for _ in 0..3 {
            assert_eq!(store.ingest(&Arc::new(request())).await.ok(), Some(1));
        }
        let worker = new_record_id();
        let mut claimed = store
            .claim_due_deliveries(&worker, 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(claimed.len(), 3);
        // One of them is claimed again by another worker once its lease ran out.
        let lost = claimed
            .pop()
            .unwrap_or_else(|| panic!("three were claimed"));
        sqlx::query("UPDATE deliveries SET lease_expires_at = 0 WHERE id = $1")
            .bind(&lost.delivery_id)
            .execute(&store.writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = store
            .claim_due_deliveries(&new_record_id(), 10, &[])
            .await
            .unwrap_or_default();
        assert_eq!(again.len(), 1);

        let mut conn = store
            .writer
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let held: Vec<_> = claimed
            .iter()
            .map(|c| (c, delivered(now_micros())))
            .collect();
        let records = finish_many_in(&mut tx, held)
            .await
            .unwrap_or_else(|e| panic!("every lease held, yet: {e}"));
        assert!(records.iter().all(Option::is_some));
        let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(attempts, 2, "one attempt row per outcome");
        // A lost lease (and one already used) among them: where the ids
        // updated come back, each is None; where only the count does, the
        // batch is refused as a whole, to be written one by one.
        let stale = vec![
            (&claimed[0], delivered(now_micros())),
            (&lost, delivered(now_micros())),
        ];
        let result = finish_many_in(&mut tx, stale).await;
        if q::FINISH_MANY_RETURNS {
            assert!(matches!(result.as_deref(), Ok([None, None])), "{result:?}");
        } else {
            assert!(matches!(result, Err(StoreError::LeaseLost)), "{result:?}");
        }
        tx.rollback().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// `delivery list --state in_flight` and `--state failed`, with or
    /// without a target, read their own state's index (see
    /// SELECT_IN_FLIGHT_DELIVERIES and FAILED_ONLY) and answer as the other states do:
    /// that state's deliveries only, newest first, up to the limit.
    #[tokio::test]
    async fn deliveries_in_flight_or_failed_are_listed_newest_first() {
        let (_dir, store) =
            store_with_targets(&[(RetryPolicy::None, 8), (RetryPolicy::None, 8)]).await;
        for _ in 0..4 {
            assert_eq!(store.ingest(&Arc::new(request())).await.ok(), Some(2));
        }
        let all = store
            .list_deliveries(&DeliveryFilter::default(), 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 8);
        // Newest first: the three newest in flight, the next three failed.
        for (i, delivery) in all.iter().enumerate() {
            let state = match i {
                0..3 => "in_flight",
                3..6 => "failed",
                _ => "delivered",
            };
            sqlx::query("UPDATE deliveries SET state = $1 WHERE id = $2")
                .bind(state)
                .bind(&delivery.id)
                .execute(&store.writer)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let listed = |state: &'static str, target_id: Option<i64>, limit: u32| {
            let store = store.clone();
            async move {
                let filter = DeliveryFilter {
                    state: Some(state.to_owned()),
                    target_id,
                };
                let found = store
                    .list_deliveries(&filter, limit)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(found.iter().all(|d| d.state == state), "{found:?}");
                found.into_iter().map(|d| d.id).collect::<Vec<_>>()
            }
        };
        let ids = |range: std::ops::Range<usize>| -> Vec<String> {
            all[range].iter().map(|d| d.id.clone()).collect()
        };
        assert_eq!(listed("in_flight", None, 10).await, ids(0..3));
        assert_eq!(listed("in_flight", None, 2).await, ids(0..2));
        assert_eq!(listed("failed", None, 10).await, ids(3..6));
        let target = all[3].target_id;
        let of_target: Vec<String> = all[3..6]
            .iter()
            .filter(|d| d.target_id == target)
            .map(|d| d.id.clone())
            .collect();
        assert!(!of_target.is_empty());
        assert_eq!(listed("failed", Some(target), 10).await, of_target);
        assert_eq!(listed("delivered", None, 10).await, ids(6..8));
    }

    /// A webhook whose id is already stored fails alone, whichever batch
    /// it shares: the batch is rolled back as a whole and written again one
    /// write at a time, so every other webhook of it is stored with its
    /// delivery, and nothing of the failed one is left behind.
    #[tokio::test]
    async fn a_failing_write_leaves_nothing_of_itself_and_fails_no_other() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        let first = Arc::new(request());
        assert_eq!(store.ingest(&first).await.ok(), Some(1));
        let again = Arc::new(StoredRequest {
            body: Bytes::from_static(b"{\"again\": true}"),
            ..(*first).clone()
        });
        let others: Vec<Arc<StoredRequest>> = (0..6).map(|_| Arc::new(request())).collect();
        let mut writes: Vec<_> = others.iter().map(|r| store.ingest(r)).collect();
        writes.insert(3, store.ingest(&again));
        let results = futures::future::join_all(writes).await;
        for (i, result) in results.iter().enumerate() {
            if i == 3 {
                assert!(result.is_err(), "the stored id again: {result:?}");
            } else {
                assert_eq!(result.as_ref().ok(), Some(&1), "webhook {i}: {result:?}");
            }
        }
        let stored = store
            .get_request(&first.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the first webhook is gone"));
        assert_eq!(stored.body, first.body, "the first webhook is unchanged");
        let deliveries = store
            .list_deliveries(&DeliveryFilter::default(), 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deliveries.len(), 7, "one delivery per stored webhook");
        assert_eq!(
            deliveries
                .iter()
                .filter(|d| d.request_id == first.id)
                .count(),
            1
        );
        for other in &others {
            assert!(deliveries.iter().any(|d| d.request_id == other.id));
        }
    }

    #[tokio::test]
    async fn a_failing_claim_never_fails_the_webhooks_of_its_batch() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 8)]).await;
        let mut feed = attach(&store, &new_record_id(), 4).await;
        // Routing is read, the first delivery claimed.
        assert_eq!(store.ingest(&Arc::new(request())).await.ok(), Some(1));
        assert_eq!(handed_over(&mut feed).await.deliveries.len(), 1);
        // Then the target's row turns unreadable, behind the gateway's back;
        // claims read it again once their copy is a second old.
        sqlx::query("UPDATE targets SET retry_kind = 'bogus'")
            .execute(&store.writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for _ in 0..3 {
            assert_eq!(
                store.ingest(&Arc::new(request())).await.ok(),
                Some(1),
                "the webhook is stored even though its delivery cannot be claimed"
            );
        }
        assert!(nothing_more(&mut feed).await);
        let pending = store
            .list_deliveries(&DeliveryFilter::default(), 10)
            .await
            .unwrap_or_default();
        assert_eq!(pending.iter().filter(|d| d.state == "pending").count(), 3);

        // Repaired, the next claim after the pause takes them.
        sqlx::query("UPDATE targets SET retry_kind = 'none'")
            .execute(&store.writer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        store.kick();
        let mut claimed = 0;
        while claimed < 3 {
            claimed += handed_over(&mut feed).await.deliveries.len();
        }
    }

    /// The ids of the requests of `deliveries`, in order.
    fn request_ids(deliveries: &[ClaimedDelivery]) -> Vec<&str> {
        deliveries.iter().map(|d| d.request.id.as_str()).collect()
    }

    /// Deliveries that have waited go out before a commit's own: with
    /// room for two at their target, a webhook's commit claims the two
    /// oldest pending deliveries and leaves its own pending; as room comes
    /// back, the rest go out oldest first.
    #[tokio::test]
    async fn deliveries_that_waited_go_out_before_a_commits_own() {
        let (_dir, store) = store_with_targets(&[(RetryPolicy::None, 2)]).await;
        // No free slot: every delivery stays pending.
        let mut feed = attach(&store, &new_record_id(), 0).await;
        let mut waited = Vec::new();
        for _ in 0..3 {
            let webhook = Arc::new(request());
            assert_eq!(store.ingest(&webhook).await.ok(), Some(1));
            waited.push(webhook);
        }
        assert!(nothing_more(&mut feed).await);

        feed.slots.release(8);
        let own = Arc::new(request());
        assert_eq!(store.ingest(&own).await.ok(), Some(1));
        let first = handed_over(&mut feed).await.deliveries;
        assert_eq!(
            request_ids(&first),
            [waited[0].id.as_str(), waited[1].id.as_str()]
        );
        assert!(nothing_more(&mut feed).await, "the target's room is two");

        for delivery in &first {
            let finished = store
                .finish_attempt(delivery, delivered(now_micros()), Duration::from_secs(1))
                .await;
            assert!(matches!(finished, Ok(Some(_))), "{finished:?}");
        }
        let mut rest = Vec::new();
        while rest.len() < 2 {
            rest.extend(handed_over(&mut feed).await.deliveries);
        }
        assert_eq!(request_ids(&rest), [waited[2].id.as_str(), own.id.as_str()]);
        assert!(rest.iter().all(|d| d.attempt == 1));
        assert!(nothing_more(&mut feed).await);
        store.close().await;
    }
}
