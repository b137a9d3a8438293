//! Stored requests: ingest, resend and the log pages.

use std::sync::Arc;

use super::{Db, DbConn};
use sqlx::QueryBuilder;

use super::Store;
use super::queries as q;
use crate::store::StoreError;
use crate::store::model::{
    AttemptRecord, LogFilter, LogRecord, LogType, StoredRequest, new_record_id, now_micros,
};
use crate::store::rows::{AttemptRow, RequestRow, encode_headers};

impl Store {
    /// Commits a received request and one pending delivery per target routed
    /// to its source, in one transaction. Returns the number of deliveries.
    /// Only after this returns Ok may the source get its success response.
    ///
    /// # Errors
    /// The store is unavailable; nothing was stored.
    /// Concurrent calls are group-committed: one transaction and one fsync
    /// for many requests, each answered after that commit.
    pub async fn ingest(&self, request: &Arc<StoredRequest>) -> Result<u32, StoreError> {
        let targets = self.routing().await?.targets_of(request.source_id);
        self.group.ingest(Arc::clone(request), targets).await
    }

    /// One stored request, or None.
    ///
    /// # Errors
    /// The store is unavailable or the row is corrupt.
    pub async fn get_request(&self, id: &str) -> Result<Option<StoredRequest>, StoreError> {
        let row: Option<RequestRow> = sqlx::query_as(q::SELECT_REQUEST)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(StoredRequest::try_from).transpose()
    }

    /// Several stored requests by id (missing ones are left out).
    ///
    /// # Errors
    /// The store is unavailable or a row is corrupt.
    pub async fn get_requests<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<std::collections::HashMap<String, StoredRequest>, StoreError> {
        let ids: Vec<&str> = ids.collect();
        let mut conn = self.reader.acquire().await?;
        requests_in(&mut conn, &ids).await
    }

    /// Stores a copy of request `id` (new id, `resent_from` = `id`) with a
    /// delivery to `only_target`, or to every target currently routed to its
    /// source. Returns the copy and the number of deliveries.
    ///
    /// # Errors
    /// `NotFound` for an unknown request or target; the store is unavailable.
    pub async fn resend(
        &self,
        id: &str,
        only_target: Option<i64>,
    ) -> Result<(StoredRequest, u32), StoreError> {
        let original = self
            .get_request(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("request {id}")))?;
        let copy = StoredRequest {
            id: new_record_id(),
            created_at: now_micros(),
            resent_from: Some(original.id.clone()),
            ..original
        };
        let mut tx = self.writer.begin().await?;
        let targets: Vec<i64> = match only_target {
            Some(target_id) => {
                let count: i64 = sqlx::query_scalar(q::TARGET_EXISTS)
                    .bind(target_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if count == 0 {
                    return Err(StoreError::NotFound(format!("target {target_id}")));
                }
                vec![target_id]
            }
            None => {
                sqlx::query_scalar(q::SELECT_ROUTED_TARGETS)
                    .bind(copy.source_id)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        insert_request(&mut tx, &copy).await?;
        insert_deliveries(&mut tx, &copy.id, &targets, copy.created_at).await?;
        tx.commit().await?;
        Ok((copy, u32::try_from(targets.len()).unwrap_or(u32::MAX)))
    }

    /// The newest `limit` records matching `filter`, oldest first.
    ///
    /// # Errors
    /// The store is unavailable or a row is corrupt.
    pub async fn list_logs(
        &self,
        filter: &LogFilter,
        limit: u32,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let want_requests =
            filter.log_type != Some(LogType::TargetResponse) && filter.target_id.is_none();
        let want_attempts = filter.log_type != Some(LogType::SourceRequest);
        let mut records = Vec::new();
        if want_requests {
            let mut query = QueryBuilder::<Db>::new(q::SELECT_REQUEST_LOG);
            if let Some(source_id) = filter.source_id {
                query.push(" AND r.source_id = ").push_bind(source_id);
            }
            if let Some(request_id) = &filter.request_id {
                query.push(" AND r.id = ").push_bind(request_id.clone());
            }
            query
                .push(" ORDER BY r.id DESC LIMIT ")
                .push_bind(i64::from(limit));
            let rows: Vec<RequestRow> = query.build_query_as().fetch_all(&self.reader).await?;
            for row in rows {
                records.push(LogRecord::Request(Arc::new(StoredRequest::try_from(row)?)));
            }
        }
        if want_attempts {
            let mut query = QueryBuilder::<Db>::new(q::SELECT_ATTEMPT_LOG);
            if let Some(source_id) = filter.source_id {
                query.push(" AND a.source_id = ").push_bind(source_id);
            }
            if let Some(request_id) = &filter.request_id {
                query
                    .push(" AND a.request_id = ")
                    .push_bind(request_id.clone());
            }
            if let Some(target_id) = filter.target_id {
                query.push(" AND a.target_id = ").push_bind(target_id);
            }
            query
                .push(" ORDER BY a.id DESC LIMIT ")
                .push_bind(i64::from(limit));
            let rows: Vec<AttemptRow> = query.build_query_as().fetch_all(&self.reader).await?;
            for row in rows {
                records.push(LogRecord::Attempt(Box::new(AttemptRecord::try_from(row)?)));
            }
        }
        // Ids are UUIDv7: sorting them sorts by time.
        records.sort_by(|a, b| b.id().cmp(a.id()));
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        records.reverse();
        Ok(records)
    }
}

async fn insert_request(conn: &mut DbConn, request: &StoredRequest) -> Result<(), StoreError> {
    sqlx::query(q::INSERT_REQUEST)
        .bind(&request.id)
        .bind(request.source_id)
        .bind(&request.method)
        .bind(&request.path)
        .bind(&request.query)
        .bind(encode_headers(&request.headers))
        .bind(request.body.as_ref())
        .bind(&request.remote_addr)
        .bind(request.created_at)
        .bind(request.resent_from.as_deref())
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_deliveries(
    conn: &mut DbConn,
    request_id: &str,
    targets: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    for target_id in targets {
        sqlx::query(q::INSERT_DELIVERY)
            .bind(new_record_id())
            .bind(request_id)
            .bind(target_id)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Requests by id (missing ones are left out), on the caller's connection.
pub(super) async fn requests_in(
    conn: &mut DbConn,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, StoredRequest>, StoreError> {
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    // 500 ids a statement keeps well under SQLite's parameter limit.
    for chunk in ids.chunks(500) {
        let mut query = QueryBuilder::<Db>::new(q::SELECT_REQUESTS_HEAD);
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(id.to_string());
        }
        query.push(")");
        let rows: Vec<RequestRow> = query.build_query_as().fetch_all(&mut *conn).await?;
        for row in rows {
            let request = StoredRequest::try_from(row)?;
            found.insert(request.id.clone(), request);
        }
    }
    Ok(found)
}

/// The writes of one ingest, inside the caller's transaction: the request,
/// and a delivery to each of `targets` that still exists.
pub(super) async fn ingest_in(
    conn: &mut DbConn,
    request: &StoredRequest,
    targets: &[i64],
) -> Result<u32, StoreError> {
    insert_request(&mut *conn, request).await?;
    let mut created = 0;
    for target_id in targets {
        created += sqlx::query(q::INSERT_DELIVERY_IF_TARGET)
            .bind(new_record_id())
            .bind(&request.id)
            .bind(request.created_at)
            .bind(target_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(u32::try_from(created).unwrap_or(u32::MAX))
}

/// Many ingests in two statements: every request in one multi-row INSERT,
/// every delivery (to targets that still exist) in another. Returns the
/// deliveries created per request, in order.
pub(super) async fn ingest_many_in(
    conn: &mut DbConn,
    ingests: &[(&StoredRequest, &[i64])],
) -> Result<Vec<u32>, StoreError> {
    let mut requests = QueryBuilder::<Db>::new(q::INSERT_REQUESTS_HEAD);
    requests.push_values(ingests, |mut row, (request, _)| {
        row.push_bind(request.id.clone())
            .push_bind(request.source_id)
            .push_bind(request.method.clone())
            .push_bind(request.path.clone())
            .push_bind(request.query.clone())
            .push_bind(encode_headers(&request.headers))
            .push_bind(request.body.to_vec())
            .push_bind(request.remote_addr.clone())
            .push_bind(request.created_at)
            .push_bind(request.resent_from.clone());
    });
    requests.build().execute(&mut *conn).await?;

    let deliveries: Vec<(String, &str, i64, i64)> = ingests
        .iter()
        .flat_map(|(request, targets)| {
            targets
                .iter()
                .map(|t| (new_record_id(), request.id.as_str(), *t, request.created_at))
        })
        .collect();
    // Four parameters a row; SQLite takes up to 32766 per statement.
    for chunk in deliveries.chunks(4000) {
        let mut insert = QueryBuilder::<Db>::new(q::INSERT_DELIVERIES_HEAD);
        insert.push_values(chunk, |mut row, (id, request_id, target_id, at)| {
            row.push_bind(id.clone())
                .push_bind(request_id.to_string())
                .push_bind(*target_id)
                .push_bind(*at);
        });
        insert.push(q::INSERT_DELIVERIES_TAIL);
        insert.build().execute(&mut *conn).await?;
    }
    Ok(ingests
        .iter()
        .map(|(_, targets)| u32::try_from(targets.len()).unwrap_or(u32::MAX))
        .collect())
}
