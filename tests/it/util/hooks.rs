//! Sending webhooks to a gateway and reading back what became of them.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Gateway, eventually};

pub const WAIT: Duration = Duration::from_secs(15);

pub async fn post(gateway: &Gateway, ingest_url: &str, body: &str) -> reqwest::Response {
    let url = reqwest::Url::parse(ingest_url).unwrap();
    let path = url.path().to_owned();
    crate::util::http()
        .post(gateway.http_url(&path))
        .basic_auth(url.username(), url.password())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// The target.response records of one request, oldest first.
pub async fn attempts_of(gateway: &Gateway, request_id: &str) -> Vec<Value> {
    gateway
        .cli(&[
            "log",
            "--type=target.response",
            "--source-id",
            request_id,
            "-n",
            "100",
        ])
        .await
        .ok()
        .json_lines()
}

/// Waits until the request's latest attempt is in a final state.
pub async fn settled(gateway: &Gateway, request_id: &str) -> Vec<Value> {
    eventually("the delivery to settle", WAIT, || async {
        let attempts = attempts_of(gateway, request_id).await;
        let done = attempts.last().is_some_and(|a| a["state"] != "retrying");
        done.then_some(attempts)
    })
    .await
}

pub async fn last_request_id(gateway: &Gateway) -> String {
    gateway.log("source.request", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `target show ID`, parsed.
pub async fn target_json(gateway: &Gateway, id: i64) -> Value {
    let out = gateway.cli(&["target", "show", &id.to_string()]).await.ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// `GET /health`: the status code and the parsed body.
pub async fn health(gateway: &Gateway) -> (u16, Value) {
    let response = crate::util::http()
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

/// The `"id"` of every stored request whose JSON body has one.
pub async fn stored_ids(gateway: &Gateway) -> std::collections::HashSet<u64> {
    gateway
        .log("source.request", 10_000)
        .await
        .iter()
        .filter_map(|r| r["payload"]["id"].as_u64())
        .collect()
}

/// The `"id"` of every webhook a target received, in order, repeats kept.
pub fn received_ids(target: &crate::util::TestTarget) -> Vec<u64> {
    target
        .received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect()
}

/// Waits until the target has received every id in `acked`.
pub async fn all_delivered(
    target: &crate::util::TestTarget,
    acked: &std::collections::HashSet<u64>,
    timeout: Duration,
) {
    eventually(
        "every acknowledged webhook to reach the target",
        timeout,
        || async {
            let received: std::collections::HashSet<u64> =
                received_ids(target).into_iter().collect();
            acked.is_subset(&received).then_some(())
        },
    )
    .await;
}
