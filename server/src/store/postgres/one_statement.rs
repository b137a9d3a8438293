//! The group writer's plain batches (webhooks and simple attempt outcomes)
//! on PostgreSQL, in one statement that commits by itself.
//!
//! Every statement is a round trip to the server, and under load the
//! writer's batches were mostly waiting for them: BEGIN, the outcomes,
//! their attempt rows, the webhooks, their deliveries, the claim, the
//! requests the claim needs, COMMIT. Here the writes of a batch are one
//! statement (data-modifying CTEs over arrays, one parameter per column),
//! outside a transaction block, so it commits durably on its own and its
//! writes are acknowledged as soon as it returns. The claim, with the
//! requests it needs, is one statement too, made alongside the next
//! batch's on a connection of its own whose commits do not wait for the
//! disk: a claim lost in a crash leaves its deliveries pending, to be
//! claimed again, and the commit of any later outcome or webhook has
//! flushed it anyway.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::{FromRow, Row};

use super::deliveries::{
    ClaimRow, assemble_claims, attempt_columns, attempt_record, cancel_claimed_in,
    delivery_state_of, expire_leases_in, load_targets, new_lease_token,
};
use super::queries as q;
use super::{DbConn, StoreError};
use crate::store::model::{
    AttemptOutcome, AttemptRecord, ClaimedDelivery, StoredRequest, Target, new_record_id,
    now_micros,
};
use crate::store::rows::{RequestRow, encode_headers};

/// The writes of a plain batch: outcomes fenced on their leases, the
/// attempt rows of those whose lease held, webhooks, and their deliveries
/// to targets that still exist. Returns the ids of the deliveries whose
/// outcome was written.
const WRITE_PLAIN: &str = "WITH outcomes AS ( \
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
            AS o(id, state, next_run_at, finished_at, lease_token)), \
    finished AS ( \
        UPDATE deliveries AS d SET state = o.state, \
            next_run_at = COALESCE(o.next_run_at, d.next_run_at), lease_token = NULL, \
            lease_expires_at = NULL, updated_at = o.finished_at \
        FROM outcomes o \
        WHERE d.id = o.id AND d.lease_token = o.lease_token AND d.state = 'in_flight' \
        RETURNING d.id), \
    attempts_written AS ( \
        INSERT INTO attempts (id, delivery_id, request_id, source_id, target_id, url, attempt, \
            state, status_code, response_headers, response_body, body_truncated, error_kind, \
            error_message, elapsed_us, created_at, next_run_at) \
        SELECT * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], \
            $11::text[], $12::bigint[], $13::text[], $14::bigint[], $15::text[], $16::bytea[], \
            $17::boolean[], $18::text[], $19::text[], $20::bigint[], $21::bigint[], $22::bigint[]) \
            AS a(id, delivery_id, request_id, source_id, target_id, url, attempt, state, \
                status_code, response_headers, response_body, body_truncated, error_kind, \
                error_message, elapsed_us, created_at, next_run_at) \
        WHERE a.delivery_id IN (SELECT id FROM finished)), \
    requests_written AS ( \
        INSERT INTO requests (id, source_id, method, path, query, headers, body, remote_addr, \
            created_at, resent_from) \
        SELECT * FROM UNNEST($23::text[], $24::bigint[], $25::text[], $26::text[], $27::text[], \
            $28::text[], $29::bytea[], $30::text[], $31::bigint[], $32::text[])), \
    deliveries_written AS ( \
        INSERT INTO deliveries (id, request_id, target_id, state, attempt, next_run_at, \
            created_at, updated_at) \
        SELECT v.id, v.request_id, v.target_id, 'pending', 0, v.at, v.at, v.at \
        FROM UNNEST($33::text[], $34::text[], $35::bigint[], $36::bigint[]) \
            AS v(id, request_id, target_id, at) \
        WHERE EXISTS (SELECT 1 FROM targets t WHERE t.id = v.target_id)) \
    SELECT id FROM finished";

/// What the writer needs for plain batches: the connection their claims
/// go through.
#[derive(Debug)]
pub(super) struct OneStatement {
    claims: PgPool,
}

impl OneStatement {
    pub(super) fn new(claims: PgPool) -> Self {
        OneStatement { claims }
    }

    /// Claims up to `limit` due deliveries under a new lease of
    /// `worker_id` (after returning expired leases to pending, if
    /// `expire`), leaving the targets in `skip` alone, with the requests
    /// they need in the same statement (those in `fresh` are not read);
    /// `targets` gets the targets it reads added. Returns the claimed
    /// deliveries and how many rows the claim took, as `claim_in` does.
    /// The claim commits by itself: if what it took cannot be handed over
    /// (a target cannot be read), it is given back untried.
    pub(super) async fn claim(
        &self,
        worker_id: &str,
        limit: u32,
        skip: &[i64],
        expire: bool,
        fresh: &HashMap<&str, &Arc<StoredRequest>>,
        targets: &mut HashMap<i64, Arc<Target>>,
    ) -> Result<(Vec<ClaimedDelivery>, usize), StoreError> {
        let mut conn = self.claims.acquire().await?;
        let now = now_micros();
        if expire {
            expire_leases_in(&mut conn, now).await?;
        }
        let lease_token = new_lease_token(worker_id);
        let in_memory: Vec<&str> = fresh.keys().copied().collect();
        let taken = sqlx::query(q::CLAIM_DUE_WITH_REQUESTS)
            .bind(&lease_token)
            .bind(now)
            .bind(i64::from(limit))
            .bind(super::id_list(skip))
            .bind(in_memory)
            .fetch_all(&mut *conn)
            .await?;
        if taken.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let assembled = assemble(&mut conn, &taken, &lease_token, fresh, targets, now).await;
        if assembled.is_err() {
            // Nothing was handed over: the claim is given back now rather
            // than when its lease expires.
            if let Err(e) = sqlx::query(q::UNCLAIM_ALL)
                .bind(now_micros())
                .bind(&lease_token)
                .execute(&mut *conn)
                .await
            {
                tracing::warn!(error = %e, "a claim that failed was not given back; its lease will expire");
            }
        }
        assembled.map(|claimed| (claimed, taken.len()))
    }

    /// Writes `ingests` (each webhook with the targets it goes to) and
    /// `finishes` (simple outcomes only) in one statement, committed when
    /// it returns. Returns the deliveries made for each webhook and, for
    /// each outcome, its attempt record, or None if its lease was lost.
    pub(super) async fn write(
        &self,
        conn: &mut DbConn,
        ingests: &[(&StoredRequest, &[i64])],
        finishes: Vec<(&ClaimedDelivery, AttemptOutcome)>,
    ) -> Result<(Vec<u32>, Vec<Option<AttemptRecord>>), StoreError> {
        let mut outcome_ids: Vec<&str> = Vec::with_capacity(finishes.len());
        let mut outcome_states: Vec<&str> = Vec::with_capacity(finishes.len());
        let mut outcome_next: Vec<Option<i64>> = Vec::with_capacity(finishes.len());
        let mut outcome_at: Vec<i64> = Vec::with_capacity(finishes.len());
        let mut outcome_leases: Vec<&str> = Vec::with_capacity(finishes.len());
        let mut records = Vec::with_capacity(finishes.len());
        for (claimed, outcome) in finishes {
            outcome_ids.push(&claimed.delivery_id);
            outcome_states.push(delivery_state_of(outcome.state));
            outcome_next.push(outcome.next_run_at);
            outcome_at.push(outcome.finished_at);
            outcome_leases.push(&claimed.lease_token);
            records.push(attempt_record(claimed, outcome));
        }
        let attempts = AttemptColumns::of(&records);
        let webhooks = RequestColumns::of(ingests);
        let finished: Vec<String> = sqlx::query_scalar(WRITE_PLAIN)
            .bind(outcome_ids)
            .bind(outcome_states)
            .bind(outcome_next)
            .bind(outcome_at)
            .bind(outcome_leases)
            .bind(attempts.id)
            .bind(attempts.delivery_id)
            .bind(attempts.request_id)
            .bind(attempts.source_id)
            .bind(attempts.target_id)
            .bind(attempts.url)
            .bind(attempts.attempt)
            .bind(attempts.state)
            .bind(attempts.status_code)
            .bind(attempts.headers)
            .bind(attempts.body)
            .bind(attempts.truncated)
            .bind(attempts.error_kind)
            .bind(attempts.error_message)
            .bind(attempts.elapsed_us)
            .bind(attempts.created_at)
            .bind(attempts.next_run_at)
            .bind(webhooks.id)
            .bind(webhooks.source_id)
            .bind(webhooks.method)
            .bind(webhooks.path)
            .bind(webhooks.query)
            .bind(webhooks.headers)
            .bind(webhooks.body)
            .bind(webhooks.remote_addr)
            .bind(webhooks.created_at)
            .bind(webhooks.resent_from)
            .bind(webhooks.delivery_id)
            .bind(webhooks.delivery_request)
            .bind(webhooks.delivery_target)
            .bind(webhooks.delivery_at)
            .fetch_all(&mut *conn)
            .await?;
        let finished: std::collections::HashSet<String> = finished.into_iter().collect();
        let records = records
            .into_iter()
            .map(|record| finished.contains(&record.delivery_id).then_some(record))
            .collect();
        let created = ingests
            .iter()
            .map(|(_, targets)| u32::try_from(targets.len()).unwrap_or(u32::MAX))
            .collect();
        Ok((created, records))
    }
}

/// The claimed deliveries of the rows `taken` (see
/// `CLAIM_DUE_WITH_REQUESTS`); those whose request or target is gone are
/// cancelled.
async fn assemble(
    conn: &mut DbConn,
    taken: &[sqlx::postgres::PgRow],
    lease_token: &str,
    fresh: &HashMap<&str, &Arc<StoredRequest>>,
    targets: &mut HashMap<i64, Arc<Target>>,
    now: i64,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let mut rows: Vec<ClaimRow> = Vec::with_capacity(taken.len());
    let mut loaded = HashMap::new();
    for row in taken {
        rows.push((
            row.try_get("delivery_id")?,
            row.try_get("claimed_request")?,
            row.try_get("target_id")?,
            row.try_get("attempt")?,
        ));
        let id: Option<String> = row.try_get("id")?;
        if id.is_some_and(|id| !loaded.contains_key(&id)) {
            let request = StoredRequest::try_from(RequestRow::from_row(row)?)?;
            loaded.insert(request.id.clone(), request);
        }
    }
    load_targets(&mut *conn, &rows, targets).await?;
    let (claimed, gone) = assemble_claims(rows, lease_token, fresh, loaded, targets);
    cancel_claimed_in(&mut *conn, &gone, lease_token, now).await?;
    Ok(claimed)
}

/// Attempt rows, column by column.
#[derive(Default)]
struct AttemptColumns<'a> {
    id: Vec<&'a str>,
    delivery_id: Vec<&'a str>,
    request_id: Vec<&'a str>,
    source_id: Vec<i64>,
    target_id: Vec<i64>,
    url: Vec<&'a str>,
    attempt: Vec<i64>,
    state: Vec<&'static str>,
    status_code: Vec<Option<i64>>,
    headers: Vec<Option<String>>,
    body: Vec<Option<Vec<u8>>>,
    truncated: Vec<bool>,
    error_kind: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    elapsed_us: Vec<i64>,
    created_at: Vec<i64>,
    next_run_at: Vec<Option<i64>>,
}

impl<'a> AttemptColumns<'a> {
    fn of(records: &'a [AttemptRecord]) -> Self {
        let mut columns = AttemptColumns::default();
        for record in records {
            let (status, headers, body, truncated, kind, message) = attempt_columns(record);
            columns.id.push(&record.id);
            columns.delivery_id.push(&record.delivery_id);
            columns.request_id.push(&record.request_id);
            columns.source_id.push(record.source_id);
            columns.target_id.push(record.target_id);
            columns.url.push(&record.url);
            columns.attempt.push(i64::from(record.attempt));
            columns.state.push(record.state.as_str());
            columns.status_code.push(status);
            columns.headers.push(headers);
            columns.body.push(body);
            columns.truncated.push(truncated);
            columns.error_kind.push(kind);
            columns.error_message.push(message);
            columns
                .elapsed_us
                .push(i64::try_from(record.elapsed.as_micros()).unwrap_or(i64::MAX));
            columns.created_at.push(record.created_at);
            columns.next_run_at.push(record.next_run_at);
        }
        columns
    }
}

/// Webhooks and their deliveries, column by column.
#[derive(Default)]
struct RequestColumns<'a> {
    id: Vec<&'a str>,
    source_id: Vec<i64>,
    method: Vec<&'a str>,
    path: Vec<&'a str>,
    query: Vec<&'a str>,
    headers: Vec<String>,
    body: Vec<&'a [u8]>,
    remote_addr: Vec<&'a str>,
    created_at: Vec<i64>,
    resent_from: Vec<Option<&'a str>>,
    delivery_id: Vec<String>,
    delivery_request: Vec<&'a str>,
    delivery_target: Vec<i64>,
    delivery_at: Vec<i64>,
}

impl<'a> RequestColumns<'a> {
    fn of(ingests: &[(&'a StoredRequest, &'a [i64])]) -> Self {
        let mut columns = RequestColumns::default();
        for (request, targets) in ingests {
            columns.id.push(&request.id);
            columns.source_id.push(request.source_id);
            columns.method.push(&request.method);
            columns.path.push(&request.path);
            columns.query.push(&request.query);
            columns.headers.push(encode_headers(&request.headers));
            columns.body.push(&request.body[..]);
            columns.remote_addr.push(&request.remote_addr);
            columns.created_at.push(request.created_at);
            columns.resent_from.push(request.resent_from.as_deref());
            for target in *targets {
                columns.delivery_id.push(new_record_id());
                columns.delivery_request.push(&request.id);
                columns.delivery_target.push(*target);
                columns.delivery_at.push(request.created_at);
            }
        }
        columns
    }
}
