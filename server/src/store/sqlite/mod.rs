//! SQLite backend: one writer connection (so writes are serialised, as SQLite
//! requires) and a small pool of readers, in WAL mode with `synchronous=FULL`
//! so a committed request survives power loss.

// The backend-independent parts, written against the aliases below and
// this backend's `queries`.
#[path = "../shared/catalog.rs"]
mod catalog;
#[path = "../shared/deliveries.rs"]
mod deliveries;
mod direct;
#[path = "../shared/group.rs"]
mod group;
#[path = "../shared/health.rs"]
mod health;
mod queries;
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

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;
use super::model::now_micros;

type Db = sqlx::Sqlite;
type DbConn = sqlx::SqliteConnection;
type DbPool = SqlitePool;
use direct::Direct;

/// A list of target ids as one parameter: a JSON array (read with `json_each`).
type IdList = String;

fn id_list(ids: &[i64]) -> IdList {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

/// SQLite writes its plain batches through `Direct`, one statement at a
/// time on the writer's own thread: no round trips to save. (PostgreSQL's
/// `OneStatement` has these methods.)
#[derive(Debug)]
enum OneStatement {}

#[allow(clippy::unused_self, clippy::unused_async)]
impl OneStatement {
    async fn claim(
        &self,
        _worker_id: &str,
        _limit: u32,
        _skip: &[i64],
        _expire: bool,
        _targets: &mut std::collections::HashMap<i64, std::sync::Arc<super::model::Target>>,
    ) -> Result<(Vec<super::model::ClaimedDelivery>, usize), StoreError> {
        match *self {}
    }

    async fn write(
        &self,
        _conn: &mut DbConn,
        _ingests: &[(&super::model::StoredRequest, &[i64])],
        _finishes: Vec<(&super::model::ClaimedDelivery, super::model::AttemptOutcome)>,
        _claim: Option<&group::BatchClaim<'_>>,
    ) -> Result<
        (
            Vec<u32>,
            Vec<Option<super::model::AttemptRecord>>,
            Option<group::Taken>,
        ),
        StoreError,
    > {
        match *self {}
    }

    async fn hand_over(
        &self,
        _conn: &mut DbConn,
        _taken: group::Taken,
        _lease_token: &str,
        _fresh: &std::collections::HashMap<&str, &std::sync::Arc<super::model::StoredRequest>>,
        _targets: &mut std::collections::HashMap<i64, std::sync::Arc<super::model::Target>>,
        _now: i64,
    ) -> Result<Vec<super::model::ClaimedDelivery>, StoreError> {
        match *self {}
    }
}

/// How long a statement waits for a lock held by another connection or
/// process before the store reports itself unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store, cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    group: group::GroupWriter,
    routing: routing::RoutingCache,
    checkpointer: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://PATH`).
    ///
    /// # Errors
    /// The file cannot be opened or created, or a migration fails.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer never checkpoints: a checkpoint inside a commit would
        // stall every acknowledgement waiting on it. A background task does it.
        // A file's connection does not go stale: no test query (one more
        // round trip to the connection's thread) before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let direct = Direct::open(options.get_filename(), BUSY_TIMEOUT)?;
        let upkeep = Upkeep::default();
        tokio::spawn(checkpoint_wal(checkpointer.clone(), upkeep.clone()));
        let routing = routing::RoutingCache::default();
        let group = group::GroupWriter::start(
            writer.clone(),
            Some(direct),
            None,
            upkeep,
            routing.generation(),
        );
        Ok(Store {
            writer,
            reader,
            group,
            routing,
            checkpointer,
        })
    }

    /// Returns to pending every delivery left in flight by an earlier process.
    /// Only the embedded store may do this at start-up: no other process shares it.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let released = sqlx::query(queries::RELEASE_ALL_LEASES)
            .bind(now_micros())
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(released)
    }

    /// Closes both pools, waiting for running statements.
    pub async fn close(&self) {
        self.checkpointer.close().await;
        // Fold the WAL into the database file on a clean stop.
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await;
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// How often the WAL is copied back into the database file. The writer's
/// catch-up checkpoint (see `Upkeep`) copies at most this much of writing,
/// while every webhook waits.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Frames in the WAL past which it should start again from its beginning.
const WAL_RESTART_FRAMES: i64 = 4096;

/// What the group writer does after a commit: when the background
/// checkpoint has found the WAL long, the writer copies the few frames
/// written since (PASSIVE, on its own connection), so that its next
/// transaction starts the WAL again from the beginning. Under steady load
/// the background checkpoint alone never catches up with the writer, and a
/// WAL that only grows makes the file system allocate (and zero) new blocks
/// for every frame.
#[derive(Debug, Clone, Default)]
struct Upkeep {
    restart_wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Upkeep {
    /// Whether the writer should checkpoint now (once per request).
    fn restart_due(&self) -> bool {
        self.restart_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    async fn after_commit(&self, conn: &mut DbConn) {
        if self.restart_due()
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await
        {
            tracing::debug!(error = %e, "WAL checkpoint by the writer skipped");
        }
    }
}

/// Copies committed WAL frames into the database file in the background
/// (PASSIVE: never waits for, nor blocks, the writer), so the WAL stays small
/// without a commit ever paying for a checkpoint; asks the writer to finish
/// the job when the WAL is long. Ends when the pool closes.
async fn checkpoint_wal(pool: SqlitePool, upkeep: Upkeep) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        // (busy, frames in the WAL, frames checkpointed)
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((_, frames, _)) => {
                if frames >= WAL_RESTART_FRAMES {
                    upkeep
                        .restart_wanted
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "WAL checkpoint skipped");
            }
        }
    }
}

/// What keeps a test store alive: its directory.
#[cfg(test)]
type TestKeep = tempfile::TempDir;

/// A fresh store in a new temporary directory.
#[cfg(test)]
async fn test_store() -> (TestKeep, Store) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    (dir, store)
}

/// The pool whose one connection the group writer writes on: a test that
/// holds it holds the writer's next batch back.
#[cfg(test)]
impl Store {
    pub(super) fn group_writers_pool(&self) -> &DbPool {
        &self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of SQLite's plan for `sql` with `binds`.
    async fn query_plan(store: &Store, sql: &str, binds: &[&str]) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        for bind in binds {
            query = query.bind(*bind);
        }
        let plan = query
            .fetch_all(&store.reader)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        plan.into_iter().map(|row| row.3).collect()
    }

    /// `delivery show` reads a delivery's attempts through the request's
    /// index (migration 0009 dropped the delivery's), not by reading every
    /// attempt.
    #[tokio::test]
    async fn a_deliverys_attempts_are_read_through_an_index() {
        let (_dir, store) = test_store().await;
        let plan = query_plan(
            &store,
            queries::SELECT_ATTEMPTS_OF_DELIVERY,
            &["a request", "a delivery"],
        )
        .await;
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX attempts_by_request")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN a")),
            "{plan:?}"
        );
        store.close().await;
    }

    /// `delivery list --state in_flight` and `--state failed` read their
    /// state's partial index, not the whole table in id order.
    #[tokio::test]
    async fn deliveries_in_flight_or_failed_are_listed_through_their_index() {
        let (_dir, store) = test_store().await;
        let list = deliveries::delivery_list_sql_of_state;
        let (in_flight, failed) = (list("in_flight"), list("failed"));
        for (sql, index) in [
            (in_flight, "deliveries_in_flight"),
            (failed, "deliveries_failed_by_id"),
        ] {
            // The limit is the query's one parameter.
            let plan = query_plan(&store, &sql, &["10"]).await;
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("USING INDEX {index}"))),
                "{plan:?}"
            );
            assert!(!plan.iter().any(|step| step == "SCAN d"), "{plan:?}");
        }
        store.close().await;
    }

    /// One target's failed deliveries, newest first, come through the
    /// target's index in its order: it holds the id after the target and
    /// state (as every index of a table without rowid holds the key), so
    /// nothing is sorted and no other target's failures are walked.
    #[tokio::test]
    async fn one_targets_failed_deliveries_are_listed_in_the_order_of_its_index() {
        let (_dir, store) = test_store().await;
        let sql = deliveries::delivery_list_sql_of_target("failed");
        let plan = query_plan(&store, &sql, &["1", "10"]).await;
        assert!(
            plan.iter()
                .any(|step| step
                    .contains("USING INDEX deliveries_by_target (target_id=? AND state=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        store.close().await;
    }

    /// A store made by the migrations before 0007 keeps its requests when
    /// the table moves to rowids.
    #[tokio::test]
    async fn requests_survive_the_move_to_a_rowid_table() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let earlier = dir.path().join("migrations");
        std::fs::create_dir(&earlier).unwrap_or_else(|e| panic!("{e}"));
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut copied = 0;
        for entry in std::fs::read_dir(&all).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(name) = name.filter(|n| n.as_str() < "0007") {
                std::fs::copy(&path, earlier.join(name)).unwrap_or_else(|e| panic!("{e}"));
                copied += 1;
            }
        }
        assert_eq!(copied, 6);
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        {
            let options = SqliteConnectOptions::from_str(&url)
                .unwrap_or_else(|e| panic!("{e}"))
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(options)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sqlx::migrate::Migrator::new(earlier.as_path())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .run(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let without_rowid: String =
                sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'requests'")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            assert!(without_rowid.contains("WITHOUT ROWID"));
            sqlx::query(
                "INSERT INTO requests (id, source_id, method, path, query, headers, body, \
                 remote_addr, created_at) VALUES ('0190a', 7, 'POST', '/7', 'a=1', '[]', \
                 x'7b7d', '127.0.0.1:1', 42)",
            )
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            pool.close().await;
        }

        let store = Store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let request = store
            .get_request("0190a")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the request is gone"));
        assert_eq!(request.source_id, 7);
        assert_eq!(request.query, "a=1");
        assert_eq!(&request.body[..], b"{}");
        assert_eq!(request.created_at, 42);
        let table: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'requests'")
                .fetch_one(&store.reader)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(!table.contains("WITHOUT ROWID"), "{table}");
        store.close().await;
    }

    /// A webhook's commit writes its delivery in flight when its target
    /// and the worker have room: the row is never updated from pending to
    /// in flight (a trigger of the test's own records every change of
    /// state).
    #[tokio::test]
    async fn a_webhooks_delivery_is_written_in_flight_by_the_commit_that_stores_it() {
        let (_dir, store) =
            test_fixtures::store_with_targets(&[(super::super::model::RetryPolicy::None, 8)]).await;
        sqlx::raw_sql(
            "CREATE TABLE state_changes (id TEXT, old TEXT, new TEXT); \
             CREATE TRIGGER record_state_changes AFTER UPDATE OF state ON deliveries \
             BEGIN INSERT INTO state_changes VALUES (new.id, old.state, new.state); END;",
        )
        .execute(&store.writer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let delivery = test_fixtures::one_webhook_handed_over(&store).await;
        let (state, lease): (String, Option<String>) =
            sqlx::query_as("SELECT state, lease_token FROM deliveries WHERE id = ?")
                .bind(&delivery.delivery_id)
                .fetch_one(&store.reader)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state, "in_flight");
        assert_eq!(lease.as_deref(), Some(delivery.lease_token.as_str()));
        let changes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM state_changes")
            .fetch_one(&store.reader)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes, 0, "the delivery was written pending, then claimed");
        store.close().await;
    }
}
