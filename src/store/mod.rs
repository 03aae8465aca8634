//! The database boundary. The core talks to a [`Store`]; each backend implements it.

mod adoption;
mod postgres;
mod sqlite;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use url::Url;
use uuid::Uuid;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::config::DatabaseSettings;

/// What opening a store does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Check that an existing database can be adopted, then apply pending migrations
    /// (creating the database first if need be).
    Apply,
    /// Change nothing; refuse a database with pending migrations.
    RequireCurrent,
}

/// The two backends, told apart by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            _ => anyhow::bail!("DATABASE_URL: expected a postgres:// or sqlite:// URL, got scheme {scheme:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }
}

/// Opens the configured database, applying or checking migrations, and logs one line
/// saying which database is in use (never its password).
pub async fn open(settings: &DatabaseSettings, migrations: Migrations) -> anyhow::Result<Arc<dyn Store>> {
    let url = settings.url.expose_secret();
    let backend = Backend::of(url)?;
    tracing::info!(backend = backend.name(), url = %redacted(url), "database");
    let context = || format!("opening {} at {} (DATABASE_URL)", backend.name(), redacted(url));
    Ok(match backend {
        Backend::Postgres => {
            Arc::new(PgStore::connect(url, settings.max_connections, migrations).await.with_context(context)?)
        }
        Backend::Sqlite => {
            Arc::new(SqliteStore::connect(url, settings.max_connections, migrations).await.with_context(context)?)
        }
    })
}

/// A database URL fit for a log line: any password (in the user info or a `password=`
/// parameter) replaced by `***`. A URL that does not parse, or whose user info may have
/// been read as host, port or path, shows nothing but its scheme.
pub fn redacted(url: &str) -> String {
    let Some(mut parsed) = Url::parse(url).ok().filter(|u| !has_stray_at(u)) else {
        let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric()));
        return format!("{}<unparseable URL>", scheme.map(|s| format!("{s}:")).unwrap_or_default());
    };
    if parsed.password().is_some() {
        // Fails only for a URL without a host, which has no password.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect::<Vec<_>>();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Whether an '@' follows the host: then a raw '/' in a password may have ended the
/// authority early (`app:1234/x@db` reads as port 1234 and path `/x@db`), so hide it all.
fn has_stray_at(url: &Url) -> bool {
    url.host_str().is_some_and(|h| !h.is_empty()) && url[url::Position::BeforePath..].contains('@')
}

/// Fails, naming them, if any of the migrator's migrations is not among `applied`.
fn pending_migrations(migrator: &Migrator, applied: &[i64]) -> anyhow::Result<()> {
    let pending = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect::<Vec<_>>();
    if pending.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the database schema is behind ({} pending: {}) and MIGRATE_ON_START is off: run `authd migrate` first",
            pending.len(),
            pending.join(", ")
        )
    }
}

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

/// The columns a `UserRecord` is read from, in both backends' queries (a macro, so that
/// `concat!` makes each query a constant).
macro_rules! user_columns {
    () => {
        "user_id, name, email, location, about, password, created_at, updated_at"
    };
}
use user_columns;

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

/// The columns a `SessionRecord` is read from, in both backends' queries.
macro_rules! session_columns {
    () => {
        "session_id, user_id, generation, created_at, last_used_at, rotated_at, expires_at, revoked_at"
    };
}
use session_columns;

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

/// Hits counted under one throttle key in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ThrottleCount {
    pub hits: i64,
    /// When the window began, in Unix milliseconds.
    pub window_start_ms: i64,
    /// The latest hit, in Unix milliseconds.
    pub last_hit_ms: i64,
}

/// A partial profile change: `None` leaves a column as it is; `about: Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileUpdate<'a> {
    pub name: Option<&'a str>,
    pub location: Option<&'a str>,
    pub about: Option<Option<&'a str>>,
}

/// A session as its owner sees it in a list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionSummary {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Connections of the pool right now.
#[derive(Debug, Clone, Copy)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
}

impl PoolUsage {
    pub fn in_use(self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

pub struct NewSession<'a> {
    pub session_id: Uuid,
    pub user_id: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// A change that processes caching sessions must hear of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// From now on every change is heard (sent first, and again after a reconnection).
    Listening,
    /// A session ended.
    Session(Uuid),
    /// Something about a user changed, or every session of theirs ended.
    User(i64),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
    /// The connection pool's state, for metrics.
    fn pool_usage(&self) -> PoolUsage;

    /// Inserts a user; [`StoreError::EmailTaken`] when the email exists in any case.
    async fn insert_user(&self, user: &NewUser<'_>) -> StoreResult<UserRecord>;
    /// Looks an email up case-insensitively.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, user_id: i64) -> StoreResult<Option<UserRecord>>;
    async fn set_password_hash(&self, user_id: i64, hash: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Applies a partial profile change; `None` when there is no such user.
    async fn update_user(
        &self,
        user_id: i64,
        update: &ProfileUpdate<'_>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>>;
    /// Deletes a user with every session, and with the rows that the old app's
    /// `refreshaccesstokens` table (if any) holds for it; `false` when there was no such user.
    async fn delete_user(&self, user_id: i64) -> StoreResult<bool>;

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
    /// Ends every live session of a user but `keep`; returns how many.
    async fn revoke_other_sessions(&self, user_id: i64, keep: Uuid, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Ends one session if it is live and belongs to `user_id`; returns how many (0 or 1).
    async fn revoke_user_session(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64>;
    /// The sessions of a user that are live at `now`, most recently used first.
    async fn user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<SessionSummary>>;
    /// The user of a session that is live at `now` and belongs to `user_id`.
    async fn session_user(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>)
    -> StoreResult<Option<UserRecord>>;

    /// Signing keys that are active or were retired after `retired_since`, oldest first.
    async fn signing_keys(&self, retired_since: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Adds a key; one with the same `kid` already there is left as it is.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Retires every active key but `kid`.
    async fn retire_signing_keys_except(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Calls `on_change` for every session change made by any process on this database,
    /// starting with [`SessionChange::Listening`]; returns only on failure, after which
    /// changes may have been missed.
    async fn follow_session_changes(&self, on_change: &(dyn Fn(SessionChange) + Send + Sync)) -> anyhow::Result<()>;
    /// Counts one hit under `key`, atomically, in a fixed window of `window_ms`: a window
    /// begun `window_ms` or more before `now_ms` starts over at this hit.
    async fn throttle_hit(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<ThrottleCount>;
    /// The hits under `key` in a window still open at `now_ms`, if any.
    async fn throttle_count(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<Option<ThrottleCount>>;
    async fn throttle_clear(&self, key: &str) -> StoreResult<()>;
    /// Forgets keys not hit since `before_ms`; returns how many.
    async fn throttle_prune(&self, before_ms: i64) -> StoreResult<u64>;

    /// The secret kept under `name`, storing `candidate` first if there is none; every
    /// replica gets the same answer.
    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>>;
}

/// Sorts sqlx errors into "try again later" and "something is wrong".
fn classify(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unavailable = match &error {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        // The conversation broke off, as when something between us and the database
        // accepts a connection and closes it ("unexpected response from SSLRequest").
        E::Protocol(_) => true,
        // SQLite: busy or locked past the busy timeout (5, 6), I/O error (10), full disk
        // (13), cannot open (14); extended codes keep the primary code in the low byte.
        E::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
        }
        // PostgreSQL: connection exceptions (08), operator intervention such as a
        // shutdown (57P), and too many connections (53300).
        E::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    };
    if unavailable { StoreError::Unavailable(error) } else { StoreError::Other(error.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_in_logs() {
        for (url, shown) in [
            ("postgres://app:hunter2@db:5432/users", "postgres://app:***@db:5432/users"),
            ("postgres://app:p%40ss@db/users?sslmode=require", "postgres://app:***@db/users?sslmode=require"),
            (
                "postgres://app@db/users?password=hunter2&sslmode=disable",
                "postgres://app@db/users?password=***&sslmode=disable",
            ),
            ("postgres://db/users", "postgres://db/users"),
            ("postgres://app:hunter2@db/users?Password=hunter2", "postgres://app:***@db/users?Password=***"),
            ("sqlite:///home/ada/.local/share/authd/authd.db", "sqlite:///home/ada/.local/share/authd/authd.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite:///srv/ada@example/authd.db", "sqlite:///srv/ada@example/authd.db"),
        ] {
            assert_eq!(redacted(url), shown);
        }
    }

    #[test]
    fn a_password_with_url_delimiters_stays_out_of_logs() {
        // A raw '/', '?' or '#' ends the authority early: the password is read as a port,
        // and the rest as a path.
        for url in [
            "postgres://app:s3cr3t+/x==@db/users",
            "postgres://app:s3cr3t?x==@db/users",
            "postgres://app:s3cr3t#x==@db/users",
            "postgres://app:s3/cr3t@db/users?password=s3/cr3t",
            "postgres://app:1234/cr3t@db/users",
        ] {
            assert_eq!(redacted(url), "postgres:<unparseable URL>", "{url}");
        }
    }

    #[test]
    fn the_scheme_picks_the_backend() {
        assert_eq!(Backend::of("postgres://x/y").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://x/y").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("sqlite:///tmp/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert!(Backend::of("mysql://x/y").unwrap_err().to_string().contains("DATABASE_URL"));
    }
}
