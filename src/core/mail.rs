//! The flows that go through the user's mailbox: email verification, password reset and
//! email change; and the outbox they write to, which a background task sends.
//!
//! A request never talks to the SMTP server: it adds a row to the outbox (in the same
//! database as everything else, so a restart loses nothing), and [`Authd::send_mail`]
//! delivers it, retrying with a backoff while the server is down or refuses.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Authd, Caller, ClientInfo, Error, Result, events, throttle::Action};
use crate::{
    config::MailSettings,
    domain::{Email, FieldViolation, Password, PasswordOwner, Violations},
    mail::{
        Outgoing, Transport,
        templates::{Template, Templates},
    },
    pb,
    security::{mail_tokens::MailTokens, sealing::Sealer},
    store::{NewEmailToken, NewMail, Purpose, SessionChange, StoreError, UserRecord},
};

/// Mails taken from the outbox at a time.
const BATCH: i64 = 20;
/// How long a claimed mail is held for its sender before another may take it.
const LEASE: Duration = Duration::from_secs(120);
/// How long work done after an answer waits, so that the answer goes out first.
const BACKGROUND_DELAY: Duration = Duration::from_millis(20);
/// Sent and given-up mail is deleted after this long.
const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything the mail flows need besides the store.
pub struct Mailer {
    pub(super) settings: MailSettings,
    templates: Templates,
    transport: Transport,
    tokens: MailTokens,
    sealer: Sealer,
    /// Wakes the sender when this process adds mail.
    wake: tokio::sync::Notify,
}

impl Mailer {
    pub fn new(settings: &MailSettings, token_key: &[u8], sealer: Sealer) -> anyhow::Result<Self> {
        Ok(Self {
            settings: settings.clone(),
            templates: Templates::load(settings.template_dir.as_deref())?,
            transport: Transport::new(settings)?,
            tokens: MailTokens::new(token_key)?,
            sealer,
            wake: tokio::sync::Notify::new(),
        })
    }

    fn link(&self, page: &str, token: &str) -> String {
        format!("{}/{page}?token={token}", self.settings.public_url)
    }
}

/// The associated data a mail body is sealed under.
fn body_row(recipient: &str, part: &str) -> String {
    format!("outbox/{recipient}/{part}")
}

fn invalid_token() -> Error {
    Error::invalid("token", "is invalid, expired or already used")
}

fn hours(d: Duration) -> String {
    (d.as_secs() / 3600).to_string()
}

impl Authd {
    fn mailer(&self) -> &Arc<Mailer> {
        &self.mail
    }

    /// Renders a mail and adds it to the outbox.
    async fn enqueue(&self, template: Template, to: &str, vars: &[(&str, &str)]) -> Result<()> {
        let m = self.mailer();
        let mail = m.templates.render(template, vars);
        let text = String::from_utf8(m.sealer.seal(&body_row(to, "text"), mail.text.as_bytes())?)
            .map_err(anyhow::Error::from)?;
        let html = String::from_utf8(m.sealer.seal(&body_row(to, "html"), mail.html.as_bytes())?)
            .map_err(anyhow::Error::from)?;
        let new =
            NewMail { recipient: to, subject: &mail.subject, text_body: &text, html_body: &html, now: Utc::now() };
        self.store.enqueue_mail(&new).await?;
        m.wake.notify_one();
        Ok(())
    }

    /// Issues a token of `purpose` for `user` and stores its hash; returns the token.
    async fn issue_token(
        &self,
        user: &UserRecord,
        purpose: Purpose,
        email: &str,
        code: Option<&str>,
        session_id: Option<Uuid>,
        lifetime: Duration,
    ) -> Result<String> {
        let m = self.mailer();
        let (token, hash) = m.tokens.issue();
        let code_hash = code.and_then(|c| m.tokens.code_hash(user.user_id, c));
        let now = Utc::now();
        self.store
            .insert_email_token(&NewEmailToken {
                token_hash: &hash,
                user_id: user.user_id,
                purpose,
                email,
                code_hash: code_hash.as_deref(),
                session_id,
                now,
                expires_at: now + lifetime,
            })
            .await?;
        Ok(token)
    }

    /// Mails `user` a verification link and code for their current address.
    pub(super) async fn send_verification(&self, user: &UserRecord) -> Result<()> {
        let m = Arc::clone(self.mailer());
        let code = m.tokens.code();
        let lifetime = m.settings.verification_token_lifetime;
        let token = self.issue_token(user, Purpose::Verify, &user.email, Some(&code), None, lifetime).await?;
        let link = m.link("verify-email", &token);
        let vars = [("name", user.name.as_str()), ("link", &link), ("code", &code), ("hours", &hours(lifetime))];
        self.enqueue(Template::VerifyEmail, &user.email, &vars).await
    }

    /// Mails a user an admin created without a password a link to choose one (a reset
    /// token, valid as long as a verification link): using it also verifies the address.
    pub(super) async fn send_invitation(&self, user: &UserRecord) -> Result<()> {
        let m = Arc::clone(self.mailer());
        let lifetime = m.settings.verification_token_lifetime;
        let token = self.issue_token(user, Purpose::Reset, &user.email, None, None, lifetime).await?;
        let link = m.link("reset-password", &token);
        let vars = [("name", user.name.as_str()), ("link", &link), ("hours", &hours(lifetime))];
        self.enqueue(Template::Invitation, &user.email, &vars).await
    }

    /// With verification required, someone registered an address that has an account:
    /// its owner hears of it (within the address's mail limit), and the caller learns nothing.
    pub(super) async fn registered_again(&self, email: &str, client: &ClientInfo) -> Result<()> {
        if self.throttle.mail_to(&self.account(email), client).await.is_err() {
            return Ok(());
        }
        let Some(user) = self.store.user_by_email(email).await? else { return Ok(()) };
        let reset_link = format!("{}/forgot-password", self.mailer().settings.public_url);
        self.enqueue(
            Template::RegisteredAgain,
            &user.email,
            &[("name", user.name.as_str()), ("reset_link", &reset_link)],
        )
        .await
    }

    /// Refuses a login of an unverified address when verification is required, and so a
    /// refresh or a password change (each starts or goes on with a session); asked only
    /// once the password was found right, so that it tells nothing to a guesser.
    pub(super) fn check_verified(&self, user: &UserRecord, client: &ClientInfo) -> Result<()> {
        if self.mailer().settings.require_verification && user.email_verified_at.is_none() {
            events::login_unverified(&self.audit, user.user_id, client);
            return Err(Error::EmailNotVerified);
        }
        Ok(())
    }

    /// Checks the fields of a verification: a token, or an email and a code.
    pub fn validate_verification(&self, req: &pb::VerifyEmailRequest) -> Result<Option<Email>, Vec<FieldViolation>> {
        let mut v = Violations::default();
        if !req.token.trim().is_empty() {
            return Ok(None);
        }
        if req.email.trim().is_empty() && req.code.trim().is_empty() {
            v.push(FieldViolation::new("token", "must not be empty (or give email and code)"));
            return v.finish(|| None);
        }
        let email = v.check("email", Email::parse(&req.email));
        if req.code.trim().len() != 6 || !req.code.trim().bytes().all(|b| b.is_ascii_digit()) {
            v.push(FieldViolation::new("code", "must be the six digits of the mail"));
        }
        v.finish(|| email.map(Some))
    }

    /// Marks an address verified, by the link's token or by the mail's code.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, req: &pb::VerifyEmailRequest, client: &ClientInfo) -> Result<()> {
        let email = self.validate_verification(req).map_err(Error::InvalidInput)?;
        self.addresses.check(Action::VerifyEmail, client)?;
        self.throttle.per_ip(Action::VerifyEmail, client).await?;
        let now = Utc::now();
        let m = self.mailer();
        let user_id = match email {
            None => {
                let hash = m.tokens.hash_of(&req.token).ok_or_else(invalid_token)?;
                self.store.verify_email_with_token(&hash, now).await?.ok_or_else(invalid_token)?
            }
            Some(email) => {
                let wrong_code = || Error::invalid("code", "is wrong, expired or used up");
                let user = self.store.user_by_email(email.as_str()).await?;
                // An unknown address takes the same statements, on no token, so that the
                // time tells nothing either.
                let user_id = user.as_ref().map_or(-1, |u| u.user_id);
                let code_hash = m.tokens.code_hash(user_id, &req.code).ok_or_else(wrong_code)?;
                let guess = self.throttle.code_guess(&self.account(email.as_str()));
                if !self.store.verify_email_with_code(&guess, user_id, &code_hash, now).await? || user.is_none() {
                    events::email_verified(&self.audit, user.map(|u| u.user_id), false, client);
                    return Err(wrong_code());
                }
                user_id
            }
        };
        self.cache.apply(SessionChange::User(user_id));
        events::email_verified(&self.audit, Some(user_id), true, client);
        Ok(())
    }

    /// Mails a new verification to an address with an account not verified yet; answers
    /// alike for any address.
    #[tracing::instrument(skip_all)]
    pub async fn resend_verification(
        &self,
        req: &pb::ResendVerificationEmailRequest,
        client: &ClientInfo,
    ) -> Result<()> {
        let email = Email::parse(&req.email).map_err(|why| Error::invalid("email", &why))?;
        self.addresses.check(Action::ResendVerification, client)?;
        self.throttle.per_ip(Action::ResendVerification, client).await?;
        self.throttle.mail_to(&self.account(email.as_str()), client).await?;
        self.in_background(async move |authd| {
            if let Some(user) = authd.store.user_by_email(email.as_str()).await?
                && user.email_verified_at.is_none()
            {
                authd.send_verification(&user).await?;
            }
            Ok(())
        });
        Ok(())
    }

    /// Mails a reset link to the address if it has an account. The answer comes before
    /// the account is even looked up, so that it is the same, in the same time, for every
    /// address.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(
        &self,
        req: &pb::RequestPasswordResetRequest,
        client: &ClientInfo,
    ) -> Result<()> {
        let email = Email::parse(&req.email).map_err(|why| Error::invalid("email", &why))?;
        self.addresses.check(Action::ForgotPassword, client)?;
        self.throttle.per_ip(Action::ForgotPassword, client).await?;
        let account = self.account(email.as_str());
        self.throttle.mail_to(&account, client).await?;
        let client = client.clone();
        self.in_background(async move |authd| {
            let user = authd.store.user_by_email(email.as_str()).await?;
            events::password_reset_requested(&authd.audit, account.digest(), user.as_ref().map(|u| u.user_id), &client);
            let Some(user) = user else { return Ok(()) };
            let m = Arc::clone(authd.mailer());
            let lifetime = m.settings.reset_token_lifetime;
            let token = authd.issue_token(&user, Purpose::Reset, &user.email, None, None, lifetime).await?;
            let link = m.link("reset-password", &token);
            let minutes = (lifetime.as_secs() / 60).to_string();
            authd
                .enqueue(
                    Template::ResetPassword,
                    &user.email,
                    &[("name", user.name.as_str()), ("link", &link), ("minutes", &minutes)],
                )
                .await
        });
        Ok(())
    }

    /// Runs `work` after the answer, logging a failure: for the mail that must not make
    /// the answer tell anything.
    fn in_background<F>(&self, work: impl FnOnce(Authd) -> F + Send + 'static)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let authd = self.clone();
        tokio::spawn(async move {
            // After the answer is on its way: a task spawned now would otherwise run first.
            tokio::time::sleep(BACKGROUND_DELAY).await;
            if let Err(e) = work(authd).await {
                e.log_if_internal();
            }
        });
    }

    /// Sets a new password with a reset token: every session ends, devices are forgotten,
    /// and the address counts as verified. Returns how many sessions ended.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(&self, req: &pb::ResetPasswordRequest, client: &ClientInfo) -> Result<u64> {
        let mut v = Violations::default();
        if req.token.trim().is_empty() {
            v.push(FieldViolation::new("token", "must not be empty"));
        }
        let offered = v.check("new_password", Password::parse_offered(&req.new_password));
        v.finish(|| offered).map_err(Error::InvalidInput)?;
        self.addresses.check(Action::ResetPassword, client)?;
        self.throttle.per_ip(Action::ResetPassword, client).await?;
        let hash = self.mailer().tokens.hash_of(&req.token).ok_or_else(invalid_token)?;
        let now = Utc::now();
        let token = self.store.email_token(&hash, Purpose::Reset, now).await?.ok_or_else(invalid_token)?;
        let user = self.store.user_by_id(token.user_id).await?.ok_or_else(invalid_token)?;
        let owner = PasswordOwner { email: &user.email, name: &user.name };
        let new = Password::parse_new(&req.new_password, self.password_policy, owner)
            .map_err(|why| Error::invalid("new_password", &why))?;
        let new_hash = self.passwords.hash(Some(&format!("user:{}", user.user_id)), &new).await?;
        let ended = self
            .store
            .reset_password(&hash, user.user_id, &user.password, &new_hash, Utc::now())
            .await?
            .ok_or_else(invalid_token)?;
        self.cache.apply(SessionChange::User(user.user_id));
        events::password_reset(&self.audit, user.user_id, ended, client);
        Ok(ended)
    }

    /// Checks the fields of an email change.
    pub fn validate_email_change(
        &self,
        caller: &Caller,
        req: &pb::ChangeEmailRequest,
    ) -> Result<(Email, Password), Vec<FieldViolation>> {
        let mut v = Violations::default();
        let email = v.check("new_email", Email::parse(&req.new_email));
        if email.as_ref().is_some_and(|e| e.as_str().eq_ignore_ascii_case(&caller.user.email)) {
            v.push(FieldViolation::new("new_email", "is already the account's address"));
        }
        let password = v.check("current_password", Password::parse_offered(&req.current_password));
        v.finish(|| Some((email?, password?)))
    }

    /// Asks for the caller's address to change: the new address gets a confirmation
    /// link, the current one a notice. Nothing changes before the confirmation.
    #[tracing::instrument(skip_all)]
    pub async fn change_email(&self, caller: &Caller, req: &pb::ChangeEmailRequest) -> Result<()> {
        let (new_email, password) = self.validate_email_change(caller, req).map_err(Error::InvalidInput)?;
        self.addresses.check(Action::ChangeEmail, &caller.client)?;
        self.throttle.per_ip(Action::ChangeEmail, &caller.client).await?;
        let user = self.fresh(&caller.user).await?;
        let checked = self.check_password(caller, &user, &password, "current_password").await;
        events::email_change_requested(&self.audit, user.user_id, checked.is_ok(), &caller.client);
        checked?;
        self.throttle.email_change_by(user.user_id, &caller.client).await?;
        self.throttle.mail_to(&self.account(new_email.as_str()), &caller.client).await?;
        // The same work whether the new address has an account or not (a token, a mail to
        // it, the notice to the current address), so that neither the caller's mailbox nor
        // the time tells which: an address with an account gets a warning in place of the
        // link, and its token is never mailed (a confirmation would be refused anyway).
        let owner = self.store.user_by_email(new_email.as_str()).await?;
        let m = Arc::clone(self.mailer());
        let lifetime = m.settings.verification_token_lifetime;
        let session = Some(caller.access.session_id);
        let token = self.issue_token(&user, Purpose::Change, new_email.as_str(), None, session, lifetime).await?;
        match &owner {
            Some(owner) => {
                tracing::info!(user_id = user.user_id, "email change to an address that has an account: warned");
                let vars = [("name", owner.name.as_str())];
                self.enqueue(Template::EmailChangeTaken, new_email.as_str(), &vars).await?;
            }
            None => {
                let link = m.link("confirm-email-change", &token);
                let vars = [
                    ("name", user.name.as_str()),
                    ("link", &link),
                    ("new_email", new_email.as_str()),
                    ("hours", &hours(lifetime)),
                ];
                self.enqueue(Template::ConfirmEmailChange, new_email.as_str(), &vars).await?;
            }
        }
        let vars = [("name", user.name.as_str()), ("new_email", new_email.as_str())];
        self.enqueue(Template::EmailChangeRequested, &user.email, &vars).await
    }

    /// Confirms an email change by its token; returns how many sessions ended.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_email_change(&self, req: &pb::ConfirmEmailChangeRequest, client: &ClientInfo) -> Result<u64> {
        if req.token.trim().is_empty() {
            return Err(Error::invalid("token", "must not be empty"));
        }
        self.addresses.check(Action::ConfirmEmailChange, client)?;
        self.throttle.per_ip(Action::ConfirmEmailChange, client).await?;
        let hash = self.mailer().tokens.hash_of(&req.token).ok_or_else(invalid_token)?;
        let changed = match self.store.confirm_email_change(&hash, Utc::now()).await {
            Ok(changed) => changed.ok_or_else(invalid_token)?,
            Err(StoreError::EmailTaken) => return Err(Error::EmailTaken),
            Err(e) => return Err(e.into()),
        };
        self.cache.apply(SessionChange::User(changed.user_id));
        events::email_changed(&self.audit, changed.user_id, changed.sessions_ended, client);
        Ok(changed.sessions_ended)
    }

    /// Delivers the outbox for as long as the server runs, starting when `next` falls due
    /// (see [`Authd::next_mail_due`]); then again when the next mail waiting falls due, when
    /// this process adds mail, or when the health watcher ticks
    /// ([`Authd::wake_mail_sender`], for mail that other replicas queued or left). With
    /// nothing waiting it sends the database nothing between those.
    pub async fn send_mail(&self, mut next: Option<DateTime<Utc>>) {
        let m = Arc::clone(self.mailer());
        loop {
            let woken = m.wake.notified();
            match next {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    let _ = tokio::time::timeout(wait, woken).await;
                }
                None => woken.await,
            }
            next = match self.send_due_mail().await {
                // A full batch: there may be more.
                Ok(tried) if tried >= BATCH as usize => Some(Utc::now()),
                Ok(_) => self.next_mail_due().await,
                Err(e) => {
                    e.log_if_internal();
                    None
                }
            };
        }
    }

    /// When the next mail waiting falls due; `None` for none (or when the database cannot
    /// tell: the health watcher wakes the sender once it can).
    pub async fn next_mail_due(&self) -> Option<DateTime<Utc>> {
        self.store.next_mail_due().await.map_err(Error::from).inspect_err(Error::log_if_internal).ok().flatten()
    }

    /// Has the sender look at the outbox now.
    pub fn wake_mail_sender(&self) {
        self.mailer().wake.notify_one();
    }

    /// One pass over the due mail; returns how many were tried.
    async fn send_due_mail(&self) -> Result<usize> {
        let m = self.mailer();
        let now = Utc::now();
        let due = self.store.due_mail(now, BATCH).await?;
        for id in &due {
            let now = Utc::now();
            let Some(mail) = self.store.claim_mail(*id, now, now + LEASE).await? else { continue };
            let opened =
                m.sealer.open(&body_row(&mail.recipient, "text"), mail.text_body.as_bytes()).and_then(|text| {
                    Ok((text, m.sealer.open(&body_row(&mail.recipient, "html"), mail.html_body.as_bytes())?))
                });
            let sent = match &opened {
                Ok((text, html)) => {
                    let (text, html) = (String::from_utf8_lossy(text), String::from_utf8_lossy(html));
                    let outgoing =
                        Outgoing { id: mail.id, to: &mail.recipient, subject: &mail.subject, text: &text, html: &html };
                    m.transport.send(&outgoing).await
                }
                Err(e) => Err(anyhow::anyhow!("the mail's body: {e}")),
            };
            match sent {
                Ok(()) => {
                    self.store.mail_sent(mail.id, Utc::now()).await?;
                    tracing::info!(mail_id = mail.id, attempts = mail.attempts, "mail sent");
                }
                Err(e) => {
                    let attempts = u32::try_from(mail.attempts).unwrap_or(u32::MAX);
                    let retry_at = (attempts < m.settings.max_attempts && opened.is_ok())
                        .then(|| Utc::now() + backoff(attempts, m.settings.retry_max));
                    let error = format!("{e:#}");
                    tracing::warn!(
                        mail_id = mail.id,
                        attempts,
                        error,
                        retry_at = retry_at.map(|t| t.to_rfc3339()),
                        "mail not sent"
                    );
                    self.store.mail_failed(mail.id, Utc::now(), retry_at, &error).await?;
                }
            }
        }
        Ok(due.len())
    }

    /// Deletes spent mail tokens and old outbox rows.
    pub async fn prune_mail(&self) -> Result<u64> {
        let now: DateTime<Utc> = Utc::now();
        let tokens = self.store.prune_email_tokens(now - Duration::from_secs(24 * 3600)).await?;
        Ok(tokens + self.store.prune_outbox(now - OUTBOX_RETENTION).await?)
    }
}

/// The wait after the `attempts`-th failure: 1 s, doubling, at most `max`.
fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u64::MAX)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_maximum() {
        let max = Duration::from_secs(300);
        let waits = [1, 2, 3, 9, 100].map(|n| backoff(n, max).as_secs());
        assert_eq!(waits, [1, 2, 4, 256, 300]);
        assert_eq!(backoff(0, max).as_secs(), 1);
    }
}
