//! Local targets for benchmarks: a sink that timestamps what it receives,
//! and a black hole that accepts connections and never answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;

/// The header the load generator puts the send time in (unix nanoseconds);
/// the gateway relays it with the request.
pub const SENT_AT: &str = "x-bench-sent-at";

pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Answers 200 and records, per request, the time from send to arrival.
#[derive(Clone, Default)]
pub struct Sink {
    latencies: Arc<Mutex<Vec<Duration>>>,
}

impl Sink {
    /// Serves on a free port of 127.0.0.1 until the process ends.
    pub async fn start() -> anyhow::Result<(Sink, SocketAddr)> {
        let sink = Sink::default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = sink.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                let now = unix_nanos();
                if let Some(sent) = headers
                    .get(SENT_AT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u128>().ok())
                {
                    let nanos = u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX);
                    if let Ok(mut l) = state.latencies.lock() {
                        l.push(Duration::from_nanos(nanos));
                    }
                }
                StatusCode::OK
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((sink, addr))
    }

    /// Takes the latencies recorded so far.
    pub fn take(&self) -> Vec<Duration> {
        self.latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.latencies.lock().map(|l| l.len()).unwrap_or(0)
    }
}

/// Accepts connections and holds them open, never reading or answering.
pub async fn black_hole() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(addr)
}
