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

use super::{ClientInfo, Error, Result, events};
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
    pub(super) fn name(self) -> &'static str {
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
    digest: String,
    client: ClientInfo,
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
            return Err(refuse(action, "ip", client, None, count.window_start_ms + window - now));
        }
        Ok(())
    }

    /// The counter keys of a login for the account of `digest` (its keyed digest: the
    /// table should not collect the addresses people type) from the client's IP.
    pub fn login_keys(digest: &str, client: &ClientInfo) -> LoginKeys {
        LoginKeys {
            account_ip: format!("login-account-ip:{digest}:{}", ip(client)),
            account: format!("login-account:{digest}"),
            digest: digest.to_owned(),
            client: client.clone(),
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
                return Err(refuse(Action::Login, "account_ip", &keys.client, Some(&keys.digest), until - now));
            }
        }
        if self.settings.account_failure_limit > 0
            && let Some(all) = self.store.throttle_count(&keys.account, now, window).await?
            && all.hits >= i64::from(self.settings.account_failure_limit)
        {
            let wait = all.window_start_ms + window - now;
            return Err(refuse(Action::Login, "account", &keys.client, Some(&keys.digest), wait));
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

/// The refusal of a call for `wait_ms`, told as a security event.
fn refuse(action: Action, limit: &str, client: &ClientInfo, account: Option<&str>, wait_ms: i64) -> Error {
    // Whole seconds, rounded up, for Retry-After.
    let retry_after = Duration::from_secs(u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1));
    events::throttled(action.name(), limit, client, account, retry_after);
    Error::Overloaded { retry_after }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
