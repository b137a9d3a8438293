//! Delivery: what a target receives, routing, the linear retry policy,
//! final failures, recovery, restarts, and resending.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Gateway, TestTarget, eventually};

use crate::util::hooks::{WAIT, attempts_of, last_request_id, post, settled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_get_the_stored_request_signed_with_standard_webhooks() {
    let gateway = Gateway::start().await;
    let app = TestTarget::start(204).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let (_, secret) = gateway
        .add_target("Signed", &app.url(), &["--no-ssl"])
        .await;
    let secret = secret.expect("a signing secret is printed once");
    assert!(secret.starts_with("whsec_"), "{secret}");

    let parsed = reqwest::Url::parse(&url).unwrap();
    let response = crate::util::http()
        .patch(gateway.http_url(&format!("{}?event=push", parsed.path())))
        .basic_auth(parsed.username(), parsed.password())
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-request-tag", "a")
        .header("connection", "keep-alive")
        .body(r#"{"ref": "refs/heads/main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = last_request_id(&gateway).await;

    let received = app.wait_for(1, WAIT).await;
    let got = &received[0];
    assert_eq!(got.method, "PATCH");
    assert_eq!(got.uri.path(), "/webhook");
    assert_eq!(got.body.as_ref(), br#"{"ref": "refs/heads/main"}"#);
    assert_eq!(got.headers["x-github-event"], "push");
    assert_eq!(got.headers["x-request-tag"], "a");
    assert_eq!(got.headers["content-type"], "application/json");
    assert!(
        got.headers.get("authorization").is_none(),
        "the source's credentials are not relayed"
    );
    assert_ne!(
        got.headers["host"],
        gateway.http_addr.to_string(),
        "Host is the target's own"
    );
    assert_eq!(got.headers["webhook-id"], request_id.as_str());
    let webhook = standardwebhooks::Webhook::new(&secret).unwrap();
    webhook
        .verify(&got.body, &got.headers)
        .expect("signature verifies with the target's secret");
    let wrong = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(wrong.verify(&got.body, &got.headers).is_err());

    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["state"], "delivered");
    assert_eq!(attempts[0]["response"]["status_code"], 204);
    assert_eq!(attempts[0]["target"]["name"], "Signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_receive_only_from_their_sources() {
    let gateway = Gateway::start().await;
    let (github, github_url) = gateway.add_source("Github", &[]).await;
    let (_, stripe_url) = gateway.add_source("Stripe", &[]).await;
    let only_github = TestTarget::start(200).await;
    let everything = TestTarget::start(200).await;
    gateway
        .add_target(
            "Github only",
            &only_github.url(),
            &["--no-ssl", "--no-auth", &format!("--source={github}")],
        )
        .await;
    gateway
        .add_target("All", &everything.url(), &["--no-ssl", "--no-auth"])
        .await;

    assert_eq!(
        post(&gateway, &stripe_url, r#"{"from": "stripe"}"#)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&gateway, &github_url, r#"{"from": "github"}"#)
            .await
            .status(),
        200
    );
    let all = everything.wait_for(2, WAIT).await;
    let github_only = only_github.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(only_github.received().len(), 1);
    assert_eq!(github_only[0].body.as_ref(), br#"{"from": "github"}"#);
    let mut bodies: Vec<_> = all.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![&br#"{"from": "github"}"#[..], &br#"{"from": "stripe"}"#[..]]
    );

    // Removing its only source leaves the target with nothing, not everything.
    gateway
        .cli(&["source", "rm", &github.to_string()])
        .await
        .ok();
    assert_eq!(
        post(&gateway, &stripe_url, r#"{"after": "rm"}"#)
            .await
            .status(),
        200
    );
    everything.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        only_github.received().len(),
        1,
        "a removed source's target does not start receiving from all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_linear_policy_and_stop_after_max_attempts() {
    let gateway = Gateway::start().await;
    let down = TestTarget::start(503).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "Down",
            &down.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry=linear",
                "--retry-interval=250ms",
                "--max-attempts=3",
            ],
        )
        .await;
    post(&gateway, &url, "{}").await;
    let request_id = last_request_id(&gateway).await;
    let attempts = settled(&gateway, &request_id).await;
    let states: Vec<_> = attempts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["retrying", "retrying", "failed"]);
    let numbers: Vec<_> = attempts
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    let times: Vec<_> = attempts
        .iter()
        .map(|a| humantime::parse_rfc3339(a["created_at"].as_str().unwrap()).unwrap())
        .collect();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(
            gap >= Duration::from_millis(250),
            "attempts {gap:?} apart, interval is 250ms"
        );
    }
    assert_eq!(attempts[2]["next_run_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(down.received().len(), 3, "no attempt after the last one");

    let shown = gateway.cli(&["target", "show", "1"]).await.ok();
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(
        shown["retry"],
        json!({
            "policy": "linear",
            "description": "linear: every 250ms up to 3 attempts",
            "interval": "250ms",
            "max_attempts": 3
        })
    );
    assert_eq!(shown["pending_deliveries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_and_redirects_are_final() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    for status in [404u16, 302] {
        let target = TestTarget::start(status).await;
        let (target_id, _) = gateway
            .add_target(
                &format!("Answers {status}"),
                &target.url(),
                &["--no-ssl", "--no-auth", "--retry-interval=100ms"],
            )
            .await;
        post(&gateway, &url, "{}").await;
        let request_id = last_request_id(&gateway).await;
        let attempts = eventually("a final attempt", WAIT, || async {
            let all = attempts_of(&gateway, &request_id).await;
            let mine: Vec<_> = all
                .into_iter()
                .filter(|a| a["target"]["id"] == target_id)
                .collect();
            (!mine.is_empty()).then_some(mine)
        })
        .await;
        assert_eq!(attempts.len(), 1, "{status}");
        assert_eq!(attempts[0]["state"], "failed", "{status}");
        assert_eq!(attempts[0]["response"]["status_code"], status);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(target.received().len(), 1, "{status} is not retried");
        gateway
            .cli(&["target", "rm", &target_id.to_string()])
            .await
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_recovers_when_the_target_is_back() {
    let gateway = Gateway::start().await;
    let app = TestTarget::start(500).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "Flaky",
            &app.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=200ms",
                "--max-attempts=10",
            ],
        )
        .await;
    post(&gateway, &url, r#"{"n": 1}"#).await;
    let request_id = last_request_id(&gateway).await;
    // Two failed attempts logged, then the target comes back.
    eventually("two failed attempts", WAIT, || async {
        (attempts_of(&gateway, &request_id).await.len() >= 2).then_some(())
    })
    .await;
    app.set_status(200);
    let attempts = settled(&gateway, &request_id).await;
    let last = attempts.last().unwrap();
    assert_eq!(last["state"], "delivered");
    assert!(attempts.len() >= 3);
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|a| a["state"] == "retrying")
    );
    let received = app.received();
    assert_eq!(received.len(), attempts.len());
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.headers.get("webhook-id").cloned())
        .collect();
    assert!(
        ids.iter().all(Option::is_none),
        "--no-auth: no signature headers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_targets_are_retried_with_a_clear_error_kind() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    gateway
        .add_target(
            "Gone",
            &format!("http://{closed}/hook"),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=100ms",
                "--max-attempts=2",
            ],
        )
        .await;
    let slow = TestTarget::start(200).await;
    slow.set_delay(Duration::from_secs(3));
    gateway
        .add_target(
            "Slow",
            &slow.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--timeout=300ms",
                "--retry-interval=100ms",
                "--max-attempts=2",
            ],
        )
        .await;
    post(&gateway, &url, "{}").await;
    let request_id = last_request_id(&gateway).await;
    let attempts = eventually("both targets to fail", WAIT, || async {
        let all = attempts_of(&gateway, &request_id).await;
        (all.iter().filter(|a| a["state"] == "failed").count() == 2).then_some(all)
    })
    .await;
    for (name, kind) in [("Gone", "connect"), ("Slow", "timeout")] {
        let mine: Vec<_> = attempts
            .iter()
            .filter(|a| a["target"]["name"] == name)
            .collect();
        assert_eq!(mine.len(), 2, "{name}");
        for attempt in &mine {
            assert_eq!(attempt["error"]["kind"], kind, "{name}: {attempt}");
            assert!(!attempt["error"]["message"].as_str().unwrap().is_empty());
            assert!(attempt.get("response").is_none());
        }
        assert_eq!(mine[0]["state"], "retrying");
        assert_eq!(mine[1]["state"], "failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_retries_survive_a_crash() {
    let mut gateway = Gateway::start().await;
    let app = TestTarget::start(500).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "Flaky",
            &app.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=1s",
                "--max-attempts=5",
            ],
        )
        .await;
    post(&gateway, &url, r#"{"survives": true}"#).await;
    app.wait_for(1, WAIT).await;
    gateway.kill().await;
    app.set_status(200);
    gateway.restart().await;
    let received = app.wait_for(2, WAIT).await;
    assert_eq!(received[1].body.as_ref(), br#"{"survives": true}"#);
    let request_id = last_request_id(&gateway).await;
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(attempts.last().unwrap()["state"], "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_resends_to_all_targets_or_to_one() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let a = TestTarget::start(200).await;
    let b = TestTarget::start(200).await;
    gateway
        .add_target("A", &a.url(), &["--no-ssl", "--no-auth"])
        .await;
    let (b_id, _) = gateway
        .add_target("B", &b.url(), &["--no-ssl", "--no-auth"])
        .await;
    post(&gateway, &url, r#"{"v": 1}"#).await;
    let original = last_request_id(&gateway).await;
    a.wait_for(1, WAIT).await;
    b.wait_for(1, WAIT).await;

    let all = gateway.cli(&["send", "--source-id", &original]).await.ok();
    let copy = all.stdout.trim().to_owned();
    assert_ne!(copy, original);
    a.wait_for(2, WAIT).await;
    b.wait_for(2, WAIT).await;

    let one = gateway
        .cli(&[
            "send",
            "--source-id",
            &original,
            "--target-id",
            &b_id.to_string(),
        ])
        .await
        .ok();
    let copy_for_b = one.stdout.trim().to_owned();
    let received_b = b.wait_for(3, WAIT).await;
    assert_eq!(received_b[2].body.as_ref(), br#"{"v": 1}"#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.received().len(),
        2,
        "a resend to B alone does not reach A"
    );

    let records = gateway.log("source.request", 3).await;
    let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [original.as_str(), copy.as_str(), copy_for_b.as_str()]);
    assert_eq!(records[1]["resent_from"], json!(original));
    assert_eq!(records[2]["resent_from"], json!(original));
}
