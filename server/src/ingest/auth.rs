//! Ingest authentication: the source's HTTP Basic credentials, then the
//! provider signature it asks for.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::store::model::{Source, SourceAuth};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingCredentials,
    BadCredentials,
    MissingSignature,
    BadSignature,
}

impl AuthFailure {
    /// The reason given to the sender.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => {
                "missing credentials: use the source's ingest URL with its user and password"
            }
            AuthFailure::BadCredentials => "invalid credentials",
            AuthFailure::MissingSignature => "missing X-Hub-Signature-256 header",
            AuthFailure::BadSignature => "invalid X-Hub-Signature-256 signature",
        }
    }
}

/// Checks `Authorization: Basic` against the source's credentials, in
/// constant time.
pub fn check_basic(source: &Source, headers: &HeaderMap) -> Result<(), AuthFailure> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::MissingCredentials)?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or(AuthFailure::MissingCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthFailure::MissingCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::BadCredentials)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(AuthFailure::BadCredentials)?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = user.ct_eq(source.username.as_bytes());
    let pass_ok = pass.ct_eq(source.password.as_bytes());
    if bool::from(user_ok & pass_ok) {
        Ok(())
    } else {
        Err(AuthFailure::BadCredentials)
    }
}

/// Checks the provider signature the source asks for.
pub fn check_signature(
    source: &Source,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthFailure> {
    match &source.auth {
        SourceAuth::None => Ok(()),
        SourceAuth::GitHub { secret } => {
            let header = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthFailure::MissingSignature)?;
            verify_github_signature(secret.as_bytes(), header, body)
        }
    }
}

/// Verifies `sha256=<hex HMAC-SHA256(secret, body)>` in constant time.
pub fn verify_github_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
) -> Result<(), AuthFailure> {
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(AuthFailure::BadSignature)?;
    let expected = hex::decode(hex_digest).map_err(|_| AuthFailure::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthFailure::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| AuthFailure::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn github_signature_accepts_the_right_secret_only() {
        let body = br#"{"zen":"Design for failure."}"#;
        let header = sign(b"It's a Secret to Everybody", body);
        assert_eq!(
            verify_github_signature(b"It's a Secret to Everybody", &header, body),
            Ok(())
        );
        assert_eq!(
            verify_github_signature(b"another secret", &header, body),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(
            verify_github_signature(b"It's a Secret to Everybody", &header, b"tampered"),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn github_signature_rejects_malformed_headers() {
        for header in ["", "sha1=abcd", "sha256=zz", "sha256=", "abcdef"] {
            assert_eq!(
                verify_github_signature(b"s", header, b"body"),
                Err(AuthFailure::BadSignature),
                "{header:?}"
            );
        }
    }
}
