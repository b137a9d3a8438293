//! Sources and targets: the configuration the admin API edits.

use super::DbConn;
use super::Store;
use super::queries as q;

use crate::store::StoreError;
use crate::store::model::{
    Breaker, DeliverySettings, NewSource, NewTarget, Source, SourceAuth, Target, now_micros,
};
use crate::store::rows::{SourceRow, TargetRow, encode_retry, to_millis};

impl Store {
    /// Creates a source and returns it with its new id.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn create_source(&self, new: NewSource) -> Result<Source, StoreError> {
        let created_at = now_micros();
        let (provider, secret) = match &new.auth {
            SourceAuth::None => (None, None),
            SourceAuth::GitHub { secret } => (Some("ghook"), Some(secret.as_str())),
        };
        let id: i64 = sqlx::query_scalar(q::INSERT_SOURCE)
            .bind(&new.name)
            .bind(&new.username)
            .bind(&new.password)
            .bind(provider)
            .bind(secret)
            .bind(i64::from(new.status_code))
            .bind(&new.content_type)
            .bind(new.content.as_ref())
            .bind(created_at)
            .fetch_one(&self.writer)
            .await?;
        self.routing.invalidate();
        Ok(Source {
            id,
            name: new.name,
            username: new.username,
            password: new.password,
            auth: new.auth,
            status_code: new.status_code,
            content_type: new.content_type,
            content: new.content,
            created_at,
        })
    }

    /// Every source, oldest first.
    ///
    /// # Errors
    /// The store is unavailable or a row is corrupt.
    pub async fn list_sources(&self) -> Result<Vec<Source>, StoreError> {
        let rows: Vec<SourceRow> = sqlx::query_as(q::SELECT_SOURCES)
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(Source::try_from).collect()
    }

    /// One source, or None.
    ///
    /// # Errors
    /// The store is unavailable or the row is corrupt.
    pub async fn get_source(&self, id: i64) -> Result<Option<Source>, StoreError> {
        let row: Option<SourceRow> = sqlx::query_as(q::SELECT_SOURCE)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Source::try_from).transpose()
    }

    /// Removes a source; returns whether it existed. Its stored requests
    /// stay in the log, and targets keep their routes to it, so a target
    /// that received only from this source receives nothing now (rather
    /// than from every source).
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn delete_source(&self, id: i64) -> Result<bool, StoreError> {
        let deleted = sqlx::query(q::DELETE_SOURCE)
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        self.routing.invalidate();
        Ok(deleted > 0)
    }

    /// Creates a target routed to `new.source_ids` (every source when empty).
    ///
    /// # Errors
    /// `NotFound` for a routed source that does not exist; the store is unavailable.
    pub async fn create_target(&self, new: NewTarget) -> Result<Target, StoreError> {
        let created_at = now_micros();
        let mut tx = self.writer.begin().await?;
        check_sources_exist(&mut tx, &new.source_ids).await?;
        let id: i64 = sqlx::query_scalar(q::INSERT_TARGET)
            .bind(new.signing_secret.as_deref())
            .bind(created_at)
            .fetch_one(&mut *tx)
            .await?;
        write_target(&mut tx, id, &new.name, &new.url, &new.settings).await?;
        let source_ids = replace_routes(&mut tx, id, new.source_ids).await?;
        tx.commit().await?;
        self.routing.invalidate();
        Ok(Target {
            id,
            name: new.name,
            url: new.url,
            signing_secret: new.signing_secret,
            source_ids,
            settings: new.settings,
            disabled_reason: None,
            breaker: Breaker::default(),
            created_at,
        })
    }

    /// Writes a target's name, URL, routes and delivery settings. Deliveries
    /// not yet finished use the new settings from their next attempt on.
    /// With `new_routes`, every routed source must exist (routes kept from
    /// before may name sources removed since).
    ///
    /// # Errors
    /// `NotFound` for an unknown target or routed source; the store is unavailable.
    pub async fn update_target(&self, target: &Target, new_routes: bool) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        if new_routes {
            check_sources_exist(&mut tx, &target.source_ids).await?;
        }
        let updated = write_target(
            &mut tx,
            target.id,
            &target.name,
            &target.url,
            &target.settings,
        )
        .await?;
        if updated == 0 {
            return Err(StoreError::NotFound(format!("target {}", target.id)));
        }
        replace_routes(&mut tx, target.id, target.source_ids.clone()).await?;
        tx.commit().await?;
        self.routing.invalidate();
        Ok(())
    }

    /// Re-enables a disabled target and closes its circuit breaker; returns
    /// whether the target exists.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn enable_target(&self, id: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(q::ENABLE_TARGET)
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        // Claims must see the breaker closed.
        self.routing.invalidate();
        Ok(updated > 0)
    }

    /// Every target with its routes, oldest first.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn list_targets(&self) -> Result<Vec<Target>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        let rows: Vec<TargetRow> = sqlx::query_as(q::SELECT_TARGETS)
            .fetch_all(&mut *conn)
            .await?;
        let mut targets = Vec::with_capacity(rows.len());
        for row in rows {
            let routes = routes_in(&mut conn, row.id).await?;
            targets.push(row.into_target(routes)?);
        }
        Ok(targets)
    }

    /// One target with its routes, or None.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn get_target(&self, id: i64) -> Result<Option<Target>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        target_in(&mut conn, id).await
    }

    /// Deliveries of a target that are not finished yet.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn unfinished_deliveries(&self, target_id: i64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(q::COUNT_UNFINISHED_DELIVERIES)
            .bind(target_id)
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Removes a target and cancels its unfinished deliveries; returns whether
    /// it existed.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn delete_target(&self, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(q::CANCEL_TARGET_DELIVERIES)
            .bind(now_micros())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(q::DELETE_TARGET)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.routing.invalidate();
        Ok(deleted > 0)
    }
}

async fn check_sources_exist(conn: &mut DbConn, ids: &[i64]) -> Result<(), StoreError> {
    for source_id in ids {
        let count: i64 = sqlx::query_scalar(q::SOURCE_EXISTS)
            .bind(source_id)
            .fetch_one(&mut *conn)
            .await?;
        if count == 0 {
            return Err(StoreError::NotFound(format!("source {source_id}")));
        }
    }
    Ok(())
}

/// Sets a target's routes; returns them sorted and deduplicated.
async fn replace_routes(
    conn: &mut DbConn,
    target_id: i64,
    mut source_ids: Vec<i64>,
) -> Result<Vec<i64>, StoreError> {
    source_ids.sort_unstable();
    source_ids.dedup();
    sqlx::query(q::DELETE_TARGET_SOURCES)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    for source_id in &source_ids {
        sqlx::query(q::INSERT_TARGET_SOURCE)
            .bind(target_id)
            .bind(source_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(source_ids)
}

/// Writes a target's name, URL and delivery settings; returns the rows
/// changed (0: no such target).
async fn write_target(
    conn: &mut DbConn,
    id: i64,
    name: &str,
    url: &str,
    settings: &DeliverySettings,
) -> Result<u64, StoreError> {
    let (kind, interval, attempts, factor, max_interval, schedule) = encode_retry(&settings.retry);
    Ok(sqlx::query(q::UPDATE_TARGET)
        .bind(name)
        .bind(url)
        .bind(kind)
        .bind(interval)
        .bind(attempts)
        .bind(factor)
        .bind(max_interval)
        .bind(schedule)
        .bind(to_millis(settings.timeout))
        .bind(settings.follow_redirects)
        .bind(settings.retry_on_4xx)
        .bind(i64::from(settings.max_in_flight))
        .bind(settings.rate.map(|r| i64::from(r.count)))
        .bind(settings.rate.map(|r| to_millis(r.period)))
        .bind(i64::from(settings.break_after))
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected())
}

/// One target with its routes, on the caller's connection.
pub(super) async fn target_in(conn: &mut DbConn, id: i64) -> Result<Option<Target>, StoreError> {
    let row: Option<TargetRow> = sqlx::query_as(q::SELECT_TARGET)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let routes = routes_in(&mut *conn, id).await?;
    Ok(Some(row.into_target(routes)?))
}

/// The sources a target is routed from, on the caller's connection.
async fn routes_in(conn: &mut DbConn, id: i64) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(q::SELECT_TARGET_SOURCES)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?)
}
