//! Rate limits against brute force. The counters live in the store, so every replica
//! over one database counts the same calls.
//!
//! - Per client IP: login, register and refresh calls in a fixed window.
//! - Per (account, IP): failed logins; past a few, each try waits for an exponential
//!   backoff after the last failure. A successful login clears it.
//! - Per account: failed logins from every IP. Past the ceiling, only IPs that have not
//!   failed on the account may still try, so attackers cannot lock out an owner who has
//!   not failed from their own address.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::{ClientInfo, Error, Result};
use crate::{
    config::ThrottleSettings,
    store::{Store, ThrottleCount},
};

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Login,
    Register,
    Refresh,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Refresh => "refresh",
        }
    }
}

#[derive(Clone)]
pub struct Throttle {
    store: Arc<Store>,
    settings: Arc<ThrottleSettings>,
}

/// What `before_login` found: whether this (account, IP) had failures to forgive.
#[must_use]
pub struct PriorFailures(bool);

/// Whose login is being tried, from where: the keys of its counters.
pub struct LoginKeys {
    account: String,
    account_ip: String,
}

impl Throttle {
    pub fn new(store: Arc<Store>, settings: &ThrottleSettings) -> Self {
        Self { store, settings: Arc::new(settings.clone()) }
    }

    /// Counts a call from the client's IP; refuses it past the action's per-IP limit.
    pub async fn per_ip(&self, action: Action, client: &ClientInfo) -> Result<()> {
        let limit = match action {
            Action::Login => self.settings.login_per_ip,
            Action::Register => self.settings.register_per_ip,
            Action::Refresh => self.settings.refresh_per_ip,
        };
        if limit == 0 {
            return Ok(());
        }
        let window = millis(self.settings.window);
        let now = now_ms();
        let key = format!("{}-ip:{}", action.name(), ip(client));
        let count = self.store.throttle_hit(&key, now, window).await?;
        if count.hits > i64::from(limit) {
            tracing::warn!(action = action.name(), ip = ip(client), hits = count.hits, "throttled per IP");
            return Err(throttled(count.window_start_ms + window - now));
        }
        Ok(())
    }

    /// The counter keys of a login for `email` from the client's IP. The account is kept
    /// as a digest: the table should not collect the addresses people type.
    pub fn login_keys(email: &str, client: &ClientInfo) -> LoginKeys {
        let digest = Sha256::digest(email.to_lowercase().as_bytes());
        let account = digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>();
        LoginKeys {
            account_ip: format!("login-account-ip:{account}:{}", ip(client)),
            account: format!("login-account:{account}"),
        }
    }

    /// Before a password is checked: refuses while this (account, IP) waits out its
    /// backoff, or when the account is past its ceiling and this IP has failed on it.
    pub async fn before_login(&self, keys: &LoginKeys) -> Result<PriorFailures> {
        let now = now_ms();
        let window = millis(self.settings.failure_window);
        let Some(mine) = self.store.throttle_count(&keys.account_ip, now, window).await? else {
            return Ok(PriorFailures(false));
        };
        if let Some(wait) = self.backoff(mine) {
            let until = mine.last_hit_ms + millis(wait);
            if until > now {
                tracing::warn!(failures = mine.hits, "login throttled: (account, IP) backoff");
                return Err(throttled(until - now));
            }
        }
        if self.settings.account_failure_limit > 0
            && let Some(all) = self.store.throttle_count(&keys.account, now, window).await?
            && all.hits >= i64::from(self.settings.account_failure_limit)
        {
            tracing::warn!(failures = all.hits, "login throttled: account failure ceiling");
            return Err(throttled(all.window_start_ms + window - now));
        }
        Ok(PriorFailures(true))
    }

    pub async fn login_failed(&self, keys: &LoginKeys) -> Result<()> {
        let (now, window) = (now_ms(), millis(self.settings.failure_window));
        self.store.throttle_hit(&keys.account_ip, now, window).await?;
        self.store.throttle_hit(&keys.account, now, window).await?;
        Ok(())
    }

    /// The owner got in from here: this IP's failures on the account are forgiven. Most
    /// logins had none, and skip the write.
    pub async fn login_succeeded(&self, keys: &LoginKeys, prior: PriorFailures) -> Result<()> {
        if prior.0 {
            self.store.throttle_clear(&keys.account_ip).await?;
        }
        Ok(())
    }

    /// Forgets counters that no limit looks at any more.
    pub async fn prune(&self) -> Result<u64> {
        let longest = self.settings.window.max(self.settings.failure_window);
        Ok(self.store.throttle_prune(now_ms() - millis(longest)).await?)
    }

    /// How long after the last failure the next try must wait, if at all.
    fn backoff(&self, failures: ThrottleCount) -> Option<Duration> {
        let past_free = failures.hits.checked_sub(i64::from(self.settings.free_failures)).filter(|n| *n >= 0)?;
        let doubling = 1u64.checked_shl(u32::try_from(past_free).unwrap_or(u32::MAX)).unwrap_or(u64::MAX);
        Some(Duration::from_secs(doubling).min(self.settings.backoff_max))
    }
}

fn ip(client: &ClientInfo) -> &str {
    client.ip.as_deref().unwrap_or("unknown")
}

fn throttled(wait_ms: i64) -> Error {
    // Whole seconds, rounded up, for Retry-After.
    let seconds = u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1);
    Error::Overloaded { retry_after: Duration::from_secs(seconds) }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
