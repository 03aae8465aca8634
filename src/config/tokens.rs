//! Access and refresh tokens: algorithm, keys, lifetimes, and the session cache.

use std::{path::PathBuf, time::Duration};

use base64::Engine;
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::{ConfigError, Env, bad, flag};

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub algorithm: Algorithm,
    /// HMAC key for access tokens; generated and kept in the database when `None`.
    pub secret_key: Option<SecretString>,
    /// HMAC key for refresh tokens; generated and kept in the database when `None`.
    pub refresh_secret: Option<SecretString>,
    /// PEM private key for RS256, ES256 or EdDSA; generated and kept in the database
    /// when `None`.
    pub private_key_file: Option<PathBuf>,
    /// How often each replica re-reads the signing keys, to follow a rotation.
    pub key_reload_interval: Duration,
    /// Zero turns in-memory token checks off (every check asks the database); any other
    /// value turns them on (`SESSION_CACHE_SECONDS`, whose length no longer matters: a
    /// session is live in memory until a revocation says otherwise).
    pub session_cache_ttl: Duration,
    /// Users whose profile is kept in memory for token checks (`USER_CACHE_SIZE`).
    pub user_cache_size: usize,
    pub access_lifetime: Duration,
    pub refresh_lifetime: Duration,
    pub refresh_idle_timeout: Duration,
    pub refresh_reuse_grace: Duration,
    /// Live sessions a user may have; a login past it ends the one unused longest.
    pub max_sessions_per_user: u32,
    /// How long an ended session (revoked, expired or idle) is kept before it is deleted.
    pub session_retention: Duration,
    /// 32 bytes that seal the secrets and private keys kept in the database; `None`
    /// keeps them in the clear.
    pub key_encryption_key: Option<SecretSlice<u8>>,
    pub issuer: String,
    pub audience: String,
    /// ValidateToken without a service client (`OPEN_INTROSPECTION`), the behaviour of
    /// deployments before service clients; warned about at start-up.
    pub open_introspection: bool,
    /// Lifetime of a service access token from `POST /oauth/token`.
    pub service_token_lifetime: Duration,
    /// How long a client's previous secret keeps working after a rotation, by default.
    pub client_secret_grace: Duration,
    /// Services that may follow the revocation feed with a key (`REVOCATIONS_SERVICE_KEYS`),
    /// until service clients exist; a client certificate (mTLS) needs none.
    pub service_keys: Vec<ServiceKey>,
}

/// A service's name and the SHA-256 of its key: the key itself is not kept.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub name: String,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Service keys shorter than this are refused: they are bearer secrets.
const SERVICE_KEY_MIN: usize = 32;

/// `REVOCATIONS_SERVICE_KEYS`: comma-separated `name:key` pairs.
fn service_keys(value: Option<SecretString>) -> Result<Vec<ServiceKey>, ConfigError> {
    use sha2::Digest;
    let var = "REVOCATIONS_SERVICE_KEYS";
    let Some(value) = value else { return Ok(Vec::new()) };
    let mut keys: Vec<ServiceKey> = Vec::new();
    for pair in value.expose_secret().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, key) =
            pair.split_once(':').ok_or_else(|| bad(var, "expected name:key pairs, separated by commas"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(bad(var, "a name is letters, digits, '-', '_' or '.'"));
        }
        if key.len() < SERVICE_KEY_MIN {
            return Err(bad(var, format!("the key of {name} is shorter than {SERVICE_KEY_MIN} bytes")));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(bad(var, format!("{name} is named twice")));
        }
        keys.push(ServiceKey { name: name.to_owned(), digest: sha2::Sha256::digest(key.as_bytes()).into() });
    }
    Ok(keys)
}

const DAY: u64 = 24 * 60 * 60;

impl TokenSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let algorithm = match env.token_creation_algorithm.take().as_deref().map(str::trim) {
            None => Algorithm::HS256,
            Some("HS256") => Algorithm::HS256,
            Some("HS384") => Algorithm::HS384,
            Some("HS512") => Algorithm::HS512,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(other) => {
                return Err(bad(
                    "TOKEN_CREATION_ALGORITHM",
                    format!("{other:?} is not supported (use HS256, HS384, HS512, RS256, ES256 or EdDSA)"),
                ));
            }
        };
        let symmetric = matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if symmetric && env.token_private_key_file.is_some() {
            return Err(bad("TOKEN_PRIVATE_KEY_FILE", "applies to RS256, ES256 and EdDSA, not to HMAC algorithms"));
        }
        let minutes = env.token_expiry_limit.unwrap_or(15);
        if !(1..=24 * 60).contains(&minutes) {
            return Err(bad("TOKEN_EXPIRY_LIMIT", "must be 1 to 1440 minutes"));
        }
        for (var, secret) in [("SECRET_KEY", &env.secret_key), ("REFRESH_TOKEN_SECRET", &env.refresh_token_secret)] {
            if secret.as_ref().is_some_and(|s| s.expose_secret().len() < 16) {
                return Err(bad(var, "must be at least 16 bytes"));
            }
        }
        let days = |var, value: Option<u64>, default| match value.unwrap_or(default) {
            0 => Err(bad(var, "must be at least 1 day")),
            d => Ok(Duration::from_secs(d * DAY)),
        };
        Ok(Self {
            algorithm,
            secret_key: env.secret_key.take(),
            refresh_secret: env.refresh_token_secret.take(),
            private_key_file: env.token_private_key_file.take(),
            key_reload_interval: Duration::from_secs(env.signing_key_reload_seconds.unwrap_or(60).max(1)),
            session_cache_ttl: Duration::from_secs(env.session_cache_seconds.unwrap_or(5)),
            user_cache_size: env.user_cache_size.unwrap_or(100_000),
            access_lifetime: Duration::from_secs(minutes * 60),
            refresh_lifetime: days("REFRESH_TOKEN_LIFETIME_DAYS", env.refresh_token_lifetime_days, 30)?,
            refresh_idle_timeout: days("REFRESH_TOKEN_IDLE_DAYS", env.refresh_token_idle_days, 7)?,
            refresh_reuse_grace: Duration::from_secs(env.refresh_reuse_grace_seconds.unwrap_or(10)),
            max_sessions_per_user: match env.max_sessions_per_user.unwrap_or(100) {
                0 => return Err(bad("MAX_SESSIONS_PER_USER", "must be at least 1")),
                n => n,
            },
            session_retention: match env.session_retention_hours.unwrap_or(24) {
                0 => return Err(bad("SESSION_RETENTION_HOURS", "must be at least 1 hour")),
                h => Duration::from_secs(h * 60 * 60),
            },
            key_encryption_key: key_encryption_key(env)?,
            issuer: env.token_issuer.take().unwrap_or_else(|| "authd".into()),
            audience: env.token_audience.take().unwrap_or_else(|| "authd".into()),
            open_introspection: flag("OPEN_INTROSPECTION", env.open_introspection.as_deref(), false)?,
            service_token_lifetime: match env.service_token_lifetime_seconds.unwrap_or(300) {
                s @ 1..=3600 => Duration::from_secs(s),
                _ => return Err(bad("SERVICE_TOKEN_LIFETIME_SECONDS", "must be 1 to 3600 seconds")),
            },
            client_secret_grace: match env.client_secret_grace_seconds.unwrap_or(DAY) {
                s @ 0..=2_592_000 => Duration::from_secs(s),
                _ => return Err(bad("CLIENT_SECRET_GRACE_SECONDS", "must be at most 2592000 (30 days)")),
            },
            service_keys: service_keys(env.revocations_service_keys.take())?,
        })
    }
}

/// `KEY_ENCRYPTION_KEY`, or the contents of `KEY_ENCRYPTION_KEY_FILE`: base64 of 32 bytes.
fn key_encryption_key(env: &mut Env) -> Result<Option<SecretSlice<u8>>, ConfigError> {
    let (var, text) = match (env.key_encryption_key.take(), env.key_encryption_key_file.take()) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(bad("KEY_ENCRYPTION_KEY", "set either it or KEY_ENCRYPTION_KEY_FILE, not both"));
        }
        (Some(key), None) => ("KEY_ENCRYPTION_KEY", key),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad("KEY_ENCRYPTION_KEY_FILE", format!("reading {}: {e}", path.display())))?;
            ("KEY_ENCRYPTION_KEY_FILE", SecretString::from(text))
        }
    };
    let text = text.expose_secret().trim();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let key = engines.iter().find_map(|engine| engine.decode(text).ok()).map(SecretSlice::from);
    match key {
        Some(key) if key.expose_secret().len() == 32 => Ok(Some(key)),
        _ => Err(bad(var, "must be the base64 of 32 random bytes (such as `openssl rand -base64 32`)")),
    }
}
