//! The command tree and its dispatch.

mod delivery;
mod log;
mod run;
mod send;
mod source;
mod target;

use clap::{Parser, Subcommand};

use crate::client::{Admin, CliError};

/// Command-line client of the Webhook-Enterprise admin API.
#[derive(Debug, Parser)]
#[command(name = "webhook-cli", version, about, propagate_version = true)]
pub struct Cli {
    /// Admin API address of webhook-server.
    #[arg(
        long,
        global = true,
        env = "WEBHOOK_SERVER",
        default_value = "http://127.0.0.1:4699"
    )]
    server: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a server process (loads .env from the working directory).
    Run(run::RunArgs),
    /// Manage sources: the senders of webhooks.
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Manage targets: the services webhooks are relayed to.
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Inspect deliveries (one per stored request and target).
    #[command(subcommand)]
    Delivery(delivery::DeliveryCommand),
    /// Print the newest log records, oldest first; -f follows new ones.
    Log(log::LogArgs),
    /// Resend a stored source.request to its targets (or one target), or
    /// every failed delivery of a target (--failed).
    Send(send::SendArgs),
}

/// Runs the parsed command.
///
/// # Errors
/// Anything that should end the process with a message and a non-zero code.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Run(args) = cli.command {
        return run::run(args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let admin = Admin::connect(&cli.server).await?;
        let result = match cli.command {
            Command::Run(_) => Ok(()),
            Command::Source(cmd) => source::run(&admin, cmd).await,
            Command::Target(cmd) => target::run(&admin, cmd).await,
            Command::Delivery(cmd) => delivery::run(&admin, cmd).await,
            Command::Log(args) => log::run(&admin, args).await,
            Command::Send(args) => send::run(&admin, args).await,
        };
        quiet_on_closed_pipe(result)
    })
}

/// `webhook-cli log | head` closes stdout early; that is not an error.
fn quiet_on_closed_pipe(result: Result<(), CliError>) -> Result<(), CliError> {
    match result {
        Err(e) if e.message.contains("Broken pipe") => Ok(()),
        other => other,
    }
}
