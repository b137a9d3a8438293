//! The cost of history: durable ingest on a store that already holds many
//! requests (each with a delivered delivery and its attempt) against an
//! empty store in the same run; `webhook-cli log -n 10 --type
//! target.response` on that store, process start included; and ingest while
//! retention removes the older half of it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::gateway::{Gateway, postgres_server, store_url};
use crate::load::{Endpoint, closed_loop};
use crate::stats::{ms, percentile};

/// What to fill and how to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub requests: u64,
    pub connections: usize,
    pub seconds: u64,
    pub runs: usize,
    pub cli_calls: usize,
}

/// Rows written per statement while filling.
const FILL_CHUNK: u64 = 250_000;
/// The stored requests are 1 ms apart, the newest this long ago.
const NEWEST_AGE: Duration = Duration::from_secs(600);

fn endpoint((url, user, pass): (String, String, String)) -> Endpoint {
    Endpoint { url, user, pass }
}

/// The same source's endpoint on a restarted gateway (new port).
fn on(gateway: &Gateway, endpoint: &Endpoint) -> anyhow::Result<Endpoint> {
    let mut url = reqwest::Url::parse(&endpoint.url)?;
    url.set_port(Some(gateway.http_addr.port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port of {url}"))?;
    Ok(Endpoint {
        url: url.into(),
        ..endpoint.clone()
    })
}

/// Acks/s of one closed-loop measurement.
async fn ingest_rate(endpoint: &Endpoint, plan: Plan) -> anyhow::Result<f64> {
    let out = closed_loop(
        endpoint,
        plan.connections,
        Duration::from_secs(plan.seconds),
    )
    .await;
    if out.acked == 0 {
        bail!("no request was acknowledged");
    }
    Ok(out.rate())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Measures the empty store and `other` by turns, `plan.runs` times each,
/// so that the machine's drift over minutes (its disk above all) weighs on
/// both alike; returns both medians.
async fn by_turns(empty: &Endpoint, other: &Endpoint, plan: Plan) -> anyhow::Result<(f64, f64)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for turn in 1..=plan.runs {
        let (x, y) = (
            ingest_rate(empty, plan).await?,
            ingest_rate(other, plan).await?,
        );
        eprintln!("  turn {turn}: empty store {x:.0} acks/s, the other {y:.0} acks/s");
        a.push(x);
        b.push(y);
    }
    Ok((median(a), median(b)))
}

pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let backend = if postgres_server().is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "history: {} stored requests on {backend}; ingest with {} connections, {}s, median of {}",
        plan.requests, plan.connections, plan.seconds, plan.runs
    );

    // The empty store, kept running beside the other for turns.
    let fresh = Gateway::start(&[]).await?;
    let empty = endpoint(fresh.add_source("load").await?);

    // The store with history: source 1 and its target get the history;
    // source 2, with no target, takes the load.
    let gateway = Gateway::start(&[]).await?;
    gateway.add_source("history").await?;
    let load = endpoint(gateway.add_source("load").await?);
    gateway
        .add_target("history", "http://127.0.0.1:9/hook", 1, None)
        .await?;
    let dir = gateway.stop().await;
    let started = Instant::now();
    fill(&store_url(dir.path()).await?, plan.requests).await?;
    eprintln!(
        "filled {} requests in {:.0} s",
        plan.requests,
        started.elapsed().as_secs_f64()
    );

    let gateway = Gateway::start_in(dir, &[]).await?;
    let (empty_rate, with_history) = by_turns(&empty, &on(&gateway, &load)?, plan).await?;

    let mut calls = Vec::with_capacity(plan.cli_calls);
    for _ in 0..plan.cli_calls {
        calls.push(time_cli(&gateway, &["log", "-n", "10", "--type", "target.response"]).await?);
    }
    let log_median = ms(percentile(&mut calls, 50.0));
    let mut all = Vec::with_capacity(plan.cli_calls);
    for _ in 0..plan.cli_calls {
        all.push(time_cli(&gateway, &["log", "-n", "10"]).await?);
    }
    let all_median = ms(percentile(&mut all, 50.0));
    let dir = gateway.stop().await;

    // Retention removing everything older than the middle of the history,
    // in its batches, while the load runs.
    let keep = NEWEST_AGE + Duration::from_millis(plan.requests / 2);
    let keep = format!("{}s", keep.as_secs().max(1));
    let gateway = Gateway::start_in(
        dir,
        &[("RETENTION", &keep), ("RETENTION_SWEEP_EVERY", "1s")],
    )
    .await?;
    let (empty_then, during_retention) = by_turns(&empty, &on(&gateway, &load)?, plan).await?;
    drop(gateway.stop().await);
    drop(fresh.stop().await);

    println!("| figure | value | goal |");
    println!("|---|---|---|");
    println!("| ingest, empty store | {empty_rate:.0} acks/s | |");
    println!(
        "| ingest, {} stored requests (by turns with the empty store) | {with_history:.0} acks/s ({:+.1}%) | within 15% |",
        plan.requests,
        (with_history / empty_rate - 1.0) * 100.0
    );
    println!(
        "| ingest while retention sweeps (RETENTION={keep}), by turns with the empty store at {empty_then:.0} acks/s | {during_retention:.0} acks/s ({:+.1}%) | |",
        (during_retention / empty_then - 1.0) * 100.0
    );
    println!(
        "| `webhook-cli log -n 10 --type target.response`, median of {} | {log_median:.1} ms | < 10 ms |",
        plan.cli_calls
    );
    println!(
        "| `webhook-cli log -n 10`, median of {} | {all_median:.1} ms | |",
        plan.cli_calls
    );
    Ok(())
}

/// Runs `webhook-cli ARGS` against the gateway; its wall time, process
/// start included.
async fn time_cli(gateway: &Gateway, args: &[&str]) -> anyhow::Result<Duration> {
    let cli = std::env::current_exe()?.with_file_name("webhook-cli");
    let started = Instant::now();
    let out = tokio::process::Command::new(&cli)
        .args(args)
        .env("WEBHOOK_SERVER", format!("http://{}", gateway.admin_addr))
        .env("SECURE_KEY", crate::gateway::SECURE_KEY)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {}", cli.display()))?;
    let elapsed = started.elapsed();
    if !out.status.success() || out.stdout.iter().filter(|b| **b == b'\n').count() != 10 {
        bail!(
            "webhook-cli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

/// Writes `n` requests of ~1 KB to source 1, each with a delivered
/// delivery to target 1 and its attempt, straight into the store.
async fn fill(url: &str, n: u64) -> anyhow::Result<()> {
    let newest_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .saturating_sub(NEWEST_AGE)
        .as_millis();
    let first_ms = i64::try_from(newest_ms)? - i64::try_from(n)?;
    let padding = "x".repeat(1000);
    // The same chunks on either connection type.
    macro_rules! chunks {
        ($conn:expr, $statements:expr) => {
            for start in (0..n).step_by(FILL_CHUNK as usize) {
                let end = (start + FILL_CHUNK).min(n) as i64 - 1;
                let mut tx = $conn.begin().await?;
                for sql in $statements {
                    sqlx::query(sql)
                        .bind(start as i64)
                        .bind(end)
                        .bind(first_ms)
                        .bind(&padding)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                eprintln!("  {} of {n}", end + 1);
            }
        };
    }
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        chunks!(conn, SQLITE_FILL);
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        chunks!(conn, POSTGRES_FILL);
        sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
        // Written out now, not while ingest is measured.
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        conn.close().await?;
    }
    // The file system's dirty pages too, on either store.
    let _ = tokio::process::Command::new("sync").status().await;
    Ok(())
}

/// Rows `?1..=?2`; row i was received at ?3 + i ms; ?4 is body padding.
/// Ids are UUIDv7-shaped: 12 hex digits of milliseconds, then 20 more.
const SQLITE_FILL: [&str; 3] = [
    "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
     INSERT INTO requests (id, source_id, method, path, query, headers, body, remote_addr, created_at) \
     SELECT printf('%012x%020x', ?3 + i, i), 1, 'POST', '/1', '', \
        '[[\"content-type\",\"application/json\"]]', \
        CAST(printf('{\"n\": %d, \"padding\": \"%s\"}', i, ?4) AS BLOB), '127.0.0.1:1', (?3 + i) * 1000 \
     FROM n",
    "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
     INSERT INTO deliveries (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
     SELECT printf('%012x1%019x', ?3 + i, i), printf('%012x%020x', ?3 + i, i), 1, 'delivered', 1, \
        (?3 + i) * 1000, (?3 + i) * 1000, (?3 + i) * 1000 + 2000 \
     FROM n WHERE ?4 IS NOT NULL",
    "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
     INSERT INTO attempts (id, delivery_id, request_id, source_id, target_id, url, attempt, state, \
        status_code, response_headers, response_body, body_truncated, elapsed_us, created_at) \
     SELECT printf('%012x2%019x', ?3 + i, i), printf('%012x1%019x', ?3 + i, i), \
        printf('%012x%020x', ?3 + i, i), 1, 1, 'http://127.0.0.1:9/hook', 1, 'delivered', 200, '[]', \
        X'7b7d', 0, 1500, (?3 + i) * 1000 + 2000 \
     FROM n WHERE ?4 IS NOT NULL",
];

/// The same rows on PostgreSQL.
const POSTGRES_FILL: [&str; 3] = [
    "INSERT INTO requests (id, source_id, method, path, query, headers, body, remote_addr, created_at) \
     SELECT lpad(to_hex($3 + i), 12, '0') || lpad(to_hex(i), 20, '0'), 1, 'POST', '/1', '', \
        '[[\"content-type\",\"application/json\"]]', \
        convert_to(format('{\"n\": %s, \"padding\": \"%s\"}', i, $4::TEXT), 'UTF8'), '127.0.0.1:1', \
        ($3 + i) * 1000 \
     FROM generate_series($1::BIGINT, $2::BIGINT) AS i",
    "INSERT INTO deliveries (id, request_id, target_id, state, attempt, next_run_at, created_at, updated_at) \
     SELECT lpad(to_hex($3 + i), 12, '0') || '1' || lpad(to_hex(i), 19, '0'), \
        lpad(to_hex($3 + i), 12, '0') || lpad(to_hex(i), 20, '0'), 1, 'delivered', 1, \
        ($3 + i) * 1000, ($3 + i) * 1000, ($3 + i) * 1000 + 2000 \
     FROM generate_series($1::BIGINT, $2::BIGINT) AS i WHERE $4::TEXT IS NOT NULL",
    "INSERT INTO attempts (id, delivery_id, request_id, source_id, target_id, url, attempt, state, \
        status_code, response_headers, response_body, body_truncated, elapsed_us, created_at) \
     SELECT lpad(to_hex($3 + i), 12, '0') || '2' || lpad(to_hex(i), 19, '0'), \
        lpad(to_hex($3 + i), 12, '0') || '1' || lpad(to_hex(i), 19, '0'), \
        lpad(to_hex($3 + i), 12, '0') || lpad(to_hex(i), 20, '0'), 1, 1, 'http://127.0.0.1:9/hook', 1, \
        'delivered', 200, '[]', '\\x7b7d'::BYTEA, FALSE, 1500, ($3 + i) * 1000 + 2000 \
     FROM generate_series($1::BIGINT, $2::BIGINT) AS i WHERE $4::TEXT IS NOT NULL",
];
