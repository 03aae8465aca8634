//! `sessions`: one row per login, and how processes caching them hear of their end.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, Store, StoreResult, UserRecord, classify, postgres, run};

/// The columns a `SessionRecord` is read from.
macro_rules! session_columns {
    () => {
        "session_id, user_id, generation, created_at, last_used_at, rotated_at, expires_at, revoked_at"
    };
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

pub struct NewSession<'a> {
    pub session_id: Uuid,
    pub user_id: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
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

impl Store {
    pub async fn insert_session(&self, s: &NewSession<'_>) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into sessions (session_id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
                 values ($1, $2, $3, $3, $4, $5, $6)",
                s.session_id,
                s.user_id,
                s.now,
                s.expires_at,
                s.user_agent,
                s.ip,
            )
            .execute
        )?;
        Ok(())
    }

    /// Moves a live session from `generation` to the next one, atomically: of concurrent
    /// callers with the same generation, exactly one gets the session (now at
    /// `generation + 1`) back. A session that is revoked, past `expires_at`
    /// or unused since `idle_cutoff` does not move.
    pub async fn advance_session(
        &self,
        session_id: Uuid,
        generation: i64,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Option<SessionRecord>> {
        // One conditional update: concurrent callers queue on the row lock (PostgreSQL) or
        // the write lock (SQLite), and only the first still finds `generation` current.
        run!(
            self,
            query_as(
                concat!(
                    "update sessions
                        set generation = generation + 1, rotated_at = $3, last_used_at = $3
                      where session_id = $1 and generation = $2 and revoked_at is null
                        and expires_at > $3 and last_used_at > $4
                     returning ",
                    session_columns!()
                ),
                session_id,
                generation,
                now,
                idle_cutoff,
            )
            .fetch_optional
        )
    }

    pub async fn session(&self, session_id: Uuid) -> StoreResult<Option<SessionRecord>> {
        run!(
            self,
            query_as(concat!("select ", session_columns!(), " from sessions where session_id = $1"), session_id)
                .fetch_optional
        )
    }

    /// Ends one session; returns how many were live (0 or 1).
    pub async fn revoke_session(&self, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let ended = run!(
            self,
            query("update sessions set revoked_at = $2 where session_id = $1 and revoked_at is null", session_id, now)
                .execute
        )?;
        self.announce(SessionChange::Session(session_id)).await?;
        Ok(ended)
    }

    /// Ends every live session of a user; returns how many.
    pub async fn revoke_user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let ended = run!(
            self,
            query("update sessions set revoked_at = $2 where user_id = $1 and revoked_at is null", user_id, now)
                .execute
        )?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(ended)
    }

    /// Ends every live session of a user but `keep`; returns how many.
    pub async fn revoke_other_sessions(&self, user_id: i64, keep: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
        let ended = run!(
            self,
            query(
                "update sessions set revoked_at = $3
                  where user_id = $1 and session_id <> $2 and revoked_at is null",
                user_id,
                keep,
                now,
            )
            .execute
        )?;
        self.announce(SessionChange::User(user_id)).await?;
        Ok(ended)
    }

    /// Ends one session if it is live and belongs to `user_id`; returns how many (0 or 1).
    pub async fn revoke_user_session(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let ended = run!(
            self,
            query(
                "update sessions set revoked_at = $3
                  where session_id = $1 and user_id = $2 and revoked_at is null and expires_at > $3",
                session_id,
                user_id,
                now,
            )
            .execute
        )?;
        self.announce(SessionChange::Session(session_id)).await?;
        Ok(ended)
    }

    /// The sessions of a user that are live at `now`, most recently used first.
    pub async fn user_sessions(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Vec<SessionSummary>> {
        run!(
            self,
            query_as(
                "select session_id, created_at, last_used_at, expires_at, user_agent, ip from sessions
                  where user_id = $1 and revoked_at is null and expires_at > $2
                  order by last_used_at desc, created_at desc",
                user_id,
                now,
            )
            .fetch_all
        )
    }

    /// The user of a session that is live at `now` and belongs to `user_id`.
    pub async fn session_user(
        &self,
        session_id: Uuid,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        run!(
            self,
            query_as(
                "select u.user_id, u.name, u.email, u.location, u.about, u.password, u.created_at, u.updated_at
                   from sessions s join users u on u.user_id = s.user_id
                  where s.session_id = $1 and s.user_id = $2 and s.revoked_at is null and s.expires_at > $3",
                session_id,
                user_id,
                now,
            )
            .fetch_optional
        )
    }

    /// Calls `on_change` for every session change made by any process on this database,
    /// starting with [`SessionChange::Listening`]; returns only on failure, after which
    /// changes may have been missed.
    pub async fn follow_session_changes(
        &self,
        on_change: &(dyn Fn(SessionChange) + Send + Sync),
    ) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => postgres::follow_session_changes(pool, on_change).await,
            Pool::Sqlite(_) => {
                // One process owns the file: every change is made here, and heard directly.
                on_change(SessionChange::Listening);
                std::future::pending().await
            }
        }
    }

    /// Tells every other process caching sessions of a change.
    pub(super) async fn announce(&self, change: SessionChange) -> StoreResult<()> {
        match &self.pool {
            Pool::Postgres(pool) => postgres::announce(pool, change).await.map_err(classify),
            Pool::Sqlite(_) => Ok(()),
        }
    }
}
