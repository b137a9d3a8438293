//! Domain types to API messages.

use std::time::Duration;

use webhook_proto::v1 as pb;

use crate::store::model::{
    AttemptRecord, DeliverySummary, Header, LogRecord, Micros, RetryPolicy, Source, StoredRequest,
    Target, now_micros,
};

/// Unix microseconds to a protobuf timestamp.
pub fn timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A std duration to a protobuf duration.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn headers(headers: &[Header]) -> Vec<pb::Header> {
    headers
        .iter()
        .map(|(name, value)| pb::Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// The ingest URL of a source: `PUBLIC_URL` with the source's credentials
/// and id.
pub fn ingest_url(public_url: &reqwest::Url, source: &Source) -> String {
    let mut url = public_url.clone();
    // Both only fail on URLs that cannot have credentials, which config rejects.
    let _ = url.set_username(&source.username);
    let _ = url.set_password(Some(&source.password));
    let path = format!("{}/{}", url.path().trim_end_matches('/'), source.id);
    url.set_path(&path);
    url.to_string()
}

/// A source as the API shows it.
pub fn source(public_url: &reqwest::Url, source: &Source) -> pb::Source {
    pb::Source {
        id: source.id,
        name: source.name.clone(),
        ingest_url: ingest_url(public_url, source),
        auth_provider: source.auth.provider().to_owned(),
        auth_secret_set: source.auth != crate::store::model::SourceAuth::None,
        status_code: u32::from(source.status_code),
        content_type: source.content_type.clone(),
        content: source.content.to_vec(),
        created_at: Some(timestamp(source.created_at)),
    }
}

/// A retry policy as the API shows it.
pub fn retry_policy(policy: &RetryPolicy) -> pb::RetryPolicy {
    let mut shown = pb::RetryPolicy {
        kind: policy.kind().to_owned(),
        max_attempts: policy.max_attempts(),
        description: policy.describe(),
        ..Default::default()
    };
    match policy {
        RetryPolicy::Linear { interval, .. } => shown.interval = Some(duration(*interval)),
        RetryPolicy::Exponential {
            initial,
            factor,
            max_interval,
            ..
        } => {
            shown.interval = Some(duration(*initial));
            shown.factor = *factor;
            shown.max_interval = Some(duration(*max_interval));
        }
        RetryPolicy::Schedule { delays } => {
            shown.schedule = delays.iter().map(|d| duration(*d)).collect();
        }
        RetryPolicy::None => {}
    }
    shown
}

/// A target as the API shows it; the secret only when `with_secret`.
pub fn target(target: &Target, with_secret: bool, pending_deliveries: u64) -> pb::Target {
    let settings = &target.settings;
    let now = now_micros();
    pb::Target {
        id: target.id,
        name: target.name.clone(),
        url: target.url.clone(),
        signed: target.signing_secret.is_some(),
        signing_secret: if with_secret {
            target.signing_secret.clone().unwrap_or_default()
        } else {
            String::new()
        },
        source_ids: target.source_ids.clone(),
        retry: Some(retry_policy(&settings.retry)),
        timeout: Some(duration(settings.timeout)),
        created_at: Some(timestamp(target.created_at)),
        pending_deliveries,
        follow_redirects: settings.follow_redirects,
        retry_on_4xx: settings.retry_on_4xx,
        max_in_flight: settings.max_in_flight,
        rate: settings.rate.map(|r| pb::RateLimit {
            count: r.count,
            period: Some(duration(r.period)),
        }),
        break_after: settings.break_after,
        disabled_reason: target.disabled_reason.clone().unwrap_or_default(),
        breaker_state: target.breaker.state(now).to_owned(),
        consecutive_failures: target.breaker.consecutive_failures,
        breaker_open_until: target.breaker.open_until.map(timestamp),
        pending: Vec::new(),
    }
}

/// An unfinished delivery, for `target show`.
pub fn pending_delivery(d: &DeliverySummary) -> pb::PendingDelivery {
    pb::PendingDelivery {
        delivery_id: d.id.clone(),
        request_id: d.request_id.clone(),
        state: delivery_state(d).to_owned(),
        attempts: d.attempt,
        next_run_at: d.next_run_at.map(timestamp),
    }
}

/// A delivery's state in words: pending (never tried) and retrying are told apart.
pub fn delivery_state(d: &DeliverySummary) -> &str {
    match d.state.as_str() {
        "pending" if d.attempt > 0 => "retrying",
        other => other,
    }
}

fn source_request(r: &StoredRequest) -> pb::SourceRequest {
    pb::SourceRequest {
        source_id: r.source_id,
        source_name: r.source_name.clone().unwrap_or_default(),
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: headers(&r.headers),
        body: r.body.to_vec(),
        remote_addr: r.remote_addr.clone(),
        resent_from: r.resent_from.clone().unwrap_or_default(),
    }
}

fn target_response(a: &AttemptRecord) -> pb::TargetResponse {
    let (response, error) = match &a.outcome {
        Ok(r) => (
            Some(pb::HttpResponse {
                status_code: u32::from(r.status_code),
                headers: headers(&r.headers),
                body: r.body.to_vec(),
                body_truncated: r.body_truncated,
            }),
            None,
        ),
        Err(e) => (
            None,
            Some(pb::AttemptError {
                kind: e.kind.clone(),
                message: e.message.clone(),
            }),
        ),
    };
    pb::TargetResponse {
        request_id: a.request_id.clone(),
        source_id: a.source_id,
        target_id: a.target_id,
        target_name: a.target_name.clone().unwrap_or_default(),
        delivery_id: a.delivery_id.clone(),
        attempt: a.attempt,
        state: a.state.as_str().to_owned(),
        response,
        error,
        next_run_at: a.next_run_at.map(timestamp),
        elapsed: Some(duration(a.elapsed)),
        url: a.url.clone(),
    }
}

/// A log record as the API shows it.
pub fn log_record(record: &LogRecord) -> pb::LogRecord {
    match record {
        LogRecord::Request(r) => pb::LogRecord {
            id: r.id.clone(),
            r#type: "source.request".to_owned(),
            created_at: Some(timestamp(r.created_at)),
            body: Some(pb::log_record::Body::SourceRequest(source_request(r))),
        },
        LogRecord::Attempt(a) => pb::LogRecord {
            id: a.id.clone(),
            r#type: "target.response".to_owned(),
            created_at: Some(timestamp(a.created_at)),
            body: Some(pb::log_record::Body::TargetResponse(target_response(a))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_microseconds() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }
}
