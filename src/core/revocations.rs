//! The revocation feed for services that check access tokens themselves
//! (`AuthService.WatchRevocations`): a snapshot of the revocations that still matter, then
//! each new one as it happens, and each change of the signing keys; resumable from the
//! `cursor` (the revocation log's `seq`) of the last event a service received.
//!
//! Only services may follow it: a service client with the `revocations` scope (by its
//! secret, a service token, or a client certificate mapped to it), or a caller sending a
//! key of `REVOCATIONS_SERVICE_KEYS`, in [`Authd::authorize_watcher`].

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use sha2::Digest;
use tokio::sync::mpsc;

use super::{Authd, ClientInfo, Error, Result, bearer_token, timestamp};
use crate::{
    pb::{self, revocation_event::Event},
    store::{Revocation, RevocationKind},
};

/// How far before the time of the revocation a service resumes from its feed reads the log
/// again: a row may commit after one with a greater number, as long after its own time as
/// its transaction takes to commit (usually within [`crate::store::LONGEST_COMMIT_DELAY`]).
/// A running feed needs no such bound: it remembers the numbers it has not seen.
const RECENT: chrono::Duration = chrono::Duration::seconds(crate::store::LONGEST_COMMIT_DELAY.as_secs() as i64 + 2);
/// How often a heartbeat is sent on every feed, so that a service finds a dead stream out
/// (authd-client waits 15 s, three heartbeats).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Gaps remembered per feed at most, the newest kept (a sequence that jumps, as
/// PostgreSQL's may after a crash, leaves at most 32; each look reads 16 per statement).
const MOST_GAPS: usize = 256;
/// Entries per snapshot message: 1,000 entries are about 60 KiB, well under any
/// client's message limit.
const SNAPSHOT_CHUNK: usize = 1000;
/// How often the log is read when nothing signalled a change: the feed may be down, and
/// other processes' revocations then go unheard.
const POLL: Duration = Duration::from_secs(1);

/// A service allowed to follow the revocations, by the name it is known by.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub name: String,
    /// A service client's credentials, asked again while its feed runs, so that a deleted
    /// client, a rotated-out secret, a scope taken away or an expired service token ends
    /// the feed (a configured service key needs no second look).
    recheck: Option<(Option<String>, ClientInfo)>,
}

/// How often a service client's right to its feed is checked again.
const RECHECK: Duration = Duration::from_secs(5);

impl Authd {
    /// The service calling: one sending a key of `REVOCATIONS_SERVICE_KEYS`
    /// (`authorization: Bearer <key>`), or a service client holding the `revocations`
    /// scope, by its credentials or its client certificate (see
    /// [`Authd::authenticate_client`]); anyone else is refused.
    pub async fn authorize_watcher(&self, authorization: Option<&str>, client: &ClientInfo) -> Result<Watcher> {
        if let Some(key) = authorization.and_then(bearer_token) {
            let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
            if let Some(known) = self.token_settings.service_keys.iter().find(|k| same_digest(&k.digest, &digest)) {
                return Ok(Watcher { name: known.name.clone(), recheck: None });
            }
        }
        let caller = self.authenticate_client(authorization, client).await?;
        if !caller.has("revocations") {
            return Err(Error::PermissionDenied("WatchRevocations needs a client with the revocations scope."));
        }
        Ok(Watcher { name: caller.client_id, recheck: Some((authorization.map(str::to_owned), client.clone())) })
    }

    /// Starts following the revocations for `watcher`, from `cursor` (0: a snapshot);
    /// the events arrive on the receiver until it is dropped.
    pub fn watch_revocations(
        &self,
        watcher: Watcher,
        cursor: i64,
    ) -> Result<mpsc::Receiver<Result<pb::RevocationEvent>>> {
        if cursor < 0 {
            return Err(Error::invalid("cursor", "must not be negative"));
        }
        let (sender, receiver) = mpsc::channel(64);
        let authd = self.clone();
        tokio::spawn(async move {
            tracing::info!(service = watcher.name, cursor, "a service follows the revocations");
            let mut feed = Feed { sender, last_seq: 0, gaps: BTreeMap::new() };
            let result = authd.feed_revocations(&mut feed, cursor, &watcher).await;
            match result {
                Ok(()) => tracing::info!(service = watcher.name, "the service stopped following the revocations"),
                Err(e) => {
                    tracing::warn!(service = watcher.name, error = %e, "the revocation feed failed");
                    let _ = feed.sender.send(Err(e)).await;
                }
            }
        });
        Ok(receiver)
    }

    /// Sends the snapshot or what was missed since `cursor`, then each change. Returns
    /// when the service is gone; fails when the store does.
    async fn feed_revocations(&self, feed: &mut Feed, cursor: i64, watcher: &Watcher) -> Result<()> {
        let mut changes = self.cache.subscribe();
        let mut kids = self.kids.subscribe();
        let signing_kids = kids.borrow_and_update().clone();
        let window = self.cache.window();
        let resumed_at = match cursor {
            0 => None,
            cursor => self.store.revocation_time(cursor).await?,
        };
        match resumed_at {
            Some(at) => {
                // What the service may have missed: every row after the cursor, and those
                // below it that may have committed since it last heard.
                let from = self.store.revocation_before(at - RECENT).await?;
                let missed = self.store.revocations_after(from, &[]).await?;
                feed.last_seq = from;
                if !feed.send_new(missed, window).await {
                    return Ok(());
                }
                // Last: a service takes the keys as the sign that it has caught up.
                let keys = Event::SigningKeysChanged(pb::SigningKeysChanged { signing_kids });
                if !feed.send(feed.last_seq, keys).await {
                    return Ok(());
                }
            }
            None => {
                let from = self.store.revocation_before(Utc::now() - window).await?;
                let snapshot = self.store.revocations_after(from, &[]).await?;
                if !feed.send_snapshot(from, snapshot, signing_kids).await {
                    return Ok(());
                }
            }
        }
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = feed.sender.closed() => return Ok(()),
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
                changed = kids.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let signing_kids = kids.borrow_and_update().clone();
                    let keys = Event::SigningKeysChanged(pb::SigningKeysChanged { signing_kids });
                    if !feed.send(feed.last_seq, keys).await {
                        return Ok(());
                    }
                    continue;
                }
                _ = heartbeat.tick() => {
                    if !feed.send(feed.last_seq, Event::Heartbeat(pb::Heartbeat {})).await {
                        return Ok(());
                    }
                    continue;
                }
                _ = poll.tick() => {}
                _ = recheck.tick(), if watcher.recheck.is_some() => {
                    if let Some((authorization, client)) = &watcher.recheck {
                        self.authorize_watcher(authorization.as_deref(), client).await?;
                    }
                    continue;
                }
            }
            feed.forget_old_gaps(window);
            let gaps: Vec<i64> = feed.gaps.keys().copied().collect();
            let new = self.store.revocations_after(feed.last_seq, &gaps).await?;
            if !feed.send_new(new, window).await {
                return Ok(());
            }
        }
    }
}

/// One service's feed: where it stands, and the numbers below it not seen yet.
struct Feed {
    sender: mpsc::Sender<Result<pb::RevocationEvent>>,
    /// The greatest number read from the log.
    last_seq: i64,
    /// Numbers below `last_seq` not read yet, with when they were found missing: a row
    /// still to commit (however late, whatever its time says), or one rolled back (which
    /// never comes, so it is forgotten after a token's lifetime, when it no longer matters).
    gaps: BTreeMap<i64, tokio::time::Instant>,
}

impl Feed {
    /// Sends one event; false when the service is gone.
    async fn send(&self, cursor: i64, event: Event) -> bool {
        self.sender.send(Ok(pb::RevocationEvent { cursor, event: Some(event) })).await.is_ok()
    }

    /// Sends each revocation of `revocations` (read after `last_seq` or in the gaps), in
    /// log order.
    async fn send_new(&mut self, revocations: Vec<Revocation>, window: chrono::Duration) -> bool {
        for revocation in revocations {
            self.read(revocation.seq);
            let Some(event) = event(&revocation) else { continue };
            if !self.send(self.last_seq, event).await {
                return false;
            }
        }
        self.forget_old_gaps(window);
        true
    }

    /// Notes that the row `seq` was read: a gap filled, or a new last number, the numbers
    /// skipped to reach it becoming gaps.
    fn read(&mut self, seq: i64) {
        if seq <= self.last_seq {
            self.gaps.remove(&seq);
            return;
        }
        let now = tokio::time::Instant::now();
        let skipped = self.last_seq.saturating_add(1)..seq;
        let skipped = skipped.start.max(seq.saturating_sub(MOST_GAPS as i64))..seq;
        for gap in skipped {
            self.gaps.insert(gap, now);
        }
        if self.gaps.len() > MOST_GAPS {
            tracing::warn!(
                gaps = self.gaps.len(),
                "too many numbers missing from the revocation log; the oldest are no longer looked for"
            );
            while self.gaps.len() > MOST_GAPS {
                self.gaps.pop_first();
            }
        }
        self.last_seq = seq;
    }

    /// Forgets the gaps older than `window`: a row that has not committed in that time was
    /// rolled back, or revokes tokens that have all expired.
    fn forget_old_gaps(&mut self, window: chrono::Duration) {
        let window = window.to_std().unwrap_or(Duration::MAX);
        self.gaps.retain(|_, found| found.elapsed() < window);
    }

    /// Sends `revocations` as a snapshot, in parts, the last one `complete`.
    async fn send_snapshot(&mut self, from: i64, revocations: Vec<Revocation>, signing_kids: Vec<String>) -> bool {
        self.last_seq = from;
        for revocation in &revocations {
            self.read(revocation.seq);
        }
        let parts = revocations.chunks(SNAPSHOT_CHUNK).count().max(1);
        let mut chunks = revocations.chunks(SNAPSHOT_CHUNK);
        for part in 1..=parts {
            let mut snapshot = pb::RevocationSnapshot { complete: part == parts, ..Default::default() };
            for revocation in chunks.next().unwrap_or_default() {
                match event(revocation) {
                    Some(Event::SessionRevoked(s)) => snapshot.sessions.push(s),
                    Some(Event::UserSessionsRevoked(u)) => snapshot.users.push(u),
                    Some(Event::UserDeleted(u)) => snapshot.deleted_users.push(u),
                    _ => {}
                }
            }
            if snapshot.complete {
                snapshot.signing_kids.clone_from(&signing_kids);
            }
            if !self.send(self.last_seq, Event::Snapshot(snapshot)).await {
                return false;
            }
        }
        true
    }
}

/// The event that tells a service of `revocation`.
fn event(revocation: &Revocation) -> Option<Event> {
    let at = Some(timestamp(revocation.at));
    Some(match revocation.kind {
        RevocationKind::Session => {
            Event::SessionRevoked(pb::SessionRevoked { session_id: revocation.session_id?.to_string(), revoked_at: at })
        }
        RevocationKind::User => {
            Event::UserSessionsRevoked(pb::UserSessionsRevoked { user_id: revocation.user_id?, revoked_at: at })
        }
        RevocationKind::UserDeleted => {
            Event::UserDeleted(pb::UserDeleted { user_id: revocation.user_id?, deleted_at: at })
        }
        // A change to one of authd's own service clients: nothing for services to refuse.
        RevocationKind::Client => return None,
    })
}

/// Compares two digests in time independent of where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
