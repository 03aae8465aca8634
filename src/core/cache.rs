//! Sessions recently confirmed live by the store, so that checking an access token (GetMe,
//! ValidateToken) needs no database round trip.
//!
//! An entry is trusted for a short time only, and is dropped at once when this process
//! ends the session or changes the user. Other processes on the same database announce
//! such changes (PostgreSQL NOTIFY); the cache is used only while this process is known to
//! hear them, and is emptied whenever it may have missed some.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::store::{SessionChange, UserRecord};

/// Entries beyond this are not added until expired ones are swept.
const CAPACITY: usize = 100_000;

pub struct SessionCache {
    ttl: Duration,
    listening: AtomicBool,
    /// Counts every change applied, so that an answer read from the store before a change
    /// is not cached after it (a GetMe racing a logout must not revive the session).
    changes: AtomicU64,
    entries: RwLock<HashMap<Uuid, Entry>>,
}

/// When a store look-up began, as the cache counts time: see [`SessionCache::ask`].
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    at: Instant,
    changes: u64,
}

struct Entry {
    user: Arc<UserRecord>,
    confirmed: Instant,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            listening: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The user of `session_id`, if the session was confirmed live within the TTL.
    pub fn get(&self, session_id: Uuid, user_id: i64) -> Option<Arc<UserRecord>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let entry = entries.get(&session_id)?;
        (entry.confirmed.elapsed() < self.ttl && entry.user.user_id == user_id).then(|| Arc::clone(&entry.user))
    }

    /// Taken just before asking the store, and handed back to [`SessionCache::put`].
    pub fn ask(&self) -> Asked {
        Asked { at: Instant::now(), changes: self.changes.load(Ordering::Acquire) }
    }

    /// Records that the store confirmed `session_id` live for `user`, in a look-up begun at
    /// `asked`; unless a change was applied since, which the answer may predate.
    pub fn put(&self, session_id: Uuid, user: Arc<UserRecord>, asked: Asked) {
        if self.ttl.is_zero() || !self.listening.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut entries) = self.entries.write() else { return };
        // Checked under the lock that `apply` takes after counting, so no change slips between.
        if self.changes.load(Ordering::Acquire) != asked.changes {
            return;
        }
        let confirmed = asked.at;
        if entries.len() >= CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, e| e.confirmed.elapsed() < ttl);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(session_id, Entry { user, confirmed });
    }

    pub fn apply(&self, change: SessionChange) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        match change {
            SessionChange::Listening => {
                self.clear();
                self.listening.store(true, Ordering::Release);
            }
            SessionChange::Unheard => {
                self.listening.store(false, Ordering::Release);
                self.clear();
            }
            SessionChange::Session(id) => {
                if let Ok(mut entries) = self.entries.write() {
                    entries.remove(&id);
                }
            }
            SessionChange::User(user_id) => {
                if let Ok(mut entries) = self.entries.write() {
                    entries.retain(|_, e| e.user.user_id != user_id);
                }
            }
        }
    }

    /// Stops trusting anything: changes made elsewhere may go unheard from now on.
    pub fn deafen(&self) {
        self.apply(SessionChange::Unheard);
    }

    /// Whether changes made elsewhere are heard: the cache is in use.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

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

    #[test]
    fn nothing_is_trusted_until_changes_can_be_heard() {
        let cache = SessionCache::new(Duration::from_secs(5));
        let sid = Uuid::new_v4();
        cache.put(sid, user(1), cache.ask());
        assert!(cache.get(sid, 1).is_none());
        cache.apply(SessionChange::Listening);
        cache.put(sid, user(1), cache.ask());
        assert!(cache.get(sid, 1).is_some());
        assert!(cache.get(sid, 2).is_none(), "a session belongs to one user");
        cache.deafen();
        assert!(cache.get(sid, 1).is_none());
    }

    #[test]
    fn entries_expire_and_changes_drop_them() {
        let cache = SessionCache::new(Duration::from_secs(5));
        cache.apply(SessionChange::Listening);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(a, user(1), cache.ask());
        cache.put(b, user(1), cache.ask());
        let long_ago = Asked { at: Instant::now() - Duration::from_secs(6), ..cache.ask() };
        cache.put(c, user(2), long_ago);
        assert!(cache.get(c, 2).is_none(), "confirmed too long ago");
        cache.apply(SessionChange::Session(a));
        assert!(cache.get(a, 1).is_none() && cache.get(b, 1).is_some());
        cache.apply(SessionChange::User(1));
        assert!(cache.get(b, 1).is_none());
    }

    #[test]
    fn an_answer_that_predates_a_change_is_not_cached() {
        let cache = SessionCache::new(Duration::from_secs(5));
        cache.apply(SessionChange::Listening);
        let sid = Uuid::new_v4();
        // A GetMe asks the store, and a logout of that session lands before it answers.
        let asked = cache.ask();
        cache.apply(SessionChange::Session(sid));
        cache.put(sid, user(1), asked);
        assert!(cache.get(sid, 1).is_none(), "the logout must not be undone by the late answer");
        // A look-up begun after the change is cached as usual.
        cache.put(sid, user(1), cache.ask());
        assert!(cache.get(sid, 1).is_some());
    }
}
