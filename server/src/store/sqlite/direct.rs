//! The group writer's own connection to the SQLite file, driven from the
//! writer's thread.
//!
//! sqlx runs every SQLite statement on a thread of the connection's own:
//! each statement is a message to that thread and an answer back, two
//! thread wake-ups that cost 100-300 us on a busy machine, more than the
//! statements themselves. The writer's hot batches (webhooks, simple
//! attempt outcomes, health probes, and the claims that go with them) run
//! here instead, on a connection the writer calls directly, so a batch
//! costs its statements and its fsync and nothing else. Every other write
//! still goes through sqlx, and the writer holds the sqlx writer pool's one
//! connection while it writes here, so the two never write at once.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::deliveries::{ClaimRow, attempt_columns, attempt_record, delivery_state_of};
use super::group::SendNow;
use super::queries as q;
use crate::store::StoreError;
use crate::store::model::{
    AttemptOutcome, AttemptRecord, ClaimedDelivery, StoredRequest, new_record_id,
};
use crate::store::rows::{RequestRow, encode_headers};

/// Prepared statements kept on the connection: every statement below, with
/// room to spare.
const STATEMENTS: usize = 32;

/// The group writer's connection (see the module's comment).
pub(super) struct Direct {
    conn: Connection,
    /// The claim, returning what it took.
    claim: String,
    /// One attempt row.
    insert_attempt: String,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

/// A SQLite error, as sqlx reports its own (`(code: N) message`), so that
/// both connections' failures read the same in logs and health reports.
#[derive(Debug)]
struct DirectError {
    code: i32,
    message: String,
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for DirectError {}

impl sqlx::error::DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
            _ => 0,
        };
        let message = match &e {
            rusqlite::Error::SqliteFailure(failure, Some(message)) => {
                format!("{message} ({failure})")
            }
            other => other.to_string(),
        };
        StoreError::Unavailable(sqlx::Error::Database(Box::new(DirectError {
            code,
            message,
        })))
    }
}

impl Direct {
    /// Opens the store's file (made and migrated already) with the same
    /// settings as the sqlx writer: WAL, `synchronous=FULL`, foreign keys,
    /// no checkpoint inside a commit.
    pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "the store's journal mode is {mode}, not wal"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        let columns = vec!["?"; 17].join(", ");
        Ok(Direct {
            conn,
            claim: format!(
                "{} RETURNING id, request_id, target_id, attempt",
                q::CLAIM_DUE
            ),
            insert_attempt: format!("{}VALUES ({columns})", q::INSERT_ATTEMPTS_HEAD),
        })
    }

    /// Begins a write transaction, taking the write lock now.
    pub(super) fn begin(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            self.conn.execute_batch(q::BEGIN_WRITE)?;
            return Ok(());
        }
        // A transaction left open (it must not be): end it first.
        self.conn.execute_batch("ROLLBACK")?;
        self.conn.execute_batch(q::BEGIN_WRITE)?;
        Ok(())
    }

    /// Commits; on failure, or with `commit` false, rolls back.
    pub(super) fn end(&mut self, commit: bool) -> Result<(), StoreError> {
        let result = if commit {
            self.conn.execute_batch("COMMIT").map_err(StoreError::from)
        } else {
            Ok(())
        };
        if (!commit || result.is_err()) && !self.conn.is_autocommit() {
            // SQLite may have rolled back already; either way nothing is left.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// A webhook and its deliveries to those of `targets` that still
    /// exist: in flight where `send_now` has room for them (their first
    /// attempt, under its lease), pending otherwise. Returns how many
    /// deliveries were made, and those made in flight, as a claim's rows.
    pub(super) fn ingest(
        &mut self,
        request: &StoredRequest,
        targets: &[i64],
        mut send_now: Option<&mut SendNow>,
    ) -> Result<(u32, Vec<ClaimRow>), StoreError> {
        self.conn
            .prepare_cached(q::INSERT_REQUEST)?
            .execute(params![
                request.id,
                request.source_id,
                request.method,
                request.path,
                request.query,
                encode_headers(&request.headers),
                &request.body[..],
                request.remote_addr,
                request.created_at,
                request.resent_from,
            ])?;
        let mut created = 0;
        let mut sent = Vec::new();
        for &target_id in targets {
            let id = new_record_id();
            let send = match send_now.as_deref_mut() {
                Some(send) if send.has_room(target_id) => Some(send),
                _ => None,
            };
            let made = match send {
                Some(send) => {
                    send.take(target_id);
                    let made = self
                        .conn
                        .prepare_cached(q::INSERT_DELIVERY_IN_FLIGHT_IF_TARGET)?
                        .execute(params![
                            id,
                            request.id,
                            request.created_at,
                            target_id,
                            send.lease_token,
                            send.now
                        ])?;
                    if made == 0 {
                        send.give_back(target_id);
                    } else {
                        sent.push((id, request.id.clone(), target_id, 1));
                    }
                    made
                }
                None => self
                    .conn
                    .prepare_cached(q::INSERT_DELIVERY_IF_TARGET)?
                    .execute(params![id, request.id, request.created_at, target_id])?,
            };
            created += made;
        }
        Ok((u32::try_from(created).unwrap_or(u32::MAX), sent))
    }

    /// Each open target's free in-flight slots now (see `open_targets!`),
    /// leaving the targets in `skip` alone.
    pub(super) fn room(&mut self, skip: &[i64], now: i64) -> Result<HashMap<i64, i64>, StoreError> {
        let mut room = self.conn.prepare_cached(q::OPEN_TARGETS_ROOM)?;
        // ?1 and ?3 are the claim's, not used here.
        let none: Option<i64> = None;
        let rows = room.query_map(params![none, now, none, super::id_list(skip)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An outcome that needs only the delivery's update and the attempt row
    /// (see `is_simple`), fenced on the lease: None if the lease is gone.
    pub(super) fn finish(
        &mut self,
        claimed: &ClaimedDelivery,
        outcome: AttemptOutcome,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        let updated = self
            .conn
            .prepare_cached(q::FINISH_DELIVERY)?
            .execute(params![
                delivery_state_of(outcome.state),
                outcome.next_run_at,
                outcome.finished_at,
                claimed.delivery_id,
                claimed.lease_token,
            ])?;
        if updated == 0 {
            return Ok(None);
        }
        let record = attempt_record(claimed, outcome);
        let (status, headers, body, truncated, kind, message) = attempt_columns(&record);
        self.conn
            .prepare_cached(&self.insert_attempt)?
            .execute(params![
                record.id,
                record.delivery_id,
                record.request_id,
                record.source_id,
                record.target_id,
                record.url,
                i64::from(record.attempt),
                record.state.as_str(),
                status,
                headers,
                body,
                truncated,
                kind,
                message,
                i64::try_from(record.elapsed.as_micros()).unwrap_or(i64::MAX),
                record.created_at,
                record.next_run_at,
            ])?;
        Ok(Some(record))
    }

    /// The health check's durable write.
    pub(super) fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(q::HEALTH_PROBE)?
            .execute([crate::store::model::now_micros()])?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries under `lease_token` (after
    /// returning expired leases to pending, if `expire`), leaving the
    /// targets in `skip` alone, as `claim_in` does.
    pub(super) fn claim(
        &mut self,
        lease_token: &str,
        limit: u32,
        skip: &[i64],
        expire: bool,
        now: i64,
    ) -> Result<Vec<ClaimRow>, StoreError> {
        if expire {
            self.conn.prepare_cached(q::EXPIRE_LEASES)?.execute([now])?;
        }
        let mut claim = self.conn.prepare_cached(&self.claim)?;
        let rows = claim.query_map(
            params![lease_token, now, i64::from(limit), super::id_list(skip)],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stored requests by id (missing ones are left out).
    pub(super) fn requests(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, StoredRequest>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(found);
        }
        let mut select = self.conn.prepare_cached(q::SELECT_REQUEST_IN_ORDER)?;
        for id in ids {
            let row = select
                .query_row([id], |row| {
                    Ok(RequestRow {
                        id: row.get(0)?,
                        source_id: row.get(1)?,
                        source_name: row.get(2)?,
                        method: row.get(3)?,
                        path: row.get(4)?,
                        query: row.get(5)?,
                        headers: row.get(6)?,
                        body: row.get(7)?,
                        remote_addr: row.get(8)?,
                        created_at: row.get(9)?,
                        resent_from: row.get(10)?,
                    })
                })
                .optional()?;
            if let Some(row) = row {
                let request = StoredRequest::try_from(row)?;
                found.insert(request.id.clone(), request);
            }
        }
        Ok(found)
    }

    /// A claimed delivery whose request or target is gone.
    pub(super) fn cancel_claimed(
        &mut self,
        delivery_id: &str,
        lease_token: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(q::CANCEL_CLAIMED)?
            .execute(params![now, delivery_id, lease_token])?;
        Ok(())
    }

    /// The writer's part of WAL upkeep (see `Upkeep`), after a commit.
    pub(super) fn after_commit(&mut self, upkeep: &super::Upkeep) {
        if upkeep.restart_due()
            && let Err(e) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "WAL checkpoint by the writer skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's own connection commits as durably as the sqlx writer:
    /// WAL, fsync at every commit, foreign keys, and no checkpoint inside
    /// a commit.
    #[tokio::test]
    async fn the_writers_connection_commits_durably() {
        let (dir, store) = super::super::test_store().await;
        let direct = Direct::open(&dir.path().join("test.db"), Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let setting = |name: &str| -> String {
            direct
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
                .map(|value| match value {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(text) => text,
                    other => format!("{other:?}"),
                })
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(setting("journal_mode"), "wal");
        assert_eq!(setting("synchronous"), "2", "2 is FULL");
        assert_eq!(setting("foreign_keys"), "1");
        assert_eq!(setting("wal_autocheckpoint"), "0");
        assert_eq!(setting("busy_timeout"), "1000");
        store.close().await;
    }

    /// A store file that is not there is an error, not a new empty store.
    #[test]
    fn a_missing_store_is_not_made_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = Direct::open(&dir.path().join("gone.db"), Duration::from_secs(1));
        assert!(missing.is_err());
        assert!(!dir.path().join("gone.db").exists());
    }
}
