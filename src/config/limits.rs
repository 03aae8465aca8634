//! Rate limits against brute force, and bounds on requests and background checks.

use std::time::Duration;

use super::{ConfigError, Env, bad, seconds};

/// Connections held at once when `MAX_CONNECTIONS` is unset (and the open-file limit allows).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

/// Connections held at once from one client address when `MAX_CONNECTIONS_PER_CLIENT` is unset.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 100;

/// Rate limits against brute force (see the README's "Abuse resistance").
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// The window of the per-IP limits.
    pub window: Duration,
    /// Login, register and refresh calls allowed per client IP and window; 0 turns the limit off.
    pub login_per_ip: u32,
    pub register_per_ip: u32,
    pub refresh_per_ip: u32,
    /// Failed logins allowed for one (account, IP) in `failure_window`; from then on each
    /// try waits 1 s after the last failure, doubling with every further failure up to
    /// `backoff_max`. A successful login clears them.
    pub free_failures: u32,
    pub backoff_max: Duration,
    /// Failed password checks for one account, from every source, past which only a known
    /// device (or a signed-in session) may still try. The count is not a window's: it
    /// forgets one failure every `account_failure_decay / account_failure_limit`, and
    /// starts over at a right password.
    pub account_failure_limit: u32,
    pub account_failure_decay: Duration,
    /// The window of the (account, source) backoff counts.
    pub failure_window: Duration,
    /// Unauthenticated calls (register, login, refresh) per client address (IPv6: per /64)
    /// and minute, counted in process before any database work; 0 turns it off.
    pub address_limit: u32,
}

impl ThrottleSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        Ok(Self {
            window: seconds("THROTTLE_WINDOW_SECONDS", env.throttle_window_seconds, 60)?,
            login_per_ip: env.login_ip_limit.unwrap_or(30),
            register_per_ip: env.register_ip_limit.unwrap_or(10),
            refresh_per_ip: env.refresh_ip_limit.unwrap_or(60),
            free_failures: env.login_free_failures.unwrap_or(5),
            backoff_max: seconds("LOGIN_BACKOFF_MAX_SECONDS", env.login_backoff_max_seconds, 900)?,
            account_failure_limit: env.login_account_failure_limit.unwrap_or(100),
            account_failure_decay: seconds(
                "LOGIN_ACCOUNT_FAILURE_DECAY_SECONDS",
                env.login_account_failure_decay_seconds,
                86_400,
            )?,
            failure_window: seconds("LOGIN_FAILURE_WINDOW_SECONDS", env.login_failure_window_seconds, 900)?,
            address_limit: env.unauthenticated_ip_limit.unwrap_or(120),
        })
    }
}

/// Bounds on connections, requests and background checks.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Every request gets this long; then REST answers 503 and gRPC DEADLINE_EXCEEDED.
    pub request_timeout: Duration,
    /// A connection's first request (protocol detection included) and every HTTP/1.1
    /// request's headers must arrive within this (or `request_timeout`, if shorter).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Connections held at once, at most; past it new ones are closed at once. `None`:
    /// [`DEFAULT_MAX_CONNECTIONS`], lowered to fit the open-file limit at start.
    pub max_connections: Option<u32>,
    /// Connections held at once from one client address (IPv6: one /64), unless it is a
    /// trusted proxy; past it that client's new connections are closed at once.
    pub max_connections_per_client: u32,
    /// A connection older than this is asked to close (HTTP/2: GOAWAY), then dropped
    /// after `request_timeout` more if it has not.
    pub max_connection_age: Duration,
    /// How often the database is checked for gRPC health and `/readyz` reporting.
    pub health_check_interval: Duration,
    /// How long an audit event is kept before the background pruning deletes it.
    pub audit_retention: Duration,
}

/// Days an audit event is kept when `AUDIT_RETENTION_DAYS` is unset.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 90;

impl LimitSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        Ok(Self {
            request_timeout: seconds("REQUEST_TIMEOUT_SECONDS", env.request_timeout_seconds, 30)?,
            header_read_timeout: seconds("HEADER_READ_TIMEOUT_SECONDS", env.header_read_timeout_seconds, 10)?,
            idle_timeout: seconds("CONNECTION_IDLE_TIMEOUT_SECONDS", env.connection_idle_timeout_seconds, 300)?,
            max_connections: match env.max_connections {
                Some(0) => return Err(bad("MAX_CONNECTIONS", "must be at least 1")),
                n => n,
            },
            max_connections_per_client: match env.max_connections_per_client {
                Some(0) => return Err(bad("MAX_CONNECTIONS_PER_CLIENT", "must be at least 1")),
                n => n.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
            },
            max_connection_age: seconds("MAX_CONNECTION_AGE_SECONDS", env.max_connection_age_seconds, 3600)?,
            health_check_interval: Duration::from_millis(env.health_check_interval_ms.unwrap_or(5000).max(100)),
            audit_retention: match env.audit_retention_days.unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS) {
                days @ 1..=36_500 => Duration::from_secs(days * 86_400),
                _ => return Err(bad("AUDIT_RETENTION_DAYS", "must be 1 to 36500 days")),
            },
        })
    }
}
