//! A real `webhook-server` process on 127.0.0.1 with free ports and its own
//! SQLite file, and `webhook-cli` pointed at it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The admin token every test gateway uses.
pub const SECURE_KEY: &str = "test-secure-key-0123456789abcdef0123456789";

/// Path of one of the workspace's binaries.
pub fn binary(name: &str) -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_webhook-server"));
    let path = server.with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with both streams unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        self
    }

    /// Each stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    child: Option<Child>,
    /// Reads the server's stderr into `log` until it closes.
    log_reader: Option<tokio::task::JoinHandle<()>>,
    pub log: Arc<Mutex<Vec<String>>>,
    extra_env: Vec<(String, String)>,
    /// Started as the walkthrough does: `webhook-cli run api` with a `.env`.
    via_cli: bool,
}

impl Gateway {
    /// Starts a gateway with a fresh store.
    pub async fn start() -> Gateway {
        Self::start_with(&[]).await
    }

    /// Starts a gateway with extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut gateway = Gateway {
            dir,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            log_reader: None,
            log: Arc::new(Mutex::new(Vec::new())),
            extra_env,
            via_cli: false,
        };
        gateway.spawn(None).await;
        gateway
    }

    /// Starts the gateway as the walkthrough does: `.env` in the working
    /// directory holding `dotenv`, then `webhook-cli run api` with no other
    /// environment. The ports must be in `dotenv` (HTTP_ADDR, ADMIN_ADDR).
    pub async fn start_via_cli(dotenv: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), dotenv).unwrap();
        let mut gateway = Gateway {
            dir,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            log_reader: None,
            log: Arc::new(Mutex::new(Vec::new())),
            extra_env: Vec::new(),
            via_cli: true,
        };
        gateway.spawn(None).await;
        gateway
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("webhook.db")
    }

    fn server_command(&self, ports: Option<(SocketAddr, SocketAddr)>) -> Command {
        if self.via_cli {
            let mut command = Command::new(binary("webhook-cli"));
            command
                .current_dir(self.dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .args(["run", "api"]);
            if let Some((http, admin)) = ports {
                command.args([
                    "--http-addr",
                    &http.to_string(),
                    "--admin-addr",
                    &admin.to_string(),
                ]);
            }
            return command;
        }
        let (http, admin) = ports.unwrap_or((
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ));
        let mut command = Command::new(binary("webhook-server"));
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SECURE_KEY", SECURE_KEY)
            .env("HTTP_ADDR", http.to_string())
            .env("ADMIN_ADDR", admin.to_string())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", self.db_path().display()),
            )
            .env("LOG_LEVEL", "info,webhook_server=debug");
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    async fn spawn(&mut self, ports: Option<(SocketAddr, SocketAddr)>) {
        let mut command = self.server_command(ports);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn webhook-server");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let log = self.log.clone();
        self.log_reader = Some(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut ready_tx = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("webhook-server ready")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(line.clone());
                }
                log.lock().unwrap().push(line);
            }
        }));
        let line = tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "server not ready in 20s; log: {:?}",
                    self.log.lock().unwrap()
                )
            })
            .unwrap_or_else(|_| {
                panic!(
                    "server exited before ready; log: {:?}",
                    self.log.lock().unwrap()
                )
            });
        self.http_addr = field(&line, "http_addr=").parse().unwrap();
        self.admin_addr = field(&line, "admin_addr=").parse().unwrap();
        self.child = Some(child);
    }

    /// Stops the server with SIGKILL (no chance to clean up).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .expect("server did not stop within 40s of SIGTERM")
            .unwrap();
        if let Some(reader) = self.log_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status.code()
    }

    /// The server's resident memory in KiB (VmRSS), while it runs.
    pub fn rss_kib(&self) -> u64 {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("server running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Starts the server again on the same store and the same ports.
    pub async fn restart(&mut self) {
        self.kill().await;
        let ports = (self.http_addr, self.admin_addr);
        self.spawn(Some(ports)).await;
    }

    /// `http://127.0.0.1:PORT` of the data plane.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr, path)
    }

    /// `http://127.0.0.1:PORT` of the admin plane.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Runs webhook-cli against this gateway, in its directory.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(self.dir.path(), &self.admin_url(), self.key(), args).await
    }

    /// A webhook-cli command against this gateway, for tests that drive the
    /// process themselves (log -f).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        cli_command(self.dir.path(), &self.admin_url(), self.key(), args)
    }

    /// The token passed to the CLI: none when it must come from `.env`.
    fn key(&self) -> Option<&'static str> {
        (!self.via_cli).then_some(SECURE_KEY)
    }

    /// Creates a source with `extra` flags; returns (id, ingest URL).
    pub async fn add_source(&self, name: &str, extra: &[&str]) -> (i64, String) {
        let name_flag = format!("--name={name}");
        let mut args = vec!["source", "add", name_flag.as_str()];
        args.extend_from_slice(extra);
        let out = self.cli(&args).await.ok();
        let url = out.stdout.trim().to_owned();
        let id = url.rsplit('/').next().unwrap().parse().unwrap();
        (id, url)
    }

    /// Creates a target with `extra` flags; returns (id, signing secret).
    pub async fn add_target(&self, name: &str, url: &str, extra: &[&str]) -> (i64, Option<String>) {
        let name_flag = format!("--name={name}");
        let url_flag = format!("--url={url}");
        let mut args = vec!["target", "add", name_flag.as_str(), url_flag.as_str()];
        args.extend_from_slice(extra);
        let out = self.cli(&args).await.ok();
        let mut lines = out.stdout.lines();
        let id = lines.next().unwrap().trim().parse().unwrap();
        (id, lines.next().map(|s| s.trim().to_owned()))
    }

    /// The newest `n` log records of `kind` ("" for all), oldest first.
    pub async fn log(&self, kind: &str, n: usize) -> Vec<Value> {
        let n = n.to_string();
        let mut args = vec!["log", "-n", n.as_str()];
        let type_flag = format!("--type={kind}");
        if !kind.is_empty() {
            args.push(type_flag.as_str());
        }
        self.cli(&args).await.ok().json_lines()
    }

    /// The server's stderr so far.
    pub fn server_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(name)
        .unwrap_or_else(|| panic!("{name} missing in {line:?}"))
        + name.len();
    line[start..].split_whitespace().next().unwrap()
}

/// A webhook-cli command in `dir` (where it looks for .env).
pub fn cli_command(dir: &Path, server: &str, key: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(binary("webhook-cli"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WEBHOOK_SERVER", server)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("SECURE_KEY", key);
    }
    command
}

/// Runs webhook-cli to completion (at most 30 s).
pub async fn run_cli(dir: &Path, server: &str, key: Option<&str>, args: &[&str]) -> CliOutput {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        cli_command(dir, server, key, args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("webhook-cli {args:?} did not finish in 30s"))
    .unwrap();
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
