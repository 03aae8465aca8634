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
        atomic::{AtomicBool, Ordering},
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
    entries: RwLock<HashMap<Uuid, Entry>>,
}

struct Entry {
    user: Arc<UserRecord>,
    confirmed: Instant,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, listening: AtomicBool::new(false), entries: RwLock::new(HashMap::new()) }
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

    /// Records that the store just confirmed `session_id` live for `user`.
    pub fn put(&self, session_id: Uuid, user: Arc<UserRecord>, confirmed: Instant) {
        if self.ttl.is_zero() || !self.listening.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut entries) = self.entries.write() else { return };
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
        match change {
            SessionChange::Listening => {
                self.clear();
                self.listening.store(true, Ordering::Release);
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
        self.listening.store(false, Ordering::Release);
        self.clear();
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
        })
    }

    #[test]
    fn nothing_is_trusted_until_changes_can_be_heard() {
        let cache = SessionCache::new(Duration::from_secs(5));
        let sid = Uuid::new_v4();
        cache.put(sid, user(1), Instant::now());
        assert!(cache.get(sid, 1).is_none());
        cache.apply(SessionChange::Listening);
        cache.put(sid, user(1), Instant::now());
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
        cache.put(a, user(1), Instant::now());
        cache.put(b, user(1), Instant::now());
        cache.put(c, user(2), Instant::now() - Duration::from_secs(6));
        assert!(cache.get(c, 2).is_none(), "confirmed too long ago");
        cache.apply(SessionChange::Session(a));
        assert!(cache.get(a, 1).is_none() && cache.get(b, 1).is_some());
        cache.apply(SessionChange::User(1));
        assert!(cache.get(b, 1).is_none());
    }
}
