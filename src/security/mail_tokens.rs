//! Tokens sent by mail: 128 random bits, base64url, in a link; a verification mail also
//! carries a six-digit code to type. The database keeps only an HMAC-SHA256 of each
//! token, and of each code together with its user, under a key of its own: a leaked
//! database (or outbox) names no token that could be redeemed, and no code.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TOKEN_BYTES: usize = 16;

/// What is kept of a mail token: its keyed hash.
pub type MailTokenHash = [u8; 32];

#[derive(Clone)]
pub struct MailTokens {
    key: HmacSha256,
}

impl MailTokens {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        let key = HmacSha256::new_from_slice(key).map_err(|e| anyhow::anyhow!("mail token key: {e}"))?;
        Ok(Self { key })
    }

    /// A new token, and the hash under which it is kept.
    pub fn issue(&self) -> (String, MailTokenHash) {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::fill(&mut bytes[..]);
        (URL_SAFE_NO_PAD.encode(bytes), self.hash(b"token", &bytes))
    }

    /// The hash of a presented token; `None` for anything that cannot be one of ours.
    pub fn hash_of(&self, token: &str) -> Option<MailTokenHash> {
        let token = token.trim();
        if token.len() != 22 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| self.hash(b"token", &bytes))
    }

    /// A new six-digit code.
    pub fn code(&self) -> String {
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes[..]);
        format!("{:06}", u64::from_le_bytes(bytes) % 1_000_000)
    }

    /// The keyed hash of `user_id`'s code, in hex; `None` for anything but six digits.
    pub fn code_hash(&self, user_id: i64, code: &str) -> Option<String> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let input = [&user_id.to_be_bytes()[..], code.as_bytes()].concat();
        Some(self.hash(b"code", &input).iter().map(|b| format!("{b:02x}")).collect())
    }

    fn hash(&self, kind: &[u8], bytes: &[u8]) -> MailTokenHash {
        let mut mac = self.key.clone();
        mac.update(b"authd mail ");
        mac.update(kind);
        mac.update(b" v1\0");
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hashes_to_what_was_kept_and_nothing_else_does() {
        let tokens = MailTokens::new(b"key").unwrap();
        let (token, hash) = tokens.issue();
        assert_eq!(token.len(), 22, "128 bits in base64url");
        assert_eq!(tokens.hash_of(&token), Some(hash));
        assert_eq!(tokens.hash_of(&format!(" {token}\n")), Some(hash));
        assert_ne!(MailTokens::new(b"other").unwrap().hash_of(&token), Some(hash));
        let mut tampered = token.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert_ne!(tokens.hash_of(std::str::from_utf8(&tampered).unwrap()), Some(hash));
        for junk in ["", "short", &"A".repeat(23), "!!!!!!!!!!!!!!!!!!!!!!"] {
            assert_eq!(tokens.hash_of(junk), None, "{junk}");
        }
    }

    #[test]
    fn codes_are_six_digits_and_hash_per_user() {
        let tokens = MailTokens::new(b"key").unwrap();
        let code = tokens.code();
        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        assert_eq!(tokens.code_hash(1, &code), tokens.code_hash(1, &format!(" {code} ")));
        assert_ne!(tokens.code_hash(1, &code), tokens.code_hash(2, &code));
        assert_eq!(tokens.code_hash(1, "12345"), None);
        assert_eq!(tokens.code_hash(1, "12345a"), None);
    }
}
