//! Recovery: delivery list/show, resending every failed delivery, leases of
//! a killed server, and draining on SIGTERM.

use std::time::Duration;

use serde_json::Value;

use crate::util::hooks::{WAIT, last_request_id, post, settled};
use crate::util::{Gateway, TestTarget, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_listed_shown_and_resent_in_bulk() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(503).await;
    let (target, _) = gateway
        .add_target(
            "Down",
            &app.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=50ms",
                "--max-attempts=2",
            ],
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        post(&gateway, &url, &format!(r#"{{"n": {i}}}"#)).await;
        ids.push(last_request_id(&gateway).await);
    }
    for id in &ids {
        settled(&gateway, id).await;
    }
    let failed = gateway
        .cli(&[
            "delivery",
            "list",
            "--state=failed",
            &format!("--target-id={target}"),
        ])
        .await
        .ok()
        .json_lines();
    assert_eq!(failed.len(), 3);
    assert!(
        failed
            .iter()
            .all(|d| d["attempts"] == 2 && d["next_run_at"].is_null())
    );
    assert!(
        gateway
            .cli(&["delivery", "list", "--state=pending"])
            .await
            .ok()
            .stdout
            .is_empty()
    );

    let shown = gateway
        .cli(&["delivery", "show", failed[0]["id"].as_str().unwrap()])
        .await
        .ok();
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "failed");
    let log = shown["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["state"], "retrying");
    assert_eq!(log[1]["state"], "failed");
    assert_eq!(log[1]["response"]["status_code"], 503);

    let dry = gateway
        .cli(&[
            "send",
            &format!("--target-id={target}"),
            "--failed",
            "--since=1h",
            "--dry-run",
        ])
        .await
        .ok();
    assert_eq!(
        dry.stdout.trim(),
        format!("3 failed deliveries to target {target} in the last 1h would be resent (dry run)")
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.received().len(), 6, "a dry run sends nothing");

    app.set_status(200);
    let out = gateway
        .cli(&["send", &format!("--target-id={target}"), "--failed"])
        .await
        .ok();
    assert_eq!(
        out.stdout.trim(),
        format!("resent 3 of 3 failed deliveries to target {target} from the last 1day")
    );
    let received = app.wait_for(9, WAIT).await;
    let mut bodies: Vec<_> = received[6..].iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [&br#"{"n": 0}"#[..], br#"{"n": 1}"#, br#"{"n": 2}"#]
    );
    let delivered = eventually("the resends to be delivered", WAIT, || async {
        let list = gateway
            .cli(&["delivery", "list", "--state=delivered"])
            .await
            .ok()
            .json_lines();
        (list.len() == 3).then_some(list)
    })
    .await;
    assert!(
        delivered
            .iter()
            .all(|d| !ids.contains(&d["request_id"].as_str().unwrap().to_owned())),
        "copies, not the originals"
    );

    let bad = gateway.cli(&["send", "--target-id=99", "--failed"]).await;
    assert!(
        bad.stderr.contains("not found: target 99 not found"),
        "{}",
        bad.stderr
    );
    let bad = gateway.cli(&["delivery", "list", "--state=lost"]).await;
    assert!(
        bad.stderr
            .contains("invalid argument: state: \"lost\" is not one of"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_in_flight_delivery_is_sent_again() {
    let mut gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(200).await;
    app.set_delay(Duration::from_secs(2));
    gateway
        .add_target("Slow", &app.url(), &["--no-ssl", "--no-auth"])
        .await;
    post(&gateway, &url, r#"{"once": "at least"}"#).await;
    app.wait_for(1, WAIT).await;
    gateway.kill().await;
    app.set_delay(Duration::ZERO);
    gateway.restart().await;
    let received = app.wait_for(2, WAIT).await;
    assert_eq!(received[1].body.as_ref(), br#"{"once": "at least"}"#);
    let request_id = last_request_id(&gateway).await;
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(attempts.last().unwrap()["state"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_attempts_finish() {
    let mut gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(200).await;
    app.set_delay(Duration::from_millis(800));
    gateway
        .add_target("Slow", &app.url(), &["--no-ssl", "--no-auth"])
        .await;
    post(&gateway, &url, "{}").await;
    app.wait_for(1, WAIT).await;
    assert_eq!(
        gateway.terminate().await,
        Some(0),
        "{}",
        gateway.server_log()
    );
    gateway.restart().await;
    let attempts = gateway.log("target.response", 10).await;
    assert_eq!(
        attempts.len(),
        1,
        "the attempt finished and was recorded before exit"
    );
    assert_eq!(attempts[0]["state"], "delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.received().len(), 1, "nothing is sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_gives_attempts_back() {
    let mut gateway = Gateway::start_with(&[("SHUTDOWN_GRACE", "200ms")]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(200).await;
    app.set_delay(Duration::from_secs(3));
    gateway
        .add_target("Slow", &app.url(), &["--no-ssl", "--no-auth"])
        .await;
    post(&gateway, &url, "{}").await;
    app.wait_for(1, WAIT).await;
    assert_eq!(
        gateway.terminate().await,
        Some(0),
        "{}",
        gateway.server_log()
    );
    assert!(
        gateway.server_log().contains("leases given back"),
        "{}",
        gateway.server_log()
    );
    app.set_delay(Duration::ZERO);
    gateway.restart().await;
    let received = app.wait_for(2, WAIT).await;
    assert_eq!(received.len(), 2);
    let request_id = last_request_id(&gateway).await;
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0]["attempt"], 1,
        "the abandoned attempt was not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_nothing() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    let mut gateway = Gateway::start_with(&[("SHUTDOWN_GRACE", "1s")]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(200).await;
    // Slow enough that attempts are in flight at the signal.
    app.set_delay(Duration::from_millis(300));
    gateway
        .add_target("Slow", &app.url(), &["--no-ssl", "--no-auth"])
        .await;

    // Four senders post until the server stops answering.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let parsed = reqwest::Url::parse(&url).unwrap();
    let senders: Vec<_> = (0..4u64)
        .map(|sender| {
            let (acked, parsed) = (acked.clone(), parsed.clone());
            let target = gateway.http_url(parsed.path());
            tokio::spawn(async move {
                let client = crate::util::http();
                for n in 0.. {
                    let id = sender * 1_000_000 + n;
                    let sent = client
                        .post(&target)
                        .basic_auth(parsed.username(), parsed.password())
                        .body(format!(r#"{{"id": {id}}}"#))
                        .send()
                        .await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            acked.lock().unwrap().insert(id);
                        }
                        Ok(503) => {}
                        Ok(other) => panic!("unexpected status {other}"),
                        // Stopped accepting.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    eventually("load and deliveries in flight", WAIT, || async {
        (acked.lock().unwrap().len() >= 100 && !app.received().is_empty()).then_some(())
    })
    .await;

    let started = std::time::Instant::now();
    assert_eq!(
        gateway.terminate().await,
        Some(0),
        "{}",
        gateway.server_log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped within the grace period and a margin: {:?}",
        started.elapsed()
    );
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .expect("senders see the server stop")
            .unwrap();
    }

    // After a restart, everything acknowledged is stored and delivered.
    app.set_delay(Duration::ZERO);
    gateway.restart().await;
    let acked = acked.lock().unwrap().clone();
    let stored = crate::util::hooks::stored_ids(&gateway).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    crate::util::hooks::all_delivered(&app, &acked, WAIT).await;
}
