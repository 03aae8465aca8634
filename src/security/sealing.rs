//! Secrets at rest: values the database keeps (generated keys, private keys, and whatever
//! secret comes next) sealed under a key-encryption key that the database never sees, so
//! that a copy of the database alone opens nothing.
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value (random nonces of that size
//! never need a counter), and the value's name (its table and row) as associated data, so
//! that a sealed value copied into another row does not open there. A sealed value is
//! ASCII text, `authd-sealed:v1:` then the base64url of nonce ‖ ciphertext, which fits
//! text and binary columns alike and tells itself apart from the clear values of before.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};

const PREFIX: &[u8] = b"authd-sealed:v1:";
const NONCE_BYTES: usize = 24;

/// Seals and opens stored secrets; without a key it passes them through as they are.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("it is encrypted, and no key-encryption key is configured")]
    NoKey,
    #[error("it does not open with the configured key-encryption key (a wrong key, or a damaged value)")]
    WrongKey,
    /// A value in the clear under a sealer with a key: only the start-up that first seals
    /// a database takes those (`core::keys::seal_stored`); later, one was planted there.
    #[error(
        "it is stored in the clear though KEY_ENCRYPTION_KEY is set, and the database's keys were sealed \
         before: refused, as it may have been planted by someone who can write the database"
    )]
    Unsealed,
}

impl Sealer {
    /// A sealer under `key` (32 bytes), or one that keeps values in the clear.
    pub fn new(key: Option<&[u8]>) -> anyhow::Result<Self> {
        let cipher = key
            .map(XChaCha20Poly1305::new_from_slice)
            .transpose()
            .map_err(|_| anyhow::anyhow!("a key-encryption key is 32 bytes"))?;
        Ok(Self { cipher })
    }

    pub fn has_key(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn is_sealed(stored: &[u8]) -> bool {
        stored.starts_with(PREFIX)
    }

    /// `value` sealed for the row `name`; as it is when there is no key.
    pub fn seal(&self, name: &str, value: &[u8]) -> anyhow::Result<Vec<u8>> {
        let Some(cipher) = &self.cipher else { return Ok(value.to_vec()) };
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: value, aad: name.as_bytes() })
            .map_err(|_| anyhow::anyhow!("sealing {name}"))?;
        let mut encoded = PREFIX.to_vec();
        encoded.extend(URL_SAFE_NO_PAD.encode([&nonce[..], &sealed].concat()).into_bytes());
        Ok(encoded)
    }

    /// The value of the row `name` as stored: opened if sealed; with no key, as it is if
    /// not; with a key, a value in the clear is refused.
    pub fn open(&self, name: &str, stored: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return match self.cipher {
                Some(_) => Err(SealError::Unsealed),
                None => Ok(stored.to_vec()),
            };
        };
        let cipher = self.cipher.as_ref().ok_or(SealError::NoKey)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| SealError::WrongKey)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SealError::WrongKey);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::WrongKey)?;
        cipher.decrypt(&nonce, Payload { msg: sealed, aad: name.as_bytes() }).map_err(|_| SealError::WrongKey)
    }

    /// [`Sealer::seal`] for text, such as a PEM.
    pub fn seal_text(&self, name: &str, value: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.seal(name, value.as_bytes())?)?)
    }

    /// [`Sealer::open`] for text.
    pub fn open_text(&self, name: &str, stored: &str) -> Result<String, SealError> {
        String::from_utf8(self.open(name, stored.as_bytes())?).map_err(|_| SealError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(Some(&[byte; 32])).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_name_only() {
        let sealed = sealer(1).seal("secrets/a", b"the secret").unwrap();
        assert!(Sealer::is_sealed(&sealed));
        assert!(!String::from_utf8_lossy(&sealed).contains("the secret"));
        assert_eq!(sealer(1).open("secrets/a", &sealed).unwrap(), b"the secret");
        assert!(matches!(sealer(2).open("secrets/a", &sealed), Err(SealError::WrongKey)));
        assert!(matches!(sealer(1).open("secrets/b", &sealed), Err(SealError::WrongKey)));
        assert!(matches!(Sealer::new(None).unwrap().open("secrets/a", &sealed), Err(SealError::NoKey)));
    }

    #[test]
    fn each_seal_has_its_own_nonce() {
        let s = sealer(1);
        assert_ne!(s.seal("x", b"same").unwrap(), s.seal("x", b"same").unwrap());
    }

    #[test]
    fn clear_values_pass_through_without_a_key_only() {
        let none = Sealer::new(None).unwrap();
        assert_eq!(none.seal("x", b"clear").unwrap(), b"clear");
        assert_eq!(none.open("x", b"clear").unwrap(), b"clear");
        assert!(matches!(sealer(1).open("x", b"clear"), Err(SealError::Unsealed)));
        let pem = sealer(1).seal_text("signing_keys/k", "-----BEGIN PRIVATE KEY-----").unwrap();
        assert_eq!(sealer(1).open_text("signing_keys/k", &pem).unwrap(), "-----BEGIN PRIVATE KEY-----");
    }

    #[test]
    fn damaged_values_do_not_open() {
        let mut sealed = sealer(1).seal("x", b"value").unwrap();
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(sealer(1).open("x", &sealed), Err(SealError::WrongKey)));
        assert!(matches!(sealer(1).open("x", PREFIX), Err(SealError::WrongKey)));
        assert!(Sealer::new(Some(&[0; 16])).is_err());
    }
}
