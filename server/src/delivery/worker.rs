//! The delivery worker: claims due deliveries, sends them concurrently,
//! records each outcome and schedules the next attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::HttpClients;
use super::policy::{Verdict, classify, next_step};
use super::rate::RateLimiter;
use super::send::send_attempt;
use crate::logbus::LogBus;
use crate::store::Store;
use crate::store::model::{AttemptOutcome, ClaimedDelivery, LogRecord, new_record_id, now_micros};

/// Deliveries claimed in one store round trip.
const CLAIM_BATCH: usize = 64;
/// Free slots worth a claim while attempts are in flight...
const MIN_CLAIM: usize = 16;
/// ...or how long to wait for that many before claiming fewer.
const BATCH_WAIT: Duration = Duration::from_millis(2);
/// The longest the worker sleeps without looking at the store.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// The shortest pause when due work could not be claimed (every due target
/// is at its in-flight or rate limit); finishing attempts wake it sooner.
const MIN_IDLE: Duration = Duration::from_millis(50);
/// Pause after a store error before claiming again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How long the worker keeps trying to record an outcome while the store is
/// unavailable. A lease lasts the target's timeout plus 30 s from the claim,
/// so until then the outcome is still the live one; after that the lease
/// expires and the delivery is tried again anyway.
const FINISH_FOR: Duration = Duration::from_secs(25);
/// The longest pause between two tries at recording an outcome.
const FINISH_RETRY_MAX: Duration = Duration::from_secs(5);

/// The worker and what it needs.
#[derive(Debug, Clone)]
pub struct Worker {
    pub store: Store,
    pub bus: LogBus,
    pub clients: HttpClients,
    /// Woken when deliveries are created or rescheduled.
    pub wake: Arc<Notify>,
    /// Attempts in flight at once, over all targets.
    pub concurrency: usize,
    /// The first cool-down of a target's circuit breaker.
    pub breaker_cooldown: Duration,
}

impl Worker {
    /// Runs until `shutdown` is cancelled; then lets attempts in flight
    /// finish for up to `grace`, and gives the rest back to the store
    /// untried.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let worker_id = new_record_id();
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let limiter = Arc::new(Mutex::new(RateLimiter::default()));
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            let available = permits.available_permits().min(CLAIM_BATCH);
            // Under load, claim in batches (one claim, one commit, for many
            // deliveries) rather than one slot at a time.
            if available == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = in_flight.join_next() => continue,
                }
            }
            if available < MIN_CLAIM.min(self.concurrency) && !in_flight.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = in_flight.join_next() => continue,
                    _ = tokio::time::sleep(BATCH_WAIT) => {}
                }
            }
            let (skip, refill) = limiter
                .lock()
                .map(|mut l| l.exhausted(Instant::now()))
                .unwrap_or_default();
            let claimed = match self
                .store
                .claim_due_deliveries(&worker_id, available as u32, &skip)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "worker: claiming deliveries failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(STORE_RETRY) => continue,
                    }
                }
            };
            let claimed_count = claimed.len();
            for delivery in claimed {
                if let Some(wait) = self.rate_limited(&limiter, &delivery) {
                    let due = now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
                    if let Err(e) = self.store.unclaim(&delivery, due).await {
                        tracing::warn!(error = %e, "worker: giving back a rate-limited delivery failed");
                    }
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let worker = self.clone();
                in_flight.spawn(async move {
                    worker.deliver(delivery).await;
                    drop(permit);
                });
            }
            if claimed_count == available {
                continue;
            }
            let mut idle = self.idle_time(&skip).await;
            if let Some(refill) = refill {
                idle = idle.min(refill);
            }
            if claimed_count == 0 {
                idle = idle.max(MIN_IDLE);
            }
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
                    "worker: grace period over, giving unfinished attempts back"
                );
                in_flight.abort_all();
                while in_flight.join_next().await.is_some() {}
            }
        }
        match self.store.release_leases(&worker_id).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "worker: leases given back"),
            Err(e) => tracing::warn!(error = %e, "worker: leases not given back; they will expire"),
        }
    }

    /// How long until the target of `delivery` may be sent to again, if it
    /// is over its rate limit now.
    fn rate_limited(
        &self,
        limiter: &Mutex<RateLimiter>,
        delivery: &ClaimedDelivery,
    ) -> Option<Duration> {
        let limit = delivery.target.settings.rate?;
        let mut limiter = limiter.lock().ok()?;
        limiter
            .try_take(delivery.target.id, limit, Instant::now())
            .err()
    }

    /// How long to sleep when nothing is due now.
    async fn idle_time(&self, skip: &[i64]) -> Duration {
        match self.store.next_due_at(skip).await {
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
        let settings = &claimed.target.settings;
        let client = self.clients.for_target(settings.follow_redirects);
        let (outcome, elapsed) = send_attempt(client, &claimed).await;
        let verdict = classify(&outcome, settings);
        let finished_at = now_micros();
        let (state, next_run_at) = next_step(
            &settings.retry,
            claimed.attempt,
            verdict,
            finished_at,
            &mut rand::rng(),
        );
        let disable_target = (verdict == Verdict::Gone).then(|| {
            format!(
                "410 Gone from {} at {}",
                claimed.target.url,
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            )
        });
        let outcome = AttemptOutcome {
            finished_at,
            outcome,
            state,
            elapsed,
            next_run_at,
            disable_target,
            target_failed: verdict.target_failed(),
        };
        let give_up = tokio::time::Instant::now() + FINISH_FOR;
        for attempt in 1u32.. {
            match self
                .store
                .finish_attempt(&claimed, outcome.clone(), self.breaker_cooldown)
                .await
            {
                Ok(Some(record)) => {
                    tracing::debug!(
                        delivery_id = %claimed.delivery_id,
                        attempt = claimed.attempt,
                        state = record.state.as_str(),
                        "attempt recorded"
                    );
                    self.bus.publish(LogRecord::Attempt(record));
                    // A slot is free, and the breaker or a retry may have moved.
                    self.wake.notify_one();
                    return;
                }
                Ok(None) => {
                    tracing::info!(delivery_id = %claimed.delivery_id, "attempt outcome dropped: lease lost");
                    return;
                }
                Err(e) => {
                    tracing::warn!(delivery_id = %claimed.delivery_id, try_ = attempt, error = %e, "recording attempt failed");
                    let pause = (STORE_RETRY * attempt).min(FINISH_RETRY_MAX);
                    if tokio::time::Instant::now() + pause > give_up {
                        tracing::warn!(delivery_id = %claimed.delivery_id, "attempt outcome not recorded: the lease will expire and the delivery be tried again");
                        return;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}
