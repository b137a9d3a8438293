//! `webhook-cli target ...`.

use std::time::Duration;

use clap::{Args, Subcommand};
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::{output, render};

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Create a target; prints its id, then its signing secret (shown once).
    Add(AddArgs),
    /// List targets (a table on a terminal, else JSON lines).
    List {
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Show one target as JSON.
    Show {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Remove a target; its unfinished deliveries are cancelled.
    Rm {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{e} (expected e.g. 500ms, 30s, 5m, 2h)"))
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A name for people to recognise it by.
    #[arg(long)]
    name: String,
    /// Where to deliver: https://..., or http://... with --no-ssl.
    #[arg(long)]
    url: String,
    /// Allow a plain http:// URL.
    #[arg(long = "no-ssl")]
    no_ssl: bool,
    /// Send no Standard Webhooks signature headers.
    #[arg(long = "no-auth")]
    no_auth: bool,
    /// Receive only from these sources (repeat, or comma-separated);
    /// default: every source.
    #[arg(long = "source", value_name = "ID", value_delimiter = ',',
          value_parser = clap::value_parser!(i64).range(1..))]
    sources: Vec<i64>,
    /// Retry policy: linear (the default).
    #[arg(long)]
    retry: Option<String>,
    /// Delay between attempts (server default: 60s).
    #[arg(long = "retry-interval", value_parser = duration)]
    retry_interval: Option<Duration>,
    /// Attempts in all, the first included (server default: 10).
    #[arg(long = "max-attempts")]
    max_attempts: Option<u32>,
    /// Time allowed per attempt, connect plus full response (default: 30s).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub async fn run(admin: &Admin, command: TargetCommand) -> Result<(), CliError> {
    let mut targets = admin.targets();
    match command {
        TargetCommand::Add(args) => {
            let target = targets
                .create_target(pb::CreateTargetRequest {
                    name: args.name,
                    url: args.url,
                    allow_plain_http: args.no_ssl,
                    no_auth: args.no_auth,
                    source_ids: args.sources,
                    retry: args.retry,
                    retry_interval: args.retry_interval.map(proto_duration),
                    max_attempts: args.max_attempts,
                    timeout: args.timeout.map(proto_duration),
                })
                .await?
                .into_inner();
            output::line(&target.id.to_string())?;
            if !target.signing_secret.is_empty() {
                output::line(&target.signing_secret)?;
            }
        }
        TargetCommand::List { json } => {
            let list = targets
                .list_targets(pb::ListTargetsRequest {})
                .await?
                .into_inner()
                .targets;
            if output::tables(json) {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            render::routes(t),
                            t.pending_deliveries.to_string(),
                            t.url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "SOURCES", "PENDING", "URL"], &rows)?;
            } else {
                for t in &list {
                    output::json(&render::target(t), false)?;
                }
            }
        }
        TargetCommand::Show { id } => {
            let target = targets
                .get_target(pb::GetTargetRequest { id })
                .await?
                .into_inner();
            output::json(&render::target(&target), true)?;
        }
        TargetCommand::Rm { id } => {
            targets
                .delete_target(pb::DeleteTargetRequest { id })
                .await?;
            output::line(&format!("target {id} removed"))?;
        }
    }
    Ok(())
}
