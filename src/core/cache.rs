//! The in-process revocation set and user cache, so that checking an access token (GetMe,
//! ValidateToken, every bearer route) needs no database round trip.
//!
//! A signature- and claim-valid access token is live unless its session ended, or its user
//! changed since the store last confirmed the session. The set keeps only what is younger
//! than an access token's lifetime plus leeway (older tokens are refused on their `exp`),
//! so it stays small. Changes made here apply at once; other processes announce theirs
//! (PostgreSQL NOTIFY); and whenever this process (re)starts hearing them, it first reads
//! the revocations logged since it last heard (`Store::revocations_since`), so an outage
//! loses nothing. Until then, and whenever the feed is down, every check asks the store.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{ClientKey, ClientRecord, Revocation, SessionChange, UserRecord};

/// How often expired entries are swept, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub struct SessionCache {
    /// Off (`SESSION_CACHE_SECONDS=0`): every check asks the store.
    enabled: bool,
    /// How long a revocation matters: an access token's lifetime, plus leeway.
    window: chrono::Duration,
    /// How far before going deaf a resync starts reading: the time the feed takes to be
    /// found down, plus clock differences between processes.
    resync_margin: chrono::Duration,
    listening: AtomicBool,
    /// Counts every change applied, so that an answer read from the store before a change
    /// is not trusted after it (a GetMe racing a logout must not revive the session).
    changes: AtomicU64,
    /// Counts the times the user and client caches were emptied, for the same reason.
    epoch: AtomicU64,
    state: RwLock<State>,
    users: Lru<i64, UserRecord>,
    /// Service clients by id, and by the client certificate identity mapped to them.
    clients: Lru<ClientLookup, ClientRecord>,
    /// Whether a change to a client made by another process is heard: not on SQLite, where
    /// `authd client ...` changes the file with no feed to tell the server.
    clients_heard: bool,
    /// Counts the client changes applied, as `changes` does for every change.
    client_changes: AtomicU64,
    /// Bumped with every change applied, for the services' revocation feeds to look.
    signal: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Sessions that ended, until every token of theirs has expired.
    ended: HashMap<Uuid, DateTime<Utc>>,
    /// Users that changed (perhaps ending their sessions): the change count of the latest
    /// change, and until when it matters.
    changed: HashMap<i64, (u64, DateTime<Utc>)>,
    /// Sessions of changed users that the store confirmed live: their user, and the change
    /// count when the store was asked.
    confirmed: HashMap<Uuid, (i64, u64)>,
    /// When this process stopped hearing changes; `None` while it hears them.
    deaf_since: Option<DateTime<Utc>>,
    /// Whether a resync ever completed: before it, nothing is known of past revocations.
    synced: bool,
    next_sweep: Option<DateTime<Utc>>,
}

/// When a store look-up began, as the cache counts changes: see [`SessionCache::ask`].
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    changes: u64,
    client_changes: u64,
    epoch: u64,
}

/// How a service client is looked up: by its id, or by its client certificate's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientLookup {
    Id(String),
    Certificate(String),
}

/// Service clients cached at most: few services call one authd.
const CLIENTS_CACHED: usize = 1024;

/// What memory says of a token's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Ended: refuse, whatever the store would say.
    Ended,
    /// Live: no revocation touches it.
    Live,
    /// Memory cannot tell (the feed is down, or the user changed since the session was
    /// last confirmed): ask the store.
    Unknown,
}

impl SessionCache {
    /// `enabled` false asks the store for every check; `users` bounds the user cache;
    /// `clients_heard` says whether other processes' changes to service clients are heard
    /// (else every client check asks the store).
    pub fn new(enabled: bool, window: Duration, resync_margin: Duration, users: usize, clients_heard: bool) -> Self {
        let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self {
            enabled,
            window: duration(window),
            resync_margin: duration(resync_margin),
            listening: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            state: RwLock::new(State::default()),
            users: Lru::new(users),
            clients: Lru::new(CLIENTS_CACHED),
            clients_heard,
            client_changes: AtomicU64::new(0),
            signal: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes whenever a change is applied.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signal.subscribe()
    }

    /// How long a revocation matters.
    pub fn window(&self) -> chrono::Duration {
        self.window
    }

    /// Whether the session `session_id` of `user_id` is live, as far as memory can tell.
    pub fn liveness(&self, session_id: Uuid, user_id: i64) -> Liveness {
        let Ok(state) = self.state.read() else { return Liveness::Unknown };
        // An ended session stays ended: known even while the feed is down.
        if state.ended.contains_key(&session_id) {
            return Liveness::Ended;
        }
        if !self.enabled || !self.listening.load(Ordering::Acquire) {
            return Liveness::Unknown;
        }
        match state.changed.get(&user_id) {
            None => Liveness::Live,
            Some(&(changed, _)) => match state.confirmed.get(&session_id) {
                Some(&(user, asked)) if user == user_id && asked >= changed => Liveness::Live,
                _ => Liveness::Unknown,
            },
        }
    }

    /// The cached profile of `user_id`, while changes are heard.
    pub fn user(&self, user_id: i64) -> Option<Arc<UserRecord>> {
        if !self.enabled || !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.users.get(&user_id)
    }

    /// The cached record of a service client, while every change to clients is heard.
    pub fn client(&self, lookup: &ClientLookup) -> Option<Arc<ClientRecord>> {
        if !self.trusts_clients() {
            return None;
        }
        self.clients.get(lookup)
    }

    /// Keeps a client's `record` as the store gave it for `lookup` in a look-up begun at
    /// `asked`, unless a client changed since, or the cache was emptied.
    pub fn put_client(&self, lookup: ClientLookup, record: Arc<ClientRecord>, asked: Asked) {
        if !self.trusts_clients() {
            return;
        }
        // Under the lock that `apply`, `deafen` and `resynced` take before changing anything.
        let Ok(state) = self.state.read() else { return };
        if self.client_changes.load(Ordering::Acquire) != asked.client_changes
            || self.epoch.load(Ordering::Acquire) != asked.epoch
        {
            return;
        }
        self.clients.put(lookup, record);
        drop(state);
    }

    fn trusts_clients(&self) -> bool {
        self.enabled && self.clients_heard && self.listening.load(Ordering::Acquire)
    }

    /// Taken just before asking the store, and handed back with its answer.
    pub fn ask(&self) -> Asked {
        Asked {
            changes: self.changes.load(Ordering::Acquire),
            client_changes: self.client_changes.load(Ordering::Acquire),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// Keeps `user` as the store gave it in a look-up begun at `asked`, unless the user
    /// changed since, or the cache was emptied.
    pub fn put_user(&self, user: Arc<UserRecord>, asked: Asked) {
        // Only while changes are heard: a profile read while deaf may have missed one.
        if !self.enabled || !self.listening.load(Ordering::Acquire) {
            return;
        }
        // Under the lock that `apply`, `deafen` and `resynced` take before changing anything.
        let Ok(state) = self.state.read() else { return };
        let changed_since = state.changed.get(&user.user_id).is_some_and(|&(changed, _)| changed > asked.changes);
        if changed_since || self.epoch.load(Ordering::Acquire) != asked.epoch {
            return;
        }
        self.users.put(user.user_id, user);
        drop(state);
    }

    /// Records the store's answer for a session memory could not judge, asked at `asked`:
    /// live (with its user), or not (ended for good: a session never comes back).
    pub fn confirmed(&self, session_id: Uuid, user: Option<&Arc<UserRecord>>, asked: Asked) {
        if !self.enabled {
            return;
        }
        match user {
            None => {
                let until = Utc::now() + self.window;
                if let Ok(mut state) = self.state.write() {
                    state.ended.insert(session_id, until);
                }
            }
            Some(user) => {
                if let Ok(mut state) = self.state.write()
                    && state.changed.contains_key(&user.user_id)
                {
                    state.confirmed.insert(session_id, (user.user_id, asked.changes));
                }
                self.put_user(Arc::clone(user), asked);
            }
        }
    }

    /// Applies a change made here, or heard from another process, at once.
    pub fn apply(&self, change: SessionChange) {
        self.apply_at(change, Utc::now());
    }

    fn apply_at(&self, change: SessionChange, at: DateTime<Utc>) {
        let until = at + self.window;
        let Ok(mut state) = self.state.write() else { return };
        if let SessionChange::Client(key) = change {
            // Whenever it was made: a cached record may predate it.
            self.client_changes.fetch_add(1, Ordering::AcqRel);
            self.clients.retain(|record| ClientKey::of(&record.client_id) != key);
        }
        let now = Utc::now();
        if until <= now {
            return;
        }
        let count = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        match change {
            SessionChange::Session(id) => {
                let entry = state.ended.entry(id).or_insert(until);
                *entry = (*entry).max(until);
            }
            SessionChange::User(user_id) => {
                let entry = state.changed.entry(user_id).or_insert((count, until));
                *entry = (count, entry.1.max(until));
                self.users.remove(&user_id);
            }
            // Applied above.
            SessionChange::Client(_) => {}
            // The feed's own state: see `deafen` and `resynced`.
            SessionChange::Listening | SessionChange::Unheard => {}
        }
        if state.next_sweep.is_none_or(|at| at <= now) {
            state.ended.retain(|_, until| *until > now);
            state.changed.retain(|_, (_, until)| *until > now);
            let State { confirmed, changed, .. } = &mut *state;
            confirmed.retain(|_, (user, _)| changed.contains_key(user));
            state.next_sweep = Some(now + SWEEP_EVERY);
        }
        self.signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops trusting memory: changes made elsewhere may go unheard from now on. Cached
    /// profiles are forgotten (a profile change is not logged for a resync to find).
    pub fn deafen(&self) {
        let Ok(mut state) = self.state.write() else { return };
        self.listening.store(false, Ordering::Release);
        if state.synced {
            state.deaf_since.get_or_insert_with(Utc::now);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.clear();
        self.clients.clear();
    }

    /// From when a resync must read the log: a little before this process went deaf, or
    /// the whole window at the first one.
    pub fn resync_from(&self) -> DateTime<Utc> {
        let oldest = Utc::now() - self.window;
        let Ok(state) = self.state.read() else { return oldest };
        match (state.synced, state.deaf_since) {
            (true, Some(deaf)) => (deaf - self.resync_margin).max(oldest),
            // Never deaf since the last resync (a reconnection that lost no heartbeat).
            (true, None) => (Utc::now() - self.resync_margin).max(oldest),
            (false, _) => oldest,
        }
    }

    /// Applies the revocations a resync read, then trusts memory again: every change is
    /// heard from now on, and none before was missed.
    pub fn resynced(&self, revocations: &[Revocation]) {
        for revocation in revocations {
            if let Some(change) = revocation.change() {
                self.apply_at(change, revocation.at);
            }
        }
        let Ok(mut state) = self.state.write() else { return };
        state.synced = true;
        state.deaf_since = None;
        // A profile read before now may predate a change that was not heard.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.clear();
        self.clients.clear();
        self.listening.store(true, Ordering::Release);
    }

    /// Whether changes made elsewhere are heard: memory is trusted.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// How many revocations, and cached users, are held.
    pub fn sizes(&self) -> (usize, usize) {
        let revocations = self.state.read().map_or(0, |s| s.ended.len() + s.changed.len());
        (revocations, self.users.len())
    }
}

/// Records by key, bounded: past the capacity the least recently used eighth is dropped
/// at once (a sort every capacity/8 insertions), so that a read needs only a read lock.
struct Lru<K, V> {
    capacity: usize,
    clock: AtomicU64,
    entries: RwLock<HashMap<K, (Arc<V>, AtomicU64)>>,
}

impl<K: std::hash::Hash + Eq, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self { capacity, clock: AtomicU64::new(0), entries: RwLock::new(HashMap::new()) }
    }

    fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let entries = self.entries.read().ok()?;
        let (value, used) = entries.get(key)?;
        used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(Arc::clone(value))
    }

    fn put(&self, key: K, value: Arc<V>) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.write() else { return };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let mut ages: Vec<u64> = entries.values().map(|(_, used)| used.load(Ordering::Relaxed)).collect();
            // Uses are numbered apart, so exactly `cut` entries are older than the one at `cut`.
            let cut = (self.capacity / 8).max(1);
            if cut < ages.len() {
                let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
                entries.retain(|_, (_, used)| used.load(Ordering::Relaxed) >= oldest_kept);
            } else {
                entries.clear();
            }
        }
        let used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
        entries.insert(key, (value, used));
    }

    fn remove(&self, key: &K) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(key);
        }
    }

    /// Keeps only the entries whose value `keep` says to.
    fn retain(&self, keep: impl Fn(&V) -> bool) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, (value, _)| keep(value));
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    fn len(&self) -> usize {
        self.entries.read().map_or(0, |e| e.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::RevocationKind;

    use super::*;

    fn user(user_id: i64) -> Arc<UserRecord> {
        Arc::new(UserRecord {
            user_id,
            name: "n".into(),
            email: "e@example.com".into(),
            location: "l".into(),
            about: None,
            password: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            credentials_version: 0,
            email_verified_at: None,
        })
    }

    fn cache() -> SessionCache {
        SessionCache::new(true, Duration::from_secs(60), Duration::from_secs(5), 100, true)
    }

    #[test]
    fn nothing_is_trusted_until_a_resync_and_while_deaf() {
        let cache = cache();
        let sid = Uuid::new_v4();
        assert_eq!(cache.liveness(sid, 1), Liveness::Unknown);
        cache.put_user(user(1), cache.ask());
        assert!(cache.user(1).is_none());
        cache.resynced(&[]);
        assert_eq!(cache.liveness(sid, 1), Liveness::Live);
        cache.put_user(user(1), cache.ask());
        assert!(cache.user(1).is_some());
        cache.deafen();
        assert_eq!(cache.liveness(sid, 1), Liveness::Unknown);
        assert!(cache.user(1).is_none());
        cache.resynced(&[]);
        assert!(cache.user(1).is_none(), "profiles are forgotten while deaf");
    }

    #[test]
    fn an_ended_session_stays_ended_even_while_deaf() {
        let cache = cache();
        cache.resynced(&[]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.apply(SessionChange::Session(a));
        assert_eq!(cache.liveness(a, 1), Liveness::Ended);
        assert_eq!(cache.liveness(b, 1), Liveness::Live);
        cache.deafen();
        assert_eq!(cache.liveness(a, 1), Liveness::Ended);
    }

    #[test]
    fn a_changed_user_is_asked_about_once_per_session() {
        let cache = cache();
        cache.resynced(&[]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put_user(user(1), cache.ask());
        cache.apply(SessionChange::User(1));
        assert!(cache.user(1).is_none(), "the profile is dropped");
        assert_eq!(cache.liveness(a, 1), Liveness::Unknown);
        assert_eq!(cache.liveness(a, 2), Liveness::Live, "other users are untouched");
        cache.confirmed(a, Some(&user(1)), cache.ask());
        assert_eq!(cache.liveness(a, 1), Liveness::Live);
        assert_eq!(cache.liveness(b, 1), Liveness::Unknown);
        cache.confirmed(b, None, cache.ask());
        assert_eq!(cache.liveness(b, 1), Liveness::Ended);
        // A later change asks again.
        cache.apply(SessionChange::User(1));
        assert_eq!(cache.liveness(a, 1), Liveness::Unknown);
    }

    #[test]
    fn an_answer_that_predates_a_change_is_not_trusted() {
        let cache = cache();
        cache.resynced(&[]);
        let sid = Uuid::new_v4();
        // A GetMe asks the store, and a logout everywhere lands before it answers.
        let asked = cache.ask();
        cache.apply(SessionChange::User(1));
        cache.confirmed(sid, Some(&user(1)), asked);
        assert_eq!(cache.liveness(sid, 1), Liveness::Unknown, "the late answer must not revive the session");
        assert!(cache.user(1).is_none());
        cache.confirmed(sid, Some(&user(1)), cache.ask());
        assert_eq!(cache.liveness(sid, 1), Liveness::Live);
        // A profile read before the cache was emptied is not kept either.
        let asked = cache.ask();
        cache.deafen();
        cache.resynced(&[]);
        cache.put_user(user(1), asked);
        assert!(cache.user(1).is_none());
    }

    #[test]
    fn a_resync_applies_what_was_missed_and_skips_what_no_longer_matters() {
        let cache = cache();
        let (recent, old) = (Uuid::new_v4(), Uuid::new_v4());
        let at = |ago: i64| Utc::now() - chrono::Duration::seconds(ago);
        let revocation = |seq, session: Uuid, ago| Revocation {
            seq,
            kind: RevocationKind::Session,
            session_id: Some(session),
            user_id: None,
            client_id: None,
            at: at(ago),
        };
        let deleted = Revocation {
            seq: 3,
            kind: RevocationKind::UserDeleted,
            session_id: None,
            user_id: Some(7),
            client_id: None,
            at: at(1),
        };
        cache.resynced(&[revocation(1, old, 120), revocation(2, recent, 10), deleted]);
        assert_eq!(cache.liveness(recent, 1), Liveness::Ended);
        assert_eq!(cache.liveness(old, 1), Liveness::Live, "older than the window: its tokens expired");
        assert_eq!(cache.liveness(Uuid::new_v4(), 7), Liveness::Unknown);
        // The first resync reads the whole window; a later one from before the outage.
        cache.deafen();
        let from = cache.resync_from();
        assert!(from > Utc::now() - chrono::Duration::seconds(6) && from < Utc::now() - chrono::Duration::seconds(4));
    }

    #[test]
    fn the_user_cache_is_bounded_and_keeps_the_recently_used() {
        let cache = SessionCache::new(true, Duration::from_secs(60), Duration::from_secs(5), 16, true);
        cache.resynced(&[]);
        for id in 0..16 {
            cache.put_user(user(id), cache.ask());
        }
        assert!(cache.user(0).is_some());
        for id in 16..40 {
            cache.put_user(user(id), cache.ask());
        }
        let (_, held) = cache.sizes();
        assert!(held <= 16, "{held}");
        assert!(cache.user(39).is_some(), "the newest is kept");
        assert!(cache.user(1).is_none(), "the least recently used went first");
    }

    #[test]
    fn a_user_cache_of_one_holds_one() {
        let cache = SessionCache::new(true, Duration::from_secs(60), Duration::from_secs(5), 1, true);
        cache.resynced(&[]);
        for id in 0..5 {
            cache.put_user(user(id), cache.ask());
            assert_eq!(cache.sizes().1, 1);
        }
        assert!(cache.user(4).is_some());
    }

    #[test]
    fn turned_off_it_always_asks() {
        let cache = SessionCache::new(false, Duration::from_secs(60), Duration::from_secs(5), 16, true);
        cache.resynced(&[]);
        assert_eq!(cache.liveness(Uuid::new_v4(), 1), Liveness::Unknown);
        cache.put_user(user(1), cache.ask());
        assert!(cache.user(1).is_none());
    }

    fn client(client_id: &str) -> Arc<ClientRecord> {
        Arc::new(ClientRecord {
            client_id: client_id.into(),
            name: "billing".into(),
            scopes: "introspect".into(),
            secret_hash: vec![1; 32],
            previous_secret_hash: None,
            previous_valid_until: None,
            certificate_name: Some("billing.example".into()),
            created_at: Utc::now(),
            rotated_at: None,
        })
    }

    #[test]
    fn a_client_is_cached_while_heard_and_forgotten_at_its_change() {
        let cache = cache();
        let (by_id, by_certificate) =
            (ClientLookup::Id("svc_a".into()), ClientLookup::Certificate("billing.example".into()));
        cache.put_client(by_id.clone(), client("svc_a"), cache.ask());
        assert!(cache.client(&by_id).is_none(), "nothing is trusted before a resync");
        cache.resynced(&[]);
        cache.put_client(by_id.clone(), client("svc_a"), cache.ask());
        cache.put_client(by_certificate.clone(), client("svc_a"), cache.ask());
        cache.put_client(ClientLookup::Id("svc_b".into()), client("svc_b"), cache.ask());
        assert!(cache.client(&by_id).is_some() && cache.client(&by_certificate).is_some());
        cache.apply(SessionChange::client("svc_a"));
        assert!(cache.client(&by_id).is_none() && cache.client(&by_certificate).is_none(), "both lookups go");
        assert!(cache.client(&ClientLookup::Id("svc_b".into())).is_some(), "another client stays");
        // An answer read before a change is not kept.
        let asked = cache.ask();
        cache.apply(SessionChange::client("svc_a"));
        cache.put_client(by_id.clone(), client("svc_a"), asked);
        assert!(cache.client(&by_id).is_none());
        // A change heard in a resync, however old, still applies.
        cache.put_client(by_id.clone(), client("svc_a"), cache.ask());
        let old = Revocation {
            seq: 9,
            kind: RevocationKind::Client,
            session_id: None,
            user_id: None,
            client_id: Some("svc_a".into()),
            at: Utc::now() - chrono::Duration::days(1),
        };
        cache.apply_at(old.change().unwrap(), old.at);
        assert!(cache.client(&by_id).is_none());
        // Deaf: nothing is trusted, and all is forgotten.
        cache.put_client(by_id.clone(), client("svc_a"), cache.ask());
        cache.deafen();
        assert!(cache.client(&by_id).is_none());
        cache.resynced(&[]);
        assert!(cache.client(&by_id).is_none());
    }

    #[test]
    fn clients_are_not_cached_where_other_processes_go_unheard() {
        let cache = SessionCache::new(true, Duration::from_secs(60), Duration::from_secs(5), 16, false);
        cache.resynced(&[]);
        let by_id = ClientLookup::Id("svc_a".into());
        cache.put_client(by_id.clone(), client("svc_a"), cache.ask());
        assert!(cache.client(&by_id).is_none());
    }
}
