//! Fuzz target: see `webhook_server::fuzzing::ingest_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook_server::fuzzing::ingest_request(data));
