//! The HTTP data plane: webhook ingest at `/{source_id}`, and `/health`.

mod auth;
mod handler;
mod reply;

pub use auth::{AuthFailure, check_basic, check_signature, verify_github_signature};

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::logbus::LogBus;
use crate::store::Store;

/// What the ingest handlers share.
#[derive(Debug, Clone)]
pub struct IngestState {
    pub store: Store,
    pub bus: LogBus,
    pub max_body_size: usize,
    /// Longest a body may take to arrive.
    pub body_timeout: std::time::Duration,
}

/// The data-plane routes.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/health", get(handler::health))
        .route("/{source_id}", any(handler::ingest))
        .route("/{source_id}/{*rest}", any(handler::ingest))
        .fallback(handler::not_found)
        .with_state(state)
}

/// Serves the data plane on `listener` until `shutdown` is cancelled, then
/// finishes the requests in progress.
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: TcpListener,
    state: IngestState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
