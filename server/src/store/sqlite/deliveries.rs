//! The delivery state machine's writes: claim with a lease, then record the
//! outcome fenced on that lease.

use super::Store;
use super::queries as q;
use super::rows::encode_headers;
use crate::store::StoreError;
use crate::store::model::{
    AttemptOutcome, AttemptRecord, AttemptState, ClaimedDelivery, Micros, new_record_id, now_micros,
};

impl Store {
    /// Returns to pending every delivery left in flight by an earlier process.
    /// Only the embedded store may do this at start-up: no other process shares it.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let released = sqlx::query(q::RELEASE_ALL_LEASES)
            .bind(now_micros())
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(released)
    }

    /// Claims up to `limit` due deliveries under a new lease, after returning
    /// expired leases to pending.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn claim_due_deliveries(
        &self,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let now = now_micros();
        let lease_token = new_record_id();
        let mut tx = self.writer.begin().await?;
        sqlx::query(q::EXPIRE_LEASES)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(q::CLAIM_DUE)
            .bind(&lease_token)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;

        let mut claimed = Vec::with_capacity(rows.len());
        for (delivery_id, request_id, target_id, attempt) in rows {
            let request = self.get_request(&request_id).await?;
            let target = self.get_target(target_id).await?;
            let (Some(request), Some(target)) = (request, target) else {
                // Target removed between claim and load: its deliveries are cancelled.
                tracing::warn!(%delivery_id, "claimed delivery lost its request or target");
                continue;
            };
            claimed.push(ClaimedDelivery {
                delivery_id,
                lease_token: lease_token.clone(),
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                request,
                target,
            });
        }
        Ok(claimed)
    }

    /// When the earliest pending delivery is due, if any.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn next_due_at(&self) -> Result<Option<Micros>, StoreError> {
        Ok(sqlx::query_scalar(q::NEXT_DUE_AT)
            .fetch_one(&self.reader)
            .await?)
    }

    /// Records the outcome of a claimed attempt and its log record, in one
    /// transaction. Returns None when the lease was lost (expired and claimed
    /// again, or the target removed): a stale worker never overwrites a newer
    /// outcome.
    ///
    /// # Errors
    /// The store is unavailable; the lease stays and will expire.
    pub async fn finish_attempt(
        &self,
        claimed: &ClaimedDelivery,
        outcome: AttemptOutcome,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        let now = now_micros();
        let delivery_state = match outcome.state {
            AttemptState::Retrying => "pending",
            AttemptState::Delivered => "delivered",
            AttemptState::Failed => "failed",
        };
        let mut tx = self.writer.begin().await?;
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
            tx.rollback().await?;
            return Ok(None);
        }
        let record = AttemptRecord {
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
        };
        let (status, headers, body, truncated, error_kind, error_message) = match &record.outcome {
            Ok(r) => (
                Some(i64::from(r.status_code)),
                Some(encode_headers(&r.headers)),
                Some(r.body.as_ref()),
                r.body_truncated,
                None,
                None,
            ),
            Err(e) => (
                None,
                None,
                None,
                false,
                Some(e.kind.as_str()),
                Some(e.message.as_str()),
            ),
        };
        sqlx::query(q::INSERT_ATTEMPT)
            .bind(&record.id)
            .bind(&record.delivery_id)
            .bind(&record.request_id)
            .bind(record.source_id)
            .bind(record.target_id)
            .bind(&record.url)
            .bind(i64::from(record.attempt))
            .bind(record.state.as_str())
            .bind(status)
            .bind(headers)
            .bind(body)
            .bind(truncated)
            .bind(error_kind)
            .bind(error_message)
            .bind(i64::try_from(record.elapsed.as_micros()).unwrap_or(i64::MAX))
            .bind(record.created_at)
            .bind(record.next_run_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(record))
    }
}
