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
    /// Change a target; deliveries not yet finished follow the new settings.
    Update(UpdateArgs),
    /// Re-enable a target disabled by a 410 Gone (and close its breaker).
    Enable {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// List targets (a table on a terminal, else JSON lines).
    List {
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Show one target as JSON: its policy in words, breaker, and the next
    /// retry times of its unfinished deliveries.
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

/// Retry and delivery flags shared by `add` and `update`.
#[derive(Debug, Args)]
pub struct DeliveryFlags {
    /// Retry policy: linear (default), exponential, schedule or none.
    #[arg(long)]
    retry: Option<String>,
    /// linear: delay between attempts (server default 60s); exponential:
    /// the first delay.
    #[arg(long = "retry-interval", value_parser = duration)]
    retry_interval: Option<Duration>,
    /// exponential: growth of each delay (default 2).
    #[arg(long = "retry-factor")]
    retry_factor: Option<f64>,
    /// exponential: the longest delay (default 1h).
    #[arg(long = "retry-max-interval", value_parser = duration)]
    retry_max_interval: Option<Duration>,
    /// schedule: the delay before each retry, e.g. 5s,5m,30m,2h,5h,10h,10h.
    #[arg(long = "retry-schedule", value_parser = duration, value_delimiter = ',')]
    retry_schedule: Vec<Duration>,
    /// Attempts in all, the first included (server default 10).
    #[arg(long = "max-attempts")]
    max_attempts: Option<u32>,
    /// Time allowed per attempt, connect plus full response (default 30s).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Follow redirects (at most 5) instead of failing on a 3xx.
    #[arg(long = "follow-redirects")]
    follow_redirects: bool,
    /// Retry 4xx answers (other than 410) instead of failing.
    #[arg(long = "retry-on-4xx")]
    retry_on_4xx: bool,
    /// Attempts to this target in flight at once (default 64).
    #[arg(long = "max-in-flight")]
    max_in_flight: Option<u32>,
    /// Rate limit, e.g. 100/s, 1000/m ("none" removes it).
    #[arg(long)]
    rate: Option<String>,
    /// Consecutive failures that open the circuit breaker (default 10; 0 = never).
    #[arg(long = "break-after")]
    break_after: Option<u32>,
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
    #[command(flatten)]
    delivery: DeliveryFlags,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    id: i64,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    url: Option<String>,
    /// Allow a plain http:// URL.
    #[arg(long = "no-ssl")]
    no_ssl: bool,
    /// Receive only from these sources; --source=all receives from every source.
    #[arg(long = "source", value_name = "ID|all", value_delimiter = ',')]
    sources: Vec<String>,
    /// Stop following redirects.
    #[arg(long = "no-follow-redirects", conflicts_with = "follow_redirects")]
    no_follow_redirects: bool,
    /// Stop retrying 4xx answers.
    #[arg(long = "no-retry-on-4xx", conflicts_with = "retry_on_4xx")]
    no_retry_on_4xx: bool,
    #[command(flatten)]
    delivery: DeliveryFlags,
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn durations(list: Vec<Duration>) -> Vec<prost_types::Duration> {
    list.into_iter().map(proto_duration).collect()
}

pub async fn run(admin: &Admin, command: TargetCommand) -> Result<(), CliError> {
    let mut targets = admin.targets();
    match command {
        TargetCommand::Add(args) => {
            let d = args.delivery;
            let target = targets
                .create_target(pb::CreateTargetRequest {
                    name: args.name,
                    url: args.url,
                    allow_plain_http: args.no_ssl,
                    no_auth: args.no_auth,
                    source_ids: args.sources,
                    retry: d.retry,
                    retry_interval: d.retry_interval.map(proto_duration),
                    max_attempts: d.max_attempts,
                    timeout: d.timeout.map(proto_duration),
                    retry_factor: d.retry_factor,
                    retry_max_interval: d.retry_max_interval.map(proto_duration),
                    retry_schedule: durations(d.retry_schedule),
                    follow_redirects: d.follow_redirects,
                    retry_on_4xx: d.retry_on_4xx,
                    max_in_flight: d.max_in_flight,
                    rate: d.rate,
                    break_after: d.break_after,
                })
                .await?
                .into_inner();
            output::line(&target.id.to_string())?;
            if !target.signing_secret.is_empty() {
                output::line(&target.signing_secret)?;
            }
        }
        TargetCommand::Update(args) => {
            let d = args.delivery;
            let set_source_ids = !args.sources.is_empty();
            let mut source_ids = Vec::new();
            for source in &args.sources {
                match source.trim() {
                    "all" => {}
                    id => source_ids.push(id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(
                        || {
                            CliError::usage(format!(
                                "--source {id:?}: expected a source id or \"all\""
                            ))
                        },
                    )?),
                }
            }
            let target = targets
                .update_target(pb::UpdateTargetRequest {
                    id: args.id,
                    name: args.name,
                    url: args.url,
                    allow_plain_http: args.no_ssl,
                    set_source_ids,
                    source_ids,
                    retry: d.retry,
                    retry_interval: d.retry_interval.map(proto_duration),
                    max_attempts: d.max_attempts,
                    retry_factor: d.retry_factor,
                    retry_max_interval: d.retry_max_interval.map(proto_duration),
                    retry_schedule: durations(d.retry_schedule),
                    timeout: d.timeout.map(proto_duration),
                    follow_redirects: flag(d.follow_redirects, args.no_follow_redirects),
                    retry_on_4xx: flag(d.retry_on_4xx, args.no_retry_on_4xx),
                    max_in_flight: d.max_in_flight,
                    rate: d.rate,
                    break_after: d.break_after,
                })
                .await?
                .into_inner();
            output::json(&render::target(&target), true)?;
        }
        TargetCommand::Enable { id } => {
            let target = targets
                .enable_target(pb::EnableTargetRequest { id })
                .await?
                .into_inner();
            output::json(&render::target(&target), true)?;
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
                            if t.disabled_reason.is_empty() {
                                t.breaker_state.clone()
                            } else {
                                "disabled".into()
                            },
                            t.pending_deliveries.to_string(),
                            t.url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "SOURCES", "STATE", "PENDING", "URL"], &rows)?;
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
