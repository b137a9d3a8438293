//! The getting-started walkthrough (docs/getting-started.md), command by
//! command: `.env`, `webhook-cli run api`, health, source and target, proxying,
//! both logs, retries seen live with `log -f`, and `send`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::follow::Follower;
use crate::util::{Gateway, TestTarget};

const DOTENV: &str = "SECURE_KEY='vqFsudxydWYoFzxVOZQaWJtwTroOHZBECUyDEZzoxLQzOMlzyO'\n\
    HTTP_ADDR=127.0.0.1:0\n\
    ADMIN_ADDR=127.0.0.1:0\n\
    DEFAULT_RETRY_INTERVAL=300ms\n\
    DEFAULT_MAX_ATTEMPTS=3\n";

/// `curl URL -X POST -H"Content-Type: application/json" -d BODY`, as the
/// walkthrough runs it; returns (status, content type, body).
fn curl_post(url: &str, body: &str) -> (u16, String, String) {
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-i",
            url,
            "-X",
            "POST",
            "-HContent-Type: application/json",
            "-d",
            body,
        ])
        .output()
        .expect("curl is needed by the walkthrough test");
    let text = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

fn is_hex_id(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| humantime::parse_rfc3339(s).is_ok())
}

/// Parses `--pretty` output: one indented object.
fn pretty_one(stdout: &str) -> Value {
    assert!(
        stdout.lines().count() > 3,
        "--pretty should indent: {stdout}"
    );
    serde_json::from_str(stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getting_started_walkthrough() {
    let gateway = Gateway::start_via_cli(DOTENV).await;
    let client = crate::util::http();

    // curl http://HOST:4698/health
    let health = client
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.text().await.unwrap(),
        r#"{"status": "running", "issues": []}"#
    );

    // With no sources every webhook gets 404.
    let none = client
        .post(gateway.http_url("/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);

    // Source: Github.
    let out = gateway
        .cli(&[
            "source",
            "add",
            "--name=Github",
            "--auth=ghook:nosecret",
            "--status-code=200",
            "--content-type=application/json",
            r#"--content={"message": "ok"}"#,
        ])
        .await
        .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let ingest_url = out.stdout.trim().to_owned();
    let expected_host = format!("@{}/1", gateway.http_addr);
    let credentials = ingest_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix(&expected_host))
        .unwrap_or_else(|| panic!("unexpected ingest URL {ingest_url}"));
    let (user, pass) = credentials.split_once(':').unwrap();
    for part in [user, pass] {
        assert!(is_hex_id(&json!(part)), "{part} should be 32 lowercase hex");
    }

    // Target: Example Application, plain http, unsigned.
    let app = TestTarget::start(200).await;
    let out = gateway
        .cli(&[
            "target",
            "add",
            "--name=GHook Example",
            "--no-ssl",
            "--no-auth",
            &format!("--url={}", app.url()),
        ])
        .await
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "1",
        "only the id: --no-auth has no secret"
    );

    // Testing proxy.
    let (status, content_type, body) = curl_post(&ingest_url, r#"{"data": {}}"#);
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (200, "application/json", r#"{"message": "ok"}"#)
    );

    let out = gateway
        .cli(&["log", "--type", "source.request", "-n", "1", "--pretty"])
        .await
        .ok();
    let first = pretty_one(&out.stdout);
    assert!(is_hex_id(&first["id"]), "{first}");
    assert_eq!(first["type"], "source.request");
    assert!(first["user-agent"].as_str().unwrap().starts_with("curl/"));
    assert_eq!(first["payload"], json!({"data": {}}));
    assert!(is_rfc3339(&first["created_at"]));
    assert_eq!(first["source"], json!({"id": 1, "name": "Github"}));
    assert_eq!(first["resent_from"], Value::Null);
    let first_id = first["id"].as_str().unwrap().to_owned();

    let received = app.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].body.as_ref(), br#"{"data": {}}"#);
    let response = crate::util::eventually(
        "the target.response record",
        Duration::from_secs(10),
        || async {
            let out = gateway
                .cli(&["log", "--type", "target.response", "-n", "1", "--pretty"])
                .await
                .ok();
            (!out.stdout.trim().is_empty()).then(|| pretty_one(&out.stdout))
        },
    )
    .await;
    assert!(is_hex_id(&response["id"]));
    assert_eq!(response["type"], "target.response");
    assert_eq!(response["source"]["id"], json!(first_id));
    assert_eq!(response["response"]["status_code"], 200);
    assert_eq!(response["state"], "delivered");
    assert_eq!(response["next_run_at"], Value::Null);

    // Retry: the target goes into maintenance.
    app.set_status(500);
    let mut follower = Follower::spawn(gateway.cli_command(&[
        "log",
        "-f",
        "--type",
        "target.response",
        "--pretty",
    ]));
    // The backlog: the delivered record above.
    let backlog = follower.next(Duration::from_secs(10)).await;
    assert_eq!(backlog["id"], response["id"]);

    let (status, _, _) = curl_post(&ingest_url, r#"{"data": {}}"#);
    assert_eq!(
        status, 200,
        "the source still gets 200 while the target is down"
    );
    let out = gateway
        .cli(&["log", "--type", "source.request", "-n", "1", "--pretty"])
        .await
        .ok();
    let second = pretty_one(&out.stdout);
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id);

    // Linear retry, DEFAULT_RETRY_INTERVAL=300ms and DEFAULT_MAX_ATTEMPTS=3 from .env.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(follower.next(Duration::from_secs(10)).await);
    }
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["source"]["id"], json!(second_id));
        assert_eq!(attempt["response"]["status_code"], 500);
        assert_eq!(attempt["response"]["body"], "MAINTENANCE");
        assert_eq!(attempt["attempt"], i + 1);
    }
    for attempt in &attempts[..2] {
        assert_eq!(attempt["state"], "retrying");
        let created = humantime::parse_rfc3339(attempt["created_at"].as_str().unwrap()).unwrap();
        let next = humantime::parse_rfc3339(attempt["next_run_at"].as_str().unwrap()).unwrap();
        let step = next.duration_since(created).unwrap();
        assert!(
            step >= Duration::from_millis(299) && step <= Duration::from_millis(301),
            "{step:?}"
        );
    }
    // It stops at last.
    assert_eq!(attempts[2]["state"], "failed");
    assert_eq!(attempts[2]["next_run_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.received().len(),
        4,
        "1 delivered + 3 failed attempts, then no more"
    );

    // Resend, once the application is back.
    app.set_status(200);
    let out = gateway.cli(&["send", "--source-id", &second_id]).await.ok();
    let resent_id = out.stdout.trim().to_owned();
    assert!(is_hex_id(&json!(resent_id)), "{out:?}");
    let out = gateway
        .cli(&["log", "--type", "source.request", "-n", "1", "--pretty"])
        .await
        .ok();
    let resent = pretty_one(&out.stdout);
    assert_eq!(resent["id"], json!(resent_id));
    assert_eq!(resent["resent_from"], json!(second_id));
    assert_eq!(resent["payload"], json!({"data": {}}));
    assert!(resent["user-agent"].as_str().unwrap().starts_with("curl/"));

    let delivered = follower.next(Duration::from_secs(10)).await;
    assert_eq!(delivered["source"]["id"], json!(resent_id));
    assert_eq!(delivered["response"]["status_code"], 200);
    assert_eq!(delivered["state"], "delivered");
    let received = app.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(received[4].body.as_ref(), br#"{"data": {}}"#);
    follower.stop().await;
}
