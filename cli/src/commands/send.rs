//! `webhook-cli send`: resend a stored request, or every failed delivery of
//! a target.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use tokio_stream::StreamExt;
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::output;

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 30m, 24h, 7d)"))
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The id of the source.request to resend (32 hex characters).
    #[arg(
        long = "source-id",
        value_name = "REQUEST_ID",
        required_unless_present = "failed"
    )]
    source_id: Option<String>,
    /// Deliver only to this target (with --failed: the target whose failed
    /// deliveries to resend).
    #[arg(long = "target-id", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    target_id: Option<i64>,
    /// Resend every request whose delivery to --target-id failed.
    #[arg(long, requires = "target_id", conflicts_with = "source_id")]
    failed: bool,
    /// With --failed: only deliveries that failed within this long (default 24h).
    #[arg(long, value_parser = duration, requires = "failed")]
    since: Option<Duration>,
    /// With --failed: count them, resend nothing.
    #[arg(long = "dry-run", requires = "failed")]
    dry_run: bool,
}

pub async fn run(admin: &Admin, args: SendArgs) -> Result<(), CliError> {
    if args.failed {
        return resend_failed(admin, args).await;
    }
    let response = admin
        .deliveries()
        .resend(pb::ResendRequest {
            request_id: args.source_id.unwrap_or_default(),
            target_id: args.target_id.unwrap_or(0),
        })
        .await?
        .into_inner();
    output::line(&response.request_id)?;
    Ok(())
}

/// Draws `[#####.....] done/total` on the terminal's stderr.
fn progress(done: u32, total: u32) {
    const WIDTH: u32 = 30;
    let filled = done
        .saturating_mul(WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r[{bar}] {done}/{total}");
    let _ = err.flush();
}

async fn resend_failed(admin: &Admin, args: SendArgs) -> Result<(), CliError> {
    let target_id = args.target_id.unwrap_or(0);
    let since = args.since.unwrap_or(Duration::from_secs(24 * 3600));
    let mut stream = admin
        .deliveries()
        .resend_failed(pb::ResendFailedRequest {
            target_id,
            since: Some(prost_types::Duration {
                seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            dry_run: args.dry_run,
        })
        .await?
        .into_inner();
    let bar = !args.dry_run && std::io::stderr().is_terminal();
    let (mut done, mut total) = (0, 0);
    while let Some(progress_message) = stream.next().await {
        let message = progress_message?;
        done = message.done;
        total = message.total;
        if bar {
            progress(done, total);
        }
    }
    if bar {
        eprintln!();
    }
    let window = humantime::format_duration(since);
    if args.dry_run {
        output::line(&format!(
            "{total} failed deliveries to target {target_id} in the last {window} would be resent (dry run)"
        ))?;
    } else {
        output::line(&format!(
            "resent {done} of {total} failed deliveries to target {target_id} from the last {window}"
        ))?;
        if done < total {
            return Err(CliError::new(
                "the server stopped before resending them all",
            ));
        }
    }
    Ok(())
}
