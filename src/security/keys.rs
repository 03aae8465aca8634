//! Signing keys for access tokens. Each key carries its own algorithm, so the algorithm
//! a token is checked with comes from our key, never from the token (RFC 8725).

use anyhow::Context;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey,
    jwk::{Jwk, PublicKeyUse, ThumbprintHash},
};
use sha2::{Digest, Sha256};

/// One key: what signs (if we hold the private part) and what verifies.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub algorithm: Algorithm,
    pub(super) encoding: Option<EncodingKey>,
    pub(super) decoding: DecodingKey,
    /// The public half, for JWKS; `None` for an HMAC secret, which is never published.
    pub public_jwk: Option<Jwk>,
}

pub fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Key {
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> anyhow::Result<Self> {
        // The key id names the key without revealing it: a short hash of it.
        let digest = Sha256::digest(secret);
        let kid = format!("hs-{}", digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>());
        Ok(Self {
            kid,
            algorithm,
            encoding: Some(EncodingKey::from_secret(secret)?),
            decoding: DecodingKey::from_secret(secret)?,
            public_jwk: None,
        })
    }

    /// A private key in PEM (PKCS#8, or PKCS#1 for RSA); its id is the RFC 7638
    /// thumbprint of its public half.
    pub fn from_private_pem(algorithm: Algorithm, pem: &str) -> anyhow::Result<Self> {
        let encoding = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            other => anyhow::bail!("{other:?} keys do not come from PEM"),
        }
        .with_context(|| format!("not a {algorithm:?} private key"))?;
        let mut public = match algorithm {
            // jsonwebtoken derives Ed25519 public keys only from the shortest PKCS#8 form.
            Algorithm::EdDSA => ed25519_jwk(pem)?,
            _ => Jwk::from_encoding_key(&encoding, algorithm).context("deriving the public key")?,
        };
        let mut key = Self::from_public_jwk(algorithm, &mut public)?;
        key.encoding = Some(encoding);
        Ok(key)
    }

    /// A public key only: verifies tokens a retired or foreign key signed.
    pub fn from_public_jwk(algorithm: Algorithm, jwk: &mut Jwk) -> anyhow::Result<Self> {
        let kid = thumbprint(jwk)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(algorithm.into());
        let decoding = DecodingKey::from_jwk(jwk).context("a public key from its JWK")?;
        Ok(Self { kid, algorithm, encoding: None, decoding, public_jwk: Some(jwk.clone()) })
    }
}

fn ed25519_jwk(pem: &str) -> anyhow::Result<Jwk> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, OctetKeyPairParameters, OctetKeyPairType};
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).context("not an Ed25519 private key")?;
    Ok(Jwk {
        common: Default::default(),
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        }),
    })
}

/// RFC 7638 for RSA and EC keys; for Ed25519 (which jsonwebtoken does not cover) the same
/// construction over the members RFC 8037 names.
fn thumbprint(jwk: &Jwk) -> anyhow::Result<String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::jwk::AlgorithmParameters;
    if let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm {
        let members = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, okp.x);
        return Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes())));
    }
    Ok(jwk.thumbprint(ThumbprintHash::SHA256)?)
}

/// A new private key for `algorithm`, as PKCS#8 PEM.
pub fn generate_private_pem(algorithm: Algorithm) -> anyhow::Result<String> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
    let pem = match algorithm {
        Algorithm::RS256 => rsa::PrivateKey::new(&mut rand::rng(), 2048)
            .context("generating an RSA key")?
            .to_pkcs8_pem(LineEnding::LF)?,
        Algorithm::ES256 => {
            let mut bytes = [0u8; 32];
            // Nearly every 32-byte string is a valid P-256 scalar; draw again if not.
            loop {
                rand::fill(&mut bytes);
                if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
                    break key.to_pkcs8_pem(LineEnding::LF)?;
                }
            }
        }
        Algorithm::EdDSA => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            ed25519_dalek::SigningKey::from_bytes(&bytes).to_pkcs8_pem(LineEnding::LF)?
        }
        other => anyhow::bail!("no key generation for {other:?}"),
    };
    Ok(pem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_with_a_thumbprint_kid_and_a_public_jwk() {
        for algorithm in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let pem = generate_private_pem(algorithm).unwrap();
            let key = Key::from_private_pem(algorithm, &pem).unwrap();
            assert_eq!(key.kid.len(), 43, "{algorithm:?}: base64url SHA-256");
            let jwk = serde_json::to_value(key.public_jwk.as_ref().unwrap()).unwrap();
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["use"], "sig");
            assert!(jwk.get("d").is_none(), "no private part in {jwk}");
            // The same key loads to the same id.
            assert_eq!(Key::from_private_pem(algorithm, &pem).unwrap().kid, key.kid);
        }
    }

    #[test]
    fn a_key_of_another_type_is_refused() {
        let pem = generate_private_pem(Algorithm::EdDSA).unwrap();
        assert!(Key::from_private_pem(Algorithm::ES256, &pem).is_err());
        assert!(Key::from_private_pem(Algorithm::RS256, "not a pem").is_err());
    }

    #[test]
    fn hmac_keys_are_never_published() {
        let key = Key::hmac(Algorithm::HS256, b"0123456789abcdef").unwrap();
        assert!(key.public_jwk.is_none());
        assert!(key.kid.starts_with("hs-"));
    }
}
