//! `webhook.v1.Deliveries`: resending stored requests.

use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::AdminState;
use super::validate;
use crate::store::model::LogRecord;

#[derive(Debug)]
pub struct DeliveriesService(pub AdminState);

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
        self.0.bus.publish(LogRecord::Request(copy));
        Ok(Response::new(response))
    }
}
