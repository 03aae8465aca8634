//! Access tokens: short-lived JWTs (`typ: at+jwt`) naming a user and a session.

use std::{collections::HashSet, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::TokenSettings;

pub const TOKEN_TYPE: &str = "at+jwt";
/// Clock difference tolerated between this server and others checking its tokens.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// A token whose signature, type, issuer, audience and times were checked; whether its
/// session is still alive is for the caller to ask the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub user_id: i64,
    pub session_id: Uuid,
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct AccessTokens {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
    issuer: String,
    audience: String,
}

impl AccessTokens {
    /// HMAC signing with `secret`, the algorithm pinned from configuration.
    pub fn new(settings: &TokenSettings, secret: &[u8]) -> anyhow::Result<Self> {
        let algorithm = settings.algorithm;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.required_spec_claims =
            ["exp", "nbf", "iat", "sub", "iss", "aud"].map(String::from).into_iter().collect::<HashSet<_>>();
        // The key id says which key signed, never the key: a short hash of it.
        let kid = format!("hs-{}", hex(&Sha256::digest(secret)[..8]));
        Ok(Self {
            algorithm,
            kid,
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            lifetime: settings.access_lifetime,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn issue(&self, user_id: i64, session_id: Uuid, now: i64) -> anyhow::Result<String> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            sid: session_id,
            iat: now,
            nbf: now,
            exp: now + self.lifetime.as_secs() as i64,
            jti: Uuid::new_v4(),
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }

    /// `None` for anything but an unexpired access token that this server signed.
    pub fn verify(&self, token: &str) -> Option<VerifiedAccess> {
        if token.len() > 4096 {
            return None;
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation).ok()?;
        if data.header.typ.as_deref() != Some(TOKEN_TYPE) || data.header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        Some(VerifiedAccess {
            user_id: data.claims.sub.parse().ok()?,
            session_id: data.claims.sid,
            expires_at: data.claims.exp,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;
    use crate::config::Settings;

    fn tokens(secret: &[u8]) -> AccessTokens {
        AccessTokens::new(&Settings::with_database("postgres://x").tokens, secret).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims_and_header() {
        let t = tokens(b"0123456789abcdef0123456789abcdef");
        let sid = Uuid::new_v4();
        let token = t.issue(42, sid, now()).unwrap();
        let verified = t.verify(&token).unwrap();
        assert_eq!((verified.user_id, verified.session_id), (42, sid));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert!(header.kid.unwrap().starts_with("hs-"));
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let t = tokens(b"0123456789abcdef0123456789abcdef");
        assert_eq!(t.verify(&t.issue(1, Uuid::new_v4(), now() - 16 * 60 - LEEWAY_SECONDS as i64).unwrap()), None);
        let other = tokens(b"another-secret-another-secret-xx");
        assert_eq!(t.verify(&other.issue(1, Uuid::new_v4(), now()).unwrap()), None);
        for junk in ["", "a.b.c", "not a jwt", &"x".repeat(5000)] {
            assert_eq!(t.verify(junk), None);
        }
    }

    #[test]
    fn alg_none_and_wrong_typ_are_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let t = tokens(secret);
        let token = t.issue(1, Uuid::new_v4(), now()).unwrap();
        let claims = token.split('.').nth(1).unwrap();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        assert_eq!(t.verify(&format!("{none_header}.{claims}.")), None);

        // Same key and claims, but typed as a plain JWT: not an access token.
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        let decoded: AccessClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        let plain = jsonwebtoken::encode(&header, &decoded, &EncodingKey::from_secret(secret).unwrap()).unwrap();
        assert_eq!(t.verify(&plain), None);
    }
}
