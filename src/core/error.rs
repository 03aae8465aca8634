use std::time::Duration;

use crate::{domain::FieldViolation, security::passwords::HashError, store::StoreError};

/// Everything a use case can fail with. Each transport maps it once: `grpc::status` and
/// `rest::error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    InvalidInput(Vec<FieldViolation>),
    #[error("email already registered")]
    EmailTaken,
    /// Wrong password or unknown email: deliberately one case.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The right password, for an address not verified yet, while verification is required.
    #[error("email not verified")]
    EmailNotVerified,
    /// A refresh token that is not genuine, expired, revoked or reused.
    #[error("refresh token rejected")]
    RefreshRejected,
    /// No bearer token where one is needed.
    #[error("missing bearer token")]
    MissingToken,
    /// A bearer token that is not a live access token.
    #[error("invalid access token")]
    InvalidToken,
    /// A session that does not exist, has ended, or is another user's: one case.
    #[error("session not found")]
    SessionNotFound,
    /// No user by that id or email (admin and operator actions only: nowhere else may
    /// an answer tell which accounts exist).
    #[error("user not found")]
    UserNotFound,
    /// A call that needs a service client made without client credentials.
    #[error("client credentials required")]
    ClientRequired,
    /// Client credentials that are not a live client's: unknown or deleted client, wrong
    /// secret, previous secret past its grace, bad service token.
    #[error("invalid client")]
    InvalidClient,
    /// No service client with that id.
    #[error("client not found")]
    ClientNotFound,
    /// An authenticated caller not allowed to make this call; the message says why.
    #[error("permission denied")]
    PermissionDenied(&'static str),
    /// The right password of a user with an active second factor: no tokens, but this
    /// challenge to answer (`Authd::complete_login`).
    #[error("second factor required")]
    SecondFactorRequired(Box<super::factors::LoginChallenge>),
    /// A login challenge that is unknown, expired, answered already or past its attempts.
    #[error("login challenge rejected")]
    ChallengeRejected,
    /// No such factor of the caller's (another user's looks the same).
    #[error("factor not found")]
    FactorNotFound,
    /// A passkey call on a server with no relying party configured (`WEBAUTHN_ORIGIN`).
    #[error("passkeys are not configured")]
    PasskeysNotConfigured,
    /// A passkey login (a passkey alone) where `PASSKEY_LOGIN` is off.
    #[error("passkey login is disabled")]
    PasskeyLoginDisabled,
    /// The second half of a passkey ceremony with no first half waiting: never started,
    /// expired, used already, or started for another session or challenge.
    #[error("passkey ceremony not found")]
    CeremonyNotFound,
    #[error("overloaded")]
    Overloaded { retry_after: Duration },
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, description: &str) -> Self {
        Self::InvalidInput(vec![FieldViolation::new(field, description)])
    }

    /// Logs the cause of a server-side failure; callers only ever see a generic message.
    pub fn log_if_internal(&self) {
        match self {
            Self::Unavailable(e) => tracing::error!(error = format!("{e:#}"), "database unavailable"),
            Self::Unexpected(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            _ => {}
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Conflict => Self::invalid("certificate", "is already another client's"),
            StoreError::Unavailable(e) => Self::Unavailable(e.into()),
            StoreError::Other(e) => Self::Unexpected(e),
        }
    }
}

impl From<HashError> for Error {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Saturated | HashError::Busy => Self::Overloaded { retry_after: Duration::from_secs(1) },
            HashError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// What a passkey call on a server without passkeys is told.
pub const PASSKEYS_NOT_CONFIGURED: &str =
    "Passkeys are not configured on this server (WEBAUTHN_ORIGIN and WEBAUTHN_RP_ID, or PUBLIC_URL).";
/// What a passkey login is told where `PASSKEY_LOGIN` is off.
pub const PASSKEY_LOGIN_DISABLED: &str =
    "Logging in with a passkey alone is not enabled on this server (PASSKEY_LOGIN): log in with your password.";
/// What the second half of a ceremony with no first half waiting is told.
pub const CEREMONY_NOT_FOUND: &str =
    "No passkey ceremony is waiting: start again (a ceremony lasts 5 minutes and serves once).";
