//! Fuzz target: see `webhook_server::fuzzing::retry_parsers`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook_server::fuzzing::retry_parsers(data));
