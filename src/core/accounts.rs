//! The caller's own account: registration, profile, password and deletion.

use chrono::Utc;

use super::{Authd, Caller, ClientInfo, Error, Result, throttle::Action, user_message};
use crate::{
    domain::{About, Email, FieldViolation, Location, Password, UserName, Violations},
    pb,
    security::passwords::Verdict,
    store::{NewUser, ProfileUpdate, SessionChange, UserRecord},
};

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

impl Authd {
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
    pub async fn change_password(&self, caller: &Caller, req: &pb::ChangePasswordRequest) -> Result<u64> {
        let Caller { access, user } = caller;
        let (current, new) = self.validate_password_change(req).map_err(Error::InvalidInput)?;
        let user = self.fresh(user).await?;
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
    pub async fn delete_me(&self, caller: &Caller, req: &pb::DeleteMeRequest) -> Result<()> {
        let user = &caller.user;
        let password = self.validate_deletion(req).map_err(Error::InvalidInput)?;
        let user = self.fresh(user).await?;
        self.check_password(&user, &password, "password").await?;
        self.store.delete_user(user.user_id).await?;
        self.cache.apply(SessionChange::User(user.user_id));
        tracing::info!(user_id = user.user_id, "account deleted");
        Ok(())
    }

    /// Checks the password of a signed-in user; a wrong one is a violation of `field`
    /// (the caller's token is good: this is not an authentication failure).
    async fn check_password(&self, user: &UserRecord, password: &Password, field: &str) -> Result<()> {
        match self.passwords.verify(password, &user.password).await? {
            Verdict::Mismatch => Err(Error::invalid(field, "is incorrect")),
            Verdict::Match | Verdict::MatchNeedsRehash(_) => Ok(()),
        }
    }
}
