//! Retention removes old finished records and keeps anything unfinished.

use std::time::Duration;

use crate::util::hooks::{WAIT, last_request_id, post, settled};
use crate::util::{Gateway, TestTarget, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_records_go_and_unfinished_ones_stay() {
    let gateway =
        Gateway::start_with(&[("RETENTION", "1500ms"), ("RETENTION_SWEEP_EVERY", "200ms")]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let ok = TestTarget::start(200).await;
    let (ok_id, _) = gateway
        .add_target("Ok", &ok.url(), &["--no-ssl", "--no-auth", "--source=1"])
        .await;
    let (_, stuck_url) = gateway.add_source("Stuck", &[]).await;
    let down = TestTarget::start(503).await;
    gateway
        .add_target(
            "Down",
            &down.url(),
            &["--no-ssl", "--no-auth", "--source=2", "--retry-interval=1h"],
        )
        .await;

    post(&gateway, &url, r#""old""#).await;
    let old = last_request_id(&gateway).await;
    settled(&gateway, &old).await;
    post(&gateway, &stuck_url, r#""unfinished""#).await;
    let unfinished = last_request_id(&gateway).await;
    down.wait_for(1, WAIT).await;

    // Past the retention period the delivered request and its attempt go...
    eventually("the old request to be removed", WAIT, || async {
        let ids: Vec<String> = gateway
            .log("source.request", 100)
            .await
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        (!ids.contains(&old)).then_some(())
    })
    .await;
    // ...the one still waiting for a retry stays, with its attempt.
    let requests = gateway.log("source.request", 100).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["id"], unfinished.as_str());
    // (An attempt is a little younger than its request, so it may go one
    // sweep later.)
    let attempts = eventually("the old attempt to be removed", WAIT, || async {
        let attempts = gateway.log("target.response", 100).await;
        (attempts.len() == 1).then_some(attempts)
    })
    .await;
    assert_eq!(attempts[0]["source"]["id"], unfinished.as_str());
    let delivered = gateway
        .cli(&["delivery", "list", &format!("--target-id={ok_id}")])
        .await
        .ok();
    assert!(
        delivered.stdout.is_empty(),
        "the finished delivery is gone too"
    );

    // New records are kept.
    post(&gateway, &url, r#""new""#).await;
    let new = last_request_id(&gateway).await;
    settled(&gateway, &new).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<_> = gateway
        .log("source.request", 100)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&new));
    assert!(
        gateway
            .server_log()
            .contains("retention: removed old records")
    );
}
