//! The delivery worker: sends the deliveries the store's writer claims for
//! it (see `store::dispatch`) concurrently, records each outcome and
//! schedules the next attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::HttpClients;
use super::policy::{Verdict, classify, next_step};
use super::rate::RateLimiter;
use super::send::send_attempt;
use crate::logbus::LogBus;
use crate::store::Store;
use crate::store::dispatch::{self, Slots};
use crate::store::model::{AttemptOutcome, ClaimedDelivery, LogRecord, new_record_id, now_micros};

/// The longest the worker goes without looking at the store for deliveries
/// falling due (new webhooks and outcomes claim on their own).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// After a claim found nothing more due, when to look for the next delivery
/// falling due (a retry, the end of a breaker's cool-down).
const LOOK_AFTER: Duration = Duration::from_millis(10);
/// Pause after a store error before looking again.
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
    /// Woken when deliveries are created or rescheduled outside a webhook's
    /// commit (resends, re-enabled targets).
    pub wake: Arc<Notify>,
    /// Attempts in flight at once, over all targets.
    pub concurrency: usize,
    /// The first cool-down of a target's circuit breaker.
    pub breaker_cooldown: Duration,
}

/// A look at the store for what falls due (see `Worker::look`), running.
type Look<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Instant>> + Send + 'a>>;

/// When to look again, once the look running, if any, has answered; never
/// without one.
async fn look_done(looking: &mut Option<Look<'_>>) -> Option<Instant> {
    match looking {
        Some(look) => look.await,
        None => std::future::pending().await,
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Worker {
    /// Runs until `shutdown` is cancelled; then lets attempts in flight
    /// finish for up to `grace`, and gives the rest back to the store
    /// untried.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let worker_id = new_record_id();
        let (handle, mut feed) = dispatch::channel(&worker_id, self.concurrency);
        if let Err(e) = self.store.dispatch_to(Some(Arc::new(handle))).await {
            tracing::error!(error = %e, "worker: the store's writer is gone");
            return;
        }
        let limiter = Arc::new(Mutex::new(RateLimiter::default()));
        let mut in_flight = JoinSet::new();
        // Deliveries may be due from before the start: look at once.
        let mut look_at = Some(Instant::now());
        // A look runs beside the loop, which keeps starting what is handed
        // over: with a long backlog on PostgreSQL one has taken 20-34 ms.
        let mut looking: Option<Look<'_>> = None;
        loop {
            while in_flight.try_join_next().is_some() {}
            let deadline = look_at.unwrap_or_else(|| Instant::now() + MAX_IDLE);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(dispatched) = feed.receiver.recv() => {
                    for delivery in dispatched.deliveries {
                        self.start(delivery, &limiter, &feed.slots, &mut in_flight).await;
                    }
                    if let Some(refill) = self.update_skip(&limiter, &feed.slots) {
                        look_at = earliest(look_at, Instant::now() + refill);
                    }
                    if dispatched.exhausted {
                        look_at = earliest(look_at, Instant::now() + LOOK_AFTER);
                    }
                }
                _ = self.wake.notified() => self.store.kick(),
                _ = tokio::time::sleep_until(deadline.into()), if looking.is_none() => {
                    look_at = None;
                    looking = Some(Box::pin(self.look(&limiter, &feed.slots)));
                }
                next = look_done(&mut looking), if looking.is_some() => {
                    looking = None;
                    look_at = match (look_at, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        drop(looking);
        // No claims for this worker from here on; what was handed over and
        // not started yet is given back with the leases below.
        if let Err(e) = self.store.dispatch_to(None).await {
            tracing::warn!(error = %e, "worker: the store's writer is gone");
        }
        drop(feed);
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

    /// Starts an attempt, or gives the delivery back if its target is over
    /// its rate limit.
    async fn start(
        &self,
        delivery: ClaimedDelivery,
        limiter: &Mutex<RateLimiter>,
        slots: &Arc<Slots>,
        in_flight: &mut JoinSet<()>,
    ) {
        if let Some(wait) = self.rate_limited(limiter, &delivery) {
            let due = now_micros() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
            if let Err(e) = self.store.unclaim(&delivery, due).await {
                tracing::warn!(error = %e, "worker: giving back a rate-limited delivery failed");
            }
            slots.release(1);
            return;
        }
        let worker = self.clone();
        let slots = slots.clone();
        in_flight.spawn(async move {
            // A recorded outcome frees its slot in the commit that records
            // it; one given up on frees it here.
            if !worker.deliver(delivery).await {
                slots.release(1);
            }
        });
    }

    /// Tells the writer which targets are over their rate limit; returns
    /// how long until the first of them has room again.
    fn update_skip(&self, limiter: &Mutex<RateLimiter>, slots: &Slots) -> Option<Duration> {
        let (skip, refill) = limiter
            .lock()
            .map(|mut l| l.exhausted(Instant::now()))
            .unwrap_or_default();
        slots.set_skip(skip);
        refill
    }

    /// Looks for deliveries due now (and has them claimed) or later;
    /// returns when to look again.
    async fn look(&self, limiter: &Mutex<RateLimiter>, slots: &Slots) -> Option<Instant> {
        let refill = self.update_skip(limiter, slots);
        let now = Instant::now();
        let next = match self.store.next_due_at(&slots.skip()).await {
            Ok(Some(due)) => {
                let wait = due.saturating_sub(now_micros());
                if wait <= 0 {
                    if slots.free() > 0 {
                        self.store.kick();
                    }
                    // A claim answers; if every slot is taken, finishing
                    // attempts claim again.
                    None
                } else {
                    Some(now + Duration::from_micros(wait.unsigned_abs()).min(MAX_IDLE))
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "worker: looking for due deliveries failed");
                Some(now + STORE_RETRY)
            }
        };
        refill.map_or(next, |refill| earliest(next, now + refill))
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

    /// Sends one attempt and records what came of it; false if the outcome
    /// could not be recorded (the lease will expire).
    async fn deliver(&self, claimed: ClaimedDelivery) -> bool {
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
                    self.bus.publish(LogRecord::Attempt(Box::new(record)));
                    return true;
                }
                Ok(None) => {
                    tracing::info!(delivery_id = %claimed.delivery_id, "attempt outcome dropped: lease lost");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(delivery_id = %claimed.delivery_id, try_ = attempt, error = %e, "recording attempt failed");
                    let pause = (STORE_RETRY * attempt).min(FINISH_RETRY_MAX);
                    if tokio::time::Instant::now() + pause > give_up {
                        tracing::warn!(delivery_id = %claimed.delivery_id, "attempt outcome not recorded: the lease will expire and the delivery be tried again");
                        return false;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        false
    }
}
