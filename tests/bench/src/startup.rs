//! Start-up time on an existing store: from spawning `webhook-server` until
//! both listeners accept connections.

use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::load::{Endpoint, closed_loop};
use crate::stats::{ms, percentile};

/// Fills a store, then starts the server on it `runs` times.
pub async fn run(runs: usize, fill_seconds: u64) -> anyhow::Result<()> {
    let gateway = Gateway::start(&[]).await?;
    let (url, user, pass) = gateway.add_source("load").await?;
    let filled = closed_loop(
        &Endpoint { url, user, pass },
        32,
        Duration::from_secs(fill_seconds),
    )
    .await;
    let mut dir = gateway.stop().await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let gateway = Gateway::start_in(dir, &[]).await?;
        // Ready means both listeners accept: connect to each.
        tokio::net::TcpStream::connect(gateway.http_addr).await?;
        tokio::net::TcpStream::connect(gateway.admin_addr).await?;
        times.push(started.elapsed());
        dir = gateway.stop().await;
    }
    println!(
        "startup: {} runs on a store with {} requests: median {:.1} ms, max {:.1} ms (goal < 200 ms)",
        runs,
        filled.acked,
        ms(percentile(&mut times, 50.0)),
        ms(times.iter().copied().max().unwrap_or_default())
    );
    Ok(())
}
