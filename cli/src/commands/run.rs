//! `webhook-cli run api`: start webhook-server with this environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, ValueEnum};

use crate::client::CliError;

const SERVER_BINARY: &str = "webhook-server";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to run: `api` starts the gateway (ingest, delivery and admin API).
    what: Process,
    /// Flags passed on to webhook-server (e.g. --http-addr 127.0.0.1:0).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Process {
    Api,
}

/// Looks for webhook-server beside this executable, then on PATH.
fn find_server() -> Result<PathBuf, CliError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SERVER_BINARY)));
    if let Some(path) = beside.as_deref().filter(|p| is_executable(p)) {
        return Ok(path.to_path_buf());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(SERVER_BINARY);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(CliError::new(format!(
        "{SERVER_BINARY} not found beside webhook-cli{} or on PATH",
        beside
            .as_deref()
            .and_then(Path::parent)
            .map(|d| format!(" (in {})", d.display()))
            .unwrap_or_default()
    )))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Replaces this process with webhook-server (on Unix), so signals and the
/// exit code are the server's own.
pub fn run(args: RunArgs) -> Result<(), CliError> {
    let Process::Api = args.what;
    let server = find_server()?;
    let mut command = Command::new(&server);
    command.args(&args.server_args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(CliError::new(format!(
            "cannot start {}: {error}",
            server.display()
        )))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .map_err(|e| CliError::new(format!("cannot start {}: {e}", server.display())))?;
        match status.code() {
            Some(0) => Ok(()),
            code => Err(CliError {
                message: String::new(),
                code: code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
            }),
        }
    }
}
