//! Which keys sign and verify access tokens: from configuration, or generated once and
//! kept in the store so that every replica and every restart uses the same ones.

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, jwk::Jwk};
use secrecy::ExposeSecret;

use crate::{
    config::TokenSettings,
    security::{
        access::LEEWAY,
        keys::{Key, generate_private_pem, is_hmac},
        random_secret,
    },
    store::{SigningKeyRecord, Store},
};

const ACCESS_SECRET: &str = "access_token_hmac";

/// The key that signs, and the retired keys whose tokens may still be live.
pub struct LoadedKeys {
    pub signing: Key,
    pub retired: Vec<Key>,
}

/// Loads the keys; at `start_up`, first records a key file's public half or generates a
/// key where there is none yet.
pub async fn load(store: &Store, settings: &TokenSettings, start_up: bool) -> anyhow::Result<LoadedKeys> {
    let algorithm = settings.algorithm;
    if is_hmac(algorithm) {
        let secret = match &settings.secret_key {
            Some(key) => key.expose_secret().as_bytes().to_vec(),
            None => {
                if start_up {
                    tracing::warn!("SECRET_KEY is not set: using a generated key kept in the database");
                }
                store.secret(ACCESS_SECRET, &random_secret()).await.context("loading the access token key")?
            }
        };
        return Ok(LoadedKeys { signing: Key::hmac(algorithm, &secret)?, retired: Vec::new() });
    }

    let now = Utc::now();
    let signing = match &settings.private_key_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("TOKEN_PRIVATE_KEY_FILE: reading {}", path.display()))?;
            let key = Key::from_private_pem(algorithm, &pem)
                .with_context(|| format!("TOKEN_PRIVATE_KEY_FILE: {}", path.display()))?;
            if start_up {
                store.insert_signing_key(&record(&key, None, now)?).await?;
                store.retire_signing_keys_except(&key.kid, now).await?;
            }
            key
        }
        None => match active_generated(store, algorithm, settings, now).await? {
            Some(key) => key,
            None if start_up => {
                let pem = generate_private_pem(algorithm)?;
                let key = Key::from_private_pem(algorithm, &pem)?;
                store.insert_signing_key(&record(&key, Some(pem), now)?).await?;
                tracing::info!(kid = key.kid, ?algorithm, "generated a signing key");
                // Replicas starting together may each have generated one: all settle on
                // the oldest and retire the rest.
                let key = active_generated(store, algorithm, settings, now)
                    .await?
                    .context("the signing key just stored is missing")?;
                store.retire_signing_keys_except(&key.kid, now).await?;
                key
            }
            None => anyhow::bail!("no active {algorithm:?} signing key in the database"),
        },
    };
    let retired = published(store, settings, now)
        .await?
        .into_iter()
        .filter(|r| r.kid != signing.kid)
        .map(|r| public_key(&r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(LoadedKeys { signing, retired })
}

/// Makes a new generated key the signing key and retires the others; they stay published
/// until their tokens have expired. Returns the new key's id.
pub async fn rotate(store: &Store, settings: &TokenSettings) -> anyhow::Result<String> {
    let algorithm = settings.algorithm;
    anyhow::ensure!(!is_hmac(algorithm), "HMAC keys come from SECRET_KEY: change it to rotate");
    anyhow::ensure!(settings.private_key_file.is_none(), "the key comes from TOKEN_PRIVATE_KEY_FILE: change the file");
    let now = Utc::now();
    let pem = generate_private_pem(algorithm)?;
    let key = Key::from_private_pem(algorithm, &pem)?;
    store.insert_signing_key(&record(&key, Some(pem), now)?).await?;
    store.retire_signing_keys_except(&key.kid, now).await?;
    Ok(key.kid)
}

/// Keys whose tokens may still be live: active, or retired less than a token's lifetime
/// ago (plus clock leeway and the time replicas take to notice a rotation).
async fn published(
    store: &Store,
    settings: &TokenSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<SigningKeyRecord>> {
    let window = settings.access_lifetime + LEEWAY + settings.key_reload_interval;
    Ok(store.signing_keys(now - window).await?)
}

async fn active_generated(
    store: &Store,
    algorithm: Algorithm,
    settings: &TokenSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Key>> {
    let name = algorithm_name(algorithm);
    published(store, settings, now)
        .await?
        .into_iter()
        .find(|r| r.retired_at.is_none() && r.algorithm == name)
        .and_then(|r| r.private_pem)
        .map(|pem| Key::from_private_pem(algorithm, &pem))
        .transpose()
}

fn public_key(record: &SigningKeyRecord) -> anyhow::Result<Key> {
    let algorithm: Algorithm = record.algorithm.parse().with_context(|| format!("key {} algorithm", record.kid))?;
    let mut jwk: Jwk = serde_json::from_str(&record.public_jwk).with_context(|| format!("key {} JWK", record.kid))?;
    Key::from_public_jwk(algorithm, &mut jwk)
}

fn record(key: &Key, private_pem: Option<String>, now: DateTime<Utc>) -> anyhow::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: key.kid.clone(),
        algorithm: algorithm_name(key.algorithm).into(),
        public_jwk: serde_json::to_string(key.public_jwk.as_ref().context("a public key")?)?,
        private_pem,
        created_at: now,
        retired_at: None,
    })
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "HMAC",
    }
}
