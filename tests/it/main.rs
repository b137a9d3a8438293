//! End-to-end tests: the real `webhook-server` and `webhook-cli` binaries,
//! over real sockets on 127.0.0.1, with a temporary SQLite file and a real
//! target server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod bad_input;
mod crash;
mod delivery;
mod disk;
mod flow;
mod fuzz_corpus;
mod ingest;
mod logs;
mod policies;
mod postgres;
mod recovery;
mod retention;
mod startup;
mod target_faults;
mod util;
mod walkthrough;
