//! Group commit: one writer task takes the hot writes (ingests and attempt
//! outcomes) off a channel, applies every one that is waiting inside one
//! transaction (each in its own savepoint, so one failing write can't undo
//! the others), commits once (one fsync), and only then answers each caller.

use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::deliveries::{finish_in, finish_many_in, is_simple};
use super::requests::{ingest_in, ingest_many_in};
use crate::store::StoreError;
use crate::store::model::{AttemptOutcome, AttemptRecord, ClaimedDelivery, StoredRequest};

/// Writes waiting for the writer; callers wait when it is full.
const QUEUE: usize = 4096;
/// The most writes in one transaction.
const MAX_BATCH: usize = 512;

enum Write {
    Ingest {
        request: Box<StoredRequest>,
        targets: Vec<i64>,
        reply: oneshot::Sender<Result<u32, StoreError>>,
    },
    Finish {
        claimed: Box<ClaimedDelivery>,
        outcome: Box<AttemptOutcome>,
        cooldown: Duration,
        reply: oneshot::Sender<Result<Option<AttemptRecord>, StoreError>>,
    },
}

/// What a write did, to be told to its caller once the batch is committed.
enum Done {
    Ingest(
        oneshot::Sender<Result<u32, StoreError>>,
        Result<u32, StoreError>,
    ),
    Finish(
        oneshot::Sender<Result<Option<AttemptRecord>, StoreError>>,
        Result<Option<AttemptRecord>, StoreError>,
    ),
}

impl Done {
    /// Answers the caller; if the commit failed, with that failure instead.
    fn answer(self, commit: &Result<(), String>) {
        let failed = |e: &String| StoreError::Unavailable(sqlx::Error::Protocol(e.clone()));
        match self {
            Done::Ingest(reply, result) => {
                let _ = reply.send(commit.as_ref().map_err(failed).and(result));
            }
            Done::Finish(reply, result) => {
                let _ = reply.send(commit.as_ref().map_err(failed).and(result));
            }
        }
    }
}

/// The handle callers send writes through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<Write>,
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

impl GroupWriter {
    /// Starts the writer task on `pool` (the store's single writer connection).
    pub fn start(pool: SqlitePool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, receiver));
        GroupWriter { queue }
    }

    /// Commits a received request and its deliveries.
    pub async fn ingest(
        &self,
        request: StoredRequest,
        targets: Vec<i64>,
    ) -> Result<u32, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Write::Ingest {
                request: Box::new(request),
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

async fn run(pool: SqlitePool, mut receiver: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit_batch(&pool, std::mem::take(&mut batch)).await;
    }
}

async fn commit_batch(pool: &SqlitePool, batch: Vec<Write>) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(error = %message, writes = batch.len(), "group commit: cannot begin");
            for write in batch {
                fail(write, &message);
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    // Ingests first, all in two statements; if that fails, one at a time.
    let (ingests, others): (Vec<Write>, Vec<Write>) = batch
        .into_iter()
        .partition(|w| matches!(w, Write::Ingest { .. }));
    let (simple, mut one_by_one): (Vec<Write>, Vec<Write>) =
        others.into_iter().partition(|w| match w {
            Write::Finish {
                claimed, outcome, ..
            } => is_simple(claimed, outcome),
            Write::Ingest { .. } => false,
        });
    if !simple.is_empty() {
        match bulk_finish(&mut tx, &simple).await {
            Ok(records) => {
                for (write, record) in simple.into_iter().zip(records) {
                    if let Write::Finish { reply, .. } = write {
                        done.push(Done::Finish(reply, Ok(record)));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "group commit: bulk finish failed, writing one by one");
                one_by_one.extend(simple);
            }
        }
    }
    if !ingests.is_empty() {
        match bulk_ingest(&mut tx, &ingests).await {
            Ok(created) => {
                for (write, created) in ingests.into_iter().zip(created) {
                    if let Write::Ingest { reply, .. } = write {
                        done.push(Done::Ingest(reply, Ok(created)));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "group commit: bulk insert failed, writing one by one");
                one_by_one.splice(0..0, ingests);
            }
        }
    }
    for write in one_by_one {
        let savepoint = sqlx::query("SAVEPOINT write").execute(&mut *tx).await;
        if let Err(e) = savepoint {
            fail(write, &e.to_string());
            continue;
        }
        let (outcome, ok) = match write {
            Write::Ingest {
                request,
                targets,
                reply,
            } => {
                let result = ingest_in(&mut tx, &request, &targets).await;
                let ok = result.is_ok();
                (Done::Ingest(reply, result), ok)
            }
            Write::Finish {
                claimed,
                outcome,
                cooldown,
                reply,
            } => {
                let result = finish_in(&mut tx, &claimed, *outcome, cooldown).await;
                let ok = result.is_ok();
                (Done::Finish(reply, result), ok)
            }
        };
        if !ok {
            let _ = sqlx::query("ROLLBACK TO write").execute(&mut *tx).await;
        }
        let _ = sqlx::query("RELEASE write").execute(&mut *tx).await;
        done.push(outcome);
    }
    let commit = tx.commit().await.map_err(|e| e.to_string());
    if let Err(e) = &commit {
        tracing::warn!(error = %e, writes = done.len(), "group commit failed; nothing of it was stored");
    }
    for outcome in done {
        outcome.answer(&commit);
    }
}

fn fail(write: Write, message: &str) {
    let error = || StoreError::Unavailable(sqlx::Error::Protocol(message.to_owned()));
    match write {
        Write::Ingest { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Write::Finish { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
    }
}

/// Inserts every ingest of the batch inside a savepoint, all or nothing.
async fn bulk_ingest(
    tx: &mut sqlx::SqliteConnection,
    ingests: &[Write],
) -> Result<Vec<u32>, StoreError> {
    let rows: Vec<(&StoredRequest, &[i64])> = ingests
        .iter()
        .filter_map(|w| match w {
            Write::Ingest {
                request, targets, ..
            } => Some((&**request, targets.as_slice())),
            Write::Finish { .. } => None,
        })
        .collect();
    sqlx::query("SAVEPOINT bulk").execute(&mut *tx).await?;
    match ingest_many_in(&mut *tx, &rows).await {
        Ok(created) => {
            sqlx::query("RELEASE bulk").execute(&mut *tx).await?;
            Ok(created)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK TO bulk").execute(&mut *tx).await;
            let _ = sqlx::query("RELEASE bulk").execute(&mut *tx).await;
            Err(e)
        }
    }
}

/// Records every simple attempt outcome of the batch inside a savepoint, all
/// or nothing.
async fn bulk_finish(
    tx: &mut sqlx::SqliteConnection,
    finishes: &[Write],
) -> Result<Vec<Option<AttemptRecord>>, StoreError> {
    let rows: Vec<(&ClaimedDelivery, AttemptOutcome)> = finishes
        .iter()
        .filter_map(|w| match w {
            Write::Finish {
                claimed, outcome, ..
            } => Some((&**claimed, (**outcome).clone())),
            Write::Ingest { .. } => None,
        })
        .collect();
    sqlx::query("SAVEPOINT bulk").execute(&mut *tx).await?;
    match finish_many_in(&mut *tx, rows).await {
        Ok(records) => {
            sqlx::query("RELEASE bulk").execute(&mut *tx).await?;
            Ok(records)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK TO bulk").execute(&mut *tx).await;
            let _ = sqlx::query("RELEASE bulk").execute(&mut *tx).await;
            Err(e)
        }
    }
}
