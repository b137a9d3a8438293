//! SQLite backend: one writer connection (so writes are serialised, as SQLite
//! requires) and a small pool of readers, in WAL mode with `synchronous=FULL`
//! so a committed request survives power loss.

mod catalog;
mod deliveries;
mod group;
mod queries;
mod requests;
mod retention;
mod routing;
mod rows;
#[cfg(test)]
mod state_machine_tests;
#[cfg(test)]
mod test_fixtures;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;

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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        tokio::spawn(checkpoint_wal(checkpointer.clone()));
        let group = group::GroupWriter::start(writer.clone());
        Ok(Store {
            writer,
            reader,
            group,
            routing: routing::RoutingCache::default(),
            checkpointer,
        })
    }

    /// Checks that the store answers and accepts writes.
    ///
    /// # Errors
    /// The store is unreachable, locked or read-only.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(queries::PING).execute(&self.reader).await?;
        // A real write through the writer: a lock taken by another process
        // or a full disk shows here, where a read would still pass...
        self.group.probe().await?;
        // ...except a nearly full disk, which still takes this small write
        // while webhooks fail: their own recent failure is the evidence.
        if let Some(failure) = self.group.recent_failure(RECENT_FAILURE) {
            return Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
                "the last write failed: {failure}"
            ))));
        }
        Ok(())
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

/// How long a failed write marks the store unhealthy, unless a write
/// succeeds since.
const RECENT_FAILURE: Duration = Duration::from_secs(10);

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies committed WAL frames into the database file in the background
/// (PASSIVE: never waits for, nor blocks, the writer), so the WAL stays small
/// without a commit ever paying for a checkpoint. Ends when the pool closes.
async fn checkpoint_wal(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}
