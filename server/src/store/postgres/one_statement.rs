//! The group writer's plain batches (webhooks and simple attempt outcomes)
//! on PostgreSQL, in one statement that commits by itself.
//!
//! Every statement is a round trip to the server, and under load the
//! writer's batches were mostly waiting for them: BEGIN, the outcomes,
//! their attempt rows, the webhooks, their deliveries, the claim, the
//! requests the claim needs, COMMIT. Here the writes of a batch and its
//! claim are one statement (data-modifying CTEs over arrays, one parameter
//! per column), outside a transaction block, so it commits durably on its
//! own and its writes are acknowledged as soon as it returns. The claim
//! takes the due deliveries first, then gives the room left to the
//! batch's own deliveries, which are written in flight rather than
//! pending: a webhook's delivery row is written once to go out, not
//! written pending and then claimed. A batch of kicks only is a claim on
//! its own, on a connection whose commits do not wait for the disk: a
//! claim lost in a crash leaves its deliveries pending, to be claimed
//! again, and the commit of any later outcome or webhook has flushed it
//! anyway.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::{FromRow, Row};

use super::deliveries::{
    ClaimRow, assemble_claims, attempt_columns, attempt_record, cancel_claimed_in,
    delivery_state_of, expire_leases_in, load_targets, new_lease_token,
};
use super::group::{BatchClaim, Taken};
use super::queries as q;
use super::{DbConn, StoreError};
use crate::store::model::{
    AttemptOutcome, AttemptRecord, ClaimedDelivery, StoredRequest, Target, new_record_id,
    now_micros,
};
use crate::store::rows::{RequestRow, encode_headers};

/// The writes of a plain batch but its deliveries: outcomes fenced on
/// their leases, the attempt rows of those whose lease held, and webhooks.
macro_rules! write_ctes {
    () => {
        "WITH outcomes AS ( \
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
                AS o(id, state, next_run_at, finished_at, lease_token)), \
        finished AS ( \
            UPDATE deliveries AS d SET state = o.state, \
                next_run_at = COALESCE(o.next_run_at, d.next_run_at), lease_token = NULL, \
                lease_expires_at = NULL, updated_at = o.finished_at \
            FROM outcomes o \
            WHERE d.id = o.id AND d.lease_token = o.lease_token AND d.state = 'in_flight' \
            RETURNING d.id, d.target_id), \
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
        fresh AS ( \
            SELECT v.id, v.request_id, v.target_id, v.at, v.n \
            FROM UNNEST($33::text[], $34::text[], $35::bigint[], $36::bigint[]) \
                WITH ORDINALITY AS v(id, request_id, target_id, at, n) \
            WHERE EXISTS (SELECT 1 FROM targets t WHERE t.id = v.target_id)) "
    };
}

/// A plain batch's writes (`write_ctes!()`), its deliveries pending, to
/// targets that still exist. Returns the ids of the deliveries whose
/// outcome was written.
const WRITE_PLAIN: &str = concat!(
    write_ctes!(),
    ", deliveries_written AS ( \
        INSERT INTO deliveries (id, request_id, target_id, state, attempt, next_run_at, \
            created_at, updated_at) \
        SELECT id, request_id, target_id, 'pending', 0, at, at, at FROM fresh) \
    SELECT id FROM finished"
);

/// A plain batch's writes (`write_ctes!()`) with the worker's claim, in
/// one statement: up to $39 deliveries under the lease $37 at the time
/// $38, leaving the targets in $40 alone. The claim takes the due
/// deliveries first, as `CLAIM_DUE` does; each target's room left after
/// them, and what is left of $39, go to the batch's own deliveries, which
/// are written in flight under the same lease (their first attempt) rather
/// than pending, so that none of them is written twice. The others are
/// written pending. Each row returned is an outcome written (`kind`
/// 'finished', its delivery's id only), a delivery claimed ('claimed',
/// with its request's columns as `RequestRow` reads them, NULL if it is
/// gone), or one of the batch's sent at once ('sent').
const WRITE_AND_CLAIM: &str = concat!(
    write_ctes!(),
    // The outcomes written free their slots for the claim: the count of
    // deliveries in flight sees the rows as they were before the statement.
    open_targets!(
        ",",
        "$38",
        "$40",
        "SELECT target_id, SUM(k) AS n FROM ( \
            SELECT target_id, 1 AS k FROM deliveries WHERE state = 'in_flight' \
            UNION ALL SELECT target_id, -1 FROM finished) AS counted \
        GROUP BY target_id"
    ),
    claim_due!("$38", "$39"),
    ", claimed AS (",
    claim_set!("$37", "$38", "$39"),
    "), \
    room_left AS ( \
        SELECT o.id, o.timeout_ms, \
            o.room - (SELECT COUNT(*) FROM claimed c WHERE c.target_id = o.id) AS room \
        FROM open_targets o WHERE o.id IN (SELECT target_id FROM fresh)), \
    ranked AS ( \
        SELECT f.id, f.n, r.timeout_ms, r.room, \
            row_number() OVER (PARTITION BY f.target_id ORDER BY f.n) AS k \
        FROM fresh f JOIN room_left r ON r.id = f.target_id), \
    sent AS ( \
        SELECT id, timeout_ms FROM ranked WHERE k <= room ORDER BY n \
        LIMIT GREATEST($39 - (SELECT COUNT(*) FROM claimed), 0)), \
    deliveries_written AS ( \
        INSERT INTO deliveries (id, request_id, target_id, state, attempt, next_run_at, \
            lease_token, lease_expires_at, created_at, updated_at) \
        SELECT f.id, f.request_id, f.target_id, \
            CASE WHEN s.id IS NULL THEN 'pending' ELSE 'in_flight' END, \
            CASE WHEN s.id IS NULL THEN 0 ELSE 1 END, f.at, \
            CASE WHEN s.id IS NULL THEN NULL ELSE $37 END, \
            CASE WHEN s.id IS NULL THEN NULL ELSE ",
    lease_expires_sql!("$38", "s.timeout_ms"),
    " END, \
            f.at, CASE WHEN s.id IS NULL THEN f.at ELSE $38 END \
        FROM fresh f LEFT JOIN sent s ON s.id = f.id) \
    SELECT 'claimed' AS kind, c.id AS delivery_id, c.request_id AS claimed_request, \
        c.target_id, c.attempt, r.id, r.source_id, so.name AS source_name, r.method, r.path, \
        r.query, r.headers, r.body, r.remote_addr, r.created_at, r.resent_from \
    FROM claimed c \
    LEFT JOIN requests r ON r.id = c.request_id \
    LEFT JOIN sources so ON so.id = r.source_id \
    UNION ALL \
    SELECT 'sent', f.id, f.request_id, f.target_id, 1, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, NULL, NULL, NULL, NULL \
    FROM sent s JOIN fresh f ON f.id = s.id \
    UNION ALL \
    SELECT 'finished', id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
        NULL, NULL, NULL \
    FROM finished"
);

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
    /// they need in the same statement; `targets` gets the targets it reads added. Returns the claimed
    /// deliveries and how many rows the claim took, as `claim_in` does.
    /// The claim commits by itself: if what it took cannot be handed over
    /// (a target cannot be read), it is given back untried.
    pub(super) async fn claim(
        &self,
        worker_id: &str,
        limit: u32,
        skip: &[i64],
        expire: bool,
        targets: &mut HashMap<i64, Arc<Target>>,
    ) -> Result<(Vec<ClaimedDelivery>, usize), StoreError> {
        let mut conn = self.claims.acquire().await?;
        let now = now_micros();
        if expire {
            expire_leases_in(&mut conn, now).await?;
        }
        let lease_token = new_lease_token(worker_id);
        let taken = sqlx::query(q::CLAIM_DUE_WITH_REQUESTS)
            .bind(&lease_token)
            .bind(now)
            .bind(i64::from(limit))
            .bind(super::id_list(skip))
            .fetch_all(&mut *conn)
            .await?;
        if taken.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let count = taken.len();
        let taken = rows_of(&taken)?;
        // A claim on its own follows no write: every request is read.
        let fresh = HashMap::new();
        self.hand_over(&mut conn, taken, &lease_token, &fresh, targets, now)
            .await
            .map(|claimed| (claimed, count))
    }

    /// The deliveries a claim `taken` under `lease_token` at `now` made
    /// ready to send, with their requests (from `fresh` or read with them)
    /// and targets; those whose request or target is gone are cancelled.
    /// If that fails, nothing is handed over: the claim is given back now
    /// rather than when its lease expires.
    pub(super) async fn hand_over(
        &self,
        conn: &mut DbConn,
        taken: Taken,
        lease_token: &str,
        fresh: &HashMap<&str, &Arc<StoredRequest>>,
        targets: &mut HashMap<i64, Arc<Target>>,
        now: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let assembled = async {
            let Taken { rows, loaded } = taken;
            load_targets(&mut *conn, &rows, targets).await?;
            let (claimed, gone) = assemble_claims(rows, lease_token, fresh, loaded, targets);
            cancel_claimed_in(&mut *conn, &gone, lease_token, now).await?;
            Ok::<_, StoreError>(claimed)
        }
        .await;
        if assembled.is_err()
            && let Err(e) = sqlx::query(q::UNCLAIM_ALL)
                .bind(now_micros())
                .bind(lease_token)
                .execute(&mut *conn)
                .await
        {
            tracing::warn!(error = %e, "a claim that failed was not given back; its lease will expire");
        }
        assembled
    }

    /// Writes `ingests` (each webhook with the targets it goes to) and
    /// `finishes` (simple outcomes only) in one statement, committed when
    /// it returns, with `claim` if any (see `WRITE_AND_CLAIM`). Returns
    /// the deliveries made for each webhook, for each outcome its attempt
    /// record (None if its lease was lost), and what the claim took, to
    /// hand over (`hand_over`).
    pub(super) async fn write(
        &self,
        conn: &mut DbConn,
        ingests: &[(&StoredRequest, &[i64])],
        finishes: Vec<(&ClaimedDelivery, AttemptOutcome)>,
        claim: Option<&BatchClaim<'_>>,
    ) -> Result<(Vec<u32>, Vec<Option<AttemptRecord>>, Option<Taken>), StoreError> {
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
        let query = sqlx::query(if claim.is_some() {
            WRITE_AND_CLAIM
        } else {
            WRITE_PLAIN
        })
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
        .bind(webhooks.delivery_at);
        let returned = match claim {
            Some(claim) => query
                .bind(claim.lease_token)
                .bind(claim.now)
                .bind(i64::from(claim.limit))
                .bind(super::id_list(claim.skip)),
            None => query,
        }
        .fetch_all(&mut *conn)
        .await?;
        let mut finished = std::collections::HashSet::new();
        let mut taken = Vec::new();
        for row in returned {
            let id: String = row.try_get(if claim.is_some() { "delivery_id" } else { "id" })?;
            let kind: &str = if claim.is_some() {
                row.try_get("kind")?
            } else {
                "finished"
            };
            if kind == "finished" {
                finished.insert(id);
            } else {
                taken.push(row);
            }
        }
        let records = records
            .into_iter()
            .map(|record| finished.contains(&record.delivery_id).then_some(record))
            .collect();
        let created = ingests
            .iter()
            .map(|(_, targets)| u32::try_from(targets.len()).unwrap_or(u32::MAX))
            .collect();
        let taken = claim.map(|_| rows_of(&taken)).transpose()?;
        Ok((created, records, taken))
    }
}

/// The rows a claim took (see `CLAIM_DUE_WITH_REQUESTS` and
/// `WRITE_AND_CLAIM`): each delivery, and the requests read with them.
fn rows_of(taken: &[sqlx::postgres::PgRow]) -> Result<Taken, StoreError> {
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
    Ok(Taken { rows, loaded })
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
