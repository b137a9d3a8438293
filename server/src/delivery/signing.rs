//! Standard Webhooks signatures on deliveries: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use standardwebhooks::{Webhook, WebhookError};

/// A new `whsec_` signing secret: 32 random bytes, base64.
pub fn new_signing_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The `webhook-signature` value for `id.timestamp.body`.
///
/// # Errors
/// The secret is not valid base64.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, WebhookError> {
    let webhook = Webhook::new(secret)?;
    match webhook.sign(id, timestamp, body) {
        Err(WebhookError::InvalidPayload) => Ok(sign_bytes(secret, id, timestamp, body)?),
        other => other,
    }
}

/// The same signature over a body that is not UTF-8, which the spec allows
/// and the spec's crate refuses.
fn sign_bytes(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, WebhookError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| WebhookError::InvalidSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key).map_err(|_| WebhookError::InvalidSignature)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let digest = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!("v1,{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_with_the_standard_webhooks_crate() {
        let secret = new_signing_secret();
        assert!(secret.starts_with("whsec_"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let body = br#"{"data": {}}"#;
        let signature = sign(&secret, "msg_1", now, body).unwrap_or_default();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", http::HeaderValue::from_static("msg_1"));
        headers.insert(
            "webhook-timestamp",
            http::HeaderValue::from_str(&now.to_string())
                .unwrap_or(http::HeaderValue::from_static("0")),
        );
        headers.insert(
            "webhook-signature",
            http::HeaderValue::from_str(&signature).unwrap_or(http::HeaderValue::from_static("")),
        );
        assert!(Webhook::new(&secret).is_ok_and(|w| w.verify(body, &headers).is_ok()));
    }

    #[test]
    fn binary_bodies_are_signed_like_text_ones() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        // For UTF-8 bodies both paths must agree.
        let text = sign(secret, "id", 1, b"hello").unwrap_or_default();
        assert_eq!(
            text,
            sign_bytes(secret, "id", 1, b"hello").unwrap_or_default()
        );
        let binary = sign(secret, "id", 1, &[0xff, 0xfe, 0x00]).unwrap_or_default();
        assert!(binary.starts_with("v1,") && binary.len() > 10, "{binary}");
    }
}
