//! Start-up and shutdown of the server process.

use std::process::Stdio;
use std::time::Duration;

use crate::util::Gateway;
use crate::util::gateway::binary;

/// Runs webhook-server (directly, or through `webhook-cli run api`) in an
/// empty directory with `env`; it must exit by itself.
async fn exit_of(
    via_cli: bool,
    env: &[(&str, &str)],
    dotenv: Option<&str>,
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(dotenv) = dotenv {
        std::fs::write(dir.path().join(".env"), dotenv).unwrap();
    }
    let mut command = if via_cli {
        let mut c = tokio::process::Command::new(binary("webhook-cli"));
        c.args(["run", "api"]);
        c
    } else {
        tokio::process::Command::new(binary("webhook-server"))
    };
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the server should refuse to start, not run")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_short_secure_key_stops_start_up_with_64() {
    let (code, stderr) = exit_of(false, &[], None).await;
    assert_eq!(code, Some(64));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SECURE_KEY is not set"), "{stderr}");

    let (code, stderr) = exit_of(false, &[("SECURE_KEY", "short")], None).await;
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("SECURE_KEY is too short (5 characters)"),
        "{stderr}"
    );

    // Through the CLI, with the key in .env.
    let (code, stderr) = exit_of(
        true,
        &[],
        Some("SECURE_KEY='only-31-characters-long-0123456'\n"),
    )
    .await;
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("SECURE_KEY is too short (31 characters)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_start_up_naming_the_setting() {
    let key = (
        "SECURE_KEY",
        "vqFsudxydWYoFzxVOZQaWJtwTroOHZBECUyDEZzoxLQzOMlzyO",
    );
    for (setting, value, expected) in [
        ("HTTP_ADDR", "nowhere", "--http-addr"),
        ("PUBLIC_URL", "ftp://x", "PUBLIC_URL"),
        ("DATABASE_URL", "mysql://localhost/db", "DATABASE_URL"),
        ("MAX_BODY_SIZE", "0", "MAX_BODY_SIZE"),
        ("DEFAULT_RETRY_INTERVAL", "soon", "--default-retry-interval"),
    ] {
        let (code, stderr) = exit_of(false, &[key, (setting, value)], None).await;
        assert_eq!(code, Some(64), "{setting}={value}: {stderr}");
        assert!(stderr.contains(expected), "{setting}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{setting}={value}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_with_exit_0() {
    let mut gateway = Gateway::start().await;
    let health = crate::util::http()
        .get(gateway.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        gateway.terminate().await,
        Some(0),
        "{}",
        gateway.server_log()
    );
    assert!(
        gateway.server_log().contains("stopped"),
        "{}",
        gateway.server_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_urls_use_public_url() {
    let gateway = Gateway::start_with(&[("PUBLIC_URL", "https://hooks.example.com")]).await;
    let (id, url) = gateway.add_source("Github", &[]).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    assert_eq!(parsed.scheme(), "https");
    assert_eq!(parsed.host_str(), Some("hooks.example.com"));
    assert_eq!(parsed.path(), format!("/{id}"));
    assert_eq!(parsed.username().len(), 32);
}
