//! Access tokens: short-lived JWTs (`typ: at+jwt`, `kid`) naming a user and a session.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use jsonwebtoken::{Header, Validation, jwk::Jwk};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::Key;
use crate::config::TokenSettings;

pub const TOKEN_TYPE: &str = "at+jwt";
/// Clock difference tolerated between this server and others checking its tokens.
pub const LEEWAY: Duration = Duration::from_secs(30);

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
    /// Whether the user's address was verified when the token was issued.
    #[serde(default)]
    pub email_verified: bool,
    /// The user's roles when the token was issued.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the session's user authenticated (RFC 8176): `pwd`, then `otp` or `hwk` for a
    /// second factor.
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the session last proved a second factor (OpenID Connect's `auth_time`), for a
    /// session that did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// What a user's access token says of the user and the session besides who they are.
#[derive(Debug, Clone, Copy)]
pub struct UserClaims<'a> {
    pub email_verified: bool,
    pub roles: &'a [String],
    /// Space-separated RFC 8176 values, as the session keeps them.
    pub amr: &'a str,
    pub auth_time: Option<i64>,
}

/// The claims of a service access token (client credentials grant): `sub` and
/// `client_id` name the client, `scope` its scopes, space-separated. No `sid`: it is
/// never taken for a user's token, nor the reverse (a user's has no `client_id`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// A service token whose signature, type, issuer, audience and times were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedService {
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// A token whose signature, type, issuer, audience and times were checked; whether its
/// session is still alive is for the caller to ask the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub user_id: i64,
    pub session_id: Uuid,
    pub expires_at: i64,
    /// The roles the token carries (as they were when it was issued).
    pub roles: Vec<String>,
    /// Its `amr` (RFC 8176).
    pub amr: Vec<String>,
    /// Its `auth_time`: when the session last proved a second factor.
    pub auth_time: Option<i64>,
}

/// The key that signs new tokens, and every key whose tokens are still accepted.
pub struct KeySet {
    signing: Key,
    verifying: HashMap<String, (Key, Validation)>,
}

#[derive(Clone)]
pub struct AccessTokens {
    keys: Arc<RwLock<Arc<KeySet>>>,
    lifetime: Duration,
    issuer: String,
    audience: String,
}

impl AccessTokens {
    pub fn new(settings: &TokenSettings, signing: Key, retired: Vec<Key>) -> anyhow::Result<Self> {
        let tokens = Self {
            keys: Arc::new(RwLock::new(Arc::new(KeySet { signing: signing.clone(), verifying: HashMap::new() }))),
            lifetime: settings.access_lifetime,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        };
        tokens.set_keys(signing, retired)?;
        Ok(tokens)
    }

    /// Swaps in a new key set: `signing` signs from now on; it and `retired` verify.
    pub fn set_keys(&self, signing: Key, retired: Vec<Key>) -> anyhow::Result<()> {
        anyhow::ensure!(signing.encoding.is_some(), "the signing key {} has no private part", signing.kid);
        let verifying = std::iter::once(signing.clone())
            .chain(retired)
            .map(|key| {
                let validation = self.validation(&key);
                (key.kid.clone(), (key, validation))
            })
            .collect();
        let set = Arc::new(KeySet { signing, verifying });
        *self.keys.write().map_err(|_| anyhow::anyhow!("key set lock poisoned"))? = set;
        Ok(())
    }

    fn validation(&self, key: &Key) -> Validation {
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.required_spec_claims =
            ["exp", "nbf", "iat", "sub", "iss", "aud"].map(String::from).into_iter().collect::<HashSet<_>>();
        validation
    }

    fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn signing_kid(&self) -> String {
        self.keys().signing.kid.clone()
    }

    /// The `kid`s of the published keys whose tokens are accepted, in order.
    pub fn published_kids(&self) -> Vec<String> {
        self.jwks().into_iter().filter_map(|jwk| jwk.common.key_id).collect()
    }

    /// The public keys of the current set, for JWKS; HMAC secrets are never among them.
    pub fn jwks(&self) -> Vec<Jwk> {
        let keys = self.keys();
        let mut jwks: Vec<Jwk> = keys.verifying.values().filter_map(|(key, _)| key.public_jwk.clone()).collect();
        jwks.sort_by(|a, b| a.common.key_id.cmp(&b.common.key_id));
        jwks
    }

    pub fn issue(
        &self,
        user_id: i64,
        session_id: Uuid,
        now: i64,
        email_verified: bool,
        roles: &[String],
    ) -> anyhow::Result<String> {
        let claims = UserClaims { email_verified, roles, amr: "pwd", auth_time: None };
        self.issue_until(user_id, session_id, now, &claims, i64::MAX)
    }

    /// Like [`AccessTokens::issue`], expiring no later than `session_ends` (the session's
    /// own end): a token never outlives its session, so a check that finds no revocation
    /// of the session needs no look at its row.
    pub fn issue_until(
        &self,
        user_id: i64,
        session_id: Uuid,
        now: i64,
        user: &UserClaims<'_>,
        session_ends: i64,
    ) -> anyhow::Result<String> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            sid: session_id,
            iat: now,
            nbf: now,
            exp: (now + self.lifetime.as_secs() as i64).min(session_ends),
            jti: Uuid::new_v4(),
            email_verified: user.email_verified,
            roles: user.roles.to_vec(),
            amr: user.amr.split_whitespace().map(str::to_owned).collect(),
            auth_time: user.auth_time,
        };
        self.sign(&claims)
    }

    /// A service access token for `client_id` with `scopes`, valid for `lifetime`.
    pub fn issue_service(
        &self,
        client_id: &str,
        scopes: &[String],
        now: i64,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        let claims = ServiceClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: client_id.to_owned(),
            client_id: client_id.to_owned(),
            scope: scopes.join(" "),
            iat: now,
            nbf: now,
            exp: now + lifetime.as_secs() as i64,
            jti: Uuid::new_v4(),
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let keys = self.keys();
        let mut header = Header::new(keys.signing.algorithm);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(keys.signing.kid.clone());
        let encoding = keys.signing.encoding.as_ref().context("signing key without a private part")?;
        Ok(jsonwebtoken::encode(&header, claims, encoding)?)
    }

    /// The claims of a token signed by one of our keys with that key's algorithm, of our
    /// type, issuer and audience, within its times.
    fn decode<C: serde::de::DeserializeOwned>(&self, token: &str) -> Option<C> {
        if token.len() > 4096 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return None;
        }
        let keys = self.keys();
        let (key, validation) = keys.verifying.get(header.kid.as_deref()?)?;
        jsonwebtoken::decode::<C>(token, &key.decoding, validation).ok().map(|data| data.claims)
    }

    /// `None` for anything but an unexpired service token of ours.
    pub fn verify_service(&self, token: &str) -> Option<VerifiedService> {
        let claims = self.decode::<ServiceClaims>(token)?;
        (claims.sub == claims.client_id).then(|| VerifiedService {
            client_id: claims.client_id,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }

    /// `None` for anything but an unexpired access token signed by one of our keys, with
    /// that key's algorithm.
    pub fn verify(&self, token: &str) -> Option<VerifiedAccess> {
        let claims = self.decode::<AccessClaims>(token)?;
        Some(VerifiedAccess {
            user_id: claims.sub.parse().ok()?,
            session_id: claims.sid,
            expires_at: claims.exp,
            roles: claims.roles,
            amr: claims.amr,
            auth_time: claims.auth_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{Algorithm, EncodingKey};

    use super::*;
    use crate::{config::Settings, security::keys::generate_private_pem};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hmac_tokens(secret: &[u8]) -> AccessTokens {
        let settings = Settings::with_database("postgres://x").tokens;
        AccessTokens::new(&settings, Key::hmac(Algorithm::HS256, secret).unwrap(), vec![]).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn forge(header: &Header, token: &str, key: &EncodingKey) -> String {
        let claims = token.split('.').nth(1).unwrap();
        let claims: AccessClaims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        jsonwebtoken::encode(header, &claims, key).unwrap()
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims_and_header() {
        let t = hmac_tokens(SECRET);
        let sid = Uuid::new_v4();
        let token = t.issue(42, sid, now(), false, &[]).unwrap();
        let verified = t.verify(&token).unwrap();
        assert_eq!((verified.user_id, verified.session_id), (42, sid));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.unwrap(), t.signing_kid());
        assert!(t.jwks().is_empty(), "an HMAC secret is never published");
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let t = hmac_tokens(SECRET);
        let stale = now() - 15 * 60 - LEEWAY.as_secs() as i64 - 1;
        assert_eq!(t.verify(&t.issue(1, Uuid::new_v4(), stale, false, &[]).unwrap()), None);
        let other = hmac_tokens(b"another-secret-another-secret-xx");
        assert_eq!(t.verify(&other.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap()), None);
        for junk in ["", "a.b.c", "not a jwt", &"x".repeat(5000)] {
            assert_eq!(t.verify(junk), None);
        }
    }

    #[test]
    fn a_token_from_the_future_is_refused() {
        let t = hmac_tokens(SECRET);
        let later = now() + 10 * 60;
        assert_eq!(t.verify(&t.issue(1, Uuid::new_v4(), later, false, &[]).unwrap()), None);
    }

    #[test]
    fn alg_none_and_wrong_typ_are_refused() {
        let t = hmac_tokens(SECRET);
        let token = t.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap();
        let claims = token.split('.').nth(1).unwrap();
        let kid = t.signing_kid();
        let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#));
        assert_eq!(t.verify(&format!("{none_header}.{claims}.")), None);

        // Same key and claims, typed as a plain JWT: not an access token.
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.clone());
        assert_eq!(t.verify(&forge(&header, &token, &EncodingKey::from_secret(SECRET).unwrap())), None);
        // Typed right, but another HMAC algorithm than the key's.
        let mut header = Header::new(Algorithm::HS512);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(kid);
        assert_eq!(t.verify(&forge(&header, &token, &EncodingKey::from_secret(SECRET).unwrap())), None);
    }

    #[test]
    fn an_hmac_token_keyed_with_our_public_key_is_refused() {
        let settings = Settings::with_database("postgres://x").tokens;
        let pem = generate_private_pem(Algorithm::RS256).unwrap();
        let key = Key::from_private_pem(Algorithm::RS256, &pem).unwrap();
        let t = AccessTokens::new(&settings, key.clone(), vec![]).unwrap();
        let token = t.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap();
        assert!(t.verify(&token).is_some());

        // The classic confusion: HS256 over the public key's bytes, with our kid.
        let public = serde_json::to_vec(key.public_jwk.as_ref().unwrap()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(key.kid.clone());
        assert_eq!(t.verify(&forge(&header, &token, &EncodingKey::from_secret(&public).unwrap())), None);
    }

    #[test]
    fn retired_keys_still_verify_but_no_longer_sign() {
        let settings = Settings::with_database("postgres://x").tokens;
        let old = Key::from_private_pem(Algorithm::ES256, &generate_private_pem(Algorithm::ES256).unwrap()).unwrap();
        let new = Key::from_private_pem(Algorithm::ES256, &generate_private_pem(Algorithm::ES256).unwrap()).unwrap();
        let t = AccessTokens::new(&settings, old.clone(), vec![]).unwrap();
        let before = t.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap();
        t.set_keys(new.clone(), vec![old.clone()]).unwrap();
        let after = t.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap();
        assert!(t.verify(&before).is_some() && t.verify(&after).is_some());
        assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(), new.kid);
        assert_eq!(t.jwks().len(), 2);
        t.set_keys(new, vec![]).unwrap();
        assert!(t.verify(&before).is_none(), "a key dropped from the set verifies nothing");
    }

    proptest::proptest! {
        /// Token parsing, fuzzed: arbitrary text and mangled real tokens verify as
        /// nothing, never panic. Run longer with `PROPTEST_CASES=100000 cargo test --lib fuzz`.
        #[test]
        fn fuzz_no_token_makes_verification_panic(text in proptest::prelude::any::<String>(), cut in 0..400usize, flip in 0..400usize) {
            let t = hmac_tokens(SECRET);
            assert!(t.verify(&text).is_none());
            let _ = crate::core::bearer_token(&text);
            let mut token = t.issue(1, Uuid::new_v4(), now(), false, &[]).unwrap().into_bytes();
            token.truncate(cut.max(1));
            let at = flip % token.len();
            if let Some(b) = token.get_mut(at) {
                *b = b.wrapping_add(1);
            }
            let _ = t.verify(&String::from_utf8_lossy(&token));
        }
    }
}
