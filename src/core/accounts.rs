//! The caller's own account: registration, profile, password and deletion.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Authd, Caller, ClientInfo, Error, PASSWORD_ONLY, Proved, Result, SignedIn, events,
    sessions::DEVICE_LIFETIME,
    throttle::{Action, Source},
    user_message,
};
use crate::{
    domain::{About, Email, FieldViolation, Location, Password, PasswordOwner, UserName, Violations},
    pb,
    security::{passwords::Verdict, refresh::RefreshClaim},
    store::{NewSession, NewUser, PasswordChange, ProfileUpdate, SessionChange, StoreError, UserRecord},
};

/// A registration whose every field is valid.
pub struct Registration {
    pub(super) name: UserName,
    pub(super) email: Email,
    pub(super) location: Location,
    pub(super) about: About,
    pub(super) password: Password,
}

impl Registration {
    /// The user to insert, with the hash of the registration's password.
    pub(super) fn new_user<'a>(&'a self, password_hash: &'a str) -> NewUser<'a> {
        NewUser {
            name: self.name.as_str(),
            email: self.email.as_str(),
            location: self.location.as_str(),
            about: self.about.as_deref(),
            password_hash,
        }
    }
}

/// A changed password: how many other sessions ended, and the new session.
pub struct PasswordChanged {
    pub sessions_ended: u64,
    pub signed_in: SignedIn,
}

/// A profile update whose present fields are valid; `about: Some(About(None))` clears it.
pub struct ProfileChange {
    pub(super) name: Option<UserName>,
    pub(super) location: Option<Location>,
    pub(super) about: Option<About>,
}

impl Authd {
    /// Checks every field of a registration, reporting all that are bad.
    pub fn validate_registration(&self, req: &pb::RegisterUserRequest) -> Result<Registration, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let name = v.check("name", UserName::parse(&req.name));
        let email = v.check("email", Email::parse(&req.email));
        let location = v.check("location", Location::parse(&req.location));
        let about = v.check("about", About::parse(req.about.as_deref()));
        let owner = PasswordOwner { email: &req.email, name: &req.name };
        let password = v.check("password", Password::parse_new(&req.password, self.password_policy, owner));
        v.finish(|| {
            Some(Registration { name: name?, email: email?, location: location?, about: about?, password: password? })
        })
    }

    /// The per-address limit, then [`Authd::validate_registration`]: the password's
    /// strength check costs CPU, so a flood is turned away before it.
    pub fn screen_registration(&self, req: &pb::RegisterUserRequest, client: &ClientInfo) -> Result<Registration> {
        self.addresses.check(Action::Register, client)?;
        self.validate_registration(req).map_err(Error::InvalidInput)
    }

    /// Creates an account and mails its address a verification. With verification
    /// required, a taken address answers as a new one does (its owner gets a mail), and
    /// the answer carries no user for any registration: it must tell nothing.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, req: &pb::RegisterUserRequest, client: &ClientInfo) -> Result<Option<pb::User>> {
        let r = self.screen_registration(req, client)?;
        self.throttle.per_ip(Action::Register, client).await?;
        let hash = self.passwords.hash(None, &r.password).await?;
        let inserted = self.store.insert_user(&r.new_user(&hash)).await;
        let hidden = self.mail.settings.require_verification;
        let user = match inserted {
            Ok(user) => user,
            Err(StoreError::EmailTaken) if hidden => {
                self.registered_again(r.email.as_str(), client).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user_id = user.user_id, "registered");
        // The account exists: a mail that cannot be queued now can be asked for again.
        if let Err(e) = self.send_verification(&user).await {
            e.log_if_internal();
        }
        Ok((!hidden).then(|| user_message(&user)))
    }

    /// The caller's profile.
    pub fn me(&self, caller: &Caller) -> pb::User {
        user_message(&caller.user)
    }

    /// Checks the fields of a profile update that are present, as registration does.
    pub fn validate_update(&self, req: &pb::UpdateMeRequest) -> Result<ProfileChange, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let name = req.name.as_deref().map(|n| v.check("name", UserName::parse(n)));
        let location = req.location.as_deref().map(|l| v.check("location", Location::parse(l)));
        let about = match (req.about.as_deref(), req.clear_about) {
            (None, false) => None,
            (None, true) => Some(Some(About::none())),
            (Some(a), clear) => {
                if clear {
                    v.push(FieldViolation::new("clear_about", "must not be set together with about"));
                }
                Some(v.check("about", About::parse(Some(a))))
            }
        };
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
    pub async fn update_me(&self, caller: &Caller, req: &pb::UpdateMeRequest) -> Result<pb::User> {
        let user = &caller.user;
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

    /// Checks the fields of a password change by `caller`.
    pub fn validate_password_change(
        &self,
        caller: &Caller,
        req: &pb::ChangePasswordRequest,
    ) -> Result<(Password, Password), Vec<FieldViolation>> {
        let mut v = Violations::default();
        let current = v.check("current_password", Password::parse_offered(&req.current_password));
        let owner = PasswordOwner { email: &caller.user.email, name: &caller.user.name };
        let new = v.check("new_password", Password::parse_new(&req.new_password, self.password_policy, owner));
        v.finish(|| Some((current?, new?)))
    }

    /// Replaces the caller's password, given the current one, and ends every session of
    /// the user, the caller's too: the caller goes on in a new session, started by the
    /// same change. Returns how many other sessions ended, and the new session.
    /// The per-address limit, then [`Authd::validate_password_change`], as for a registration.
    pub fn screen_password_change(
        &self,
        caller: &Caller,
        req: &pb::ChangePasswordRequest,
    ) -> Result<(Password, Password)> {
        self.addresses.check(Action::ChangePassword, &caller.client)?;
        self.validate_password_change(caller, req).map_err(Error::InvalidInput)
    }

    #[tracing::instrument(skip_all)]
    pub async fn change_password(&self, caller: &Caller, req: &pb::ChangePasswordRequest) -> Result<PasswordChanged> {
        let client = &caller.client;
        let (current, new) = self.screen_password_change(caller, req)?;
        let user = self.fresh(&caller.user).await?;
        self.check_password(caller, &user, &current, "current_password").await.inspect_err(|e| {
            wrong_password(e, || events::password_changed(&self.audit, user.user_id, false, 0, client))
        })?;
        // The change starts a session: not for an unverified address when one is required.
        self.check_verified(&user, client)?;
        let hash = self.passwords.hash(Some(&owner(&user)), &new).await?;
        let now = Utc::now();
        let session_id = Uuid::new_v4();
        // The new session proved what the caller's had.
        let amr = caller.access.amr.join(" ");
        let auth_time = caller.access.auth_time.and_then(|t| DateTime::from_timestamp(t, 0));
        let proved = Proved { amr: if amr.is_empty() { PASSWORD_ONLY } else { &amr }, auth_time };
        // Every device is forgotten but the one the caller's session logged in with, if it
        // is still known; it keeps its token. No new device token: an access token alone
        // (stolen, say) must never yield a device that passes the account's ceiling.
        let change = PasswordChange {
            user_id: user.user_id,
            current_hash: &user.password,
            new_hash: &hash,
            current_session: caller.access.session_id,
            new_session: NewSession { amr: proved.amr, auth_time, ..self.new_session(&user, session_id, client, now) },
            devices_seen_since: now - DEVICE_LIFETIME,
        };
        // Another change got in first: the password checked is no longer the password.
        let ended = self
            .store
            .change_password(&change)
            .await?
            .ok_or_else(|| Error::invalid("current_password", "is incorrect"))?;
        self.cache.apply(SessionChange::User(user.user_id));
        events::password_changed(&self.audit, user.user_id, true, ended, client);
        let ends = change.new_session.expires_at;
        let signed_in = self.signed_in(&user, RefreshClaim { session_id, generation: 0 }, now, ends, proved).await?;
        Ok(PasswordChanged { sessions_ended: ended, signed_in })
    }

    /// Checks the field of an account deletion.
    pub fn validate_deletion(&self, req: &pb::DeleteMeRequest) -> Result<Password, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let password = v.check("password", Password::parse_offered(&req.password));
        v.finish(|| password)
    }

    /// Deletes the caller's account, given its password, with every session: its tokens
    /// stop working at once and the email is free again.
    #[tracing::instrument(skip_all)]
    pub async fn delete_me(&self, caller: &Caller, req: &pb::DeleteMeRequest) -> Result<()> {
        let password = self.validate_deletion(req).map_err(Error::InvalidInput)?;
        let user = self.fresh(&caller.user).await?;
        self.check_password(caller, &user, &password, "password").await.inspect_err(|e| {
            wrong_password(e, || events::account_deleted(&self.audit, user.user_id, false, &caller.client))
        })?;
        let deleted = self.store.delete_user(user.user_id).await;
        self.cache.apply(SessionChange::User(user.user_id));
        deleted?;
        events::account_deleted(&self.audit, user.user_id, true, &caller.client);
        Ok(())
    }

    /// Checks the password of a signed-in user; a wrong one is a violation of `field`
    /// (the caller's token is good: this is not an authentication failure). Each check is
    /// counted with the account's failed logins, and backs off per session as a login
    /// does per address: a stolen access token guesses no faster than a login.
    pub(super) async fn check_password(
        &self,
        caller: &Caller,
        user: &UserRecord,
        password: &Password,
        field: &str,
    ) -> Result<()> {
        let attempt = self
            .throttle
            .begin_check(&self.account(&user.email), Source::Session(caller.access.session_id), &caller.client)
            .await?;
        match self.passwords.verify(&owner(user), password, &user.password).await {
            Ok(Verdict::Mismatch) => {
                attempt.failed();
                Err(Error::invalid(field, "is incorrect"))
            }
            Ok(Verdict::Match | Verdict::MatchNeedsRehash(_)) => attempt.passed().await,
            Err(e) => {
                attempt.not_checked().await;
                Err(e.into())
            }
        }
    }
}

/// A signed-in user as the owner of a hash in flight: apart from their account's logins,
/// so that a flood of logins with their email cannot keep them from changing their password.
fn owner(user: &UserRecord) -> String {
    format!("user:{}", user.user_id)
}

/// Runs `report` if `error` says the password checked was wrong (not for an overload or an
/// outage, which say nothing about the password).
fn wrong_password(error: &Error, report: impl FnOnce()) {
    if matches!(error, Error::InvalidInput(_)) {
        report();
    }
}
