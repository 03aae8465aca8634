//! `sessions`: one row per login, and how processes caching them hear of their end.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use anyhow::Context;

use super::{
    PRUNE_BATCH, Pool, Store, StoreResult, UserRecord, classify, in_batches, on_pool, on_statement, postgres,
    revocations::{RevocationKind, RevocationLog},
    run,
    users::user_columns,
};

/// The columns a `SessionRecord` is read from.
macro_rules! session_columns {
    () => {
        "session_id, user_id, generation, created_at, last_used_at, rotated_at, expires_at, revoked_at, amr, auth_time"
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
    /// What the session's login proved (RFC 8176 `amr` values, space-separated).
    pub amr: String,
    /// When a second factor was last proved in it, if ever.
    pub auth_time: Option<DateTime<Utc>>,
}

pub struct NewSession<'a> {
    pub session_id: Uuid,
    pub user_id: i64,
    /// The user's credentials version that the login checked.
    pub credentials_version: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// The known device (its token's hash) the session logged in with.
    pub device_hash: Option<&'a [u8]>,
    /// What the login proved (RFC 8176 `amr` values, space-separated): `pwd`, `pwd otp`.
    pub amr: &'a str,
    /// When a second factor was proved, for a session that proved one.
    pub auth_time: Option<DateTime<Utc>>,
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
    /// From now on every change is heard (sent first, and again after a reconnection, or
    /// once the feed's heartbeat is heard back after it was not).
    Listening,
    /// Changes may go unheard from now on: the feed's heartbeat did not come back in time.
    Unheard,
    /// A session ended.
    Session(Uuid),
    /// Something about a user changed, or every session of theirs ended.
    User(i64),
    /// A service client changed or was deleted, by [`ClientKey::of`] its id.
    Client(ClientKey),
}

impl SessionChange {
    /// The change of the service client `client_id`.
    pub fn client(client_id: &str) -> Self {
        Self::Client(ClientKey::of(client_id))
    }
}

/// A service client's id, hashed to a number, so that a change stays `Copy`: two ids that
/// hash alike only make a change forget both cached records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    pub fn of(client_id: &str) -> Self {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same number in every process and at every start.
        let mut hasher = std::hash::DefaultHasher::new();
        client_id.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// After a password change or a logout everywhere (user `$1`, whose credentials version is
/// now `$3`), the device that the caller's session `$2` logged in with stays known, if it
/// was known until now (of the version before, `$3 - 1`, and seen since `$4`); returns its
/// hash. Its token stays the same: no new device token is handed out, since whoever holds
/// only an access token must never get one.
pub(super) const KEEP_SESSION_DEVICE: &str = "update known_devices set credentials_version = $3
      where user_id = $1 and credentials_version = $3 - 1 and last_seen_at >= $4
        and token_hash = (select device_hash from sessions where session_id = $2 and user_id = $1)
     returning token_hash";

/// Then no other device of user `$1` is trusted past the account's failure ceiling until
/// it logs in again (`$2` the new version): a lost or stolen one, least of all. (A device
/// of the old credentials that a racing login adds is not honoured either:
/// `is_known_device` wants the user's current version.)
pub(super) const FORGET_DEVICES: &str = "delete from known_devices where user_id = $1 and credentials_version <> $2";

pub(super) const REVOKE_USER_SESSIONS: &str =
    "update sessions set revoked_at = $2 where user_id = $1 and revoked_at is null";

/// Starts a session if the user's credentials are still those of `$7` and the account is
/// not disabled.
pub(super) const INSERT_SESSION: &str =
    "insert into sessions (session_id, user_id, created_at, last_used_at, expires_at, user_agent, ip, credentials_version,
                           device_hash, amr, auth_time)
     select $1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10
      where exists (select 1 from users where user_id = $2 and credentials_version = $7 and disabled_at is null)";

/// Binds a [`NewSession`] to [`INSERT_SESSION`].
macro_rules! insert_session {
    ($s:expr) => {
        sqlx::query($crate::store::sessions::INSERT_SESSION)
            .bind($s.session_id)
            .bind($s.user_id)
            .bind($s.now)
            .bind($s.expires_at)
            .bind($s.user_agent)
            .bind($s.ip)
            .bind($s.credentials_version)
            .bind($s.device_hash)
            .bind($s.amr)
            .bind($s.auth_time)
    };
}
pub(super) use insert_session;

impl Store {
    /// Starts a session, unless the user's credentials moved on (a password change, a
    /// logout everywhere) since the login read them, or the user is gone: then `false`.
    pub async fn insert_session(&self, s: &NewSession<'_>) -> StoreResult<bool> {
        let inserted = on_statement!(self, |exec, persistent| {
            insert_session!(s).persistent(persistent).execute(exec).await.map(|done| done.rows_affected())
        });
        match inserted {
            Ok(inserted) => Ok(inserted == 1),
            // The user was deleted between the check and the insert (PostgreSQL).
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// Moves a live session from `generation` to the next one, atomically: of concurrent
    /// callers with the same generation, exactly one gets the session (now at
    /// `generation + 1`) back. A session that is revoked, past `expires_at`, unused since
    /// `idle_cutoff`, or of credentials that have since changed does not move.
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
                        and credentials_version =
                            (select u.credentials_version from users u where u.user_id = sessions.user_id)
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
        Ok(self.end_session(session_id, now).await?.map_or(0, |_| 1))
    }

    /// Ends one session, logging it in the same transaction; returns its user if it was live.
    pub async fn end_session(&self, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<i64>> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let ended: Option<i64> = sqlx::query_scalar(
                "update sessions set revoked_at = $2 where session_id = $1 and revoked_at is null returning user_id",
            )
            .bind(session_id)
            .bind(now)
            .persistent(prepared)
            .fetch_optional(&mut *tx)
            .await?;
            if ended.is_some() {
                tx.log_revocation(prepared, RevocationKind::Session, SessionChange::Session(session_id)).await?;
            }
            tx.commit().await?;
            Ok(ended)
        }
        .await)
        .map_err(classify)
    }

    /// Ends every session of a user, those whose login is still under way included: the
    /// user's credentials version moves on, and of the user's devices only the one that
    /// the caller's session `session_id` logged in with stays known, if it was known
    /// until now (seen since `seen_since`). Returns how many sessions were live.
    pub async fn end_all_sessions(
        &self,
        user_id: i64,
        session_id: Uuid,
        now: DateTime<Utc>,
        seen_since: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let prepared = self.prepared_statements;
        let ended = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let version: Option<i64> = sqlx::query_scalar(
                "update users set credentials_version = credentials_version + 1 where user_id = $1
                 returning credentials_version",
            )
            .bind(user_id)
            .persistent(prepared)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(version) = version {
                let keep = sqlx::query(KEEP_SESSION_DEVICE).bind(user_id).bind(session_id).bind(version);
                keep.bind(seen_since).persistent(prepared).execute(&mut *tx).await?;
                let forget = sqlx::query(FORGET_DEVICES).bind(user_id).bind(version);
                forget.persistent(prepared).execute(&mut *tx).await?;
            }
            let ended = sqlx::query(REVOKE_USER_SESSIONS)
                .bind(user_id)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            let void = sqlx::query(super::email_tokens::VOID_USER_TOKENS).bind(user_id).bind(now);
            void.persistent(prepared).execute(&mut *tx).await?;
            if version.is_some() {
                tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(user_id)).await?;
            }
            tx.commit().await?;
            Ok(ended.rows_affected())
        }
        .await)
        .map_err(classify)?;
        Ok(ended)
    }

    /// Ends one session if it is live and belongs to `user_id`, logging it in the same
    /// transaction; returns how many (0 or 1).
    pub async fn revoke_user_session(&self, session_id: Uuid, user_id: i64, now: DateTime<Utc>) -> StoreResult<u64> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let ended = sqlx::query(
                "update sessions set revoked_at = $3
                  where session_id = $1 and user_id = $2 and revoked_at is null and expires_at > $3",
            )
            .bind(session_id)
            .bind(user_id)
            .bind(now)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Only a session of this user: another's must not end, even in memory.
            if ended > 0 {
                tx.log_revocation(prepared, RevocationKind::Session, SessionChange::Session(session_id)).await?;
            }
            tx.commit().await?;
            Ok(ended)
        }
        .await)
        .map_err(classify)
    }

    /// The sessions of a user that are live at `now` and used since `idle_cutoff`, most
    /// recently used first.
    pub async fn user_sessions(
        &self,
        user_id: i64,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionSummary>> {
        run!(
            self,
            query_as(
                "select s.session_id, s.created_at, s.last_used_at, s.expires_at, s.user_agent, s.ip
                   from sessions s join users u on u.user_id = s.user_id
                  where s.user_id = $1 and s.revoked_at is null and s.expires_at > $2 and s.last_used_at > $3
                    and s.credentials_version = u.credentials_version
                  order by s.last_used_at desc, s.created_at desc",
                user_id,
                now,
                idle_cutoff,
            )
            .fetch_all
        )
    }

    /// Ends the user's live sessions (used since `idle_cutoff`) beyond the `keep` most
    /// recently used; returns the sessions that ended. One statement, so concurrent logins
    /// each keep the newest `keep` and never end more.
    pub async fn end_sessions_past(
        &self,
        user_id: i64,
        keep: u32,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<Vec<Uuid>> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let ended: Vec<Uuid> = sqlx::query_scalar(
                "update sessions set revoked_at = $2
                  where session_id in (
                    select session_id from (
                      select session_id, row_number() over (order by last_used_at desc, created_at desc) as n
                        from sessions
                       where user_id = $1 and revoked_at is null and expires_at > $2 and last_used_at > $3
                    ) ranked
                     where n > $4)
                 returning session_id",
            )
            .bind(user_id)
            .bind(now)
            .bind(idle_cutoff)
            .bind(i64::from(keep))
            .persistent(prepared)
            .fetch_all(&mut *tx)
            .await?;
            for &session_id in &ended {
                tx.log_revocation(prepared, RevocationKind::Session, SessionChange::Session(session_id)).await?;
            }
            tx.commit().await?;
            Ok(ended)
        }
        .await)
        .map_err(classify)
    }

    /// Deletes the sessions revoked or expired before `ended_before`, or last used before
    /// `unused_since`; returns how many. In batches, so that no one statement holds the
    /// table for long after a long time without pruning.
    pub async fn delete_ended_sessions(
        &self,
        ended_before: DateTime<Utc>,
        unused_since: DateTime<Utc>,
    ) -> StoreResult<u64> {
        in_batches(|| async {
            run!(
                self,
                query(
                    "delete from sessions where session_id in (
                       select session_id from sessions
                        where revoked_at < $1 or expires_at < $1 or last_used_at < $2
                        limit $3)",
                    ended_before,
                    unused_since,
                    PRUNE_BATCH,
                )
                .execute
            )
        })
        .await
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
                concat!(
                    "select ",
                    user_columns!("u."),
                    " from sessions s join users u on u.user_id = s.user_id
                     where s.session_id = $1 and s.user_id = $2 and s.revoked_at is null and s.expires_at > $3
                       and s.credentials_version = u.credentials_version"
                ),
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
    /// Whether [`Store::follow_session_changes`] hears the changes other processes make:
    /// on PostgreSQL; on SQLite it hears only this process's, and another process (such as
    /// `authd client ...`) may change the file unheard.
    pub fn hears_other_processes(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub async fn follow_session_changes(
        &self,
        on_change: &(dyn Fn(SessionChange) + Send + Sync),
    ) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => {
                let (listen, heartbeat) = self.feed.as_ref().context("a PostgreSQL store has a change feed")?;
                postgres::follow_session_changes(pool, self.prepared_statements, listen, *heartbeat, on_change).await
            }
            Pool::Sqlite(_) => {
                // One process owns the file: every change is made here, and heard directly.
                on_change(SessionChange::Listening);
                std::future::pending().await
            }
        }
    }
}
