//! The audit trail: every security event (see `events`) and every admin action, kept in
//! the store's `audit_events` for `AUDIT_RETENTION_DAYS`, beside the log line.
//!
//! Security events are queued and written by a background task ([`Authd::write_audit`]),
//! so that a request never waits for them and a flood of refusals cannot turn into a
//! flood of writes: past [`QUEUE`] events waiting, further ones are dropped (and counted
//! in the log). Admin actions are written before the action is answered
//! ([`Audit::write`]): an operator's change is never left unrecorded.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{
    Authd, Caller, ClientInfo, Error, Result,
    admin::{cursor, next_page, page_size},
    timestamp,
};
use crate::{
    domain::Violations,
    pb,
    store::{AuditQuery, NewAuditEvent, Store},
};

/// Events waiting to be written, at most.
const QUEUE: usize = 10_000;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Nobody known: a failed login for an unknown address, a refused call.
    Anonymous,
    /// A user acting on their own account.
    User(i64),
    /// A user with the `admin` role, through the admin API.
    Admin(i64),
    /// A service client, by its id.
    Client(String),
    /// Whoever runs the command line (`authd admin ...`, `authd client ...`).
    Operator,
}

impl Actor {
    fn kind(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User(_) => "user",
            Self::Admin(_) => "admin",
            Self::Client(_) => "client",
            Self::Operator => "operator",
        }
    }

    fn id(&self) -> Option<String> {
        match self {
            Self::User(id) | Self::Admin(id) => Some(id.to_string()),
            Self::Client(id) => Some(id.clone()),
            Self::Anonymous | Self::Operator => None,
        }
    }
}

/// One event: who, on whose account, what, how it went, from where, and details that are
/// never secret (ids, reasons, counts).
pub struct Event<'a> {
    pub actor: Actor,
    pub subject: Option<i64>,
    pub action: &'static str,
    pub outcome: &'static str,
    pub client: &'a ClientInfo,
    pub detail: Option<String>,
}

impl Event<'_> {
    fn record(self, at: DateTime<Utc>) -> NewAuditEvent {
        NewAuditEvent {
            occurred_at: at,
            actor_kind: self.actor.kind(),
            actor_id: self.actor.id(),
            subject_user_id: self.subject,
            action: self.action,
            outcome: self.outcome,
            client_ip: self.client.ip.clone(),
            user_agent: self.client.user_agent.clone(),
            detail: self.detail,
        }
    }
}

/// Where events go: the queue of the background writer, or straight to the store.
#[derive(Clone)]
pub struct Audit {
    store: Arc<Store>,
    queue: mpsc::Sender<NewAuditEvent>,
    /// The queue's other end, until the writer takes it.
    pending: Arc<Mutex<Option<mpsc::Receiver<NewAuditEvent>>>>,
    dropped: Arc<AtomicU64>,
}

impl Audit {
    pub fn new(store: Arc<Store>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        Self { store, queue, pending: Arc::new(Mutex::new(Some(pending))), dropped: Arc::default() }
    }

    /// Queues a security event for the writer; never waits.
    pub fn record(&self, event: Event<'_>) {
        if self.queue.try_send(event.record(Utc::now())).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "audit queue full: security events dropped from the audit trail (still logged)"
                );
            }
        }
    }

    /// Writes an event now, as part of the action it records.
    pub async fn write(&self, event: Event<'_>) -> Result<()> {
        Ok(self.store.insert_audit_event(&event.record(Utc::now())).await?)
    }
}

/// Admin actions that only read an account: left out of the account's own activity.
const ADMIN_READS: [&str; 5] =
    ["admin_access", "admin_get_user", "admin_list_users", "admin_list_audit_events", "admin_list_clients"];

impl Authd {
    /// Writes the queued security events to the store, for as long as the server runs.
    pub async fn write_audit(&self) {
        let receiver = self.audit.pending.lock().ok().and_then(|mut pending| pending.take());
        let Some(mut receiver) = receiver else { return };
        while let Some(event) = receiver.recv().await {
            if let Err(e) = self.store.insert_audit_event(&event).await {
                tracing::warn!(error = format!("{e:#}"), action = event.action, "could not write an audit event");
            }
        }
    }

    /// The caller's own security activity, newest first, in pages: every event on their
    /// account, without the actors' ids or the details.
    pub async fn my_activity(
        &self,
        caller: &Caller,
        req: &pb::GetMyActivityRequest,
    ) -> Result<pb::GetMyActivityResponse> {
        let mut v = Violations::default();
        let limit = v.check("page_size", page_size(req.page_size));
        let before = v.check("page_token", cursor(&req.page_token, i64::MAX));
        let (limit, before) = v.finish(|| Some((limit?, before?))).map_err(Error::InvalidInput)?;
        let query = AuditQuery {
            subject_user_id: Some(caller.user.user_id),
            before: Some(before),
            limit: limit + 1,
            ..AuditQuery::default()
        };
        let mut events = self.store.audit_events(&query).await?;
        let next_page_token = next_page(&mut events, limit, |e| e.event_id);
        let events = events
            .into_iter()
            // An operator looking at the account is not the account's activity.
            .filter(|e| !ADMIN_READS.contains(&e.action.as_str()))
            .map(|e| {
                // Where an admin, a service or an operator acted from is theirs, not the
                // user's to see; the user's own and strangers' (failed logins) are.
                let own = matches!(e.actor_kind.as_str(), "user" | "anonymous");
                pb::ActivityEvent {
                    occurred_at: Some(timestamp(e.occurred_at)),
                    action: e.action,
                    outcome: e.outcome,
                    actor_kind: e.actor_kind,
                    client_ip: if own { e.client_ip.unwrap_or_default() } else { String::new() },
                    user_agent: if own { e.user_agent.unwrap_or_default() } else { String::new() },
                }
            })
            .collect();
        Ok(pb::GetMyActivityResponse { events, next_page_token })
    }

    /// Deletes the audit events past the retention; returns how many.
    pub async fn prune_audit(&self) -> Result<u64> {
        Ok(self.store.delete_audit_events(Utc::now() - self.audit_retention).await?)
    }
}
