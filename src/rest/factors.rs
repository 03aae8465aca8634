//! Second factors over REST: answering a login's challenge, and the caller's factors under
//! `/api/v1/me/factors`. Thin adapters over the core, each declared once for the router
//! and the OpenAPI document.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::header,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Reply, RequestHead,
    body::Body,
    device_cookie,
    error::{
        BodyRejected, ChallengeRejected, EmailNotVerified, FactorNotFound, Forbidden, Overloaded, ServerFailed,
        Unauthenticated,
    },
    rename_fields,
    wire::{SignedIn, UserToken, rfc3339},
};
use crate::{
    core::{Authd, Caller, ClientInfo, Error},
    pb,
};

pub fn routes(router: OpenApiRouter<Authd>) -> OpenApiRouter<Authd> {
    router
        .routes(routes!(complete_login))
        .routes(routes!(list_factors))
        .routes(routes!(enroll_totp))
        .routes(routes!(activate_totp))
        .routes(routes!(remove_factor))
        .routes(routes!(regenerate_recovery_codes))
}

/// A login challenge's answer: one of `totp_code` and `recovery_code`.
#[derive(Deserialize, ToSchema)]
pub struct CompleteLoginBody {
    /// The `challenge` of the login's 401 answer.
    pub challenge: String,
    /// The authenticator's current code.
    #[schema(example = "123456")]
    pub totp_code: Option<String>,
    /// One of the recovery codes (case, spaces and dashes do not matter).
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub recovery_code: Option<String>,
    /// The browser's credential for the options of
    /// `POST /api/v1/auth/login/second-factor/passkey-options`: `JSON.stringify(credential.toJSON())`.
    pub passkey_credential: Option<String>,
}

/// Answer a login's second-factor challenge
///
/// A login of a user with an active second factor answers 401 with `mfa_required: true` and a
/// `challenge` (single use, valid for `expires_in` seconds, 5 answers at most); send it here with
/// `totp_code` or `recovery_code` to get the login's usual answer. The tokens carry `amr`
/// `["pwd","otp"]`. A wrong code is a 422 naming the field; wrong codes count as password guesses
/// do (429 past them). An unknown, expired or used challenge is a 401: log in again. The
/// `authd_device` cookie is set only for a device not known before.
#[utoipa::path(post, path = "/api/v1/auth/login/second-factor", tag = "auth", request_body = CompleteLoginBody,
    responses((status = 200, description = "Logged in: a new session", body = SignedIn),
        ChallengeRejected, EmailNotVerified, BodyRejected, Overloaded, ServerFailed))]
async fn complete_login(
    State(authd): State<Authd>,
    client: ClientInfo,
    parts: RequestHead,
    body: Body,
) -> Result<Response, Error> {
    let (body, bad_fields) = body.json::<CompleteLoginBody>()?;
    use pb::complete_login_request::Answer;
    let answer = match (body.totp_code, body.recovery_code, body.passkey_credential) {
        (Some(code), None, None) => Some(Answer::TotpCode(code)),
        (None, Some(code), None) => Some(Answer::RecoveryCode(code)),
        (None, None, Some(credential)) => Some(Answer::PasskeyCredential(credential)),
        (None, None, None) => None,
        (Some(_), Some(_), None) => {
            return Err(Error::invalid("answer", "give one of totp_code, recovery_code, not both"));
        }
        _ => {
            return Err(Error::invalid("answer", "give one of totp_code, recovery_code, passkey_credential, not two"));
        }
    };
    let request = pb::CompleteLoginRequest { challenge: body.challenge, answer };
    bad_fields.finish(authd.validate_complete_login(&request))?;
    let signed_in = authd.complete_login(&request, &client).await?;
    let cookie = (!signed_in.tokens.device_token.is_empty())
        .then(|| device_cookie(&signed_in.tokens.device_token, parts.over_tls()));
    let body = Json(SignedIn::new("Login successful.", signed_in));
    Ok(match cookie {
        Some(cookie) => ([(header::SET_COOKIE, cookie)], body).into_response(),
        None => body.into_response(),
    })
}

#[derive(Deserialize, ToSchema)]
pub struct EnrollTotpBody {
    /// A name for the authenticator, 1 to 64 characters; "Authenticator" when left out.
    #[schema(max_length = 64, example = "Phone")]
    pub name: Option<String>,
    /// While the user has no active factor: their password. Once they have one: with
    /// `recovery_code`, a proof (see the route).
    pub password: Option<String>,
    /// A recent proof with an existing factor (see the route).
    #[schema(example = "123456")]
    pub totp_code: Option<String>,
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub recovery_code: Option<String>,
}

/// A TOTP enrolment waiting for its first code.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    factor_id: String,
    /// Base32, for typing into the app.
    secret: String,
    otpauth_uri: String,
    /// The URI as a QR code: an SVG document.
    qr_svg: String,
    #[schema(example = 6)]
    digits: i32,
    #[schema(example = 30)]
    period_seconds: i64,
    #[schema(example = "SHA1")]
    algorithm: String,
}

/// Start a TOTP enrolment
///
/// A new TOTP secret for the caller (160 bits, SHA-1, 6 digits, 30 s), its `otpauth://` URI and a
/// QR code of it (SVG). Nothing changes at login until the factor is activated with a first code;
/// enrolling again drops an enrolment not activated yet. At most 10 factors per user (403).
///
/// Takes re-authentication: the `password` while the user has no active factor (a 422 naming it
/// when missing or wrong); once they have one, the proof that removing a factor takes (a session
/// that proved a factor within the last 10 minutes, or `totp_code`, or `password` and an unused
/// `recovery_code`; 403 without one).
#[utoipa::path(post, path = "/api/v1/me/factors/totp", tag = "factors",
    request_body(content = EnrollTotpBody, description = "Optional"),
    responses((status = 200, description = "Enrolled, not active yet", body = TotpEnrolment),
        Unauthenticated, Forbidden, BodyRejected, ServerFailed))]
async fn enroll_totp(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<TotpEnrolment> {
    let (body, bad_fields) = body.json_or_empty::<EnrollTotpBody>()?;
    bad_fields.finish(Ok(()))?;
    let proof = ProofBody { totp_code: body.totp_code, password: body.password, recovery_code: body.recovery_code };
    let password = proof.password.clone().unwrap_or_default();
    let request =
        pb::EnrollTotpRequest { name: body.name.unwrap_or_default(), password, proof: Some(proof.into_proof()) };
    let e = authd.enroll_totp(&caller, &request).await.map_err(|e| rename_fields(e, PROOF_FIELDS))?;
    Ok(Json(TotpEnrolment {
        factor_id: e.factor_id,
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
        qr_svg: e.qr_svg,
        digits: e.digits,
        period_seconds: e.period_seconds,
        algorithm: e.algorithm,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ActivateTotpBody {
    /// The authenticator's current code.
    #[schema(example = "123456")]
    pub code: String,
}

/// An activated factor: the recovery codes (first factor only) and the caller's new session.
#[derive(Serialize, ToSchema)]
pub struct TotpActivated {
    #[schema(example = "Second factor activated.")]
    message: &'static str,
    /// Ten single-use codes when this is the first active factor, else empty. Shown once.
    recovery_codes: Vec<String>,
    /// The user's sessions that ended (all but the caller's new one).
    sessions_ended: u64,
    user_token: UserToken,
}

/// Activate a TOTP factor
///
/// Activates an enrolled TOTP factor with a correct current code. Every session of the user ends,
/// the caller's too: the answer carries the tokens of a new session (`otp` added to the caller's
/// `amr`, the caller's `auth_time` kept: a new factor is no fresh proof for removing another). The
/// first active factor also yields ten recovery codes, shown this once. A wrong code is a 422
/// naming `code`; wrong codes count as password guesses do (429 past them).
#[utoipa::path(post, path = "/api/v1/me/factors/{factor_id}/activate", tag = "factors",
    params(("factor_id" = String, Path, description = "The enrolment's `factor_id`")),
    request_body = ActivateTotpBody,
    responses((status = 200, description = "Active; every other session ended", body = TotpActivated),
        Unauthenticated, FactorNotFound, BodyRejected, Overloaded, ServerFailed))]
async fn activate_totp(
    State(authd): State<Authd>,
    caller: Caller,
    factor_id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply<TotpActivated> {
    let (body, bad_fields) = body.json::<ActivateTotpBody>()?;
    bad_fields.finish(Ok(()))?;
    let factor_id = factor_id.map(|Path(id)| id).unwrap_or_default();
    let activated = authd.activate_totp(&caller, &pb::ActivateTotpRequest { factor_id, code: body.code }).await?;
    Ok(Json(TotpActivated {
        message: "Second factor activated.",
        recovery_codes: activated.recovery_codes,
        sessions_ended: activated.sessions_ended,
        user_token: activated.signed_in.tokens.into(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct FactorView {
    factor_id: String,
    /// `totp` or `passkey`.
    kind: String,
    name: String,
    active: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime, required)]
    activated_at: Option<String>,
    #[schema(format = DateTime, required)]
    last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Factors {
    factors: Vec<FactorView>,
    /// Unused recovery codes left.
    recovery_codes_left: i64,
}

/// List my second factors
///
/// The caller's factors, active or waiting for their first code, oldest first, with when each was
/// last used, and how many recovery codes are left.
#[utoipa::path(get, path = "/api/v1/me/factors", tag = "factors",
    responses((status = 200, description = "The caller's factors", body = Factors), Unauthenticated, ServerFailed))]
async fn list_factors(State(authd): State<Authd>, caller: Caller) -> Reply<Factors> {
    let listed = authd.list_factors(&caller).await?;
    let time = |t: Option<prost_types::Timestamp>| t.map(|t| rfc3339(Some(t)));
    Ok(Json(Factors {
        factors: listed
            .factors
            .into_iter()
            .map(|f| FactorView {
                factor_id: f.factor_id,
                kind: f.kind,
                name: f.name,
                active: f.active,
                created_at: rfc3339(f.created_at),
                activated_at: time(f.activated_at),
                last_used_at: time(f.last_used_at),
            })
            .collect(),
        recovery_codes_left: listed.recovery_codes_left,
    }))
}

/// A recent second-factor proof: `totp_code`, or `password` and `recovery_code`. Not needed
/// when the caller's session proved a factor within the last 10 minutes.
#[derive(Deserialize, ToSchema)]
pub struct ProofBody {
    #[schema(example = "123456")]
    pub totp_code: Option<String>,
    pub password: Option<String>,
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub recovery_code: Option<String>,
}

impl ProofBody {
    pub(super) fn into_proof(self) -> pb::FactorProof {
        pb::FactorProof {
            totp_code: self.totp_code.unwrap_or_default(),
            password: self.password.unwrap_or_default(),
            recovery_code: self.recovery_code.unwrap_or_default(),
        }
    }
}

/// The core names a proof's fields `proof.<field>`; the REST body has them at the top.
pub(super) const PROOF_FIELDS: &[(&str, &str)] =
    &[("proof.totp_code", "totp_code"), ("proof.password", "password"), ("proof.recovery_code", "recovery_code")];

#[derive(Serialize, ToSchema)]
pub struct FactorRemoved {
    #[schema(example = "Second factor removed.")]
    message: &'static str,
    /// Active factors the user has left (with none, the recovery codes went too).
    factors_left: i64,
}

/// Remove a second factor
///
/// Removes one of the caller's factors. An active one takes a recent second-factor proof: a
/// session that proved a factor within the last 10 minutes, or `totp_code`, or `password` and an
/// unused `recovery_code` (which is then used) in the body; without one, 403. A wrong code or
/// password is a 422 naming it. With no active factor left, the recovery codes go too.
#[utoipa::path(delete, path = "/api/v1/me/factors/{factor_id}", tag = "factors",
    params(("factor_id" = String, Path, description = "A `factor_id` from the list")),
    request_body(content = ProofBody, description = "Optional"),
    responses((status = 200, description = "Removed", body = FactorRemoved),
        Unauthenticated, Forbidden, FactorNotFound, BodyRejected, Overloaded, ServerFailed))]
async fn remove_factor(
    State(authd): State<Authd>,
    caller: Caller,
    factor_id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply<FactorRemoved> {
    let (body, bad_fields) = body.json_or_empty::<ProofBody>()?;
    bad_fields.finish(Ok(()))?;
    let factor_id = factor_id.map(|Path(id)| id).unwrap_or_default();
    let request = pb::RemoveFactorRequest { factor_id, proof: Some(body.into_proof()) };
    let factors_left = authd.remove_factor(&caller, &request).await.map_err(|e| rename_fields(e, PROOF_FIELDS))?;
    Ok(Json(FactorRemoved { message: "Second factor removed.", factors_left }))
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes, shown this once; the old ones no longer work.
    recovery_codes: Vec<String>,
}

/// Replace my recovery codes
///
/// Ten new recovery codes, shown this once; the old ones stop working. Needs an active factor (else
/// 403) and the proof that removing a factor needs.
#[utoipa::path(post, path = "/api/v1/me/factors/recovery-codes", tag = "factors",
    request_body(content = ProofBody, description = "Optional"),
    responses((status = 200, description = "New codes", body = RecoveryCodes),
        Unauthenticated, Forbidden, BodyRejected, Overloaded, ServerFailed))]
async fn regenerate_recovery_codes(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<RecoveryCodes> {
    let (body, bad_fields) = body.json_or_empty::<ProofBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::RegenerateRecoveryCodesRequest { proof: Some(body.into_proof()) };
    let recovery_codes =
        authd.regenerate_recovery_codes(&caller, &request).await.map_err(|e| rename_fields(e, PROOF_FIELDS))?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}
