//! Retry policies attempt by attempt, Retry-After, 410 Gone, redirects,
//! retry-on-4xx, and `target update` / `target show`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::hooks::{WAIT, attempts_of, health, last_request_id, post, settled, target_json};
use crate::util::{Gateway, TestTarget, eventually};

/// `next_run_at - created_at` of each attempt that has a next run, in ms.
fn steps_ms(attempts: &[Value]) -> Vec<f64> {
    attempts
        .iter()
        .filter(|a| !a["next_run_at"].is_null())
        .map(|a| {
            let created = humantime::parse_rfc3339(a["created_at"].as_str().unwrap()).unwrap();
            let next = humantime::parse_rfc3339(a["next_run_at"].as_str().unwrap()).unwrap();
            next.duration_since(created).unwrap().as_secs_f64() * 1000.0
        })
        .collect()
}

fn states(attempts: &[Value]) -> Vec<&str> {
    attempts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_schedule_and_none_policies_attempt_by_attempt() {
    let gateway = Gateway::start().await;
    let down = TestTarget::start(500).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let (exp, _) = gateway
        .add_target(
            "Exponential",
            &down.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry=exponential",
                "--retry-interval=100ms",
                "--retry-factor=2",
                "--retry-max-interval=400ms",
                "--max-attempts=5",
            ],
        )
        .await;
    let (sched, _) = gateway
        .add_target(
            "Schedule",
            &down.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry=schedule",
                "--retry-schedule=150ms,50ms,250ms",
            ],
        )
        .await;
    let (none, _) = gateway
        .add_target(
            "None",
            &down.url(),
            &["--no-ssl", "--no-auth", "--retry=none"],
        )
        .await;
    post(&gateway, &url, "{}").await;
    let request_id = last_request_id(&gateway).await;
    let all = eventually("every policy to run out", WAIT, || async {
        let all = attempts_of(&gateway, &request_id).await;
        (all.iter().filter(|a| a["state"] == "failed").count() == 3).then_some(all)
    })
    .await;
    let of = |id: i64| -> Vec<Value> {
        all.iter()
            .filter(|a| a["target"]["id"] == id)
            .cloned()
            .collect()
    };

    let exponential = of(exp);
    assert_eq!(
        states(&exponential),
        ["retrying", "retrying", "retrying", "retrying", "failed"]
    );
    let expected = [100.0, 200.0, 400.0, 400.0];
    for (step, want) in steps_ms(&exponential).iter().zip(expected) {
        assert!(
            *step >= want * 0.8 - 0.01 && *step <= want * 1.2 + 0.01,
            "{step}ms, want {want}ms ±20%"
        );
    }

    let schedule = of(sched);
    assert_eq!(
        states(&schedule),
        ["retrying", "retrying", "retrying", "failed"]
    );
    assert_eq!(steps_ms(&schedule), [150.0, 50.0, 250.0]);

    let one = of(none);
    assert_eq!(states(&one), ["failed"]);

    let shown = target_json(&gateway, sched).await;
    assert_eq!(shown["retry"]["policy"], "schedule");
    assert_eq!(
        shown["retry"]["schedule"],
        json!(["150ms", "50ms", "250ms"])
    );
    assert_eq!(shown["retry"]["max_attempts"], 4);
    assert!(
        shown["retry"]["description"]
            .as_str()
            .unwrap()
            .starts_with("schedule: retries after 150ms, 50ms, 250ms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_sets_the_next_attempt() {
    let gateway = Gateway::start().await;
    let busy = TestTarget::start(429).await;
    busy.set_headers(&[("retry-after", "1")]);
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "Busy",
            &busy.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=100ms",
                "--max-attempts=2",
            ],
        )
        .await;
    post(&gateway, &url, "{}").await;
    let request_id = last_request_id(&gateway).await;
    let first = eventually("the first attempt", WAIT, || async {
        attempts_of(&gateway, &request_id).await.into_iter().next()
    })
    .await;
    assert_eq!(first["response"]["status_code"], 429);
    assert_eq!(
        steps_ms(&[first]),
        [1000.0],
        "Retry-After: 1 beats the 100ms interval"
    );
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(states(&attempts), ["retrying", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_target_until_it_is_enabled() {
    let gateway = Gateway::start().await;
    let app = TestTarget::start(410).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let (target, _) = gateway
        .add_target(
            "Moved",
            &app.url(),
            &["--no-ssl", "--no-auth", "--retry-interval=100ms"],
        )
        .await;
    post(&gateway, &url, r#"{"n": 1}"#).await;
    let first = last_request_id(&gateway).await;
    let attempts = settled(&gateway, &first).await;
    assert_eq!(states(&attempts), ["failed"], "410 is final");

    let shown = target_json(&gateway, target).await;
    let reason = shown["disabled"].as_str().expect("the target is disabled");
    assert!(reason.starts_with("410 Gone from "), "{reason}");
    let (_, health) = health(&gateway).await;
    assert_eq!(
        health["status"], "running",
        "a target's trouble is not the gateway's"
    );
    assert!(
        health["issues"][0]
            .as_str()
            .unwrap()
            .contains("disabled: 410 Gone"),
        "{health}"
    );

    // While disabled, new requests wait; nothing is sent.
    app.set_status(200);
    post(&gateway, &url, r#"{"n": 2}"#).await;
    let second = last_request_id(&gateway).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.received().len(), 1);
    assert_eq!(target_json(&gateway, target).await["pending_deliveries"], 1);

    let enabled = gateway
        .cli(&["target", "enable", &target.to_string()])
        .await
        .ok();
    let enabled: Value = serde_json::from_str(&enabled.stdout).unwrap();
    assert_eq!(enabled["disabled"], Value::Null);
    let attempts = settled(&gateway, &second).await;
    assert_eq!(states(&attempts), ["delivered"]);
    assert_eq!(app.wait_for(2, WAIT).await[1].body.as_ref(), br#"{"n": 2}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_when_asked_and_4xx_retried_only_when_asked() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let destination = TestTarget::start(200).await;
    let redirector = TestTarget::start(307).await;
    redirector.set_headers(&[("location", &destination.url())]);
    let (follows, _) = gateway
        .add_target(
            "Follows",
            &redirector.url(),
            &["--no-ssl", "--no-auth", "--follow-redirects"],
        )
        .await;
    let strict_redirector = TestTarget::start(307).await;
    strict_redirector.set_headers(&[("location", &destination.url())]);
    let (strict, _) = gateway
        .add_target(
            "Strict",
            &strict_redirector.url(),
            &["--no-ssl", "--no-auth"],
        )
        .await;
    let not_found = TestTarget::start(404).await;
    let (lenient, _) = gateway
        .add_target(
            "Lenient",
            &not_found.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-on-4xx",
                "--retry-interval=100ms",
                "--max-attempts=3",
            ],
        )
        .await;
    post(&gateway, &url, r#"{"go": "there"}"#).await;
    let request_id = last_request_id(&gateway).await;
    let all = eventually("all three to finish", WAIT, || async {
        let all = attempts_of(&gateway, &request_id).await;
        let finished = [follows, strict, lenient].iter().all(|id| {
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
    let followed = of(follows);
    assert_eq!(states(&followed), ["delivered"]);
    assert_eq!(followed[0]["response"]["status_code"], 200);
    assert_eq!(
        destination.received()[0].body.as_ref(),
        br#"{"go": "there"}"#
    );
    let refused = of(strict);
    assert_eq!(states(&refused), ["failed"]);
    assert_eq!(refused[0]["response"]["status_code"], 307);
    assert_eq!(
        destination.received().len(),
        1,
        "the strict target's redirect is not followed"
    );
    assert_eq!(states(&of(lenient)), ["retrying", "retrying", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_update_changes_unfinished_deliveries_and_show_lists_them() {
    let gateway = Gateway::start().await;
    let app = TestTarget::start(500).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let (target, _) = gateway
        .add_target(
            "Flaky",
            &app.url(),
            &[
                "--no-ssl",
                "--no-auth",
                "--retry-interval=1s",
                "--max-attempts=10",
            ],
        )
        .await;
    post(&gateway, &url, "{}").await;
    let request_id = last_request_id(&gateway).await;
    app.wait_for(1, WAIT).await;

    let shown = eventually("the retry to be scheduled", WAIT, || async {
        let shown = target_json(&gateway, target).await;
        (shown["pending"][0]["state"] == "retrying").then_some(shown)
    })
    .await;
    assert_eq!(shown["pending_deliveries"], 1);
    assert_eq!(shown["pending"][0]["request_id"], json!(request_id));
    assert_eq!(shown["pending"][0]["attempts"], 1);
    assert!(humantime::parse_rfc3339(shown["pending"][0]["next_run_at"].as_str().unwrap()).is_ok());
    assert_eq!(
        shown["retry"]["description"],
        "linear: every 1s up to 10 attempts"
    );

    let updated = gateway
        .cli(&[
            "target",
            "update",
            &target.to_string(),
            "--retry=none",
            "--name=Flaky app",
            "--timeout=5s",
        ])
        .await
        .ok();
    let updated: Value = serde_json::from_str(&updated.stdout).unwrap();
    assert_eq!(updated["name"], "Flaky app");
    assert_eq!(updated["retry"]["policy"], "none");
    assert_eq!(updated["timeout"], "5s");
    // The pending retry runs once more, under the new policy: no further retry.
    let attempts = settled(&gateway, &request_id).await;
    assert_eq!(states(&attempts), ["retrying", "failed"]);

    let bad = gateway
        .cli(&[
            "target",
            "update",
            &target.to_string(),
            "--retry=exponential",
            "--retry-factor=0.5",
        ])
        .await;
    assert_eq!(bad.code, Some(64));
    assert!(
        bad.stderr
            .contains("retry_factor: 0.5 must be a number of at least 1"),
        "{}",
        bad.stderr
    );
    let bad = gateway
        .cli(&["target", "update", &target.to_string(), "--retry=schedule"])
        .await;
    assert!(bad.stderr.contains("retry_schedule: "), "{}", bad.stderr);
    let missing = gateway.cli(&["target", "update", "99", "--name=x"]).await;
    assert!(
        missing.stderr.contains("not found: target 99 not found"),
        "{}",
        missing.stderr
    );
}
