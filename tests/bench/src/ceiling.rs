//! The ceiling: a bare HTTP server that reads each request and answers 200,
//! storing nothing. The same load generator against it, in the same run,
//! gives the figure every gateway number is compared with.

use std::process::Stdio;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Serves until killed; prints `listening ADDR` first. Runs in its own
/// process, as the gateway does.
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let app = axum::Router::new().fallback(|_body: Bytes| async { StatusCode::OK });
    axum::serve(listener, app).await?;
    Ok(())
}

/// A ceiling server process and its address.
pub struct Ceiling {
    _child: Child,
    pub addr: String,
}

impl Ceiling {
    pub async fn start() -> anyhow::Result<Ceiling> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("ceiling-server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("ceiling stdout")?;
        let line = BufReader::new(stdout)
            .lines()
            .next_line()
            .await?
            .context("ceiling server said nothing")?;
        let addr = line
            .strip_prefix("listening ")
            .context("ceiling server line")?
            .to_owned();
        Ok(Ceiling {
            _child: child,
            addr,
        })
    }
}
