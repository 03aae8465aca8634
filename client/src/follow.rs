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

/// How often revocations past their time are swept, at most: not at every event.
const SWEEP_EVERY: i64 = 10;

/// The revocations heard, each until `forget_after` has passed.
#[derive(Default)]
pub(crate) struct Revocations {
    /// When (Unix seconds) the next sweep is due.
    next_sweep: i64,
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
    /// How a token of `session_id` and `user_id` issued at `issued_at` stands; a token
    /// issued up to `leeway` seconds after its user's revocation (by the clock of another
    /// authd process) cannot be told apart from one issued before it.
    pub(crate) fn judge(&self, session_id: &str, user_id: i64, issued_at: i64, leeway: i64) -> Judgement {
        if self.sessions.contains_key(session_id) || self.deleted.contains_key(&user_id) {
            return Judgement::Revoked;
        }
        match self.users.get(&user_id) {
            Some(&changed) if issued_at <= changed.saturating_add(leeway) => Judgement::UserChanged,
            _ => Judgement::NotRevoked,
        }
    }

    /// Applies `event` heard at `now`, and at most every [`SWEEP_EVERY`] seconds forgets
    /// what is older than `keep` seconds.
    pub(crate) fn apply_at(&mut self, event: &Event, now: i64, keep: i64) {
        self.apply(event);
        if now >= self.next_sweep {
            self.forget_before(now - keep);
            self.next_sweep = now + SWEEP_EVERY;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.len() + self.users.len() + self.deleted.len()
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
            Event::SigningKeysChanged(_) | Event::Heartbeat(_) => {}
        }
    }

    fn forget_before(&mut self, before: i64) {
        self.sessions.retain(|_, at| *at >= before);
        self.users.retain(|_, at| *at >= before);
        self.deleted.retain(|_, at| *at >= before);
    }
}

/// How often authd sends a message on an idle feed (a heartbeat).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// Whether the feed is in step: caught up once, and heard from lately.
pub(crate) struct FeedState {
    /// When the last message of a caught-up stream was heard (heartbeats too); `None`
    /// until the first snapshot.
    last_heard: Mutex<Option<Instant>>,
    synced: watch::Sender<bool>,
}

impl Default for FeedState {
    fn default() -> Self {
        Self { last_heard: Mutex::new(None), synced: watch::Sender::new(false) }
    }
}

impl FeedState {
    /// In step when a message was heard within authd's heartbeat interval plus `bound`:
    /// counted from what was heard, not from when a dead stream was found out.
    pub(crate) fn fresh(&self, bound: Duration) -> bool {
        let synced = *self.synced.borrow();
        let heard = self.last_heard.lock().map_or(None, |h| *h);
        synced && heard.is_some_and(|at| at.elapsed() <= HEARTBEAT + bound)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// A message of a caught-up stream was heard.
    fn heard(&self) {
        if let Ok(mut heard) = self.last_heard.lock() {
            *heard = Some(Instant::now());
        }
        self.synced.send_replace(true);
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
    let timeout = inner.config.heartbeat_timeout;
    let answer = tokio::time::timeout(timeout, client.watch_revocations(request)).await;
    let mut events = answer.map_err(|_| tonic::Status::unavailable("authd's feed did not answer"))??.into_inner();
    // Until this stream has caught up (a complete snapshot, or the keys sent after what
    // was missed), what it says does not make the feed fresh.
    let mut caught_up = false;
    loop {
        // authd sends a heartbeat every 5 s: a stream silent for longer than the timeout
        // is dead (a peer gone without a word, a stalled proxy), however open it looks.
        let next = tokio::time::timeout(timeout, events.message()).await;
        let Ok(next) = next else { return Err(tonic::Status::unavailable("no heartbeat from authd's feed")) };
        let Some(event) = next? else { break };
        let Some(body) = &event.event else { continue };
        if matches!(body, Event::Heartbeat(_)) {
            if caught_up {
                inner.feed.heard();
            }
            continue;
        }
        // A snapshot adds to what was known (entries leave with age only): nothing known
        // is ever dropped by a reconnection. A change of the published keys fetches them:
        // new ones are learnt, and those no longer published start their grace.
        let published = match body {
            Event::SigningKeysChanged(keys) => Some(&keys.signing_kids),
            Event::Snapshot(snapshot) if snapshot.complete => Some(&snapshot.signing_kids),
            _ => None,
        };
        if let Some(published) = published
            && !published.is_empty()
            && let Ok(mut keys) = inner.keys.write()
        {
            keys.unpublish_missing(published, Instant::now());
        }
        if let Some(published) = published
            && !published.is_empty()
            && inner.keys_differ(published)
        {
            // Bounded: a GetJwks that hangs must not hold the feed (nor its freshness).
            let _ = tokio::time::timeout(inner.config.heartbeat_timeout, inner.fetch_keys()).await;
        }
        if let Ok(mut revocations) = inner.revocations.write() {
            revocations.apply_at(body, unix_now(), inner.config.forget_after.as_secs() as i64);
        }
        // A snapshot's parts each carry the log's newest cursor: until its last part has
        // arrived, a reconnection must ask for the whole snapshot again, not resume past it.
        if !matches!(body, Event::Snapshot(snapshot) if !snapshot.complete) {
            *cursor = event.cursor;
        }
        match body {
            Event::Snapshot(snapshot) if !snapshot.complete => {}
            Event::SigningKeysChanged(_) | Event::Snapshot(_) => caught_up = true,
            _ => {}
        }
        if caught_up {
            inner.feed.heard();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_revoked(user_id: i64, at: i64) -> Event {
        Event::UserSessionsRevoked(pb::UserSessionsRevoked {
            user_id,
            revoked_at: Some(prost_types::Timestamp { seconds: at, nanos: 0 }),
        })
    }

    fn session_revoked(session_id: &str, at: i64) -> Event {
        Event::SessionRevoked(pb::SessionRevoked {
            session_id: session_id.into(),
            revoked_at: Some(prost_types::Timestamp { seconds: at, nanos: 0 }),
        })
    }

    #[test]
    fn a_token_issued_just_after_its_users_revocation_is_asked_about() {
        let mut revocations = Revocations::default();
        revocations.apply_at(&user_revoked(7, 1000), 1000, 960);
        let judged = |iat, leeway| revocations.judge("s", 7, iat, leeway);
        assert!(matches!(judged(999, 0), Judgement::UserChanged));
        // Issued by a process whose clock is 3 s ahead, before the revocation.
        assert!(matches!(judged(1003, 0), Judgement::NotRevoked), "without leeway: wrongly trusted");
        assert!(matches!(judged(1003, 5), Judgement::UserChanged));
        assert!(matches!(judged(1006, 5), Judgement::NotRevoked));
        assert!(matches!(revocations.judge("s", 8, 1000, 5), Judgement::NotRevoked));
    }

    #[test]
    fn by_default_a_token_from_a_replica_up_to_authds_clock_skew_ahead_is_asked_about() {
        let leeway = crate::Config::new("authd", "authd").revocation_leeway.as_secs() as i64;
        let mut revocations = Revocations::default();
        // Logout everywhere at 1000 (by one replica's clock); a token issued just before it
        // by a replica whose clock is 20 s ahead says 1019.
        revocations.apply_at(&user_revoked(7, 1000), 1000, 960);
        assert!(matches!(revocations.judge("s", 7, 1019, leeway), Judgement::UserChanged));
        assert!(matches!(revocations.judge("s", 7, 1030, leeway), Judgement::UserChanged));
        assert!(matches!(revocations.judge("s", 7, 1031, leeway), Judgement::NotRevoked));
    }

    #[test]
    fn revocations_are_kept_for_the_token_lifetime_and_swept_now_and_then() {
        let keep = 960; // 15 min + 30 s + 30 s: authd's window, not a day
        let mut revocations = Revocations::default();
        revocations.apply_at(&session_revoked("old", 0), 0, keep);
        revocations.apply_at(&session_revoked("a", 100), 100, keep);
        assert_eq!(revocations.len(), 2);
        // Past the old one's time, but within the sweep interval of the last sweep: kept.
        revocations.apply_at(&session_revoked("b", 965), 965, keep);
        assert_eq!(revocations.len(), 2, "the sweep due since 110 ran now, dropping only 'old'");
        revocations.apply_at(&session_revoked("c", 970), 970, keep);
        assert_eq!(revocations.len(), 3, "no sweep within 10 s of the last");
        revocations.apply_at(&session_revoked("d", 1070), 1070, keep);
        assert!(matches!(revocations.judge("a", 1, 50, 0), Judgement::NotRevoked), "'a' (at 100) is past 1070 - 960");
        assert!(matches!(revocations.judge("d", 1, 1000, 0), Judgement::Revoked));
        assert_eq!(revocations.len(), 3);
    }
}
