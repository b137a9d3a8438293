//! `webhook-cli source ...`.

use clap::{Args, Subcommand};
use webhook_proto::v1 as pb;

use crate::client::{Admin, CliError};
use crate::{output, render};

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a source; prints its ingest URL.
    Add(AddArgs),
    /// List sources (a table on a terminal, else JSON lines).
    List {
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
    /// Show one source as JSON.
    Show {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Remove a source (its stored requests stay in the log).
    Rm {
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A name for people to recognise it by.
    #[arg(long)]
    name: String,
    /// Signature check, PROVIDER:SECRET: ghook:SECRET checks GitHub's
    /// X-Hub-Signature-256 (ghook:nosecret = no check).
    #[arg(long)]
    auth: Option<String>,
    /// Status code answered once a request is stored (200-299).
    #[arg(long = "status-code", default_value_t = 200)]
    status_code: u32,
    /// Content-Type of that answer.
    #[arg(long = "content-type", default_value = "application/json")]
    content_type: String,
    /// Body of that answer.
    #[arg(long, default_value = r#"{"message": "ok"}"#)]
    content: String,
}

pub async fn run(admin: &Admin, command: SourceCommand) -> Result<(), CliError> {
    let mut sources = admin.sources();
    match command {
        SourceCommand::Add(args) => {
            let source = sources
                .create_source(pb::CreateSourceRequest {
                    name: args.name,
                    auth: args.auth.unwrap_or_default(),
                    status_code: Some(args.status_code),
                    content_type: Some(args.content_type),
                    content: Some(args.content.into_bytes()),
                })
                .await?
                .into_inner();
            output::line(&source.ingest_url)?;
        }
        SourceCommand::List { json } => {
            let list = sources
                .list_sources(pb::ListSourcesRequest {})
                .await?
                .into_inner()
                .sources;
            if output::tables(json) {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            s.name.clone(),
                            if s.auth_provider.is_empty() {
                                "-".into()
                            } else {
                                s.auth_provider.clone()
                            },
                            s.ingest_url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "AUTH", "INGEST URL"], &rows)?;
            } else {
                for s in &list {
                    output::json(&render::source(s), false)?;
                }
            }
        }
        SourceCommand::Show { id } => {
            let source = sources
                .get_source(pb::GetSourceRequest { id })
                .await?
                .into_inner();
            output::json(&render::source(&source), true)?;
        }
        SourceCommand::Rm { id } => {
            sources
                .delete_source(pb::DeleteSourceRequest { id })
                .await?;
            output::line(&format!("source {id} removed"))?;
        }
    }
    Ok(())
}
