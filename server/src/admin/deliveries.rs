//! `webhook.v1.Deliveries`: listing deliveries and resending requests.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::validate::{self, invalid};
use super::{AdminState, convert};
use crate::store::model::{DeliveryFilter, DeliverySummary, LogRecord, now_micros};

const STATES: &[&str] = &[
    "pending",
    "retrying",
    "in_flight",
    "delivered",
    "failed",
    "cancelled",
];
const MAX_LIST: u32 = 10_000;
const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);
const MAX_SINCE: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug)]
pub struct DeliveriesService(pub AdminState);

fn delivery(d: &DeliverySummary) -> pb::Delivery {
    pb::Delivery {
        id: d.id.clone(),
        request_id: d.request_id.clone(),
        target_id: d.target_id,
        target_name: d.target_name.clone().unwrap_or_default(),
        state: convert::delivery_state(d).to_owned(),
        attempts: d.attempt,
        next_run_at: d.next_run_at.map(convert::timestamp),
        created_at: Some(convert::timestamp(d.created_at)),
        updated_at: Some(convert::timestamp(d.updated_at)),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::ResendFailedProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::deliveries_server::Deliveries for DeliveriesService {
    async fn resend(
        &self,
        request: Request<pb::ResendRequest>,
    ) -> Result<Response<pb::ResendResponse>, Status> {
        let req = request.into_inner();
        let request_id = validate::record_id("request_id", &req.request_id)?;
        let target_id = validate::optional_id("target_id", req.target_id)?;
        let (copy, deliveries) = self.0.store.resend(&request_id, target_id).await?;
        if deliveries > 0 {
            self.0.wake_worker.notify_one();
        }
        tracing::info!(request_id = %copy.id, resent_from = %request_id, deliveries, "request resent");
        let response = pb::ResendResponse {
            request_id: copy.id.clone(),
            deliveries,
        };
        self.0
            .bus
            .publish(LogRecord::Request(std::sync::Arc::new(copy)));
        Ok(Response::new(response))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let req = request.into_inner();
        let state = match req.state.trim() {
            "" => None,
            s if STATES.contains(&s) => Some(s.to_owned()),
            other => {
                return Err(invalid(
                    "state",
                    format!("{other:?} is not one of {}", STATES.join(", ")),
                ));
            }
        };
        let limit = match req.limit {
            0 => 50,
            n if n > MAX_LIST => {
                return Err(invalid("limit", format!("{n} is more than {MAX_LIST}")));
            }
            n => n,
        };
        let filter = DeliveryFilter {
            state,
            target_id: validate::optional_id("target_id", req.target_id)?,
        };
        let deliveries = self.0.store.list_deliveries(&filter, limit).await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(delivery).collect(),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let id = validate::record_id("id", &request.into_inner().id)?;
        let (summary, attempts) = self
            .0
            .store
            .get_delivery(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("delivery {id} not found")))?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(delivery(&summary)),
            attempts: attempts
                .into_iter()
                .map(|a| convert::log_record(&LogRecord::Attempt(Box::new(a))))
                .collect(),
        }))
    }

    type ResendFailedStream = ProgressStream;

    async fn resend_failed(
        &self,
        request: Request<pb::ResendFailedRequest>,
    ) -> Result<Response<Self::ResendFailedStream>, Status> {
        let req = request.into_inner();
        let target_id = validate::id("target_id", req.target_id)?;
        let since = validate::duration("since", req.since, DEFAULT_SINCE, MAX_SINCE)?;
        if self.0.store.get_target(target_id).await?.is_none() {
            return Err(Status::not_found(format!("target {target_id} not found")));
        }
        let from = now_micros() - i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
        let mut request_ids = self.0.store.failed_requests(target_id, from).await?;
        let mut seen = std::collections::HashSet::new();
        request_ids.retain(|id| seen.insert(id.clone()));
        let total = u32::try_from(request_ids.len()).unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::channel(16);
        let state = self.0.clone();
        let dry_run = req.dry_run;
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(pb::ResendFailedProgress { done: 0, total }))
                .await;
            if dry_run {
                return;
            }
            let mut done = 0;
            for request_id in request_ids {
                match state.store.resend(&request_id, Some(target_id)).await {
                    Ok((copy, _)) => {
                        state
                            .bus
                            .publish(LogRecord::Request(std::sync::Arc::new(copy)));
                        state.wake_worker.notify_one();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
                done += 1;
                // The client may go away; the resend goes on to the end.
                let _ = tx.send(Ok(pb::ResendFailedProgress { done, total })).await;
            }
            tracing::info!(target_id, resent = done, "failed deliveries resent");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
