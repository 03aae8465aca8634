//! PostgreSQL, the production backend.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use uuid::Uuid;

use super::{
    Migrations, NewSession, NewUser, PoolUsage, ProfileUpdate, SessionChange, SessionRecord, SessionSummary,
    SigningKeyRecord, Store, StoreError, StoreResult, ThrottleCount, UserRecord, adoption, classify,
    pending_migrations, session_columns, user_columns,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Waiting longer than this for a connection means the database is in trouble: answer
/// UNAVAILABLE rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// The NOTIFY channel on which every process announces session changes.
const CHANGES_CHANNEL: &str = "authd_session_changes";

fn parse_change(payload: &str) -> Option<SessionChange> {
    match payload.split_once(':')? {
        ("session", id) => id.parse().ok().map(SessionChange::Session),
        ("user", id) => id.parse().ok().map(SessionChange::User),
        _ => None,
    }
}

impl PgStore {
    /// Tells every process caching sessions (this one included) of a change.
    async fn announce(&self, change: SessionChange) -> StoreResult<()> {
        let payload = match change {
            SessionChange::Session(id) => format!("session:{id}"),
            SessionChange::User(id) => format!("user:{id}"),
            SessionChange::Listening => return Ok(()),
        };
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Connects and applies or checks the migrations. When applying, a missing database
    /// is created first, and an existing one is checked for adoption before any change.
    pub async fn connect(url: &str, max_connections: u32, migrations: Migrations) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        if migrations == Migrations::Apply && !Postgres::database_exists(url).await? {
            tracing::info!(database = options.get_database().unwrap_or_default(), "creating the database");
            Postgres::create_database(url).await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        match migrations {
            Migrations::Apply => {
                adoption::check(&pool, &MIGRATOR).await?;
                MIGRATOR.run(&pool).await.context("applying migrations")?;
            }
            Migrations::RequireCurrent => {
                let has_table: bool =
                    sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null").fetch_one(&pool).await?;
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

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    fn pool_usage(&self) -> PoolUsage {
        PoolUsage { open: self.pool.size(), idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX) }
    }

    async fn insert_user(&self, user: &NewUser<'_>) -> StoreResult<UserRecord> {
        sqlx::query_as::<_, UserRecord>(concat!(
            "insert into users (name, email, location, about, password) values ($1, $2, $3, $4, $5)
             returning ",
            user_columns!()
        ))
        .bind(user.name)
        .bind(user.email)
        .bind(user.location)
        .bind(user.about)
        .bind(user.password_hash)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            // The old app's case-sensitive constraint may still exist beside ours.
            sqlx::Error::Database(db)
                if matches!(db.constraint(), Some("users_email_lower_key" | "users_email_key")) =>
            {
                StoreError::EmailTaken
            }
            _ => classify(e),
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(concat!(
            "select ",
            user_columns!(),
            " from users where lower(email) = lower($1)"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn user_by_id(&self, user_id: i64) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRecord>(concat!("select ", user_columns!(), " from users where user_id = $1"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn set_password_hash(&self, user_id: i64, hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("update users set password = $2, updated_at = $3 where user_id = $1")
            .bind(user_id)
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        self.announce(SessionChange::User(user_id)).await
    }

    async fn update_user(
        &self,
        user_id: i64,
        update: &ProfileUpdate<'_>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let updated = sqlx::query_as::<_, UserRecord>(concat!(
            "update users
                set name = coalesce($2, name), location = coalesce($3, location),
                    about = case when $4 then $5 else about end, updated_at = $6
              where user_id = $1
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
        .map_err(classify)?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(updated)
    }

    async fn delete_user(&self, user_id: i64) -> StoreResult<bool> {
        // An adopted database may keep the old app's `refreshaccesstokens`, whose foreign
        // key to users has no `on delete cascade`: clear the user's rows there first.
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let old_tokens: bool = sqlx::query_scalar("select to_regclass('refreshaccesstokens') is not null")
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if old_tokens {
            sqlx::query("delete from refreshaccesstokens where user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        // Sessions go with the user (on delete cascade).
        let done = sqlx::query("delete from users where user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_session(&self, s: &NewSession<'_>) -> StoreResult<()> {
        sqlx::query(
            "insert into sessions (session_id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
             values ($1, $2, $3, $3, $4, $5, $6)",
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
        // One conditional update: the row lock makes concurrent callers queue, and only
        // the first still finds `generation` current.
        sqlx::query_as::<_, SessionRecord>(concat!(
            "update sessions
                set generation = generation + 1, rotated_at = $3, last_used_at = $3
              where session_id = $1 and generation = $2 and revoked_at is null
                and expires_at > $3 and last_used_at > $4
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
            " from sessions where session_id = $1"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn revoke_session(&self, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("update sessions set revoked_at = $2 where session_id = $1 and revoked_at is null")
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        self.announce(SessionChange::Session(session_id)).await?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("update sessions set revoked_at = $2 where user_id = $1 and revoked_at is null")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(done.rows_affected())
    }

    async fn follow_session_changes(&self, on_change: &(dyn Fn(SessionChange) + Send + Sync)) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        on_change(SessionChange::Listening);
        loop {
            // `recv` would reconnect silently and lose what was sent meanwhile: end instead.
            let notification = listener.try_recv().await?.context("the notification connection closed")?;
            match parse_change(notification.payload()) {
                Some(change) => on_change(change),
                None => tracing::warn!(payload = notification.payload(), "unknown session change"),
            }
        }
    }

    async fn revoke_other_sessions(&self, user_id: i64, keep: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "update sessions set revoked_at = $3 where user_id = $1 and session_id <> $2 and revoked_at is null",
        )
        .bind(user_id)
        .bind(keep)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(done.rows_affected())
    }

    async fn revoke_user_session(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "update sessions set revoked_at = $3
              where session_id = $1 and user_id = $2 and revoked_at is null and expires_at > $3",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        self.announce(SessionChange::Session(session_id)).await?;
        Ok(done.rows_affected())
    }

    async fn user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<SessionSummary>> {
        sqlx::query_as::<_, SessionSummary>(
            "select session_id, created_at, last_used_at, expires_at, user_agent, ip from sessions
              where user_id = $1 and revoked_at is null and expires_at > $2
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
              where retired_at is null or retired_at > $1
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
             values ($1, $2, $3, $4, $5, $6) on conflict (kid) do nothing",
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
        sqlx::query("update signing_keys set retired_at = $2 where kid <> $1 and retired_at is null")
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
              where s.session_id = $1 and s.user_id = $2 and s.revoked_at is null and s.expires_at > $3",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn throttle_hit(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<ThrottleCount> {
        // Every expression of `set` sees the row as it was, so the reset is one decision.
        sqlx::query_as::<_, ThrottleCount>(
            "insert into throttle (key, hits, window_start_ms, last_hit_ms) values ($1, 1, $2, $2)
             on conflict (key) do update set
               hits = case when throttle.window_start_ms <= $2 - $3 then 1 else throttle.hits + 1 end,
               window_start_ms = case when throttle.window_start_ms <= $2 - $3 then $2 else throttle.window_start_ms end,
               last_hit_ms = $2
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
            "select hits, window_start_ms, last_hit_ms from throttle where key = $1 and window_start_ms > $2 - $3",
        )
        .bind(key)
        .bind(now_ms)
        .bind(window_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn throttle_clear(&self, key: &str) -> StoreResult<()> {
        sqlx::query("delete from throttle where key = $1").bind(key).execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    async fn throttle_prune(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("delete from throttle where last_hit_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("insert into secrets (name, value) values ($1, $2) on conflict (name) do nothing")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        sqlx::query_scalar("select value from secrets where name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }
}
