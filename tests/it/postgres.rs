//! The gateway on PostgreSQL (`DATABASE_URL=postgres://...`): the same
//! behaviour as on SQLite, and a stopped server handled like any store that
//! is unavailable: 503, never a 2xx without a durable write, `/health` says
//! so, memory stays bounded, and it recovers by itself with nothing lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::util::hooks::{WAIT, all_delivered, health, last_request_id, post, settled, stored_ids};
use crate::util::postgres::{PrivateServer, TestDatabase};
use crate::util::{Gateway, TestTarget, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_stores_delivers_retries_and_resends_on_postgresql() {
    let db = TestDatabase::create();
    let mut gateway = Gateway::start_with(&[("DATABASE_URL", &db.url)]).await;
    let ok = TestTarget::start(200).await;
    let failing = TestTarget::start(500).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway.add_target("App", &ok.url(), &["--no-ssl"]).await;
    let (failing_id, _) = gateway
        .add_target(
            "Down",
            &failing.url(),
            &["--no-ssl", "--retry-interval=100ms", "--max-attempts=3"],
        )
        .await;

    let response = post(&gateway, &url, r#"{"n": 1}"#).await;
    assert_eq!(response.status(), 200);
    let request_id = last_request_id(&gateway).await;
    let received = ok.wait_for(1, WAIT).await;
    assert_eq!(received[0].body.as_ref(), br#"{"n": 1}"#);

    // The failing target: three attempts 100 ms apart, then failed.
    let attempts = eventually("three attempts to the failing target", WAIT, || async {
        let attempts = settled(&gateway, &request_id).await;
        let down: Vec<_> = attempts
            .into_iter()
            .filter(|a| a["target"]["id"] == failing_id)
            .collect();
        (down.last().is_some_and(|a| a["state"] == "failed")).then_some(down)
    })
    .await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[2]["response"]["status_code"], 500);
    // The rows are in the database itself.
    assert_eq!(db.sql("SELECT COUNT(*) FROM requests"), "1");
    assert_eq!(
        db.sql("SELECT state FROM deliveries ORDER BY target_id"),
        "delivered\nfailed"
    );
    // `delivery show` lists the failed delivery's own attempts, in order.
    let failed_delivery = db.sql(&format!(
        "SELECT id FROM deliveries WHERE target_id = {failing_id}"
    ));
    let shown = gateway
        .cli(&["delivery", "show", &failed_delivery])
        .await
        .ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let log = shown["attempt_log"].as_array().unwrap();
    let states: Vec<_> = log.iter().map(|a| a["state"].as_str()).collect();
    assert_eq!(
        states,
        [Some("retrying"), Some("retrying"), Some("failed")],
        "{shown}"
    );

    // Everything survives a crash of the gateway.
    gateway.restart().await;
    let failed = gateway
        .cli(&[
            "send",
            "--target-id",
            &failing_id.to_string(),
            "--failed",
            "--dry-run",
        ])
        .await
        .ok();
    assert!(
        failed.stdout.starts_with("1 failed deliveries"),
        "{failed:?}"
    );
    let logs = gateway.log("target.response", 10).await;
    assert_eq!(logs.len(), 4, "{logs:?}");

    // Resending stores a copy that is delivered again.
    gateway
        .cli(&["send", "--source-id", &request_id])
        .await
        .ok();
    ok.wait_for(2, WAIT).await;
    let requests = gateway.log("source.request", 10).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["resent_from"], request_id.as_str());
    assert_eq!(db.sql("SELECT COUNT(*) FROM requests"), "2");
}

/// Posts `{"id": N}` until `stop`, recording every acknowledged id; counts
/// answers by status. A 2xx is only ever acceptable with a durable write.
async fn load(
    gateway_http: String,
    url: reqwest::Url,
    ids: std::ops::Range<u64>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<u64>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
) {
    let client = crate::util::http();
    for id in ids {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let sent = client
            .post(format!("{gateway_http}{}", url.path()))
            .basic_auth(url.username(), url.password())
            .timeout(Duration::from_secs(30))
            .body(format!(r#"{{"id": {id}}}"#))
            .send()
            .await;
        let status = match sent {
            Ok(response) => response.status().as_u16(),
            Err(e) => panic!("the gateway must answer while the store is down: {e}"),
        };
        if status == 200 {
            acked.lock().await.insert(id);
        }
        statuses.lock().await.push(status);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgresql_gives_503_and_recovers_without_loss() {
    let server = PrivateServer::start();
    let gateway = Gateway::start_with(&[("DATABASE_URL", &server.url())]).await;
    let target = TestTarget::start(200).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        // A short timeout keeps leases short: a claim whose COMMIT answer
        // is lost when the server goes away is undone by its lease expiring.
        .add_target("App", &target.url(), &["--no-ssl", "--timeout=2s"])
        .await;
    let url = reqwest::Url::parse(&url).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4u64)
        .map(|i| {
            tokio::spawn(load(
                gateway.http_url(""),
                url.clone(),
                i * 1_000_000..(i + 1) * 1_000_000,
                stop.clone(),
                acked.clone(),
                statuses.clone(),
            ))
        })
        .collect();
    eventually("webhooks acknowledged", WAIT, || async {
        (acked.lock().await.len() >= 50).then_some(())
    })
    .await;

    // PostgreSQL goes away under load.
    server.stop();
    let stopped_at = statuses.lock().await.len();
    eventually("ingest to answer 503", WAIT, || async {
        statuses
            .lock()
            .await
            .last()
            .is_some_and(|s| *s == 503)
            .then_some(())
    })
    .await;
    let (status, body) = health(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    // While it stays down, under continued load: only 503s, memory bounded.
    let before_kib = gateway.rss_kib();
    let down_from = statuses.lock().await.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let while_down: Vec<u16> = statuses.lock().await[down_from..].to_vec();
    assert!(while_down.len() >= 4, "load continued: {while_down:?}");
    assert!(
        while_down.iter().all(|s| *s == 503),
        "nothing but 503 while the store is down: {while_down:?}"
    );
    let down_kib = gateway.rss_kib();
    assert!(
        down_kib < 64 * 1024,
        "memory stays bounded while the store is down: {down_kib} KiB (was {before_kib} KiB)"
    );
    let around_stop: Vec<u16> = statuses.lock().await[stopped_at..].to_vec();
    assert!(
        around_stop.iter().all(|s| *s == 200 || *s == 503),
        "only 200 or 503: {around_stop:?}"
    );

    // PostgreSQL is back: the gateway recovers by itself.
    server.resume();
    let recovered_from = statuses.lock().await.len();
    eventually("ingest to recover", Duration::from_secs(30), || async {
        statuses.lock().await[recovered_from..]
            .contains(&200)
            .then_some(())
    })
    .await;
    eventually("/health to recover", Duration::from_secs(30), || async {
        (health(&gateway).await.0 == 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }

    // Nothing acknowledged is lost, and all of it reaches the target.
    let acked = acked.lock().await.clone();
    let stored = stored_ids(&gateway).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // Outcomes recorded late, claims retried: give recovery its time.
    // and at worst a lease of 2 s + 30 s expiring.
    all_delivered(&target, &acked, WAIT * 4).await;
    eprintln!(
        "acknowledged {}, refused {}, RSS {before_kib} KiB when it stopped, {down_kib} KiB after 5 s down",
        acked.len(),
        statuses.lock().await.iter().filter(|s| **s == 503).count()
    );
}
