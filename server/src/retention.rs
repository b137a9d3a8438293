//! The retention task: every sweep interval, removes records older than the
//! retention period in small batches, pausing between them (at least four
//! times as long as the batch took) so ingest keeps the writer most of the
//! time.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::model::now_micros;

/// Shortest pause between two batches of one sweep.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);
/// The pause is at least this many times the batch's own time, so a sweep
/// holds the store's writer for at most a fifth of the time.
const PAUSE_PER_BATCH_TIME: u32 = 4;

/// Runs until `shutdown`: every `every`, removes what is older than `keep`.
pub async fn run(store: Store, keep: Duration, every: Duration, shutdown: CancellationToken) {
    let keep_micros = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = now_micros().saturating_sub(keep_micros);
        let (mut requests, mut deliveries, mut attempts) = (0, 0, 0);
        loop {
            let started = std::time::Instant::now();
            match store.sweep_older_than(cutoff).await {
                Ok(swept) => {
                    requests += swept.requests;
                    deliveries += swept.deliveries;
                    attempts += swept.attempts;
                    if swept.requests + swept.deliveries + swept.attempts == 0 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention: sweep failed; trying again next time");
                    break;
                }
            }
            let pause = BETWEEN_BATCHES.max(started.elapsed() * PAUSE_PER_BATCH_TIME);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if requests + deliveries + attempts > 0 {
            tracing::info!(requests, deliveries, attempts, keep = %humantime::format_duration(keep), "retention: removed old records");
        }
    }
}
