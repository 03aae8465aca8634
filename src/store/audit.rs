//! `audit_events`: the audit trail, written by the core's audit writer and by admin
//! actions, read by the admin API, pruned after `AUDIT_RETENTION_DAYS`.

use chrono::{DateTime, Utc};

use super::{PRUNE_BATCH, Store, StoreResult, in_batches, run};

/// One event to record; every field is free of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: &'static str,
    pub actor_id: Option<String>,
    pub subject_user_id: Option<i64>,
    pub action: &'static str,
    pub outcome: &'static str,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub event_id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub subject_user_id: Option<i64>,
    pub action: String,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// Which events to read: each `None` matches all; newest first, those with an id below
/// `before` (the cursor of the previous page), at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery<'a> {
    pub subject_user_id: Option<i64>,
    pub action: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    pub async fn insert_audit_event(&self, e: &NewAuditEvent) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into audit_events (occurred_at, actor_kind, actor_id, subject_user_id, action, outcome,
                                           client_ip, user_agent, detail)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                e.occurred_at,
                e.actor_kind,
                e.actor_id.as_deref(),
                e.subject_user_id,
                e.action,
                e.outcome,
                e.client_ip.as_deref(),
                e.user_agent.as_deref(),
                e.detail.as_deref(),
            )
            .execute
        )?;
        Ok(())
    }

    /// Events matching `q`, newest (highest id) first. Ids only grow, so paging by id is
    /// stable while events are added: a new event never shows up on a later page.
    pub async fn audit_events(&self, q: &AuditQuery<'_>) -> StoreResult<Vec<AuditRecord>> {
        run!(
            self,
            query_as(
                "select event_id, occurred_at, actor_kind, actor_id, subject_user_id, action, outcome, client_ip,
                        user_agent, detail
                   from audit_events
                  where ($1 is null or subject_user_id = $1) and ($2 is null or action = $2)
                    and ($3 is null or occurred_at >= $3) and ($4 is null or occurred_at < $4)
                    and ($5 is null or event_id < $5)
                  order by event_id desc
                  limit $6",
                q.subject_user_id,
                q.action,
                q.since,
                q.until,
                q.before,
                q.limit,
            )
            .fetch_all
        )
    }

    /// Deletes the events older than `before`; returns how many. In batches, so that no
    /// one statement holds the table for long.
    pub async fn delete_audit_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        in_batches(|| async {
            run!(
                self,
                query(
                    "delete from audit_events where event_id in (
                       select event_id from audit_events where occurred_at < $1 limit $2)",
                    before,
                    PRUNE_BATCH,
                )
                .execute
            )
        })
        .await
    }
}
