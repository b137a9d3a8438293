//! Relaying stored requests to targets: the worker that claims due
//! deliveries, the HTTP attempt, the retry policy and request signing.

mod policy;
mod send;
mod signing;
mod worker;

pub use policy::{Verdict, classify, next_step};
pub use signing::new_signing_secret;
pub use worker::Worker;

/// The most of a target's response body kept in the log.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

/// The HTTP client every attempt goes through: pooled keep-alive
/// connections, and redirects never followed (a redirect is a final answer).
///
/// # Errors
/// The TLS backend could not be set up.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build()
}
