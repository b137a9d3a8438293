//! The CLI on its own: version, help and argument errors, which need no
//! server. (Building this test also builds the `webhook-cli` binary that the
//! end-to-end tests in `tests/it` drive.)

use std::process::Command;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_webhook-cli"))
        .args(args)
        .env_clear()
        .env("SECURE_KEY", "k".repeat(40))
        .env("WEBHOOK_SERVER", "http://127.0.0.1:1")
        .output()
        .expect("run webhook-cli")
}

#[test]
fn version_and_help() {
    let version = cli(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("webhook-cli {}", env!("CARGO_PKG_VERSION"))
    );
    let help = cli(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["run", "source", "target", "delivery", "log", "send"] {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
    }
}

#[test]
fn invalid_flags_exit_64_before_any_connection() {
    for args in [
        &["bogus"][..],
        &["log", "--type=nope"],
        &["log", "-n", "-3"],
        &["target", "add", "--name=x"],
        &[
            "target",
            "add",
            "--name=x",
            "--url=https://h/",
            "--retry-interval=fast",
        ],
        &[
            "target",
            "add",
            "--name=x",
            "--url=https://h/",
            "--retry-schedule=5s,later",
        ],
        &["send"],
        &["send", "--failed"],
        &["send", "--source-id=abc", "--failed", "--target-id=1"],
        &["source", "rm", "0"],
        &["run", "worker"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_69() {
    let out = cli(&["source", "list"]);
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("webhook-cli: cannot reach webhook-server at http://127.0.0.1:1"),
        "{stderr}"
    );
}
