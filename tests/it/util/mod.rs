//! Helpers shared by the end-to-end tests: the real binaries on free ports
//! with a temporary SQLite file, and a real target server that records what
//! it receives.

pub mod follow;
pub mod gateway;
pub mod hooks;
pub mod postgres;
pub mod target;

pub use gateway::Gateway;
pub use target::TestTarget;

use std::time::Duration;

/// Polls `check` every 20 ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client for the tests (plain http on 127.0.0.1).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
