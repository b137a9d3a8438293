//! The gateway's own health: what `GET /health` and `System.GetStatus` report.

use std::time::Duration;

use crate::store::Store;
use crate::store::model::{Micros, Target, now_micros};

/// How long a health check waits for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's state and one line per issue. It is "degraded" only when
/// it cannot take webhooks (the store fails); trouble with a target (an open
/// circuit breaker, a disabled target) is listed while it stays "running".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub degraded: bool,
    pub issues: Vec<String>,
}

impl Health {
    /// "running" or "degraded".
    pub fn status(&self) -> &'static str {
        if self.degraded { "degraded" } else { "running" }
    }

    /// The JSON body of `GET /health`: `{"status": "running", "issues": []}`.
    pub fn to_json(&self) -> String {
        let issues = serde_json::to_string(&self.issues).unwrap_or_else(|_| "[]".to_owned());
        format!(r#"{{"status": "{}", "issues": {}}}"#, self.status(), issues)
    }
}

/// Checks every dependency of the gateway.
pub async fn check(store: &Store) -> Health {
    let store_issue = match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("store: {e}")),
        Err(_) => Some(format!(
            "store: no answer within {}",
            humantime::format_duration(STORE_CHECK_TIMEOUT)
        )),
    };
    if let Some(issue) = store_issue {
        return Health {
            degraded: true,
            issues: vec![issue],
        };
    }
    let issues = match store.list_targets().await {
        Ok(targets) => target_issues(&targets, now_micros()),
        Err(e) => vec![format!("store: {e}")],
    };
    Health {
        degraded: false,
        issues,
    }
}

/// One line per target that is disabled or whose breaker is not closed.
fn target_issues(targets: &[Target], now: Micros) -> Vec<String> {
    let mut issues = Vec::new();
    for t in targets {
        if let Some(reason) = &t.disabled_reason {
            issues.push(format!("target {} ({}): disabled: {reason}", t.id, t.name));
        } else if let Some(until) = t.breaker.open_until {
            let state = t.breaker.state(now);
            let until =
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(until.max(0) as u64);
            issues.push(format!(
                "target {} ({}): circuit breaker {state} after {} consecutive failures (cool-down until {})",
                t.id,
                t.name,
                t.breaker.consecutive_failures,
                humantime::format_rfc3339_seconds(until)
            ));
        }
    }
    issues
}
