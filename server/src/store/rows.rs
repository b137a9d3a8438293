//! Rows as the store returns them (either backend), and their conversion to domain types.

use std::time::Duration;

use bytes::Bytes;

use crate::store::StoreError;
use crate::store::model::{
    AttemptError, AttemptRecord, AttemptResponse, AttemptState, Breaker, DeliverySettings,
    DeliverySummary, Header, RateLimit, RetryPolicy, Source, SourceAuth, StoredRequest, Target,
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
    retry_kind: String,
    retry_interval_ms: i64,
    max_attempts: i64,
    retry_factor: f64,
    retry_max_interval_ms: i64,
    retry_schedule: String,
    timeout_ms: i64,
    follow_redirects: bool,
    retry_on_4xx: bool,
    max_in_flight: i64,
    rate_count: Option<i64>,
    rate_period_ms: Option<i64>,
    break_after: i64,
    disabled_reason: Option<String>,
    consecutive_failures: i64,
    breaker_until: Option<i64>,
    breaker_opens: i64,
    created_at: i64,
}

impl TargetRow {
    /// The domain target, with its routes read separately.
    pub fn into_target(self, source_ids: Vec<i64>) -> Result<Target, StoreError> {
        let max_attempts = u32::try_from(self.max_attempts).unwrap_or(1);
        let retry = match self.retry_kind.as_str() {
            "linear" => RetryPolicy::Linear {
                interval: millis(self.retry_interval_ms),
                max_attempts,
            },
            "exponential" => RetryPolicy::Exponential {
                initial: millis(self.retry_interval_ms),
                factor: self.retry_factor,
                max_interval: millis(self.retry_max_interval_ms),
                max_attempts,
            },
            "schedule" => RetryPolicy::Schedule {
                delays: decode_schedule(&self.retry_schedule).ok_or_else(|| {
                    StoreError::Corrupt(format!("target {}: retry schedule", self.id))
                })?,
            },
            "none" => RetryPolicy::None,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "target {}: unknown retry policy {other:?}",
                    self.id
                )));
            }
        };
        let rate = match (self.rate_count, self.rate_period_ms) {
            (Some(count), Some(period)) => Some(RateLimit {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                period: millis(period),
            }),
            _ => None,
        };
        Ok(Target {
            id: self.id,
            name: self.name,
            url: self.url,
            signing_secret: self.signing_secret,
            source_ids,
            settings: DeliverySettings {
                retry,
                timeout: millis(self.timeout_ms),
                follow_redirects: self.follow_redirects,
                retry_on_4xx: self.retry_on_4xx,
                max_in_flight: u32::try_from(self.max_in_flight).unwrap_or(1),
                rate,
                break_after: u32::try_from(self.break_after).unwrap_or(0),
            },
            disabled_reason: self.disabled_reason,
            breaker: Breaker {
                consecutive_failures: u32::try_from(self.consecutive_failures).unwrap_or(0),
                open_until: self.breaker_until,
                opens: u32::try_from(self.breaker_opens).unwrap_or(0),
            },
            created_at: self.created_at,
        })
    }
}

/// The columns a retry policy is stored in: (kind, interval ms, max
/// attempts, factor, max interval ms, schedule).
pub fn encode_retry(policy: &RetryPolicy) -> (&'static str, i64, i64, f64, i64, String) {
    let kind = policy.kind();
    let attempts = i64::from(policy.max_attempts());
    match policy {
        RetryPolicy::Linear { interval, .. } => {
            (kind, to_millis(*interval), attempts, 2.0, 0, String::new())
        }
        RetryPolicy::Exponential {
            initial,
            factor,
            max_interval,
            ..
        } => (
            kind,
            to_millis(*initial),
            attempts,
            *factor,
            to_millis(*max_interval),
            String::new(),
        ),
        RetryPolicy::Schedule { delays } => (
            kind,
            0,
            attempts,
            2.0,
            0,
            delays
                .iter()
                .map(|d| to_millis(*d).to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        RetryPolicy::None => (kind, 0, 1, 2.0, 0, String::new()),
    }
}

fn decode_schedule(text: &str) -> Option<Vec<Duration>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|ms| ms.parse::<u64>().ok().map(Duration::from_millis))
        .collect()
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
    pub(crate) id: String,
    pub(crate) source_id: i64,
    pub(crate) source_name: Option<String>,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
    pub(crate) remote_addr: String,
    pub(crate) created_at: i64,
    pub(crate) resent_from: Option<String>,
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

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    id: String,
    pub(crate) request_id: String,
    target_id: i64,
    target_name: Option<String>,
    state: String,
    attempt: i64,
    next_run_at: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<DeliveryRow> for DeliverySummary {
    fn from(row: DeliveryRow) -> Self {
        let unfinished = row.state == "pending" || row.state == "in_flight";
        DeliverySummary {
            id: row.id,
            request_id: row.request_id,
            target_id: row.target_id,
            target_name: row.target_name,
            state: row.state,
            attempt: u32::try_from(row.attempt).unwrap_or(0),
            next_run_at: unfinished.then_some(row.next_run_at),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}
