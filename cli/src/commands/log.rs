//! `webhook-cli log`: the newest records, and following new ones.

use clap::{Args, ValueEnum};
use tokio_stream::StreamExt;
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::{output, render};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RecordType {
    #[value(name = "source.request")]
    SourceRequest,
    #[value(name = "target.response")]
    TargetResponse,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only records of this type.
    #[arg(long = "type", value_enum)]
    record_type: Option<RecordType>,
    /// How many of the newest records to print.
    #[arg(short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    n: u32,
    /// Indent each record.
    #[arg(long)]
    pretty: bool,
    /// Only records of this source (its numeric id), or of one stored
    /// request (its 32-hex id) and its delivery attempts.
    #[arg(long = "source-id", value_name = "ID")]
    source_id: Option<String>,
    /// Only delivery attempts to this target.
    #[arg(long = "target-id", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    target_id: Option<i64>,
    /// Keep printing new records as they are committed, until Ctrl-C.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
}

fn filter(args: &LogArgs) -> Result<pb::LogFilter, CliError> {
    let mut filter = pb::LogFilter {
        r#type: match args.record_type {
            None => String::new(),
            Some(RecordType::SourceRequest) => "source.request".into(),
            Some(RecordType::TargetResponse) => "target.response".into(),
        },
        target_id: args.target_id.unwrap_or(0),
        ..Default::default()
    };
    if let Some(id) = args.source_id.as_deref().map(str::trim) {
        match id.parse::<i64>() {
            Ok(n) if n > 0 => filter.source_id = n,
            _ if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                filter.request_id = id.to_ascii_lowercase();
            }
            _ => {
                return Err(CliError::usage(format!(
                    "--source-id {id:?}: expected a source id (a positive integer) or a request id (32 hex characters)"
                )));
            }
        }
    }
    Ok(filter)
}

pub async fn run(admin: &Admin, args: LogArgs) -> Result<(), CliError> {
    let filter = filter(&args)?;
    let mut logs = admin.logs();
    if !args.follow {
        let records = logs
            .list_logs(pb::ListLogsRequest {
                filter: Some(filter),
                limit: args.n,
            })
            .await?
            .into_inner()
            .records;
        for record in &records {
            output::json(&render::log_record(record), args.pretty)?;
        }
        return Ok(());
    }
    let mut stream = logs
        .follow_logs(pb::FollowLogsRequest {
            filter: Some(filter),
            backlog: args.n,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        match event?.event {
            Some(pb::log_event::Event::Record(record)) => {
                output::json(&render::log_record(&record), args.pretty)?;
            }
            Some(pb::log_event::Event::Missed(count)) => {
                output::json(&render::missed(count), args.pretty)?;
            }
            None => {}
        }
    }
    Err(CliError::new(
        "the server ended the log stream (shutting down?)",
    ))
}
