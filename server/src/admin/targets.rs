//! `webhook.v1.Targets`.

use std::time::Duration;

use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::validate::{self, invalid};
use super::{AdminState, convert};
use crate::delivery::{RetrySpec, new_signing_secret};
use crate::store::model::{DeliverySettings, NewTarget, RateLimit, RetryPolicy, Target};

const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_URL_LEN: usize = 2048;
const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
const MAX_MAX_IN_FLIGHT: u32 = 10_000;
const DEFAULT_BREAK_AFTER: u32 = 10;
/// Unfinished deliveries listed by GetTarget.
const PENDING_SHOWN: u32 = 20;

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

/// Parses `100/s`, `1000/m`, `5000/h`; "" or "none" is no limit.
fn rate(value: &str) -> Result<Option<RateLimit>, Status> {
    let value = value.trim();
    if value.is_empty() || value == "none" {
        return Ok(None);
    }
    let (count, unit) = value.split_once('/').ok_or_else(|| {
        invalid(
            "rate",
            format!("{value:?}: expected COUNT/UNIT, e.g. 100/s or 1000/m"),
        )
    })?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| {
            invalid(
                "rate",
                format!("{value:?}: the count must be a positive integer"),
            )
        })?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => {
            return Err(invalid(
                "rate",
                format!("{value:?}: unit {other:?} is not s, m or h"),
            ));
        }
    };
    Ok(Some(RateLimit { count, period }))
}

fn max_in_flight(value: u32) -> Result<u32, Status> {
    if !(1..=MAX_MAX_IN_FLIGHT).contains(&value) {
        return Err(invalid(
            "max_in_flight",
            format!("{value} is out of range (1-{MAX_MAX_IN_FLIGHT})"),
        ));
    }
    Ok(value)
}

fn source_ids(ids: &[i64]) -> Result<Vec<i64>, Status> {
    ids.iter()
        .map(|id| validate::id("source_ids", *id))
        .collect()
}

/// The retry parts of a create or update request.
fn retry_spec(
    kind: Option<String>,
    interval: Option<prost_types::Duration>,
    max_attempts: Option<u32>,
    factor: Option<f64>,
    max_interval: Option<prost_types::Duration>,
    schedule: Vec<prost_types::Duration>,
) -> Result<RetrySpec, Status> {
    let optional = |field, d: Option<prost_types::Duration>| match d {
        None => Ok(None),
        some => validate::duration(field, some, Duration::ZERO, MAX_RETRY_INTERVAL).map(Some),
    };
    let schedule = if schedule.is_empty() {
        None
    } else {
        Some(
            schedule
                .into_iter()
                .map(|d| {
                    validate::duration(
                        "retry_schedule",
                        Some(d),
                        Duration::ZERO,
                        MAX_RETRY_INTERVAL,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(RetrySpec {
        kind,
        interval: optional("retry_interval", interval)?,
        factor,
        max_interval: optional("retry_max_interval", max_interval)?,
        schedule,
        max_attempts,
    })
}

fn resolve(spec: &RetrySpec, base: &RetryPolicy) -> Result<RetryPolicy, Status> {
    spec.resolve(base).map_err(|e| invalid(e.field, e.problem))
}

impl TargetsService {
    async fn load(&self, id: i64) -> Result<Target, Status> {
        self.0
            .store
            .get_target(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("target {id} not found")))
    }

    /// A target as GetTarget shows it: with its unfinished deliveries.
    async fn shown(&self, target: &Target) -> Result<pb::Target, Status> {
        let pending = self.0.store.unfinished_deliveries(target.id).await?;
        let mut shown = convert::target(target, false, pending);
        shown.pending = self
            .0
            .store
            .pending_deliveries(target.id, PENDING_SHOWN)
            .await?
            .iter()
            .map(convert::pending_delivery)
            .collect();
        Ok(shown)
    }
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
        let source_ids = source_ids(&req.source_ids)?;
        let spec = retry_spec(
            req.retry,
            req.retry_interval,
            req.max_attempts,
            req.retry_factor,
            req.retry_max_interval,
            req.retry_schedule,
        )?;
        let settings = DeliverySettings {
            retry: resolve(&spec, &self.0.default_retry)?,
            timeout: validate::duration("timeout", req.timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT)?,
            follow_redirects: req.follow_redirects,
            retry_on_4xx: req.retry_on_4xx,
            max_in_flight: max_in_flight(req.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT))?,
            rate: rate(req.rate.as_deref().unwrap_or_default())?,
            break_after: req.break_after.unwrap_or(DEFAULT_BREAK_AFTER),
        };
        let target = self
            .0
            .store
            .create_target(NewTarget {
                name,
                url,
                signing_secret: (!req.no_auth).then(new_signing_secret),
                source_ids,
                settings,
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
        let target = self.load(id).await?;
        Ok(Response::new(self.shown(&target).await?))
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

    async fn update_target(
        &self,
        request: Request<pb::UpdateTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let req = request.into_inner();
        let id = validate::id("id", req.id)?;
        let mut target = self.load(id).await?;
        if let Some(name) = &req.name {
            target.name = validate::name("name", name, 200)?;
        }
        if let Some(url) = &req.url {
            target.url = target_url(url, req.allow_plain_http)?;
        }
        if req.set_source_ids {
            target.source_ids = source_ids(&req.source_ids)?;
        }
        let spec = retry_spec(
            req.retry,
            req.retry_interval,
            req.max_attempts,
            req.retry_factor,
            req.retry_max_interval,
            req.retry_schedule,
        )?;
        let settings = &mut target.settings;
        settings.retry = resolve(&spec, &settings.retry)?;
        if req.timeout.is_some() {
            settings.timeout =
                validate::duration("timeout", req.timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT)?;
        }
        if let Some(follow) = req.follow_redirects {
            settings.follow_redirects = follow;
        }
        if let Some(retry_on_4xx) = req.retry_on_4xx {
            settings.retry_on_4xx = retry_on_4xx;
        }
        if let Some(n) = req.max_in_flight {
            settings.max_in_flight = max_in_flight(n)?;
        }
        if let Some(limit) = &req.rate {
            settings.rate = rate(limit)?;
        }
        if let Some(n) = req.break_after {
            settings.break_after = n;
        }
        self.0
            .store
            .update_target(&target, req.set_source_ids)
            .await?;
        tracing::info!(target_id = id, retry = %target.settings.retry.describe(), "target updated");
        self.0.wake_worker.notify_one();
        Ok(Response::new(self.shown(&target).await?))
    }

    async fn enable_target(
        &self,
        request: Request<pb::EnableTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let id = validate::id("id", request.into_inner().id)?;
        if !self.0.store.enable_target(id).await? {
            return Err(Status::not_found(format!("target {id} not found")));
        }
        tracing::info!(target_id = id, "target enabled");
        self.0.wake_worker.notify_one();
        let target = self.load(id).await?;
        Ok(Response::new(self.shown(&target).await?))
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

    #[test]
    fn rates_parse_per_second_minute_and_hour() {
        let per = |count, secs| {
            Some(RateLimit {
                count,
                period: Duration::from_secs(secs),
            })
        };
        assert_eq!(rate("100/s").ok(), Some(per(100, 1)));
        assert_eq!(rate("1000/m").ok(), Some(per(1000, 60)));
        assert_eq!(rate(" 5/h ").ok(), Some(per(5, 3600)));
        assert_eq!(rate("").ok(), Some(None));
        assert_eq!(rate("none").ok(), Some(None));
        for bad in ["100", "0/s", "-1/s", "x/s", "10/d", "10/"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
