//! Retention: removing old requests, deliveries and attempts in small
//! batches, so the store does not grow without bound and ingest is never
//! blocked for long. Nothing unfinished is removed.

use super::queries as q;
use super::{DbConn, Store};
use crate::store::StoreError;
use crate::store::model::{Micros, Swept};

/// Rows removed per statement.
pub const RETENTION_BATCH: i64 = 500;

/// The smallest record id created at or after `at`: ids are UUIDv7, whose
/// first 48 bits are the unix time in milliseconds.
fn first_id_at(at: Micros) -> String {
    let millis = u64::try_from(at.max(0) / 1000).unwrap_or(0) & 0xffff_ffff_ffff;
    format!("{millis:012x}{}", "0".repeat(20))
}

/// One batch of each kind, in one transaction: (attempts, deliveries,
/// requests) removed.
async fn sweep_in(conn: &mut DbConn, before: &str) -> Result<(u64, u64, u64), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut removed = [0u64; 3];
    for (i, sql) in [q::SWEEP_ATTEMPTS, q::SWEEP_DELIVERIES, q::SWEEP_REQUESTS]
        .into_iter()
        .enumerate()
    {
        removed[i] = sqlx::query(sql)
            .bind(before)
            .bind(RETENTION_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok((removed[0], removed[1], removed[2]))
}

impl Store {
    /// Removes one batch of each kind of record older than `cutoff`:
    /// attempts and deliveries that are finished, then requests with no
    /// delivery left. Call again while it removes anything.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn sweep_older_than(&self, cutoff: Micros) -> Result<Swept, StoreError> {
        let before = first_id_at(cutoff);
        let (attempts, deliveries, requests) = {
            let mut conn = self.writer.acquire().await?;
            sweep_in(&mut conn, &before).await?
        };
        Ok(Swept {
            requests,
            deliveries,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_id_sorts_between_ids_of_before_and_after() {
        let at: Micros = 1_764_864_000_000_000;
        let cutoff = first_id_at(at);
        assert_eq!(cutoff.len(), 32);
        let earlier = format!("{:012x}{}", at / 1000 - 1, "f".repeat(20));
        let later = format!("{:012x}{}", at / 1000, "0".repeat(19) + "1");
        assert!(earlier < cutoff && cutoff < later);
    }
}
