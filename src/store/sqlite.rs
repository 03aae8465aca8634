//! SQLite, the embedded backend: one file, nothing to install or configure.
//!
//! WAL lets readers run beside the one writer; the busy timeout makes concurrent writers
//! queue rather than fail. Every write is a single statement, so SQLite takes the write
//! lock before reading the rows it changes, and a conditional `update ... returning`
//! is atomic just as on PostgreSQL.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use uuid::Uuid;

use super::{
    Migrations, NewSession, NewUser, PoolUsage, ProfileUpdate, SessionChange, SessionRecord, SessionSummary,
    SigningKeyRecord, Store, StoreError, StoreResult, ThrottleCount, UserRecord, classify, pending_migrations,
    session_columns, user_columns,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another to finish before giving up (UNAVAILABLE).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting longer than this for a connection means trouble: answer UNAVAILABLE rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(6);

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file (creating it and its directory when migrations may be
    /// applied) and applies or checks the migrations.
    pub async fn connect(url: &str, max_connections: u32, migrations: Migrations) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(migrations == Migrations::Apply)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if migrations == Migrations::RequireCurrent && !in_memory && !options.get_filename().exists() {
            anyhow::bail!(
                "{} does not exist, and MIGRATE_ON_START is off: run `authd migrate` first",
                options.get_filename().display()
            );
        }
        if migrations == Migrations::Apply
            && !in_memory
            && let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        // An in-memory database lives as long as its connections: keep exactly one.
        let pool_options = if in_memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(max_connections)
        };
        let pool = pool_options.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?;
        match migrations {
            Migrations::Apply => MIGRATOR.run(&pool).await.context("applying migrations")?,
            Migrations::RequireCurrent => {
                let has_table: bool = sqlx::query_scalar(
                    "select exists (select 1 from sqlite_master where type = 'table' and name = '_sqlx_migrations')",
                )
                .fetch_one(&pool)
                .await?;
                let applied: Vec<i64> = if has_table {
                    sqlx::query_scalar("select version from _sqlx_migrations where success").fetch_all(&pool).await?
                } else {
                    Vec::new()
                };
                pending_migrations(&MIGRATOR, &applied)?;
            }
        }
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    fn pool_usage(&self) -> PoolUsage {
        PoolUsage { open: self.pool.size(), idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX) }
    }

    async fn insert_user(&self, user: &NewUser<'_>) -> StoreResult<UserRecord> {
        sqlx::query_as::<_, UserRecord>(concat!(
            "insert into users (name, email, location, about, password, created_at, updated_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             returning ",
            user_columns!()
        ))
        .bind(user.name)
        .bind(user.email)
        .bind(user.location)
        .bind(user.about)
        .bind(user.password_hash)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            // The only unique key a new row can clash on is the email's.
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::EmailTaken,
            _ => classify(e),
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(concat!(
            "select ",
            user_columns!(),
            " from users where lower(email) = lower(?1)"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn user_by_id(&self, user_id: i64) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(concat!("select ", user_columns!(), " from users where user_id = ?1"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn set_password_hash(&self, user_id: i64, hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("update users set password = ?2, updated_at = ?3 where user_id = ?1")
            .bind(user_id)
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn update_user(
        &self,
        user_id: i64,
        update: &ProfileUpdate<'_>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(concat!(
            "update users
                set name = coalesce(?2, name), location = coalesce(?3, location),
                    about = case when ?4 then ?5 else about end, updated_at = ?6
              where user_id = ?1
             returning ",
            user_columns!()
        ))
        .bind(user_id)
        .bind(update.name)
        .bind(update.location)
        .bind(update.about.is_some())
        .bind(update.about.flatten())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn delete_user(&self, user_id: i64) -> StoreResult<bool> {
        // SQLite databases are authd's own: no table of the old app to clear.
        let done = sqlx::query("delete from users where user_id = ?1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_session(&self, s: &NewSession<'_>) -> StoreResult<()> {
        sqlx::query(
            "insert into sessions (session_id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
             values (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
        )
        .bind(s.session_id)
        .bind(s.user_id)
        .bind(s.now)
        .bind(s.expires_at)
        .bind(s.user_agent)
        .bind(s.ip)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn advance_session(
        &self,
        session_id: Uuid,
        generation: i64,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        // One conditional update: SQLite serialises writers, and only the first still
        // finds `generation` current.
        sqlx::query_as::<_, SessionRecord>(concat!(
            "update sessions
                set generation = generation + 1, rotated_at = ?3, last_used_at = ?3
              where session_id = ?1 and generation = ?2 and revoked_at is null
                and expires_at > ?3 and last_used_at > ?4
             returning ",
            session_columns!()
        ))
        .bind(session_id)
        .bind(generation)
        .bind(now)
        .bind(idle_cutoff)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn session(&self, session_id: Uuid) -> StoreResult<Option<SessionRecord>> {
        sqlx::query_as::<_, SessionRecord>(concat!(
            "select ",
            session_columns!(),
            " from sessions where session_id = ?1"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn revoke_session(&self, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("update sessions set revoked_at = ?2 where session_id = ?1 and revoked_at is null")
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("update sessions set revoked_at = ?2 where user_id = ?1 and revoked_at is null")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn revoke_other_sessions(&self, user_id: i64, keep: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "update sessions set revoked_at = ?3 where user_id = ?1 and session_id <> ?2 and revoked_at is null",
        )
        .bind(user_id)
        .bind(keep)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_session(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "update sessions set revoked_at = ?3
              where session_id = ?1 and user_id = ?2 and revoked_at is null and expires_at > ?3",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<SessionSummary>> {
        sqlx::query_as::<_, SessionSummary>(
            "select session_id, created_at, last_used_at, expires_at, user_agent, ip from sessions
              where user_id = ?1 and revoked_at is null and expires_at > ?2
              order by last_used_at desc, created_at desc",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn signing_keys(&self, retired_since: DateTime<Utc>) -> StoreResult<Vec<SigningKeyRecord>> {
        sqlx::query_as::<_, SigningKeyRecord>(
            "select kid, algorithm, public_jwk, private_pem, created_at, retired_at from signing_keys
              where retired_at is null or retired_at > ?1
              order by created_at, kid",
        )
        .bind(retired_since)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "insert into signing_keys (kid, algorithm, public_jwk, private_pem, created_at, retired_at)
             values (?1, ?2, ?3, ?4, ?5, ?6) on conflict (kid) do nothing",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_jwk)
        .bind(&key.private_pem)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn retire_signing_keys_except(&self, kid: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("update signing_keys set retired_at = ?2 where kid <> ?1 and retired_at is null")
            .bind(kid)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn session_user(
        &self,
        session_id: Uuid,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(
            "select u.user_id, u.name, u.email, u.location, u.about, u.password, u.created_at, u.updated_at
               from sessions s join users u on u.user_id = s.user_id
              where s.session_id = ?1 and s.user_id = ?2 and s.revoked_at is null and s.expires_at > ?3",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn follow_session_changes(&self, on_change: &(dyn Fn(SessionChange) + Send + Sync)) -> anyhow::Result<()> {
        // One process owns the file: every change is made here, and heard directly.
        on_change(SessionChange::Listening);
        std::future::pending().await
    }

    async fn throttle_hit(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<ThrottleCount> {
        // Every expression of `set` sees the row as it was, so the reset is one decision.
        sqlx::query_as::<_, ThrottleCount>(
            "insert into throttle (key, hits, window_start_ms, last_hit_ms) values (?1, 1, ?2, ?2)
             on conflict (key) do update set
               hits = case when throttle.window_start_ms <= ?2 - ?3 then 1 else throttle.hits + 1 end,
               window_start_ms = case when throttle.window_start_ms <= ?2 - ?3 then ?2 else throttle.window_start_ms end,
               last_hit_ms = ?2
             returning hits, window_start_ms, last_hit_ms",
        )
        .bind(key)
        .bind(now_ms)
        .bind(window_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)
    }

    async fn throttle_count(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<Option<ThrottleCount>> {
        sqlx::query_as::<_, ThrottleCount>(
            "select hits, window_start_ms, last_hit_ms from throttle where key = ?1 and window_start_ms > ?2 - ?3",
        )
        .bind(key)
        .bind(now_ms)
        .bind(window_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn throttle_clear(&self, key: &str) -> StoreResult<()> {
        sqlx::query("delete from throttle where key = ?1").bind(key).execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    async fn throttle_prune(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("delete from throttle where last_hit_ms < ?1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("insert into secrets (name, value, created_at) values (?1, ?2, ?3) on conflict (name) do nothing")
            .bind(name)
            .bind(candidate)
            .bind(Utc::now())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        sqlx::query_scalar("select value from secrets where name = ?1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }
}
