//! Service client credentials: an id (`svc_` and 32 hex digits) and a secret of 32 random
//! bytes (base64url), shown once. The store keeps SHA-256 of the secret: 256 random bits
//! leave nothing to guess, so a slow hash would only cost every call.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

const SECRET_BYTES: usize = 32;

/// A new client id.
pub fn new_client_id() -> String {
    format!("svc_{}", uuid::Uuid::new_v4().simple())
}

/// A new secret, and its hash.
pub fn new_secret() -> (String, Vec<u8>) {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::fill(&mut bytes[..]);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&secret);
    (secret, hash)
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` is the one `stored` is the hash of, in time independent of where they differ.
pub fn matches(secret: &str, stored: &[u8]) -> bool {
    let presented = hash(secret);
    presented.len() == stored.len() && presented.iter().zip(stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The `Authorization: Basic` value a client sends (its id and secret need no escaping).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{client_secret}")))
}

/// The `(client_id, client_secret)` of an `Authorization: Basic` value (RFC 6749 §2.3.1:
/// each form-urlencoded, then joined by `:` and base64-encoded).
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |part: &str| {
        url::form_urlencoded::parse(format!("x={part}").as_bytes()).next().map(|(_, value)| value.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_its_hash_and_nothing_else() {
        let (secret, stored) = new_secret();
        assert_eq!(secret.len(), 43);
        assert!(matches(&secret, &stored));
        assert!(!matches(&format!("{secret}x"), &stored));
        assert!(!matches(&secret, &stored[1..]));
        assert_ne!(new_secret().0, secret);
        assert!(new_client_id().starts_with("svc_"));
    }

    #[test]
    fn basic_credentials_are_decoded_and_unescaped() {
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("svc_1:a%2Bb:c"));
        assert_eq!(basic_credentials(&header), Some(("svc_1".into(), "a+b:c".into())));
        assert_eq!(basic_credentials(&basic_authorization("svc_2", "s")), Some(("svc_2".into(), "s".into())));
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        let no_colon = format!("basic {}", base64::engine::general_purpose::STANDARD.encode("svc_1"));
        assert_eq!(basic_credentials(&no_colon), None);
    }
}
