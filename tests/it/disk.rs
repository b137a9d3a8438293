//! A full disk under the store (a small tmpfs): ingest answers 503, never a
//! 2xx without a durable write, `/health` says so, and it recovers by itself
//! when there is room again, with nothing lost. Needs root (to mount a
//! tmpfs), as CI has.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::hooks::{health, stored_ids};
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

/// An ext4 file system on a loop device, mounted with `errors=remount-ro`,
/// as a server's data disk usually is; unmounted and detached when dropped.
struct Ext4 {
    dir: tempfile::TempDir,
    image: PathBuf,
    device: String,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Ext4 {
    fn create() -> Ext4 {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let image_arg = image.to_str().unwrap();
        run("mkfs.ext4", &["-q", image_arg]);
        let device = run("losetup", &["-f", "--show", image_arg]);
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let disk = Ext4 { dir, image, device };
        disk.mount();
        disk
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn mount(&self) {
        let mnt = self.path();
        run(
            "mount",
            &[
                "-o",
                "errors=remount-ro",
                &self.device,
                mnt.to_str().unwrap(),
            ],
        );
    }

    /// What the kernel does when the disk reports an error: the file
    /// system turns read-only under every open file.
    fn fail(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test").unwrap();
    }

    /// What the operator does then: unmount, check, mount again.
    fn repair(&self) {
        run("umount", &[self.path().to_str().unwrap()]);
        let status = Command::new("e2fsck")
            .args(["-fy", &self.device])
            .status()
            .unwrap();
        // 0: clean; 1: errors corrected.
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        self.mount();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_gone_read_only_gives_503_and_loses_nothing() {
    let disk = Ext4::create();
    let mut gateway = Gateway::start_with(&[("DATABASE_URL", &store_url(&disk.path()))]).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    let url = reqwest::Url::parse(&url).unwrap();
    let mut acked = HashSet::new();
    for id in 0..20u64 {
        assert_eq!(post(&gateway, &url, id).await, 200);
        acked.insert(id);
    }

    // The disk fails; the kernel makes the file system read-only.
    disk.fail();
    for id in 100..120u64 {
        match post(&gateway, &url, id).await {
            503 => {}
            200 => panic!("webhook {id} acknowledged on a read-only disk"),
            other => panic!("unexpected status {other}"),
        }
    }
    let (status, body) = health(&gateway).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let rss_kib = gateway.rss_kib();
    assert!(rss_kib < 64 * 1024, "memory bounded: {rss_kib} KiB");

    // A read-only ext4 only comes back through the operator: the gateway
    // is stopped (here as abruptly as possible), the disk checked and
    // mounted again, the gateway started. Everything acknowledged is there.
    gateway.kill().await;
    disk.repair();
    gateway.restart().await;
    assert_eq!(post(&gateway, &url, 1_000_000).await, 200);
    acked.insert(1_000_000);
    assert_eq!(health(&gateway).await.0, 200);
    let stored = stored_ids(&gateway).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        !stored.iter().any(|id| (100..120).contains(id)),
        "nothing refused was stored"
    );
}
