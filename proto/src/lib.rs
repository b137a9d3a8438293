//! Generated types and gRPC stubs of the admin API, package `webhook.v1`.
//!
//! The server implements these services; `webhook-cli` and any other client
//! (grpcurl through reflection) call them.

pub mod codec;

/// Messages and services of `webhook.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("webhook.v1");
}

/// The encoded `FileDescriptorSet` of every admin API file, with its imports,
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/webhook_descriptor.bin"));
