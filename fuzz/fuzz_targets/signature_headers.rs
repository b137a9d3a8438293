//! Fuzz target: see `webhook_server::fuzzing::signature_headers`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook_server::fuzzing::signature_headers(data));
