//! `revocations`: the log of ended sessions and changed users, written where each change is
//! announced. Processes read it to catch up on what their change feed may have missed
//! (after an outage, or at start), and services resume the revocation feed from its `seq`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, SessionChange, Store, StoreResult, classify, postgres, run};

/// What a logged revocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// One session ended (`session_id`).
    Session,
    /// Every session of the user (`user_id`) may have ended, or something about the user
    /// changed: whoever holds its tokens asks again.
    User,
    /// The user (`user_id`) was deleted, with every session.
    UserDeleted,
    /// The service client (`client_id`) changed or was deleted: processes forget its cached
    /// record. Logged by a trigger on `service_clients`; services are not told.
    Client,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
            Self::UserDeleted => "user_deleted",
            Self::Client => "client",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "session" => Some(Self::Session),
            "user" => Some(Self::User),
            "user_deleted" => Some(Self::UserDeleted),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Its place in the log: later rows have greater numbers (though a row may become
    /// visible a moment after a later one, as transactions commit out of order).
    pub seq: i64,
    pub kind: RevocationKind,
    pub session_id: Option<Uuid>,
    pub user_id: Option<i64>,
    pub client_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl Revocation {
    /// The change the in-process revocation set applies for it.
    pub fn change(&self) -> Option<SessionChange> {
        match self.kind {
            RevocationKind::Session => self.session_id.map(SessionChange::Session),
            RevocationKind::User | RevocationKind::UserDeleted => self.user_id.map(SessionChange::User),
            RevocationKind::Client => self.client_id.as_deref().map(SessionChange::client),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    kind: String,
    session_id: Option<Uuid>,
    user_id: Option<i64>,
    client_id: Option<String>,
    at: DateTime<Utc>,
}

impl Row {
    fn into_revocation(self) -> Option<Revocation> {
        let kind = RevocationKind::parse(&self.kind);
        if kind.is_none() {
            tracing::warn!(seq = self.seq, kind = self.kind, "unknown kind of revocation, skipped");
        }
        let Self { seq, session_id, user_id, client_id, at, .. } = self;
        Some(Revocation { seq, kind: kind?, session_id, user_id, client_id, at })
    }
}

/// Gaps read per statement by [`Store::revocations_after`].
const GAP_SLOTS: usize = 16;

pub(super) const INSERT_REVOCATION: &str =
    "insert into revocations (kind, session_id, user_id, at) values ($1, $2, $3, $4) returning seq";

/// Logging a revocation inside the transaction of the change it records, so that the
/// change and its log row commit together or not at all: no process, and no service, can
/// miss a revocation that committed. On PostgreSQL the same statement announces it with
/// NOTIFY, which is delivered at commit (and never for a rolled-back change). The row's time
/// is the database's clock on PostgreSQL (one clock for every process: the trigger on
/// `service_clients` uses it too), and this process's on SQLite (one machine).
pub(super) trait RevocationLog {
    /// Logs `change` (a [`SessionChange::Session`] or [`SessionChange::User`]) as `kind`.
    async fn log_revocation(&mut self, prepared: bool, kind: RevocationKind, change: SessionChange)
    -> sqlx::Result<()>;
}

impl RevocationLog for sqlx::PgConnection {
    async fn log_revocation(
        &mut self,
        prepared: bool,
        kind: RevocationKind,
        change: SessionChange,
    ) -> sqlx::Result<()> {
        postgres::log_and_announce(self, prepared, kind.as_str(), change).await
    }
}

impl RevocationLog for sqlx::SqliteConnection {
    async fn log_revocation(
        &mut self,
        prepared: bool,
        kind: RevocationKind,
        change: SessionChange,
    ) -> sqlx::Result<()> {
        let (session_id, user_id) = match change {
            SessionChange::Session(id) => (Some(id), None),
            SessionChange::User(id) => (None, Some(id)),
            SessionChange::Listening | SessionChange::Unheard | SessionChange::Client(_) => return Ok(()),
        };
        let query = sqlx::query(INSERT_REVOCATION).bind(kind.as_str()).bind(session_id).bind(user_id).bind(Utc::now());
        query.persistent(prepared).execute(self).await.map(|_| ())
    }
}

impl Store {
    /// Tells every process that a user's profile changed (no session ended): nothing is
    /// logged, since a process that may have missed it forgets every cached profile anyway.
    pub(super) async fn announce_profile(&self, user_id: i64) -> StoreResult<()> {
        match &self.pool {
            Pool::Postgres(pool) => {
                postgres::announce(pool, self.prepared_statements, SessionChange::User(user_id)).await.map_err(classify)
            }
            Pool::Sqlite(_) => Ok(()),
        }
    }

    /// The revocations logged after `since` (their own time), oldest first.
    pub async fn revocations_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Revocation>> {
        let rows: Vec<Row> = run!(
            self,
            query_as(
                "select seq, kind, session_id, user_id, client_id, at from revocations where at > $1 order by seq",
                since,
            )
            .fetch_all
        )?;
        Ok(rows.into_iter().filter_map(Row::into_revocation).collect())
    }

    /// The revocations after `seq` and those numbered in `gaps` (rows not seen yet below
    /// `seq`: a row may commit after one of a greater number), in log order.
    pub async fn revocations_after(&self, seq: i64, gaps: &[i64]) -> StoreResult<Vec<Revocation>> {
        let mut rows = Vec::new();
        let mut chunks = gaps.chunks(GAP_SLOTS);
        let mut after = seq;
        loop {
            // One statement shape for both backends: a fixed number of slots, the unused
            // ones 0 (no row has that number); after the first, only the gaps are read.
            let mut slots = [0i64; GAP_SLOTS];
            let chunk = chunks.next().unwrap_or_default();
            slots[..chunk.len()].copy_from_slice(chunk);
            let [g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14, g15, g16] = slots;
            let read: Vec<Row> = run!(
                self,
                query_as(
                    "select seq, kind, session_id, user_id, client_id, at from revocations
                      where seq > $1
                         or seq in ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                      order by seq",
                    after,
                    g1,
                    g2,
                    g3,
                    g4,
                    g5,
                    g6,
                    g7,
                    g8,
                    g9,
                    g10,
                    g11,
                    g12,
                    g13,
                    g14,
                    g15,
                    g16,
                )
                .fetch_all
            )?;
            rows.extend(read.into_iter().filter_map(Row::into_revocation));
            if chunks.len() == 0 {
                break;
            }
            after = i64::MAX;
        }
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// The number of the revocation logged last at or before `at` (by its time), 0 for
    /// none: where a reader that wants what was logged after `at` starts.
    pub async fn revocation_before(&self, at: DateTime<Utc>) -> StoreResult<i64> {
        let seq: Option<i64> = run!(
            self,
            query_scalar("select seq from revocations where at <= $1 order by at desc, seq desc limit 1", at)
                .fetch_optional
        )?;
        Ok(seq.unwrap_or(0))
    }

    /// When the revocation `seq` was logged, if it still is.
    pub async fn revocation_time(&self, seq: i64) -> StoreResult<Option<DateTime<Utc>>> {
        run!(self, query_scalar("select at from revocations where seq = $1", seq).fetch_optional)
    }

    /// Forgets the revocations logged before `before`; returns how many.
    pub async fn prune_revocations(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        run!(self, query("delete from revocations where at < $1", before).execute)
    }
}
