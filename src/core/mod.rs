//! The use cases, shared by every transport: register, login, refresh, me, the caller's
//! own account (update, password, deletion) and sessions.

mod cache;
mod error;
pub mod keys;
mod throttle;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use uuid::Uuid;

pub use error::{Error, Result};
use throttle::{Action, Throttle};

use crate::{
    config::{Settings, TokenSettings},
    domain::{About, Email, FieldViolation, Location, Password, PasswordPolicy, UserName, Violations},
    metrics, pb,
    security::{
        access::{AccessTokens, VerifiedAccess},
        passwords::{Passwords, Verdict},
        random_secret,
        refresh::{RefreshClaim, RefreshTokens},
    },
    store::{NewSession, NewUser, ProfileUpdate, SessionChange, Store, UserRecord},
};

/// Who is calling, as far as the transport can tell; kept on the session for its owner.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> Self {
        Self {
            ip: ip.map(|ip| ip.to_string()),
            // Bounded: it is the caller's free text, stored and shown back later.
            user_agent: user_agent.map(|ua| ua.chars().take(256).collect()),
        }
    }
}

/// A successful login or refresh: the tokens and whose they are.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: pb::User,
    pub tokens: pb::TokenResponse,
}

/// A registration whose every field is valid.
pub struct Registration {
    name: UserName,
    email: Email,
    location: Location,
    about: About,
    password: Password,
}

/// A profile update whose present fields are valid; `about: Some(About(None))` clears it.
pub struct ProfileChange {
    name: Option<UserName>,
    location: Option<Location>,
    about: Option<About>,
}

struct SessionPolicy {
    lifetime: Duration,
    idle_timeout: Duration,
    reuse_grace: Duration,
}

/// The service: every rule of authd lives here or below, none in a transport.
#[derive(Clone)]
pub struct Authd {
    store: Arc<Store>,
    passwords: Passwords,
    access: AccessTokens,
    refresh: RefreshTokens,
    password_policy: PasswordPolicy,
    sessions: Arc<SessionPolicy>,
    token_settings: Arc<TokenSettings>,
    cache: Arc<cache::SessionCache>,
    throttle: Throttle,
}

/// The name under which a generated refresh token key is kept in the database.
const REFRESH_SECRET: &str = "refresh_token_hmac";

impl Authd {
    /// Builds the service over `store`, taking keys from the settings or, where none is
    /// configured, from the store (generating them on first start).
    pub async fn new(store: Arc<Store>, settings: &Settings) -> anyhow::Result<Self> {
        let tokens = &settings.tokens;
        let access_keys = keys::load(store.as_ref(), tokens, true).await?;
        let refresh_secret = match &tokens.refresh_secret {
            Some(key) => key.expose_secret().as_bytes().to_vec(),
            None => store.secret(REFRESH_SECRET, &random_secret()).await.context("loading the refresh token key")?,
        };
        Ok(Self {
            throttle: Throttle::new(store.clone(), &settings.throttle),
            store,
            passwords: Passwords::new(&settings.passwords)?,
            access: AccessTokens::new(tokens, access_keys.signing, access_keys.retired)?,
            refresh: RefreshTokens::new(&refresh_secret)?,
            password_policy: PasswordPolicy {
                min_length: settings.passwords.min_length,
                max_length: settings.passwords.max_length,
            },
            sessions: Arc::new(SessionPolicy {
                lifetime: tokens.refresh_lifetime,
                idle_timeout: tokens.refresh_idle_timeout,
                reuse_grace: tokens.refresh_reuse_grace,
            }),
            token_settings: Arc::new(tokens.clone()),
            cache: Arc::new(cache::SessionCache::new(tokens.session_cache_ttl)),
        })
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
        Ok(())
    }

    /// Keeps the session cache in step with changes made by every process on the database;
    /// runs for as long as the server does.
    pub async fn follow_session_changes(&self) {
        loop {
            let cache = Arc::clone(&self.cache);
            let result = self.store.follow_session_changes(&move |change| cache.apply(change)).await;
            self.cache.deafen();
            if let Err(e) = result {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "not hearing session changes; the session cache is off until reconnected"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub fn key_reload_interval(&self) -> Duration {
        self.token_settings.key_reload_interval
    }

    /// Forgets rate-limit counters that have run out.
    pub async fn prune_throttle(&self) -> Result<u64> {
        self.throttle.prune().await
    }

    /// Whether the database answers.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// Checks every field of a registration, reporting all that are bad.
    pub fn validate_registration(&self, req: &pb::RegisterUserRequest) -> Result<Registration, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let name = v.check("name", UserName::parse(&req.name));
        let email = v.check("email", Email::parse(&req.email));
        let location = v.check("location", Location::parse(&req.location));
        let about = v.check("about", About::parse(req.about.as_deref()));
        let password = v.check("password", Password::parse_new(&req.password, self.password_policy));
        v.finish(|| {
            Some(Registration { name: name?, email: email?, location: location?, about: about?, password: password? })
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn register(&self, req: &pb::RegisterUserRequest, client: &ClientInfo) -> Result<pb::User> {
        let r = self.validate_registration(req).map_err(Error::InvalidInput)?;
        self.throttle.per_ip(Action::Register, client).await?;
        let hash = self.passwords.hash(&r.password).await?;
        let user = self
            .store
            .insert_user(&NewUser {
                name: r.name.as_str(),
                email: r.email.as_str(),
                location: r.location.as_str(),
                about: r.about.as_deref(),
                password_hash: &hash,
            })
            .await?;
        tracing::info!(user_id = user.user_id, "registered");
        Ok(user_message(&user))
    }

    /// Checks the fields of a login request, reporting all that are bad.
    pub fn validate_login(&self, req: &pb::LoginRequest) -> Result<(Email, Password), Vec<FieldViolation>> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(&req.email));
        let password = v.check("password", Password::parse_offered(&req.password, self.password_policy));
        v.finish(|| Some((email?, password?)))
    }

    #[tracing::instrument(skip_all)]
    pub async fn login(&self, req: &pb::LoginRequest, client: &ClientInfo) -> Result<SignedIn> {
        let (email, password) = self.validate_login(req).map_err(Error::InvalidInput)?;
        self.throttle.per_ip(Action::Login, client).await?;
        let keys = Throttle::login_keys(email.as_str(), client);
        let prior_failures = self.throttle.before_login(&keys).await?;

        // An unknown email costs what a wrong password costs, and counts as a failure too.
        let Some(user) = self.store.user_by_email(email.as_str()).await? else {
            self.passwords.verify_nobody(&password).await?;
            self.throttle.login_failed(&keys).await?;
            metrics::login_failed();
            return Err(Error::InvalidCredentials);
        };
        match self.passwords.verify(&password, &user.password).await? {
            Verdict::Mismatch => {
                self.throttle.login_failed(&keys).await?;
                metrics::login_failed();
                return Err(Error::InvalidCredentials);
            }
            Verdict::Match => {}
            Verdict::MatchNeedsRehash(hash) => {
                self.store.set_password_hash(user.user_id, &hash, Utc::now()).await?;
                tracing::info!(user_id = user.user_id, "password hash upgraded");
            }
        }
        self.throttle.login_succeeded(&keys, prior_failures).await?;

        let now = Utc::now();
        let session_id = Uuid::new_v4();
        self.store
            .insert_session(&NewSession {
                session_id,
                user_id: user.user_id,
                now,
                expires_at: now + self.sessions.lifetime,
                user_agent: client.user_agent.as_deref(),
                ip: client.ip.as_deref(),
            })
            .await?;
        metrics::login_succeeded();
        tracing::info!(user_id = user.user_id, %session_id, "logged in");
        self.signed_in(&user, RefreshClaim { session_id, generation: 0 }, now)
    }

    /// Rotates a refresh token. The successor of a generation is always the same token,
    /// so a retry inside the grace window gets the very token the first call got; an
    /// older token presented later is taken as stolen and ends the session.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, req: &pb::RefreshTokenRequest, client: &ClientInfo) -> Result<SignedIn> {
        if req.refresh_token.trim().is_empty() {
            return Err(Error::invalid("refresh_token", "must not be empty"));
        }
        self.throttle.per_ip(Action::Refresh, client).await?;
        let claim = self.refresh.decode(req.refresh_token.trim()).ok_or(Error::RefreshRejected)?;
        let now = Utc::now();
        let idle_cutoff = now - self.sessions.idle_timeout;

        let session = match self.store.advance_session(claim.session_id, claim.generation, now, idle_cutoff).await? {
            Some(session) => session,
            None => {
                let session = self.store.session(claim.session_id).await?.ok_or(Error::RefreshRejected)?;
                let live = session.revoked_at.is_none() && session.expires_at > now;
                let just_rotated = session.generation == claim.generation + 1
                    && session.rotated_at.is_some_and(|at| at + self.sessions.reuse_grace >= now);
                if live && just_rotated {
                    tracing::info!(session_id = %session.session_id, "refresh retried within the grace window");
                    session
                } else {
                    if live && session.generation > claim.generation {
                        self.store.revoke_session(session.session_id, now).await?;
                        self.cache.apply(SessionChange::Session(session.session_id));
                        metrics::refresh_reuse_detected();
                        tracing::warn!(session_id = %session.session_id, user_id = session.user_id, "refresh token reused: session revoked");
                    }
                    return Err(Error::RefreshRejected);
                }
            }
        };
        let user = self.store.user_by_id(session.user_id).await?.ok_or(Error::RefreshRejected)?;
        self.signed_in(&user, RefreshClaim { session_id: session.session_id, generation: session.generation }, now)
    }

    /// The caller's profile, given the `authorization` header or metadata value.
    pub async fn me(&self, authorization: Option<&str>) -> Result<pb::User> {
        let (_, user) = self.authenticate(authorization).await?;
        Ok(user_message(&user))
    }

    /// Ends the caller's session, or all of the user's; returns how many ended.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, authorization: Option<&str>, all_sessions: bool) -> Result<u64> {
        let (access, user) = self.authenticate(authorization).await?;
        let now = Utc::now();
        let (ended, change) = if all_sessions {
            (self.store.revoke_user_sessions(user.user_id, now).await?, SessionChange::User(user.user_id))
        } else {
            (self.store.revoke_session(access.session_id, now).await?, SessionChange::Session(access.session_id))
        };
        self.cache.apply(change);
        tracing::info!(user_id = user.user_id, session_id = %access.session_id, all_sessions, ended, "logged out");
        Ok(ended)
    }

    /// Checks the fields of a profile update that are present, as registration does.
    pub fn validate_update(&self, req: &pb::UpdateMeRequest) -> Result<ProfileChange, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let name = req.name.as_deref().map(|n| v.check("name", UserName::parse(n)));
        let location = req.location.as_deref().map(|l| v.check("location", Location::parse(l)));
        let about = req.about.as_deref().map(|a| v.check("about", About::parse(Some(a))));
        v.finish(|| {
            Some(ProfileChange {
                name: name.map(|n| n.ok_or(())).transpose().ok()?,
                location: location.map(|l| l.ok_or(())).transpose().ok()?,
                about: about.map(|a| a.ok_or(())).transpose().ok()?,
            })
        })
    }

    /// Changes the caller's name, location or about; absent fields stay as they are.
    #[tracing::instrument(skip_all)]
    pub async fn update_me(&self, authorization: Option<&str>, req: &pb::UpdateMeRequest) -> Result<pb::User> {
        let (_, user) = self.authenticate(authorization).await?;
        let change = self.validate_update(req).map_err(Error::InvalidInput)?;
        let update = ProfileUpdate {
            name: change.name.as_ref().map(UserName::as_str),
            location: change.location.as_ref().map(Location::as_str),
            about: change.about.as_ref().map(About::as_deref),
        };
        let updated = self.store.update_user(user.user_id, &update, Utc::now()).await?.ok_or(Error::InvalidToken)?;
        self.cache.apply(SessionChange::User(user.user_id));
        tracing::info!(user_id = user.user_id, "profile updated");
        Ok(user_message(&updated))
    }

    /// Checks the fields of a password change.
    pub fn validate_password_change(
        &self,
        req: &pb::ChangePasswordRequest,
    ) -> Result<(Password, Password), Vec<FieldViolation>> {
        let mut v = Violations::default();
        let current = v.check("current_password", Password::parse_offered(&req.current_password, self.password_policy));
        let new = v.check("new_password", Password::parse_new(&req.new_password, self.password_policy));
        v.finish(|| Some((current?, new?)))
    }

    /// Replaces the caller's password, given the current one, and ends every other
    /// session of the user; returns how many ended.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(&self, authorization: Option<&str>, req: &pb::ChangePasswordRequest) -> Result<u64> {
        let (access, user) = self.authenticate(authorization).await?;
        let (current, new) = self.validate_password_change(req).map_err(Error::InvalidInput)?;
        let user = self.fresh(&user).await?;
        self.check_password(&user, &current, "current_password").await?;
        let hash = self.passwords.hash(&new).await?;
        let now = Utc::now();
        self.store.set_password_hash(user.user_id, &hash, now).await?;
        let ended = self.store.revoke_other_sessions(user.user_id, access.session_id, now).await?;
        self.cache.apply(SessionChange::User(user.user_id));
        tracing::info!(user_id = user.user_id, ended, "password changed; other sessions ended");
        Ok(ended)
    }

    /// Checks the field of an account deletion.
    pub fn validate_deletion(&self, req: &pb::DeleteMeRequest) -> Result<Password, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let password = v.check("password", Password::parse_offered(&req.password, self.password_policy));
        v.finish(|| password)
    }

    /// Deletes the caller's account, given its password, with every session: its tokens
    /// stop working at once and the email is free again.
    #[tracing::instrument(skip_all)]
    pub async fn delete_me(&self, authorization: Option<&str>, req: &pb::DeleteMeRequest) -> Result<()> {
        let (_, user) = self.authenticate(authorization).await?;
        let password = self.validate_deletion(req).map_err(Error::InvalidInput)?;
        let user = self.fresh(&user).await?;
        self.check_password(&user, &password, "password").await?;
        self.store.delete_user(user.user_id).await?;
        self.cache.apply(SessionChange::User(user.user_id));
        tracing::info!(user_id = user.user_id, "account deleted");
        Ok(())
    }

    /// The caller's live sessions, the caller's own marked.
    pub async fn list_sessions(&self, authorization: Option<&str>) -> Result<Vec<pb::Session>> {
        let (access, user) = self.authenticate(authorization).await?;
        let sessions = self.store.user_sessions(user.user_id, Utc::now()).await?;
        Ok(sessions
            .into_iter()
            .map(|s| pb::Session {
                session_id: s.session_id.to_string(),
                created_at: Some(timestamp(s.created_at)),
                last_used_at: Some(timestamp(s.last_used_at)),
                expires_at: Some(timestamp(s.expires_at)),
                user_agent: s.user_agent.unwrap_or_default(),
                ip: s.ip.unwrap_or_default(),
                current: s.session_id == access.session_id,
            })
            .collect())
    }

    /// Ends one of the caller's sessions. Not the caller's, unknown, ended or not even an
    /// id: all [`Error::SessionNotFound`], so that no one learns of other users' sessions.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_session(&self, authorization: Option<&str>, session_id: &str) -> Result<()> {
        let (_, user) = self.authenticate(authorization).await?;
        let session_id = Uuid::parse_str(session_id.trim()).map_err(|_| Error::SessionNotFound)?;
        let ended = self.store.revoke_user_session(session_id, user.user_id, Utc::now()).await?;
        self.cache.apply(SessionChange::Session(session_id));
        if ended == 0 {
            return Err(Error::SessionNotFound);
        }
        tracing::info!(user_id = user.user_id, %session_id, "session revoked");
        Ok(())
    }

    /// The database pool's state, for metrics.
    pub fn pool_usage(&self) -> crate::store::PoolUsage {
        self.store.pool_usage()
    }

    /// Checks the password of a signed-in user; a wrong one is a violation of `field`
    /// (the caller's token is good: this is not an authentication failure).
    async fn check_password(&self, user: &UserRecord, password: &Password, field: &str) -> Result<()> {
        match self.passwords.verify(password, &user.password).await? {
            Verdict::Mismatch => Err(Error::invalid(field, "is incorrect")),
            Verdict::Match | Verdict::MatchNeedsRehash(_) => Ok(()),
        }
    }

    /// Whether `token` is an access token that is active right now (RFC 7662 semantics:
    /// an inactive token is an answer, not an error).
    pub async fn validate_token(&self, token: &str) -> Result<pb::ValidateTokenResponse> {
        if token.trim().is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        let inactive = pb::ValidateTokenResponse::default();
        let Some(access) = self.access.verify(token.trim()) else {
            return Ok(inactive);
        };
        if self.live_session_user(&access).await?.is_none() {
            return Ok(inactive);
        }
        Ok(pb::ValidateTokenResponse {
            active: true,
            user_id: access.user_id,
            session_id: access.session_id.to_string(),
            expires_at: Some(prost_types::Timestamp { seconds: access.expires_at, nanos: 0 }),
        })
    }

    /// The public keys that verify access tokens.
    pub fn jwks(&self) -> Vec<jsonwebtoken::jwk::Jwk> {
        self.access.jwks()
    }

    /// The live session and user behind a bearer token: signature, type, issuer,
    /// audience, times, and then that the session is live and the user still exists.
    async fn authenticate(&self, authorization: Option<&str>) -> Result<(VerifiedAccess, Arc<UserRecord>)> {
        let token = bearer_token(authorization.ok_or(Error::MissingToken)?).ok_or(Error::MissingToken)?;
        let access = self.access.verify(token).ok_or(Error::InvalidToken)?;
        let user = self.live_session_user(&access).await?.ok_or(Error::InvalidToken)?;
        Ok((access, user))
    }

    /// The user as the database has it now: a password is never checked against a cached
    /// copy, which another process may have just changed.
    async fn fresh(&self, user: &UserRecord) -> Result<UserRecord> {
        self.store.user_by_id(user.user_id).await?.ok_or(Error::InvalidToken)
    }

    /// The user of the token's session if that session is live, from the cache when it
    /// was confirmed moments ago.
    async fn live_session_user(&self, access: &VerifiedAccess) -> Result<Option<Arc<UserRecord>>> {
        if let Some(user) = self.cache.get(access.session_id, access.user_id) {
            return Ok(Some(user));
        }
        let asked = self.cache.ask();
        let Some(user) = self.store.session_user(access.session_id, access.user_id, Utc::now()).await? else {
            return Ok(None);
        };
        let user = Arc::new(user);
        self.cache.put(access.session_id, Arc::clone(&user), asked);
        Ok(Some(user))
    }

    fn signed_in(&self, user: &UserRecord, refresh: RefreshClaim, now: DateTime<Utc>) -> Result<SignedIn> {
        let access_token =
            self.access.issue(user.user_id, refresh.session_id, now.timestamp()).context("signing an access token")?;
        Ok(SignedIn {
            user: user_message(user),
            tokens: pb::TokenResponse {
                access_token,
                refresh_token: self.refresh.encode(refresh),
                token_type: "Bearer".into(),
                expires_in: self.access.lifetime().as_secs() as i64,
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
