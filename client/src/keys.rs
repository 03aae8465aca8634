//! authd's public keys by `kid`: those it publishes, and for a short grace those it stopped
//! publishing (for tokens in flight), after which they are dropped.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Default)]
pub(crate) struct KeySet {
    /// `kid` → its algorithm and key, and since when authd no longer publishes it.
    keys: HashMap<String, (Algorithm, DecodingKey, Option<Instant>)>,
}

impl KeySet {
    /// The key of `kid`, unless authd stopped publishing it longer than `grace` ago.
    pub(crate) fn get(&self, kid: &str, now: Instant, grace: Duration) -> Option<(&Algorithm, &DecodingKey)> {
        let (algorithm, key, unpublished) = self.keys.get(kid)?;
        match unpublished {
            Some(since) if now.saturating_duration_since(*since) > grace => None,
            _ => Some((algorithm, key)),
        }
    }

    /// Takes the keys of a fetch: those published now, plus those no longer published
    /// for `grace` from the first fetch that missed them; older ones are dropped.
    pub(crate) fn replace(
        &mut self,
        published: HashMap<String, (Algorithm, DecodingKey)>,
        now: Instant,
        grace: Duration,
    ) {
        let mut keys: HashMap<_, _> =
            published.into_iter().map(|(kid, (algorithm, key))| (kid, (algorithm, key, None))).collect();
        for (kid, (algorithm, key, unpublished)) in self.keys.drain() {
            if keys.contains_key(&kid) {
                continue;
            }
            let since = unpublished.unwrap_or(now);
            if now.saturating_duration_since(since) <= grace {
                keys.insert(kid, (algorithm, key, Some(since)));
            }
        }
        self.keys = keys;
    }

    /// Starts the grace at `now` for every key held as published that `published` (authd's
    /// signing `kid`s, from the feed) leaves out: a key authd dropped stops verifying
    /// after its grace even if the fetch that should follow fails.
    pub(crate) fn unpublish_missing(&mut self, published: &[String], now: Instant) {
        for (kid, (_, _, unpublished)) in &mut self.keys {
            if unpublished.is_none() && !published.contains(kid) {
                *unpublished = Some(now);
            }
        }
    }

    /// Whether `published` (authd's signing `kid`s, from the feed) names a key not held,
    /// or leaves out one held as published.
    pub(crate) fn published_differ(&self, published: &[String]) -> bool {
        let held = self.keys.iter().filter(|(_, (_, _, unpublished))| unpublished.is_none()).count();
        held != published.len() || published.iter().any(|kid| !matches!(self.keys.get(kid), Some((_, _, None))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Algorithm, DecodingKey) {
        (Algorithm::EdDSA, DecodingKey::from_ed_der(&[0; 32]))
    }

    fn published(kids: &[&str]) -> HashMap<String, (Algorithm, DecodingKey)> {
        kids.iter().map(|kid| ((*kid).to_owned(), key())).collect()
    }

    #[test]
    fn a_key_the_feed_no_longer_names_goes_after_its_grace_even_unfetched() {
        let grace = Duration::from_secs(30);
        let start = Instant::now();
        let mut keys = KeySet::default();
        keys.replace(published(&["old", "new"]), start, grace);
        keys.unpublish_missing(&["new".into()], start + Duration::from_secs(5));
        assert!(keys.get("old", start + Duration::from_secs(35), grace).is_some(), "within its grace");
        assert!(keys.get("old", start + Duration::from_secs(36), grace).is_none(), "past it, with no fetch");
        assert!(keys.get("new", start + Duration::from_secs(3600), grace).is_some());
    }

    #[test]
    fn a_key_authd_stopped_publishing_goes_after_its_grace() {
        let grace = Duration::from_secs(30);
        let start = Instant::now();
        let mut keys = KeySet::default();
        keys.replace(published(&["old", "new"]), start, grace);
        assert!(!keys.published_differ(&["old".into(), "new".into()]));
        assert!(keys.published_differ(&["new".into()]));
        keys.replace(published(&["new"]), start + Duration::from_secs(1), grace);
        assert!(!keys.published_differ(&["new".into()]), "the unpublished key no longer counts as published");
        assert!(keys.get("old", start + Duration::from_secs(2), grace).is_some(), "within its grace");
        assert!(keys.get("old", start + Duration::from_secs(32), grace).is_none(), "past it, even unfetched");
        // A later fetch keeps counting from the first that missed it, then drops it.
        keys.replace(published(&["new"]), start + Duration::from_secs(20), grace);
        assert!(keys.get("old", start + Duration::from_secs(25), grace).is_some());
        keys.replace(published(&["new"]), start + Duration::from_secs(40), grace);
        assert!(!keys.keys.contains_key("old"), "dropped");
        assert!(keys.get("new", start + Duration::from_secs(3600), grace).is_some());
        // Published again: whole again.
        keys.replace(published(&["new", "old"]), start + Duration::from_secs(41), grace);
        assert!(keys.get("old", start + Duration::from_secs(3600), grace).is_some());
    }
}
