//! A webhook-server process for a benchmark run: its own store (a SQLite
//! file in a temporary directory, or with `DATABASE_URL=postgres://...` a
//! fresh database on that PostgreSQL server), free ports on 127.0.0.1, and
//! an admin client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use webhook_proto::v1 as pb;

pub const SECURE_KEY: &str = "bench-secure-key-0123456789abcdef01234567";

/// `webhook-server` beside this executable (both built with
/// `cargo build --release --workspace`).
fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("webhook-server");
    if !path.exists() {
        bail!(
            "{} not found: build both with `cargo build --release --workspace`",
            path.display()
        );
    }
    Ok(path)
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// A running gateway; killed when dropped.
pub struct Gateway {
    _dir: tempfile::TempDir,
    child: Child,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    channel: Channel,
    bearer: Bearer,
}

impl Gateway {
    /// Starts a gateway with `env` added to its environment.
    pub async fn start(env: &[(&str, &str)]) -> anyhow::Result<Gateway> {
        Self::start_in(tempfile::tempdir()?, env).await
    }

    /// Stops the server cleanly (SIGTERM, as a service manager would) and
    /// hands back its directory, store included.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        self._dir
    }

    /// Kills the server and waits for it to be gone; hands back its
    /// directory, so that the store is deleted when the caller chooses
    /// (not while the next measurement runs).
    pub async fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill().await;
        self._dir
    }

    /// Starts a gateway on the store in `dir`.
    pub async fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> anyhow::Result<Gateway> {
        let mut command = Command::new(server_binary()?);
        command
            .current_dir(dir.path())
            .env("SECURE_KEY", SECURE_KEY)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("DATABASE_URL", store_url(dir.path()).await?)
            .env("LOG_LEVEL", "warn,webhook_server=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("start webhook-server")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("webhook-server ready") {
                    return Ok::<_, anyhow::Error>(line);
                }
            }
            bail!("webhook-server exited before it was ready")
        })
        .await
        .context("webhook-server not ready within 20s")??;
        // Keep draining its log so it never blocks on a full pipe; its
        // warnings and errors are passed on, since they may explain a figure.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("gateway: {line}");
                }
            }
        });
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let start = ready.find(name).context("ready line")? + name.len();
            let value = ready[start..]
                .split_whitespace()
                .next()
                .context("ready line")?;
            Ok(value.parse()?)
        };
        let http_addr = field("http_addr=")?;
        let admin_addr = field("admin_addr=")?;
        let channel = Channel::from_shared(format!("http://{admin_addr}"))?
            .connect()
            .await?;
        let bearer = Bearer(format!("Bearer {SECURE_KEY}").parse()?);
        Ok(Gateway {
            _dir: dir,
            child,
            http_addr,
            admin_addr,
            channel,
            bearer,
        })
    }

    /// (current, peak) resident memory of the server process, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        self.child.id().map(process_memory).unwrap_or_default()
    }

    /// The processor time the server process has used so far, all its
    /// threads (not a PostgreSQL server's own processes).
    pub fn cpu_time(&self) -> Duration {
        self.child.id().map(process_cpu_time).unwrap_or_default()
    }

    pub fn sources(&self) -> pb::sources_client::SourcesClient<Authed> {
        pb::sources_client::SourcesClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    pub fn targets(&self) -> pb::targets_client::TargetsClient<Authed> {
        pb::targets_client::TargetsClient::with_interceptor(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    /// Creates a source; returns (ingest URL on 127.0.0.1, user, password).
    pub async fn add_source(&self, name: &str) -> anyhow::Result<(String, String, String)> {
        let source = self
            .sources()
            .create_source(pb::CreateSourceRequest {
                name: name.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let url = reqwest::Url::parse(&source.ingest_url)?;
        Ok((
            format!("http://{}/{}", self.http_addr, source.id),
            url.username().to_owned(),
            url.password().unwrap_or_default().to_owned(),
        ))
    }

    /// Creates an unsigned plain-http target routed to one source, with
    /// at most `max_in_flight` attempts at once (None: the default, 64).
    pub async fn add_target(
        &self,
        name: &str,
        url: &str,
        source_id: i64,
        max_in_flight: Option<u32>,
    ) -> anyhow::Result<i64> {
        let target = self
            .targets()
            .create_target(pb::CreateTargetRequest {
                name: name.to_owned(),
                url: url.to_owned(),
                allow_plain_http: true,
                no_auth: true,
                source_ids: vec![source_id],
                max_in_flight,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(target.id)
    }
}

/// The PostgreSQL server the benchmarks use, from `DATABASE_URL`, if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
}

/// The store of a gateway whose directory is `dir`: a SQLite file in it, or
/// a fresh database on the PostgreSQL server, whose URL is kept in the
/// directory so that a restart finds the same store.
pub async fn store_url(dir: &Path) -> anyhow::Result<String> {
    let Some(server) = postgres_server() else {
        return Ok(format!("sqlite://{}", dir.join("webhook.db").display()));
    };
    let marker = dir.join("database_url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Ok(url);
    }
    use sqlx::Connection;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let name = format!("{BENCH_DATABASE_PREFIX}{}_{nanos}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .with_context(|| format!("connect to DATABASE_URL {server}"))?;
    // From PostgreSQL 15 on, a new database is written through the WAL by
    // default: its few hundred catalog files are then left for the next
    // checkpoint to write and sync, which falls in a measurement and stalls
    // the commits it times behind those syncs (up to 0.2 s each seen here).
    // A store in use is created once and never pays that. FILE_COPY copies
    // and syncs the files as the database is created, before any load.
    let version: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&mut admin)
        .await?;
    let strategy = match version.parse::<u32>() {
        Ok(v) if v >= 150_000 => " STRATEGY = FILE_COPY",
        _ => "",
    };
    sqlx::query(&format!("CREATE DATABASE {name}{strategy}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let mut url = reqwest::Url::parse(&server)?;
    url.set_path(&format!("/{name}"));
    std::fs::write(&marker, url.as_str())?;
    Ok(url.into())
}

/// Databases created by benchmark runs are named with this prefix.
const BENCH_DATABASE_PREFIX: &str = "webhook_bench_";

/// Drops every benchmark database on the PostgreSQL server (if one is used).
pub async fn drop_bench_databases() -> anyhow::Result<()> {
    use sqlx::Connection;
    let Some(server) = postgres_server() else {
        return Ok(());
    };
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{BENCH_DATABASE_PREFIX}%"))
            .fetch_all(&mut admin)
            .await?;
    for name in names {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    Ok(())
}

/// User and system time of a process, all its threads, from /proc (in
/// clock ticks of 1/100 s: Linux reports them in USER_HZ, which is 100).
pub fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is the first, utime the 12th, stime the 13th.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// (VmRSS, VmHWM) of a process, in bytes, from /proc.
pub fn process_memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
