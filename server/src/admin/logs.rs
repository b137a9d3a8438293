//! `webhook.v1.Logs`: log pages and live following.

use std::collections::HashSet;
use std::pin::Pin;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::validate::{self, invalid};
use super::{AdminState, convert};
use crate::store::model::{LogFilter, LogType};

/// The most records one page or backlog may ask for.
const MAX_RECORDS: u32 = 10_000;
/// Records queued for one follower's connection; past this the follower
/// falls behind on the log bus and is told what it missed.
const FOLLOWER_QUEUE: usize = 256;

#[derive(Debug)]
pub struct LogsService(pub AdminState);

fn filter(value: Option<pb::LogFilter>) -> Result<LogFilter, Status> {
    let value = value.unwrap_or_default();
    let log_type = match value.r#type.trim() {
        "" => None,
        other => Some(LogType::parse(other).ok_or_else(|| {
            invalid(
                "type",
                format!(
                    "{other:?} is not a record type: expected source.request or target.response"
                ),
            )
        })?),
    };
    let request_id = match value.request_id.trim() {
        "" => None,
        id => Some(validate::record_id("request_id", id)?),
    };
    Ok(LogFilter {
        log_type,
        source_id: validate::optional_id("source_id", value.source_id)?,
        request_id,
        target_id: validate::optional_id("target_id", value.target_id)?,
    })
}

fn count(field: &str, value: u32, default: u32) -> Result<u32, Status> {
    match value {
        0 => Ok(default),
        v if v > MAX_RECORDS => Err(invalid(field, format!("{v} is more than {MAX_RECORDS}"))),
        v => Ok(v),
    }
}

type FollowStream = Pin<Box<dyn Stream<Item = Result<pb::LogEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::logs_server::Logs for LogsService {
    async fn list_logs(
        &self,
        request: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let req = request.into_inner();
        let filter = filter(req.filter)?;
        let limit = count("limit", req.limit, 10)?;
        let records = self.0.store.list_logs(&filter, limit).await?;
        Ok(Response::new(pb::ListLogsResponse {
            records: records.iter().map(convert::log_record).collect(),
        }))
    }

    type FollowLogsStream = FollowStream;

    async fn follow_logs(
        &self,
        request: Request<pb::FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let req = request.into_inner();
        let filter = filter(req.filter)?;
        if req.backlog > MAX_RECORDS {
            return Err(invalid(
                "backlog",
                format!("{} is more than {MAX_RECORDS}", req.backlog),
            ));
        }
        // Subscribe before reading the backlog so nothing committed in
        // between is missed; records seen in both are sent once.
        let mut live = self.0.bus.subscribe();
        let backlog = if req.backlog == 0 {
            Vec::new()
        } else {
            self.0.store.list_logs(&filter, req.backlog).await?
        };
        let (tx, rx) = mpsc::channel(FOLLOWER_QUEUE);
        let shutdown = self.0.shutdown.clone();
        tokio::spawn(async move {
            let mut seen: HashSet<String> = HashSet::with_capacity(backlog.len());
            for record in &backlog {
                seen.insert(record.id().to_owned());
                let event = pb::log_event::Event::Record(convert::log_record(record));
                if tx
                    .send(Ok(pb::LogEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    received = live.recv() => received,
                };
                let event = match received {
                    Ok(record) => {
                        if !filter.matches(&record)
                            || (!seen.is_empty() && seen.remove(record.id()))
                        {
                            continue;
                        }
                        pb::log_event::Event::Record(convert::log_record(&record))
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        pb::log_event::Event::Missed(missed)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx
                    .send(Ok(pb::LogEvent { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
