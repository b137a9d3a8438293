//! The store's own health check, behind `/health` and `GetStatus`.

use std::time::Duration;

use super::Store;
use super::queries;
use crate::store::StoreError;

/// How long a failed write marks the store unhealthy, unless a write
/// succeeds since.
const RECENT_FAILURE: Duration = Duration::from_secs(10);

impl Store {
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
}
