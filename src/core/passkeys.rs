//! Passkeys (WebAuthn): registering one as a second factor, answering a login's challenge
//! with one, and logging in with one alone where `PASSKEY_LOGIN` allows it.
//!
//! Each ceremony's first half keeps webauthn-rs's state in `passkey_ceremonies`, bound to
//! what alone may finish it (the caller's session, the login challenge, or the ceremony id
//! handed out for a passkey login); the second half takes it in the statement that reads
//! it, so that it serves once, whether it succeeds or not.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::factors::{MAX_FACTORS, factor_name, passkey_account, secret_name, with_method};
use super::throttle::{Action, Source};
use super::{Authd, Caller, ClientInfo, Error, Proved, Result, SignedIn, events};
use crate::{
    domain::FieldViolation,
    pb,
    security::{
        passwords::Verdict,
        refresh::RefreshClaim,
        webauthn::{
            CEREMONY_LIFETIME, CeremonyError, Passkey, Passkeys, PublicKeyCredential, RegisterPublicKeyCredential,
            decode_passkey, encode_passkey, parse_credential,
        },
    },
    store::{CeremonyPurpose, FactorActivation, FactorRecord, NewCeremony, NewFactor, NewSession, SessionChange},
};

pub const PASSKEY: &str = "passkey";
/// RFC 8176: proof of possession of a hardware-secured key.
const HWK: &str = "hwk";

/// A passkey registered: the factor, the recovery codes (first factor only) and the
/// caller's new session.
pub struct PasskeyRegistered {
    pub factor_id: Uuid,
    pub recovery_codes: Vec<String>,
    pub sessions_ended: u64,
    pub signed_in: SignedIn,
}

impl Authd {
    fn passkeys(&self) -> Result<&Passkeys> {
        self.passkeys.as_ref().ok_or(Error::PasskeysNotConfigured)
    }

    /// Starts registering a passkey for the caller, bound to the caller's session. Takes
    /// the re-authentication any new factor takes (`check_enrolment_proof`): an access
    /// token alone must not be enough to add a key that may later log in by itself.
    #[tracing::instrument(skip_all)]
    pub async fn start_passkey_registration(
        &self,
        caller: &Caller,
        req: &pb::StartPasskeyRegistrationRequest,
    ) -> Result<pb::StartPasskeyRegistrationResponse> {
        let passkeys = self.passkeys()?;
        let user = self.fresh(&caller.user).await?;
        let now = Utc::now();
        let access = &caller.access;
        self.check_enrolment_proof(caller, &user, &req.password, req.proof.as_ref()).await.inspect_err(|_| {
            events::factor_changed_failed(&self.audit, user.user_id, "factor_enrolled", &caller.client)
        })?;
        let factors = self.store.user_factors(user.user_id).await?;
        if factors.len() as i64 >= MAX_FACTORS {
            return Err(Error::PermissionDenied("At most 10 second factors per user: remove one first."));
        }
        let exclude = factors
            .iter()
            .filter(|f| f.kind == PASSKEY)
            .filter_map(|f| f.credential_id.clone())
            .map(Into::into)
            .collect();
        let handle = self.store.user_handle(user.user_id, Uuid::new_v4()).await?;
        let started = passkeys.start_registration(handle, &user.email, &user.name, exclude)?;
        let session = access.session_id.to_string();
        self.store
            .put_ceremony(&NewCeremony {
                purpose: CeremonyPurpose::Register,
                bound_to: &session,
                user_id: Some(user.user_id),
                state: &started.state_json,
                now,
                expires_at: now + CEREMONY_LIFETIME,
            })
            .await?;
        Ok(pb::StartPasskeyRegistrationResponse { options_json: started.options_json })
    }

    /// Finishes the caller's passkey registration: the passkey becomes an active factor at
    /// once, which ends every session of the user, the caller going on in a new one that
    /// proved `hwk` (as a TOTP factor's activation does), with the caller's `auth_time`.
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_registration(
        &self,
        caller: &Caller,
        req: &pb::FinishPasskeyRegistrationRequest,
    ) -> Result<PasskeyRegistered> {
        let passkeys = self.passkeys()?;
        let mut bad = Vec::new();
        let name = if req.name.trim().is_empty() { Ok("Passkey".to_owned()) } else { factor_name(&req.name) };
        let name = name.map_err(|why| bad.push(FieldViolation::new("name", why)));
        if req.credential.trim().is_empty() {
            bad.push(FieldViolation::new("credential", "must not be empty"));
        }
        let credential = parse_credential::<RegisterPublicKeyCredential>(&req.credential);
        if let (Err(e), true) = (&credential, bad.is_empty()) {
            bad.push(FieldViolation::new("credential", e.to_string()));
        }
        let (Ok(name), Ok(credential), true) = (name, credential, bad.is_empty()) else {
            return Err(Error::InvalidInput(bad));
        };
        let user = self.fresh(&caller.user).await?;
        let now = Utc::now();
        let session = caller.access.session_id.to_string();
        let ceremony = self.store.take_ceremony(CeremonyPurpose::Register, &session, now).await?;
        let ceremony = ceremony.filter(|c| c.user_id == Some(user.user_id)).ok_or(Error::CeremonyNotFound)?;
        let passkey = passkeys.finish_registration(&credential, &ceremony.state).map_err(|e| match e {
            CeremonyError::Malformed(why) => Error::invalid("credential", &why),
            CeremonyError::Refused(e) => Error::invalid("credential", &format!("was refused: {e}")),
            CeremonyError::State(e) => Error::Unexpected(e),
        })?;
        let credential_id: &[u8] = passkey.cred_id().as_ref();
        if self.store.passkey_by_credential(credential_id).await?.is_some() {
            return Err(Error::invalid("credential", "is a passkey registered already"));
        }
        let factor_id = Uuid::new_v4();
        let sealed = self.sealer.seal(&secret_name(factor_id), &encode_passkey(&passkey)?)?;
        let factor = NewFactor {
            factor_id,
            user_id: user.user_id,
            kind: PASSKEY,
            name: &name,
            secret: &sealed,
            credential_id: Some(credential_id),
            now,
        };
        if !self.store.insert_factor(&factor, MAX_FACTORS).await? {
            return Err(Error::PermissionDenied("At most 10 second factors per user: remove one first."));
        }
        events::factor_changed(&self.audit, user.user_id, "factor_enrolled", factor_id, PASSKEY, &caller.client);
        let first = !self.store.has_active_factor(user.user_id).await?;
        let codes = if first { crate::security::factors::new_recovery_codes() } else { Vec::new() };
        let hashes: Vec<[u8; 32]> = codes.iter().map(|(_, hash)| *hash).collect();
        let amr = with_method(&caller.access.amr.join(" "), HWK);
        let session_id = Uuid::new_v4();
        let auth_time = super::factors::caller_auth_time(caller);
        let new_session =
            NewSession { amr: &amr, auth_time, ..self.new_session(&user, session_id, &caller.client, now) };
        let activation = FactorActivation {
            factor_id,
            user_id: user.user_id,
            step: None,
            recovery_codes: &hashes,
            current_session: caller.access.session_id,
            new_session,
        };
        let ended = self.store.activate_factor(&activation).await;
        self.cache.apply(SessionChange::User(user.user_id));
        let ended = ended?.ok_or(Error::FactorNotFound)?;
        events::factor_changed(&self.audit, user.user_id, "factor_activated", factor_id, PASSKEY, &caller.client);
        if first {
            events::recovery_codes_issued(&self.audit, user.user_id, "activation", &caller.client);
        }
        let claim = RefreshClaim { session_id, generation: 0 };
        let proved = Proved { amr: &amr, auth_time };
        let signed_in = self.signed_in(&user, claim, now, activation.new_session.expires_at, proved).await?;
        Ok(PasskeyRegistered {
            factor_id,
            recovery_codes: codes.into_iter().map(|(code, _)| code).collect(),
            sessions_ended: ended,
            signed_in,
        })
    }

    /// Starts answering a login challenge with a passkey: options naming the challenge's
    /// user's passkeys, the ceremony bound to the challenge.
    #[tracing::instrument(skip_all)]
    pub async fn start_passkey_challenge(
        &self,
        req: &pb::StartPasskeyChallengeRequest,
        client: &ClientInfo,
    ) -> Result<pb::StartPasskeyChallengeResponse> {
        let passkeys = self.passkeys()?;
        if req.challenge.trim().is_empty() {
            return Err(Error::invalid("challenge", "must not be empty"));
        }
        self.addresses.check(Action::SecondFactor, client)?;
        let hash = crate::security::factors::challenge_hash(&req.challenge).ok_or(Error::ChallengeRejected)?;
        self.throttle.per_ip(Action::SecondFactor, client).await?;
        let now = Utc::now();
        let challenge = self.store.live_challenge(&hash, now, super::factors::CHALLENGE_ATTEMPTS).await?;
        let challenge = challenge.ok_or(Error::ChallengeRejected)?;
        if !challenge.methods.split_whitespace().any(|m| m == PASSKEY) {
            return Err(Error::invalid("challenge", "cannot be answered with a passkey: the user has none"));
        }
        let user_passkeys: Vec<Passkey> = self
            .store
            .user_factors(challenge.user_id)
            .await?
            .iter()
            .filter(|f| f.kind == PASSKEY && f.activated_at.is_some())
            .map(|f| self.open_passkey(f))
            .collect::<Result<_>>()?;
        let started = passkeys.start_authentication(&user_passkeys)?;
        self.store
            .put_ceremony(&NewCeremony {
                purpose: CeremonyPurpose::Challenge,
                bound_to: &hex(&hash),
                user_id: Some(challenge.user_id),
                state: &started.state_json,
                now,
                expires_at: (now + CEREMONY_LIFETIME).min(challenge.expires_at),
            })
            .await?;
        Ok(pb::StartPasskeyChallengeResponse { options_json: started.options_json })
    }

    /// Checks a passkey's answer to the challenge of hash `challenge_hash` (of `user_id`),
    /// taking the ceremony bound to it, and records the passkey's use. `Ok(Err(why))` for
    /// an answer refused.
    pub(super) async fn check_passkey_answer(
        &self,
        user_id: i64,
        challenge_hash: &[u8],
        credential_json: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(), &'static str>> {
        let passkeys = self.passkeys()?;
        let refused = |why: &dyn std::fmt::Display, says| {
            tracing::info!(reason = %why, "passkey answer refused");
            Ok(Err(says))
        };
        // Read before the ceremony is taken: what is not even a credential leaves it waiting.
        let credential: PublicKeyCredential = match parse_credential(credential_json) {
            Ok(credential) => credential,
            Err(e) => {
                return refused(&e, "is not a WebAuthn credential (the JSON of the browser's credential.toJSON())");
            }
        };
        let ceremony = self.store.take_ceremony(CeremonyPurpose::Challenge, &hex(challenge_hash), now).await?;
        let Some(ceremony) = ceremony.filter(|c| c.user_id == Some(user_id)) else {
            return Ok(Err("has no passkey ceremony waiting: call StartPasskeyChallenge first (it serves once)"));
        };
        let result = match passkeys.finish_authentication(&credential, &ceremony.state) {
            Ok(result) => result,
            Err(CeremonyError::State(e)) => return Err(Error::Unexpected(e)),
            Err(e) => return refused(&e, "was refused: another challenge or origin, or a bad signature"),
        };
        let factor = self.store.passkey_by_credential(result.cred_id().as_ref()).await?;
        let Some(factor) = factor.filter(|f| f.user_id == user_id) else {
            return refused(&"another user's passkey", "is not a passkey of this user");
        };
        self.passkey_used(&factor, &result, now).await?;
        Ok(Ok(()))
    }

    /// Starts a login with a passkey alone.
    #[tracing::instrument(skip_all)]
    pub async fn start_passkey_login(&self, client: &ClientInfo) -> Result<pb::StartPasskeyLoginResponse> {
        let passkeys = self.passkeys()?;
        if !passkeys.passkey_login() {
            return Err(Error::PasskeyLoginDisabled);
        }
        self.addresses.check(Action::Login, client)?;
        self.throttle.per_ip(Action::Login, client).await?;
        let started = passkeys.start_discoverable()?;
        let ceremony_id = Uuid::new_v4().to_string();
        let now = Utc::now();
        self.store
            .put_ceremony(&NewCeremony {
                purpose: CeremonyPurpose::Login,
                bound_to: &ceremony_id,
                user_id: None,
                state: &started.state_json,
                now,
                expires_at: now + CEREMONY_LIFETIME,
            })
            .await?;
        Ok(pb::StartPasskeyLoginResponse { ceremony_id, options_json: started.options_json })
    }

    /// Finishes a login with a passkey alone: the passkey named by the credential, of the
    /// user its handle names, signs the ceremony's challenge. The session proved `hwk`.
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_login(
        &self,
        req: &pb::FinishPasskeyLoginRequest,
        client: &ClientInfo,
    ) -> Result<SignedIn> {
        let passkeys = self.passkeys()?;
        if !passkeys.passkey_login() {
            return Err(Error::PasskeyLoginDisabled);
        }
        let mut bad = Vec::new();
        let ceremony_id = Uuid::parse_str(req.ceremony_id.trim());
        if ceremony_id.is_err() {
            bad.push(FieldViolation::new("ceremony_id", "must be the ceremony_id StartPasskeyLogin gave"));
        }
        let credential = parse_credential::<PublicKeyCredential>(&req.credential);
        if let Err(e) = &credential {
            bad.push(FieldViolation::new("credential", e.to_string()));
        }
        let (Ok(ceremony_id), Ok(credential)) = (ceremony_id, credential) else { return Err(Error::InvalidInput(bad)) };
        self.addresses.check(Action::Login, client)?;
        self.throttle.per_ip(Action::Login, client).await?;
        let now = Utc::now();
        let ceremony = self.store.take_ceremony(CeremonyPurpose::Login, &ceremony_id.to_string(), now).await?;
        let ceremony = ceremony.ok_or(Error::CeremonyNotFound)?;
        let refused = |why: &dyn std::fmt::Display| {
            tracing::info!(reason = %why, "passkey login refused");
            Error::InvalidCredentials
        };
        let (handle, credential_id) = passkeys.identify(&credential).map_err(|e| refused(&e))?;
        let factor =
            self.store.passkey_by_credential(credential_id).await?.ok_or_else(|| refused(&"unknown passkey"))?;
        // The handle the authenticator keeps must be the passkey's user's.
        if self.store.user_of_handle(handle).await? != Some(factor.user_id) {
            return Err(refused(&"the user handle is not the passkey's user's"));
        }
        let attempt =
            self.throttle.begin_check(&passkey_account(factor.user_id), Source::Address(client), client).await?;
        let passkey = match self.open_passkey(&factor) {
            Ok(passkey) => passkey,
            Err(e) => {
                attempt.not_checked().await;
                return Err(e);
            }
        };
        let result = match passkeys.finish_discoverable(&credential, &ceremony.state, &passkey) {
            Ok(result) => result,
            Err(CeremonyError::State(e)) => {
                attempt.not_checked().await;
                return Err(Error::Unexpected(e));
            }
            Err(e) => {
                attempt.failed();
                events::second_factor_answered(&self.audit, factor.user_id, PASSKEY, false, client);
                return Err(refused(&e));
            }
        };
        attempt.passed().await?;
        self.passkey_used(&factor, &result, now).await?;
        let user = self.store.user_by_id(factor.user_id).await?.ok_or(Error::InvalidCredentials)?;
        self.check_verified(&user, client)?;
        events::second_factor_answered(&self.audit, user.user_id, PASSKEY, true, client);
        self.start_session(&user, Verdict::Match, None, client, Proved { amr: HWK, auth_time: Some(now) }).await
    }

    /// Deletes the passkey ceremonies that ran out.
    pub async fn prune_passkey_ceremonies(&self) -> Result<u64> {
        Ok(self.store.prune_ceremonies(Utc::now()).await?)
    }

    fn open_passkey(&self, factor: &FactorRecord) -> Result<Passkey> {
        let bytes = self
            .sealer
            .open(&secret_name(factor.factor_id), &factor.secret)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("the passkey of factor {}: {e}", factor.factor_id)))?;
        Ok(decode_passkey(&bytes)?)
    }

    /// Stores what an authentication changed of a passkey (its counter, its backup
    /// state), sealed again, and when it was used.
    async fn passkey_used(
        &self,
        factor: &FactorRecord,
        result: &crate::security::webauthn::AuthenticationResult,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut passkey = self.open_passkey(factor)?;
        passkey.update_credential(result);
        let sealed = self.sealer.seal(&secret_name(factor.factor_id), &encode_passkey(&passkey)?)?;
        self.store.passkey_used(factor.factor_id, &sealed, now).await?;
        Ok(())
    }
}

/// A challenge's hash as the ceremony binding names it.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
