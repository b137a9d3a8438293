//! Rows as SQLite returns them, and their conversion to domain types.

use std::time::Duration;

use bytes::Bytes;

use crate::store::StoreError;
use crate::store::model::{
    AttemptError, AttemptRecord, AttemptResponse, AttemptState, Header, RetryPolicy, Source,
    SourceAuth, StoredRequest, Target,
};

#[derive(sqlx::FromRow)]
pub struct SourceRow {
    id: i64,
    name: String,
    username: String,
    password: String,
    auth_provider: Option<String>,
    auth_secret: Option<String>,
    status_code: i64,
    content_type: String,
    content: Vec<u8>,
    created_at: i64,
}

impl TryFrom<SourceRow> for Source {
    type Error = StoreError;

    fn try_from(row: SourceRow) -> Result<Self, StoreError> {
        let auth = match (row.auth_provider.as_deref(), row.auth_secret) {
            (None, _) => SourceAuth::None,
            (Some("ghook"), Some(secret)) => SourceAuth::GitHub { secret },
            (Some(other), _) => {
                return Err(StoreError::Corrupt(format!(
                    "source {}: unknown auth provider {other:?}",
                    row.id
                )));
            }
        };
        Ok(Source {
            id: row.id,
            name: row.name,
            username: row.username,
            password: row.password,
            auth,
            status_code: u16::try_from(row.status_code).unwrap_or(200),
            content_type: row.content_type,
            content: Bytes::from(row.content),
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct TargetRow {
    pub id: i64,
    name: String,
    url: String,
    signing_secret: Option<String>,
    #[allow(dead_code)]
    retry_kind: String,
    retry_interval_ms: i64,
    max_attempts: i64,
    timeout_ms: i64,
    created_at: i64,
}

impl TargetRow {
    /// The domain target, with its routes read separately.
    pub fn into_target(self, source_ids: Vec<i64>) -> Target {
        Target {
            id: self.id,
            name: self.name,
            url: self.url,
            signing_secret: self.signing_secret,
            source_ids,
            retry: RetryPolicy {
                interval: millis(self.retry_interval_ms),
                max_attempts: u32::try_from(self.max_attempts).unwrap_or(1),
            },
            timeout: millis(self.timeout_ms),
            created_at: self.created_at,
        }
    }
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Headers are stored as a JSON array of `[name, value]` pairs.
pub fn encode_headers(headers: &[Header]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_headers(json: &str) -> Result<Vec<Header>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("headers: {e}")))
}

#[derive(sqlx::FromRow)]
pub struct RequestRow {
    id: String,
    source_id: i64,
    source_name: Option<String>,
    method: String,
    path: String,
    query: String,
    headers: String,
    body: Vec<u8>,
    remote_addr: String,
    created_at: i64,
    resent_from: Option<String>,
}

impl TryFrom<RequestRow> for StoredRequest {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> Result<Self, StoreError> {
        Ok(StoredRequest {
            headers: decode_headers(&row.headers)?,
            id: row.id,
            source_id: row.source_id,
            source_name: row.source_name,
            method: row.method,
            path: row.path,
            query: row.query,
            body: Bytes::from(row.body),
            remote_addr: row.remote_addr,
            created_at: row.created_at,
            resent_from: row.resent_from,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AttemptRow {
    id: String,
    delivery_id: String,
    request_id: String,
    source_id: i64,
    target_id: i64,
    target_name: Option<String>,
    url: String,
    attempt: i64,
    state: String,
    status_code: Option<i64>,
    response_headers: Option<String>,
    response_body: Option<Vec<u8>>,
    body_truncated: bool,
    error_kind: Option<String>,
    error_message: Option<String>,
    elapsed_us: i64,
    created_at: i64,
    next_run_at: Option<i64>,
}

impl TryFrom<AttemptRow> for AttemptRecord {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Self, StoreError> {
        let outcome = match row.status_code {
            Some(code) => Ok(AttemptResponse {
                status_code: u16::try_from(code).unwrap_or(0),
                headers: decode_headers(row.response_headers.as_deref().unwrap_or("[]"))?,
                body: Bytes::from(row.response_body.unwrap_or_default()),
                body_truncated: row.body_truncated,
            }),
            None => Err(AttemptError {
                kind: row.error_kind.unwrap_or_default(),
                message: row.error_message.unwrap_or_default(),
            }),
        };
        Ok(AttemptRecord {
            id: row.id,
            delivery_id: row.delivery_id,
            request_id: row.request_id,
            source_id: row.source_id,
            target_id: row.target_id,
            target_name: row.target_name,
            url: row.url,
            attempt: u32::try_from(row.attempt).unwrap_or(0),
            state: AttemptState::parse(&row.state),
            outcome,
            elapsed: Duration::from_micros(u64::try_from(row.elapsed_us).unwrap_or(0)),
            created_at: row.created_at,
            next_run_at: row.next_run_at,
        })
    }
}

/// Converts an in-range duration to whole milliseconds for storage.
pub fn to_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
