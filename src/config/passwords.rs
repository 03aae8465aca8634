//! Password hashing cost, length rules, and how many hashes run and wait at once.

use super::{ConfigError, Env, bad, flag};

#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_length: usize,
    pub max_length: usize,
    /// Hashes computed at once; further requests wait.
    pub concurrency: usize,
    /// Requests allowed to wait for a hashing slot; more are refused at once.
    pub queue_limit: usize,
    /// New passwords found in the common-password list, or containing the user's name or
    /// email's local part, are refused.
    pub refuse_guessable: bool,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            min_length: 8,
            max_length: 128,
            concurrency: cores,
            queue_limit: 64 * cores,
            refuse_guessable: true,
        }
    }
}

impl PasswordSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let passwords = Self {
            memory_kib: env.argon2_memory_kib.unwrap_or(defaults.memory_kib),
            iterations: env.argon2_iterations.unwrap_or(defaults.iterations),
            parallelism: env.argon2_parallelism.unwrap_or(defaults.parallelism),
            min_length: env.password_min_length.unwrap_or(defaults.min_length),
            max_length: env.password_max_length.unwrap_or(defaults.max_length),
            concurrency: env.hash_concurrency.unwrap_or(defaults.concurrency),
            queue_limit: env.hash_queue_limit.unwrap_or(defaults.queue_limit),
            refuse_guessable: flag(
                "PASSWORD_REFUSE_GUESSABLE",
                env.password_refuse_guessable.as_deref(),
                defaults.refuse_guessable,
            )?,
        };
        if passwords.memory_kib < 19 * 1024 || passwords.iterations < 2 {
            return Err(bad(
                "ARGON2_MEMORY_KIB/ARGON2_ITERATIONS",
                "below the OWASP minimum (19456 KiB, 2 iterations)",
            ));
        }
        if passwords.parallelism == 0 {
            return Err(bad("ARGON2_PARALLELISM", "must be at least 1"));
        }
        if passwords.min_length == 0 || passwords.min_length > passwords.max_length {
            return Err(bad("PASSWORD_MIN_LENGTH", "must be at least 1 and at most PASSWORD_MAX_LENGTH"));
        }
        if passwords.max_length > 1024 {
            return Err(bad("PASSWORD_MAX_LENGTH", "must be at most 1024"));
        }
        if passwords.concurrency == 0 {
            return Err(bad("HASH_CONCURRENCY", "must be at least 1"));
        }
        Ok(passwords)
    }
}
