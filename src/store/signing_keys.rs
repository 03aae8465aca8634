//! `signing_keys`: the asymmetric keys that sign access tokens.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, run};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// As jsonwebtoken names it: `RS256`, `ES256`, `EdDSA`.
    pub algorithm: String,
    pub public_jwk: String,
    /// PKCS#8 PEM for a key we generated; `None` for a key read from a file.
    pub private_pem: Option<String>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Signing keys that are active or were retired after `retired_since`, oldest first.
    pub async fn signing_keys(&self, retired_since: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRecord>> {
        run!(
            self,
            query_as(
                "select kid, algorithm, public_jwk, private_pem, created_at, retired_at from signing_keys
                  where retired_at is null or retired_at > $1
                  order by created_at, kid",
                retired_since,
            )
            .fetch_all
        )
    }

    /// Adds a key; one with the same `kid` already there is left as it is.
    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into signing_keys (kid, algorithm, public_jwk, private_pem, created_at, retired_at)
                 values ($1, $2, $3, $4, $5, $6) on conflict (kid) do nothing",
                &key.kid,
                &key.algorithm,
                &key.public_jwk,
                &key.private_pem,
                key.created_at,
                key.retired_at,
            )
            .execute
        )?;
        Ok(())
    }

    /// Retires every active key but `kid`.
    pub async fn retire_signing_keys_except(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()> {
        run!(
            self,
            query("update signing_keys set retired_at = $2 where kid <> $1 and retired_at is null", kid, now).execute
        )?;
        Ok(())
    }
}
