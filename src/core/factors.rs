//! Second factors: TOTP enrolment and activation, recovery codes, the login challenge and
//! its answer, and what removing a factor takes.
//!
//! The rule every path keeps: a user with an active factor is never given a token whose
//! `amr` lacks `otp` or `hwk`. A login with the right password gets a challenge (stored,
//! single use, short-lived), and only its answer starts a session; activating a factor
//! ends every session begun without one; and `Authd::signed_in`, where every user token
//! is minted, refuses a session that proved no second factor when the user has one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::throttle::{Account, Action, Source};
use super::{Authd, Caller, ClientInfo, Error, Proved, Result, SignedIn, events, timestamp};
use crate::{
    pb,
    security::{
        devices::DeviceHash,
        factors::{self as crypto, CodeVerdict},
        passwords::Verdict,
        refresh::RefreshClaim,
    },
    store::{FactorActivation, FactorRecord, NewChallenge, NewFactor, SessionChange, UserRecord},
};

/// Factors one user may have, active or pending.
pub const MAX_FACTORS: i64 = 10;
/// How long a login challenge may be answered.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Answers a challenge takes at most, right or wrong.
pub const CHALLENGE_ATTEMPTS: i32 = 5;
/// How recent a session's second-factor proof must be to remove a factor or replace the
/// recovery codes without a fresh one.
pub const PROOF_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The longest factor name.
const NAME_CHARS: usize = 64;

pub const TOTP: &str = "totp";
pub const RECOVERY_CODE: &str = "recovery_code";

/// The `amr` values that prove a second factor (RFC 8176): a one-time password, a
/// hardware-bound key.
const SECOND_FACTOR_AMR: [&str; 2] = ["otp", "hwk"];

/// Whether an `amr` (space-separated) proves a second factor.
pub fn proves_second_factor(amr: &str) -> bool {
    amr.split_whitespace().any(|m| SECOND_FACTOR_AMR.contains(&m))
}

/// `amr` with `method` added, if it is not there yet.
pub fn with_method(amr: &str, method: &str) -> String {
    let mut methods: Vec<&str> = amr.split_whitespace().collect();
    if !methods.contains(&method) {
        methods.push(method);
    }
    methods.join(" ")
}

/// A login that proved the password and waits for a second factor.
pub struct LoginChallenge {
    /// The token that names it, to send back with the answer.
    pub token: String,
    /// What may answer it: `totp`, `recovery_code`, `passkey`.
    pub methods: Vec<String>,
    pub expires_in: Duration,
}

impl std::fmt::Debug for LoginChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginChallenge")
            .field("token", &"***")
            .field("methods", &self.methods)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A TOTP factor's activation: the recovery codes (the first factor only) and the caller's
/// new session.
pub struct TotpActivated {
    pub recovery_codes: Vec<String>,
    pub sessions_ended: u64,
    pub signed_in: SignedIn,
}

/// A second-factor proof as a call gives it.
struct ProofGiven<'a> {
    totp_code: &'a str,
    password: &'a str,
    recovery_code: &'a str,
}

impl Authd {
    /// After a right password: when `user` has an active factor, the challenge that the
    /// login must answer instead of tokens (as [`Error::SecondFactorRequired`]).
    pub(super) async fn challenge_second_factor(
        &self,
        user: &UserRecord,
        device: Option<&DeviceHash>,
        client: &ClientInfo,
    ) -> Result<()> {
        let factors = self.store.user_factors(user.user_id).await?;
        let mut methods: Vec<String> = Vec::new();
        for kind in factors.iter().filter(|f| f.activated_at.is_some()).map(|f| f.kind.as_str()) {
            if !methods.iter().any(|m| m == kind) {
                methods.push(kind.to_owned());
            }
        }
        if methods.is_empty() {
            return Ok(());
        }
        methods.push(RECOVERY_CODE.to_owned());
        let (token, hash) = crypto::new_challenge();
        let now = Utc::now();
        let joined = methods.join(" ");
        self.store
            .insert_challenge(&NewChallenge {
                challenge_hash: &hash,
                user_id: user.user_id,
                methods: &joined,
                amr: super::PASSWORD_ONLY,
                device_hash: device.map(|d| &d[..]),
                credentials_version: user.credentials_version,
                now,
                expires_at: now + CHALLENGE_LIFETIME,
            })
            .await?;
        events::second_factor_challenged(&self.audit, user.user_id, &joined, client);
        Err(Error::SecondFactorRequired(Box::new(LoginChallenge { token, methods, expires_in: CHALLENGE_LIFETIME })))
    }

    /// Checks the fields of a challenge's answer, reporting all that are bad.
    pub fn validate_complete_login(
        &self,
        req: &pb::CompleteLoginRequest,
    ) -> Result<(), Vec<crate::domain::FieldViolation>> {
        use pb::complete_login_request::Answer;
        let mut bad = Vec::new();
        if req.challenge.trim().is_empty() {
            bad.push(crate::domain::FieldViolation::new("challenge", "must not be empty"));
        }
        match &req.answer {
            None => bad.push(crate::domain::FieldViolation::new(
                "answer",
                "give one of totp_code, recovery_code, passkey_credential",
            )),
            Some(Answer::TotpCode(code)) if !looks_like_totp(code) => {
                bad.push(crate::domain::FieldViolation::new("totp_code", "must be 6 digits"))
            }
            Some(Answer::RecoveryCode(code)) if crypto::recovery_code_hash(code).is_none() => {
                bad.push(crate::domain::FieldViolation::new(
                    "recovery_code",
                    "must be 16 letters and digits (XXXX-XXXX-XXXX-XXXX)",
                ))
            }
            Some(Answer::PasskeyCredential(credential)) if credential.trim().is_empty() => {
                bad.push(crate::domain::FieldViolation::new("passkey_credential", "must not be empty"))
            }
            Some(_) => {}
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }

    /// Answers a login's challenge: with a right answer the login's session starts, its
    /// tokens carrying `amr` `pwd otp`.
    #[tracing::instrument(skip_all)]
    pub async fn complete_login(&self, req: &pb::CompleteLoginRequest, client: &ClientInfo) -> Result<SignedIn> {
        use pb::complete_login_request::Answer;
        self.validate_complete_login(req).map_err(Error::InvalidInput)?;
        self.addresses.check(Action::SecondFactor, client)?;
        let hash = crypto::challenge_hash(&req.challenge).ok_or(Error::ChallengeRejected)?;
        self.throttle.per_ip(Action::SecondFactor, client).await?;
        let now = Utc::now();
        let challenge =
            self.store.count_challenge_answer(&hash, now, CHALLENGE_ATTEMPTS).await?.ok_or(Error::ChallengeRejected)?;
        let user_id = challenge.user_id;
        let allowed = |method: &str| challenge.methods.split_whitespace().any(|m| m == method);
        let (method, field) = match &req.answer {
            Some(Answer::TotpCode(_)) => (TOTP, "totp_code"),
            Some(Answer::RecoveryCode(_)) => (RECOVERY_CODE, "recovery_code"),
            Some(Answer::PasskeyCredential(_)) => (super::passkeys::PASSKEY, "passkey_credential"),
            None => return Err(Error::invalid("answer", "give one of totp_code, recovery_code, passkey_credential")),
        };
        if !allowed(method) {
            return Err(Error::invalid(field, "cannot answer this challenge"));
        }
        // A password change, a reset or a logout everywhere since the password was proved
        // voids the challenge, before any code is looked at (or used up); the session is
        // inserted against that version, so a change meanwhile voids it too.
        let proved_version = self.store.user_by_id(user_id).await?.map(|u| u.credentials_version);
        if proved_version != Some(challenge.credentials_version) {
            return Err(Error::ChallengeRejected);
        }
        // A challenge of a known device counts as that device's logins do: past the account's
        // ceiling, which guesses from elsewhere may reach, its owner may still answer.
        let device = challenge.device_hash.as_deref().and_then(|d| DeviceHash::try_from(d).ok());
        let source = device.as_ref().map_or(Source::Address(client), Source::Device);
        // A passkey's answer is no guess at a code: its failures are counted apart.
        let account =
            if method == super::passkeys::PASSKEY { passkey_account(user_id) } else { factor_account(user_id) };
        let attempt = self.throttle.begin_check(&account, source, client).await?;
        let right = match &req.answer {
            Some(Answer::TotpCode(code)) => self.check_totp(user_id, code, now).await,
            Some(Answer::RecoveryCode(code)) => self.use_recovery_code(user_id, code, now).await,
            Some(Answer::PasskeyCredential(credential)) => {
                self.check_passkey_answer(user_id, &hash, credential, now).await
            }
            None => Ok(Err("is missing")),
        };
        let right = match right {
            Ok(right) => right,
            Err(e) => {
                attempt.not_checked().await;
                return Err(e);
            }
        };
        if let Err(why) = right {
            attempt.failed();
            events::second_factor_answered(&self.audit, user_id, method, false, client);
            return Err(Error::invalid(field, why));
        }
        attempt.passed().await?;
        if !self.store.consume_challenge(&hash, now).await? {
            return Err(Error::ChallengeRejected);
        }
        events::second_factor_answered(&self.audit, user_id, method, true, client);
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::ChallengeRejected)?;
        let user = UserRecord { credentials_version: challenge.credentials_version, ..user };
        self.check_verified(&user, client)?;
        let device = device.map(|d| ("", d));
        let amr = with_method(&challenge.amr, if method == super::passkeys::PASSKEY { "hwk" } else { "otp" });
        let proved = Proved { amr: &amr, auth_time: Some(now) };
        let signed_in = self.start_session(&user, Verdict::Match, device, client, proved).await?;
        crate::metrics::login_succeeded();
        Ok(signed_in)
    }

    /// Checks a TOTP code against the user's active TOTP factors, and uses its step.
    /// `Ok(Err(why))` for a wrong or replayed code.
    async fn check_totp(&self, user_id: i64, code: &str, now: DateTime<Utc>) -> Result<Result<(), &'static str>> {
        let factors = self.store.user_factors(user_id).await?;
        let mut replayed = false;
        for factor in factors.iter().filter(|f| f.kind == TOTP && f.activated_at.is_some()) {
            let secret = self.open_secret(factor)?;
            match crypto::check_code(&secret, code, unix(now), factor.last_used_step)? {
                CodeVerdict::Accepted(step) => {
                    if self.store.use_totp_step(factor.factor_id, step, now).await? {
                        return Ok(Ok(()));
                    }
                    replayed = true;
                }
                CodeVerdict::Replayed => replayed = true,
                CodeVerdict::Wrong => {}
            }
        }
        Ok(Err(if replayed { "was used already: wait for the next code" } else { "is incorrect" }))
    }

    /// Uses one of the user's recovery codes. `Ok(Err(why))` for a wrong or used one.
    async fn use_recovery_code(
        &self,
        user_id: i64,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(), &'static str>> {
        let Some(hash) = crypto::recovery_code_hash(code) else { return Ok(Err("is incorrect")) };
        Ok(if self.store.use_recovery_code(user_id, &hash, now).await? { Ok(()) } else { Err("is incorrect or used") })
    }

    fn open_secret(&self, factor: &FactorRecord) -> Result<Vec<u8>> {
        self.sealer
            .open(&secret_name(factor.factor_id), &factor.secret)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("the secret of factor {}: {e}", factor.factor_id)))
    }

    /// Starts a TOTP enrolment for the caller.
    #[tracing::instrument(skip_all)]
    pub async fn enroll_totp(&self, caller: &Caller, req: &pb::EnrollTotpRequest) -> Result<pb::EnrollTotpResponse> {
        let name = factor_name(&req.name).map_err(|why| Error::invalid("name", why))?;
        let user = self.fresh(&caller.user).await?;
        let user = &user;
        self.check_enrolment_proof(caller, user, &req.password, req.proof.as_ref()).await.inspect_err(|_| {
            events::factor_changed_failed(&self.audit, user.user_id, "factor_enrolled", &caller.client)
        })?;
        let secret = crypto::new_secret();
        let enrolment = crypto::enrolment(&secret, &user.email)?;
        let factor_id = Uuid::new_v4();
        let sealed = self.sealer.seal(&secret_name(factor_id), &secret)?;
        let factor = NewFactor {
            factor_id,
            user_id: user.user_id,
            kind: TOTP,
            name: &name,
            secret: &sealed,
            credential_id: None,
            now: Utc::now(),
        };
        if !self.store.insert_factor(&factor, MAX_FACTORS).await? {
            return Err(Error::PermissionDenied("At most 10 second factors per user: remove one first."));
        }
        events::factor_changed(&self.audit, user.user_id, "factor_enrolled", factor_id, TOTP, &caller.client);
        Ok(pb::EnrollTotpResponse {
            factor_id: factor_id.to_string(),
            secret: enrolment.secret_base32,
            otpauth_uri: enrolment.uri,
            qr_svg: enrolment.qr_svg,
            digits: i32::from(crypto::DIGITS),
            period_seconds: crypto::STEP_SECONDS as i64,
            algorithm: "SHA1".into(),
        })
    }

    /// Activates the caller's TOTP enrolment with a first right code: every session of the
    /// user ends, and the caller goes on in a new one that proved `otp`.
    #[tracing::instrument(skip_all)]
    pub async fn activate_totp(&self, caller: &Caller, req: &pb::ActivateTotpRequest) -> Result<TotpActivated> {
        let mut bad = Vec::new();
        let factor_id = Uuid::parse_str(req.factor_id.trim());
        if factor_id.is_err() {
            bad.push(crate::domain::FieldViolation::new("factor_id", "must be a factor id (a UUID)"));
        }
        if !looks_like_totp(&req.code) {
            bad.push(crate::domain::FieldViolation::new("code", "must be 6 digits"));
        }
        let Ok(factor_id) = factor_id else { return Err(Error::InvalidInput(bad)) };
        if !bad.is_empty() {
            return Err(Error::InvalidInput(bad));
        }
        let user = self.fresh(&caller.user).await?;
        let factor = self.store.user_factor(user.user_id, factor_id).await?.filter(|f| f.kind == TOTP);
        let factor = factor.ok_or(Error::FactorNotFound)?;
        if factor.activated_at.is_some() {
            return Err(Error::invalid("factor_id", "is active already"));
        }
        let now = Utc::now();
        let source = Source::SessionGuess(caller.access.session_id);
        let attempt = self.throttle.begin_check(&factor_account(user.user_id), source, &caller.client).await?;
        let verdict = match self.open_secret(&factor).and_then(|secret| {
            crypto::check_code(&secret, &req.code, unix(now), factor.last_used_step).map_err(Error::from)
        }) {
            Ok(verdict) => verdict,
            Err(e) => {
                attempt.not_checked().await;
                return Err(e);
            }
        };
        let CodeVerdict::Accepted(step) = verdict else {
            attempt.failed();
            events::factor_changed_failed(&self.audit, user.user_id, "factor_activated", &caller.client);
            return Err(Error::invalid("code", "is incorrect"));
        };
        attempt.passed().await?;
        let first = !self.store.has_active_factor(user.user_id).await?;
        let codes = if first { crypto::new_recovery_codes() } else { Vec::new() };
        let hashes: Vec<[u8; 32]> = codes.iter().map(|(_, hash)| *hash).collect();
        let amr = with_method(&caller.access.amr.join(" "), "otp");
        let auth_time = caller_auth_time(caller);
        let session_id = Uuid::new_v4();
        let new_session = crate::store::NewSession {
            amr: &amr,
            auth_time,
            ..self.new_session(&user, session_id, &caller.client, now)
        };
        let activation = FactorActivation {
            factor_id,
            user_id: user.user_id,
            step: Some(step),
            recovery_codes: &hashes,
            current_session: caller.access.session_id,
            new_session,
        };
        let ended = self.store.activate_factor(&activation).await;
        self.cache.apply(SessionChange::User(user.user_id));
        let ended = ended?.ok_or(Error::FactorNotFound)?;
        events::factor_changed(&self.audit, user.user_id, "factor_activated", factor_id, TOTP, &caller.client);
        if first {
            events::recovery_codes_issued(&self.audit, user.user_id, "activation", &caller.client);
        }
        let ends = activation.new_session.expires_at;
        let claim = RefreshClaim { session_id, generation: 0 };
        let signed_in = self.signed_in(&user, claim, now, ends, Proved { amr: &amr, auth_time }).await?;
        Ok(TotpActivated {
            recovery_codes: codes.into_iter().map(|(code, _)| code).collect(),
            sessions_ended: ended,
            signed_in,
        })
    }

    /// The caller's factors and how many recovery codes are left.
    pub async fn list_factors(&self, caller: &Caller) -> Result<pb::ListFactorsResponse> {
        let user_id = caller.user.user_id;
        let factors = self.store.user_factors(user_id).await?;
        Ok(pb::ListFactorsResponse {
            factors: factors.into_iter().map(factor_message).collect(),
            recovery_codes_left: self.store.recovery_codes_left(user_id).await?,
        })
    }

    /// Removes one of the caller's factors, given a recent second-factor proof (none is
    /// needed for an enrolment never activated, nor by a user with no active factor).
    #[tracing::instrument(skip_all)]
    pub async fn remove_factor(&self, caller: &Caller, req: &pb::RemoveFactorRequest) -> Result<i64> {
        let factor_id = Uuid::parse_str(req.factor_id.trim()).map_err(|_| Error::FactorNotFound)?;
        let user = self.fresh(&caller.user).await?;
        let factor = self.store.user_factor(user.user_id, factor_id).await?.ok_or(Error::FactorNotFound)?;
        if factor.activated_at.is_some() {
            self.check_proof(caller, &user, req.proof.as_ref()).await.inspect_err(|_| {
                events::factor_changed_failed(&self.audit, user.user_id, "factor_removed", &caller.client)
            })?;
        }
        let left = self.store.remove_factor(user.user_id, factor_id).await?.ok_or(Error::FactorNotFound)?;
        events::factor_changed(&self.audit, user.user_id, "factor_removed", factor_id, &factor.kind, &caller.client);
        Ok(left)
    }

    /// Ten new recovery codes for the caller, voiding the old ones, given a recent
    /// second-factor proof.
    #[tracing::instrument(skip_all)]
    pub async fn regenerate_recovery_codes(
        &self,
        caller: &Caller,
        req: &pb::RegenerateRecoveryCodesRequest,
    ) -> Result<Vec<String>> {
        let user = self.fresh(&caller.user).await?;
        if !self.store.has_active_factor(user.user_id).await? {
            return Err(Error::PermissionDenied("Recovery codes need an active second factor: enrol one first."));
        }
        self.check_proof(caller, &user, req.proof.as_ref()).await.inspect_err(|_| {
            events::factor_changed_failed(&self.audit, user.user_id, "recovery_codes_regenerated", &caller.client)
        })?;
        let codes = crypto::new_recovery_codes();
        let hashes: Vec<[u8; 32]> = codes.iter().map(|(_, hash)| *hash).collect();
        self.store.replace_recovery_codes(user.user_id, &hashes, Utc::now()).await?;
        events::recovery_codes_issued(&self.audit, user.user_id, "regenerated", &caller.client);
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    /// The re-authentication that adding a factor takes: the password while `user` has no
    /// active factor; once they have one, a recent proof with an existing factor (see
    /// [`Self::check_proof`]), so that a stolen access token can neither add the first
    /// factor nor use a new one to stand in for the old ones.
    pub(super) async fn check_enrolment_proof(
        &self,
        caller: &Caller,
        user: &UserRecord,
        password: &str,
        proof: Option<&pb::FactorProof>,
    ) -> Result<()> {
        if self.store.has_active_factor(user.user_id).await? {
            return self.check_proof(caller, user, proof).await;
        }
        if password.is_empty() {
            return Err(Error::invalid("password", "is needed to add a second factor"));
        }
        let password =
            crate::domain::Password::parse_offered(password).map_err(|why| Error::invalid("password", &why))?;
        self.check_password(caller, user, &password, "password").await
    }

    /// A recent second-factor proof: a TOTP code, or the password and a recovery code, in
    /// `proof`; else the caller's session proved a factor within [`PROOF_WINDOW`].
    async fn check_proof(&self, caller: &Caller, user: &UserRecord, proof: Option<&pb::FactorProof>) -> Result<()> {
        let given = proof.map_or(ProofGiven { totp_code: "", password: "", recovery_code: "" }, |p| ProofGiven {
            totp_code: p.totp_code.trim(),
            password: &p.password,
            recovery_code: p.recovery_code.trim(),
        });
        let now = Utc::now();
        if !given.totp_code.is_empty() {
            if !looks_like_totp(given.totp_code) {
                return Err(Error::invalid("proof.totp_code", "must be 6 digits"));
            }
            let source = Source::SessionGuess(caller.access.session_id);
            let attempt = self.throttle.begin_check(&factor_account(user.user_id), source, &caller.client).await?;
            return match self.check_totp(user.user_id, given.totp_code, now).await {
                Ok(Ok(())) => attempt.passed().await,
                Ok(Err(why)) => {
                    attempt.failed();
                    Err(Error::invalid("proof.totp_code", why))
                }
                Err(e) => {
                    attempt.not_checked().await;
                    Err(e)
                }
            };
        }
        if !given.password.is_empty() || !given.recovery_code.is_empty() {
            let mut bad = Vec::new();
            let password = crate::domain::Password::parse_offered(given.password);
            match &password {
                _ if given.password.is_empty() => {
                    bad.push(crate::domain::FieldViolation::new("proof.password", "must not be empty"))
                }
                Err(why) => bad.push(crate::domain::FieldViolation::new("proof.password", why.to_string())),
                Ok(_) => {}
            }
            let code = crypto::recovery_code_hash(given.recovery_code);
            if code.is_none() {
                bad.push(crate::domain::FieldViolation::new(
                    "proof.recovery_code",
                    "must be 16 letters and digits (XXXX-XXXX-XXXX-XXXX)",
                ));
            }
            let (Ok(password), true) = (password, bad.is_empty()) else { return Err(Error::InvalidInput(bad)) };
            self.check_password(caller, user, &password, "proof.password").await?;
            return match self.use_recovery_code(user.user_id, given.recovery_code, now).await? {
                Ok(()) => Ok(()),
                Err(why) => Err(Error::invalid("proof.recovery_code", why)),
            };
        }
        let access = &caller.access;
        let recent = access.auth_time.is_some_and(|t| t >= (now - PROOF_WINDOW).timestamp());
        if recent && proves_second_factor(&access.amr.join(" ")) {
            return Ok(());
        }
        Err(Error::PermissionDenied(
            "A recent second-factor proof is needed: give proof.totp_code, or proof.password and \
             proof.recovery_code, or log in again with your second factor.",
        ))
    }
}

/// The throttle's account for second-factor guesses of `user_id`: apart from its password
/// guesses, with the same limits.
pub(super) fn factor_account(user_id: i64) -> Account {
    Account::with_digest(format!("factor:{user_id}"))
}

/// The caller's `auth_time`, kept by the session a new factor's activation starts: the new
/// factor is no fresh proof of the factors the user had.
pub(super) fn caller_auth_time(caller: &Caller) -> Option<DateTime<Utc>> {
    caller.access.auth_time.and_then(|t| DateTime::from_timestamp(t, 0))
}

/// The throttle's account for refused passkey answers of `user_id` (a challenge's, or a
/// passkey login's): apart from the TOTP and recovery code guesses, which they say nothing of.
pub(super) fn passkey_account(user_id: i64) -> Account {
    Account::with_digest(format!("passkey:{user_id}"))
}

/// The name a factor's secret is sealed under.
pub(super) fn secret_name(factor_id: Uuid) -> String {
    format!("factor:{factor_id}")
}

fn unix(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// Whether `code` could be a TOTP code (six digits, spaces aside).
fn looks_like_totp(code: &str) -> bool {
    let digits: Vec<char> = code.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == usize::from(crypto::DIGITS) && digits.iter().all(char::is_ascii_digit)
}

/// A factor's name as given: trimmed, 1 to 64 characters, no control characters;
/// "Authenticator" when empty.
pub(super) fn factor_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Ok("Authenticator".into());
    }
    if name.chars().count() > NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

fn factor_message(f: FactorRecord) -> pb::Factor {
    pb::Factor {
        factor_id: f.factor_id.to_string(),
        active: f.activated_at.is_some(),
        kind: f.kind,
        name: f.name,
        created_at: Some(timestamp(f.created_at)),
        activated_at: f.activated_at.map(timestamp),
        last_used_at: f.last_used_at.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_otp_and_hwk_prove_a_second_factor() {
        assert!(!proves_second_factor("pwd"));
        assert!(!proves_second_factor(""));
        assert!(proves_second_factor("pwd otp"));
        assert!(proves_second_factor("pwd hwk"));
        assert!(proves_second_factor("hwk"));
        assert!(!proves_second_factor("pwd otpx"));
    }

    #[test]
    fn methods_are_added_once() {
        assert_eq!(with_method("pwd", "otp"), "pwd otp");
        assert_eq!(with_method("pwd otp", "otp"), "pwd otp");
        assert_eq!(with_method("", "hwk"), "hwk");
    }

    #[test]
    fn factor_names_are_trimmed_bounded_and_printable() {
        assert_eq!(factor_name("  phone ").unwrap(), "phone");
        assert_eq!(factor_name("").unwrap(), "Authenticator");
        assert!(factor_name(&"x".repeat(65)).is_err());
        assert!(factor_name("a\nb").is_err());
        assert!(looks_like_totp("123 456"));
        assert!(!looks_like_totp("12345a"));
    }
}
