//! PostgreSQL for the end-to-end tests: a database of its own on the local
//! server (dropped afterwards), or a private server of its own that a test
//! may stop and start.

use std::path::PathBuf;
use std::process::Command;

/// The local server the tests use; `TEST_PG_URL` overrides (no database
/// name: each test creates its own).
fn server_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("run psql (the PostgreSQL client)")
}

/// A fresh database on the local server; dropped with this value.
pub struct TestDatabase {
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn create() -> TestDatabase {
        let name = format!("webhook_test_{}", uuid::Uuid::now_v7().simple());
        let admin = format!("{}/postgres", server_url());
        let out = psql(&admin, &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "cannot create a database on {admin} (is PostgreSQL running?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestDatabase {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }

    /// Runs SQL in this database; returns what it printed (unaligned).
    pub fn sql(&self, sql: &str) -> String {
        let out = psql(&self.url, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = format!("{}/postgres", server_url());
        let _ = psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory,
/// on a free port of 127.0.0.1), run as the `postgres` user; stopped when
/// dropped. Needs root (to run as that user), as CI has.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
}

fn bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn as_postgres(program: PathBuf, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("run a PostgreSQL program as the postgres user (needs root)")
}

impl PrivateServer {
    pub fn start() -> PrivateServer {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chown the server's directory (needs root)"
        );
        let data = dir.path().join("data");
        let out = as_postgres(
            bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivateServer { dir, port };
        server.resume();
        server
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.dir.path().join("data");
        let mut all = vec!["-D", data.to_str().unwrap(), "-w"];
        all.extend_from_slice(args);
        as_postgres(bin("pg_ctl"), &all)
    }

    /// Starts the server (again).
    pub fn resume(&self) {
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = self.pg_ctl(&["-l", log.to_str().unwrap(), "-o", &options, "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}
