//! The hand-over between the store's group writer and the delivery worker.
//!
//! The worker does not claim deliveries in transactions of its own: each
//! batch the writer commits (new requests, attempt outcomes) also claims, in
//! the same transaction, as many due deliveries as the worker has free
//! slots, and hands them over once the commit has returned. A new webhook
//! is on its way to its target right after the commit that acknowledged it,
//! with its body still in memory; an outcome's commit frees its slot and
//! fills it again in one go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::model::ClaimedDelivery;

/// What one commit claimed for the worker.
#[derive(Debug)]
pub struct Dispatched {
    pub deliveries: Vec<ClaimedDelivery>,
    /// The claim found fewer due deliveries than it had slots for: nothing
    /// else is due now, so the worker watches the clock for what falls due
    /// later (retries, breaker cool-downs).
    pub exhausted: bool,
}

/// The worker's free slots and the targets it wants left out of claims
/// (over their rate limit), shared with the writer.
#[derive(Debug)]
pub struct Slots {
    free: AtomicUsize,
    skip: Mutex<Vec<i64>>,
}

impl Slots {
    /// Slots free for new attempts now.
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Acquire)
    }

    /// Gives `n` slots back.
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.free.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Takes `n` slots (never more than are free: only the writer takes).
    pub(super) fn take(&self, n: usize) {
        if n > 0 {
            let _ = self
                .free
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                    Some(free.saturating_sub(n))
                });
        }
    }

    /// Targets to leave out of claims.
    pub fn skip(&self) -> Vec<i64> {
        self.skip.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the targets to leave out of claims.
    pub fn set_skip(&self, targets: Vec<i64>) {
        if let Ok(mut skip) = self.skip.lock() {
            *skip = targets;
        }
    }
}

/// The writer's side: where to send what it claimed.
#[derive(Debug)]
pub struct DispatchHandle {
    /// Leases are `worker_id.<claim id>`: a finish whose lease starts with
    /// it frees one of this worker's slots when it commits.
    pub worker_id: String,
    pub slots: Arc<Slots>,
    out: mpsc::Sender<Dispatched>,
    /// The worker's slots in all.
    total: usize,
}

impl DispatchHandle {
    /// Hands claimed deliveries over. Every message that carries some takes
    /// a slot until the worker has started it, so the channel (room for
    /// every slot and then some) never refuses one; a message that only
    /// says nothing else is due is left out when the worker is behind.
    pub fn hand_over(&self, dispatched: Dispatched) {
        if dispatched.deliveries.is_empty() {
            if self.out.capacity() > self.total {
                let _ = self.out.try_send(dispatched);
            }
            return;
        }
        let count = dispatched.deliveries.len();
        if let Err(e) = self.out.try_send(dispatched) {
            // The worker is gone: its leases expire or are given back.
            tracing::warn!(error = %e, "claimed deliveries not handed over: they will be tried once their lease expires");
            self.slots.release(count);
        }
    }

    /// Whether a lease belongs to this worker.
    pub fn owns(&self, lease_token: &str) -> bool {
        lease_token
            .strip_prefix(self.worker_id.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// The worker's side.
#[derive(Debug)]
pub struct DispatchFeed {
    pub slots: Arc<Slots>,
    pub receiver: mpsc::Receiver<Dispatched>,
}

/// A connected pair for a worker with `slots` attempts at once.
pub fn channel(worker_id: &str, slots: usize) -> (DispatchHandle, DispatchFeed) {
    let total = slots;
    let slots = Arc::new(Slots {
        free: AtomicUsize::new(total),
        skip: Mutex::new(Vec::new()),
    });
    let (out, receiver) = mpsc::channel(total + 64);
    (
        DispatchHandle {
            worker_id: worker_id.to_owned(),
            slots: slots.clone(),
            out,
            total,
        },
        DispatchFeed { slots, receiver },
    )
}
