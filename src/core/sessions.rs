//! Sessions: login, refresh, logout, the caller's sessions, and token checks for other services.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::throttle::{Action, Source};
use super::{Authd, Caller, ClientInfo, Error, PASSWORD_ONLY, Proved, Result, SignedIn, events, timestamp};
use crate::{
    domain::{Email, FieldViolation, Password, Violations},
    metrics, pb,
    security::{devices::DeviceHash, passwords::Verdict, refresh::RefreshClaim},
    store::{NewSession, SessionChange, SessionSummary, UserRecord},
};

/// A logout: how many sessions ended.
pub struct LoggedOut {
    pub sessions_ended: u64,
}

/// A known device is forgotten after this long without a login from it.
pub const DEVICE_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);
/// The device tokens one login may present (the field and the cookies together).
pub const DEVICE_CANDIDATES: usize = 5;
/// The devices kept per user, the most recently seen.
const DEVICES_PER_USER: i64 = 20;

impl Authd {
    /// Checks the fields of a login request, reporting all that are bad.
    pub fn validate_login(&self, req: &pb::LoginRequest) -> Result<(Email, Password), Vec<FieldViolation>> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(&req.email));
        let password = v.check("password", Password::parse_offered(&req.password));
        v.finish(|| Some((email?, password?)))
    }

    #[tracing::instrument(skip_all)]
    pub async fn login(&self, req: &pb::LoginRequest, client: &ClientInfo) -> Result<SignedIn> {
        self.login_presenting(req, &[], client).await
    }

    /// A login that presents, besides `req.device_token`, more device tokens that may be
    /// this device's: a browser sends every `authd_device` cookie it holds, and a page of
    /// a sibling domain may have set one of them (cookie tossing). The first known one,
    /// of at most [`DEVICE_CANDIDATES`], is the device.
    #[tracing::instrument(skip_all)]
    pub async fn login_presenting(
        &self,
        req: &pb::LoginRequest,
        more_devices: &[String],
        client: &ClientInfo,
    ) -> Result<SignedIn> {
        let (email, password) = self.validate_login(req).map_err(Error::InvalidInput)?;
        self.addresses.check(Action::Login, client)?;
        self.throttle.per_ip(Action::Login, client).await?;
        let account = self.account(email.as_str());
        let user = self.store.user_by_email(email.as_str()).await?;
        let presented = std::iter::once(req.device_token.as_str()).chain(more_devices.iter().map(String::as_str));
        let device = self.known_device(user.as_ref(), presented).await?;
        let source = device.as_ref().map_or(Source::Address(client), |(_, hash)| Source::Device(hash));
        let attempt = self.throttle.begin_check(&account, source, client).await?;

        // An unknown email costs what a wrong password costs, and counts as a failure too.
        let checked = match &user {
            Some(user) => self.passwords.verify(account.digest(), &password, &user.password).await,
            None => self.passwords.verify_nobody(account.digest(), &password).await.map(|()| Verdict::Mismatch),
        };
        let verdict = match checked {
            Ok(verdict) => verdict,
            Err(e) => {
                attempt.not_checked().await;
                return Err(e.into());
            }
        };
        let user_id = user.as_ref().map(|u| u.user_id);
        let (Some(user), Verdict::Match | Verdict::MatchNeedsRehash(_)) = (user, &verdict) else {
            attempt.failed();
            metrics::login_failed();
            events::login_failed(&self.audit, account.digest(), user_id, client);
            return Err(Error::InvalidCredentials);
        };
        attempt.passed().await?;
        self.check_verified(&user, client)?;
        self.upgrade_hash(&user, verdict).await?;
        self.challenge_second_factor(&user, device.as_ref().map(|(_, hash)| hash), client).await?;
        let proved = Proved { amr: PASSWORD_ONLY, auth_time: None };
        let signed_in = self.start_session(&user, Verdict::Match, device, client, proved).await?;
        metrics::login_succeeded();
        Ok(signed_in)
    }

    /// The first of the `presented` device tokens (at most [`DEVICE_CANDIDATES`] of them
    /// looked at) that has logged in to `user` lately, with its hash. Asked for an unknown
    /// email too, so that the answer takes the same time.
    async fn known_device<'t>(
        &self,
        user: Option<&UserRecord>,
        presented: impl Iterator<Item = &'t str>,
    ) -> Result<Option<(&'t str, DeviceHash)>> {
        let user_id = user.map_or(-1, |u| u.user_id);
        let seen_since = Utc::now() - DEVICE_LIFETIME;
        let candidates = presented.map(str::trim).filter(|t| !t.is_empty()).take(DEVICE_CANDIDATES);
        for token in candidates {
            let Some(hash) = self.devices.hash_of(token) else { continue };
            if self.store.is_known_device(user_id, &hash, seen_since).await? {
                return Ok(Some((token, hash)));
            }
        }
        Ok(None)
    }

    /// Stores the new hash of a right password if `verdict` says so, only over the hash
    /// that was checked: a password changed meanwhile stays changed.
    async fn upgrade_hash(&self, user: &UserRecord, verdict: Verdict) -> Result<()> {
        if let Verdict::MatchNeedsRehash(hash) = verdict
            && self.store.upgrade_password_hash(user.user_id, &user.password, &hash).await?
        {
            tracing::info!(user_id = user.user_id, "password hash upgraded");
        }
        Ok(())
    }

    /// Starts a session for `user`, whose password was right in the credentials read into
    /// `user`; none if those changed since (a password change, or a logout everywhere,
    /// done while the password was being checked). `proved` is what the login proved.
    /// A known `device` given without its token (a login finished by a second factor) is
    /// touched and keeps the token it has: the answer's `device_token` is then empty.
    pub(super) async fn start_session(
        &self,
        user: &UserRecord,
        verdict: Verdict,
        device: Option<(&str, DeviceHash)>,
        client: &ClientInfo,
        proved: Proved<'_>,
    ) -> Result<SignedIn> {
        self.upgrade_hash(user, verdict).await?;
        let now = Utc::now();
        let session_id = Uuid::new_v4();
        let (device_token, device_hash, is_new) = match device {
            Some((token, hash)) => (token.to_owned(), hash, false),
            None => {
                let (token, hash) = self.devices.issue();
                (token, hash, true)
            }
        };
        let session = NewSession {
            device_hash: Some(&device_hash),
            amr: proved.amr,
            auth_time: proved.auth_time,
            ..self.new_session(user, session_id, client, now)
        };
        if !self.store.insert_session(&session).await? {
            if self.store.user_disabled(user.user_id).await? == Some(true) {
                // Told apart in the log and the audit trail only: the caller hears what a
                // wrong password hears.
                events::login_disabled(&self.audit, user.user_id, client);
            } else {
                tracing::info!(
                    user_id = user.user_id,
                    "the credentials changed while a login checked them: no session"
                );
            }
            return Err(Error::InvalidCredentials);
        }
        self.end_sessions_past_the_cap(user.user_id, client, now).await?;
        if is_new {
            let (version, seen_since) = (user.credentials_version, now - DEVICE_LIFETIME);
            self.store.add_device(user.user_id, &device_hash, version, now, seen_since, DEVICES_PER_USER).await?;
        } else {
            self.store.touch_device(user.user_id, &device_hash, now).await?;
        }
        events::login_succeeded(&self.audit, user.user_id, session_id, client);
        let claim = RefreshClaim { session_id, generation: 0 };
        let mut signed_in = self.signed_in(user, claim, now, session.expires_at, proved).await?;
        signed_in.tokens.device_token = device_token;
        Ok(signed_in)
    }

    /// Rotates a refresh token. The successor of a generation is always the same token,
    /// so a retry inside the grace window gets the very token the first call got; an
    /// older token presented later is taken as stolen and ends the session.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, req: &pb::RefreshTokenRequest, client: &ClientInfo) -> Result<SignedIn> {
        if req.refresh_token.trim().is_empty() {
            return Err(Error::invalid("refresh_token", "must not be empty"));
        }
        self.addresses.check(Action::Refresh, client)?;
        // A forged token costs an HMAC, never a database write.
        let claim = self.refresh.decode(req.refresh_token.trim()).ok_or(Error::RefreshRejected)?;
        self.throttle.per_ip(Action::Refresh, client).await?;
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
                        let revoked = self.store.revoke_session(session.session_id, now).await;
                        self.cache.apply(SessionChange::Session(session.session_id));
                        revoked?;
                        metrics::refresh_reuse_detected();
                        events::refresh_token_reused(&self.audit, session.user_id, session.session_id, client);
                        let (user_id, session_id) = (session.user_id, Some(session.session_id));
                        events::sessions_revoked(&self.audit, user_id, session_id, 1, "refresh_token_reuse", client);
                    }
                    return Err(Error::RefreshRejected);
                }
            }
        };
        let user = self.store.user_by_id(session.user_id).await?.ok_or(Error::RefreshRejected)?;
        // A session opened before verification was required goes no further.
        self.check_verified(&user, client)?;
        let claim = RefreshClaim { session_id: session.session_id, generation: session.generation };
        let proved = Proved { amr: &session.amr, auth_time: session.auth_time };
        self.signed_in(&user, claim, now, session.expires_at, proved).await
    }

    /// Ends the caller's session, or all of the user's. All of them: every known device of
    /// the user is forgotten but the one the caller's session logged in with, if it is
    /// still known (with the token it has). No device token is handed out: an access token
    /// alone (stolen, say) must never yield a device that passes the account's ceiling.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, caller: &Caller, all_sessions: bool) -> Result<LoggedOut> {
        let Caller { access, user, client } = caller;
        let now = Utc::now();
        let (ended, change) = if all_sessions {
            let ended = self.store.end_all_sessions(user.user_id, access.session_id, now, now - DEVICE_LIFETIME).await;
            (ended, SessionChange::User(user.user_id))
        } else {
            let ended = self.store.revoke_session(access.session_id, now).await;
            (ended, SessionChange::Session(access.session_id))
        };
        // Applied here even when the store failed: a revocation that committed but could
        // not be logged and announced must still hold in this process.
        self.cache.apply(change);
        let ended = ended?;
        let reason = if all_sessions { "logout_all" } else { "logout" };
        events::sessions_revoked(&self.audit, user.user_id, Some(access.session_id), ended, reason, client);
        Ok(LoggedOut { sessions_ended: ended })
    }

    /// The caller's live sessions (not ended, expired or idle), the caller's own marked.
    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<pb::Session>> {
        let Caller { access, user, .. } = caller;
        let now = Utc::now();
        let sessions = self.store.user_sessions(user.user_id, now, now - self.sessions.idle_timeout).await?;
        Ok(sessions.into_iter().map(|s| session_message(s, access.session_id)).collect())
    }

    /// Ends one of the caller's sessions. Not the caller's, unknown, ended or not even an
    /// id: all [`Error::SessionNotFound`], so that no one learns of other users' sessions.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_session(&self, caller: &Caller, session_id: &str) -> Result<()> {
        let user = &caller.user;
        let session_id = Uuid::parse_str(session_id.trim()).map_err(|_| Error::SessionNotFound)?;
        let ended = self.store.revoke_user_session(session_id, user.user_id, Utc::now()).await?;
        if ended == 0 {
            return Err(Error::SessionNotFound);
        }
        self.cache.apply(SessionChange::Session(session_id));
        events::sessions_revoked(&self.audit, user.user_id, Some(session_id), ended, "revoked", &caller.client);
        Ok(())
    }

    /// Ends the session of a refresh token, or of an access token, given nothing else
    /// (RFC 7009): a token that is not one of ours, or whose session is over already, is
    /// no error. Any genuine refresh token of the session will do, as any of them replayed
    /// at refresh would end it too.
    ///
    /// Limited as a refresh is: per address in process before the token's MAC is checked,
    /// and per IP in the database for a genuine token.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_token(&self, token: &str, client: &ClientInfo) -> Result<()> {
        self.addresses.check(Action::Revoke, client)?;
        let token = token.trim();
        let session_id = self.refresh.decode(token).map(|claim| claim.session_id);
        let Some(session_id) = session_id.or_else(|| self.access.verify(token).map(|access| access.session_id)) else {
            return Ok(());
        };
        self.throttle.per_ip(Action::Revoke, client).await?;
        let ended = self.store.end_session(session_id, Utc::now()).await;
        self.cache.apply(SessionChange::Session(session_id));
        let ended = ended?;
        if let Some(user_id) = ended {
            events::sessions_revoked(&self.audit, user_id, Some(session_id), 1, "token_revocation", client);
        }
        Ok(())
    }

    /// After a login: ends the user's live sessions past the cap, those unused longest.
    async fn end_sessions_past_the_cap(&self, user_id: i64, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        let idle_cutoff = now - self.sessions.idle_timeout;
        let ended = self.store.end_sessions_past(user_id, self.sessions.max_per_user, now, idle_cutoff).await?;
        for &session_id in &ended {
            self.cache.apply(SessionChange::Session(session_id));
        }
        if !ended.is_empty() {
            events::sessions_revoked(&self.audit, user_id, None, ended.len() as u64, "session_cap", client);
        }
        Ok(())
    }

    /// Deletes sessions that ended (revoked, expired or idle) longer ago than the
    /// retention; returns how many.
    pub async fn prune_sessions(&self) -> Result<u64> {
        let now = Utc::now();
        let ended_before = now - self.sessions.retention;
        // The revocation log goes as far back as ended sessions are kept: what a service
        // resuming the feed can be told of without a fresh snapshot.
        self.store.prune_revocations(ended_before).await?;
        // Login challenges live minutes; an expired one is of no use to anyone.
        self.store.delete_expired_challenges(now - super::factors::CHALLENGE_LIFETIME).await?;
        Ok(self.store.delete_ended_sessions(ended_before, ended_before - self.sessions.idle_timeout).await?)
    }

    /// Whether `token` is an access token that is active right now (RFC 7662 semantics:
    /// an inactive token is an answer, not an error), for a service client with the
    /// `introspect` scope (`authorization`, see [`Authd::authenticate_client`]), or for
    /// anyone with `OPEN_INTROSPECTION`.
    pub async fn validate_token(
        &self,
        authorization: Option<&str>,
        client: &ClientInfo,
        token: &str,
    ) -> Result<pb::ValidateTokenResponse> {
        if !self.token_settings.open_introspection {
            let caller = self.authenticate_client(authorization, client).await?;
            if !caller.has("introspect") {
                return Err(Error::PermissionDenied("ValidateToken needs a client with the introspect scope."));
            }
        }
        if token.trim().is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        let inactive = pb::ValidateTokenResponse::default();
        let Some(access) = self.access.verify(token.trim()) else {
            return Ok(inactive);
        };
        let Some(user) = self.live_session_user(&access).await? else {
            return Ok(inactive);
        };
        Ok(pb::ValidateTokenResponse {
            active: true,
            user_id: access.user_id,
            session_id: access.session_id.to_string(),
            expires_at: Some(prost_types::Timestamp { seconds: access.expires_at, nanos: 0 }),
            email_verified: user.email_verified_at.is_some(),
            roles: access.roles,
            amr: access.amr,
        })
    }

    /// The public keys that verify access tokens.
    pub fn jwks(&self) -> Vec<jsonwebtoken::jwk::Jwk> {
        self.access.jwks()
    }
}

/// A session as its owner (or an admin) sees it; `current` marks the caller's own.
pub(super) fn session_message(s: SessionSummary, current: Uuid) -> pb::Session {
    pb::Session {
        current: s.session_id == current,
        session_id: s.session_id.to_string(),
        created_at: Some(timestamp(s.created_at)),
        last_used_at: Some(timestamp(s.last_used_at)),
        expires_at: Some(timestamp(s.expires_at)),
        user_agent: s.user_agent.unwrap_or_default(),
        ip: s.ip.unwrap_or_default(),
    }
}
