//! `webhook.v1.System`.

use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::AdminState;
use crate::health;

#[derive(Debug)]
pub struct SystemService(pub AdminState);

#[tonic::async_trait]
impl pb::system_server::System for SystemService {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let report = health::check(&self.0.store).await;
        Ok(Response::new(pb::Status {
            status: report.status().to_owned(),
            issues: report.issues,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            http_addr: self.0.http_addr.to_string(),
            public_url: self.0.public_url.to_string(),
        }))
    }
}
