//! A real HTTP server on 127.0.0.1 standing in for the user's application:
//! it records every request it receives and answers with a status the test
//! sets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::sync::Notify;

/// One request as the target received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    headers: Mutex<Vec<(String, String)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrived: Notify,
}

/// The recording target; stops when dropped.
pub struct TestTarget {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Counted down even when the gateway gives up and drops the request.
    let _in_flight = InFlight(&shared.in_flight);
    shared.received.lock().unwrap().push(Received {
        method,
        uri,
        headers,
        body,
        at: std::time::Instant::now(),
    });
    shared.arrived.notify_waiters();
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap();
    let mut reply_headers = HeaderMap::new();
    for (name, value) in shared.headers.lock().unwrap().iter() {
        reply_headers.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let body = if status.is_success() {
        "OK"
    } else {
        "MAINTENANCE"
    };
    (status, reply_headers, body)
}

impl TestTarget {
    /// Starts answering `status` to everything.
    pub async fn start(status: u16) -> TestTarget {
        let shared = Arc::new(Shared::default());
        shared.status.store(status, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        TestTarget {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT/webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Changes the status answered from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Makes every answer wait this long (after the request is recorded).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Adds these headers to every answer from now on.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.shared.headers.lock().unwrap() = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// The most requests it was handling at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received().len();
                assert!(
                    got >= n,
                    "target got {got} requests, expected {n} within {timeout:?}"
                );
                return self.received();
            }
        }
    }
}
