//! `webhook.v1.Sources`.

use bytes::Bytes;
use rand::RngCore;
use tonic::{Request, Response, Status};
use webhook_proto::v1 as pb;

use super::validate::{self, invalid};
use super::{AdminState, convert};
use crate::store::model::{NewSource, SourceAuth};

/// The longest configured response body.
const MAX_CONTENT: usize = 64 * 1024;
/// The default configured response body.
const DEFAULT_CONTENT: &str = r#"{"message": "ok"}"#;

#[derive(Debug)]
pub struct SourcesService(pub AdminState);

/// 128 random bits as 32 lowercase hex characters.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Parses `PROVIDER:SECRET`. `ghook:nosecret`, `ghook` and "" mean no check.
fn parse_auth(value: &str) -> Result<SourceAuth, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(SourceAuth::None);
    }
    let (provider, secret) = value.split_once(':').unwrap_or((value, ""));
    match provider {
        "ghook" if secret.is_empty() || secret == "nosecret" => Ok(SourceAuth::None),
        "ghook" if secret.len() > 256 => {
            Err(invalid("auth", "secret must be at most 256 characters"))
        }
        "ghook" => Ok(SourceAuth::GitHub {
            secret: secret.to_owned(),
        }),
        other => Err(invalid(
            "auth",
            format!(
                "unknown provider {other:?}: expected ghook:SECRET (GitHub X-Hub-Signature-256)"
            ),
        )),
    }
}

#[tonic::async_trait]
impl pb::sources_server::Sources for SourcesService {
    async fn create_source(
        &self,
        request: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let req = request.into_inner();
        let name = validate::name("name", &req.name, 200)?;
        let auth = parse_auth(&req.auth)?;
        let status_code = req.status_code.unwrap_or(200);
        if !(200..=299).contains(&status_code) {
            return Err(invalid(
                "status_code",
                format!("{status_code} is not a success status (200-299)"),
            ));
        }
        let content_type = req
            .content_type
            .unwrap_or_else(|| "application/json".to_owned());
        if content_type.trim().is_empty()
            || content_type.len() > 256
            || http::HeaderValue::from_str(&content_type).is_err()
        {
            return Err(invalid(
                "content_type",
                "must be a valid Content-Type header value of at most 256 characters",
            ));
        }
        let content = req
            .content
            .map(Bytes::from)
            .unwrap_or_else(|| Bytes::from_static(DEFAULT_CONTENT.as_bytes()));
        if content.len() > MAX_CONTENT {
            return Err(invalid(
                "content",
                format!("must be at most {MAX_CONTENT} bytes"),
            ));
        }
        let source = self
            .0
            .store
            .create_source(NewSource {
                name,
                username: random_hex(),
                password: random_hex(),
                auth,
                status_code: status_code as u16,
                content_type,
                content,
            })
            .await?;
        tracing::info!(source_id = source.id, name = %source.name, "source created");
        Ok(Response::new(convert::source(&self.0.public_url, &source)))
    }

    async fn list_sources(
        &self,
        _request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        let sources = self.0.store.list_sources().await?;
        Ok(Response::new(pb::ListSourcesResponse {
            sources: sources
                .iter()
                .map(|s| convert::source(&self.0.public_url, s))
                .collect(),
        }))
    }

    async fn get_source(
        &self,
        request: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let id = validate::id("id", request.into_inner().id)?;
        let source = self
            .0
            .store
            .get_source(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("source {id} not found")))?;
        Ok(Response::new(convert::source(&self.0.public_url, &source)))
    }

    async fn delete_source(
        &self,
        request: Request<pb::DeleteSourceRequest>,
    ) -> Result<Response<pb::DeleteSourceResponse>, Status> {
        let id = validate::id("id", request.into_inner().id)?;
        if !self.0.store.delete_source(id).await? {
            return Err(Status::not_found(format!("source {id} not found")));
        }
        tracing::info!(source_id = id, "source removed");
        Ok(Response::new(pb::DeleteSourceResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_values_parse_as_the_walkthrough_uses_them() {
        assert_eq!(parse_auth("").ok(), Some(SourceAuth::None));
        assert_eq!(parse_auth("ghook:nosecret").ok(), Some(SourceAuth::None));
        assert_eq!(
            parse_auth("ghook:s3cret").ok(),
            Some(SourceAuth::GitHub {
                secret: "s3cret".into()
            })
        );
        assert!(parse_auth("stripe:whsec").is_err());
    }

    #[test]
    fn credentials_are_128_bit_hex() {
        let a = random_hex();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, random_hex());
    }
}
