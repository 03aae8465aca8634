//! Refresh tokens: opaque to clients, `base64url(session id ‖ generation ‖ HMAC-SHA256)`.
//!
//! The server stores no token at all, only each session's current generation: a token is
//! recomputed from the key, and the successor of a generation is always the same string (a
//! retried refresh gets the same answer). A leaked database yields no usable token only
//! while the key is not in it in the clear: configured, or sealed under `KEY_ENCRYPTION_KEY`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"authd refresh token v1";
const PAYLOAD_LEN: usize = 16 + 8;
const TOKEN_LEN: usize = PAYLOAD_LEN + 32;

/// What a genuine refresh token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshClaim {
    pub session_id: Uuid,
    pub generation: i64,
}

#[derive(Clone)]
pub struct RefreshTokens {
    key: HmacSha256,
}

impl RefreshTokens {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        let key = HmacSha256::new_from_slice(key).map_err(|e| anyhow::anyhow!("refresh token key: {e}"))?;
        Ok(Self { key })
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    pub fn encode(&self, claim: RefreshClaim) -> String {
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.extend_from_slice(claim.session_id.as_bytes());
        token.extend_from_slice(&claim.generation.to_be_bytes());
        let tag = self.mac(&token).finalize().into_bytes();
        token.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The claim of a token this server made; `None` for anything else, compared in
    /// constant time.
    pub fn decode(&self, token: &str) -> Option<RefreshClaim> {
        if token.len() > 128 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != TOKEN_LEN {
            return None;
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        self.mac(payload).verify_slice(tag).ok()?;
        let (session_id, generation) = payload.split_at(16);
        Some(RefreshClaim {
            session_id: Uuid::from_slice(session_id).ok()?,
            generation: i64::from_be_bytes(generation.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(key: &[u8]) -> RefreshTokens {
        RefreshTokens::new(key).unwrap()
    }

    #[test]
    fn a_token_round_trips_and_is_deterministic() {
        let t = tokens(b"k1k1k1k1k1k1k1k1");
        let claim = RefreshClaim { session_id: Uuid::new_v4(), generation: 7 };
        let token = t.encode(claim);
        assert_eq!(t.decode(&token), Some(claim));
        assert_eq!(token, t.encode(claim));
        assert_ne!(token, t.encode(RefreshClaim { generation: 8, ..claim }));
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let t = tokens(b"k1k1k1k1k1k1k1k1");
        let claim = RefreshClaim { session_id: Uuid::new_v4(), generation: 1 };
        let token = t.encode(claim);
        assert_eq!(tokens(b"k2k2k2k2k2k2k2k2").decode(&token), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[20] ^= 1; // claim a different generation
        assert_eq!(t.decode(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        for junk in ["", "not a token", "eyJhbGciOiJIUzI1NiJ9.e30.sig", &token[..token.len() - 1], &"A".repeat(500)] {
            assert_eq!(t.decode(junk), None, "{junk}");
        }
    }

    proptest::proptest! {
        /// Refresh token parsing, fuzzed: arbitrary text decodes to nothing, never a
        /// panic. Run longer with `PROPTEST_CASES=100000 cargo test --lib fuzz`.
        #[test]
        fn fuzz_no_token_makes_decoding_panic(text in proptest::prelude::any::<String>(), generation in proptest::prelude::any::<i64>()) {
            let t = tokens(b"k1k1k1k1k1k1k1k1");
            assert_eq!(t.decode(&text), None);
            let token = t.encode(RefreshClaim { session_id: Uuid::new_v4(), generation });
            for cut in [1, token.len() / 2, token.len().saturating_sub(1)] {
                let _ = t.decode(token.get(..cut).unwrap_or_default());
            }
        }
    }
}
