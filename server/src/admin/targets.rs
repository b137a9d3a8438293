//! `webhook.v1.Targets`.

use std::time::Duration;

use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::validate::{self, invalid};
use super::{AdminState, convert};
use crate::delivery::new_signing_secret;
use crate::store::model::{NewTarget, RetryPolicy};

const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_MAX_ATTEMPTS: u32 = 1000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_URL_LEN: usize = 2048;

#[derive(Debug)]
pub struct TargetsService(pub AdminState);

/// Checks a target URL: absolute http(s) with a host; http only when allowed.
fn target_url(value: &str, allow_plain_http: bool) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid("url", "must not be empty"));
    }
    if value.len() > MAX_URL_LEN {
        return Err(invalid(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    }
    let url = reqwest::Url::parse(value)
        .map_err(|e| invalid("url", format!("{value:?} is not a valid URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", format!("{value:?} has no host")));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => {
            return Err(invalid(
                "url",
                format!("{value:?} is plain http: use https, or allow it explicitly (--no-ssl)"),
            ));
        }
        other => {
            return Err(invalid(
                "url",
                format!("scheme {other:?} is not supported: use https"),
            ));
        }
    }
    Ok(url.to_string())
}

#[tonic::async_trait]
impl pb::targets_server::Targets for TargetsService {
    async fn create_target(
        &self,
        request: Request<pb::CreateTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let req = request.into_inner();
        let name = validate::name("name", &req.name, 200)?;
        let url = target_url(&req.url, req.allow_plain_http)?;
        let source_ids = req
            .source_ids
            .iter()
            .map(|id| validate::id("source_ids", *id))
            .collect::<Result<Vec<_>, _>>()?;
        match req.retry.as_deref().map(str::trim) {
            None | Some("") | Some(RetryPolicy::LINEAR) => {}
            Some(other) => {
                return Err(invalid(
                    "retry",
                    format!("unknown policy {other:?}: expected linear"),
                ));
            }
        }
        let interval = validate::duration(
            "retry_interval",
            req.retry_interval,
            self.0.default_retry.interval,
            MAX_RETRY_INTERVAL,
        )?;
        let max_attempts = req
            .max_attempts
            .unwrap_or(self.0.default_retry.max_attempts);
        if !(1..=MAX_MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(invalid(
                "max_attempts",
                format!("{max_attempts} is out of range (1-{MAX_MAX_ATTEMPTS})"),
            ));
        }
        let timeout = validate::duration("timeout", req.timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT)?;
        let target = self
            .0
            .store
            .create_target(NewTarget {
                name,
                url,
                signing_secret: (!req.no_auth).then(new_signing_secret),
                source_ids,
                retry: RetryPolicy {
                    interval,
                    max_attempts,
                },
                timeout,
            })
            .await?;
        tracing::info!(target_id = target.id, name = %target.name, url = %target.url, "target created");
        Ok(Response::new(convert::target(&target, true, 0)))
    }

    async fn list_targets(
        &self,
        _request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let targets = self.0.store.list_targets().await?;
        let mut listed = Vec::with_capacity(targets.len());
        for target in &targets {
            let pending = self.0.store.unfinished_deliveries(target.id).await?;
            listed.push(convert::target(target, false, pending));
        }
        Ok(Response::new(pb::ListTargetsResponse { targets: listed }))
    }

    async fn get_target(
        &self,
        request: Request<pb::GetTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let id = validate::id("id", request.into_inner().id)?;
        let target = self
            .0
            .store
            .get_target(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("target {id} not found")))?;
        let pending = self.0.store.unfinished_deliveries(id).await?;
        Ok(Response::new(convert::target(&target, false, pending)))
    }

    async fn delete_target(
        &self,
        request: Request<pb::DeleteTargetRequest>,
    ) -> Result<Response<pb::DeleteTargetResponse>, Status> {
        let id = validate::id("id", request.into_inner().id)?;
        if !self.0.store.delete_target(id).await? {
            return Err(Status::not_found(format!("target {id} not found")));
        }
        tracing::info!(target_id = id, "target removed");
        Ok(Response::new(pb::DeleteTargetResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_to_be_allowed() {
        assert!(target_url("http://127.0.0.1:5000/webhook", false).is_err());
        assert_eq!(
            target_url("http://0.0.0.0:5000/webhook", true)
                .ok()
                .as_deref(),
            Some("http://0.0.0.0:5000/webhook")
        );
        assert!(target_url("https://example.com/hook", false).is_ok());
        for bad in [
            "",
            "not a url",
            "ftp://example.com/",
            "https://",
            "/relative",
        ] {
            assert!(target_url(bad, true).is_err(), "{bad}");
        }
    }
}
