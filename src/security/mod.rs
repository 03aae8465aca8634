//! Cryptography: password hashing and the two kinds of token.

pub mod access;
pub mod keys;
pub mod passwords;
pub mod refresh;

/// 32 random bytes from the operating system's generator, for generated secrets.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes
}
