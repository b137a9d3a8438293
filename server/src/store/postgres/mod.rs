//! PostgreSQL backend: a pool of connections to a PostgreSQL server. Ingests
//! and attempt outcomes go through the same group-commit writer as on
//! SQLite (one transaction per batch, acknowledged after COMMIT, which with
//! the server's default `synchronous_commit = on` has reached the server's
//! WAL on disk). Claims lock with `FOR UPDATE SKIP LOCKED`, so gateways can
//! share one database without claiming a delivery twice.

#[path = "../shared/catalog.rs"]
mod catalog;
#[path = "../shared/deliveries.rs"]
mod deliveries;
#[path = "../shared/group.rs"]
mod group;
#[path = "../shared/health.rs"]
mod health;
#[macro_use]
mod queries;
mod one_statement;
#[path = "../shared/requests.rs"]
mod requests;
#[path = "../shared/retention.rs"]
mod retention;
#[path = "../shared/routing.rs"]
mod routing;
#[cfg(test)]
#[path = "../shared/state_machine_tests.rs"]
mod state_machine_tests;
#[cfg(test)]
#[path = "../shared/test_fixtures.rs"]
mod test_fixtures;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;
use one_statement::OneStatement;

type Db = sqlx::Postgres;
type DbConn = sqlx::PgConnection;
type DbPool = PgPool;

/// A list of target ids as one parameter: an array (read with `= ANY`).
type IdList = Vec<i64>;

fn id_list(ids: &[i64]) -> IdList {
    ids.to_vec()
}

/// What the group writer does after a commit: nothing on PostgreSQL (the
/// server checkpoints by itself).
#[derive(Debug, Clone, Copy)]
struct Upkeep;

impl Upkeep {
    async fn after_commit(&self, _conn: &mut DbConn) {}
}

/// PostgreSQL gives the group writer no connection of its own: every
/// statement is a round trip to the server whichever way it is sent, so
/// every batch goes through sqlx. (SQLite's `Direct` has these methods.)
#[derive(Debug)]
enum Direct {}

#[allow(clippy::unused_self)]
impl Direct {
    fn begin(&mut self) -> Result<(), StoreError> {
        match *self {}
    }

    fn end(&mut self, _commit: bool) -> Result<(), StoreError> {
        match *self {}
    }

    fn ingest(
        &mut self,
        _request: &super::model::StoredRequest,
        _targets: &[i64],
        _send_now: Option<&mut group::SendNow>,
    ) -> Result<(u32, Vec<deliveries::ClaimRow>), StoreError> {
        match *self {}
    }

    fn room(
        &mut self,
        _skip: &[i64],
        _now: i64,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        match *self {}
    }

    fn finish(
        &mut self,
        _claimed: &super::model::ClaimedDelivery,
        _outcome: super::model::AttemptOutcome,
    ) -> Result<Option<super::model::AttemptRecord>, StoreError> {
        match *self {}
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        match *self {}
    }

    fn claim(
        &mut self,
        _lease_token: &str,
        _limit: u32,
        _skip: &[i64],
        _expire: bool,
        _now: i64,
    ) -> Result<Vec<deliveries::ClaimRow>, StoreError> {
        match *self {}
    }

    fn requests(
        &mut self,
        _ids: &[&str],
    ) -> Result<std::collections::HashMap<String, super::model::StoredRequest>, StoreError> {
        match *self {}
    }

    fn cancel_claimed(
        &mut self,
        _delivery_id: &str,
        _lease_token: &str,
        _now: i64,
    ) -> Result<(), StoreError> {
        match *self {}
    }

    fn after_commit(&mut self, _upkeep: &Upkeep) {
        match *self {}
    }
}

/// How long a caller waits for a connection before the store reports itself
/// unavailable (the server is down or every connection is busy).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections to the server: the writer's batches, claims, admin reads.
const MAX_CONNECTIONS: u32 = 10;
/// `backend_flush_after` on every connection of the gateway's: 256 kB
/// (32 pages of 8 kB), the value of the server's own
/// `checkpoint_flush_after`.
const BACKEND_FLUSH_AFTER: &str = "256kB";

/// The store, cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    writer: PgPool,
    reader: PgPool,
    /// The group writer's connection (see `open_with`).
    batches: PgPool,
    /// The writer's claims made on their own (a batch of kicks only).
    claims: PgPool,
    group: group::GroupWriter,
    routing: routing::RoutingCache,
}

impl Store {
    /// Connects to and migrates the database at `url` (`postgres://...`).
    ///
    /// # Errors
    /// The server cannot be reached, refuses the login, or a migration fails.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("webhook-server");
        Self::open_with(options).await
    }

    async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        // The gateway's writes fill new pages fast, and the server's own
        // backends write most of them out of its buffers into the kernel's
        // page cache, where they wait for the next checkpoint's fsync. That
        // fsync then took up to 0.4 s, and the commits queued behind it:
        // ack latency p99 at half load of up to 83 ms, over 5 ms in six
        // benchmark runs of nine. Asking the kernel to write them out every
        // 256 kB as they come (the server's own setting for this, off by
        // default) brought the longest file fsync of a checkpoint from
        // 0.06-0.10 s to 0.02-0.03 s (docs/performance.md).
        let options = options.options([("backend_flush_after", BACKEND_FLUSH_AFTER)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // The group writer's batches, on a connection of their own that
        // never plans a bitmap scan. Every claim counts the deliveries in
        // flight through a partial index, and each delivery that has left
        // that state leaves a dead entry there until a vacuum (which may be
        // a minute away, or off). A plain index scan marks each dead entry
        // it passes so that later scans skip it; a bitmap scan, the
        // planner's pick for a count it expects to be small, visits every
        // one of them again at every claim, with their table pages
        // (measured: 3.3 ms for 10 rows in flight behind 7,700 dead entries,
        // against 0.06 ms once an index scan had marked them).
        let batches = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().options([("enable_bitmapscan", "off")]))
            .await?;
        // The writer's claims made on their own (see `one_statement`):
        // their commits need not wait for the disk. No ping first (a
        // broken connection fails the claim, which pauses claims, and is
        // replaced).
        let claims = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(
                options.options([("enable_bitmapscan", "off"), ("synchronous_commit", "off")]),
            )
            .await?;
        let routing = routing::RoutingCache::default();
        let group = group::GroupWriter::start(
            batches.clone(),
            None,
            Some(OneStatement::new(claims.clone())),
            Upkeep,
            routing.generation(),
        );
        Ok(Store {
            writer: pool.clone(),
            reader: pool,
            batches,
            claims,
            group,
            routing,
        })
    }

    /// Releases nothing: other gateways may share this database and hold
    /// leases, so deliveries an earlier process left in flight go back to
    /// pending when their lease expires (the target's timeout plus 30 s).
    ///
    /// # Errors
    /// Never; the signature matches the embedded store's.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Closes the pools, waiting for running statements.
    pub async fn close(&self) {
        self.batches.close().await;
        self.claims.close().await;
        self.writer.close().await;
    }
}

/// What keeps a test store alive (nothing: its schema stays on the server).
#[cfg(test)]
type TestKeep = ();

/// Removes the schemas of test stores made over an hour ago (their names
/// start with a UUIDv7, whose first 12 hex digits are the time in ms), so
/// the test server does not fill up; a running test's schema is younger.
#[cfg(test)]
async fn drop_old_test_schemas(admin: &sqlx::PgPool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'store_test_%'")
            .fetch_all(admin)
            .await
            .unwrap_or_default();
    let hour_ago = super::model::now_micros() / 1000 - 3_600_000;
    for name in names {
        let made = name
            .strip_prefix("store_test_")
            .and_then(|id| id.get(..12))
            .and_then(|ms| i64::from_str_radix(ms, 16).ok());
        if made.is_some_and(|ms| ms < hour_ago) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(admin)
                .await;
        }
    }
}

/// A fresh store in a schema of its own on the test server
/// (`TEST_DATABASE_URL`, by default the local server's `test` database).
#[cfg(test)]
async fn test_store() -> (TestKeep, Store) {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("store_test_{}", super::model::new_record_id());
    let admin = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop_old_test_schemas(&admin).await;
    admin.close().await;
    let options = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{e}"))
        .options([("search_path", schema.as_str())]);
    let store = Store::open_with(options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ((), store)
}

/// The pool whose one connection the group writer writes on: a test that
/// holds it holds the writer's next batch back.
#[cfg(test)]
impl Store {
    pub(super) fn group_writers_pool(&self) -> &DbPool {
        &self.batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a test's own statement on the writer's connection.
    async fn execute(store: &Store, sql: &str) {
        sqlx::query(sql)
            .execute(&store.batches)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The plan of `sql` on a connection of `pool`, with integer
    /// parameters `binds`: its lines, joined.
    async fn query_plan(pool: &PgPool, sql: &str, binds: &[i64]) -> String {
        let explain = format!("EXPLAIN {sql}");
        let mut query = sqlx::query_scalar::<_, String>(&explain);
        for bind in binds {
            query = query.bind(*bind);
        }
        let plan = query
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        plan.join("\n")
    }

    /// A target of the tests' own.
    const INSERT_TARGET: &str = "INSERT INTO targets \
        (name, url, retry_kind, retry_interval_ms, max_attempts, timeout_ms, created_at) \
        VALUES ('t', 'http://127.0.0.1:9/', 'exponential', 1000, 5, 1000, 0)";

    /// A target, and `count` deliveries to it whose state and next run
    /// are `state_and_next_run` (SQL over `n`, 1 to `count`).
    async fn fill_deliveries(store: &Store, state_and_next_run: &str, count: i64) {
        execute(store, INSERT_TARGET).await;
        sqlx::query(&format!(
            "INSERT INTO deliveries (id, request_id, target_id, state, next_run_at, created_at, updated_at) \
             SELECT 'd' || n, 'r' || n, (SELECT MIN(id) FROM targets), {state_and_next_run}, 0, 0 \
             FROM generate_series(1, $1) AS n"
        ))
        .bind(count)
        .execute(&store.batches)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A target, then 2,000 deliveries that went through in flight, of
    /// which one is still there, with the table's statistics.
    async fn one_in_flight_behind_many_delivered(store: &Store) {
        fill_deliveries(store, "'in_flight', 0", 2000).await;
        execute(
            store,
            "UPDATE deliveries SET state = 'delivered' WHERE id <> 'd1'",
        )
        .await;
        execute(store, "ANALYZE deliveries").await;
    }

    /// The group writer's claims never plan a bitmap scan (see
    /// `open_with`), and the in-flight count they make, on a table with
    /// a delivery in flight behind many that have left that state, reads
    /// the partial index with a plain scan.
    #[tokio::test]
    async fn claims_count_in_flight_deliveries_with_a_plain_index_scan() {
        let ((), store) = test_store().await;
        let setting: String = sqlx::query_scalar("SHOW enable_bitmapscan")
            .fetch_one(&store.batches)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(setting, "off");
        one_in_flight_behind_many_delivered(&store).await;
        let plan = query_plan(
            &store.batches,
            "SELECT target_id, COUNT(*) FROM deliveries \
             WHERE state = 'in_flight' GROUP BY target_id",
            &[],
        )
        .await;
        assert!(plan.contains("deliveries_in_flight"), "{plan}");
        assert!(!plan.contains("Bitmap"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        store.close().await;
    }

    /// Expired leases, and a worker's leases at shutdown, are found
    /// through the deliveries in flight (migration 0006 dropped the
    /// lease's own index), not by reading every delivery of the history.
    #[tokio::test]
    async fn leases_are_found_through_the_deliveries_in_flight() {
        let ((), store) = test_store().await;
        one_in_flight_behind_many_delivered(&store).await;
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'deliveries'",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !indexes.iter().any(|i| i == "deliveries_leased"),
            "{indexes:?}"
        );
        let expire = query_plan(&store.batches, queries::EXPIRE_LEASES, &[1_000]).await;
        let release: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {}", queries::RELEASE_LEASE))
                .bind(1_000_i64)
                .bind("worker")
                .fetch_all(&store.batches)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        for plan in [expire, release.join("\n")] {
            assert!(plan.contains("deliveries_in_flight"), "{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
        store.close().await;
    }

    /// Every connection of the gateway's asks the kernel to write out
    /// what its backend writes every 256 kB, so that a checkpoint's fsync
    /// does not find it all still in the page cache.
    #[tokio::test]
    async fn every_connection_writes_out_its_backends_writes_as_they_come() {
        let ((), store) = test_store().await;
        for pool in [&store.reader, &store.writer, &store.batches, &store.claims] {
            let setting: String = sqlx::query_scalar("SHOW backend_flush_after")
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(setting, "256kB");
        }
        store.close().await;
    }

    /// The writer's plain batches commit on a connection that waits for
    /// the server's disk; only the claims that follow them do not.
    #[tokio::test]
    async fn batches_commit_durably_and_only_claims_do_not_wait_for_the_disk() {
        let ((), store) = test_store().await;
        for (pool, expected) in [
            (&store.batches, "on"),
            (&store.writer, "on"),
            (&store.claims, "off"),
        ] {
            let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(setting, expected);
        }
        store.close().await;
    }

    /// A claim updates the rows it locked by their row address, not by a
    /// second walk of the pending index for each of them: on a table the
    /// planner has no statistics for (autovacuum off, or not run yet), a
    /// join on the id chose that walk, and the claim took 0.9 ms instead
    /// of 0.3 with 30 deliveries pending.
    #[tokio::test]
    async fn a_claim_updates_the_rows_it_locked_by_their_address() {
        let ((), store) = test_store().await;
        fill_deliveries(&store, "'pending', n", 300).await;
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", queries::CLAIM_DUE))
            .bind("worker.claim")
            .bind(1_000_i64)
            .bind(64_i64)
            .bind(Vec::<i64>::new())
            .fetch_all(&store.batches)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let plan = plan.join("\n");
        assert!(plan.contains("Tid Scan on deliveries"), "{plan}");
        store.close().await;
    }

    /// `delivery list --state in_flight` and `--state failed` read their
    /// state's partial index: with the state bound as a parameter, the
    /// planner walked the primary key backwards through every delivery.
    #[tokio::test]
    async fn deliveries_in_flight_or_failed_are_listed_through_their_index() {
        let ((), store) = test_store().await;
        fill_deliveries(&store, "'delivered', 0", 2000).await;
        let list = deliveries::delivery_list_sql_of_state;
        let (in_flight, failed) = (list("in_flight"), list("failed"));
        // With no failed delivery either partial index of failed ones will
        // do; which one serves many is checked below.
        for (sql, index) in [
            (in_flight, "deliveries_in_flight"),
            (failed, "deliveries_failed"),
        ] {
            let plan = query_plan(&store.reader, &sql, &[10]).await;
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("deliveries_pkey"), "{plan}");
        }
        store.close().await;
    }

    /// `delivery list --state failed --target-id ID` reads that target's
    /// failed deliveries through their own index, for a target with none
    /// as for one with many; `deliveries_failed_by_id` would walk every
    /// other target's failures first.
    #[tokio::test]
    async fn one_targets_failed_deliveries_are_listed_through_their_index() {
        let ((), store) = test_store().await;
        // A target with 3,000 failed deliveries, then a second with none.
        fill_deliveries(&store, "'failed', 0", 3000).await;
        execute(&store, INSERT_TARGET).await;
        execute(&store, "ANALYZE deliveries").await;
        let targets: Vec<i64> = sqlx::query_scalar("SELECT id FROM targets ORDER BY id")
            .fetch_all(&store.reader)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // All failed deliveries, newest first: in the order of their index.
        let sql = deliveries::delivery_list_sql_of_state("failed");
        let plan = query_plan(&store.reader, &sql, &[10]).await;
        assert!(plan.contains("deliveries_failed_by_id"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
        let sql = deliveries::delivery_list_sql_of_target("failed");
        for target in targets {
            let plan = query_plan(&store.reader, &sql, &[target, 10]).await;
            assert!(plan.contains("deliveries_failed_of_target"), "{plan}");
        }
        store.close().await;
    }

    /// A webhook's commit writes its delivery in flight when its target
    /// and the worker have room, in the statement that stores the webhook:
    /// the delivery's row is never written pending and then claimed (one
    /// more row version, and its index entries).
    #[tokio::test]
    async fn a_webhooks_delivery_is_written_in_flight_by_the_commit_that_stores_it() {
        let (_keep, store) =
            test_fixtures::store_with_targets(&[(super::super::model::RetryPolicy::None, 8)]).await;
        let delivery = test_fixtures::one_webhook_handed_over(&store).await;
        // The row as its first version left it: in flight under the lease
        // handed over, written by the transaction that wrote the webhook.
        let (state, lease, same_transaction): (String, Option<String>, bool) = sqlx::query_as(
            "SELECT d.state, d.lease_token, d.xmin::text = r.xmin::text \
             FROM deliveries d JOIN requests r ON r.id = d.request_id WHERE d.id = $1",
        )
        .bind(&delivery.delivery_id)
        .fetch_one(&store.reader)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state, "in_flight");
        assert_eq!(lease.as_deref(), Some(delivery.lease_token.as_str()));
        assert!(same_transaction);
        store.close().await;
    }

    #[tokio::test]
    async fn deliveries_are_vacuumed_early() {
        let ((), store) = test_store().await;
        let options: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT c.reloptions FROM pg_class c \
             WHERE c.relname = 'deliveries' AND c.relnamespace = current_schema()::regnamespace",
        )
        .fetch_one(&store.reader)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let options = options.unwrap_or_default();
        assert!(
            options.contains(&"autovacuum_vacuum_scale_factor=0.01".to_owned()),
            "{options:?}"
        );
    }
}
