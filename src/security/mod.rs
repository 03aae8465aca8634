//! Cryptography: password hashing, the two kinds of session token, device tokens, keyed
//! digests of accounts, secrets sealed at rest, and passkeys (WebAuthn).

pub mod access;
pub mod accounts;
pub mod client_secrets;
pub mod devices;
pub mod factors;
pub mod keys;
pub mod mail_tokens;
pub mod passwords;
pub mod refresh;
pub mod sealing;
pub mod webauthn;

/// Bytes of a generated HMAC key: as long as SHA-512's output, the longest hash authd
/// signs with (RFC 7518 §3.2 asks for at least the hash's output).
pub const GENERATED_KEY_BYTES: usize = 64;

/// A new key from the operating system's generator, for generated secrets.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; GENERATED_KEY_BYTES];
    rand::fill(&mut bytes[..]);
    bytes
}
