//! `webhook-cli send`: resend a stored request.

use clap::Args;
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::output;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The id of the source.request to resend (32 hex characters).
    #[arg(long = "source-id", value_name = "REQUEST_ID")]
    source_id: String,
    /// Deliver only to this target (default: every target routed to its source).
    #[arg(long = "target-id", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    target_id: Option<i64>,
}

pub async fn run(admin: &Admin, args: SendArgs) -> Result<(), CliError> {
    let response = admin
        .deliveries()
        .resend(pb::ResendRequest {
            request_id: args.source_id,
            target_id: args.target_id.unwrap_or(0),
        })
        .await?
        .into_inner();
    output::line(&response.request_id)?;
    Ok(())
}
