//! The fuzz targets' corpus (fuzz/corpus/TARGET/*), replayed through the
//! same entry points `cargo fuzz` drives, so every case found once stays
//! checked without a fuzzer.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut cases: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no corpus in {}", dir.display());
    cases
}

#[test]
fn the_signature_header_corpus_passes() {
    for (_, data) in corpus("signature_headers") {
        webhook_server::fuzzing::signature_headers(&data);
    }
}

#[test]
fn the_retry_parser_corpus_passes() {
    for (_, data) in corpus("retry_parsers") {
        webhook_server::fuzzing::retry_parsers(&data);
    }
}

#[test]
fn the_ingest_request_corpus_passes() {
    for (_, data) in corpus("ingest_request") {
        webhook_server::fuzzing::ingest_request(&data);
    }
}
