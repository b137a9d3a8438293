//! The gateway's own health: what `GET /health` and `System.GetStatus` report.

use std::time::Duration;

use crate::store::Store;

/// How long a health check waits for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// "running" with no issues, or "degraded" with one line per issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub issues: Vec<String>,
}

impl Health {
    /// "running" or "degraded".
    pub fn status(&self) -> &'static str {
        if self.issues.is_empty() {
            "running"
        } else {
            "degraded"
        }
    }

    /// The JSON body of `GET /health`: `{"status": "running", "issues": []}`.
    pub fn to_json(&self) -> String {
        let issues = serde_json::to_string(&self.issues).unwrap_or_else(|_| "[]".to_owned());
        format!(r#"{{"status": "{}", "issues": {}}}"#, self.status(), issues)
    }
}

/// Checks every dependency of the gateway.
pub async fn check(store: &Store) -> Health {
    let mut issues = Vec::new();
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => issues.push(format!("store: {e}")),
        Err(_) => issues.push(format!(
            "store: no answer within {}",
            humantime::format_duration(STORE_CHECK_TIMEOUT)
        )),
    }
    Health { issues }
}
