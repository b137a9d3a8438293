//! Domain types the store reads and writes. They know nothing of gRPC or HTTP
//! framing; `admin/convert.rs` maps them to the API.

use std::time::Duration;

use bytes::Bytes;

/// Unix time in microseconds: the store's clock unit.
pub type Micros = i64;

/// The current time in unix microseconds.
pub fn now_micros() -> Micros {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// A new 32-character lowercase hex id (a UUIDv7, so ids sort by time).
pub fn new_record_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// An HTTP header: lowercase name and value.
pub type Header = (String, String);

/// Signature verification a source asks for on ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAuth {
    /// HTTP Basic credentials only.
    None,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    GitHub { secret: String },
}

impl SourceAuth {
    /// The provider name used in `--auth=PROVIDER:SECRET` ("" for none).
    pub fn provider(&self) -> &'static str {
        match self {
            SourceAuth::None => "",
            SourceAuth::GitHub { .. } => "ghook",
        }
    }
}

/// A sender of webhooks and the response it gets.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub password: String,
    pub auth: SourceAuth,
    pub status_code: u16,
    pub content_type: String,
    pub content: Bytes,
    pub created_at: Micros,
}

/// What `create_source` needs; the store picks the id.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: String,
    pub username: String,
    pub password: String,
    pub auth: SourceAuth,
    pub status_code: u16,
    pub content_type: String,
    pub content: Bytes,
}

/// When to try a failed delivery again.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// A fixed delay between attempts.
    Linear {
        interval: Duration,
        max_attempts: u32,
    },
    /// `initial`, then multiplied by `factor` after each attempt, capped at
    /// `max_interval`, with ±20% jitter.
    Exponential {
        initial: Duration,
        factor: f64,
        max_interval: Duration,
        max_attempts: u32,
    },
    /// An explicit delay before each retry: `delays.len() + 1` attempts.
    Schedule { delays: Vec<Duration> },
    /// One attempt only.
    None,
}

impl RetryPolicy {
    /// The policy's name in the API, the CLI and the store.
    pub fn kind(&self) -> &'static str {
        match self {
            RetryPolicy::Linear { .. } => "linear",
            RetryPolicy::Exponential { .. } => "exponential",
            RetryPolicy::Schedule { .. } => "schedule",
            RetryPolicy::None => "none",
        }
    }

    /// Attempts in all, the first one included.
    pub fn max_attempts(&self) -> u32 {
        match self {
            RetryPolicy::Linear { max_attempts, .. }
            | RetryPolicy::Exponential { max_attempts, .. } => *max_attempts,
            RetryPolicy::Schedule { delays } => u32::try_from(delays.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            RetryPolicy::None => 1,
        }
    }

    /// The policy in words, for people.
    pub fn describe(&self) -> String {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            RetryPolicy::Linear {
                interval,
                max_attempts,
            } => format!(
                "linear: every {} up to {max_attempts} attempts",
                d(interval)
            ),
            RetryPolicy::Exponential {
                initial,
                factor,
                max_interval,
                max_attempts,
            } => format!(
                "exponential: {} then x{factor} each time (at most {}, ±20% jitter) up to {max_attempts} attempts",
                d(initial),
                d(max_interval)
            ),
            RetryPolicy::Schedule { delays } => format!(
                "schedule: retries after {} ({} attempts)",
                delays.iter().map(d).collect::<Vec<_>>().join(", "),
                self.max_attempts()
            ),
            RetryPolicy::None => "none: one attempt, no retry".to_owned(),
        }
    }
}

/// At most `count` attempts per `period` to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period: Duration,
}

/// How deliveries to a target are sent and retried; `target update` changes
/// these for deliveries not yet finished.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    pub retry: RetryPolicy,
    /// Connect plus the full response, per attempt.
    pub timeout: Duration,
    /// Follow 3xx redirects instead of failing.
    pub follow_redirects: bool,
    /// Retry 4xx answers (other than 410) instead of failing.
    pub retry_on_4xx: bool,
    /// Attempts to this target in flight at once.
    pub max_in_flight: u32,
    pub rate: Option<RateLimit>,
    /// Consecutive failures that open the circuit breaker.
    pub break_after: u32,
}

/// The circuit breaker of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breaker {
    pub consecutive_failures: u32,
    /// While set (and in the future), nothing but a probe is sent.
    pub open_until: Option<Micros>,
    /// Openings in a row; each doubles the cool-down.
    pub opens: u32,
}

/// The longest circuit-breaker cool-down.
pub const MAX_BREAKER_COOLDOWN: Duration = Duration::from_secs(600);

impl Breaker {
    /// Whether the breaker is open (nothing is sent) at `now`.
    pub fn is_open(&self, now: Micros) -> bool {
        self.open_until.is_some_and(|until| until > now)
    }

    /// "closed", "open" (cooling down) or "half-open" (one probe allowed).
    pub fn state(&self, now: Micros) -> &'static str {
        match self.open_until {
            None => "closed",
            Some(until) if until > now => "open",
            Some(_) => "half-open",
        }
    }

    /// The breaker after an attempt: `Some(true)` a failure that says the
    /// target is unwell, `Some(false)` a success, `None` neither (e.g. a 4xx).
    /// `break_after` consecutive failures open it for `base`, doubling with
    /// every opening in a row up to [`MAX_BREAKER_COOLDOWN`]; a failed probe
    /// re-opens it, a success closes it.
    pub fn after(
        self,
        failed: Option<bool>,
        break_after: u32,
        now: Micros,
        base: Duration,
    ) -> Breaker {
        let cooldown = |opens: u32| {
            let factor = 2u32.saturating_pow(opens.saturating_sub(1));
            let cooldown = base.saturating_mul(factor).min(MAX_BREAKER_COOLDOWN);
            now.saturating_add(i64::try_from(cooldown.as_micros()).unwrap_or(i64::MAX))
        };
        match failed {
            None => self,
            Some(false) => Breaker::default(),
            Some(true) => {
                let failures = self.consecutive_failures.saturating_add(1);
                match self.open_until {
                    // Still cooling down: a straggler's failure changes nothing more.
                    Some(until) if until > now => Breaker {
                        consecutive_failures: failures,
                        ..self
                    },
                    // Half-open: the probe failed.
                    Some(_) => Breaker {
                        consecutive_failures: failures,
                        open_until: Some(cooldown(self.opens + 1)),
                        opens: self.opens + 1,
                    },
                    None if break_after > 0 && failures >= break_after => Breaker {
                        consecutive_failures: failures,
                        open_until: Some(cooldown(1)),
                        opens: 1,
                    },
                    None => Breaker {
                        consecutive_failures: failures,
                        ..self
                    },
                }
            }
        }
    }
}

/// A service that stored requests are relayed to.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: i64,
    pub name: String,
    pub url: String,
    /// `whsec_...`; None when deliveries are not signed.
    pub signing_secret: Option<String>,
    /// Empty: every source.
    pub source_ids: Vec<i64>,
    pub settings: DeliverySettings,
    /// Why the target is disabled (nothing is sent to it), or None.
    pub disabled_reason: Option<String>,
    pub breaker: Breaker,
    pub created_at: Micros,
}

/// What `create_target` needs; the store picks the id.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub name: String,
    pub url: String,
    pub signing_secret: Option<String>,
    pub source_ids: Vec<i64>,
    pub settings: DeliverySettings,
}

/// A source request as received, stored byte for byte.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub id: String,
    pub source_id: i64,
    /// None when the source has been removed since.
    pub source_name: Option<String>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<Header>,
    pub body: Bytes,
    pub remote_addr: String,
    pub created_at: Micros,
    pub resent_from: Option<String>,
}

/// How a delivery attempt ended, as written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Failed, another attempt is scheduled.
    Retrying,
    /// The target accepted it (2xx).
    Delivered,
    /// No further attempt.
    Failed,
}

impl AttemptState {
    /// The name used in the log and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Retrying => "retrying",
            AttemptState::Delivered => "delivered",
            AttemptState::Failed => "failed",
        }
    }

    /// Parses a stored name; unknown names read as failed.
    pub fn parse(s: &str) -> Self {
        match s {
            "retrying" => AttemptState::Retrying,
            "delivered" => AttemptState::Delivered,
            _ => AttemptState::Failed,
        }
    }
}

/// The target's answer to one attempt.
#[derive(Debug, Clone)]
pub struct AttemptResponse {
    pub status_code: u16,
    pub headers: Vec<Header>,
    /// The first [`crate::delivery::MAX_LOGGED_BODY`] bytes.
    pub body: Bytes,
    pub body_truncated: bool,
}

/// Why an attempt got no response.
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// "connect", "timeout", "body", "request", ...
    pub kind: String,
    pub message: String,
}

/// One delivery attempt: a target.response log record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: String,
    pub request_id: String,
    pub source_id: i64,
    pub target_id: i64,
    /// None when the target has been removed since.
    pub target_name: Option<String>,
    pub url: String,
    pub attempt: u32,
    pub state: AttemptState,
    pub outcome: Result<AttemptResponse, AttemptError>,
    pub elapsed: Duration,
    pub created_at: Micros,
    pub next_run_at: Option<Micros>,
}

/// A log record: a stored request or a delivery attempt.
#[derive(Debug, Clone)]
pub enum LogRecord {
    Request(std::sync::Arc<StoredRequest>),
    Attempt(Box<AttemptRecord>),
}

impl LogRecord {
    /// The record's id (time-ordered).
    pub fn id(&self) -> &str {
        match self {
            LogRecord::Request(r) => &r.id,
            LogRecord::Attempt(a) => &a.id,
        }
    }
}

/// The record types of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    SourceRequest,
    TargetResponse,
}

impl LogType {
    /// `source.request` / `target.response`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogType::SourceRequest => "source.request",
            LogType::TargetResponse => "target.response",
        }
    }

    /// Parses the names above.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "source.request" => Some(LogType::SourceRequest),
            "target.response" => Some(LogType::TargetResponse),
            _ => None,
        }
    }
}

/// Which records a log query or a follower wants. `None` fields match all.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub log_type: Option<LogType>,
    pub source_id: Option<i64>,
    pub request_id: Option<String>,
    pub target_id: Option<i64>,
}

impl LogFilter {
    /// Whether a record passes the filter.
    pub fn matches(&self, record: &LogRecord) -> bool {
        match record {
            LogRecord::Request(r) => {
                self.log_type.is_none_or(|t| t == LogType::SourceRequest)
                    && self.target_id.is_none()
                    && self.source_id.is_none_or(|s| s == r.source_id)
                    && self.request_id.as_ref().is_none_or(|id| *id == r.id)
            }
            LogRecord::Attempt(a) => {
                self.log_type.is_none_or(|t| t == LogType::TargetResponse)
                    && self.target_id.is_none_or(|t| t == a.target_id)
                    && self.source_id.is_none_or(|s| s == a.source_id)
                    && self
                        .request_id
                        .as_ref()
                        .is_none_or(|id| *id == a.request_id)
            }
        }
    }
}

/// A delivery claimed by a worker: everything needed to send one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: String,
    /// Fences every later write: only the holder of this lease may record
    /// the outcome.
    pub lease_token: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Shared with the batch that stored it and with the request's other
    /// deliveries: handing a delivery around copies no headers.
    pub request: std::sync::Arc<StoredRequest>,
    pub target: std::sync::Arc<Target>,
}

/// A delivery as listed by `delivery list`.
#[derive(Debug, Clone)]
pub struct DeliverySummary {
    pub id: String,
    pub request_id: String,
    pub target_id: i64,
    /// None when the target has been removed since.
    pub target_name: Option<String>,
    /// pending | in_flight | delivered | failed | cancelled.
    pub state: String,
    /// Attempts started so far.
    pub attempt: u32,
    pub next_run_at: Option<Micros>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// Which deliveries `delivery list` wants.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// pending (never tried), retrying (tried, due again), in_flight,
    /// delivered, failed or cancelled; None = any.
    pub state: Option<String>,
    pub target_id: Option<i64>,
}

/// What a worker writes when an attempt ends.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// When the attempt ended: the record's `created_at`, and the base of
    /// `next_run_at`.
    pub finished_at: Micros,
    pub outcome: Result<AttemptResponse, AttemptError>,
    pub state: AttemptState,
    pub elapsed: Duration,
    pub next_run_at: Option<Micros>,
    /// Disable the target, for this reason (410 Gone).
    pub disable_target: Option<String>,
    /// For the circuit breaker: see [`Breaker::after`].
    pub target_failed: Option<bool>,
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub requests: u64,
    pub deliveries: u64,
    pub attempts: u64,
}
