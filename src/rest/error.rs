//! The one mapping from core errors to the old app's HTTP statuses and bodies. Each error
//! answer is a type that both the router sends and the document describes (utoipa's
//! `IntoResponses`), so that a route lists the ones it can give by name.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema, openapi::RefOr};

use crate::{
    core::{CLIENT_REQUIRED, Error, error},
    domain::FieldViolation,
};

/// Errors that concern no field: `{"error": {"error": "<message>"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorText,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorText {
    error: &'static str,
}

impl ErrorBody {
    pub fn new(message: &'static str) -> Self {
        Self { error: ErrorText { error: message } }
    }
}

/// An error clients tell apart by its `code`: `{"error": {"error": "<message>", "code": "<code>"}}`.
#[derive(Serialize, ToSchema)]
pub struct CodedError {
    error: CodedText,
}

impl CodedError {
    fn new(error: &'static str, code: &'static str) -> Self {
        Self { error: CodedText { error, code } }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CodedText {
    error: &'static str,
    #[schema(example = "email_not_verified")]
    code: &'static str,
}

/// 422: one object per bad field, `{"<field>": "<why>"}`; `body` for an unreadable body.
#[derive(Serialize, ToSchema)]
pub struct FieldErrors {
    #[schema(example = json!([{"email": "is not a valid email address"}]))]
    error: Vec<BTreeMap<String, String>>,
}

/// 400: at registration, an email already registered; on any route, a JSON body that is
/// not UTF-8 (the old app's FastAPI said `{"detail": "There was an error parsing the body"}`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BadRequestBody {
    EmailTaken(EmailTaken),
    Unparsable(Detail),
}

impl BadRequestBody {
    pub fn unparsable() -> Self {
        Self::Unparsable(Detail { detail: "There was an error parsing the body" })
    }
}

#[derive(Serialize, ToSchema)]
pub struct EmailTaken {
    error: EmailError,
}

#[derive(Serialize, ToSchema)]
pub struct EmailError {
    #[schema(example = "Email already registered. Try logging in.")]
    email: &'static str,
}

/// A login that needs a second factor: the old app's `detail`, and what to answer.
#[derive(Serialize, ToSchema)]
pub struct SecondFactorChallenge {
    #[schema(example = "Second factor required.")]
    detail: &'static str,
    /// Always true: tells this answer from a wrong password's.
    mfa_required: bool,
    /// Send it back with the answer; single use.
    challenge: String,
    /// What may answer it: `totp`, `recovery_code` (later `passkey`).
    #[schema(example = json!(["totp", "recovery_code"]))]
    methods: Vec<String>,
    /// Seconds left to answer.
    #[schema(example = 300)]
    expires_in: u64,
}

/// FastAPI's shape: 401 on bearer-token routes (`Not authenticated` without a token,
/// `Invalid Credentials` with a bad, expired or ended one), 400, 404, 405.
#[derive(Serialize, ToSchema)]
pub struct Detail {
    #[schema(example = "Not authenticated")]
    detail: &'static str,
}

/// Declares an error answer once: the status and body the router sends, and the same for
/// the document. Headers are documented here and added by [`Error::into_response`].
macro_rules! error_response {
    ($(#[doc = $doc:literal])* $name:ident($body:ty) = $status:ident $(, headers($($headers:tt)*))?) => {
        $(#[doc = $doc])*
        #[derive(IntoResponses)]
        #[response(status = $status $(, headers($($headers)*))?)]
        pub struct $name(pub $body);

        impl IntoResponse for $name {
            fn into_response(self) -> Response {
                (StatusCode::$status, Json(self.0)).into_response()
            }
        }
    };
}

error_response!(
    /// Bad or missing fields, or an unreadable body
    Invalid(FieldErrors) = UNPROCESSABLE_ENTITY
);
error_response!(
    /// Body over 64 KiB
    TooLarge(ErrorBody) = PAYLOAD_TOO_LARGE
);
error_response!(
    /// Email already registered (registration), or a JSON body that is not UTF-8
    BadRequest(BadRequestBody) = BAD_REQUEST
);
error_response!(
    /// Wrong email or password, alike
    WrongCredentials(ErrorBody) = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "Bearer"))
);
error_response!(
    /// A bad, expired, ended or reused refresh token
    RefreshRejected(ErrorBody) = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "Bearer"))
);
error_response!(
    /// No token, or a bad, expired or ended one
    Unauthenticated(Detail) = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "Bearer"))
);
error_response!(
    /// A login form posted by a page of another site, not in `CORS_ALLOWED_ORIGINS`
    CrossSite(ErrorBody) = FORBIDDEN
);
error_response!(
    /// The right password, for an address not verified yet (with `REQUIRE_EMAIL_VERIFICATION`)
    EmailNotVerified(CodedError) = FORBIDDEN
);
error_response!(
    /// No such live session of the caller's (another user's looks the same)
    SessionNotFound(ErrorBody) = NOT_FOUND
);
error_response!(
    /// No client credentials, or bad ones, where a service client is needed
    ClientUnauthenticated(ErrorBody) = UNAUTHORIZED,
        headers(("WWW-Authenticate" = String, description = "Basic realm=\"authd\""))
);
error_response!(
    /// No service client with that id
    ClientNotFound(ErrorBody) = NOT_FOUND
);
error_response!(
    /// Authenticated, but not allowed: the admin API needs the admin role
    Forbidden(ErrorBody) = FORBIDDEN
);
error_response!(
    /// No user with that id (admin API)
    UserNotFound(ErrorBody) = NOT_FOUND
);
error_response!(
    /// Too many requests from this address, or too many password checks waiting
    Overloaded(ErrorBody) = TOO_MANY_REQUESTS, headers(("Retry-After" = u64, description = "Seconds to wait"))
);
error_response!(
    /// The right password, but the user has a second factor: no tokens, a challenge to
    /// answer at `POST /api/v1/auth/login/second-factor`
    SecondFactorRequired(SecondFactorChallenge) = UNAUTHORIZED,
        headers(("WWW-Authenticate" = String, description = "Bearer"))
);
error_response!(
    /// A login challenge that is unknown, expired, answered already or past its attempts
    ChallengeRejected(ErrorBody) = UNAUTHORIZED, headers(("WWW-Authenticate" = String, description = "Bearer"))
);
error_response!(
    /// No such factor of the caller's (another user's looks the same)
    FactorNotFound(ErrorBody) = NOT_FOUND
);
error_response!(
    /// Passkeys are not configured on this server, or a passkey alone may not log in here
    /// (`PASSKEY_LOGIN`): `code` `passkeys_not_configured` or `passkey_login_disabled`
    PasskeysUnavailable(CodedError) = NOT_IMPLEMENTED
);
error_response!(
    /// No passkey ceremony waiting: never started, expired (5 minutes) or used already
    /// (`code` `passkey_ceremony_not_found`)
    CeremonyNotFound(CodedError) = CONFLICT
);
error_response!(
    /// Internal error
    Internal(ErrorBody) = INTERNAL_SERVER_ERROR
);
error_response!(
    /// Database unavailable
    Unavailable(ErrorBody) = SERVICE_UNAVAILABLE
);

/// What a route that reads a body may answer about the body itself.
pub enum BodyRejected {}

impl IntoResponses for BodyRejected {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        [BadRequest::responses(), TooLarge::responses(), Invalid::responses()].into_iter().flatten().collect()
    }
}

/// What any route that asks the database may answer when that fails.
pub enum ServerFailed {}

impl IntoResponses for ServerFailed {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        [Internal::responses(), Unavailable::responses()].into_iter().flatten().collect()
    }
}

impl TooLarge {
    pub fn body() -> Self {
        Self(ErrorBody::new("Request body too large."))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        match self {
            Error::InvalidInput(violations) => Invalid(violations.into()).into_response(),
            Error::EmailTaken => BadRequest(BadRequestBody::EmailTaken(EmailTaken {
                error: EmailError { email: "Email already registered. Try logging in." },
            }))
            .into_response(),
            Error::InvalidCredentials => {
                challenge(WrongCredentials(ErrorBody::new("Invalid credentials. Try again...")))
            }
            Error::EmailNotVerified => EmailNotVerified(CodedError {
                error: CodedText {
                    error: "Email not verified. Check your inbox, or ask for a new verification mail.",
                    code: "email_not_verified",
                },
            })
            .into_response(),
            Error::RefreshRejected => challenge(RefreshRejected(ErrorBody::new("Authorization failed. Log in again."))),
            Error::MissingToken => challenge(Unauthenticated(Detail { detail: "Not authenticated" })),
            Error::InvalidToken => challenge(Unauthenticated(Detail { detail: "Invalid Credentials" })),
            Error::SessionNotFound => SessionNotFound(ErrorBody::new("Session not found.")).into_response(),
            Error::UserNotFound => UserNotFound(ErrorBody::new("User not found.")).into_response(),
            Error::PermissionDenied(why) => Forbidden(ErrorBody::new(why)).into_response(),
            Error::ClientRequired => basic_challenge(ClientUnauthenticated(ErrorBody::new(CLIENT_REQUIRED))),
            Error::InvalidClient => {
                basic_challenge(ClientUnauthenticated(ErrorBody::new("Invalid client credentials.")))
            }
            Error::ClientNotFound => ClientNotFound(ErrorBody::new("Client not found.")).into_response(),
            Error::SecondFactorRequired(c) => challenge(SecondFactorRequired(SecondFactorChallenge {
                detail: "Second factor required.",
                mfa_required: true,
                challenge: c.token,
                methods: c.methods,
                expires_in: c.expires_in.as_secs(),
            })),
            Error::ChallengeRejected => {
                challenge(ChallengeRejected(ErrorBody::new("Login challenge expired or used. Log in again.")))
            }
            Error::FactorNotFound => FactorNotFound(ErrorBody::new("Factor not found.")).into_response(),
            Error::PasskeysNotConfigured => {
                PasskeysUnavailable(CodedError::new(error::PASSKEYS_NOT_CONFIGURED, "passkeys_not_configured"))
                    .into_response()
            }
            Error::PasskeyLoginDisabled => {
                PasskeysUnavailable(CodedError::new(error::PASSKEY_LOGIN_DISABLED, "passkey_login_disabled"))
                    .into_response()
            }
            Error::CeremonyNotFound => {
                CeremonyNotFound(CodedError::new(error::CEREMONY_NOT_FOUND, "passkey_ceremony_not_found"))
                    .into_response()
            }
            Error::Overloaded { retry_after } => {
                let mut response = Overloaded(ErrorBody::new("Too many requests. Try again later.")).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                response
            }
            Error::Unavailable(_) => Unavailable(ErrorBody::new("Service temporarily unavailable.")).into_response(),
            Error::Unexpected(_) => Internal(ErrorBody::new("Internal server error.")).into_response(),
        }
    }
}

/// A 401 of a call for service clients says how they authenticate.
pub fn basic_challenge(rejection: impl IntoResponse) -> Response {
    let mut response = rejection.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"authd\""));
    response
}

/// Every 401 says how to authenticate.
fn challenge(rejection: impl IntoResponse) -> Response {
    let mut response = rejection.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

impl From<Vec<FieldViolation>> for FieldErrors {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self { error: violations.into_iter().map(|v| BTreeMap::from([(v.field, v.description)])).collect() }
    }
}

/// The old app's body for errors that concern no field: `{"error": {"error": message}}`.
pub fn error_body(status: StatusCode, message: &'static str) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

/// A route's path with a method it does not serve, in FastAPI's words (axum's own 405 has
/// no body); axum adds the route's methods in `allow`.
pub async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json(Detail { detail: "Method Not Allowed" })).into_response()
}

/// Paths that match no route, in FastAPI's words.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(Detail { detail: "Not Found" })).into_response()
}
