//! `webhook-bench`: benchmark scenarios against a real `webhook-server`
//! (release build) over loopback. Figures are printed, not asserted: see
//! docs/performance.md.

#![forbid(unsafe_code)]

mod ceiling;
mod fairness;
mod gateway;
mod history;
mod ingest;
mod load;
mod sink;
mod startup;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "webhook-bench",
    about = "Webhook-Enterprise benchmark scenarios"
)]
struct Cli {
    /// A few seconds per scenario: checks that the harness works.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// A healthy target's latency with and without 1,000 deliveries queued
    /// for a target that never answers.
    Fairness {
        /// Requests per second to the healthy target.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Deliveries queued for the black-holed target.
        #[arg(long, default_value_t = 1000)]
        backlog: u32,
    },
    /// Durable ingest, ingest plus delivery, latency at half load and
    /// memory, each against a bare HTTP server's ceiling in the same run.
    Ingest {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Runs; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Attempts at once to the sink target. Its default, 256, is the
        /// gateway's own (`--delivery-concurrency`): with one target there
        /// is no other to keep slots for, and a target's default of 64
        /// bounds deliveries at 64 per round trip through the gateway.
        #[arg(long, default_value_t = 256)]
        max_in_flight: u32,
    },
    /// Start-up time on an existing store, until both listeners accept.
    Startup {
        /// Starts to time.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Seconds of ingest that fill the store first.
        #[arg(long, default_value_t = 10)]
        fill_seconds: u64,
    },
    /// Ingest on a store holding many requests against an empty one, the
    /// log query on it, and ingest while retention sweeps it.
    History {
        /// Requests stored first (each with a delivery and an attempt).
        #[arg(long, default_value_t = 5_000_000)]
        requests: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Measurements per figure; figures are medians.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The ceiling server (started by `ingest` as its own process).
    #[command(hide = true)]
    CeilingServer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("webhook-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Benchmark databases of an earlier run, on PostgreSQL (not in the
        // ceiling server: it runs beside this process's gateways).
        if !matches!(cli.scenario, Scenario::CeilingServer) {
            gateway::drop_bench_databases().await?;
        }
        let result = match cli.scenario {
            Scenario::Fairness {
                rate,
                seconds,
                backlog,
            } => {
                let load = if cli.smoke {
                    fairness::Load {
                        rate: 50,
                        seconds: 2,
                        backlog: 200,
                    }
                } else {
                    fairness::Load {
                        rate,
                        seconds,
                        backlog,
                    }
                };
                fairness::run(load).await.map(|_| ())
            }
            Scenario::Ingest {
                connections,
                seconds,
                runs,
                max_in_flight,
            } => {
                let plan = if cli.smoke {
                    ingest::Plan {
                        connections: 8,
                        seconds: 1,
                        runs: 1,
                        max_in_flight,
                    }
                } else {
                    ingest::Plan {
                        connections,
                        seconds,
                        runs,
                        max_in_flight,
                    }
                };
                ingest::run(plan).await
            }
            Scenario::Startup { runs, fill_seconds } => {
                if cli.smoke {
                    startup::run(3, 1).await
                } else {
                    startup::run(runs, fill_seconds).await
                }
            }
            Scenario::History {
                requests,
                connections,
                seconds,
                runs,
            } => {
                let plan = if cli.smoke {
                    history::Plan {
                        requests: 20_000,
                        connections: 8,
                        seconds: 1,
                        runs: 1,
                        cli_calls: 3,
                    }
                } else {
                    history::Plan {
                        requests,
                        connections,
                        seconds,
                        runs,
                        cli_calls: 20,
                    }
                };
                history::run(plan).await
            }
            Scenario::CeilingServer => return ceiling::serve().await,
        };
        gateway::drop_bench_databases().await?;
        result
    });
    match result {
        // Figures are reported, not enforced: a missed goal is printed, not failed.
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webhook-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
