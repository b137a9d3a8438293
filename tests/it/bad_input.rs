//! Bad HTTP input on the data plane: a clear 4xx, no panic, nothing stored,
//! and the server keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::Gateway;

/// Writes raw bytes and returns the status line of the answer ("" if the
/// server closed without one).
async fn raw(gateway: &Gateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.http_addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn status_of(line: &str) -> u16 {
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn still_healthy(gateway: &Gateway) {
    let health = crate::util::http()
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_a_4xx() {
    let gateway = Gateway::start().await;
    let (id, url) = gateway.add_source("Github", &[]).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let auth = basic_token(&parsed);

    let line = raw(&gateway, b"GARBAGE\r\n\r\n").await;
    assert_eq!(status_of(&line), 400, "{line:?}");

    let huge = format!(
        "POST /{id} HTTP/1.1\r\nhost: x\r\nx-big: {}\r\ncontent-length: 2\r\n\r\n{{}}",
        "a".repeat(1 << 20)
    );
    let line = raw(&gateway, huge.as_bytes()).await;
    assert!(matches!(status_of(&line), 400 | 431), "{line:?}");

    let mut many = format!("POST /{id} HTTP/1.1\r\nhost: x\r\n");
    for i in 0..5000 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("content-length: 2\r\n\r\n{}");
    let line = raw(&gateway, many.as_bytes()).await;
    assert!(matches!(status_of(&line), 400 | 431), "{line:?}");

    let line = raw(
        &gateway,
        b"POST /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&line), 405, "{line:?}");

    // A declared length that the body never reaches: the connection ends
    // with the request unanswered or refused, and nothing stored.
    let short = format!(
        "POST /{id} HTTP/1.1\r\nhost: x\r\nauthorization: Basic {auth}\r\ncontent-length: 100\r\n\r\n{{}}"
    );
    let mut stream = TcpStream::connect(gateway.http_addr).await.unwrap();
    stream.write_all(short.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(line.is_empty() || status_of(&line) == 400, "{line:?}");

    assert!(
        gateway.log("source.request", 10).await.is_empty(),
        "nothing half-stored"
    );
    still_healthy(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_gets_408() {
    let gateway = Gateway::start_with(&[("BODY_TIMEOUT", "500ms")]).await;
    let (id, url) = gateway.add_source("Github", &[]).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let auth = basic_token(&parsed);
    let mut stream = TcpStream::connect(gateway.http_addr).await.unwrap();
    let head = format!(
        "POST /{id} HTTP/1.1\r\nhost: x\r\nauthorization: Basic {auth}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"5\r\nhello\r\n").await.unwrap();
    // ...and never the last chunk.
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers instead of waiting forever")
        .unwrap();
    let line = String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(status_of(&line), 408, "{line:?}");
    assert!(gateway.log("source.request", 10).await.is_empty());
    still_healthy(&gateway).await;
}

/// The base64 of an ingest URL's `user:password`, for raw requests.
fn basic_token(url: &reqwest::Url) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        url.username(),
        url.password().unwrap()
    ))
}
