//! Targets that misbehave at the TCP level: every case ends in the state
//! the retry policy says, with a clear `error.kind`.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::hooks::{WAIT, attempts_of, last_request_id, post};
use crate::util::{Gateway, eventually};

#[derive(Clone, Copy)]
enum Fault {
    /// Promises 100 bytes, sends 7, closes.
    ResetMidResponse,
    /// Sends headers, then a trickle of chunks forever.
    NeverEnds,
    /// Announces 10 GB and streams zeros as fast as it can.
    HugeBody,
}

async fn serve(mut socket: TcpStream, fault: Fault) {
    let mut request = vec![0u8; 64 * 1024];
    let _ = socket.read(&mut request).await;
    match fault {
        Fault::ResetMidResponse => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                .await;
        }
        Fault::NeverEnds => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            for _ in 0..600 {
                if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Fault::HugeBody => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\n")
                .await;
            let zeros = vec![0u8; 64 * 1024];
            // Bounded: at most 1 GB, and it stops when the gateway hangs up.
            for _ in 0..16_384 {
                if socket.write_all(&zeros).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A misbehaving target on 127.0.0.1; returns its URL.
async fn faulty(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, fault));
        }
    });
    format!("http://{addr}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_targets_end_as_the_policy_says() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let flags = [
        "--no-ssl",
        "--no-auth",
        "--retry-interval=100ms",
        "--max-attempts=2",
        "--timeout=700ms",
    ];
    let (reset, _) = gateway
        .add_target("Reset", &faulty(Fault::ResetMidResponse).await, &flags)
        .await;
    let (endless, _) = gateway
        .add_target("Endless", &faulty(Fault::NeverEnds).await, &flags)
        .await;
    let (huge, _) = gateway
        .add_target("Huge", &faulty(Fault::HugeBody).await, &flags)
        .await;
    let storm = crate::util::TestTarget::start(500).await;
    let (stormy, _) = gateway.add_target("Storm", &storm.url(), &flags).await;

    post(&gateway, &url, r#"{"n": 1}"#).await;
    let request_id = last_request_id(&gateway).await;
    let all = eventually("every target to finish", WAIT, || async {
        let all = attempts_of(&gateway, &request_id).await;
        let finished = [reset, endless, huge, stormy].iter().all(|id| {
            all.iter()
                .any(|a| a["target"]["id"] == *id && a["state"] != "retrying")
        });
        finished.then_some(all)
    })
    .await;
    let of = |id: i64| -> Vec<Value> {
        all.iter()
            .filter(|a| a["target"]["id"] == id)
            .cloned()
            .collect()
    };

    for (id, kind) in [(reset, "body"), (endless, "timeout")] {
        let attempts = of(id);
        let states: Vec<_> = attempts
            .iter()
            .map(|a| a["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["retrying", "failed"], "target {id}");
        for a in &attempts {
            assert_eq!(a["error"]["kind"], kind, "target {id}: {a}");
        }
    }

    // A 2xx with an endless body is delivered; the log keeps 64 KiB of it.
    let huge_attempts = of(huge);
    assert_eq!(huge_attempts.len(), 1);
    assert_eq!(huge_attempts[0]["state"], "delivered");
    assert_eq!(huge_attempts[0]["response"]["body_truncated"], true);
    let kept = huge_attempts[0]["response"]["body"].as_str().unwrap().len();
    assert_eq!(kept, 64 * 1024);

    let storm_attempts = of(stormy);
    let states: Vec<_> = storm_attempts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retrying", "failed"]);
    assert!(
        storm_attempts
            .iter()
            .all(|a| a["response"]["status_code"] == 500)
    );

    let health = crate::util::http()
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
