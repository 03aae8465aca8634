//! `service_clients`: the services that call authd with an identity of their own.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreResult, classify, on_statement, run};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    /// Space-separated.
    pub scopes: String,
    pub secret_hash: Vec<u8>,
    pub previous_secret_hash: Option<Vec<u8>>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub certificate_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

macro_rules! client_columns {
    () => {
        "client_id, name, scopes, secret_hash, previous_secret_hash, previous_valid_until, certificate_name, created_at,
         rotated_at"
    };
}

pub struct NewClient<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    pub scopes: &'a str,
    pub secret_hash: &'a [u8],
    pub certificate_name: Option<&'a str>,
    pub now: DateTime<Utc>,
}

impl Store {
    /// Adds a client; [`StoreError::Conflict`] when its certificate identity is another's.
    pub async fn insert_client(&self, c: &NewClient<'_>) -> StoreResult<()> {
        let inserted = on_statement!(self, |exec, persistent| sqlx::query(
            "insert into service_clients (client_id, name, scopes, secret_hash, certificate_name, created_at)
             values ($1, $2, $3, $4, $5, $6)"
        )
        .bind(c.client_id)
        .bind(c.name)
        .bind(c.scopes)
        .bind(c.secret_hash)
        .bind(c.certificate_name)
        .bind(c.now)
        .persistent(persistent)
        .execute(exec)
        .await
        .map(|done| done.rows_affected()));
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        run!(
            self,
            query_as(concat!("select ", client_columns!(), " from service_clients where client_id = $1"), client_id)
                .fetch_optional
        )
    }

    pub async fn client_by_certificate(&self, name: &str) -> StoreResult<Option<ClientRecord>> {
        run!(
            self,
            query_as(concat!("select ", client_columns!(), " from service_clients where certificate_name = $1"), name)
                .fetch_optional
        )
    }

    pub async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        run!(
            self,
            query_as(concat!("select ", client_columns!(), " from service_clients order by created_at, client_id"))
                .fetch_all
        )
    }

    /// Replaces the secret; the current one becomes the previous, accepted until
    /// `previous_valid_until`. `false` when there is no such client.
    pub async fn rotate_client_secret(
        &self,
        client_id: &str,
        secret_hash: &[u8],
        previous_valid_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = run!(
            self,
            query(
                "update service_clients
                    set previous_secret_hash = secret_hash, previous_valid_until = $3, secret_hash = $2, rotated_at = $4
                  where client_id = $1",
                client_id,
                secret_hash,
                previous_valid_until,
                now,
            )
            .execute
        )?;
        Ok(done == 1)
    }

    pub async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let done = run!(self, query("delete from service_clients where client_id = $1", client_id).execute)?;
        Ok(done == 1)
    }
}
