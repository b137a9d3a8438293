//! The data plane: health, unknown paths, credentials, signatures, the
//! configured response, body limits, byte-exact storage, and 503 when the
//! store cannot commit.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::util::{Gateway, TestTarget};

/// (user, password) out of an ingest URL.
fn credentials(ingest_url: &str) -> (String, String) {
    let url = reqwest::Url::parse(ingest_url).unwrap();
    (
        url.username().to_owned(),
        url.password().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_paths() {
    let gateway = Gateway::start().await;
    let client = crate::util::http();
    let health = client
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["content-type"], "application/json");
    assert_eq!(
        health.text().await.unwrap(),
        r#"{"status": "running", "issues": []}"#
    );

    for path in [
        "/",
        "/nope",
        "/0",
        "/-1",
        "/abc",
        "/999",
        "/1/x",
        "/health/x",
    ] {
        let response = client
            .post(gateway.http_url(path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body, json!({"error": "not found"}), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_and_nothing_is_stored_without_them() {
    let gateway = Gateway::start().await;
    let (id, url) = gateway.add_source("Github", &[]).await;
    let (_, other_url) = gateway.add_source("Stripe", &[]).await;
    let (user, pass) = credentials(&url);
    let (other_user, other_pass) = credentials(&other_url);
    let target = gateway.http_url(&format!("/{id}"));
    let client = crate::util::http();

    let cases: Vec<(&str, Option<(String, String)>)> = vec![
        ("no credentials", None),
        ("wrong password", Some((user.clone(), "0".repeat(32)))),
        ("wrong user", Some(("0".repeat(32), pass.clone()))),
        (
            "another source's credentials",
            Some((other_user, other_pass)),
        ),
        ("empty", Some((String::new(), String::new()))),
    ];
    for (what, creds) in cases {
        let mut request = client.post(&target).body(r#"{"a": 1}"#);
        if let Some((u, p)) = creds {
            request = request.basic_auth(u, Some(p));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{what}"
        );
    }
    let garbage = client
        .post(&target)
        .header("authorization", "Basic !!!not-base64")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
    assert!(
        gateway.log("source.request", 10).await.is_empty(),
        "refused requests must not be stored"
    );

    let ok = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body(r#"{"a": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let records = gateway.log("source.request", 10).await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0]["headers"].get("authorization").is_none(),
        "the gateway's credentials are not kept with the webhook"
    );
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_signature_is_verified_when_a_secret_is_set() {
    let gateway = Gateway::start().await;
    let (id, url) = gateway
        .add_source("Github", &["--auth=ghook:It's a Secret to Everybody"])
        .await;
    let (user, pass) = credentials(&url);
    let client = crate::util::http();
    let target = gateway.http_url(&format!("/{id}"));
    let body = br#"{"zen": "Keep it logically awesome."}"#;

    let post = |signature: Option<String>| {
        let mut request = client
            .post(&target)
            .basic_auth(&user, Some(&pass))
            .header("x-github-event", "ping")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(github_signature("wrong", body)))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(Some("sha256=zz".into())).await.unwrap().status(), 401);
    let ok = post(Some(github_signature("It's a Secret to Everybody", body)))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(gateway.log("source.request", 10).await.len(), 1);

    let shown = gateway.cli(&["source", "show", &id.to_string()]).await.ok();
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["auth"], "ghook");
    assert_eq!(shown["signature_check"], true);
    assert!(
        !shown.to_string().contains("Secret to Everybody"),
        "the secret is never shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_response_is_sent_after_storing() {
    let gateway = Gateway::start().await;
    let (id, url) = gateway
        .add_source(
            "Shopify",
            &[
                "--status-code=202",
                "--content-type=text/plain",
                "--content=accepted",
            ],
        )
        .await;
    let (user, pass) = credentials(&url);
    let response = crate::util::http()
        .put(gateway.http_url(&format!("/{id}/orders/create?shop=acme&x=1")))
        .basic_auth(user, Some(pass))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().await.unwrap(), "accepted");
    let records = gateway.log("source.request", 1).await;
    assert_eq!(records[0]["method"], "PUT");
    assert_eq!(records[0]["path"], format!("/{id}/orders/create"));
    assert_eq!(records[0]["query"], "shop=acme&x=1");
    assert_eq!(records[0]["payload"], "hello");
    assert!(
        records[0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_are_stored_and_relayed_byte_exact() {
    let gateway = Gateway::start().await;
    let target = TestTarget::start(200).await;
    let (id, url) = gateway.add_source("Binary", &[]).await;
    gateway
        .add_target("App", &target.url(), &["--no-ssl"])
        .await;
    let (user, pass) = credentials(&url);
    let body: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let response = crate::util::http()
        .post(gateway.http_url(&format!("/{id}")))
        .basic_auth(user, Some(pass))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = target.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].body.as_ref(), body.as_slice());
    assert_eq!(
        received[0].headers["content-type"],
        "application/octet-stream"
    );
    let records = gateway.log("source.request", 1).await;
    assert_eq!(records[0]["payload_encoding"], "base64");
    let stored = base64::engine::general_purpose::STANDARD
        .decode(records[0]["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_nothing_is_stored() {
    let gateway = Gateway::start_with(&[("MAX_BODY_SIZE", "1024")]).await;
    let (id, url) = gateway.add_source("Small", &[]).await;
    let (user, pass) = credentials(&url);
    let client = crate::util::http();
    let target = gateway.http_url(&format!("/{id}"));

    let declared = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    assert!(
        declared
            .text()
            .await
            .unwrap()
            .contains("larger than 1024 bytes")
    );

    // Chunked: no Content-Length, the limit is found while reading.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let chunked = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert!(gateway.log("source.request", 10).await.is_empty());

    let fits = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body(vec![b'z'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    assert_eq!(gateway.log("source.request", 10).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_gives_503_never_success() {
    let gateway = Gateway::start().await;
    let (id, url) = gateway.add_source("Github", &[]).await;
    let (user, pass) = credentials(&url);
    let client = crate::util::http();
    let target = gateway.http_url(&format!("/{id}"));

    // Another process takes the write lock and holds it.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(gateway.db_path());
    let mut locker = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();

    let refused = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let health = client
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = serde_json::from_str(&health.text().await.unwrap()).unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["issues"][0].as_str().unwrap().starts_with("store"),
        "{health}"
    );

    // Load while it stays locked, in two waves of 64 concurrent 64 KiB
    // webhooks: every one refused, and memory does not grow from wave to wave.
    let mut rss_kib = Vec::new();
    for _ in 0..2 {
        let wave: Vec<_> = (0..64)
            .map(|_| {
                let request = client
                    .post(&target)
                    .basic_auth(&user, Some(&pass))
                    .body(vec![b'm'; 64 * 1024]);
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        for sent in wave {
            assert_eq!(sent.await.unwrap(), 503);
        }
        rss_kib.push(gateway.rss_kib());
    }
    assert!(
        rss_kib.iter().all(|kib| *kib < 64 * 1024),
        "memory bounded while the store is locked: {rss_kib:?} KiB"
    );
    assert!(
        rss_kib[1] < rss_kib[0] + 8 * 1024,
        "no growth from wave to wave: {rss_kib:?} KiB"
    );

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);

    // It recovers by itself: the next webhook is stored, and health is back.
    let ok = client
        .post(&target)
        .basic_auth(&user, Some(&pass))
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let health = client
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "recovers by itself");
    let records = gateway.log("source.request", 10).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["payload"], "kept");
}
