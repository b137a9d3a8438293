//! Flow control per target: in-flight cap, rate limit, circuit breaker.

use std::time::{Duration, Instant};

use crate::util::hooks::{WAIT, health, last_request_id, post, settled, target_json};
use crate::util::{Gateway, TestTarget, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_gets_at_most_max_in_flight_and_others_go_on() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let slow = TestTarget::start(200).await;
    slow.set_delay(Duration::from_millis(400));
    gateway
        .add_target(
            "Slow",
            &slow.url(),
            &["--no-ssl", "--no-auth", "--max-in-flight=2"],
        )
        .await;
    let fast = TestTarget::start(200).await;
    gateway
        .add_target("Fast", &fast.url(), &["--no-ssl", "--no-auth"])
        .await;

    let started = Instant::now();
    for i in 0..6 {
        post(&gateway, &url, &i.to_string()).await;
    }
    fast.wait_for(6, WAIT).await;
    let fast_done = started.elapsed();
    slow.wait_for(6, WAIT).await;
    assert!(
        slow.max_concurrency() <= 2,
        "at most 2 in flight, saw {}",
        slow.max_concurrency()
    );
    assert_eq!(slow.max_concurrency(), 2);
    assert!(
        fast_done < Duration::from_millis(800),
        "the fast target is not held up by the slow one ({fast_done:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spreads_deliveries_out() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(200).await;
    gateway
        .add_target(
            "Limited",
            &app.url(),
            &["--no-ssl", "--no-auth", "--rate=4/s"],
        )
        .await;
    for i in 0..8 {
        post(&gateway, &url, &i.to_string()).await;
    }
    let received = app.wait_for(8, WAIT).await;
    let burst = received[3].at - received[0].at;
    let all = received[7].at - received[0].at;
    assert!(
        burst < Duration::from_millis(250),
        "the first 4 go at once ({burst:?})"
    );
    // 4 per second: one more every 250ms, so the 8th no sooner than ~1s in.
    assert!(
        all >= Duration::from_millis(900),
        "the next 4 wait for the bucket to refill ({all:?})"
    );
    let shown = target_json(&gateway, 1).await;
    assert_eq!(shown["rate"], "4/s");
    // Every delivery was made exactly once: a give-back is not an attempt.
    let attempts = gateway.log("target.response", 100).await;
    assert_eq!(attempts.len(), 8);
    assert!(
        attempts
            .iter()
            .all(|a| a["attempt"] == 1 && a["state"] == "delivered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_probes_and_closes() {
    let gateway = Gateway::start_with(&[("BREAKER_COOLDOWN", "600ms")]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let app = TestTarget::start(500).await;
    let (target, _) = gateway
        .add_target(
            "Flaky",
            &app.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--break-after=3",
                "--retry-interval=50ms",
                "--max-attempts=50",
            ],
        )
        .await;
    post(&gateway, &url, r#"{"n": 1}"#).await;
    let request_id = last_request_id(&gateway).await;

    // Three failures in a row open it.
    let shown = eventually("the breaker to open", WAIT, || async {
        let shown = target_json(&gateway, target).await;
        (shown["breaker"]["state"] == "open").then_some(shown)
    })
    .await;
    assert_eq!(shown["breaker"]["consecutive_failures"], 3);
    let (_, health) = health(&gateway).await;
    assert_eq!(health["status"], "running");
    assert!(
        health["issues"][0]
            .as_str()
            .unwrap()
            .contains("circuit breaker open"),
        "{health}"
    );

    // Nothing is sent while it cools down (the interval alone would allow
    // ~10): watch until shortly before the cool-down ends.
    let during = app.received().len();
    let until = humantime::parse_rfc3339(shown["breaker"]["open_until"].as_str().unwrap()).unwrap();
    let left = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(50));
    tokio::time::sleep(left).await;
    assert_eq!(app.received().len(), during, "no attempt while open");
    assert_eq!(during, 3);

    // Then one probe; it fails, so the breaker re-opens for twice as long.
    app.wait_for(4, WAIT).await;
    assert!(
        std::time::SystemTime::now() >= until,
        "the probe waits for the cool-down"
    );
    let reopened = eventually("the failed probe to re-open it", WAIT, || async {
        let shown = target_json(&gateway, target).await;
        (shown["breaker"]["consecutive_failures"] == 4 && shown["breaker"]["state"] == "open")
            .then_some(shown)
    })
    .await;
    // The probe failed at or after the first cool-down's end, so the second
    // ends at least twice the cool-down (1.2 s) after the first.
    let reopened_until =
        humantime::parse_rfc3339(reopened["breaker"]["open_until"].as_str().unwrap()).unwrap();
    let gap = reopened_until.duration_since(until).unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(1200),
        "the second cool-down is twice as long ({gap:?} after the first)"
    );

    // The target recovers; the next probe succeeds and closes the breaker.
    app.set_status(200);
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(attempts.last().unwrap()["state"], "delivered");
    let closed = target_json(&gateway, target).await;
    assert_eq!(closed["breaker"]["state"], "closed");
    assert_eq!(closed["breaker"]["consecutive_failures"], 0);
}
