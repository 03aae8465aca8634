//! argon2id hashing on a few threads of its own, with a bound on the callers waiting for
//! one and at most one hash in flight per owner (an account, a user), so that no one
//! account can fill the queue. The old app's bcrypt hashes still verify, and are replaced
//! by argon2id on the first successful login whose password bcrypt read whole.

use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
};

use anyhow::{Context, anyhow};
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{
        generate_salt,
        phc::{Output, ParamsString, Salt},
    },
};
use tokio::sync::{OnceCell, oneshot};

use crate::{config::PasswordSettings, domain::Password};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many callers already wait for a hashing thread.
    #[error("password hashing is saturated")]
    Saturated,
    /// The owner already has a hash in flight.
    #[error("a password check of this owner is already in flight")]
    Busy,
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
    argon2: Argon2<'static>,
    hashers: mpsc::Sender<Job>,
    /// Jobs handed to the hashing threads and not finished, and how many may be.
    pending: Arc<AtomicUsize>,
    pending_limit: usize,
    /// The owners with a hash in flight.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// A hash of no one's password: unknown emails are checked against it so that they
    /// cost as much as a wrong password. Made on first use to keep start-up fast.
    dummy: Arc<OnceCell<String>>,
}

/// Work for a hashing thread, given that thread's argon2 working memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> anyhow::Result<Self> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            hashers: spawn_hashers(settings.concurrency)?,
            pending: Arc::new(AtomicUsize::new(0)),
            pending_limit: settings.concurrency + settings.queue_limit,
            in_flight: Arc::default(),
            dummy: Arc::new(OnceCell::new()),
        })
    }

    /// A PHC string for a new password of `owner`'s; `None` for a password of no one yet
    /// (a registration, bounded by the per-IP limit instead).
    pub async fn hash(&self, owner: Option<&str>, password: &Password) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        let password = password.expose().to_owned();
        self.on_hashing_thread(owner, move |memory| new_hash(&argon2, password.as_bytes(), memory)).await
    }

    /// Checks `owner`'s `password` against a stored PHC string.
    pub async fn verify(&self, owner: &str, password: &Password, stored: &str) -> Result<Verdict, HashError> {
        let argon2 = self.argon2.clone();
        let password = password.expose().to_owned();
        let stored = stored.to_owned();
        self.on_hashing_thread(Some(owner), move |memory| {
            if is_bcrypt(&stored) {
                // bcrypt reads at most 72 bytes of a password, as the old app's library did.
                let matches =
                    bcrypt::verify(password.as_bytes(), &stored).map_err(|e| anyhow!("stored bcrypt hash: {e}"))?;
                if !matches {
                    return Ok(Verdict::Mismatch);
                }
                // From 72 bytes on, bcrypt saw neither the rest nor where the password
                // ends: the one typed may differ from the user's after its 72nd byte, and
                // must not replace it. The bcrypt hash stays, as strong as it was.
                if password.len() >= BCRYPT_READS {
                    return Ok(Verdict::Match);
                }
                return Ok(Verdict::MatchNeedsRehash(new_hash(&argon2, password.as_bytes(), memory)?));
            }
            let hash = PasswordHash::new(&stored).map_err(|e| anyhow!("stored hash is not a PHC string: {e}"))?;
            if !matches_hash(password.as_bytes(), &hash, memory)? {
                return Ok(Verdict::Mismatch);
            }
            let wanted = argon2.params();
            let current = hash.algorithm.as_str() == "argon2id"
                && hash.version == Some(Version::V0x13.into())
                && Params::try_from(&hash).is_ok_and(|p| {
                    p.m_cost() == wanted.m_cost() && p.t_cost() == wanted.t_cost() && p.p_cost() == wanted.p_cost()
                });
            if current {
                return Ok(Verdict::Match);
            }
            Ok(Verdict::MatchNeedsRehash(new_hash(&argon2, password.as_bytes(), memory)?))
        })
        .await
    }

    /// Spends the time of a real check without any account: always a mismatch.
    pub async fn verify_nobody(&self, owner: &str, password: &Password) -> Result<(), HashError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let argon2 = self.argon2.clone();
                let unguessable = uuid::Uuid::new_v4().to_string();
                self.on_hashing_thread(None, move |memory| new_hash(&argon2, unguessable.as_bytes(), memory)).await
            })
            .await?;
        self.verify(owner, password, dummy).await.map(drop)
    }

    async fn on_hashing_thread<T: Send + 'static>(
        &self,
        owner: Option<&str>,
        work: impl FnOnce(&mut Vec<Block>) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        // Held by the job, not by the caller: a caller that goes away mid-hash does not
        // free its owner's place before the hash it started is done.
        let claim = owner.map(|owner| OwnerClaim::take(&self.in_flight, owner).ok_or(HashError::Busy)).transpose()?;
        let ticket = PendingTicket::take(&self.pending, self.pending_limit).ok_or(HashError::Saturated)?;
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // A caller that went away (a dropped connection, a timeout) gets no hash.
            if answer.is_closed() {
                return;
            }
            let result = work(memory);
            // The places are free before the caller hears back.
            drop(ticket);
            drop(claim);
            let _ = answer.send(result);
        });
        self.hashers.send(job).map_err(|_| anyhow!("the hashing threads have stopped"))?;
        answered.await.map_err(|_| anyhow!("a hashing job failed"))?.map_err(HashError::Unexpected)
    }
}

/// Starts the hashing threads; they stop when the last `Passwords` is dropped. Each keeps
/// its argon2 working memory (19 MiB at the defaults) from one hash to the next instead
/// of allocating and zeroing it for every hash, and takes the next job as soon as it has
/// finished one.
fn spawn_hashers(threads: usize) -> anyhow::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..threads {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("authd-hash-{n}"))
            .spawn(move || {
                let mut memory = Vec::new();
                loop {
                    // The lock is held while waiting for a job, never while hashing.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A panic costs its caller an error, not the pool a thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
                }
            })
            .context("starting a hashing thread")?;
    }
    Ok(jobs)
}

/// Working memory for `params`: the thread's own, grown if a hash needs more.
fn working_memory<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let blocks = params.block_count();
    if memory.len() < blocks {
        *memory = vec![Block::default(); blocks];
    }
    &mut memory[..blocks]
}

/// A PHC string for `password` with a fresh salt.
fn new_hash(argon2: &Argon2, password: &[u8], memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let salt = Salt::new(&generate_salt()).map_err(|e| anyhow!("salt: {e}"))?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password, &salt, &mut output, working_memory(memory, argon2.params()))
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| anyhow!("argon2 parameters: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&output).map_err(|e| anyhow!("argon2 output: {e}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes, with the stored hash's own salt and parameters, to its output.
fn matches_hash(password: &[u8], stored: &PasswordHash, memory: &mut Vec<Block>) -> anyhow::Result<bool> {
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        anyhow::bail!("stored hash has no salt or no output");
    };
    let algorithm = Algorithm::try_from(stored.algorithm.as_str()).map_err(|e| anyhow!("stored hash: {e}"))?;
    let version = match stored.version {
        Some(v) => Version::try_from(v).map_err(|e| anyhow!("stored hash version: {e}"))?,
        None => Version::default(),
    };
    let params = Params::try_from(stored).map_err(|e| anyhow!("stored hash parameters: {e}"))?;
    let argon2 = Argon2::new(algorithm, version, params);
    let mut output = vec![0u8; expected.len()];
    argon2
        .hash_password_into_with_memory(password, salt, &mut output, working_memory(memory, argon2.params()))
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    // Output's equality is constant-time.
    Ok(Output::new(&output).map_err(|e| anyhow!("argon2 output: {e}"))? == *expected)
}

/// A bcrypt hash in its modular crypt format (`$2b$12$...`), as the old app stored them.
fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|prefix| stored.starts_with(prefix))
}

/// The bytes of a password that bcrypt reads, its terminating NUL included; a password of
/// this length or longer has had its end, or more, cut off.
const BCRYPT_READS: usize = 72;

/// An owner's one place among the hashes in flight; released on drop.
struct OwnerClaim {
    in_flight: Arc<Mutex<HashSet<String>>>,
    owner: String,
}

impl OwnerClaim {
    fn take(in_flight: &Arc<Mutex<HashSet<String>>>, owner: &str) -> Option<Self> {
        let mut owners = in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        owners.insert(owner.to_owned()).then(|| Self { in_flight: Arc::clone(in_flight), owner: owner.to_owned() })
    }
}

impl Drop for OwnerClaim {
    fn drop(&mut self) {
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.owner);
    }
}

/// A place among the pending hashing jobs; released on drop.
struct PendingTicket(Arc<AtomicUsize>);

impl PendingTicket {
    fn take(pending: &Arc<AtomicUsize>, limit: usize) -> Option<Self> {
        let before = pending.fetch_add(1, Ordering::AcqRel);
        let ticket = Self(Arc::clone(pending));
        (before < limit).then_some(ticket)
    }
}

impl Drop for PendingTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(s: &str) -> Password {
        Password::parse_offered(s).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_configured_parameters_and_verify() {
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let hash = passwords.hash(None, &password("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert_eq!(passwords.verify("owner", &password("correct horse"), &hash).await.unwrap(), Verdict::Match);
        assert_eq!(passwords.verify("owner", &password("correct horsE"), &hash).await.unwrap(), Verdict::Mismatch);
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_is_upgraded_on_match() {
        let old = Passwords::new(&PasswordSettings { iterations: 3, ..PasswordSettings::default() }).unwrap();
        let current = Passwords::new(&PasswordSettings::default()).unwrap();
        let hash = old.hash(None, &password("pw")).await.unwrap();
        match current.verify("owner", &password("pw"), &hash).await.unwrap() {
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
            assert_eq!(passwords.verify("owner", &password("old secreT"), &legacy).await.unwrap(), Verdict::Mismatch);
            match passwords.verify("owner", &password("old secret"), &legacy).await.unwrap() {
                Verdict::MatchNeedsRehash(new) => {
                    assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{new}");
                    assert_eq!(passwords.verify("owner", &password("old secret"), &new).await.unwrap(), Verdict::Match);
                }
                other => panic!("{legacy}: expected a rehash, got {other:?}"),
            }
        }
        // A damaged bcrypt hash is an error, not a match.
        assert!(passwords.verify("owner", &password("old secret"), "$2b$04$short").await.is_err());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crates_own_hasher_still_verify() {
        use argon2::PasswordHasher;
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let stored = Argon2::default().hash_password(b"correct horse").unwrap().to_string();
        assert_eq!(passwords.verify("owner", &password("correct horse"), &stored).await.unwrap(), Verdict::Match);
        assert_eq!(passwords.verify("owner", &password("correct horsE"), &stored).await.unwrap(), Verdict::Mismatch);

        let ours = passwords.hash(None, &password("correct horse")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2::PasswordVerifier::verify_password(&Argon2::default(), b"correct horse", &parsed).is_ok());
    }

    #[tokio::test]
    async fn a_job_whose_caller_has_gone_is_skipped() {
        use std::sync::atomic::AtomicBool;
        let passwords = Passwords::new(&PasswordSettings { concurrency: 1, ..PasswordSettings::default() }).unwrap();
        // Hold the only hashing thread until the second job is queued and abandoned.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holding = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.on_hashing_thread(None, move |_| Ok(held.recv().ok())).await }
        });
        let ran = Arc::new(AtomicBool::new(false));
        let abandoned = {
            let ran = Arc::clone(&ran);
            passwords.on_hashing_thread(None, move |_| {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        // One poll queues the job; dropping the future is the caller going away.
        assert!(futures::poll!(Box::pin(abandoned)).is_pending());
        release.send(()).unwrap();
        assert!(holding.await.unwrap().is_ok());
        // The queue is first in, first out: once this one is done, the abandoned one was seen.
        passwords.on_hashing_thread(None, |_| Ok(())).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job ran");
        assert_eq!(passwords.pending.load(Ordering::SeqCst), 0, "its place was given back");
    }

    #[tokio::test]
    async fn callers_past_the_queue_limit_are_refused_at_once() {
        let passwords =
            Passwords::new(&PasswordSettings { concurrency: 1, queue_limit: 1, ..PasswordSettings::default() })
                .unwrap();
        let pw = password("pw");
        // join! polls each call once before any finishes: the first hashes, the second
        // waits, the third finds no place.
        let (first, second, third) =
            tokio::join!(passwords.hash(None, &pw), passwords.hash(None, &pw), passwords.hash(None, &pw));
        assert!(first.is_ok() && second.is_ok());
        assert!(matches!(third, Err(HashError::Saturated)), "{third:?}");
        assert!(passwords.hash(None, &pw).await.is_ok(), "places are given back");
    }

    #[tokio::test]
    async fn an_owner_has_one_hash_in_flight_and_others_are_not_held_up() {
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let pw = password("pw");
        let (first, second, other) = tokio::join!(
            passwords.hash(Some("ada"), &pw),
            passwords.hash(Some("ada"), &pw),
            passwords.hash(Some("bob"), &pw)
        );
        assert!(first.is_ok() && other.is_ok());
        assert!(matches!(second, Err(HashError::Busy)), "{second:?}");
        assert!(passwords.hash(Some("ada"), &pw).await.is_ok(), "the place is given back");
    }

    #[tokio::test]
    async fn a_bcrypt_match_of_72_bytes_or_more_is_never_rehashed() {
        let passwords = Passwords::new(&PasswordSettings::default()).unwrap();
        let first_72 = "x".repeat(72);
        let legacy = bcrypt::hash(format!("{first_72} the real ending"), 4).unwrap();
        for offered in [format!("{first_72} a guessed ending"), first_72.clone()] {
            assert_eq!(passwords.verify("owner", &password(&offered), &legacy).await.unwrap(), Verdict::Match);
        }
        let legacy = bcrypt::hash(&first_72[..71], 4).unwrap();
        assert!(matches!(
            passwords.verify("owner", &password(&first_72[..71]), &legacy).await.unwrap(),
            Verdict::MatchNeedsRehash(_)
        ));
        assert_eq!(passwords.verify("owner", &password(&first_72), &legacy).await.unwrap(), Verdict::Mismatch);
    }
}
