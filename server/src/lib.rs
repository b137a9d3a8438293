//! Webhook-Enterprise gateway: receives webhooks over HTTP, commits each one
//! to the store before answering, relays it to the targets with retries, and
//! serves the gRPC admin API.
//!
//! `main.rs` parses the configuration and calls [`run`]; tests call it too.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod delivery;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod ingest;
pub mod logbus;
pub mod retention;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The two listening sockets, bound before start-up so port 0 works and the
/// chosen ports are known.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the data-plane and admin addresses of `config`.
    ///
    /// # Errors
    /// An address is in use or cannot be bound; the message names the setting.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on HTTP_ADDR {}", config.http_addr))?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("cannot listen on ADMIN_ADDR {}", config.admin_addr))?;
        Ok(Listeners { http, admin })
    }
}

/// The base of ingest URLs: PUBLIC_URL, else http:// and the data-plane address.
fn public_url(config: &Config, http_addr: SocketAddr) -> anyhow::Result<reqwest::Url> {
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{http_addr}"));
    reqwest::Url::parse(&base).with_context(|| format!("PUBLIC_URL {base:?} is not a valid URL"))
}

/// Runs the gateway until `shutdown` is cancelled, then stops accepting,
/// lets in-flight deliveries finish within the grace period, and returns.
///
/// # Errors
/// The store cannot be opened or migrated, or a listener fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Several crates may link rustls; the process picks ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let store = store::Store::open(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the store at DATABASE_URL {}",
                config.database_url
            )
        })?;
    let released = store.release_all_leases().await?;
    if released > 0 {
        tracing::info!(
            released,
            "deliveries left in flight by the last run are pending again"
        );
    }

    let http_addr = listeners.http.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let public_url = public_url(&config, http_addr)?;
    let bus = logbus::LogBus::new(config.follow_buffer);
    let wake_worker = Arc::new(Notify::new());
    let clients = delivery::HttpClients::new().context("cannot set up the HTTP client")?;
    let default_retry = config.default_retry_policy()?;

    let ingest_stop = shutdown.child_token();
    let admin_stop = shutdown.child_token();
    let worker_stop = shutdown.child_token();

    let worker = delivery::Worker {
        store: store.clone(),
        bus: bus.clone(),
        clients,
        wake: wake_worker.clone(),
        concurrency: config.delivery_concurrency,
        breaker_cooldown: config.breaker_cooldown,
    };
    let worker_task = tokio::spawn(worker.run(worker_stop, config.shutdown_grace));
    let retention_task = config.retention.map(|keep| {
        tokio::spawn(retention::run(
            store.clone(),
            keep,
            config.retention_sweep_every,
            shutdown.child_token(),
        ))
    });

    let ingest_state = ingest::IngestState {
        store: store.clone(),
        bus: bus.clone(),
        max_body_size: config.max_body_size,
        body_timeout: config.body_timeout,
    };
    let mut ingest_task = tokio::spawn(ingest::serve(listeners.http, ingest_state, ingest_stop));

    let admin_state = admin::AdminState {
        store: store.clone(),
        bus,
        wake_worker,
        public_url: public_url.clone(),
        http_addr,
        default_retry,
        shutdown: admin_stop,
    };
    let secure_key = config.secure_key().to_owned();
    let mut admin_task = tokio::spawn(async move {
        admin::serve(listeners.admin, admin_state, &secure_key)
            .await
            .map_err(|e| anyhow::anyhow!("admin server failed: {e}"))
    });

    tracing::info!(
        %http_addr,
        %admin_addr,
        public_url = %public_url,
        store = %config.database_url,
        "webhook-server ready"
    );

    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        result = &mut ingest_task => Some(flatten("ingest server", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut admin_task => Some(flatten("admin server", result)),
    };
    // A server that ended because shutdown began has not failed.
    let failure = failure.filter(|_| !shutdown.is_cancelled());
    tracing::info!("shutting down: no new requests; finishing deliveries in flight");
    shutdown.cancel();
    if !ingest_task.is_finished() {
        let _ = ingest_task.await;
    }
    if !admin_task.is_finished() {
        let _ = admin_task.await;
    }
    let _ = worker_task.await;
    if let Some(task) = retention_task {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("stopped");
    match failure {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

fn flatten(
    what: &str,
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match result {
        Ok(Ok(())) => Err(anyhow::anyhow!("{what} stopped unexpectedly")),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow::anyhow!("{what} crashed: {e}")),
    }
}
