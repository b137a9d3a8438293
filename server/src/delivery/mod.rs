//! Relaying stored requests to targets: the worker that claims due
//! deliveries, the HTTP attempt, the retry policy and request signing.

mod policy;
mod rate;
mod retry_spec;
mod send;
mod signing;
mod worker;

pub use policy::{Verdict, classify, delay_after, next_step, retry_after};
pub use retry_spec::{MAX_ATTEMPTS, RetrySpec, SpecError, parse_schedule};
pub use signing::new_signing_secret;
pub use worker::Worker;

/// The most of a target's response body kept in the log.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

/// Redirects followed for a target that opts in.
const MAX_REDIRECTS: usize = 5;

/// The HTTP clients attempts go through, with pooled keep-alive connections.
#[derive(Debug, Clone)]
pub struct HttpClients {
    /// Redirects are never followed: a 3xx is a final answer.
    pub direct: reqwest::Client,
    /// For targets with `--follow-redirects`.
    pub following: reqwest::Client,
}

impl HttpClients {
    /// Builds both clients.
    ///
    /// # Errors
    /// The TLS backend could not be set up.
    pub fn new() -> Result<Self, reqwest::Error> {
        let build = |policy| {
            reqwest::Client::builder()
                .redirect(policy)
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .build()
        };
        Ok(HttpClients {
            direct: build(reqwest::redirect::Policy::none())?,
            following: build(reqwest::redirect::Policy::limited(MAX_REDIRECTS))?,
        })
    }

    /// The client for a target.
    pub fn for_target(&self, follow_redirects: bool) -> &reqwest::Client {
        if follow_redirects {
            &self.following
        } else {
            &self.direct
        }
    }
}
