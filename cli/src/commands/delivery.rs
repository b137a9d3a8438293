//! `webhook-cli delivery ...`: deliveries and their attempts.

use clap::Subcommand;
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::{output, render};

#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// List deliveries, newest first (a table on a terminal, else JSON lines).
    List {
        /// pending (not tried yet), retrying, in_flight, delivered, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only deliveries to this target.
        #[arg(long = "target-id", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
        target_id: Option<i64>,
        /// How many.
        #[arg(short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        n: u32,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery and all its attempts, as JSON.
    Show {
        /// The delivery id (32 hex characters).
        id: String,
    },
}

pub async fn run(admin: &Admin, command: DeliveryCommand) -> Result<(), CliError> {
    let mut deliveries = admin.deliveries();
    match command {
        DeliveryCommand::List {
            state,
            target_id,
            n,
            json,
        } => {
            let list = deliveries
                .list_deliveries(pb::ListDeliveriesRequest {
                    state: state.unwrap_or_default(),
                    target_id: target_id.unwrap_or(0),
                    limit: n,
                })
                .await?
                .into_inner()
                .deliveries;
            if output::tables(json) {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|d| {
                        let next = render::time(d.next_run_at.as_ref());
                        vec![
                            d.id.clone(),
                            d.request_id.clone(),
                            format!("{} {}", d.target_id, d.target_name),
                            d.state.clone(),
                            d.attempts.to_string(),
                            next.as_str().unwrap_or("-").to_owned(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "REQUEST", "TARGET", "STATE", "ATTEMPTS", "NEXT RUN"],
                    &rows,
                )?;
            } else {
                for d in &list {
                    output::json(&render::delivery(d), false)?;
                }
            }
        }
        DeliveryCommand::Show { id } => {
            let shown = deliveries
                .get_delivery(pb::GetDeliveryRequest { id })
                .await?
                .into_inner();
            let mut value = shown
                .delivery
                .as_ref()
                .map(render::delivery)
                .unwrap_or_default();
            let attempts: Vec<_> = shown.attempts.iter().map(render::log_record).collect();
            if let Some(object) = value.as_object_mut() {
                object.insert("attempt_log".into(), serde_json::Value::Array(attempts));
            }
            output::json(&value, true)?;
        }
    }
    Ok(())
}
