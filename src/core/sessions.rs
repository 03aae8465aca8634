//! Sessions: login, refresh, logout, the caller's sessions, and token checks for other services.

use chrono::Utc;
use uuid::Uuid;

use super::throttle::{Action, Throttle};
use super::{Authd, Caller, ClientInfo, Error, Result, SignedIn, timestamp};
use crate::{
    domain::{Email, FieldViolation, Password, Violations},
    metrics, pb,
    security::{passwords::Verdict, refresh::RefreshClaim},
    store::{NewSession, SessionChange},
};

impl Authd {
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

    /// Ends the caller's session, or all of the user's; returns how many ended.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, caller: &Caller, all_sessions: bool) -> Result<u64> {
        let Caller { access, user } = caller;
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

    /// The caller's live sessions, the caller's own marked.
    pub async fn list_sessions(&self, caller: &Caller) -> Result<Vec<pb::Session>> {
        let Caller { access, user } = caller;
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
    pub async fn revoke_session(&self, caller: &Caller, session_id: &str) -> Result<()> {
        let user = &caller.user;
        let session_id = Uuid::parse_str(session_id.trim()).map_err(|_| Error::SessionNotFound)?;
        let ended = self.store.revoke_user_session(session_id, user.user_id, Utc::now()).await?;
        self.cache.apply(SessionChange::Session(session_id));
        if ended == 0 {
            return Err(Error::SessionNotFound);
        }
        tracing::info!(user_id = user.user_id, %session_id, "session revoked");
        Ok(())
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
}
