//! The one place store errors become gRPC statuses. Internal details are
//! logged, not sent.

use tonic::Status;

use crate::store::StoreError;

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
            StoreError::Unavailable(inner) => {
                tracing::error!(error = %inner, "admin: store unavailable");
                Status::unavailable("store unavailable, try again later")
            }
            other => {
                tracing::error!(error = %other, "admin: store error");
                Status::internal("internal store error (see the server log)")
            }
        }
    }
}
