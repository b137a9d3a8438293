//! Every SQL statement of the PostgreSQL backend, next to its migrations.

pub const PING: &str = "SELECT 1";
/// A write transaction (READ COMMITTED; every statement of the writer's
/// batches is fenced or keyed, so no stronger isolation is needed).
pub const BEGIN_WRITE: &str = "BEGIN";
/// The health check's durable write.
pub const HEALTH_PROBE: &str = "INSERT INTO health_probe (id, checked_at) VALUES (1, $1) \
    ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at";

pub const INSERT_SOURCE: &str = "INSERT INTO sources \
    (name, username, password, auth_provider, auth_secret, status_code, content_type, content, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
pub const SELECT_SOURCES: &str = "SELECT * FROM sources ORDER BY id";
pub const SELECT_SOURCE: &str = "SELECT * FROM sources WHERE id = $1";
pub const DELETE_SOURCE: &str = "DELETE FROM sources WHERE id = $1";

/// A new target's row; its name, URL and settings follow with UPDATE_TARGET
/// in the same transaction.
pub const INSERT_TARGET: &str = "INSERT INTO targets \
    (name, url, signing_secret, retry_kind, retry_interval_ms, max_attempts, timeout_ms, created_at) \
    VALUES ('', '', $1, 'none', 0, 1, 0, $2) RETURNING id";
pub const UPDATE_TARGET: &str = "UPDATE targets SET \
    name = $1, url = $2, retry_kind = $3, retry_interval_ms = $4, max_attempts = $5, retry_factor = $6, \
    retry_max_interval_ms = $7, retry_schedule = $8, timeout_ms = $9, follow_redirects = $10, \
    retry_on_4xx = $11, max_in_flight = $12, rate_count = $13, rate_period_ms = $14, break_after = $15 \
    WHERE id = $16";
pub const DELETE_TARGET_SOURCES: &str = "DELETE FROM target_sources WHERE target_id = $1";
/// Re-enables a target and closes its breaker.
pub const ENABLE_TARGET: &str = "UPDATE targets SET disabled_reason = NULL, \
    consecutive_failures = 0, breaker_until = NULL, breaker_opens = 0 WHERE id = $1";
pub const DISABLE_TARGET: &str = "UPDATE targets SET disabled_reason = $1 WHERE id = $2";
pub const UPDATE_BREAKER: &str = "UPDATE targets SET consecutive_failures = $1, \
    breaker_until = $2, breaker_opens = $3 WHERE id = $4";
pub const SELECT_BREAKER: &str = "SELECT consecutive_failures, breaker_until, breaker_opens, break_after FROM targets WHERE id = $1";
pub const SELECT_PENDING_OF_TARGET: &str = "SELECT d.id, d.request_id, d.target_id, \
    t.name AS target_name, d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id \
    WHERE d.target_id = $1 AND d.state IN ('pending', 'in_flight') ORDER BY d.next_run_at, d.id LIMIT $2";
pub const INSERT_TARGET_SOURCE: &str =
    "INSERT INTO target_sources (target_id, source_id) VALUES ($1, $2)";
pub const SOURCE_EXISTS: &str = "SELECT COUNT(*) FROM sources WHERE id = $1";
pub const SELECT_TARGETS: &str = "SELECT * FROM targets ORDER BY id";
pub const SELECT_TARGET: &str = "SELECT * FROM targets WHERE id = $1";
pub const SELECT_TARGET_SOURCES: &str =
    "SELECT source_id FROM target_sources WHERE target_id = $1 ORDER BY source_id";
pub const DELETE_TARGET: &str = "DELETE FROM targets WHERE id = $1";
pub const CANCEL_TARGET_DELIVERIES: &str = "UPDATE deliveries \
    SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, updated_at = $1 \
    WHERE target_id = $2 AND state IN ('pending', 'in_flight')";
pub const COUNT_UNFINISHED_DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries \
    WHERE target_id = $1 AND state IN ('pending', 'in_flight')";

/// Targets that receive from a source: those routed to it and those with no routes.
pub const SELECT_ROUTED_TARGETS: &str = "SELECT t.id FROM targets t \
    WHERE NOT EXISTS (SELECT 1 FROM target_sources r WHERE r.target_id = t.id) \
       OR EXISTS (SELECT 1 FROM target_sources r WHERE r.target_id = t.id AND r.source_id = $1) \
    ORDER BY t.id";
pub const TARGET_EXISTS: &str = "SELECT COUNT(*) FROM targets WHERE id = $1";

pub const INSERT_REQUEST: &str = "INSERT INTO requests \
    (id, source_id, method, path, query, headers, body, remote_addr, created_at, resent_from) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub const SELECT_REQUEST: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE r.id = $1";
/// Requests by id: `$1, $2, ...)` follows.
pub const SELECT_REQUESTS_HEAD: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE r.id IN (";
pub const INSERT_DELIVERY: &str = "INSERT INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6)";

/// A delivery to a target, if the target still exists at commit time.
pub const INSERT_DELIVERY_IF_TARGET: &str = "INSERT INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    SELECT $1, $2, t.id, 'pending', 0, $3, $3, $3 FROM targets t WHERE t.id = $4";

/// Many requests at once: `VALUES (...), (...)` follows.
pub const INSERT_REQUESTS_HEAD: &str = "INSERT INTO requests \
    (id, source_id, method, path, query, headers, body, remote_addr, created_at, resent_from) ";
/// Many deliveries at once, to targets that still exist: `VALUES (id,
/// request_id, target_id, created_at), ...` follows, then the tail.
pub const INSERT_DELIVERIES_HEAD: &str = "INSERT INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    SELECT v.column1, v.column2, v.column3, 'pending', 0, v.column4, v.column4, v.column4 FROM (";
pub const INSERT_DELIVERIES_TAIL: &str =
    ") AS v WHERE EXISTS (SELECT 1 FROM targets t WHERE t.id = v.column3)";

/// Log pages: built by appending `AND ...` filters, then the ORDER/LIMIT tail.
pub const SELECT_REQUEST_LOG: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE 1 = 1";
pub const SELECT_ATTEMPT_LOG: &str = "SELECT a.*, t.name AS target_name FROM attempts a \
    LEFT JOIN targets t ON t.id = a.target_id WHERE 1 = 1";

/// A dead worker's leases: back to pending, to be claimed again.
pub const EXPIRE_LEASES: &str = "UPDATE deliveries \
    SET state = 'pending', lease_token = NULL, lease_expires_at = NULL, updated_at = $1 \
    WHERE state = 'in_flight' AND lease_expires_at <= $1";
/// Targets that may get attempts now, with their free in-flight slots and
/// their timeout: not disabled, breaker closed (or half-open: one probe),
/// not among the ids to skip (`$skip`: rate-limited right now), and not at
/// their in-flight cap. `$with` opens the list of CTEs (`WITH`) or goes on
/// with one (`,`); `$now` is the time; `$in_flight`, if given, counts the
/// deliveries in flight by target (`target_id`, `n`) in place of a plain
/// count.
macro_rules! open_targets {
    ($with:literal, $now:literal, $skip:literal) => {
        open_targets!(
            $with,
            $now,
            $skip,
            "SELECT target_id, COUNT(*) AS n FROM deliveries \
            WHERE state = 'in_flight' GROUP BY target_id"
        )
    };
    ($with:literal, $now:literal, $skip:literal, $in_flight:literal) => {
        concat!(
            $with,
            " in_flight AS (",
            $in_flight,
            "), \
            open_targets AS ( \
                SELECT t.id, t.timeout_ms, \
                    (CASE WHEN t.breaker_until IS NULL THEN t.max_in_flight ELSE 1 END) \
                    - COALESCE(f.n, 0) AS room \
                FROM targets t LEFT JOIN in_flight f ON f.target_id = t.id \
                WHERE t.disabled_reason IS NULL \
                  AND (t.breaker_until IS NULL OR t.breaker_until <= ",
            $now,
            ") AND NOT (t.id = ANY(",
            $skip,
            "))) "
        )
    };
}

/// The due deliveries a claim takes (see CLAIM_DUE), after
/// `open_targets!()`: at most `$limit`, and at most each open target's
/// room, locked, by their row address.
macro_rules! claim_due {
    ($now:literal, $limit:literal) => {
        concat!(
            ", due AS ( \
                SELECT x.ctid AS row_id, x.next_run_at FROM open_targets o \
                CROSS JOIN LATERAL ( \
                    SELECT d.ctid, d.next_run_at FROM deliveries d \
                    WHERE d.target_id = o.id AND d.state = 'pending' AND d.next_run_at <= ",
            $now,
            " ORDER BY d.next_run_at LIMIT LEAST(o.room, ",
            $limit,
            ") FOR UPDATE SKIP LOCKED) x \
                WHERE o.room > 0) "
        )
    };
}

/// The claim's update of the rows `claim_due!()` locked, under the lease
/// `$lease`, returning what it took.
macro_rules! claim_set {
    ($lease:literal, $now:literal, $limit:literal) => {
        concat!(
            "UPDATE deliveries \
            SET state = 'in_flight', attempt = deliveries.attempt + 1, lease_token = ",
            $lease,
            ", updated_at = ",
            $now,
            ", lease_expires_at = ",
            lease_expires_sql!(
                $now,
                "(SELECT timeout_ms FROM targets t WHERE t.id = deliveries.target_id)"
            ),
            " FROM (SELECT row_id FROM due ORDER BY next_run_at LIMIT ",
            $limit,
            ") AS chosen \
            WHERE deliveries.ctid = chosen.row_id AND deliveries.state = 'pending' \
            RETURNING deliveries.id, deliveries.request_id, deliveries.target_id, \
                deliveries.attempt"
        )
    };
}

/// Claims due deliveries: lease token, lease expiry and attempt in one write.
/// The lease lasts the target's timeout plus a margin. Each open target gets
/// at most its free in-flight slots, read through its own index; rows another
/// gateway is claiming right now are skipped, not waited for (SKIP LOCKED),
/// so several gateways can share one database. The update finds the rows
/// it locked by their address (`ctid`, fixed while the lock is held): joined
/// on the id, a planner without statistics on the table walked the pending
/// index again for every row taken.
pub const CLAIM_DUE: &str = concat!(
    open_targets!("WITH", "$2", "$4"),
    claim_due!("$2", "$3"),
    claim_set!("$1", "$2", "$3")
);
/// CLAIM_DUE, and the requests it took deliveries of, in one statement:
/// each row is a delivery (`delivery_id`, `claimed_request`, `target_id`,
/// `attempt`) and its request's columns as `RequestRow` reads them, all
/// NULL for those that are gone.
pub const CLAIM_DUE_WITH_REQUESTS: &str = concat!(
    "WITH claimed AS (",
    open_targets!("WITH", "$2", "$4"),
    claim_due!("$2", "$3"),
    claim_set!("$1", "$2", "$3"),
    ") \
    SELECT c.id AS delivery_id, c.request_id AS claimed_request, c.target_id, c.attempt, r.id, \
        r.source_id, s.name AS source_name, r.method, r.path, r.query, r.headers, r.body, \
        r.remote_addr, r.created_at, r.resent_from \
    FROM claimed c \
    LEFT JOIN requests r ON r.id = c.request_id \
    LEFT JOIN sources s ON s.id = r.source_id"
);
/// Gives back, untried, every delivery of a claim whose deliveries could not
/// be handed over.
pub const UNCLAIM_ALL: &str = "UPDATE deliveries SET state = 'pending', attempt = attempt - 1, \
    lease_token = NULL, lease_expires_at = NULL, updated_at = $1 \
    WHERE lease_token = $2 AND state = 'in_flight'";
/// CLAIM_DUE returns what it took itself.
pub const CLAIMED: Option<&str> = None;
/// When the worker should look again: the earliest pending delivery of a
/// target with a free slot, or the end of a breaker's cool-down. $2 is now
/// and $4 the ids to skip, as in the claim; $1 and $3 are not used.
pub const NEXT_DUE_AT: &str = concat!(
    open_targets!("WITH", "$2", "$4"),
    "SELECT MIN(due) FROM ( \
        SELECT (SELECT MIN(d.next_run_at) FROM deliveries d \
                WHERE d.target_id = o.id AND d.state = 'pending') AS due \
        FROM open_targets o WHERE o.room > 0 AND $1::BIGINT IS NULL AND $3::BIGINT IS NULL \
        UNION ALL \
        SELECT MIN(t.breaker_until) FROM targets t \
        WHERE t.disabled_reason IS NULL AND t.breaker_until > $2 \
          AND EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = t.id AND d.state = 'pending') \
    ) AS due_times"
);
/// A claimed delivery whose target or request is gone.
pub const CANCEL_CLAIMED: &str = "UPDATE deliveries SET state = 'cancelled', lease_token = NULL, \
    lease_expires_at = NULL, updated_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'";
/// Gives a claimed delivery back untried (rate limit): the attempt is not counted.
pub const UNCLAIM: &str = "UPDATE deliveries SET state = 'pending', attempt = attempt - 1, \
    next_run_at = $1, lease_token = NULL, lease_expires_at = NULL, updated_at = $2 \
    WHERE id = $3 AND lease_token = $4 AND state = 'in_flight'";
/// At shutdown: the leases of one worker (the first 32 characters of the
/// token) go back to pending, untried.
pub const RELEASE_LEASE: &str = "UPDATE deliveries SET state = 'pending', attempt = attempt - 1, \
    lease_token = NULL, lease_expires_at = NULL, updated_at = $1 \
    WHERE substr(lease_token, 1, 32) = $2 AND state = 'in_flight'";
/// Records an attempt's outcome, fenced on the lease.
pub const FINISH_DELIVERY: &str = "UPDATE deliveries \
    SET state = $1, next_run_at = COALESCE($2, next_run_at), lease_token = NULL, \
        lease_expires_at = NULL, updated_at = $3 \
    WHERE id = $4 AND lease_token = $5 AND state = 'in_flight'";
/// Many outcomes at once, each fenced on its lease: `VALUES (id, state,
/// next_run_at, now, lease_token), ...` follows, then the tail.
pub const FINISH_MANY_HEAD: &str = "UPDATE deliveries SET state = v.column2, \
    next_run_at = COALESCE(v.column3, deliveries.next_run_at), lease_token = NULL, \
    lease_expires_at = NULL, updated_at = v.column4 FROM (";
pub const FINISH_MANY_TAIL: &str = ") AS v WHERE deliveries.id = v.column1 \
    AND deliveries.lease_token = v.column5 AND deliveries.state = 'in_flight' \
    RETURNING deliveries.id";
/// FINISH_MANY returns the ids it updated (rows arrive in one stream).
pub const FINISH_MANY_RETURNS: bool = true;
/// Many attempt rows: `VALUES (...), ...` follows.
pub const INSERT_ATTEMPTS_HEAD: &str = "INSERT INTO attempts \
    (id, delivery_id, request_id, source_id, target_id, url, attempt, state, status_code, \
     response_headers, response_body, body_truncated, error_kind, error_message, elapsed_us, \
     created_at, next_run_at) ";

pub const SELECT_DELIVERIES: &str = "SELECT d.id, d.request_id, d.target_id, t.name AS target_name, \
    d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id WHERE 1 = 1";
/// Deliveries in flight, newest first: a state that holds few rows of a
/// long history (at most the attempts running), with a partial index.
/// SELECT_DELIVERIES binds the state, which no partial index matches, and
/// the planner walked the primary key backwards to find them (21-29 ms at
/// 200,000 deliveries, growing with the history). This names the state in
/// a subquery that `OFFSET 0` keeps apart, so that it reads the rows in
/// flight through their index, and sorts them. An optional
/// IN_FLIGHT_OF_TARGET and its id follow, then IN_FLIGHT_TAIL and the
/// limit.
pub const SELECT_IN_FLIGHT_DELIVERIES: &str = "SELECT d.id, d.request_id, d.target_id, \
    t.name AS target_name, d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM (SELECT * FROM deliveries WHERE state = 'in_flight'";
pub const IN_FLIGHT_OF_TARGET: &str = " AND target_id = ";
pub const IN_FLIGHT_TAIL: &str =
    " OFFSET 0) d LEFT JOIN targets t ON t.id = d.target_id ORDER BY d.id DESC LIMIT ";
/// SELECT_DELIVERIES' filter for failed deliveries: the state named, not
/// bound, so that `deliveries_failed_by_id` (migration 0004) serves it.
pub const FAILED_ONLY: &str = " AND d.state = 'failed'";
/// SELECT_DELIVERIES' order and limit (the limit follows).
pub const NEWEST_FIRST: &str = " ORDER BY d.id DESC LIMIT ";
pub const SELECT_DELIVERY: &str = "SELECT d.id, d.request_id, d.target_id, t.name AS target_name, \
    d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id WHERE d.id = $1";
/// A delivery's attempts: its request's id, then its own (the request's
/// index finds them; a request has a few attempts per target).
pub const SELECT_ATTEMPTS_OF_DELIVERY: &str = "SELECT a.*, t.name AS target_name FROM attempts a \
    LEFT JOIN targets t ON t.id = a.target_id WHERE a.request_id = $1 AND a.delivery_id = $2 \
    ORDER BY a.id";
/// Requests whose delivery to a target ended failed since a time.
pub const SELECT_FAILED_REQUESTS: &str = "SELECT request_id FROM deliveries \
    WHERE target_id = $1 AND state = 'failed' AND updated_at >= $2 ORDER BY updated_at, id";

/// Retention, one batch each: $1 is the first record id to keep (ids sort
/// by time), $2 the batch size.
pub const SWEEP_ATTEMPTS: &str = "DELETE FROM attempts WHERE id IN ( \
    SELECT a.id FROM attempts a WHERE a.id < $1 AND NOT EXISTS ( \
        SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id AND d.state IN ('pending', 'in_flight')) \
    ORDER BY a.id LIMIT $2)";
pub const SWEEP_DELIVERIES: &str = "DELETE FROM deliveries WHERE id IN ( \
    SELECT id FROM deliveries WHERE id < $1 AND state IN ('delivered', 'failed', 'cancelled') \
    ORDER BY id LIMIT $2)";
pub const SWEEP_REQUESTS: &str = "DELETE FROM requests WHERE id IN ( \
    SELECT r.id FROM requests r WHERE r.id < $1 AND NOT EXISTS ( \
        SELECT 1 FROM deliveries d WHERE d.request_id = r.id) \
    ORDER BY r.id LIMIT $2)";
