//! Cryptography: password hashing, the two kinds of session token, and device tokens.

pub mod access;
pub mod devices;
pub mod keys;
pub mod passwords;
pub mod refresh;

/// 32 random bytes from the operating system's generator, for generated secrets.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes
}
