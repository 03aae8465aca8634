//! Device tokens: 32 random bytes, base64url, given to a device at each login and shown at
//! the next. The database keeps only an HMAC-SHA256 of each under a key of its own, so a
//! leaked database names no device that could be presented.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"authd device token v1";
const TOKEN_BYTES: usize = 32;

/// What is kept of a device token: its keyed hash.
pub type DeviceHash = [u8; 32];

#[derive(Clone)]
pub struct DeviceTokens {
    key: HmacSha256,
}

impl DeviceTokens {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        let key = HmacSha256::new_from_slice(key).map_err(|e| anyhow::anyhow!("device token key: {e}"))?;
        Ok(Self { key })
    }

    /// A new token, and the hash under which it is remembered.
    pub fn issue(&self) -> (String, DeviceHash) {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::fill(&mut bytes[..]);
        (URL_SAFE_NO_PAD.encode(bytes), self.hash(&bytes))
    }

    /// The hash of a presented token; `None` for anything that cannot be one of ours.
    pub fn hash_of(&self, token: &str) -> Option<DeviceHash> {
        if token.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| self.hash(&bytes))
    }

    fn hash(&self, token: &[u8]) -> DeviceHash {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        mac.update(token);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hashes_to_what_it_was_issued_with_under_its_key_only() {
        let devices = DeviceTokens::new(b"k1k1k1k1k1k1k1k1").unwrap();
        let (token, hash) = devices.issue();
        assert_eq!(token.len(), 43);
        assert_eq!(devices.hash_of(&token), Some(hash));
        assert_ne!(DeviceTokens::new(b"k2k2k2k2k2k2k2k2").unwrap().hash_of(&token), Some(hash));
        assert_ne!(devices.issue().0, token);
        for junk in ["", "not a token", &token[..42], &"A".repeat(500)] {
            assert_eq!(devices.hash_of(junk), None, "{junk}");
        }
    }
}
