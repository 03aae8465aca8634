//! Rate limits against brute force. The counters live in the store, so every replica
//! over one database counts the same calls.
//!
//! - Per client IP: login, register and refresh calls in a fixed window.
//! - Per account: consecutive failed password checks from every source. Each is counted
//!   before its hash, in one conditional statement that also decides (so checks in flight
//!   count); a right password starts the count over, and no window does: it only forgets
//!   one failure every `LOGIN_ACCOUNT_FAILURE_DECAY_SECONDS / LOGIN_ACCOUNT_FAILURE_LIMIT`.
//!   Past the ceiling, only a device that has logged in to the account before may still try.
//! - Per (account, source): past a few, each check waits for an exponential backoff after
//!   the last. The source is the client's address (IPv6 by its /64), the known device,
//!   or, for checks behind a token (password change, deletion), the session.

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::Utc;
use uuid::Uuid;

use super::{ClientInfo, Error, Result, audit::Audit, events};
use crate::{
    config::ThrottleSettings,
    security::devices::DeviceHash,
    store::{Allowance, CeilingHit, Store},
};

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Login,
    Register,
    Refresh,
    Revoke,
    ChangePassword,
    ForgotPassword,
    ResendVerification,
    ResetPassword,
    VerifyEmail,
    ConfirmEmailChange,
    ChangeEmail,
    /// Any mail asked for one address.
    Mail,
    /// A service client's credentials refused.
    ClientAuth,
    /// A second factor's code offered (a login's challenge answered).
    SecondFactor,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Refresh => "refresh",
            Self::Revoke => "revoke",
            Self::ChangePassword => "change_password",
            Self::ForgotPassword => "forgot_password",
            Self::ResendVerification => "resend_verification",
            Self::ResetPassword => "reset_password",
            Self::VerifyEmail => "verify_email",
            Self::ConfirmEmailChange => "confirm_email_change",
            Self::ChangeEmail => "change_email",
            Self::Mail => "mail",
            Self::ClientAuth => "client_auth",
            Self::SecondFactor => "second_factor",
        }
    }
}

/// The window of the mails allowed per address.
const MAIL_WINDOW: Duration = Duration::from_secs(3600);

/// The window of the verification-code guesses allowed per address, whatever code they
/// are for: a resent code starts no new budget.
const CODE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Verification codes checked per address in [`CODE_WINDOW`] (right or wrong, for an
/// address with an account or not); past it only the mail's link works.
pub const CODE_GUESSES_PER_ADDRESS_DAILY: i64 = 10;

#[derive(Clone)]
pub struct Throttle {
    store: Arc<Store>,
    settings: Arc<ThrottleSettings>,
    mail_per_address_hourly: u32,
    audit: Audit,
}

/// The account a password check is for, named by the keyed digest of its lowercased email
/// (`security::accounts`): the table should not collect the addresses people type, nor
/// tell which have accounts.
pub struct Account(String);

impl Account {
    pub fn with_digest(digest: String) -> Self {
        Self(digest)
    }

    /// The account's digest: the owner of a hash in flight, and the name in security events.
    pub fn digest(&self) -> &str {
        &self.0
    }
}

/// Where a password check comes from.
pub enum Source<'a> {
    /// A login from a client address; subject to the account's ceiling.
    Address(&'a ClientInfo),
    /// A login from a device that has logged in to the account before.
    Device(&'a DeviceHash),
    /// A check behind a signed-in session: a password change or an account deletion.
    Session(Uuid),
    /// A second-factor guess behind a signed-in session (a factor's activation, a proof for
    /// managing factors): subject to the account's ceiling, unlike a password check, so that
    /// a stolen session cannot guess codes slowly for ever.
    SessionGuess(Uuid),
}

/// A password check counted before it runs. Say how it went: a wrong password keeps its
/// count; a right one starts the account's count over, and a check that never ran gives
/// its count back.
#[must_use]
pub struct Attempt {
    throttle: Throttle,
    source: Counted,
    /// The key of the account's count, if it counted.
    account: Option<String>,
}

/// The keys of accounts' failure counts start so; they outlive the windows of the others.
const ACCOUNT_KEY: &str = "login-account:";

/// A hit counted under `key` in the window that began at `window_start_ms`.
struct Counted {
    key: String,
    window_start_ms: i64,
}

impl Throttle {
    pub fn new(store: Arc<Store>, settings: &ThrottleSettings, mail_per_address_hourly: u32, audit: Audit) -> Self {
        Self { store, settings: Arc::new(settings.clone()), mail_per_address_hourly, audit }
    }

    /// The refusal of a call for `wait_ms`, told as a security event.
    fn refuse(&self, action: Action, limit: &str, client: &ClientInfo, account: Option<&str>, wait_ms: i64) -> Error {
        // Whole seconds, rounded up, for Retry-After.
        let retry_after = Duration::from_secs(u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1));
        events::throttled(Some(&self.audit), action.name(), limit, client, account, retry_after);
        Error::Overloaded { retry_after }
    }

    /// Counts a call from the client's IP; refuses it past the action's per-IP limit.
    pub async fn per_ip(&self, action: Action, client: &ClientInfo) -> Result<()> {
        let limit = match action {
            Action::Login => self.settings.login_per_ip,
            Action::Register => self.settings.register_per_ip,
            // A revocation costs what a refresh does: an HMAC, then one write.
            Action::Refresh | Action::Revoke => self.settings.refresh_per_ip,
            // Behind a token: the session's own backoff limits it.
            Action::ChangePassword => 0,
            // Calls that redeem a token or a code count as logins; calls that send mail as
            // registrations.
            Action::ResetPassword | Action::VerifyEmail | Action::ConfirmEmailChange | Action::SecondFactor => {
                self.settings.login_per_ip
            }
            Action::ForgotPassword | Action::ResendVerification | Action::ChangeEmail | Action::Mail => {
                self.settings.register_per_ip
            }
            // Counted in process only, by the address limiter, and only when refused.
            Action::ClientAuth => 0,
        };
        if limit == 0 {
            return Ok(());
        }
        let window = millis(self.settings.window);
        let now = now_ms();
        let key = format!("{}-ip:{}", action.name(), address(client));
        let count = self.store.throttle_hit(&key, now, window).await?;
        if count.hits > i64::from(limit) {
            return Err(self.refuse(action, "ip", client, None, count.window_start_ms + window - now));
        }
        Ok(())
    }

    /// Counts a mail asked for `account`'s address (a reset, a resend, an email change),
    /// whether or not it has an account, so that a refusal tells nothing; refuses it past
    /// the hourly limit per address.
    pub async fn mail_to(&self, account: &Account, client: &ClientInfo) -> Result<()> {
        let limit = i64::from(self.mail_per_address_hourly);
        if limit == 0 {
            return Ok(());
        }
        let (now, window) = (now_ms(), millis(MAIL_WINDOW));
        let key = format!("mail-account:{}", account.0);
        if self.store.throttle_hit_within(&key, now, window, Allowance::Ceiling(limit)).await?.is_some() {
            return Ok(());
        }
        let wait = self.store.throttle_count(&key, now, window).await?.map_or(0, |c| c.window_start_ms + window - now);
        Err(self.refuse(Action::Mail, "address_mail", client, Some(account.digest()), wait))
    }

    /// Counts an email change asked for by `user_id` (whatever the new address, taken or
    /// not, so that a refusal tells nothing); refuses it past the hourly limit of mails per
    /// address, which it also is per account.
    pub async fn email_change_by(&self, user_id: i64, client: &ClientInfo) -> Result<()> {
        let limit = i64::from(self.mail_per_address_hourly);
        if limit == 0 {
            return Ok(());
        }
        let (now, window) = (now_ms(), millis(MAIL_WINDOW));
        let key = format!("change-email-user:{user_id}");
        if self.store.throttle_hit_within(&key, now, window, Allowance::Ceiling(limit)).await?.is_some() {
            return Ok(());
        }
        let wait = self.store.throttle_count(&key, now, window).await?.map_or(0, |c| c.window_start_ms + window - now);
        Err(self.refuse(Action::ChangeEmail, "account", client, None, wait))
    }

    /// The hit that a verification-code guess for `account`'s address counts, checked in
    /// the code's own transaction (see `Store::verify_email_with_code`).
    pub fn code_guess(&self, account: &Account) -> CeilingHit {
        CeilingHit {
            key: format!("verify-code:{}", account.0),
            now_ms: now_ms(),
            window_ms: millis(CODE_WINDOW),
            ceiling: CODE_GUESSES_PER_ADDRESS_DAILY,
        }
    }

    /// Counts a password check for `account` from `source` before it runs; refuses it while
    /// the source waits out its backoff, or, from an address, past the account's ceiling.
    /// `client` is who is calling, for the security event of a refusal.
    pub async fn begin_check(&self, account: &Account, source: Source<'_>, client: &ClientInfo) -> Result<Attempt> {
        let now = now_ms();
        let window = millis(self.settings.failure_window);
        let (key, subject_to_ceiling) = match source {
            Source::Address(client) => (format!("login-account-ip:{}:{}", account.0, address(client)), true),
            Source::Device(hash) => (format!("login-account-device:{}:{}", account.0, hex(&hash[..16])), false),
            Source::Session(id) => (format!("login-account-session:{}:{id}", account.0), false),
            Source::SessionGuess(id) => (format!("login-account-session:{}:{id}", account.0), true),
        };
        let backoff = Allowance::Backoff {
            free: i64::from(self.settings.free_failures),
            max_wait_ms: millis(self.settings.backoff_max),
        };
        let Some(counted) = self.store.throttle_hit_within(&key, now, window, backoff).await? else {
            let wait = match self.store.throttle_count(&key, now, window).await? {
                Some(c) => (c.last_hit_ms + millis(self.backoff(c.hits)) - now).min(c.window_start_ms + window - now),
                None => 0,
            };
            return Err(self.refuse(Action::Login, "account_source", client, Some(account.digest()), wait));
        };
        let source = Counted { key, window_start_ms: counted.window_start_ms };

        // The account's count is of consecutive failures (NIST SP 800-63B): no window ends
        // it, only a right password, or a slow decay. A known device or a session has proved
        // itself before: the ceiling does not refuse it, but its checks count towards it.
        let ceiling = i64::from(self.settings.account_failure_limit);
        if ceiling == 0 {
            return Ok(Attempt { throttle: self.clone(), source, account: None });
        }
        let key = format!("{ACCOUNT_KEY}{}", account.0);
        let drip = self.drip_ms();
        if self.store.throttle_hit_decaying(&key, now, drip, ceiling, subject_to_ceiling).await?.is_none() {
            Attempt { throttle: self.clone(), source, account: None }.not_checked().await;
            // Until the count forgets its next failure.
            let wait =
                self.store.throttle_get(&key).await?.map_or(0, |c| drip - (now - c.window_start_ms).rem_euclid(drip));
            return Err(self.refuse(Action::Login, "account", client, Some(account.digest()), wait));
        }
        Ok(Attempt { throttle: self.clone(), source, account: Some(key) })
    }

    /// Forgets counters that no limit looks at any more: an account's count once it has
    /// decayed to nothing.
    pub async fn prune(&self) -> Result<u64> {
        let now = now_ms();
        let longest = self.settings.window.max(self.settings.failure_window).max(MAIL_WINDOW).max(CODE_WINDOW);
        let decayed = self.settings.account_failure_decay.max(longest);
        Ok(self.store.throttle_prune(now - millis(longest), ACCOUNT_KEY, now - millis(decayed)).await?)
    }

    /// How often the account's count forgets one failure: the whole ceiling over
    /// `LOGIN_ACCOUNT_FAILURE_DECAY_SECONDS`.
    fn drip_ms(&self) -> i64 {
        (millis(self.settings.account_failure_decay) / i64::from(self.settings.account_failure_limit.max(1))).max(1)
    }

    /// How long after the last check the next must wait, when `hits` were counted.
    fn backoff(&self, hits: i64) -> Duration {
        match hits.checked_sub(i64::from(self.settings.free_failures)).filter(|n| *n >= 0) {
            None => Duration::ZERO,
            Some(past_free) => {
                let doubling = 1u64.checked_shl(u32::try_from(past_free).unwrap_or(u32::MAX)).unwrap_or(u64::MAX);
                Duration::from_secs(doubling).min(self.settings.backoff_max)
            }
        }
    }
}

impl Attempt {
    /// The password was wrong: the check stays counted.
    pub fn failed(self) {}

    /// The password was right: the account's consecutive failures, and the source's,
    /// are forgiven.
    pub async fn passed(self) -> Result<()> {
        let store = &self.throttle.store;
        store.throttle_clear(&self.source.key).await?;
        if let Some(account) = &self.account {
            store.throttle_clear(account).await?;
        }
        Ok(())
    }

    /// No password was checked (the hashing queue refused it, or something failed): the
    /// counts are given back.
    pub async fn not_checked(self) {
        let store = &self.throttle.store;
        let source = store.throttle_refund(&self.source.key, self.source.window_start_ms).await;
        let account = match &self.account {
            Some(key) => store.throttle_take_back(key).await,
            None => Ok(()),
        };
        if let Err(e) = source.and(account) {
            tracing::warn!(error = format!("{e:#}"), "could not give back a throttle count");
        }
    }
}

/// The client's address as one source, in the per-IP limits and the backoff: an IPv6
/// client holds a whole /64.
fn address(client: &ClientInfo) -> String {
    match client.network() {
        Some(IpAddr::V6(network)) => format!("{network}/64"),
        Some(v4) => v4.to_string(),
        None => "unknown".to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_one_source_per_64_and_a_mapped_ipv4_is_its_ipv4() {
        let at = |ip: &str| address(&ClientInfo::new(ip.parse().ok(), None));
        assert_eq!(at("2001:db8:1:2:aaaa::1"), at("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(at("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(at("not an address"), "unknown");
        assert_ne!(at("2001:db8:1:2::1"), at("2001:db8:1:3::1"));
        assert_eq!(at("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(at("192.0.2.7"), "192.0.2.7");
    }
}
