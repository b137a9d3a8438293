//! Writes whose loss to a power cut is harmless (a claim: its deliveries
//! are only due again; a retention batch: it is removed again next time)
//! commit without waiting for the disk. They run on the writer's own
//! connection, which is given back with full durability, or closed.

use sqlx::pool::PoolConnection;

use super::queries as q;
use super::{Db, DbConn, DbPool};
use crate::store::StoreError;

/// A writer connection with relaxed durability until [`Relaxed::release`].
pub struct Relaxed(PoolConnection<Db>);

impl Relaxed {
    /// Takes a writer connection and relaxes its durability.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn acquire(pool: &DbPool) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        sqlx::query(q::RELAXED_DURABILITY)
            .execute(&mut *conn)
            .await?;
        Ok(Relaxed(conn))
    }

    pub fn conn(&mut self) -> &mut DbConn {
        &mut self.0
    }

    /// Gives the connection back with full durability; closes it if that
    /// fails, so the pool opens a new one with full durability instead.
    pub async fn release(mut self) {
        if let Err(e) = sqlx::query(q::FULL_DURABILITY).execute(&mut *self.0).await {
            tracing::warn!(error = %e, "cannot restore full durability; connection closed");
            let _ = self.0.close().await;
        }
    }
}

/// Runs `work` on a relaxed writer connection in a task of its own, so the
/// connection gets its durability back even if the caller goes away.
pub async fn run_relaxed<T, F>(pool: &DbPool, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: for<'c> FnOnce(
            &'c mut DbConn,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>,
        > + Send
        + 'static,
{
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut relaxed = Relaxed::acquire(&pool).await?;
        let result = work(relaxed.conn()).await;
        relaxed.release().await;
        result
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
}
