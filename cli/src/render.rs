//! API messages as the JSON objects the CLI prints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Map, Value, json};
use webhook_proto::v1 as pb;

/// A protobuf timestamp as RFC 3339 UTC with microseconds.
pub fn time(ts: Option<&prost_types::Timestamp>) -> Value {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            let at = UNIX_EPOCH
                + Duration::from_secs(ts.seconds as u64)
                + Duration::from_nanos(ts.nanos.max(0) as u64);
            Value::String(humantime::format_rfc3339_micros(at).to_string())
        }
        _ => Value::Null,
    }
}

/// A protobuf duration in words ("1m", "500ms").
pub fn duration(d: Option<&prost_types::Duration>) -> Value {
    match d {
        Some(d) if d.seconds >= 0 && d.nanos >= 0 => {
            let d = Duration::new(d.seconds as u64, d.nanos as u32);
            Value::String(humantime::format_duration(d).to_string())
        }
        _ => Value::Null,
    }
}

/// Headers as an object; repeated names are joined with ", ".
fn headers(headers: &[pb::Header]) -> Value {
    let mut map = Map::new();
    for h in headers {
        match map.get_mut(&h.name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&h.value);
            }
            _ => {
                map.insert(h.name.clone(), Value::String(h.value.clone()));
            }
        }
    }
    Value::Object(map)
}

/// A body as JSON when it is JSON, else text, else base64 (with
/// `<key>_encoding: "base64"`), inserted under `key`.
fn insert_body(object: &mut Map<String, Value>, key: &str, body: &[u8], parse_json: bool) {
    if body.is_empty() {
        object.insert(key.to_owned(), Value::Null);
        return;
    }
    if parse_json && let Ok(value) = serde_json::from_slice::<Value>(body) {
        object.insert(key.to_owned(), value);
        return;
    }
    match std::str::from_utf8(body) {
        Ok(text) => {
            object.insert(key.to_owned(), Value::String(text.to_owned()));
        }
        Err(_) => {
            object.insert(
                key.to_owned(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            );
            object.insert(
                format!("{key}_encoding"),
                Value::String("base64".to_owned()),
            );
        }
    }
}

fn empty_as_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// A log record: source.request or target.response.
pub fn log_record(record: &pb::LogRecord) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(record.id));
    o.insert("type".into(), json!(record.r#type));
    match &record.body {
        Some(pb::log_record::Body::SourceRequest(r)) => {
            o.insert(
                "source".into(),
                json!({ "id": r.source_id, "name": empty_as_null(&r.source_name) }),
            );
            o.insert("method".into(), json!(r.method));
            o.insert("path".into(), json!(r.path));
            o.insert("query".into(), json!(r.query));
            o.insert("headers".into(), headers(&r.headers));
            let user_agent = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("user-agent"))
                .map(|h| json!(h.value))
                .unwrap_or(Value::Null);
            o.insert("user-agent".into(), user_agent);
            o.insert("remote_addr".into(), json!(r.remote_addr));
            insert_body(&mut o, "payload", &r.body, true);
            o.insert("created_at".into(), time(record.created_at.as_ref()));
            o.insert("resent_from".into(), empty_as_null(&r.resent_from));
        }
        Some(pb::log_record::Body::TargetResponse(t)) => {
            o.insert(
                "source".into(),
                json!({ "id": t.request_id, "source_id": t.source_id }),
            );
            o.insert(
                "target".into(),
                json!({ "id": t.target_id, "name": empty_as_null(&t.target_name), "url": t.url }),
            );
            o.insert("delivery_id".into(), json!(t.delivery_id));
            o.insert("attempt".into(), json!(t.attempt));
            o.insert("state".into(), json!(t.state));
            if let Some(response) = &t.response {
                let mut r = Map::new();
                r.insert("status_code".into(), json!(response.status_code));
                r.insert("headers".into(), headers(&response.headers));
                insert_body(&mut r, "body", &response.body, false);
                r.insert("body_truncated".into(), json!(response.body_truncated));
                o.insert("response".into(), Value::Object(r));
            }
            if let Some(error) = &t.error {
                o.insert(
                    "error".into(),
                    json!({ "kind": error.kind, "message": error.message }),
                );
            }
            let elapsed_ms = t
                .elapsed
                .as_ref()
                .map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
                .unwrap_or_default();
            o.insert(
                "elapsed_ms".into(),
                json!((elapsed_ms * 1000.0).round() / 1000.0),
            );
            o.insert("created_at".into(), time(record.created_at.as_ref()));
            o.insert("next_run_at".into(), time(t.next_run_at.as_ref()));
        }
        None => {
            o.insert("created_at".into(), time(record.created_at.as_ref()));
        }
    }
    Value::Object(o)
}

/// The line printed to a follower that read too slowly.
pub fn missed(count: u64) -> Value {
    json!({
        "type": "log.missed",
        "missed": count,
        "created_at": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
    })
}

/// A source.
pub fn source(s: &pb::Source) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(s.id));
    o.insert("name".into(), json!(s.name));
    o.insert("ingest_url".into(), json!(s.ingest_url));
    o.insert("auth".into(), empty_as_null(&s.auth_provider));
    o.insert("signature_check".into(), json!(s.auth_secret_set));
    o.insert("status_code".into(), json!(s.status_code));
    o.insert("content_type".into(), json!(s.content_type));
    insert_body(&mut o, "content", &s.content, false);
    o.insert("created_at".into(), time(s.created_at.as_ref()));
    Value::Object(o)
}

/// A retry policy.
fn retry_policy(r: &pb::RetryPolicy) -> Value {
    let mut o = Map::new();
    o.insert("policy".into(), json!(r.kind));
    o.insert("description".into(), json!(r.description));
    match r.kind.as_str() {
        "linear" => {
            o.insert("interval".into(), duration(r.interval.as_ref()));
        }
        "exponential" => {
            o.insert("interval".into(), duration(r.interval.as_ref()));
            o.insert("factor".into(), json!(r.factor));
            o.insert("max_interval".into(), duration(r.max_interval.as_ref()));
        }
        "schedule" => {
            let delays: Vec<Value> = r.schedule.iter().map(|d| duration(Some(d))).collect();
            o.insert("schedule".into(), Value::Array(delays));
        }
        _ => {}
    }
    o.insert("max_attempts".into(), json!(r.max_attempts));
    Value::Object(o)
}

/// A rate limit as `100/s`.
fn rate(r: &pb::RateLimit) -> Value {
    let unit = match r.period.as_ref().map(|p| p.seconds) {
        Some(1) => "s",
        Some(60) => "m",
        Some(3600) => "h",
        _ => {
            return json!(format!(
                "{}/{}",
                r.count,
                duration(r.period.as_ref()).as_str().unwrap_or("?")
            ));
        }
    };
    json!(format!("{}/{unit}", r.count))
}

/// A target (its secret only when the server sent one: at creation).
pub fn target(t: &pb::Target) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(t.id));
    o.insert("name".into(), json!(t.name));
    o.insert("url".into(), json!(t.url));
    o.insert("signed".into(), json!(t.signed));
    if !t.signing_secret.is_empty() {
        o.insert("signing_secret".into(), json!(t.signing_secret));
    }
    o.insert("source_ids".into(), json!(t.source_ids));
    o.insert(
        "retry".into(),
        t.retry.as_ref().map(retry_policy).unwrap_or(Value::Null),
    );
    o.insert("timeout".into(), duration(t.timeout.as_ref()));
    o.insert("follow_redirects".into(), json!(t.follow_redirects));
    o.insert("retry_on_4xx".into(), json!(t.retry_on_4xx));
    o.insert("max_in_flight".into(), json!(t.max_in_flight));
    o.insert(
        "rate".into(),
        t.rate.as_ref().map(rate).unwrap_or(Value::Null),
    );
    o.insert("disabled".into(), empty_as_null(&t.disabled_reason));
    o.insert(
        "breaker".into(),
        json!({
            "state": t.breaker_state,
            "break_after": t.break_after,
            "consecutive_failures": t.consecutive_failures,
            "open_until": time(t.breaker_open_until.as_ref()),
        }),
    );
    o.insert("pending_deliveries".into(), json!(t.pending_deliveries));
    if !t.pending.is_empty() {
        let pending: Vec<Value> = t
            .pending
            .iter()
            .map(|p| {
                json!({
                    "delivery_id": p.delivery_id,
                    "request_id": p.request_id,
                    "state": p.state,
                    "attempts": p.attempts,
                    "next_run_at": time(p.next_run_at.as_ref()),
                })
            })
            .collect();
        o.insert("pending".into(), Value::Array(pending));
    }
    o.insert("created_at".into(), time(t.created_at.as_ref()));
    Value::Object(o)
}

/// A delivery.
pub fn delivery(d: &pb::Delivery) -> Value {
    json!({
        "id": d.id,
        "request_id": d.request_id,
        "target": { "id": d.target_id, "name": empty_as_null(&d.target_name) },
        "state": d.state,
        "attempts": d.attempts,
        "next_run_at": time(d.next_run_at.as_ref()),
        "created_at": time(d.created_at.as_ref()),
        "updated_at": time(d.updated_at.as_ref()),
    })
}

/// A target's routes in words.
pub fn routes(t: &pb::Target) -> String {
    if t.source_ids.is_empty() {
        "all".to_owned()
    } else {
        t.source_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &[u8]) -> pb::LogRecord {
        pb::LogRecord {
            id: "0".repeat(32),
            r#type: "source.request".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_494_728_630,
                nanos: 5_000,
            }),
            body: Some(pb::log_record::Body::SourceRequest(pb::SourceRequest {
                source_id: 1,
                source_name: "Github".into(),
                method: "POST".into(),
                headers: vec![
                    pb::Header {
                        name: "user-agent".into(),
                        value: "curl/7.51.0".into(),
                    },
                    pb::Header {
                        name: "x-tag".into(),
                        value: "a".into(),
                    },
                    pb::Header {
                        name: "x-tag".into(),
                        value: "b".into(),
                    },
                ],
                body: body.to_vec(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn payload_is_json_then_text_then_base64() {
        let json_body = log_record(&request(br#"{"data": {}}"#));
        assert_eq!(json_body["payload"], json!({"data": {}}));
        assert!(json_body.get("payload_encoding").is_none());
        assert_eq!(json_body["user-agent"], "curl/7.51.0");
        assert_eq!(json_body["headers"]["x-tag"], "a, b");
        assert_eq!(json_body["created_at"], "2017-05-14T02:23:50.000005Z");
        assert_eq!(json_body["resent_from"], Value::Null);

        let text = log_record(&request(b"plain text"));
        assert_eq!(text["payload"], "plain text");

        let binary = log_record(&request(&[0xff, 0x00, 0x80]));
        assert_eq!(binary["payload"], "/wCA");
        assert_eq!(binary["payload_encoding"], "base64");

        assert_eq!(log_record(&request(b""))["payload"], Value::Null);
    }

    #[test]
    fn attempts_show_either_a_response_or_an_error() {
        let record = pb::LogRecord {
            id: "1".repeat(32),
            r#type: "target.response".into(),
            created_at: None,
            body: Some(pb::log_record::Body::TargetResponse(pb::TargetResponse {
                request_id: "0".repeat(32),
                target_id: 2,
                target_name: "App".into(),
                attempt: 3,
                state: "failed".into(),
                error: Some(pb::AttemptError {
                    kind: "timeout".into(),
                    message: "30s".into(),
                }),
                ..Default::default()
            })),
        };
        let rendered = log_record(&record);
        assert_eq!(rendered["source"]["id"], "0".repeat(32));
        assert_eq!(rendered["target"]["name"], "App");
        assert_eq!(
            rendered["error"],
            json!({"kind": "timeout", "message": "30s"})
        );
        assert!(rendered.get("response").is_none());
        assert_eq!(rendered["next_run_at"], Value::Null);
    }
}
