//! The gRPC admin plane (package `webhook.v1`): sources, targets, logs,
//! resend and status, plus server reflection and grpc.health.v1. Every call
//! must carry `authorization: Bearer <SECURE_KEY>`.

mod auth;
mod convert;
mod deliveries;
mod error;
mod logs;
mod sources;
mod system;
mod targets;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use webhook_proto::v1::deliveries_server::DeliveriesServer;
use webhook_proto::v1::logs_server::LogsServer;
use webhook_proto::v1::sources_server::SourcesServer;
use webhook_proto::v1::system_server::SystemServer;
use webhook_proto::v1::targets_server::TargetsServer;

use crate::logbus::LogBus;
use crate::store::Store;

/// What the admin services share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub store: Store,
    pub bus: LogBus,
    /// Woken after a resend creates deliveries.
    pub wake_worker: Arc<Notify>,
    /// Scheme, host and port of ingest URLs.
    pub public_url: reqwest::Url,
    /// Where the data plane listens.
    pub http_addr: SocketAddr,
    /// Retry policy of targets created without one.
    pub default_retry: crate::store::model::RetryPolicy,
    /// Cancelled at shutdown: ends follow streams.
    pub shutdown: CancellationToken,
}

/// Serves the admin plane on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// The reflection descriptors are invalid or the server fails.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    secure_key: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(webhook_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(webhook_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SourcesServer<sources::SourcesService>>()
        .await;
    health_reporter
        .set_serving::<TargetsServer<targets::TargetsService>>()
        .await;
    health_reporter
        .set_serving::<LogsServer<logs::LogsService>>()
        .await;
    health_reporter
        .set_serving::<DeliveriesServer<deliveries::DeliveriesService>>()
        .await;
    health_reporter
        .set_serving::<SystemServer<system::SystemService>>()
        .await;

    let shutdown = state.shutdown.clone();
    tonic::transport::Server::builder()
        .layer(InterceptorLayer::new(auth::BearerAuth::new(secure_key)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SourcesServer::new(sources::SourcesService(state.clone())))
        .add_service(TargetsServer::new(targets::TargetsService(state.clone())))
        .add_service(LogsServer::new(logs::LogsService(state.clone())))
        .add_service(DeliveriesServer::new(deliveries::DeliveriesService(
            state.clone(),
        )))
        .add_service(SystemServer::new(system::SystemService(state)))
        // No Nagle: a unary answer goes out in more than one write, and
        // waiting for the client's delayed ACK cost each call 40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
