//! Fairness under a black-holed target: a healthy target's end-to-end
//! latency with and without 1,000 deliveries queued for a target that never
//! answers.

use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::sink::{SENT_AT, Sink, black_hole, unix_nanos};
use crate::stats::{ms, percentile};

/// How hard and how long to drive the healthy target.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rate: u32,
    pub seconds: u32,
    pub backlog: u32,
}

/// Sends `rate` requests per second for `seconds`, paced, to `url`.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    pass: &str,
    load: Load,
) -> anyhow::Result<u32> {
    let total = load.rate * load.seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(load.rate));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i).await;
        let request = client
            .post(url)
            .basic_auth(user, Some(pass))
            .header("content-type", "application/json")
            .header(SENT_AT, unix_nanos().to_string())
            .body(format!(r#"{{"n": {i}}}"#));
        tasks.spawn(async move { request.send().await.map(|r| r.status().is_success()) });
    }
    let mut acked = 0;
    while let Some(done) = tasks.join_next().await {
        if matches!(done, Ok(Ok(true))) {
            acked += 1;
        }
    }
    Ok(acked)
}

async fn wait_for(sink: &Sink, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while sink.count() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

struct Phase {
    p50: f64,
    p99: f64,
    max: f64,
    delivered: usize,
}

fn summarize(mut latencies: Vec<Duration>) -> Phase {
    Phase {
        p50: ms(percentile(&mut latencies, 50.0)),
        p99: ms(percentile(&mut latencies, 99.0)),
        max: ms(latencies.iter().copied().max().unwrap_or_default()),
        delivered: latencies.len(),
    }
}

/// Runs the scenario and prints the figures; returns whether the p99 stayed
/// within 1.5x.
pub async fn run(load: Load) -> anyhow::Result<bool> {
    let gateway = Gateway::start(&[]).await?;
    let (sink, sink_addr) = Sink::start().await?;
    let hole = black_hole().await?;
    let (healthy_url, healthy_user, healthy_pass) = gateway.add_source("healthy").await?;
    let (hole_url, hole_user, hole_pass) = gateway.add_source("black-hole").await?;
    gateway
        .add_target("healthy", &format!("http://{sink_addr}/hook"), 1, None)
        .await?;
    gateway
        .add_target("black hole", &format!("http://{hole}/hook"), 2, None)
        .await?;
    let client = reqwest::Client::new();
    let expected = (load.rate * load.seconds) as usize;

    println!(
        "fairness: {} req/s for {}s to a healthy target, backlog {} for a black hole",
        load.rate, load.seconds, load.backlog
    );
    // Warm up (connections, caches, the first WAL growth), then measure.
    let warm_up = Load { seconds: 2, ..load };
    drive(&client, &healthy_url, &healthy_user, &healthy_pass, warm_up).await?;
    wait_for(
        &sink,
        (warm_up.rate * warm_up.seconds) as usize,
        Duration::from_secs(30),
    )
    .await;
    sink.take();
    let acked = drive(&client, &healthy_url, &healthy_user, &healthy_pass, load).await?;
    wait_for(&sink, expected, Duration::from_secs(30)).await;
    let baseline = summarize(sink.take());

    // Queue the backlog for the target that never answers.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..load.backlog {
        let request = client
            .post(&hole_url)
            .basic_auth(&hole_user, Some(&hole_pass))
            .body(format!(r#"{{"stuck": {i}}}"#));
        tasks.spawn(async move { request.send().await.map(|r| r.status().is_success()) });
        if tasks.len() >= 32 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    // Let the burst of queuing settle (its checkpoint): measure the steady
    // state with the backlog in place.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let acked_loaded = drive(&client, &healthy_url, &healthy_user, &healthy_pass, load).await?;
    wait_for(&sink, expected, Duration::from_secs(30)).await;
    let loaded = summarize(sink.take());

    println!("| phase | acked | delivered | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (name, acks, phase) in [
        ("no failing target", acked, &baseline),
        ("1 black-holed target with backlog", acked_loaded, &loaded),
    ] {
        println!(
            "| {name} | {acks} | {} | {:.2} | {:.2} | {:.2} |",
            phase.delivered, phase.p50, phase.p99, phase.max
        );
    }
    let ratio = loaded.p99 / baseline.p99.max(0.001);
    let ok = ratio <= 1.5 && loaded.delivered == expected;
    println!(
        "healthy p99 with the black hole / without: {ratio:.2}x (goal <= 1.5x: {})",
        if ok { "met" } else { "not met" }
    );
    Ok(ok)
}
