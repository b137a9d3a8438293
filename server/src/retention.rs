//! The retention task: every sweep interval, removes records older than the
//! retention period in small batches, pausing between them so ingest keeps
//! the writer most of the time.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::model::now_micros;

/// Pause between two batches of one sweep.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

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
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(BETWEEN_BATCHES) => {}
            }
        }
        if requests + deliveries + attempts > 0 {
            tracing::info!(requests, deliveries, attempts, keep = %humantime::format_duration(keep), "retention: removed old records");
        }
    }
}
