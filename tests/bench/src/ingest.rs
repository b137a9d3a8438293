//! Ingest and delivery throughput, latency and memory, each as a ratio to
//! the ceiling measured in the same run.

use std::time::{Duration, Instant};

use crate::ceiling::Ceiling;
use crate::gateway::Gateway;
use crate::load::{Endpoint, Outcome, closed_loop, paced};
use crate::sink::Sink;
use crate::stats::{ms, percentile};

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    pub seconds: u64,
    pub runs: usize,
    /// The sink target's `--max-in-flight`.
    pub max_in_flight: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// The higher of the two ceiling measurements, and the two.
    ceiling_rps: f64,
    ceiling_first_rps: f64,
    ceiling_last_rps: f64,
    ceiling_p99: f64,
    ingest_rps: f64,
    ingest_p50: f64,
    ingest_p99: f64,
    delivery_rps: f64,
    sustained_rps: f64,
    delivered_in_load: f64,
    /// None when less than 1% was left to deliver as the load stopped:
    /// too little to time.
    drain_rps: Option<f64>,
    half_ack_p50: f64,
    half_ack_p99: f64,
    half_e2e_p50: f64,
    half_e2e_p99: f64,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
    /// The gateway's processor time per webhook acked with no targets,
    /// and per webhook delivered (its ingest and its delivery), in us.
    ingest_cpu_us: f64,
    delivery_cpu_us: f64,
}

fn p(latencies: &mut [Duration], q: f64) -> f64 {
    ms(percentile(latencies, q))
}

async fn gateway_endpoint(gateway: &Gateway, name: &str) -> anyhow::Result<Endpoint> {
    let (url, user, pass) = gateway.add_source(name).await?;
    Ok(Endpoint { url, user, pass })
}

async fn one_run(plan: Plan) -> anyhow::Result<Run> {
    let duration = Duration::from_secs(plan.seconds);
    let mut run = Run::default();
    // The stores of the gateways done with, deleted at the end of the run,
    // each gateway gone before the next measurement starts: no teardown
    // (a process exiting, a store of hundreds of megabytes freed) overlaps
    // a measurement.
    let mut done_with = Vec::new();

    // The ceiling, first of two (see `ceiling`).
    let first = ceiling(plan).await?;

    // Durable ingest, no targets.
    let gateway = Gateway::start(&[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.idle_rss_mb = gateway.memory().0 as f64 / 1e6;
    let endpoint = gateway_endpoint(&gateway, "load").await?;
    let cpu = gateway.cpu_time();
    let mut out = closed_loop(&endpoint, plan.connections, duration).await;
    check(&out, "ingest")?;
    run.ingest_cpu_us = per_webhook(gateway.cpu_time().saturating_sub(cpu), out.acked);
    run.ingest_rps = out.rate();
    run.ingest_p50 = p(&mut out.latencies, 50.0);
    run.ingest_p99 = p(&mut out.latencies, 99.0);
    run.peak_rss_mb = gateway.memory().1 as f64 / 1e6;
    done_with.push(gateway.kill().await);

    // Ingest plus delivery to one target: the rate at which both keep up.
    let gateway = Gateway::start(&[]).await?;
    let (sink, sink_addr) = Sink::start().await?;
    let endpoint = gateway_endpoint(&gateway, "load").await?;
    gateway
        .add_target(
            "sink",
            &format!("http://{sink_addr}/hook"),
            1,
            Some(plan.max_in_flight),
        )
        .await?;
    let started = Instant::now();
    let cpu = gateway.cpu_time();
    let out = closed_loop(&endpoint, plan.connections, duration).await;
    check(&out, "ingest with delivery")?;
    run.delivery_rps = out.rate();
    let expected = out.acked as usize;
    let delivered_in_load = sink.count();
    run.delivered_in_load = delivered_in_load as f64 / expected.max(1) as f64;
    // Deliveries per second from the first request to the last delivery.
    let drained = wait_for(&sink, expected, Duration::from_secs(120)).await;
    let left = expected.saturating_sub(delivered_in_load);
    if let Some(drain) = drained.filter(|_| left * 100 >= expected) {
        run.drain_rps = Some(left as f64 / drain.as_secs_f64().max(1e-9));
    }
    run.sustained_rps = match drained {
        Some(_) => expected as f64 / started.elapsed().as_secs_f64().max(1e-9),
        None => 0.0,
    };
    run.delivery_cpu_us = per_webhook(gateway.cpu_time().saturating_sub(cpu), out.acked);
    sink.take();
    run.peak_rss_mb = run.peak_rss_mb.max(gateway.memory().1 as f64 / 1e6);

    // Half the sustained maximum, paced: ack and end-to-end latency.
    let half = (run.sustained_rps.min(run.delivery_rps) / 2.0).max(1.0);
    let mut out = paced(&endpoint, plan.connections, half, duration).await;
    check(&out, "paced half load")?;
    let _ = wait_for(&sink, out.acked as usize, Duration::from_secs(60)).await;
    let mut e2e = sink.take();
    run.half_ack_p50 = p(&mut out.latencies, 50.0);
    run.half_ack_p99 = p(&mut out.latencies, 99.0);
    run.half_e2e_p50 = p(&mut e2e, 50.0);
    run.half_e2e_p99 = p(&mut e2e, 99.0);
    run.peak_rss_mb = run.peak_rss_mb.max(gateway.memory().1 as f64 / 1e6);
    drop(sink);
    done_with.push(gateway.kill().await);

    // The ceiling again: the run's is the higher of the two.
    let last = ceiling(plan).await?;
    run.ceiling_first_rps = first.0;
    run.ceiling_last_rps = last.0;
    (run.ceiling_rps, run.ceiling_p99) = if first.0 >= last.0 { first } else { last };
    drop(done_with);
    Ok(run)
}

/// Processor time per webhook, in us.
fn per_webhook(cpu: Duration, webhooks: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / webhooks.max(1) as f64
}

/// The load generator against a bare HTTP server for the plan's time:
/// answers/s and p99 latency in ms. Each run measures it at its start and
/// at its end and keeps the higher: on two shared cores the same
/// measurement has come out anywhere from 36,000 to 64,000 answers/s from
/// one run to the next while the gateway's own figures moved a few per
/// cent, and a ceiling caught in a low spell would flatter every ratio.
async fn ceiling(plan: Plan) -> anyhow::Result<(f64, f64)> {
    let server = Ceiling::start().await?;
    let endpoint = Endpoint {
        url: format!("http://{}/1", server.addr),
        user: "u".into(),
        pass: "p".into(),
    };
    let mut out = closed_loop(
        &endpoint,
        plan.connections,
        Duration::from_secs(plan.seconds),
    )
    .await;
    check(&out, "ceiling")?;
    Ok((out.rate(), p(&mut out.latencies, 99.0)))
}

fn check(out: &Outcome, what: &str) -> anyhow::Result<()> {
    if out.failed > 0 {
        eprintln!(
            "warning: {what}: {} requests were not acknowledged",
            out.failed
        );
    }
    if out.acked == 0 {
        anyhow::bail!("{what}: no request was acknowledged");
    }
    Ok(())
}

/// Waits until the sink has `n` deliveries; returns how long that took.
async fn wait_for(sink: &Sink, n: usize, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while sink.count() < n {
        if started.elapsed() > limit {
            eprintln!(
                "warning: only {} of {n} deliveries arrived within {limit:?}",
                sink.count()
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(started.elapsed())
}

fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median_of(runs.iter().map(f).collect())
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Runs the plan and prints the table of medians.
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    println!(
        "ingest: {} connections, {}s per measurement, median of {} runs, ~1 KB JSON bodies, \
         sink target --max-in-flight={}",
        plan.connections, plan.seconds, plan.runs, plan.max_in_flight
    );
    let mut runs = Vec::new();
    for i in 0..plan.runs {
        let run = one_run(plan).await?;
        eprintln!("run {}: {run:?}", i + 1);
        runs.push(run);
    }
    let ceiling = median(&runs, |r| r.ceiling_rps);
    let row = |name: &str, value: f64, unit: &str, ratio: Option<f64>| {
        let ratio = ratio
            .map(|r| format!("{:.0}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        println!("| {name} | {value:.2} {unit} | {ratio} |");
    };
    println!("| figure | median | of ceiling |");
    println!("|---|---|---|");
    row(
        "ceiling: bare HTTP server, answers/s (the higher of two per run)",
        ceiling,
        "req/s",
        Some(1.0),
    );
    row(
        "  measured at the start of each run",
        median(&runs, |r| r.ceiling_first_rps),
        "req/s",
        None,
    );
    row(
        "  measured at the end of each run",
        median(&runs, |r| r.ceiling_last_rps),
        "req/s",
        None,
    );
    row("ceiling p99", median(&runs, |r| r.ceiling_p99), "ms", None);
    let ingest = median(&runs, |r| r.ingest_rps);
    row(
        "durable ingest, no targets, acks/s",
        ingest,
        "req/s",
        Some(ingest / ceiling),
    );
    row(
        "  ack latency p50",
        median(&runs, |r| r.ingest_p50),
        "ms",
        None,
    );
    row(
        "  ack latency p99",
        median(&runs, |r| r.ingest_p99),
        "ms",
        None,
    );
    let with_delivery = median(&runs, |r| r.delivery_rps);
    row(
        "ingest with one target, acks/s",
        with_delivery,
        "req/s",
        Some(with_delivery / ceiling),
    );
    let sustained = median(&runs, |r| r.sustained_rps);
    row(
        "  sustained end-to-end deliveries/s",
        sustained,
        "req/s",
        Some(sustained / ceiling),
    );
    row(
        "  delivered while the load ran, % of acked",
        median(&runs, |r| r.delivered_in_load * 100.0),
        "%",
        None,
    );
    let drains: Vec<f64> = runs.iter().filter_map(|r| r.drain_rps).collect();
    if drains.is_empty() {
        println!("|   deliveries/s after the load stopped | less than 1% was left | - |");
    } else {
        let name = format!(
            "  deliveries/s after the load stopped ({} of {} runs left 1% or more)",
            drains.len(),
            runs.len()
        );
        row(&name, median_of(drains), "req/s", None);
    }
    row(
        "at half that load: ack p50",
        median(&runs, |r| r.half_ack_p50),
        "ms",
        None,
    );
    row("  ack p99", median(&runs, |r| r.half_ack_p99), "ms", None);
    row(
        "  end-to-end p50",
        median(&runs, |r| r.half_e2e_p50),
        "ms",
        None,
    );
    row(
        "  end-to-end p99",
        median(&runs, |r| r.half_e2e_p99),
        "ms",
        None,
    );
    row(
        "gateway RSS, idle",
        median(&runs, |r| r.idle_rss_mb),
        "MB",
        None,
    );
    row(
        "gateway RSS, peak under load",
        median(&runs, |r| r.peak_rss_mb),
        "MB",
        None,
    );
    row(
        "gateway processor time per webhook acked, no targets",
        median(&runs, |r| r.ingest_cpu_us),
        "us",
        None,
    );
    row(
        "gateway processor time per webhook acked and delivered",
        median(&runs, |r| r.delivery_cpu_us),
        "us",
        None,
    );
    Ok(())
}
