//! The durable store: sources, targets, stored requests, deliveries and
//! attempts. Two backends behind the one [`Store`] type: the embedded SQLite
//! file (`sqlite://PATH`) and a PostgreSQL server (`postgres://...`). Both
//! compile the backend-independent code of `shared/` against their own SQL;
//! callers speak the domain types of [`model`].

// Each backend compiles the files of `shared/` as modules of its own, with
// its own `Db`, connection and `queries`: one source, two instantiations.
#![allow(clippy::duplicate_mod)]

/// When a lease taken at `$now` expires, as SQL both stores read: the
/// target's timeout (`$timeout_ms`, 30 s if it is unknown) and a margin of
/// 30 s, in microseconds. Every statement that takes a lease uses it.
macro_rules! lease_expires_sql {
    ($now:literal, $timeout_ms:literal) => {
        concat!(
            $now,
            " + 30000000 + 1000 * COALESCE(",
            $timeout_ms,
            ", 30000)"
        )
    };
}

pub mod dispatch;
pub mod model;
mod postgres;
mod rows;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use model::{
    AttemptOutcome, AttemptRecord, ClaimedDelivery, DeliveryFilter, DeliverySummary, LogFilter,
    LogRecord, Micros, NewSource, NewTarget, Source, StoredRequest, Swept, Target,
};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the operation; the caller
    /// may retry later. Nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A referenced row does not exist (e.g. "source 7").
    #[error("{0} not found")]
    NotFound(String),
    /// A stored value could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A batch of attempt outcomes found a lease gone (expired and claimed
    /// again); the group writer then records them one by one, each fenced
    /// on its own lease. Never reaches a caller.
    #[error("an outcome's lease was lost")]
    LeaseLost,
    /// `DATABASE_URL` names no backend this gateway has.
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Unsupported(String),
}

/// The store, cheap to clone: one of the backends.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

impl Store {
    /// Opens (creating the SQLite file if needed) and migrates the store at
    /// `url`: `sqlite://PATH` or `postgres://...` (`postgresql://` too).
    ///
    /// # Errors
    /// The store cannot be reached or created, a migration fails, or the URL
    /// names another database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(sqlite::Store::open(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(postgres::Store::open(url).await?))
        } else {
            Err(StoreError::Unsupported(url.to_owned()))
        }
    }

    /// Which backend this is, for logs and status: "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Requests by id; those not found are left out.
    ///
    /// # Errors
    /// The store is unavailable or a row is corrupt.
    pub async fn get_requests<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, StoredRequest>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get_requests(ids).await,
            Store::Postgres(s) => s.get_requests(ids).await,
        }
    }

    /// Asks the next write batch to claim due deliveries for the worker.
    pub fn kick(&self) {
        match self {
            Store::Sqlite(s) => s.kick(),
            Store::Postgres(s) => s.kick(),
        }
    }

    /// Closes the store, waiting for running statements.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// Methods that each backend implements with the same signature; their
/// documentation is on the backends' (shared) implementations.
macro_rules! delegate {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// The store is unavailable, or as the backend documents.
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match self {
                        Store::Sqlite(s) => s.$name($($arg),*).await,
                        Store::Postgres(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    /// Checks that the store answers and accepts writes.
    fn ping(&self) -> ();
    /// Creates a source with its credentials.
    fn create_source(&self, new: NewSource) -> Source;
    /// Every source, by id.
    fn list_sources(&self) -> Vec<Source>;
    /// One source.
    fn get_source(&self, id: i64) -> Option<Source>;
    /// Removes a source; false if there was none.
    fn delete_source(&self, id: i64) -> bool;
    /// Creates a target with its routes and delivery settings.
    fn create_target(&self, new: NewTarget) -> Target;
    /// Writes a target's name, URL and settings (and routes if `new_routes`).
    fn update_target(&self, target: &Target, new_routes: bool) -> ();
    /// Re-enables a target and closes its breaker; false if there was none.
    fn enable_target(&self, id: i64) -> bool;
    /// Every target, by id.
    fn list_targets(&self) -> Vec<Target>;
    /// One target.
    fn get_target(&self, id: i64) -> Option<Target>;
    /// How many deliveries to a target are pending or in flight.
    fn unfinished_deliveries(&self, target_id: i64) -> u64;
    /// Removes a target, cancelling its unfinished deliveries.
    fn delete_target(&self, id: i64) -> bool;
    /// The source a webhook is posted to, from the routing snapshot.
    fn ingest_source(&self, id: i64) -> Option<Arc<Source>>;
    /// Commits a received request and a delivery to each routed target.
    fn ingest(&self, request: &Arc<StoredRequest>) -> u32;
    /// One stored request.
    fn get_request(&self, id: &str) -> Option<StoredRequest>;
    /// Stores a copy of a request for all its targets, or only one.
    fn resend(&self, id: &str, only_target: Option<i64>) -> (StoredRequest, u32);
    /// Log records matching a filter, oldest first, the newest `limit`.
    fn list_logs(&self, filter: &LogFilter, limit: u32) -> Vec<LogRecord>;
    /// Returns to pending the deliveries an earlier process left in flight,
    /// where the backend can know that process is gone.
    fn release_all_leases(&self) -> u64;
    /// Gives back, untried, every delivery still leased by a worker.
    fn release_leases(&self, worker_id: &str) -> u64;
    /// Claims due deliveries under a new lease of `worker_id`.
    fn claim_due_deliveries(&self, worker_id: &str, limit: u32, skip: &[i64]) -> Vec<ClaimedDelivery>;
    /// Hands the claims of every write batch to a worker (or to none).
    fn dispatch_to(&self, handle: Option<Arc<dispatch::DispatchHandle>>) -> ();
    /// Gives a claimed delivery back without trying it.
    fn unclaim(&self, claimed: &ClaimedDelivery, next_run_at: Micros) -> ();
    /// When the worker should look for due deliveries again, if ever.
    fn next_due_at(&self, skip: &[i64]) -> Option<Micros>;
    /// Records the outcome of a claimed attempt, fenced on its lease.
    fn finish_attempt(&self, claimed: &ClaimedDelivery, outcome: AttemptOutcome, breaker_cooldown: Duration) -> Option<AttemptRecord>;
    /// Deliveries matching a filter, newest first.
    fn list_deliveries(&self, filter: &DeliveryFilter, limit: u32) -> Vec<DeliverySummary>;
    /// Unfinished deliveries of a target, the soonest due first.
    fn pending_deliveries(&self, target_id: i64, limit: u32) -> Vec<DeliverySummary>;
    /// One delivery and all its attempts.
    fn get_delivery(&self, id: &str) -> Option<(DeliverySummary, Vec<AttemptRecord>)>;
    /// Requests whose delivery to a target failed since a time.
    fn failed_requests(&self, target_id: i64, since: Micros) -> Vec<String>;
    /// Removes one batch of each kind of record older than `cutoff`.
    fn sweep_older_than(&self, cutoff: Micros) -> Swept;
}
