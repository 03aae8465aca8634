//! argon2id hashing on the blocking pool, under a cap on concurrent hashes and a bound on
//! the callers waiting for one. The old app's bcrypt hashes still verify, and are
//! replaced by argon2id on the first successful login.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::{config::PasswordSettings, domain::Password};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many callers already wait for a hashing slot.
    #[error("password hashing is saturated")]
    Saturated,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What checking a password found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Mismatch,
    Match,
    /// The password matches a hash made with other parameters (or another algorithm):
    /// the caller should store this new hash in its place.
    MatchNeedsRehash(String),
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue_limit: usize,
    /// A hash of no one's password: unknown emails are checked against it so that they
    /// cost as much as a wrong password. Made on first use to keep start-up fast.
    dummy: Arc<OnceCell<String>>,
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> anyhow::Result<Self> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue_limit: settings.queue_limit,
            dummy: Arc::new(OnceCell::new()),
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let argon2 = self.argon2();
        let password = password.expose().to_owned();
        self.on_blocking_pool(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Checks `password` against a stored PHC string.
    pub async fn verify(&self, password: &Password, stored: &str) -> Result<Verdict, HashError> {
        let argon2 = self.argon2();
        let password = password.expose().to_owned();
        let stored = stored.to_owned();
        let wanted = self.params.clone();
        self.on_blocking_pool(move || {
            if is_bcrypt(&stored) {
                // bcrypt reads at most 72 bytes of a password, as the old app's library did.
                let matches = bcrypt::verify(password.as_bytes(), &stored)
                    .map_err(|e| anyhow::anyhow!("stored bcrypt hash: {e}"))?;
                if !matches {
                    return Ok(Verdict::Mismatch);
                }
                let fresh = argon2
                    .hash_password(password.as_bytes())
                    .map_err(|e| anyhow::anyhow!("rehashing a password: {e}"))?;
                return Ok(Verdict::MatchNeedsRehash(fresh.to_string()));
            }
            let hash =
                PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash is not a PHC string: {e}"))?;
            if argon2.verify_password(password.as_bytes(), &hash).is_err() {
                return Ok(Verdict::Mismatch);
            }
            let current = hash.algorithm.as_str() == "argon2id"
                && Params::try_from(&hash).is_ok_and(|p| {
                    p.m_cost() == wanted.m_cost() && p.t_cost() == wanted.t_cost() && p.p_cost() == wanted.p_cost()
                });
            if current {
                return Ok(Verdict::Match);
            }
            let fresh =
                argon2.hash_password(password.as_bytes()).map_err(|e| anyhow::anyhow!("rehashing a password: {e}"))?;
            Ok(Verdict::MatchNeedsRehash(fresh.to_string()))
        })
        .await
    }

    /// Spends the time of a real check without any account: always a mismatch.
    pub async fn verify_nobody(&self, password: &Password) -> Result<(), HashError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let unguessable = Password::parse_offered(&uuid::Uuid::new_v4().to_string(), PASSWORD_POLICY_ANY)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                self.hash(&unguessable).await
            })
            .await?;
        self.verify(password, dummy).await.map(drop)
    }

    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let ticket = WaitTicket::take(&self.waiting, self.queue_limit).ok_or(HashError::Saturated)?;
        let _slot = self.slots.acquire().await.map_err(|e| anyhow::anyhow!("hashing slots closed: {e}"))?;
        drop(ticket);
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| anyhow::anyhow!("hashing task failed: {e}"))?
            .map_err(HashError::Unexpected)
    }
}

/// A bcrypt hash in its modular crypt format (`$2b$12$...`), as the old app stored them.
fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|prefix| stored.starts_with(prefix))
}

const PASSWORD_POLICY_ANY: crate::domain::PasswordPolicy =
    crate::domain::PasswordPolicy { min_length: 1, max_length: 1024 };

/// A place in the bounded queue for a hashing slot; released on drop.
struct WaitTicket<'a>(&'a AtomicUsize);

impl<'a> WaitTicket<'a> {
    fn take(waiting: &'a AtomicUsize, limit: usize) -> Option<Self> {
        let before = waiting.fetch_add(1, Ordering::AcqRel);
        let ticket = Self(waiting);
        (before < limit).then_some(ticket)
    }
}

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PasswordPolicy;

    fn password(s: &str) -> Password {
        Password::parse_offered(s, PasswordPolicy { min_length: 1, max_length: 128 }).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_configured_parameters_and_verify() {
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let hash = passwords.hash(&password("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_eq!(passwords.verify(&password("correct horse"), &hash).await.unwrap(), Verdict::Match);
        assert_eq!(passwords.verify(&password("correct horsE"), &hash).await.unwrap(), Verdict::Mismatch);
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_is_upgraded_on_match() {
        let old = Passwords::new(&PasswordSettings { iterations: 3, ..PasswordSettings::default() }).unwrap();
        let current = Passwords::new(&PasswordSettings::default()).unwrap();
        let hash = old.hash(&password("pw")).await.unwrap();
        match current.verify(&password("pw"), &hash).await.unwrap() {
            Verdict::MatchNeedsRehash(new) => assert!(new.contains("m=19456,t=2,p=1"), "{new}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_old_apps_bcrypt_hashes_verify_and_are_upgraded_to_argon2id() {
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let parts = bcrypt::hash_with_result("old secret", 4).unwrap();
        for version in [bcrypt::Version::TwoA, bcrypt::Version::TwoB, bcrypt::Version::TwoY] {
            let legacy = parts.format_for_version(version);
            assert_eq!(passwords.verify(&password("old secreT"), &legacy).await.unwrap(), Verdict::Mismatch);
            match passwords.verify(&password("old secret"), &legacy).await.unwrap() {
                Verdict::MatchNeedsRehash(new) => {
                    assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{new}");
                    assert_eq!(passwords.verify(&password("old secret"), &new).await.unwrap(), Verdict::Match);
                }
                other => panic!("{legacy}: expected a rehash, got {other:?}"),
            }
        }
        // A damaged bcrypt hash is an error, not a match.
        assert!(passwords.verify(&password("old secret"), "$2b$04$short").await.is_err());
    }

    #[tokio::test]
    async fn callers_past_the_queue_limit_are_refused_at_once() {
        let passwords =
            Passwords::new(&PasswordSettings { concurrency: 1, queue_limit: 0, ..PasswordSettings::default() })
                .unwrap();
        assert!(matches!(passwords.hash(&password("pw")).await, Err(HashError::Saturated)));
    }
}
