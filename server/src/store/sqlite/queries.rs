//! Every SQL statement of the SQLite backend, next to its migrations.
//!
//! The group writer's inserts and updates that may write several rows say
//! `OR FAIL`. With SQLite's default (`ABORT`), such a statement inside a
//! transaction first copies every page it changes that the transaction had
//! already changed into a statement journal, so that a failure could undo
//! the statement alone; a webhook's delivery (`INSERT ... SELECT`) did
//! that at every ingest. The writer never goes on after a failed
//! statement: it rolls the whole batch back and writes each write again
//! on its own, so undoing one statement alone is never needed.

pub const PING: &str = "SELECT 1";
/// A write transaction that takes the write lock at once, so a locked store
/// fails here rather than at the first write.
pub const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// The health check's durable write.
pub const HEALTH_PROBE: &str = "INSERT INTO health_probe (id, checked_at) VALUES (1, ?) \
    ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at";

pub const INSERT_SOURCE: &str = "INSERT INTO sources \
    (name, username, password, auth_provider, auth_secret, status_code, content_type, content, created_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id";
pub const SELECT_SOURCES: &str = "SELECT * FROM sources ORDER BY id";
pub const SELECT_SOURCE: &str = "SELECT * FROM sources WHERE id = ?";
pub const DELETE_SOURCE: &str = "DELETE FROM sources WHERE id = ?";

/// A new target's row; its name, URL and settings follow with UPDATE_TARGET
/// in the same transaction.
pub const INSERT_TARGET: &str = "INSERT INTO targets \
    (name, url, signing_secret, retry_kind, retry_interval_ms, max_attempts, timeout_ms, created_at) \
    VALUES ('', '', ?, 'none', 0, 1, 0, ?) RETURNING id";
pub const UPDATE_TARGET: &str = "UPDATE targets SET \
    name = ?, url = ?, retry_kind = ?, retry_interval_ms = ?, max_attempts = ?, retry_factor = ?, \
    retry_max_interval_ms = ?, retry_schedule = ?, timeout_ms = ?, follow_redirects = ?, \
    retry_on_4xx = ?, max_in_flight = ?, rate_count = ?, rate_period_ms = ?, break_after = ? \
    WHERE id = ?";
pub const DELETE_TARGET_SOURCES: &str = "DELETE FROM target_sources WHERE target_id = ?";
/// Re-enables a target and closes its breaker.
pub const ENABLE_TARGET: &str = "UPDATE targets SET disabled_reason = NULL, \
    consecutive_failures = 0, breaker_until = NULL, breaker_opens = 0 WHERE id = ?";
pub const DISABLE_TARGET: &str = "UPDATE targets SET disabled_reason = ? WHERE id = ?";
pub const UPDATE_BREAKER: &str = "UPDATE targets SET consecutive_failures = ?, \
    breaker_until = ?, breaker_opens = ? WHERE id = ?";
pub const SELECT_BREAKER: &str = "SELECT consecutive_failures, breaker_until, breaker_opens, break_after FROM targets WHERE id = ?";
pub const SELECT_PENDING_OF_TARGET: &str = "SELECT d.id, d.request_id, d.target_id, \
    t.name AS target_name, d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id \
    WHERE d.target_id = ? AND d.state IN ('pending', 'in_flight') ORDER BY d.next_run_at, d.id LIMIT ?";
pub const INSERT_TARGET_SOURCE: &str =
    "INSERT INTO target_sources (target_id, source_id) VALUES (?, ?)";
pub const SOURCE_EXISTS: &str = "SELECT COUNT(*) FROM sources WHERE id = ?";
pub const SELECT_TARGETS: &str = "SELECT * FROM targets ORDER BY id";
pub const SELECT_TARGET: &str = "SELECT * FROM targets WHERE id = ?";
pub const SELECT_TARGET_SOURCES: &str =
    "SELECT source_id FROM target_sources WHERE target_id = ? ORDER BY source_id";
pub const DELETE_TARGET: &str = "DELETE FROM targets WHERE id = ?";
pub const CANCEL_TARGET_DELIVERIES: &str = "UPDATE deliveries \
    SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, updated_at = ? \
    WHERE target_id = ? AND state IN ('pending', 'in_flight')";
pub const COUNT_UNFINISHED_DELIVERIES: &str = "SELECT COUNT(*) FROM deliveries \
    WHERE target_id = ? AND state IN ('pending', 'in_flight')";

/// Targets that receive from a source: those routed to it and those with no routes.
pub const SELECT_ROUTED_TARGETS: &str = "SELECT t.id FROM targets t \
    WHERE NOT EXISTS (SELECT 1 FROM target_sources r WHERE r.target_id = t.id) \
       OR EXISTS (SELECT 1 FROM target_sources r WHERE r.target_id = t.id AND r.source_id = ?) \
    ORDER BY t.id";
pub const TARGET_EXISTS: &str = "SELECT COUNT(*) FROM targets WHERE id = ?";

pub const INSERT_REQUEST: &str = "INSERT INTO requests \
    (id, source_id, method, path, query, headers, body, remote_addr, created_at, resent_from) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub const SELECT_REQUEST: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE r.id = ?";
/// A request by id, its columns in this order (read by position).
pub const SELECT_REQUEST_IN_ORDER: &str = "SELECT r.id, r.source_id, s.name, r.method, r.path, \
    r.query, r.headers, r.body, r.remote_addr, r.created_at, r.resent_from FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE r.id = ?";
/// Requests by id: `?, ?, ...)` follows.
pub const SELECT_REQUESTS_HEAD: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE r.id IN (";
pub const INSERT_DELIVERY: &str = "INSERT INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)";

/// A delivery to a target, if the target still exists at commit time.
pub const INSERT_DELIVERY_IF_TARGET: &str = "INSERT OR FAIL INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    SELECT ?1, ?2, t.id, 'pending', 0, ?3, ?3, ?3 FROM targets t WHERE t.id = ?4";
/// A delivery to a target, if the target still exists at commit time,
/// in flight under the lease ?5 from the time ?6 (its first attempt; the
/// lease lasts as a claim's does).
pub const INSERT_DELIVERY_IN_FLIGHT_IF_TARGET: &str = concat!(
    "INSERT OR FAIL INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, lease_token, lease_expires_at, \
     created_at, updated_at) \
    SELECT ?1, ?2, t.id, 'in_flight', 1, ?3, ?5, ",
    lease_expires_sql!("?6", "t.timeout_ms"),
    ", ?3, ?6 FROM targets t WHERE t.id = ?4"
);

/// Many requests at once: `VALUES (...), (...)` follows.
pub const INSERT_REQUESTS_HEAD: &str = "INSERT OR FAIL INTO requests \
    (id, source_id, method, path, query, headers, body, remote_addr, created_at, resent_from) ";
/// Many deliveries at once, to targets that still exist: `VALUES (id,
/// request_id, target_id, created_at), ...` follows, then the tail.
pub const INSERT_DELIVERIES_HEAD: &str = "INSERT OR FAIL INTO deliveries \
    (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
    SELECT v.column1, v.column2, v.column3, 'pending', 0, v.column4, v.column4, v.column4 FROM (";
pub const INSERT_DELIVERIES_TAIL: &str =
    ") AS v WHERE EXISTS (SELECT 1 FROM targets t WHERE t.id = v.column3)";

/// Log pages: built by appending `AND ...` filters, then the ORDER/LIMIT tail.
pub const SELECT_REQUEST_LOG: &str = "SELECT r.*, s.name AS source_name FROM requests r \
    LEFT JOIN sources s ON s.id = r.source_id WHERE 1 = 1";
pub const SELECT_ATTEMPT_LOG: &str = "SELECT a.*, t.name AS target_name FROM attempts a \
    LEFT JOIN targets t ON t.id = a.target_id WHERE 1 = 1";

/// A dead worker's leases: back to pending, to be claimed again. Leases
/// are found through the in-flight index (only what is in flight).
pub const EXPIRE_LEASES: &str = "UPDATE deliveries INDEXED BY deliveries_in_flight \
    SET state = 'pending', lease_token = NULL, lease_expires_at = NULL, updated_at = ?1 \
    WHERE state = 'in_flight' AND lease_expires_at <= ?1";
/// At start-up on the embedded store no other process can hold a lease.
pub const RELEASE_ALL_LEASES: &str = "UPDATE deliveries INDEXED BY deliveries_in_flight \
    SET state = 'pending', lease_token = NULL, lease_expires_at = NULL, updated_at = ?1 \
    WHERE state = 'in_flight'";
/// Targets that may get attempts now, with their free in-flight slots: not
/// disabled, breaker closed (or half-open: one probe), not in the JSON array
/// of ids to skip (?4: rate-limited right now), and not at their in-flight cap.
/// Filtering targets first keeps a long queue for a stuck target out of the
/// claim's way.
macro_rules! open_targets {
    () => {
        "WITH in_flight AS ( \
            SELECT target_id, COUNT(*) AS n FROM deliveries INDEXED BY deliveries_in_flight \
            WHERE state = 'in_flight' GROUP BY target_id), \
        open_targets AS ( \
            SELECT t.id, (CASE WHEN t.breaker_until IS NULL THEN t.max_in_flight ELSE 1 END) \
                - COALESCE(f.n, 0) AS room \
            FROM targets t LEFT JOIN in_flight f ON f.target_id = t.id \
            WHERE t.disabled_reason IS NULL AND (t.breaker_until IS NULL OR t.breaker_until <= ?2) \
              AND t.id NOT IN (SELECT value FROM json_each(?4))) "
    };
}

/// Claims due deliveries: lease token, lease expiry and attempt in one write.
/// The lease lasts the target's timeout plus a margin. Each target gets at
/// most its free in-flight slots, so a slow target can't take every slot.
/// Each open target's due deliveries are read through its own index, at most
/// a batch of them and no more than the largest room of an open target, so
/// neither a full target's queue, nor a long backlog, nor a worker with
/// many free slots makes every claim slower.
pub const CLAIM_DUE: &str = concat!(
    open_targets!(),
    ", due AS ( \
        SELECT d.id, d.target_id, d.next_run_at, o.room FROM open_targets o \
        JOIN deliveries d ON d.id IN ( \
            SELECT x.id FROM deliveries x INDEXED BY deliveries_by_target_due \
            WHERE x.target_id = o.id AND x.state = 'pending' AND x.next_run_at <= ?2 \
            ORDER BY x.next_run_at LIMIT (SELECT MIN(?3, MAX(room)) FROM open_targets)) \
        WHERE o.room > 0), \
    ranked AS ( \
        SELECT id, next_run_at, room, \
            ROW_NUMBER() OVER (PARTITION BY target_id ORDER BY next_run_at, id) AS rank \
        FROM due) \
    UPDATE deliveries \
    SET state = 'in_flight', attempt = attempt + 1, lease_token = ?1, updated_at = ?2, \
        lease_expires_at = ",
    lease_expires_sql!(
        "?2",
        "(SELECT timeout_ms FROM targets t WHERE t.id = deliveries.target_id)"
    ),
    " WHERE id IN (SELECT id FROM ranked WHERE rank <= room ORDER BY next_run_at LIMIT ?3)"
);
/// Each open target's free in-flight slots (see `open_targets!`): ?2 is
/// now and ?4 the ids to skip, as in the claim; ?1 and ?3 are not used.
pub const OPEN_TARGETS_ROOM: &str = concat!(
    open_targets!(),
    "SELECT id, room FROM open_targets WHERE room > 0"
);
/// What a claim took, as one row (a JSON array of `[id, request_id,
/// target_id, attempt]`): RETURNING would hand each row over from the
/// connection's thread on its own. ?1 is the claim's lease token.
pub const CLAIMED: Option<&str> = Some(
    "SELECT json_group_array(json_array(id, request_id, target_id, attempt)) \
    FROM deliveries INDEXED BY deliveries_in_flight \
    WHERE state = 'in_flight' AND lease_token = ?1",
);
/// When the worker should look again: the earliest pending delivery of a
/// target with a free slot, or the end of a breaker's cool-down. Targets at
/// their cap wake the worker when an attempt ends. ?2 is now and ?4 the ids
/// to skip, as in the claim; ?1 and ?3 are not used.
pub const NEXT_DUE_AT: &str = concat!(
    open_targets!(),
    "SELECT MIN(due) FROM ( \
        SELECT (SELECT MIN(d.next_run_at) FROM deliveries d \
                WHERE d.target_id = o.id AND d.state = 'pending') AS due \
        FROM open_targets o WHERE o.room > 0 \
        UNION ALL \
        SELECT MIN(t.breaker_until) FROM targets t \
        WHERE t.disabled_reason IS NULL AND t.breaker_until > ?2 \
          AND EXISTS (SELECT 1 FROM deliveries d WHERE d.target_id = t.id AND d.state = 'pending'))"
);
/// A claimed delivery whose target or request is gone.
pub const CANCEL_CLAIMED: &str = "UPDATE deliveries SET state = 'cancelled', lease_token = NULL, \
    lease_expires_at = NULL, updated_at = ? WHERE id = ? AND lease_token = ? AND state = 'in_flight'";
/// Gives a claimed delivery back untried (rate limit): the attempt is not counted.
pub const UNCLAIM: &str = "UPDATE deliveries SET state = 'pending', attempt = attempt - 1, \
    next_run_at = ?, lease_token = NULL, lease_expires_at = NULL, updated_at = ? \
    WHERE id = ? AND lease_token = ? AND state = 'in_flight'";
/// At shutdown: the leases of one worker (the first 32 characters of the
/// token) go back to pending, untried.
pub const RELEASE_LEASE: &str = "UPDATE deliveries INDEXED BY deliveries_in_flight \
    SET state = 'pending', attempt = attempt - 1, \
    lease_token = NULL, lease_expires_at = NULL, updated_at = ?1 \
    WHERE substr(lease_token, 1, 32) = ?2 AND state = 'in_flight'";
/// Records an attempt's outcome, fenced on the lease.
pub const FINISH_DELIVERY: &str = "UPDATE deliveries \
    SET state = ?, next_run_at = COALESCE(?, next_run_at), lease_token = NULL, \
        lease_expires_at = NULL, updated_at = ? \
    WHERE id = ? AND lease_token = ? AND state = 'in_flight'";
/// Many outcomes at once, each fenced on its lease: `VALUES (id, state,
/// next_run_at, now, lease_token), ...` follows, then the tail.
pub const FINISH_MANY_HEAD: &str = "UPDATE OR FAIL deliveries SET state = v.column2, \
    next_run_at = COALESCE(v.column3, deliveries.next_run_at), lease_token = NULL, \
    lease_expires_at = NULL, updated_at = v.column4 FROM (";
pub const FINISH_MANY_TAIL: &str = ") AS v WHERE deliveries.id = v.column1 \
    AND deliveries.lease_token = v.column5 AND deliveries.state = 'in_flight'";
/// Whether FINISH_MANY returns the ids it updated; without, the count of
/// rows updated tells whether every lease held (each returned row would
/// come over from the connection's thread on its own).
pub const FINISH_MANY_RETURNS: bool = false;
/// Many attempt rows: `VALUES (...), ...` follows.
pub const INSERT_ATTEMPTS_HEAD: &str = "INSERT OR FAIL INTO attempts \
    (id, delivery_id, request_id, source_id, target_id, url, attempt, state, status_code, \
     response_headers, response_body, body_truncated, error_kind, error_message, elapsed_us, \
     created_at, next_run_at) ";

pub const SELECT_DELIVERIES: &str = "SELECT d.id, d.request_id, d.target_id, t.name AS target_name, \
    d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id WHERE 1 = 1";
/// Deliveries in flight, newest first: a state that holds few rows of a
/// long history (at most the attempts running), with a partial index.
/// SELECT_DELIVERIES binds the state, which no partial index matches, and
/// walked the whole table newest first to find them (12 ms at 200,000
/// deliveries, growing with the history). This names the state, and `+d.id`
/// keeps the planner from reading the table in id order: the rows in
/// flight are read through their index and sorted. An optional
/// IN_FLIGHT_OF_TARGET and its id follow, then IN_FLIGHT_TAIL and the
/// limit.
pub const SELECT_IN_FLIGHT_DELIVERIES: &str = "SELECT d.id, d.request_id, d.target_id, \
    t.name AS target_name, d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id WHERE d.state = 'in_flight'";
pub const IN_FLIGHT_OF_TARGET: &str = " AND d.target_id = ";
pub const IN_FLIGHT_TAIL: &str = " ORDER BY +d.id DESC LIMIT ";
/// SELECT_DELIVERIES' filter for failed deliveries: the state named, not
/// bound, so that `deliveries_failed_by_id` (migration 0010) serves it.
pub const FAILED_ONLY: &str = " AND d.state = 'failed'";
/// SELECT_DELIVERIES' order and limit (the limit follows).
pub const NEWEST_FIRST: &str = " ORDER BY d.id DESC LIMIT ";
pub const SELECT_DELIVERY: &str = "SELECT d.id, d.request_id, d.target_id, t.name AS target_name, \
    d.state, d.attempt, d.next_run_at, d.created_at, d.updated_at \
    FROM deliveries d LEFT JOIN targets t ON t.id = d.target_id WHERE d.id = ?";
/// A delivery's attempts: its request's id, then its own (the request's
/// index finds them; a request has a few attempts per target).
pub const SELECT_ATTEMPTS_OF_DELIVERY: &str = "SELECT a.*, t.name AS target_name FROM attempts a \
    LEFT JOIN targets t ON t.id = a.target_id WHERE a.request_id = ? AND a.delivery_id = ? \
    ORDER BY a.id";
/// Requests whose delivery to a target ended failed since a time.
pub const SELECT_FAILED_REQUESTS: &str = "SELECT request_id FROM deliveries \
    WHERE target_id = ? AND state = 'failed' AND updated_at >= ? ORDER BY updated_at, id";

/// Retention, one batch each: ?1 is the first record id to keep (ids sort
/// by time), ?2 the batch size.
pub const SWEEP_ATTEMPTS: &str = "DELETE FROM attempts WHERE id IN ( \
    SELECT a.id FROM attempts a WHERE a.id < ?1 AND NOT EXISTS ( \
        SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id AND d.state IN ('pending', 'in_flight')) \
    ORDER BY a.id LIMIT ?2)";
pub const SWEEP_DELIVERIES: &str = "DELETE FROM deliveries WHERE id IN ( \
    SELECT id FROM deliveries WHERE id < ?1 AND state IN ('delivered', 'failed', 'cancelled') \
    ORDER BY id LIMIT ?2)";
pub const SWEEP_REQUESTS: &str = "DELETE FROM requests WHERE id IN ( \
    SELECT r.id FROM requests r WHERE r.id < ?1 AND NOT EXISTS ( \
        SELECT 1 FROM deliveries d WHERE d.request_id = r.id) \
    ORDER BY r.id LIMIT ?2)";
