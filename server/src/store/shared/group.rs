//! Group commit: one writer task takes the hot writes (ingests and attempt
//! outcomes) off a channel, applies every one that is waiting inside one
//! transaction, claims in the same transaction the due deliveries the
//! delivery worker has slots for (see `store::dispatch`), commits once (one
//! fsync), and only then answers each caller and hands the claims over.
//! If anything in the batch fails, each write is retried on its own, with
//! no claim; the next batch claims for those that went in, a batch made
//! for that alone if no write is waiting. The writer keeps its connection
//! from one batch to the next while writes keep coming. A backend may give
//! the writer a connection of its own (`Direct`, SQLite's) for the batches
//! that hold only webhooks, simple outcomes and probes; the pool's
//! connection is then held all the same, so that nothing else writes at
//! the same time. Or it may write the batches of webhooks and simple
//! outcomes, with their claim, in one statement that commits by itself
//! (`OneStatement`, PostgreSQL's, where every statement is a round trip).
//! Both of these claim the deliveries that waited first, and write a
//! batch's own deliveries in flight, under the claim's lease, where their
//! target has room left (see `SendNow`): not pending, then claimed.

use std::time::Duration;

use super::{DbConn, DbPool};
use tokio::sync::{mpsc, oneshot};

use super::deliveries::{
    assemble_claims, claim_in, expire_leases_in, finish_in, finish_many_in, is_simple,
    load_targets, missing_requests, new_lease_token,
};
use super::requests::{ingest_in, ingest_many_in};
use crate::store::StoreError;
use crate::store::dispatch::{DispatchHandle, Dispatched};
use crate::store::model::{AttemptOutcome, AttemptRecord, ClaimedDelivery, StoredRequest};

/// The writer's connection, kept from one batch to the next.
type Held = sqlx::pool::PoolConnection<super::Db>;

/// The longest the writer keeps its connection while writes keep coming.
const HOLD_FOR: Duration = Duration::from_millis(5);

/// Writes waiting for the writer; callers wait when it is full.
const QUEUE: usize = 4096;
/// The most writes in one transaction.
const MAX_BATCH: usize = 512;
/// The most deliveries one batch claims for the worker.
const MAX_CLAIM: usize = 256;
/// How long batches skip claiming after a claim failed.
const CLAIM_PAUSE: Duration = Duration::from_secs(1);
/// How often claims first return expired leases to pending.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How long claims use a target's settings read earlier. Changes made
/// through this gateway, and outcomes that move a breaker, drop them at
/// once; this bounds how long a change made through another gateway
/// sharing the database takes to show.
const TARGETS_FOR: Duration = Duration::from_secs(1);

enum Write {
    Ingest {
        request: std::sync::Arc<StoredRequest>,
        targets: Vec<i64>,
        reply: oneshot::Sender<Result<u32, StoreError>>,
    },
    Finish {
        claimed: Box<ClaimedDelivery>,
        outcome: Box<AttemptOutcome>,
        cooldown: Duration,
        reply: oneshot::Sender<Result<Option<AttemptRecord>, StoreError>>,
    },
    Probe {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Claim due deliveries for the worker in the next batch (no answer).
    Kick,
    /// Hands claims to a worker from now on (Some), or to none (None);
    /// answered once no later batch claims for the one before.
    Dispatch {
        handle: Option<std::sync::Arc<DispatchHandle>>,
        reply: oneshot::Sender<()>,
    },
}

/// The handle callers send writes through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<Write>,
    last_failure: LastFailure,
}

/// When a write last failed to commit, and why; cleared by the next commit
/// that succeeds. A nearly full disk still takes the health probe's small
/// write while webhooks fail, so health reports this too.
#[derive(Debug, Clone, Default)]
struct LastFailure(std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>);

impl LastFailure {
    fn set(&self, error: &StoreError) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some((std::time::Instant::now(), error.to_string()));
        }
    }

    fn clear(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = None;
        }
    }

    fn within(&self, window: Duration) -> Option<String> {
        let last = self.0.lock().ok()?;
        let (at, message) = last.as_ref()?;
        (at.elapsed() < window).then(|| message.clone())
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

impl GroupWriter {
    /// Starts the writer task on `pool` (the store's single writer
    /// connection), and `direct`, the writer's own connection if the backend
    /// has one, or `one`, its way of writing a plain batch in one statement.
    /// Claims read targets afresh whenever `catalog` moves.
    pub fn start(
        pool: DbPool,
        direct: Option<super::Direct>,
        one: Option<super::OneStatement>,
        upkeep: super::Upkeep,
        catalog: super::routing::Generation,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let last_failure = LastFailure::default();
        let writer = Writer {
            pool,
            direct,
            one,
            upkeep,
            held: None,
        };
        let task = run(writer, receiver, last_failure.clone(), catalog);
        // A thread of its own: under load the runtime's workers are busy
        // with connections, and every statement's answer would wait its
        // turn behind them to wake the writer.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => {
                let spawned = std::thread::Builder::new()
                    .name("group-writer".into())
                    .spawn(move || runtime.block_on(task));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "group writer: no thread of its own");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "group writer: no runtime of its own, sharing the main one");
                tokio::spawn(task);
            }
        }
        GroupWriter {
            queue,
            last_failure,
        }
    }

    /// The last write failure, if it happened within `window` and nothing
    /// has committed since.
    pub fn recent_failure(&self, window: Duration) -> Option<String> {
        self.last_failure.within(window)
    }

    /// A real, durable write (the health probe): a full disk or a locked
    /// store shows here, where a read or a no-op write would still pass.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write::Probe { reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Makes every batch claim due deliveries for `handle`'s worker (or,
    /// with None, stops that); returns once the change is in effect.
    pub async fn dispatch_to(
        &self,
        handle: Option<std::sync::Arc<DispatchHandle>>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write::Dispatch { handle, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())
    }

    /// Asks the next batch to claim due deliveries for the worker. If the
    /// queue is full a batch is coming anyway.
    pub fn kick(&self) {
        let _ = self.queue.try_send(Write::Kick);
    }

    /// Commits a received request and its deliveries.
    pub async fn ingest(
        &self,
        request: std::sync::Arc<StoredRequest>,
        targets: Vec<i64>,
    ) -> Result<u32, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write::Ingest {
                request,
                targets,
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Records an attempt's outcome (see `Store::finish_attempt`).
    pub async fn finish(
        &self,
        claimed: ClaimedDelivery,
        outcome: AttemptOutcome,
        cooldown: Duration,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write::Finish {
                claimed: Box::new(claimed),
                outcome: Box::new(outcome),
                cooldown,
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// What the writer writes with.
struct Writer {
    pool: DbPool,
    /// The writer's own connection (SQLite), for plain batches.
    direct: Option<super::Direct>,
    /// Plain batches in one statement (PostgreSQL).
    one: Option<super::OneStatement>,
    upkeep: super::Upkeep,
    /// The pool's connection, while the writer keeps it, and since when.
    held: Option<(Held, std::time::Instant)>,
}

async fn run(
    mut writer: Writer,
    mut receiver: mpsc::Receiver<Write>,
    last_failure: LastFailure,
    catalog: super::routing::Generation,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut dispatcher = Dispatcher {
        catalog,
        ..Dispatcher::default()
    };
    loop {
        if dispatcher.claim_owed {
            // The claim a batch written one by one could not make, with
            // whatever else is waiting.
            dispatcher.claim_owed = false;
            batch.push(Write::Kick);
            while batch.len() < MAX_BATCH
                && let Ok(write) = receiver.try_recv()
            {
                batch.push(write);
            }
        } else if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        dispatcher.take_changes(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let probes_only = batch
            .iter()
            .all(|w| matches!(w, Write::Probe { .. } | Write::Kick));
        let r = commit_batch(&mut writer, std::mem::take(&mut batch), &mut dispatcher).await;
        // Others that write (the admin service, retention) get the
        // connection when the queue runs dry, and at least every HOLD_FOR.
        if r.is_err()
            || receiver.is_empty()
            || writer
                .held
                .as_ref()
                .is_some_and(|(_, since)| since.elapsed() >= HOLD_FOR)
        {
            writer.held = None;
        }
        match r {
            Err(e) => last_failure.set(&e),
            // A probe's success says little about webhooks' writes.
            Ok(()) if !probes_only => last_failure.clear(),
            Ok(()) => {}
        }
    }
}

/// What a write did inside a transaction that has not committed yet.
enum Applied {
    Ingest(u32),
    Finish(Option<Box<AttemptRecord>>),
    Probe,
    Kick,
}

/// The worker the batches claim for, if any.
#[derive(Default)]
struct Dispatcher {
    handle: Option<std::sync::Arc<DispatchHandle>>,
    expired_at: Option<std::time::Instant>,
    /// Targets as claims last read them, with the catalog's generation
    /// then and the time.
    targets: std::collections::HashMap<i64, std::sync::Arc<crate::store::model::Target>>,
    targets_read: Option<(u64, std::time::Instant)>,
    catalog: super::routing::Generation,
    /// After a claim failed: no claims until then.
    paused_until: Option<std::time::Instant>,
    /// A batch was written one by one, with no claim, and some of its
    /// webhooks or outcomes went in: the next batch claims, even a batch
    /// of nothing else.
    claim_owed: bool,
}

impl Dispatcher {
    /// Applies (and answers) the attach and detach requests in `batch`,
    /// leaving the other writes.
    fn take_changes(&mut self, batch: &mut Vec<Write>) {
        if !batch.iter().any(|w| matches!(w, Write::Dispatch { .. })) {
            return;
        }
        for write in std::mem::take(batch) {
            match write {
                Write::Dispatch { handle, reply } => {
                    self.handle = handle;
                    let _ = reply.send(());
                }
                other => batch.push(other),
            }
        }
    }

    /// The finishes in `batch` of this worker's attempts: each frees a slot
    /// once it commits.
    fn released(&self, batch: &[Write]) -> usize {
        let Some(handle) = &self.handle else {
            return 0;
        };
        batch
            .iter()
            .filter(
                |w| matches!(w, Write::Finish { claimed, .. } if handle.owns(&claimed.lease_token)),
            )
            .count()
    }

    /// How many deliveries `batch` should claim: none unless it may have
    /// made some due or freed slots (new deliveries, outcomes, a kick).
    fn wanted(&self, batch: &[Write], released: usize) -> usize {
        self.wanted_now(may_have_work(batch), released)
    }

    /// How many deliveries a claim should take now, with `released` slots
    /// about to be freed: none if no work `may` have come.
    fn wanted_now(&self, may: bool, released: usize) -> usize {
        let Some(handle) = &self.handle else {
            return 0;
        };
        if !may
            || self
                .paused_until
                .is_some_and(|until| std::time::Instant::now() < until)
        {
            return 0;
        }
        (handle.slots.free() + released).min(MAX_CLAIM)
    }

    /// The targets read earlier, unless the catalog changed since, they
    /// are old, or the batch may have `moved` a breaker or disabled a target.
    fn current_targets(
        &mut self,
        moved: bool,
    ) -> &mut std::collections::HashMap<i64, std::sync::Arc<crate::store::model::Target>> {
        let generation = self.catalog.current();
        let stale = self
            .targets_read
            .is_none_or(|(seen, at)| seen != generation || at.elapsed() >= TARGETS_FOR);
        if moved || stale {
            self.targets.clear();
            self.targets_read = Some((generation, std::time::Instant::now()));
        }
        &mut self.targets
    }

    /// The claim a batch makes for the worker, of at most `limit`
    /// deliveries, if any; `fresh` are the requests the batch wrote.
    fn claim_now<'b>(&mut self, limit: usize, fresh: Fresh<'b>) -> Option<Claim<'b>> {
        let handle = self.handle.clone().filter(|_| limit > 0)?;
        Some(Claim {
            skip: handle.slots.skip(),
            handle,
            expire: self.expire_now(),
            limit,
            fresh,
        })
    }

    /// Whether this claim should first return expired leases.
    fn expire_now(&mut self) -> bool {
        let now = std::time::Instant::now();
        let due = self
            .expired_at
            .is_none_or(|at| now.duration_since(at) >= EXPIRE_EVERY);
        if due {
            self.expired_at = Some(now);
        }
        due
    }
}

/// What a batch's claim works with.
struct Claim<'b> {
    handle: std::sync::Arc<DispatchHandle>,
    /// Targets with no free slot.
    skip: Vec<i64>,
    /// Whether expired leases go back to pending first.
    expire: bool,
    limit: usize,
    /// The requests written by the same batch, handed over from memory
    /// instead of read back.
    fresh: Fresh<'b>,
}

/// Requests a batch wrote, by id.
type Fresh<'b> = std::collections::HashMap<&'b str, &'b std::sync::Arc<StoredRequest>>;

impl Claim<'_> {
    fn limit_u32(&self) -> u32 {
        u32::try_from(self.limit).unwrap_or(u32::MAX)
    }

    /// What goes to the worker: the claimed deliveries, and whether the
    /// claim took all there was (`taken` rows, fewer than it could).
    fn dispatched(&self, deliveries: Vec<ClaimedDelivery>, taken: usize) -> Dispatched {
        Dispatched {
            deliveries,
            exhausted: taken < self.limit,
        }
    }
}

/// The claim of a batch that wrote the `fresh` requests and may have
/// `moved` a breaker, on `conn` (inside the batch's transaction, or after
/// it).
async fn claim_for(
    conn: &mut DbConn,
    dispatcher: &mut Dispatcher,
    moved: bool,
    fresh: Fresh<'_>,
    limit: usize,
) -> Result<Option<Dispatched>, StoreError> {
    let Some(claim) = dispatcher.claim_now(limit, fresh) else {
        return Ok(None);
    };
    let targets = dispatcher.current_targets(moved);
    let (deliveries, rows) = claim_in(
        conn,
        &claim.handle.worker_id,
        claim.limit_u32(),
        &claim.skip,
        claim.expire,
        &claim.fresh,
        targets,
    )
    .await?;
    Ok(Some(claim.dispatched(deliveries, rows)))
}

/// The requests written by `batch`, by id: claims hand them over from
/// memory instead of reading them back.
fn fresh_requests(batch: &[Write]) -> Fresh<'_> {
    batch
        .iter()
        .filter_map(|w| match w {
            Write::Ingest { request, .. } => Some((request.id.as_str(), request)),
            _ => None,
        })
        .collect()
}

/// Whether `batch` may have made deliveries due or freed slots (new
/// deliveries, outcomes, a kick).
fn may_have_work(batch: &[Write]) -> bool {
    batch.iter().any(|w| match w {
        Write::Ingest { targets, .. } => !targets.is_empty(),
        Write::Finish { .. } | Write::Kick => true,
        Write::Probe { .. } | Write::Dispatch { .. } => false,
    })
}

/// Whether `batch` may move a breaker or disable a target (an outcome that
/// is not simple).
fn moves_targets(batch: &[Write]) -> bool {
    batch.iter().any(
        |w| matches!(w, Write::Finish { claimed, outcome, .. } if !is_simple(claimed, outcome)),
    )
}

/// Whether every write of `batch` can go through the writer's own
/// connection: webhooks, simple outcomes (see `is_simple`), probes.
fn plain(batch: &[Write]) -> bool {
    batch.iter().all(|w| match w {
        Write::Finish {
            claimed, outcome, ..
        } => is_simple(claimed, outcome),
        Write::Ingest { .. } | Write::Probe { .. } | Write::Kick | Write::Dispatch { .. } => true,
    })
}

/// A batch's claim failed: this batch is written again one by one, without
/// claims; the next ones skip claiming for a while rather than fail the
/// same way.
fn pause_claims(dispatcher: &mut Dispatcher, e: &StoreError) {
    tracing::warn!(error = %e, pause = ?CLAIM_PAUSE, "claiming deliveries failed; claims paused");
    dispatcher.paused_until = Some(std::time::Instant::now() + CLAIM_PAUSE);
}

/// Commits a batch and answers every write. A write is answered Ok only if
/// the COMMIT that contains it returned Ok.
///
/// The batch is first tried as one transaction, all or nothing. If any
/// statement fails, that transaction is rolled back and every write is
/// retried in a transaction of its own. (SQLite may roll back the whole
/// transaction by itself on some errors, disk full among them, so nothing is
/// ever continued after a failed statement.)
/// Returns the first failure, if any write failed.
async fn commit_batch(
    writer: &mut Writer,
    batch: Vec<Write>,
    dispatcher: &mut Dispatcher,
) -> Result<(), StoreError> {
    let conn = match &mut writer.held {
        Some((conn, _)) => conn,
        None => match writer.pool.acquire().await {
            Ok(conn) => &mut writer.held.insert((conn, std::time::Instant::now())).0,
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(error = %message, writes = batch.len(), "group commit: no connection");
                fail_all(batch, &message);
                return Err(StoreError::Unavailable(sqlx::Error::Protocol(message)));
            }
        },
    };
    let conn = &mut **conn;
    if let Some(direct) = writer.direct.as_mut()
        && plain(&batch)
    {
        return commit_direct(direct, conn, batch, &writer.upkeep, dispatcher).await;
    }
    if let Some(one) = writer.one.as_ref()
        && in_one_statement(&batch)
    {
        return commit_one_statement(one, conn, batch, dispatcher).await;
    }
    if let Err(e) = begin(conn).await {
        return cannot_begin(batch, e);
    }
    let released = dispatcher.released(&batch);
    let wanted = dispatcher.wanted(&batch, released);
    let applied = match apply_all(conn, &batch).await {
        Ok(applied) => claim_for(
            conn,
            dispatcher,
            moves_targets(&batch),
            fresh_requests(&batch),
            wanted,
        )
        .await
        .inspect_err(|e| pause_claims(dispatcher, e))
        .map(|claimed| (applied, claimed)),
        Err(e) => Err(e),
    };
    match end(conn, applied).await {
        Ok((applied, claimed)) => {
            settle(batch, applied, released, claimed, dispatcher);
            // After the answers: nobody waits on the backend's upkeep.
            writer.upkeep.after_commit(conn).await;
            Ok(())
        }
        Err(e) => {
            if matches!(e, StoreError::LeaseLost) {
                tracing::info!(
                    writes = batch.len(),
                    "an outcome's lease was lost; writing one by one"
                );
            } else {
                tracing::warn!(error = %e, writes = batch.len(), "group commit failed; writing one by one");
            }
            one_by_one(conn, batch, dispatcher).await
        }
    }
}

/// A plain batch (see `plain`) on the writer's own connection, each write
/// with its own statements, and its claim; on failure, every write again
/// one by one through the pool's connection `conn`, which also reads the
/// claims' targets.
async fn commit_direct(
    direct: &mut super::Direct,
    conn: &mut DbConn,
    batch: Vec<Write>,
    upkeep: &super::Upkeep,
    dispatcher: &mut Dispatcher,
) -> Result<(), StoreError> {
    if let Err(e) = direct.begin() {
        return cannot_begin(batch, e);
    }
    let released = dispatcher.released(&batch);
    let wanted = dispatcher.wanted(&batch, released);
    let applied = match write_direct(direct, conn, dispatcher, &batch, wanted).await {
        Ok(applied) => Ok(applied),
        Err(Failed::Claim(e)) => {
            pause_claims(dispatcher, &e);
            Err(e)
        }
        Err(Failed::Write(e)) => Err(e),
    };
    let ended = match applied {
        Ok(applied) => direct.end(true).map(|()| applied),
        Err(e) => {
            // Rolls back; the batch's own failure is what is reported.
            let _ = direct.end(false);
            Err(e)
        }
    };
    match ended {
        Ok((applied, claimed)) => {
            settle(batch, applied, released, claimed, dispatcher);
            direct.after_commit(upkeep);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = batch.len(), "group commit failed; writing one by one");
            one_by_one(conn, batch, dispatcher).await
        }
    }
}

/// What failed in a batch on the writer's own connection: one of its
/// writes, or its claim (which pauses claims).
enum Failed {
    Write(StoreError),
    Claim(StoreError),
}

/// The writes of a plain batch on the writer's own connection, inside its
/// transaction, with its claim of up to `limit` deliveries: outcomes and
/// probes first (the slots they free go to the claim), then the due
/// deliveries, then the batch's webhooks, whose deliveries are written in
/// flight within the room the claim left at their targets (see
/// `SendNow`) and pending beyond it. Returns each write's result, in
/// order, and what the claim took.
async fn write_direct(
    direct: &mut super::Direct,
    conn: &mut DbConn,
    dispatcher: &mut Dispatcher,
    batch: &[Write],
    limit: usize,
) -> Result<(Vec<Applied>, Option<Dispatched>), Failed> {
    let mut applied = Vec::with_capacity(batch.len());
    for write in batch {
        applied.push(match write {
            Write::Ingest { .. } => None,
            other => {
                Some(apply_direct(direct, other, None, &mut Vec::new()).map_err(Failed::Write)?)
            }
        });
    }
    let claim = dispatcher.claim_now(limit, fresh_requests(batch));
    let now = crate::store::model::now_micros();
    let mut taken = Vec::new();
    let mut send_now = None;
    if let Some(claim) = &claim {
        let lease_token = new_lease_token(&claim.handle.worker_id);
        taken = direct
            .claim(
                &lease_token,
                claim.limit_u32(),
                &claim.skip,
                claim.expire,
                now,
            )
            .map_err(Failed::Claim)?;
        let left = claim.limit.saturating_sub(taken.len());
        let delivers = batch
            .iter()
            .any(|w| matches!(w, Write::Ingest { targets, .. } if !targets.is_empty()));
        let room = if left > 0 && delivers {
            direct.room(&claim.skip, now).map_err(Failed::Claim)?
        } else {
            std::collections::HashMap::new()
        };
        send_now = Some(SendNow {
            lease_token,
            now,
            left,
            room,
        });
    }
    // The webhooks, each in its place among the writes applied above.
    let applied = batch
        .iter()
        .zip(applied)
        .map(|(write, done)| match done {
            Some(done) => Ok(done),
            None => {
                apply_direct(direct, write, send_now.as_mut(), &mut taken).map_err(Failed::Write)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (Some(claim), Some(send_now)) = (claim, send_now) else {
        return Ok((applied, None));
    };
    let count = taken.len();
    let lease_token = send_now.lease_token;
    let assembled = async {
        let loaded = direct.requests(&missing_requests(&taken, &claim.fresh))?;
        let targets = dispatcher.current_targets(moves_targets(batch));
        load_targets(conn, &taken, targets).await?;
        let (deliveries, gone) =
            assemble_claims(taken, &lease_token, &claim.fresh, loaded, targets);
        for delivery_id in gone {
            direct.cancel_claimed(&delivery_id, &lease_token, now)?;
        }
        Ok(deliveries)
    }
    .await
    .map_err(Failed::Claim)?;
    Ok((applied, Some(claim.dispatched(assembled, count))))
}

/// Where a batch's own deliveries may go out in the commit that stores
/// them (on the writer's own connection): under the claim's lease, at
/// most `left` of them, and at most each open target's `room` after the
/// claim took the deliveries that waited.
#[allow(dead_code, reason = "read by SQLite's Direct only")]
pub(super) struct SendNow {
    pub(super) lease_token: String,
    pub(super) now: i64,
    left: usize,
    room: std::collections::HashMap<i64, i64>,
}

impl SendNow {
    /// Whether a delivery to `target` may go out now.
    #[allow(dead_code, reason = "called by SQLite's Direct only")]
    pub(super) fn has_room(&self, target: i64) -> bool {
        self.left > 0 && self.room.get(&target).is_some_and(|room| *room > 0)
    }

    /// Takes a slot at `target` (see `has_room`).
    #[allow(dead_code, reason = "called by SQLite's Direct only")]
    pub(super) fn take(&mut self, target: i64) {
        if let Some(room) = self.room.get_mut(&target) {
            *room -= 1;
            self.left = self.left.saturating_sub(1);
        }
    }

    /// Gives back a slot taken at `target` (its delivery was not written).
    #[allow(dead_code, reason = "called by SQLite's Direct only")]
    pub(super) fn give_back(&mut self, target: i64) {
        if let Some(room) = self.room.get_mut(&target) {
            *room += 1;
            self.left += 1;
        }
    }
}

/// Whether `batch` can be written in one statement (see `OneStatement`):
/// webhooks and simple outcomes only.
fn in_one_statement(batch: &[Write]) -> bool {
    plain(batch) && !batch.iter().any(|w| matches!(w, Write::Probe { .. }))
}

/// A batch of webhooks and simple outcomes in one statement that commits
/// by itself, with its claim (see `OneStatement::write`); every write is
/// answered as soon as it returns, and then the claim is handed over. A
/// batch of kicks only is a claim on its own (`claim_on_its_own`). If the
/// statement fails, nothing of it was written: every write again one by
/// one on `conn`; if each of them then goes in, the claim was what failed,
/// and claims pause.
async fn commit_one_statement(
    one: &super::OneStatement,
    conn: &mut DbConn,
    batch: Vec<Write>,
    dispatcher: &mut Dispatcher,
) -> Result<(), StoreError> {
    let released = dispatcher.released(&batch);
    let wanted = dispatcher.wanted(&batch, released);
    let mut ingests = Vec::new();
    let mut finishes = Vec::new();
    for write in &batch {
        match write {
            Write::Ingest {
                request, targets, ..
            } => ingests.push((&**request, targets.as_slice())),
            Write::Finish {
                claimed, outcome, ..
            } => finishes.push((&**claimed, (**outcome).clone())),
            Write::Probe { .. } | Write::Kick | Write::Dispatch { .. } => {}
        }
    }
    if ingests.is_empty() && finishes.is_empty() {
        // Kicks: nothing to write, only a claim to make.
        drop(ingests);
        answer_written(batch, Vec::new(), Vec::new());
        claim_on_its_own(one, dispatcher, wanted).await;
        return Ok(());
    }
    let now = crate::store::model::now_micros();
    let mut claim = dispatcher.claim_now(wanted, Fresh::new());
    if let Some(c) = &claim
        && c.expire
        && let Err(e) = expire_leases_in(&mut *conn, now).await
    {
        pause_claims(dispatcher, &e);
        claim = None;
    }
    let lease_token = claim.as_ref().map(|c| new_lease_token(&c.handle.worker_id));
    let args = claim
        .as_ref()
        .zip(lease_token.as_deref())
        .map(|(c, lease_token)| BatchClaim {
            lease_token,
            now,
            limit: c.limit_u32(),
            skip: &c.skip,
        });
    let written = one
        .write(&mut *conn, &ingests, finishes, args.as_ref())
        .await;
    drop(ingests);
    let (created, records, taken) = match written {
        Ok(written) => written,
        Err(e) => {
            tracing::warn!(error = %e, writes = batch.len(), "group commit failed; writing one by one");
            let rewritten = one_by_one(conn, batch, dispatcher).await;
            if claim.is_some() && rewritten.is_ok() {
                pause_claims(dispatcher, &e);
            }
            return rewritten;
        }
    };
    let fresh = answer_written(batch, created, records);
    if let Some(handle) = &dispatcher.handle {
        handle.slots.release(released);
    }
    let (Some(claim), Some(taken), Some(lease_token)) = (claim, taken, lease_token) else {
        return Ok(());
    };
    let fresh: Fresh<'_> = fresh.iter().map(|r| (r.id.as_str(), r)).collect();
    let count = taken.rows.len();
    let targets = dispatcher.current_targets(false);
    match one
        .hand_over(&mut *conn, taken, &lease_token, &fresh, targets, now)
        .await
    {
        Ok(deliveries) => hand_over_claimed(&claim.handle, claim.dispatched(deliveries, count)),
        Err(e) => pause_claims(dispatcher, &e),
    }
    Ok(())
}

/// Answers every write of a batch written in one statement: `created`
/// deliveries for each webhook, `records` for each outcome, in order.
/// Returns the requests the batch wrote, for its claim.
fn answer_written(
    batch: Vec<Write>,
    created: Vec<u32>,
    records: Vec<Option<AttemptRecord>>,
) -> Vec<std::sync::Arc<StoredRequest>> {
    let fresh = batch
        .iter()
        .filter_map(|w| match w {
            Write::Ingest { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect();
    let (mut created, mut records) = (created.into_iter(), records.into_iter());
    for write in batch {
        let applied = match &write {
            Write::Ingest { .. } => created.next().map(Applied::Ingest),
            Write::Finish { .. } => records
                .next()
                .map(|record| Applied::Finish(record.map(Box::new))),
            Write::Probe { .. } | Write::Kick | Write::Dispatch { .. } => Some(Applied::Kick),
        };
        let result = applied
            .ok_or_else(|| StoreError::Corrupt("group commit: a write was not applied".into()));
        answer(write, result);
    }
    fresh
}

/// The claim a batch written in one statement makes in that statement:
/// under `lease_token` at `now`, at most `limit` deliveries, leaving the
/// targets in `skip` alone.
#[allow(dead_code, reason = "read by PostgreSQL's OneStatement only")]
pub(super) struct BatchClaim<'a> {
    pub(super) lease_token: &'a str,
    pub(super) now: i64,
    pub(super) limit: u32,
    pub(super) skip: &'a [i64],
}

/// What the claim of a batch written in one statement took: its rows (the
/// batch's own deliveries among them), and the requests it read.
#[allow(dead_code, reason = "read by PostgreSQL's OneStatement only")]
pub(super) struct Taken {
    pub(super) rows: Vec<super::deliveries::ClaimRow>,
    pub(super) loaded: std::collections::HashMap<String, StoredRequest>,
}

/// A claim for as many deliveries as `wanted`, made by itself (a batch
/// of kicks only), and handed over. A failed claim pauses claims (see
/// `pause_claims`).
async fn claim_on_its_own(one: &super::OneStatement, dispatcher: &mut Dispatcher, wanted: usize) {
    let Some(claim) = dispatcher.claim_now(wanted, Fresh::new()) else {
        return;
    };
    let claimed = one
        .claim(
            &claim.handle.worker_id,
            claim.limit_u32(),
            &claim.skip,
            claim.expire,
            dispatcher.current_targets(false),
        )
        .await
        .map(|(deliveries, taken)| claim.dispatched(deliveries, taken));
    match claimed {
        Ok(claimed) => hand_over_claimed(&claim.handle, claimed),
        Err(e) => pause_claims(dispatcher, &e),
    }
}

/// Takes the worker's slots for what a claim took and hands it over; a
/// claim that took nothing is handed over only to say that nothing else
/// is due.
fn hand_over_claimed(handle: &DispatchHandle, claimed: Dispatched) {
    handle.slots.take(claimed.deliveries.len());
    if !claimed.deliveries.is_empty() || claimed.exhausted {
        handle.hand_over(claimed);
    }
}

/// One plain write on the writer's own connection. A webhook's deliveries
/// go out in flight where `send_now` has room, and are added to `sent`.
fn apply_direct(
    direct: &mut super::Direct,
    write: &Write,
    send_now: Option<&mut SendNow>,
    sent: &mut Vec<super::deliveries::ClaimRow>,
) -> Result<Applied, StoreError> {
    match write {
        Write::Ingest {
            request, targets, ..
        } => direct
            .ingest(request, targets, send_now)
            .map(|(created, rows)| {
                sent.extend(rows);
                Applied::Ingest(created)
            }),
        Write::Finish {
            claimed, outcome, ..
        } => direct
            .finish(claimed, (**outcome).clone())
            .map(|record| Applied::Finish(record.map(Box::new))),
        Write::Probe { .. } => direct.probe().map(|()| Applied::Probe),
        Write::Kick | Write::Dispatch { .. } => Ok(Applied::Kick),
    }
}

/// After a batch committed: answers every write, frees the slots of its
/// outcomes and hands its claims over.
fn settle(
    batch: Vec<Write>,
    applied: Vec<Applied>,
    released: usize,
    claimed: Option<Dispatched>,
    dispatcher: &Dispatcher,
) {
    for (write, applied) in batch.into_iter().zip(applied) {
        answer(write, Ok(applied));
    }
    if let Some(handle) = &dispatcher.handle {
        handle.slots.release(released);
        if let Some(claimed) = claimed {
            hand_over_claimed(handle, claimed);
        }
    }
}

/// Every write of a batch that failed as a whole, each in a transaction of
/// its own on `conn`, without claims: if a webhook or an outcome went in,
/// the claim is owed to the next batch. Returns the first failure.
async fn one_by_one(
    conn: &mut DbConn,
    batch: Vec<Write>,
    dispatcher: &mut Dispatcher,
) -> Result<(), StoreError> {
    let mut first_failure = Ok(());
    let mut writes = batch.into_iter();
    while let Some(write) = writes.next() {
        if let Err(e) = begin(conn).await {
            fail_all(std::iter::once(write).chain(writes), &e.to_string());
            return Err(e);
        }
        let applied = apply_one(conn, &write).await;
        let result = end(conn, applied).await;
        if result.is_ok()
            && let (Some(handle), Write::Finish { claimed, .. }) = (&dispatcher.handle, &write)
            && handle.owns(&claimed.lease_token)
        {
            handle.slots.release(1);
        }
        // A kick was only the claim: it owes none.
        if result.is_ok()
            && dispatcher.handle.is_some()
            && !matches!(write, Write::Kick)
            && may_have_work(std::slice::from_ref(&write))
        {
            dispatcher.claim_owed = true;
        }
        if let (Err(e), Ok(())) = (&result, &first_failure) {
            first_failure = Err(StoreError::Unavailable(sqlx::Error::Protocol(
                e.to_string(),
            )));
        }
        answer(write, result);
    }
    first_failure
}

/// Begins a write transaction (on SQLite taking the write lock now, not at
/// the first write).
async fn begin(conn: &mut DbConn) -> Result<(), StoreError> {
    if let Err(e) = sqlx::query(super::queries::BEGIN_WRITE)
        .execute(&mut *conn)
        .await
    {
        // A transaction left open on this connection (it must not be): end it.
        if !e.to_string().contains("within a transaction") {
            return Err(e.into());
        }
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        sqlx::query(super::queries::BEGIN_WRITE)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// COMMIT if `applied` is Ok (its value is returned only if the commit
/// succeeds); otherwise, or if the commit fails, ROLLBACK.
async fn end<T>(conn: &mut DbConn, applied: Result<T, StoreError>) -> Result<T, StoreError> {
    let result = match applied {
        Ok(value) => sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map(|_| value)
            .map_err(StoreError::from),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // May fail if SQLite already rolled back; either way nothing is left.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// Every write of a batch: simple outcomes and ingests in bulk, the rest one
/// by one. Results in batch order.
async fn apply_all(conn: &mut DbConn, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
    let mut results: Vec<Option<Applied>> = (0..batch.len()).map(|_| None).collect();
    let mut simple = Vec::new();
    let mut ingests = Vec::new();
    let mut others = Vec::new();
    for (i, write) in batch.iter().enumerate() {
        match write {
            Write::Ingest {
                request, targets, ..
            } => ingests.push((i, (&**request, targets.as_slice()))),
            Write::Finish {
                claimed, outcome, ..
            } if is_simple(claimed, outcome) => {
                simple.push((i, (&**claimed, (**outcome).clone())));
            }
            Write::Finish { .. } | Write::Probe { .. } | Write::Kick | Write::Dispatch { .. } => {
                others.push(i);
            }
        }
    }
    if !simple.is_empty() {
        let (indexes, rows): (Vec<usize>, Vec<_>) = simple.into_iter().unzip();
        for (i, record) in indexes.into_iter().zip(finish_many_in(conn, rows).await?) {
            results[i] = Some(Applied::Finish(record.map(Box::new)));
        }
    }
    if !ingests.is_empty() {
        let (indexes, rows): (Vec<usize>, Vec<_>) = ingests.into_iter().unzip();
        for (i, created) in indexes.into_iter().zip(ingest_many_in(conn, &rows).await?) {
            results[i] = Some(Applied::Ingest(created));
        }
    }
    for i in others {
        if let Some(write) = batch.get(i) {
            results[i] = Some(apply_one(conn, write).await?);
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.ok_or_else(|| StoreError::Corrupt("group commit: a write was not applied".into()))
        })
        .collect()
}

/// One write, inside the caller's transaction.
async fn apply_one(conn: &mut DbConn, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::Ingest {
            request, targets, ..
        } => ingest_in(conn, request, targets).await.map(Applied::Ingest),
        Write::Finish {
            claimed,
            outcome,
            cooldown,
            ..
        } => finish_in(conn, claimed, (**outcome).clone(), *cooldown)
            .await
            .map(|record| Applied::Finish(record.map(Box::new))),
        Write::Probe { .. } => {
            sqlx::query(super::queries::HEALTH_PROBE)
                .bind(crate::store::model::now_micros())
                .execute(&mut *conn)
                .await?;
            Ok(Applied::Probe)
        }
        Write::Kick | Write::Dispatch { .. } => Ok(Applied::Kick),
    }
}

/// Sends a write's result to its caller.
fn answer(write: Write, result: Result<Applied, StoreError>) {
    match write {
        Write::Ingest { reply, .. } => {
            let _ = reply.send(result.and_then(|applied| match applied {
                Applied::Ingest(created) => Ok(created),
                _ => Err(mixed_up()),
            }));
        }
        Write::Finish { reply, .. } => {
            let _ = reply.send(result.and_then(|applied| match applied {
                Applied::Finish(record) => Ok(record.map(|r| *r)),
                _ => Err(mixed_up()),
            }));
        }
        Write::Probe { reply } => {
            let _ = reply.send(result.and_then(|applied| match applied {
                Applied::Probe => Ok(()),
                _ => Err(mixed_up()),
            }));
        }
        Write::Kick => {}
        // Taken out of every batch before it is applied.
        Write::Dispatch { reply, .. } => {
            let _ = reply.send(());
        }
    }
}

fn mixed_up() -> StoreError {
    StoreError::Corrupt("group commit: an answer of the wrong kind".into())
}

/// No transaction at all (the store is locked, read-only, gone): every
/// write of `batch` fails now, rather than each waiting out the lock in turn.
fn cannot_begin(batch: Vec<Write>, e: StoreError) -> Result<(), StoreError> {
    let message = e.to_string();
    tracing::warn!(error = %message, writes = batch.len(), "group commit: cannot begin");
    fail_all(batch, &message);
    Err(e)
}

/// Answers every write with the same failure.
fn fail_all(writes: impl IntoIterator<Item = Write>, message: &str) {
    for write in writes {
        let error = StoreError::Unavailable(sqlx::Error::Protocol(message.to_owned()));
        answer(write, Err(error));
    }
}
