//! Compiles `proto/webhook/v1/*.proto` with protox (no system protoc needed)
//! and keeps the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "webhook/v1/common.proto",
    "webhook/v1/sources.proto",
    "webhook/v1/targets.proto",
    "webhook/v1/logs.proto",
    "webhook/v1/deliveries.proto",
    "webhook/v1/system.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("webhook_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::AdminCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
