//! Following authd's revocation feed: the set it keeps, and the task that keeps it,
//! reconnecting (with a backoff) and resuming from the last cursor.

use std::{
    collections::HashMap,
    sync::{Mutex, Weak},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{Inner, pb, unix_now};
use pb::revocation_event::Event;

/// The revocations heard, each until `forget_after` has passed.
#[derive(Default)]
pub(crate) struct Revocations {
    /// Session id → when it ended (Unix seconds).
    sessions: HashMap<String, i64>,
    /// User id → when their sessions last ended, or they changed.
    users: HashMap<i64, i64>,
    /// User id → when deleted.
    deleted: HashMap<i64, i64>,
}

pub(crate) enum Judgement {
    Revoked,
    /// The user's sessions ended (or the user changed) after the token was issued: memory
    /// cannot tell whether the token's session survived.
    UserChanged,
    NotRevoked,
}

impl Revocations {
    pub(crate) fn judge(&self, session_id: &str, user_id: i64, issued_at: i64) -> Judgement {
        if self.sessions.contains_key(session_id) || self.deleted.contains_key(&user_id) {
            return Judgement::Revoked;
        }
        match self.users.get(&user_id) {
            Some(&changed) if issued_at <= changed => Judgement::UserChanged,
            _ => Judgement::NotRevoked,
        }
    }

    fn apply(&mut self, event: &Event) {
        let seconds = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or_else(unix_now, |t| t.seconds);
        match event {
            Event::Snapshot(snapshot) => {
                for s in &snapshot.sessions {
                    self.sessions.insert(s.session_id.clone(), seconds(&s.revoked_at));
                }
                for u in &snapshot.users {
                    let at = self.users.entry(u.user_id).or_default();
                    *at = (*at).max(seconds(&u.revoked_at));
                }
                for u in &snapshot.deleted_users {
                    self.deleted.insert(u.user_id, seconds(&u.deleted_at));
                }
            }
            Event::SessionRevoked(s) => {
                self.sessions.insert(s.session_id.clone(), seconds(&s.revoked_at));
            }
            Event::UserSessionsRevoked(u) => {
                let at = self.users.entry(u.user_id).or_default();
                *at = (*at).max(seconds(&u.revoked_at));
            }
            Event::UserDeleted(u) => {
                self.deleted.insert(u.user_id, seconds(&u.deleted_at));
            }
            Event::SigningKeysChanged(_) => {}
        }
    }

    fn forget_before(&mut self, before: i64) {
        self.sessions.retain(|_, at| *at >= before);
        self.users.retain(|_, at| *at >= before);
        self.deleted.retain(|_, at| *at >= before);
    }
}

/// Whether the feed is in step, and since when it is not.
pub(crate) struct FeedState {
    /// `None` while in step; else since when not (from the start, until the first snapshot).
    down_since: Mutex<Option<Instant>>,
    synced: watch::Sender<bool>,
}

impl Default for FeedState {
    fn default() -> Self {
        Self { down_since: Mutex::new(Some(Instant::now())), synced: watch::Sender::new(false) }
    }
}

impl FeedState {
    pub(crate) fn fresh(&self, bound: Duration) -> bool {
        let synced = *self.synced.borrow();
        let down = self.down_since.lock().map_or(None, |d| *d);
        synced && down.is_none_or(|since| since.elapsed() <= bound)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    fn up(&self) {
        if let Ok(mut down) = self.down_since.lock() {
            *down = None;
        }
        self.synced.send_replace(true);
    }

    fn down(&self) {
        if let Ok(mut down) = self.down_since.lock() {
            down.get_or_insert_with(Instant::now);
        }
    }
}

pub(crate) async fn wait_synced(mut synced: watch::Receiver<bool>) {
    let _ = synced.wait_for(|synced| *synced).await;
}

/// Follows the feed for as long as the verifier lives.
pub(crate) async fn follow(inner: Weak<Inner>) {
    let mut cursor = 0i64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let result = follow_once(&strong, &mut cursor).await;
        strong.feed.down();
        if let Err(e) = result {
            tracing::warn!(error = %e, cursor, "authd's revocation feed broke; reconnecting");
        }
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if inner.strong_count() == 0 {
            return;
        }
    }
}

/// One connection to the feed, until it ends.
async fn follow_once(inner: &Inner, cursor: &mut i64) -> Result<(), tonic::Status> {
    let mut client = pb::auth_service_client::AuthServiceClient::new(inner.channel.clone());
    let mut request = tonic::Request::new(pb::WatchRevocationsRequest { cursor: *cursor });
    if let Some(authorization) = &inner.config.authorization {
        let value = authorization.parse().map_err(|_| tonic::Status::invalid_argument("authorization"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut events = client.watch_revocations(request).await?.into_inner();
    while let Some(event) = events.message().await? {
        let Some(body) = &event.event else { continue };
        // A snapshot adds to what was known (entries leave with age only): nothing known
        // is ever dropped by a reconnection.
        if let Event::SigningKeysChanged(keys) = body
            && keys.signing_kids.iter().any(|kid| !inner.knows_key(kid))
        {
            let _ = inner.fetch_keys().await;
        }
        if let Ok(mut revocations) = inner.revocations.write() {
            revocations.apply(body);
            revocations.forget_before(unix_now() - inner.config.forget_after.as_secs() as i64);
        }
        // A snapshot's parts each carry the log's newest cursor: until its last part has
        // arrived, a reconnection must ask for the whole snapshot again, not resume past it.
        if !matches!(body, Event::Snapshot(snapshot) if !snapshot.complete) {
            *cursor = event.cursor;
        }
        match body {
            Event::Snapshot(snapshot) if !snapshot.complete => {}
            Event::SigningKeysChanged(_) | Event::Snapshot(_) => inner.feed.up(),
            _ => {}
        }
    }
    Ok(())
}
