//! Reads the JSON values a `webhook-cli log -f` process prints, one line or
//! indented, as they come.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

/// A running follower.
pub struct Follower {
    child: Child,
    stdout: ChildStdout,
    buffer: String,
}

impl Follower {
    /// Spawns `command` (a `log -f` invocation).
    pub fn spawn(mut command: Command) -> Follower {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        Follower {
            child,
            stdout,
            buffer: String::new(),
        }
    }

    /// The next JSON value printed, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut values = serde_json::Deserializer::from_str(&self.buffer).into_iter::<Value>();
            if let Some(Ok(value)) = values.next() {
                let consumed = values.byte_offset();
                self.buffer.drain(..consumed);
                return value;
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.stdout.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no complete record within {timeout:?}; have {:?}",
                        self.buffer
                    )
                })
                .unwrap();
            assert!(read > 0, "follower exited; unread: {:?}", self.buffer);
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }

    /// Stops the follower (as Ctrl-C would).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
