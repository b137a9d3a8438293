//! One HTTP attempt: the stored request, re-sent to the target URL.

use std::error::Error as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::MAX_LOGGED_BODY;
use super::signing;
use crate::store::model::{AttemptError, AttemptResponse, ClaimedDelivery};

/// Request headers never relayed: hop-by-hop headers (RFC 9110 §7.6.1),
/// those the client recomputes, the gateway's own credentials, and any
/// signature headers of ours that a source might have sent.
const NOT_RELAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Sends one attempt of `claimed`; returns its outcome and how long it took.
pub async fn send_attempt(
    client: &reqwest::Client,
    claimed: &ClaimedDelivery,
) -> (Result<AttemptResponse, AttemptError>, Duration) {
    let started = Instant::now();
    let outcome = match build_request(client, claimed) {
        Ok(request) => execute(client, request).await,
        Err(e) => Err(e),
    };
    (outcome, started.elapsed())
}

fn build_request(
    client: &reqwest::Client,
    claimed: &ClaimedDelivery,
) -> Result<reqwest::Request, AttemptError> {
    let request = &claimed.request;
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| {
        invalid(
            "request",
            format!("stored method {:?}: {e}", request.method),
        )
    })?;
    let mut headers = HeaderMap::with_capacity(request.headers.len() + 3);
    for (name, value) in &request.headers {
        if NOT_RELAYED.contains(&name.as_str()) {
            continue;
        }
        // A header the store could not keep byte-exact is skipped, not fatal.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(secret) = &claimed.target.signing_secret {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signature = signing::sign(secret, &request.id, timestamp, &request.body)
            .map_err(|e| invalid("signing", format!("target signing secret: {e}")))?;
        for (name, value) in [
            ("webhook-id", request.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            let value =
                HeaderValue::from_str(&value).map_err(|e| invalid("signing", e.to_string()))?;
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    client
        .request(method, &claimed.target.url)
        .headers(headers)
        .body(request.body.clone())
        .timeout(claimed.target.settings.timeout)
        .build()
        .map_err(|e| invalid("request", describe(&e)))
}

async fn execute(
    client: &reqwest::Client,
    request: reqwest::Request,
) -> Result<AttemptResponse, AttemptError> {
    let mut response = client.execute(request).await.map_err(|e| error_of(&e))?;
    let status_code = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = BytesMut::new();
    let mut body_truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| error_of(&e))? {
        let room = MAX_LOGGED_BODY - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            // The rest is not needed: dropping the response closes the stream.
            body_truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(AttemptResponse {
        status_code,
        headers,
        body: Bytes::from(body),
        body_truncated,
    })
}

fn invalid(kind: &str, message: String) -> AttemptError {
    AttemptError {
        kind: kind.to_owned(),
        message,
    }
}

/// Maps a client error to a stable `error.kind` and a readable message.
fn error_of(e: &reqwest::Error) -> AttemptError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "io"
    };
    invalid(kind, describe(e))
}

/// The error and its causes on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
