//! The database boundary. The core talks to a [`Store`]; each backend implements it.

mod postgres;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use postgres::PgStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    /// The database cannot be reached (or refuses connections) right now.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub user_id: i64,
    pub name: String,
    pub email: String,
    pub location: String,
    pub about: Option<String>,
    /// A PHC string.
    pub password: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewUser<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub location: &'a str,
    pub about: Option<&'a str>,
    pub password_hash: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub session_id: Uuid,
    pub user_id: i64,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

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

pub struct NewSession<'a> {
    pub session_id: Uuid,
    pub user_id: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts a user; [`StoreError::EmailTaken`] when the email exists in any case.
    async fn insert_user(&self, user: &NewUser<'_>) -> StoreResult<UserRecord>;
    /// Looks an email up case-insensitively.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, user_id: i64) -> StoreResult<Option<UserRecord>>;
    async fn set_password_hash(&self, user_id: i64, hash: &str, now: DateTime<Utc>) -> StoreResult<()>;

    async fn insert_session(&self, session: &NewSession<'_>) -> StoreResult<()>;
    /// Moves a live session from `generation` to the next one, atomically: of concurrent
    /// callers with the same generation, exactly one gets the session (now at
    /// `generation + 1`) back. A session that is revoked, past `expires_at`
    /// or unused since `idle_cutoff` does not move.
    async fn advance_session(
        &self,
        session_id: Uuid,
        generation: i64,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>>;
    async fn session(&self, session_id: Uuid) -> StoreResult<Option<SessionRecord>>;
    /// Ends one session; returns how many were live (0 or 1).
    async fn revoke_session(&self, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Ends every live session of a user; returns how many.
    async fn revoke_user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64>;
    /// The user of a session that is live at `now` and belongs to `user_id`.
    async fn session_user(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>)
    -> StoreResult<Option<UserRecord>>;

    /// Signing keys that are active or were retired after `retired_since`, oldest first.
    async fn signing_keys(&self, retired_since: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Adds a key; one with the same `kid` already there is left as it is.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Retires every active key but `kid`.
    async fn retire_signing_keys_except(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// The secret kept under `name`, storing `candidate` first if there is none; every
    /// replica gets the same answer.
    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>>;
}

/// Sorts sqlx errors into "try again later" and "something is wrong".
fn classify(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unavailable = match &error {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        // Connection exceptions (08), operator intervention such as a shutdown (57P),
        // and too many connections (53300).
        E::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    };
    if unavailable { StoreError::Unavailable(error) } else { StoreError::Other(error.into()) }
}
