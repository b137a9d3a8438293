//! The delivery worker: claims due deliveries, sends them concurrently,
//! records each outcome and schedules the next attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::send::send_attempt;
use super::{classify, next_step};
use crate::logbus::LogBus;
use crate::store::Store;
use crate::store::model::{AttemptOutcome, ClaimedDelivery, LogRecord, now_micros};

/// Deliveries claimed in one store round trip.
const CLAIM_BATCH: usize = 64;
/// The longest the worker sleeps without looking at the store.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// Pause after a store error before claiming again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Tries at recording an outcome before leaving it to lease expiry.
const FINISH_TRIES: u32 = 5;

/// The worker and what it needs.
#[derive(Debug, Clone)]
pub struct Worker {
    pub store: Store,
    pub bus: LogBus,
    pub client: reqwest::Client,
    /// Woken when deliveries are created or rescheduled.
    pub wake: Arc<Notify>,
    /// Attempts in flight at once, over all targets.
    pub concurrency: usize,
}

impl Worker {
    /// Runs until `shutdown` is cancelled; then lets attempts in flight
    /// finish for up to `grace` and abandons the rest (their leases return
    /// them to pending).
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            let available = permits.available_permits().min(CLAIM_BATCH);
            if available == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = in_flight.join_next() => continue,
                }
            }
            let claimed = match self.store.claim_due_deliveries(available as u32).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "worker: claiming deliveries failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(STORE_RETRY) => continue,
                    }
                }
            };
            let full_batch = claimed.len() == available;
            for delivery in claimed {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let worker = self.clone();
                in_flight.spawn(async move {
                    worker.deliver(delivery).await;
                    drop(permit);
                });
            }
            if full_batch {
                continue;
            }
            let idle = self.idle_time().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        if !in_flight.is_empty() {
            tracing::info!(in_flight = in_flight.len(), grace = %humantime::format_duration(grace), "worker: draining");
            let drained = tokio::time::timeout(grace, async {
                while in_flight.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    abandoned = in_flight.len(),
                    "worker: grace period over, leaving the rest to lease expiry"
                );
                in_flight.abort_all();
            }
        }
    }

    /// How long to sleep when nothing is due now.
    async fn idle_time(&self) -> Duration {
        match self.store.next_due_at().await {
            Ok(Some(due)) => {
                let wait = due.saturating_sub(now_micros()).max(0);
                Duration::from_micros(wait as u64).min(MAX_IDLE)
            }
            Ok(None) => MAX_IDLE,
            Err(_) => STORE_RETRY,
        }
    }

    /// Sends one attempt and records what came of it.
    async fn deliver(&self, claimed: ClaimedDelivery) {
        let (outcome, elapsed) = send_attempt(&self.client, &claimed).await;
        let verdict = classify(&outcome);
        let finished_at = now_micros();
        let (state, next_run_at) =
            next_step(&claimed.target.retry, claimed.attempt, verdict, finished_at);
        let outcome = AttemptOutcome {
            finished_at,
            outcome,
            state,
            elapsed,
            next_run_at,
        };
        for attempt in 1..=FINISH_TRIES {
            match self.store.finish_attempt(&claimed, outcome.clone()).await {
                Ok(Some(record)) => {
                    tracing::debug!(
                        delivery_id = %claimed.delivery_id,
                        attempt = claimed.attempt,
                        state = record.state.as_str(),
                        "attempt recorded"
                    );
                    self.bus.publish(LogRecord::Attempt(record));
                    if next_run_at.is_some() {
                        self.wake.notify_one();
                    }
                    return;
                }
                Ok(None) => {
                    tracing::info!(delivery_id = %claimed.delivery_id, "attempt outcome dropped: lease lost");
                    return;
                }
                Err(e) => {
                    tracing::warn!(delivery_id = %claimed.delivery_id, try_ = attempt, error = %e, "recording attempt failed");
                    tokio::time::sleep(STORE_RETRY * attempt).await;
                }
            }
        }
    }
}
