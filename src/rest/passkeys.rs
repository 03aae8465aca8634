//! Passkeys over REST: registering one (`/api/v1/me/factors/passkeys`), the options for
//! answering a login's challenge with one, and logging in with one alone. The options and
//! the credential are webauthn-rs JSON, carried as strings. Thin adapters over the core,
//! each declared once for the router and the OpenAPI document.

use axum::{
    Json,
    extract::State,
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
        BodyRejected, CeremonyNotFound, ChallengeRejected, EmailNotVerified, Forbidden, Overloaded,
        PasskeysUnavailable, ServerFailed, Unauthenticated, WrongCredentials,
    },
    factors::{PROOF_FIELDS, ProofBody},
    rename_fields,
    wire::{SignedIn, UserToken},
};
use crate::{
    core::{Authd, Caller, ClientInfo, Error},
    pb,
};

pub fn routes(router: OpenApiRouter<Authd>) -> OpenApiRouter<Authd> {
    router
        .routes(routes!(start_passkey_registration))
        .routes(routes!(finish_passkey_registration))
        .routes(routes!(start_passkey_challenge))
        .routes(routes!(start_passkey_login))
        .routes(routes!(finish_passkey_login))
}

/// The first half of a ceremony: options for the browser.
#[derive(Serialize, ToSchema)]
pub struct PasskeyOptions {
    /// webauthn-rs's options as JSON, `{"publicKey": {...}}`: give `publicKey` to
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` (registration) or
    /// `parseRequestOptionsFromJSON` (authentication).
    options_json: String,
    /// A passkey login only: send it back with the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    ceremony_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct StartPasskeyRegistrationBody {
    /// While the user has no active factor: their password. Once they have one: with
    /// `recovery_code`, a proof (see the route).
    pub password: Option<String>,
    /// A recent proof with an existing factor (see the route).
    #[schema(example = "123456")]
    pub totp_code: Option<String>,
    #[schema(example = "ABCD-EFGH-JKLM-NPQR")]
    pub recovery_code: Option<String>,
}

/// Start registering a passkey
///
/// The options for the browser's `navigator.credentials.create`, for a passkey of the caller.
/// The ceremony is bound to the caller's session, lasts 5 minutes and serves once. Takes
/// re-authentication: the `password` while the user has no active factor (a 422 naming it when
/// missing or wrong); once they have one, the proof that removing a factor takes (a session that
/// proved a factor within the last 10 minutes, or `totp_code`, or `password` and an unused
/// `recovery_code`; 403 without one). 501 when passkeys are not configured on this server.
#[utoipa::path(post, path = "/api/v1/me/factors/passkeys/options", tag = "factors",
    request_body(content = StartPasskeyRegistrationBody, description = "Optional"),
    responses((status = 200, description = "Options for the browser", body = PasskeyOptions),
        Unauthenticated, Forbidden, PasskeysUnavailable, BodyRejected, Overloaded, ServerFailed))]
async fn start_passkey_registration(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<PasskeyOptions> {
    let (body, bad_fields) = body.json_or_empty::<StartPasskeyRegistrationBody>()?;
    bad_fields.finish(Ok(()))?;
    let proof = ProofBody { totp_code: body.totp_code, password: body.password, recovery_code: body.recovery_code };
    let password = proof.password.clone().unwrap_or_default();
    let request = pb::StartPasskeyRegistrationRequest { password, proof: Some(proof.into_proof()) };
    let started =
        authd.start_passkey_registration(&caller, &request).await.map_err(|e| rename_fields(e, PROOF_FIELDS))?;
    Ok(Json(PasskeyOptions { options_json: started.options_json, ceremony_id: None }))
}

#[derive(Deserialize, ToSchema)]
pub struct FinishPasskeyRegistrationBody {
    /// A name for the passkey, 1 to 64 characters; "Passkey" when left out.
    #[schema(max_length = 64, example = "Laptop")]
    pub name: Option<String>,
    /// The browser's credential: `JSON.stringify(credential.toJSON())`.
    pub credential: String,
}

/// A registered passkey: the recovery codes (first factor only) and the caller's new session.
#[derive(Serialize, ToSchema)]
pub struct PasskeyRegistered {
    #[schema(example = "Passkey registered.")]
    message: &'static str,
    factor_id: String,
    /// Ten single-use codes when this is the first active factor, else empty. Shown once.
    recovery_codes: Vec<String>,
    /// The user's sessions that ended (all but the caller's new one).
    sessions_ended: u64,
    user_token: UserToken,
}

/// Finish registering a passkey
///
/// The passkey is an active second factor at once: every session of the user ends, the caller's
/// too, and the answer carries the tokens of a new session (`hwk` added to the caller's `amr`, the
/// caller's `auth_time` kept); the first
/// factor also yields ten recovery codes, shown this once. A credential that is not JSON, not a
/// credential, or refused is a 422 naming `credential`; no registration waiting (never started,
/// expired, or used) is a 409.
#[utoipa::path(post, path = "/api/v1/me/factors/passkeys", tag = "factors",
    request_body = FinishPasskeyRegistrationBody,
    responses((status = 200, description = "Registered and active; every other session ended",
            body = PasskeyRegistered),
        Unauthenticated, Forbidden, CeremonyNotFound, PasskeysUnavailable, BodyRejected, ServerFailed))]
async fn finish_passkey_registration(
    State(authd): State<Authd>,
    caller: Caller,
    body: Body,
) -> Reply<PasskeyRegistered> {
    let (body, bad_fields) = body.json::<FinishPasskeyRegistrationBody>()?;
    bad_fields.finish(Ok(()))?;
    let request =
        pb::FinishPasskeyRegistrationRequest { name: body.name.unwrap_or_default(), credential: body.credential };
    let registered = authd.finish_passkey_registration(&caller, &request).await?;
    Ok(Json(PasskeyRegistered {
        message: "Passkey registered.",
        factor_id: registered.factor_id.to_string(),
        recovery_codes: registered.recovery_codes,
        sessions_ended: registered.sessions_ended,
        user_token: registered.signed_in.tokens.into(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct StartPasskeyChallengeBody {
    /// The `challenge` of the login's 401 answer.
    pub challenge: String,
}

/// Start answering a login challenge with a passkey
///
/// The options for the browser's `navigator.credentials.get`, naming the passkeys of the
/// challenge's user. Send the credential to `POST /api/v1/auth/login/second-factor` as
/// `passkey_credential`, with the challenge; the tokens then carry `amr` `["pwd","hwk"]`. The
/// ceremony is bound to the challenge and serves once. An unknown, expired or used challenge is a
/// 401; one no passkey may answer is a 422.
#[utoipa::path(post, path = "/api/v1/auth/login/second-factor/passkey-options", tag = "auth",
    request_body = StartPasskeyChallengeBody,
    responses((status = 200, description = "Options for the browser", body = PasskeyOptions),
        ChallengeRejected, PasskeysUnavailable, BodyRejected, Overloaded, ServerFailed))]
async fn start_passkey_challenge(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<PasskeyOptions> {
    let (body, bad_fields) = body.json::<StartPasskeyChallengeBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::StartPasskeyChallengeRequest { challenge: body.challenge };
    let started = authd.start_passkey_challenge(&request, &client).await?;
    Ok(Json(PasskeyOptions { options_json: started.options_json, ceremony_id: None }))
}

/// Start a passkey login
///
/// The options for the browser's `navigator.credentials.get` with a discoverable passkey (no email
/// first), and the `ceremony_id` to send back. 501 when this server does not allow a passkey
/// alone to log in (`PASSKEY_LOGIN`), or has no passkeys configured.
#[utoipa::path(post, path = "/api/v1/auth/passkey-login/options", tag = "auth",
    responses((status = 200, description = "Options for the browser", body = PasskeyOptions),
        PasskeysUnavailable, Overloaded, ServerFailed))]
async fn start_passkey_login(State(authd): State<Authd>, client: ClientInfo) -> Reply<PasskeyOptions> {
    let started = authd.start_passkey_login(&client).await?;
    Ok(Json(PasskeyOptions { options_json: started.options_json, ceremony_id: Some(started.ceremony_id) }))
}

#[derive(Deserialize, ToSchema)]
pub struct FinishPasskeyLoginBody {
    /// The `ceremony_id` of the options.
    pub ceremony_id: String,
    /// The browser's credential: `JSON.stringify(credential.toJSON())`.
    pub credential: String,
}

/// Log in with a passkey
///
/// Finishes a passkey login: the login's usual answer, the tokens carrying `amr` `["hwk"]`. A
/// credential that is not JSON or not a credential is a 422 naming `credential`; a passkey refused
/// (unknown, another user's, a bad signature) is a 401; no ceremony waiting (expired, or used) is
/// a 409.
#[utoipa::path(post, path = "/api/v1/auth/passkey-login", tag = "auth", request_body = FinishPasskeyLoginBody,
    responses((status = 200, description = "Logged in: a new session", body = SignedIn,
            headers(("Set-Cookie" = String, description = "`authd_device=<device token>`, HttpOnly, SameSite=Strict"))),
        WrongCredentials, CeremonyNotFound, EmailNotVerified, PasskeysUnavailable, BodyRejected, Overloaded,
        ServerFailed))]
async fn finish_passkey_login(
    State(authd): State<Authd>,
    client: ClientInfo,
    parts: RequestHead,
    body: Body,
) -> Result<Response, Error> {
    let (body, bad_fields) = body.json::<FinishPasskeyLoginBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::FinishPasskeyLoginRequest { ceremony_id: body.ceremony_id, credential: body.credential };
    let signed_in = authd.finish_passkey_login(&request, &client).await?;
    let cookie = device_cookie(&signed_in.tokens.device_token, parts.over_tls());
    Ok(([(header::SET_COOKIE, cookie)], Json(SignedIn::new("Login successful.", signed_in))).into_response())
}
