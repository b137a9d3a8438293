//! `webhook-cli`: the command-line client of the Webhook-Enterprise admin
//! API (gRPC), and the launcher of `webhook-server` (`run api`).

#![forbid(unsafe_code)]

mod client;
mod commands;
mod output;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("webhook-cli: cannot read .env: {e}");
        return ExitCode::from(client::EXIT_USAGE);
    }
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message names the flag; keep its first line and usage hint.
            let _ = e.print();
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.message.is_empty() => ExitCode::from(e.code),
        Err(e) => {
            eprintln!("webhook-cli: {e}");
            ExitCode::from(e.code)
        }
    }
}
