//! The log: ordering, -n, filters, and several live followers at once.

use std::time::Duration;

use serde_json::Value;

use crate::util::follow::Follower;
use crate::util::{Gateway, TestTarget};

async fn post(gateway: &Gateway, ingest_url: &str, body: &str) {
    let url = reqwest::Url::parse(ingest_url).unwrap();
    let response = crate::util::http()
        .post(gateway.http_url(url.path()))
        .basic_auth(url.username(), url.password())
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn payloads(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["payload"].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_pages_are_the_newest_n_oldest_first_and_filter() {
    let gateway = Gateway::start().await;
    let app = TestTarget::start(200).await;
    let (github, github_url) = gateway.add_source("Github", &[]).await;
    let (stripe, stripe_url) = gateway.add_source("Stripe", &[]).await;
    let (target_id, _) = gateway
        .add_target("App", &app.url(), &["--no-ssl", "--no-auth"])
        .await;
    for i in 1..=12 {
        let url = if i % 3 == 0 { &stripe_url } else { &github_url };
        post(&gateway, url, &i.to_string()).await;
    }
    app.wait_for(12, Duration::from_secs(15)).await;

    let default = gateway
        .cli(&["log", "--type", "source.request"])
        .await
        .ok()
        .json_lines();
    assert_eq!(default.len(), 10, "-n defaults to 10");
    assert_eq!(
        payloads(&default),
        (3..=12).map(|i| i.to_string()).collect::<Vec<_>>()
    );

    let three = gateway.log("source.request", 3).await;
    assert_eq!(payloads(&three), ["10", "11", "12"]);
    let times: Vec<_> = three
        .iter()
        .map(|r| r["created_at"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");

    let stripe_only = gateway
        .cli(&[
            "log",
            "--type=source.request",
            &format!("--source-id={stripe}"),
            "-n",
            "100",
        ])
        .await
        .ok()
        .json_lines();
    assert_eq!(payloads(&stripe_only), ["3", "6", "9", "12"]);
    assert!(stripe_only.iter().all(|r| r["source"]["name"] == "Stripe"));

    crate::util::eventually("12 attempts logged", Duration::from_secs(10), || async {
        let n = gateway.log("target.response", 100).await.len();
        (n == 12).then_some(())
    })
    .await;
    let github_attempts = gateway
        .cli(&[
            "log",
            "--type=target.response",
            &format!("--source-id={github}"),
            "-n",
            "100",
        ])
        .await
        .ok()
        .json_lines();
    assert_eq!(github_attempts.len(), 8);
    let by_target = gateway
        .cli(&["log", &format!("--target-id={target_id}"), "-n", "100"])
        .await
        .ok()
        .json_lines();
    assert_eq!(by_target.len(), 12);
    assert!(by_target.iter().all(|r| r["type"] == "target.response"));

    // One request and its attempts, by the request's id.
    let request_id = three[2]["id"].as_str().unwrap();
    let story = gateway
        .cli(&["log", "--source-id", request_id, "-n", "100"])
        .await
        .ok()
        .json_lines();
    let types: Vec<_> = story.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["source.request", "target.response"]);
    assert_eq!(story[1]["source"]["id"], request_id);

    // Both types together, newest 4, in time order.
    let mixed = gateway.log("", 4).await;
    assert_eq!(mixed.len(), 4);
    let ids: Vec<_> = mixed
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(ids, sorted_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_followers_see_new_records_live() {
    let gateway = Gateway::start().await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    post(&gateway, &url, r#""before""#).await;

    let mut everything = Follower::spawn(gateway.cli_command(&["log", "-f", "-n", "1"]));
    let mut requests = Follower::spawn(gateway.cli_command(&[
        "log",
        "-f",
        "--type=source.request",
        "-n",
        "1",
        "--pretty",
    ]));
    let backlog = everything.next(Duration::from_secs(10)).await;
    assert_eq!(backlog["payload"], "before");
    assert_eq!(
        requests.next(Duration::from_secs(10)).await["payload"],
        "before"
    );

    // Give both streams time to subscribe, then post.
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&gateway, &url, r#""after""#).await;
    let live = everything.next(Duration::from_secs(10)).await;
    assert_eq!(live["payload"], "after");
    assert_eq!(live["type"], "source.request");
    let live = requests.next(Duration::from_secs(10)).await;
    assert_eq!(live["payload"], "after");
    everything.stop().await;
    requests.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_never_reads_misses_records_and_never_slows_ingest() {
    use tokio_stream::StreamExt;
    use webhook_proto::v1::{FollowLogsRequest, log_event::Event, logs_client::LogsClient};

    let gateway = Gateway::start_with(&[("FOLLOW_BUFFER", "16")]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;

    // A follower with a small receive window that reads nothing for now.
    let channel = tonic::transport::Endpoint::from_shared(gateway.admin_url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", crate::util::gateway::SECURE_KEY)
            .parse()
            .unwrap();
    let mut client =
        LogsClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        });
    let mut stalled = client
        .follow_logs(FollowLogsRequest {
            filter: None,
            backlog: 0,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Ingest goes on at full speed: every request is acknowledged.
    const REQUESTS: usize = 600;
    let body = format!(r#"{{"padding": "{}"}}"#, "x".repeat(1000));
    let parsed = reqwest::Url::parse(&url).unwrap();
    let client_http = crate::util::http();
    // In two halves, with the server's memory taken after each: bounded,
    // and not growing with what the follower leaves unread.
    let mut rss_kib = Vec::new();
    for _half in 0..2 {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let (client_http, parsed, body) = (client_http.clone(), parsed.clone(), body.clone());
            let target = gateway.http_url(parsed.path());
            tasks.spawn(async move {
                for _ in (worker..REQUESTS / 2).step_by(8) {
                    let response = client_http
                        .post(&target)
                        .basic_auth(parsed.username(), parsed.password())
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        rss_kib.push(gateway.rss_kib());
    }
    assert!(
        rss_kib.iter().all(|kib| *kib < 64 * 1024),
        "memory bounded with a stalled follower: {rss_kib:?} KiB"
    );
    assert!(
        rss_kib[1] < rss_kib[0] + 8 * 1024,
        "no growth with what the follower leaves unread: {rss_kib:?} KiB"
    );

    // Now read: every record either arrived or was counted as missed.
    let (mut records, mut missed) = (0u64, 0u64);
    while records + missed < REQUESTS as u64 {
        let event = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("the stream should account for every record")
            .unwrap()
            .unwrap();
        match event.event.unwrap() {
            Event::Record(_) => records += 1,
            Event::Missed(n) => missed += n,
        }
    }
    assert_eq!(records + missed, REQUESTS as u64);
    assert!(
        missed > 0,
        "a stalled follower must miss records, not hold them all"
    );
    assert_eq!(
        gateway.log("source.request", 10_000).await.len(),
        REQUESTS,
        "nothing was lost from the store"
    );
}
