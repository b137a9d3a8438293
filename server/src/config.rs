//! Server configuration: flags, environment (`.env` loaded first) and defaults.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::delivery::{RetrySpec, parse_schedule};
use crate::store::model::RetryPolicy;

/// Shortest accepted SECURE_KEY, in characters.
pub const MIN_SECURE_KEY_LEN: usize = 32;

/// Command-line flags and environment variables of `webhook-server`.
#[derive(Debug, Clone, Parser)]
#[command(name = "webhook-server", version, about = "Webhook-Enterprise gateway")]
pub struct Config {
    /// Data-plane (webhook ingest) listen address; port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:4698")]
    pub http_addr: SocketAddr,

    /// gRPC admin listen address; keep it on loopback unless it is protected.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:4699")]
    pub admin_addr: SocketAddr,

    /// Store location: sqlite://PATH (created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://webhook.db")]
    pub database_url: String,

    /// Token every admin call must present as `authorization: Bearer ...`
    /// (at least 32 characters).
    #[arg(long, env = "SECURE_KEY", hide_env_values = true)]
    pub secure_key: Option<String>,

    /// Scheme, host and port that ingest URLs are built on, e.g.
    /// https://hooks.example.com (default: http:// and the HTTP listen address).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest accepted webhook body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_SIZE", default_value_t = 5 * 1024 * 1024)]
    pub max_body_size: usize,

    /// Longest a sender may take to send a webhook's body; slower ones get
    /// 408 and nothing is stored.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Deliveries sent at the same time, over all targets.
    #[arg(long, env = "DELIVERY_CONCURRENCY", default_value_t = 256)]
    pub delivery_concurrency: usize,

    /// Retry policy of targets created without --retry: linear,
    /// exponential, schedule or none.
    #[arg(long, env = "DEFAULT_RETRY", default_value = "linear")]
    pub default_retry: String,

    /// Delay between attempts (linear), or the first delay (exponential),
    /// for targets created without --retry-interval.
    #[arg(long, env = "DEFAULT_RETRY_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub default_retry_interval: Duration,

    /// Attempts in all for targets created without --max-attempts.
    #[arg(long, env = "DEFAULT_MAX_ATTEMPTS", default_value_t = 10)]
    pub default_max_attempts: u32,

    /// Growth of each delay of the exponential default policy.
    #[arg(long, env = "DEFAULT_RETRY_FACTOR", default_value_t = 2.0)]
    pub default_retry_factor: f64,

    /// Cap on the delays of the exponential default policy.
    #[arg(long, env = "DEFAULT_RETRY_MAX_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub default_retry_max_interval: Duration,

    /// Delays of the schedule default policy, e.g. 5s,5m,30m,2h,5h,10h,10h.
    #[arg(
        long,
        env = "DEFAULT_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub default_retry_schedule: String,

    /// First cool-down of a target's circuit breaker; it doubles with each
    /// failed probe, up to 10 minutes.
    #[arg(long, env = "BREAKER_COOLDOWN", default_value = "10s", value_parser = humantime::parse_duration)]
    pub breaker_cooldown: Duration,

    /// Log records a live follower (`log -f`) may fall behind before it
    /// misses some; it is told how many it missed.
    #[arg(long, env = "FOLLOW_BUFFER", default_value_t = 4096)]
    pub follow_buffer: usize,

    /// Remove requests, deliveries and attempts older than this (e.g. 30d),
    /// once nothing about them is unfinished. Unset: keep everything.
    #[arg(long, env = "RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,

    /// How often retention looks for old records.
    #[arg(long, env = "RETENTION_SWEEP_EVERY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub retention_sweep_every: Duration,

    /// How long in-flight deliveries may finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Log filter (tracing EnvFilter syntax), e.g. info or webhook_server=debug.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A configuration value that stops start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// SECURE_KEY is absent.
    #[error(
        "SECURE_KEY is not set: put SECURE_KEY='<at least {MIN_SECURE_KEY_LEN} characters>' in .env or the environment"
    )]
    MissingSecureKey,
    /// SECURE_KEY is too short to be a safe token.
    #[error(
        "SECURE_KEY is too short ({0} characters): it must be at least {MIN_SECURE_KEY_LEN} characters"
    )]
    ShortSecureKey(usize),
    /// PUBLIC_URL is not an http(s) URL.
    #[error(
        "PUBLIC_URL {0:?} is not valid: expected http(s)://HOST[:PORT], e.g. https://hooks.example.com"
    )]
    PublicUrl(String),
    /// DATABASE_URL names a store this build does not support.
    #[error(
        "DATABASE_URL {0:?} is not supported: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE"
    )]
    DatabaseUrl(String),
    /// The default retry policy is not valid.
    #[error("{setting}: {problem}")]
    DefaultRetry {
        setting: &'static str,
        problem: String,
    },
    /// A setting that must be positive is zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
}

impl Config {
    /// Checks the values that clap cannot, and returns the admin token.
    ///
    /// # Errors
    /// The first invalid setting, named in the message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = self
            .secure_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or(ConfigError::MissingSecureKey)?;
        let len = key.chars().count();
        if len < MIN_SECURE_KEY_LEN {
            return Err(ConfigError::ShortSecureKey(len));
        }
        if let Some(url) = &self.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some());
            if !ok {
                return Err(ConfigError::PublicUrl(url.clone()));
            }
        }
        let url = self.database_url.as_str();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(ConfigError::DatabaseUrl(self.database_url.clone()));
        }
        if self.max_body_size == 0 {
            return Err(ConfigError::Zero("MAX_BODY_SIZE"));
        }
        self.default_retry_policy()?;
        if self.retention.is_some_and(|r| r.is_zero()) {
            return Err(ConfigError::Zero("RETENTION"));
        }
        if self.retention_sweep_every.is_zero() {
            return Err(ConfigError::Zero("RETENTION_SWEEP_EVERY"));
        }
        if self.body_timeout.is_zero() {
            return Err(ConfigError::Zero("BODY_TIMEOUT"));
        }
        if self.breaker_cooldown.is_zero() {
            return Err(ConfigError::Zero("BREAKER_COOLDOWN"));
        }
        if self.follow_buffer == 0 {
            return Err(ConfigError::Zero("FOLLOW_BUFFER"));
        }
        if self.delivery_concurrency == 0 {
            return Err(ConfigError::Zero("DELIVERY_CONCURRENCY"));
        }
        Ok(())
    }

    /// The retry policy of targets created without one.
    ///
    /// # Errors
    /// A DEFAULT_RETRY* setting is out of range.
    pub fn default_retry_policy(&self) -> Result<RetryPolicy, ConfigError> {
        let setting = |field: &str| match field {
            "retry" => "DEFAULT_RETRY",
            "retry_interval" => "DEFAULT_RETRY_INTERVAL",
            "retry_factor" => "DEFAULT_RETRY_FACTOR",
            "retry_max_interval" => "DEFAULT_RETRY_MAX_INTERVAL",
            "retry_schedule" => "DEFAULT_RETRY_SCHEDULE",
            _ => "DEFAULT_MAX_ATTEMPTS",
        };
        let schedule = parse_schedule(&self.default_retry_schedule).map_err(|problem| {
            ConfigError::DefaultRetry {
                setting: "DEFAULT_RETRY_SCHEDULE",
                problem,
            }
        })?;
        let is_schedule = self.default_retry.trim() == "schedule";
        let spec = RetrySpec {
            kind: Some(self.default_retry.clone()),
            interval: Some(self.default_retry_interval),
            factor: Some(self.default_retry_factor),
            max_interval: Some(
                self.default_retry_max_interval
                    .max(self.default_retry_interval),
            ),
            schedule: Some(schedule),
            max_attempts: (!is_schedule).then_some(self.default_max_attempts),
        };
        let base = RetryPolicy::Linear {
            interval: self.default_retry_interval,
            max_attempts: self.default_max_attempts.max(1),
        };
        spec.resolve(&base).map_err(|e| ConfigError::DefaultRetry {
            setting: setting(e.field),
            problem: e.problem,
        })
    }

    /// The admin token; call after [`Config::validate`].
    pub fn secure_key(&self) -> &str {
        self.secure_key.as_deref().unwrap_or_default()
    }
}
