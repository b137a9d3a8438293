//! The load generator: many concurrent keep-alive connections posting ~1 KB
//! JSON webhooks with valid credentials, closed-loop (as fast as answers
//! come) or paced at a fixed rate.

use std::time::{Duration, Instant};

use crate::sink::{SENT_AT, unix_nanos};

/// Where to post and as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub user: String,
    pub pass: String,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

/// Posts webhook `i`; its ack latency, or None if it was not acknowledged.
async fn post(client: &reqwest::Client, endpoint: &Endpoint, i: u64) -> Option<Duration> {
    let sent = Instant::now();
    let response = client
        .post(&endpoint.url)
        .basic_auth(&endpoint.user, Some(&endpoint.pass))
        .header("content-type", "application/json")
        .header(SENT_AT, unix_nanos().to_string())
        .body(body(i))
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    let _ = response.bytes().await;
    Some(sent.elapsed())
}

impl Outcome {
    fn record(&mut self, acked: Option<Duration>) {
        match acked {
            Some(latency) => {
                self.acked += 1;
                self.latencies.push(latency);
            }
            None => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.acked += other.acked;
        self.failed += other.failed;
        self.latencies.extend(other.latencies);
    }

    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A ~1 KB JSON body.
pub fn body(i: u64) -> String {
    format!(
        r#"{{"id": {i}, "event": "order.created", "data": {{"padding": "{}"}}}}"#,
        "x".repeat(960)
    )
}

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .http1_only()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

/// `connections` workers post back to back for `duration`.
pub async fn closed_loop(endpoint: &Endpoint, connections: usize, duration: Duration) -> Outcome {
    let client = client(connections);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        tasks.spawn(async move {
            let mut out = Outcome::default();
            let mut i = worker as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                i += 1;
                out.record(post(&client, &endpoint, i).await);
            }
            out
        });
    }
    collect(tasks, started).await
}

/// Posts at `rate` per second for `duration`, each request on its own task
/// (so a slow answer doesn't slow the offered load).
pub async fn paced(
    endpoint: &Endpoint,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Outcome {
    let client = client(connections);
    let total = (rate * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut reaped = Outcome::default();
    for i in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (client, endpoint) = (client.clone(), endpoint.clone());
        tasks.spawn(async move {
            let mut out = Outcome::default();
            out.record(post(&client, &endpoint, i).await);
            out
        });
        // Reap finished tasks as we go so the set stays small.
        while let Some(Ok(out)) = tasks.try_join_next() {
            reaped.merge(out);
        }
    }
    let mut outcome = collect(tasks, started).await;
    outcome.merge(reaped);
    outcome
}

async fn collect(mut tasks: tokio::task::JoinSet<Outcome>, started: Instant) -> Outcome {
    let mut total = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok(out) = done {
            total.merge(out);
        }
    }
    total.elapsed = started.elapsed();
    total
}
