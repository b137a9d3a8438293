//! A full disk under the store (a small tmpfs): ingest answers 503, never a
//! 2xx without a durable write, `/health` says so, and it recovers by itself
//! when there is room again, with nothing lost. Needs root (to mount a
//! tmpfs), as CI has.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::hooks::health;
use crate::util::{Gateway, eventually};

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "this test mounts a tmpfs and needs root");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn post(gateway: &Gateway, url: &reqwest::Url, id: u64) -> u16 {
    crate::util::http()
        .post(gateway.http_url(url.path()))
        .basic_auth(url.username(), url.password())
        .body(format!(
            r#"{{"id": {id}, "padding": "{}"}}"#,
            "x".repeat(2000)
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn stored_ids(gateway: &Gateway) -> HashSet<u64> {
    gateway
        .log("source.request", 10_000)
        .await
        .iter()
        .filter_map(|r| r["payload"]["id"].as_u64())
        .collect()
}

fn store_url(dir: &Path) -> String {
    let path: PathBuf = dir.join("webhook.db");
    format!("sqlite://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503_and_recovers_without_loss() {
    let disk = Tmpfs::mount("1m");
    let gateway = Gateway::start_with(&[("DATABASE_URL", &store_url(disk.path()))]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let url = reqwest::Url::parse(&url).unwrap();

    let mut acked = HashSet::new();
    let mut refused = 0;
    for id in 0..2000u64 {
        match post(&gateway, &url, id).await {
            200 => {
                acked.insert(id);
            }
            503 => {
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused >= 20,
        "the 1 MB disk filled up ({} acknowledged)",
        acked.len()
    );
    assert!(!acked.is_empty());
    let (status, body) = health(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");

    // Room again: it recovers by itself.
    disk.remount("size=64m");
    eventually("ingest to recover", Duration::from_secs(20), || async {
        (post(&gateway, &url, 1_000_000).await == 200).then_some(())
    })
    .await;
    acked.insert(1_000_000);
    assert_eq!(health(&gateway).await.0, 200);
    let stored = stored_ids(&gateway).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}
