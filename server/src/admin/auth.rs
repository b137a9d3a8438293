//! The admin token check, applied to every RPC.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Accepts calls carrying `authorization: Bearer <SECURE_KEY>`.
#[derive(Clone)]
pub struct BearerAuth {
    key: Arc<[u8]>,
}

impl BearerAuth {
    /// A check against `secure_key`.
    pub fn new(secure_key: &str) -> Self {
        BearerAuth {
            key: Arc::from(secure_key.as_bytes()),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match token {
            Some(token) if bool::from(token.trim().as_bytes().ct_eq(&self.key)) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "invalid admin token: it must equal the server's SECURE_KEY",
            )),
            None => Err(Status::unauthenticated(
                "missing admin token: send the header 'authorization: Bearer <SECURE_KEY>'",
            )),
        }
    }
}
