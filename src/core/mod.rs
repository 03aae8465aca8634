//! The use cases, shared by every transport, one file per area: `accounts` (registration
//! and the caller's own account), `sessions` (login, refresh, logout, sessions, token checks).
//! This file holds the service itself and what every area shares: who is calling, how a
//! bearer token becomes a live session and user, and how a session is signed in. Beside
//! them: `throttle` and `limiter` (rate limits), `events` (the security log), `keys`, and
//! `mail` (verification, password reset and email change, and the outbox they fill).

mod accounts;
mod admin;
mod audit;
mod cache;
mod clients;
pub mod error;
mod events;
mod factors;
pub mod keys;
mod limiter;
mod mail;
mod passkeys;
mod revocations;
mod roles;
mod sessions;
mod throttle;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

pub use accounts::{PasswordChanged, ProfileChange, Registration};
pub use admin::{Admin, NOT_AN_ADMIN};
pub use audit::Actor;
use audit::Audit;
pub use clients::{
    CLIENT_REQUIRED, ClientCredentials, SCOPES, ServiceCaller, ServiceToken, create_client, delete_client,
    list_clients, parse_scopes, rotate_client_secret,
};
pub use error::{Error, Result};
pub use factors::{LoginChallenge, TotpActivated};
use limiter::AddressLimiter;
pub use passkeys::PasskeyRegistered;
pub use revocations::Watcher;
pub use roles::{RoleChange, change_role_as_operator};
pub use sessions::{DEVICE_CANDIDATES, DEVICE_LIFETIME, LoggedOut};
use throttle::Throttle;

use crate::{
    config::{Settings, TokenSettings},
    domain::PasswordPolicy,
    metrics, pb,
    security::access::LEEWAY,
    security::{
        access::{AccessTokens, UserClaims, VerifiedAccess},
        accounts::AccountDigests,
        devices::DeviceTokens,
        passwords::Passwords,
        refresh::{RefreshClaim, RefreshTokens},
        sealing::Sealer,
        webauthn::Passkeys,
    },
    store::{NewSession, SessionChange, Store, UserRecord},
};

/// The `amr` of a session begun with a password alone.
const PASSWORD_ONLY: &str = "pwd";

/// What a session proved, for the tokens it is given: its `amr` (space-separated RFC 8176
/// values) and when it last proved a second factor.
#[derive(Debug, Clone, Copy)]
struct Proved<'a> {
    amr: &'a str,
    auth_time: Option<DateTime<Utc>>,
}

/// Clock difference tolerated between processes on one database, in how long a
/// revocation is kept and how far back a resync reads.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Who is calling, as far as the transport can tell; kept on the session for its owner.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The client certificate the connection was authenticated with (mTLS), if any.
    pub certificate: Option<Arc<ClientCertificate>>,
}

/// A client certificate verified during the TLS handshake against `TLS_CLIENT_CA_FILE`:
/// the identity of the service at the other end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject, RFC 4514 style (`CN=billing,O=Example`).
    pub subject: String,
    /// The subject's common name, when it has one.
    pub common_name: Option<String>,
    /// The subject alternative names, as text: DNS names, URIs (such as SPIFFE IDs),
    /// email addresses, IP addresses.
    pub alt_names: Vec<String>,
}

impl ClientCertificate {
    /// The name to show for it: the common name, else the first alternative name, else
    /// the subject.
    pub fn name(&self) -> &str {
        self.common_name.as_deref().or(self.alt_names.first().map(String::as_str)).unwrap_or(&self.subject)
    }
}

impl ClientInfo {
    pub fn new(ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> Self {
        Self {
            ip: ip.map(|ip| ip.to_string()),
            // Bounded: it is the caller's free text, stored and shown back later.
            user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
            certificate: None,
        }
    }

    /// With the client certificate of the connection, if it presented one.
    pub fn with_certificate(mut self, certificate: Option<Arc<ClientCertificate>>) -> Self {
        self.certificate = certificate;
        self
    }

    /// What the client counts as in every per-address limit: its address, or for IPv6 its
    /// /64, which one host or one customer usually holds whole.
    pub fn network(&self) -> Option<std::net::IpAddr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok()).map(limiter::network)
    }
}

/// A successful login or refresh: the tokens and whose they are. A login's tokens carry
/// the device token to present at the next login (`tokens.device_token`).
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: pb::User,
    pub tokens: pb::TokenResponse,
}

/// A caller whose bearer token was checked: a live session of a user who exists.
pub struct Caller {
    access: VerifiedAccess,
    user: Arc<UserRecord>,
    client: ClientInfo,
}

struct SessionPolicy {
    lifetime: Duration,
    idle_timeout: Duration,
    reuse_grace: Duration,
    /// Live sessions per user; a login past it ends the one unused longest.
    max_per_user: u32,
    /// How long an ended session is kept, for the operator to see how it ended, before it
    /// is deleted (a token of an ended session is refused alike with or without its row).
    retention: Duration,
}

/// The service: every rule of authd lives here or below, none in a transport.
#[derive(Clone)]
pub struct Authd {
    store: Arc<Store>,
    passwords: Passwords,
    access: AccessTokens,
    refresh: RefreshTokens,
    devices: DeviceTokens,
    password_policy: PasswordPolicy,
    sessions: Arc<SessionPolicy>,
    token_settings: Arc<TokenSettings>,
    cache: Arc<cache::SessionCache>,
    throttle: Throttle,
    addresses: Arc<AddressLimiter>,
    accounts: AccountDigests,
    mail: Arc<mail::Mailer>,
    audit: Audit,
    /// How long audit events are kept (`AUDIT_RETENTION_DAYS`).
    audit_retention: Duration,
    /// Whether the database answered the health watcher's last check.
    database_up: Arc<AtomicBool>,
    /// The `kid`s of the published keys accepted now, for the services' revocation feeds.
    kids: Arc<tokio::sync::watch::Sender<Vec<String>>>,
    /// Where callers reach this service (`PUBLIC_URL`), for the metadata it publishes.
    public_url: Arc<str>,
    /// Seals the second factors' secrets (`KEY_ENCRYPTION_KEY`).
    sealer: Sealer,
    /// The WebAuthn relying party; `None` when passkeys are not configured.
    passkeys: Option<Passkeys>,
}

/// What RFC 8414 metadata says of this service: its issuer, where its endpoints are (under
/// `base_url`), and the algorithm that signs its access tokens.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    pub issuer: String,
    pub base_url: String,
    pub algorithm: String,
}

impl Authd {
    /// Builds the service over `store`, taking keys from the settings or, where none is
    /// configured, from the store (generating them on first start).
    pub async fn new(store: Arc<Store>, settings: &Settings) -> anyhow::Result<Self> {
        let tokens = &settings.tokens;
        let sealer = keys::sealer(tokens)?;
        keys::seal_stored(&store, &sealer).await?;
        let access_keys = keys::load(store.as_ref(), tokens, true).await?;
        let refresh_secret = match &tokens.refresh_secret {
            Some(key) => {
                let key = key.expose_secret().as_bytes().to_vec();
                keys::warn_if_short("REFRESH_TOKEN_SECRET", "HMAC-SHA256 refresh tokens", &key, 32);
                key
            }
            None => keys::generated_secret(&store, &sealer, keys::REFRESH_SECRET).await?,
        };
        let device_secret = keys::generated_secret(&store, &sealer, keys::DEVICE_SECRET).await?;
        let account_secret = keys::generated_secret(&store, &sealer, keys::ACCOUNT_SECRET).await?;
        let mail_secret = keys::generated_secret(&store, &sealer, keys::MAIL_SECRET).await?;
        let audit = Audit::new(Arc::clone(&store));
        if tokens.open_introspection {
            tracing::warn!(
                "OPEN_INTROSPECTION is on: ValidateToken answers anyone, with no service client (RFC 7662 \
                 §2.1 asks for one); create clients with the introspect scope and turn it off"
            );
        }
        let access = AccessTokens::new(tokens, access_keys.signing, access_keys.retired)?;
        let clients_heard = store.hears_other_processes();
        Ok(Self {
            audit_retention: settings.limits.audit_retention,
            kids: Arc::new(tokio::sync::watch::Sender::new(access.published_kids())),
            public_url: settings.mail.public_url.as_str().into(),
            mail: Arc::new(mail::Mailer::new(&settings.mail, &mail_secret, sealer.clone())?),
            sealer,
            passkeys: settings.webauthn.as_ref().map(Passkeys::new).transpose()?,
            addresses: Arc::new(AddressLimiter::new(settings.throttle.address_limit)),
            accounts: AccountDigests::new(&account_secret)?,
            database_up: Arc::new(AtomicBool::new(true)),
            throttle: Throttle::new(store.clone(), &settings.throttle, settings.mail.per_address_hourly, audit.clone()),
            audit,
            store,
            passwords: Passwords::new(&settings.passwords)?,
            access,
            refresh: RefreshTokens::new(&refresh_secret)?,
            devices: DeviceTokens::new(&device_secret)?,
            password_policy: PasswordPolicy {
                min_length: settings.passwords.min_length,
                max_length: settings.passwords.max_length,
                refuse_guessable: settings.passwords.refuse_guessable,
            },
            sessions: Arc::new(SessionPolicy {
                lifetime: tokens.refresh_lifetime,
                idle_timeout: tokens.refresh_idle_timeout,
                reuse_grace: tokens.refresh_reuse_grace,
                max_per_user: tokens.max_sessions_per_user,
                retention: tokens.session_retention,
            }),
            token_settings: Arc::new(tokens.clone()),
            cache: Arc::new(cache::SessionCache::new(
                !tokens.session_cache_ttl.is_zero(),
                tokens.access_lifetime + LEEWAY + CLOCK_SKEW,
                settings.database.heartbeat_interval * 3 + CLOCK_SKEW,
                tokens.user_cache_size,
                clients_heard,
            )),
        })
    }

    /// The account of `email` as the throttle and the security events name it: its keyed
    /// digest, never the address.
    fn account(&self, email: &str) -> throttle::Account {
        throttle::Account::with_digest(self.accounts.of(email))
    }

    /// Re-reads the signing keys, to follow a rotation made by another process.
    pub async fn reload_keys(&self) -> anyhow::Result<()> {
        let loaded = keys::load(self.store.as_ref(), &self.token_settings, false).await?;
        let before = self.access.signing_kid();
        self.access.set_keys(loaded.signing, loaded.retired)?;
        let after = self.access.signing_kid();
        if before != after {
            tracing::info!(kid = after, "now signing with a new key");
        }
        let kids = self.access.published_kids();
        self.kids.send_if_modified(|known| {
            let changed = *known != kids;
            *known = kids;
            changed
        });
        Ok(())
    }

    /// Keeps the revocation set and the user cache in step with changes made by every
    /// process on the database; runs for as long as the server does. Each time the feed
    /// is (re)connected, the revocations logged since it was last heard are read first.
    pub async fn follow_session_changes(&self) {
        loop {
            let (sender, mut changes) = tokio::sync::mpsc::unbounded_channel();
            let on_change = move |change| {
                let _ = sender.send(change);
            };
            let feed = self.store.follow_session_changes(&on_change);
            tokio::pin!(feed);
            let result = loop {
                tokio::select! {
                    result = &mut feed => break result,
                    Some(change) = changes.recv() => match change {
                        SessionChange::Listening => {
                            if let Err(e) = self.resync().await {
                                break Err(e.into());
                            }
                        }
                        SessionChange::Unheard => self.cache.deafen(),
                        change => self.cache.apply(change),
                    },
                }
            };
            self.cache.deafen();
            if let Err(e) = result {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "not hearing session changes; token checks ask the database until reconnected"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Reads the revocations logged since this process last heard changes (all of the
    /// window at the first time), applies them, and trusts memory again.
    async fn resync(&self) -> Result<()> {
        let since = self.cache.resync_from();
        let revocations = self.store.revocations_since(since).await?;
        tracing::info!(since = %since, read = revocations.len(), "revocations caught up; token checks answered from memory");
        self.cache.resynced(&revocations);
        Ok(())
    }

    pub fn key_reload_interval(&self) -> Duration {
        self.token_settings.key_reload_interval
    }

    /// Forgets rate-limit counters that have run out, in the database and in process.
    pub async fn prune_throttle(&self) -> Result<u64> {
        self.addresses.forget_quiet_addresses();
        self.throttle.prune().await
    }

    /// Asks the database whether it answers, and keeps the finding for [`Authd::ready`].
    pub async fn check_database(&self) -> bool {
        let up = self.store.ping().await.is_ok();
        self.database_up.store(up, Ordering::Relaxed);
        up
    }

    /// Whether the database answered the last [`Authd::check_database`]: what readiness
    /// probes are told, at no cost to the database however often they ask.
    pub fn ready(&self) -> bool {
        self.database_up.load(Ordering::Relaxed)
    }

    /// Whether this process hears the session changes others announce; while it does not,
    /// token checks ask the database.
    pub fn change_feed_up(&self) -> bool {
        self.cache.listening()
    }

    /// This service as RFC 8414 metadata describes it.
    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            issuer: self.token_settings.issuer.clone(),
            base_url: self.public_url.to_string(),
            algorithm: format!("{:?}", self.token_settings.algorithm),
        }
    }

    /// The database pool's state, for metrics.
    pub fn pool_usage(&self) -> crate::store::PoolUsage {
        self.store.pool_usage()
    }

    /// The live session and user behind a bearer token (the `authorization` header or
    /// metadata value): signature, type, issuer, audience, times, and then that the session
    /// is live and the user still exists. Every use case of a signed-in caller takes the
    /// [`Caller`] this gives, so none can run, nor judge its input, before it.
    pub async fn authenticate(&self, authorization: Option<&str>, client: ClientInfo) -> Result<Caller> {
        let token = bearer_token(authorization.ok_or(Error::MissingToken)?).ok_or(Error::MissingToken)?;
        let access = self.access.verify(token).ok_or(Error::InvalidToken)?;
        let user = self.live_session_user(&access).await?.ok_or(Error::InvalidToken)?;
        Ok(Caller { access, user, client })
    }

    /// The user as the database has it now: a password is never checked against a cached
    /// copy, which another process may have just changed.
    async fn fresh(&self, user: &UserRecord) -> Result<UserRecord> {
        self.store.user_by_id(user.user_id).await?.ok_or(Error::InvalidToken)
    }

    /// The user of the token's session if that session is live: from memory when no
    /// revocation touches it (and its profile is cached), else from the store.
    async fn live_session_user(&self, access: &VerifiedAccess) -> Result<Option<Arc<UserRecord>>> {
        match self.cache.liveness(access.session_id, access.user_id) {
            cache::Liveness::Ended => {
                metrics::token_checked(metrics::CheckedBy::Memory);
                Ok(None)
            }
            cache::Liveness::Live => {
                if let Some(user) = self.cache.user(access.user_id) {
                    metrics::token_checked(metrics::CheckedBy::Memory);
                    return Ok(Some(user));
                }
                metrics::token_checked(metrics::CheckedBy::UserLookup);
                let asked = self.cache.ask();
                let Some(user) = self.store.user_by_id(access.user_id).await? else { return Ok(None) };
                let user = Arc::new(user);
                self.cache.put_user(Arc::clone(&user), asked);
                Ok(Some(user))
            }
            cache::Liveness::Unknown => {
                metrics::token_checked(metrics::CheckedBy::Database);
                let asked = self.cache.ask();
                let user = self.store.session_user(access.session_id, access.user_id, Utc::now()).await?.map(Arc::new);
                self.cache.confirmed(access.session_id, user.as_ref(), asked);
                Ok(user)
            }
        }
    }

    /// How many revocations the set holds, and how many users are cached.
    pub fn cache_sizes(&self) -> (usize, usize) {
        self.cache.sizes()
    }

    /// A session of `user` starting `now`, valid while the credentials read into `user` are.
    fn new_session<'a>(
        &self,
        user: &UserRecord,
        session_id: uuid::Uuid,
        client: &'a ClientInfo,
        now: DateTime<Utc>,
    ) -> NewSession<'a> {
        NewSession {
            session_id,
            user_id: user.user_id,
            credentials_version: user.credentials_version,
            now,
            expires_at: now + self.sessions.lifetime,
            user_agent: client.user_agent.as_deref(),
            ip: client.ip.as_deref(),
            device_hash: None,
            amr: PASSWORD_ONLY,
            auth_time: None,
        }
    }

    /// Tokens for the session of `refresh`, which ends at `session_ends`; the access token
    /// carries the user's roles as the store has them now, so a refresh picks up a change
    /// of roles.
    ///
    /// Every user token is minted here, and here only: a session whose `amr` proves no
    /// second factor gets none for a user who has an active one (a session begun before
    /// the factor was activated, or a login that raced its activation).
    async fn signed_in(
        &self,
        user: &UserRecord,
        refresh: RefreshClaim,
        now: DateTime<Utc>,
        session_ends: DateTime<Utc>,
        proved: Proved<'_>,
    ) -> Result<SignedIn> {
        if !factors::proves_second_factor(proved.amr) && self.store.has_active_factor(user.user_id).await? {
            tracing::warn!(user_id = user.user_id, session_id = %refresh.session_id,
                "no tokens for a session without a second factor: the user has one now");
            return Err(Error::RefreshRejected);
        }
        let roles = self.store.user_roles(user.user_id).await?;
        let claims = UserClaims {
            email_verified: user.email_verified_at.is_some(),
            roles: &roles,
            amr: proved.amr,
            auth_time: proved.auth_time.map(|t| t.timestamp()),
        };
        let access_token = self
            .access
            .issue_until(user.user_id, refresh.session_id, now.timestamp(), &claims, session_ends.timestamp())
            .context("signing an access token")?;
        Ok(SignedIn {
            user: user_message(user),
            tokens: pb::TokenResponse {
                access_token,
                refresh_token: self.refresh.encode(refresh),
                token_type: "Bearer".into(),
                expires_in: self.access.lifetime().as_secs() as i64,
                device_token: String::new(),
            },
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn user_message(user: &UserRecord) -> pb::User {
    pb::User {
        user_id: user.user_id,
        name: user.name.clone(),
        email: user.email.clone(),
        location: user.location.clone(),
        about: user.about.clone(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
        email_verified: user.email_verified_at.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_taken_from_the_header_value() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
