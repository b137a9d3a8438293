//! Where a webhook is received: authenticate, read the body, commit, answer.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{check_basic, check_signature};
use super::{IngestState, reply};
use crate::health;
use crate::store::model::{LogRecord, StoredRequest, new_record_id, now_micros};

/// `GET /health`: 200 "running", or 503 "degraded" with the issues.
pub async fn health(State(state): State<IngestState>) -> Response {
    let report = health::check(&state.store).await;
    let status = if report.degraded {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (status, report.to_json()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Any path that is not a route.
pub async fn not_found() -> Response {
    reply::not_found()
}

/// `ANY /{source_id}[/...]`: stores the request, then answers with the
/// source's configured response. The answer is sent only after the commit.
pub async fn ingest(
    State(state): State<IngestState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request<Body>,
) -> Response {
    let Some(source_id) = params
        .first()
        .and_then(|(_, id)| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
    else {
        return reply::not_found();
    };
    let source = match state.store.ingest_source(source_id).await {
        Ok(Some(source)) => source,
        Ok(None) => return reply::not_found(),
        Err(e) => {
            tracing::error!(source_id, error = %e, "ingest: source lookup failed");
            return reply::store_unavailable();
        }
    };
    let (parts, body) = request.into_parts();
    if let Err(failure) = check_basic(&source, &parts.headers) {
        return reply::unauthorized(failure.message());
    }
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > state.max_body_size as u64) {
        return too_large(state.max_body_size);
    }
    let read = tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, state.max_body_size),
    )
    .await;
    let Ok(read) = read else {
        return reply::error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {}",
                humantime::format_duration(state.body_timeout)
            ),
        );
    };
    let body = match read {
        Ok(body) => body,
        Err(e) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                return too_large(state.max_body_size);
            }
            return reply::error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            );
        }
    };
    if let Err(failure) = check_signature(&source, &parts.headers, &body) {
        return reply::unauthorized(failure.message());
    }

    let stored = std::sync::Arc::new(StoredRequest {
        id: new_record_id(),
        source_id,
        source_name: Some(source.name.clone()),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            // The gateway's own credentials are not part of the webhook.
            .filter(|(name, _)| *name != header::AUTHORIZATION)
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        remote_addr: remote.to_string(),
        created_at: now_micros(),
        resent_from: None,
    });
    match state.store.ingest(&stored).await {
        // The commit that stored it also claimed its deliveries for the
        // worker, as far as it has room.
        Ok(deliveries) => {
            tracing::debug!(request_id = %stored.id, source_id, deliveries, "request stored");
            state.bus.publish(LogRecord::Request(stored));
        }
        Err(e) => {
            tracing::error!(source_id, error = %e, "ingest: commit failed, answering 503");
            return reply::store_unavailable();
        }
    }
    configured_response(&source)
}

fn too_large(limit: usize) -> Response {
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body larger than {limit} bytes"),
    )
}

fn configured_response(source: &crate::store::model::Source) -> Response {
    // The configured content is shared, not copied: Bytes clones are cheap.
    let status = StatusCode::from_u16(source.status_code).unwrap_or(StatusCode::OK);
    let mut response = (status, source.content.clone()).into_response();
    if let Ok(content_type) = HeaderValue::from_str(&source.content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}
