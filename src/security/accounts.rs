//! Accounts named without their address: a keyed digest of the email, for rate-limit keys
//! and security events. Keyed, so that no one holding the log or the database can test
//! guessed addresses against it, as they could against a bare hash.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct AccountDigests {
    key: Hmac<Sha256>,
}

impl AccountDigests {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        let key = Hmac::new_from_slice(key).map_err(|e| anyhow::anyhow!("account digest key: {e}"))?;
        Ok(Self { key })
    }

    /// 128 bits of HMAC-SHA256 over the lowercased email, in hex: one account, one digest.
    pub fn of(&self, email: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(b"authd account v1\0");
        mac.update(email.to_lowercase().as_bytes());
        mac.finalize().into_bytes().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_one_digest_whatever_the_case_and_another_key_another_digest() {
        let digests = AccountDigests::new(b"key one").unwrap();
        assert_eq!(digests.of("Ada@Example.com"), digests.of("ada@example.com"));
        assert_ne!(digests.of("ada@example.com"), digests.of("bob@example.com"));
        assert_ne!(AccountDigests::new(b"key two").unwrap().of("ada@example.com"), digests.of("ada@example.com"));
        assert_eq!(digests.of("ada@example.com").len(), 32);
    }
}
