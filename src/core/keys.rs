//! Which keys sign and verify access tokens, and the other keys authd holds: from
//! configuration, or generated once and kept in the store so that every replica and every
//! restart uses the same ones. With a key-encryption key, what the store keeps is sealed.

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
        sealing::{SealError, Sealer},
    },
    store::{SigningKeyRecord, Store},
};

/// The names under which generated keys are kept.
const ACCESS_SECRET: &str = "access_token_hmac";
pub const REFRESH_SECRET: &str = "refresh_token_hmac";
pub const ACCOUNT_SECRET: &str = "account_digest_hmac";
pub const DEVICE_SECRET: &str = "device_token_hmac";
pub const MAIL_SECRET: &str = "mail_token_hmac";

/// The sealer of stored secrets, under the configured key-encryption key if any.
pub fn sealer(settings: &TokenSettings) -> anyhow::Result<Sealer> {
    Sealer::new(settings.key_encryption_key.as_ref().map(|key| key.expose_secret()))
}

/// The generated secret kept under `name`, made (and sealed) on first use.
pub async fn generated_secret(store: &Store, sealer: &Sealer, name: &str) -> anyhow::Result<Vec<u8>> {
    let row = secret_row(name);
    let candidate = sealer.seal(&row, &random_secret())?;
    let stored = store.secret(name, &candidate).await.with_context(|| format!("loading the generated key {name}"))?;
    sealer.open(&row, &stored).map_err(|e| unopened(&format!("the stored key {name}"), e))
}

/// At start-up: checks that every sealed stored secret and private key opens, so that a
/// wrong or missing key stops start-up here rather than failing calls later; and, the
/// first time a key-encryption key is set (no stored value is sealed yet), seals every
/// value in place. That is the one time a value in the clear is taken: once any value is
/// sealed, one in the clear stops start-up, as it may have been planted by someone who can
/// write the database (and [`Sealer::open`] refuses it while running). A row is replaced
/// only while it still holds what was read: replicas starting together do not undo each other.
pub async fn seal_stored(store: &Store, sealer: &Sealer) -> anyhow::Result<()> {
    let secrets = store.secrets().await.context("reading the stored keys")?;
    let pems = store.private_keys().await.context("reading the stored private keys")?;
    let values = secrets
        .iter()
        .map(|(name, value)| (format!("the stored key {name}"), secret_row(name), value.as_slice()))
        .chain(pems.iter().map(|(kid, pem)| (format!("the private key {kid}"), key_row(kid), pem.as_bytes())));
    let values = values.collect::<Vec<_>>();
    let first_sealing = !values.iter().any(|(_, _, value)| Sealer::is_sealed(value));
    for (what, row, value) in &values {
        if Sealer::is_sealed(value) || !first_sealing {
            sealer.open(row, value).map_err(|e| unopened(what, e))?;
        }
    }
    if !(sealer.has_key() && first_sealing) {
        return Ok(());
    }
    let mut sealed_now = 0;
    for (name, value) in &secrets {
        sealed_now += u32::from(store.replace_secret(name, value, &sealer.seal(&secret_row(name), value)?).await?);
    }
    for (kid, pem) in &pems {
        sealed_now += u32::from(store.replace_private_pem(kid, pem, &sealer.seal_text(&key_row(kid), pem)?).await?);
    }
    if sealed_now > 0 {
        tracing::info!(keys = sealed_now, "sealed the stored keys that were in the clear with KEY_ENCRYPTION_KEY");
    }
    // Second factors' secrets enrolled before the key was set: sealed with the keys.
    let mut factors_sealed = 0;
    for (factor_id, secret) in store.factor_secrets().await.context("reading the factors' secrets")? {
        if !Sealer::is_sealed(&secret) {
            let sealed = sealer.seal(&super::factors::secret_name(factor_id), &secret)?;
            factors_sealed += u32::from(store.replace_factor_secret(factor_id, &secret, &sealed).await?);
        }
    }
    if factors_sealed > 0 {
        tracing::info!(factors = factors_sealed, "sealed the second factors' secrets that were in the clear");
    }
    Ok(())
}

/// RFC 7518 §3.2: an HMAC key at least as long as its hash's output. A shorter one still
/// works (refusing it would stop deployments that run today), with a loud warning.
pub fn warn_if_short(what: &str, algorithm: &str, key: &[u8], needed: usize) {
    if key.len() < needed {
        tracing::warn!(
            "{what} is {} bytes, shorter than the {needed} bytes RFC 7518 §3.2 requires for {algorithm}: \
             an attacker with a token can guess a short key offline; set a random key of {needed} bytes or more",
            key.len()
        );
    }
}

fn secret_row(name: &str) -> String {
    format!("secrets/{name}")
}

fn key_row(kid: &str) -> String {
    format!("signing_keys/{kid}")
}

fn unopened(what: &str, error: SealError) -> anyhow::Error {
    if let SealError::Unsealed = error {
        return anyhow::anyhow!(
            "KEY_ENCRYPTION_KEY: {what} cannot be read: {error}. If it is yours, delete the row to have a new key \
             generated, or store it sealed"
        );
    }
    anyhow::anyhow!(
        "KEY_ENCRYPTION_KEY: {what} cannot be read: {error}. Set KEY_ENCRYPTION_KEY (or KEY_ENCRYPTION_KEY_FILE) \
         to the key it was sealed with"
    )
}

/// The key that signs, and the retired keys whose tokens may still be live.
pub struct LoadedKeys {
    pub signing: Key,
    pub retired: Vec<Key>,
}

/// Loads the keys; at `start_up`, first records a key file's public half or generates a
/// key where there is none yet.
pub async fn load(store: &Store, settings: &TokenSettings, start_up: bool) -> anyhow::Result<LoadedKeys> {
    let algorithm = settings.algorithm;
    let sealer = sealer(settings)?;
    if is_hmac(algorithm) {
        let (what, secret) = match &settings.secret_key {
            Some(key) => ("SECRET_KEY", key.expose_secret().as_bytes().to_vec()),
            None => {
                if start_up {
                    tracing::warn!("SECRET_KEY is not set: using a generated key kept in the database");
                }
                (ACCESS_SECRET, generated_secret(store, &sealer, ACCESS_SECRET).await?)
            }
        };
        if start_up {
            let needed = match algorithm {
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                _ => 32,
            };
            warn_if_short(what, &format!("{algorithm:?}"), &secret, needed);
        }
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
        None => match active_generated(store, &sealer, algorithm, settings, now).await? {
            Some(key) => key,
            None if start_up => {
                let pem = generate_private_pem(algorithm)?;
                let key = Key::from_private_pem(algorithm, &pem)?;
                let sealed = sealer.seal_text(&key_row(&key.kid), &pem)?;
                store.insert_signing_key(&record(&key, Some(sealed), now)?).await?;
                tracing::info!(kid = key.kid, ?algorithm, "generated a signing key");
                // Replicas starting together may each have generated one: all settle on
                // the oldest and retire the rest.
                let key = active_generated(store, &sealer, algorithm, settings, now)
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
    let sealed = sealer(settings)?.seal_text(&key_row(&key.kid), &pem)?;
    store.insert_signing_key(&record(&key, Some(sealed), now)?).await?;
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
    sealer: &Sealer,
    algorithm: Algorithm,
    settings: &TokenSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Key>> {
    let name = algorithm_name(algorithm);
    let Some((kid, pem)) = published(store, settings, now)
        .await?
        .into_iter()
        .find(|r| r.retired_at.is_none() && r.algorithm == name)
        .and_then(|r| Some((r.kid, r.private_pem?)))
    else {
        return Ok(None);
    };
    let pem = sealer.open_text(&key_row(&kid), &pem).map_err(|e| unopened(&format!("the private key {kid}"), e))?;
    Key::from_private_pem(algorithm, &pem).map(Some)
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
