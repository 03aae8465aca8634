//! The OpenAPI 3.1 document of the REST surface, served at `/openapi.json`, with Swagger
//! UI at `/docs` and ReDoc at `/redoc`, all served by authd itself (no CDN).
//!
//! The types below describe bodies as they are on the wire (the old app's dialect); the
//! handlers build those bodies with `json!`, and the schemathesis run in the test suite
//! checks that each answer matches this document.

#![allow(dead_code)] // the types exist to be described, not built

use std::collections::BTreeMap;

use axum::{
    Router,
    http::header,
    response::{Html, IntoResponse, Redirect},
    routing::get,
};
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

pub const DOCUMENT_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authd",
        description = "Registration, login, tokens and the caller's own account, in the old app's JSON dialect. \
                       The same service answers gRPC (`authd.v1`) on the same port.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        super::register_user,
        super::login,
        super::refresh_token,
        super::logout,
        super::validate,
        super::me,
        super::update_me,
        super::delete_me,
        super::change_password,
        super::list_sessions,
        super::revoke_session,
        super::jwks,
        super::healthz,
        super::ready,
        super::metrics_text,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "Registration and the caller's own account"),
        (name = "auth", description = "Login, tokens and sessions"),
        (name = "operations", description = "Health, readiness, metrics and keys"),
    )
)]
pub struct ApiDoc;

/// `bearer` for a pasted access token; `oauth2` so that Swagger UI's Authorize button can
/// log in through the OAuth2 password form that `/api/v1/auth/login` accepts.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new("/api/v1/auth/login", Scopes::new()))])),
        );
    }
}

/// `/openapi.json`, `/docs` (Swagger UI), `/redoc`, and `/` redirecting to `/docs`.
pub fn router() -> Router {
    let swagger = SwaggerUi::new("/docs").url(DOCUMENT_PATH, ApiDoc::openapi());
    Router::new()
        .merge(swagger)
        .route("/", get(|| async { Redirect::to("/docs") }))
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    REDOC_JS,
                )
                    .into_response()
            }),
        )
}

/// ReDoc's standalone bundle, vendored from its npm package (`assets/redoc/`, MIT).
const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>authd API (ReDoc)</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

// ---- Request bodies ----

#[derive(ToSchema)]
pub struct RegisterUserBody {
    /// Trimmed; 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    name: String,
    /// Compared case-insensitively; at most 254 characters.
    #[schema(max_length = 254, example = "ada@example.com")]
    email: String,
    #[schema(min_length = 1, max_length = 100, example = "London")]
    location: String,
    /// At most 1000 characters; empty or null means none.
    #[schema(max_length = 1000, example = "Analyst")]
    about: Option<String>,
    /// 8 to 128 characters (configurable), taken exactly as given.
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    password: String,
}

#[derive(ToSchema)]
pub struct LoginBody {
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(example = "correct horse battery")]
    password: String,
}

/// The OAuth2 password grant form (RFC 6749 §4.3); `grant_type`, `scope` and the client
/// credentials are accepted and ignored.
#[derive(ToSchema)]
pub struct LoginForm {
    /// The email.
    username: String,
    password: String,
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

#[derive(ToSchema)]
pub struct RefreshBody {
    /// The refresh token of the last login or refresh.
    token: String,
    /// `Bearer` if given.
    #[serde(rename = "tokenType")]
    #[schema(example = "Bearer")]
    token_type: Option<String>,
}

#[derive(ToSchema)]
pub struct LogoutBody {
    /// End every session of the user, not only the caller's. The body may be empty.
    all_sessions: Option<bool>,
}

#[derive(ToSchema)]
pub struct ValidateBody {
    /// An access token.
    token: String,
}

/// Fields left out stay as they are; each given one is checked as at registration.
#[derive(ToSchema)]
pub struct UpdateMeBody {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    location: Option<String>,
    /// `null` (or empty) clears it.
    #[schema(max_length = 1000)]
    about: Option<String>,
}

#[derive(ToSchema)]
pub struct ChangePasswordBody {
    /// A wrong one is a 422 naming `current_password`.
    current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

#[derive(ToSchema)]
pub struct DeleteMeBody {
    /// A wrong one is a 422 naming `password`.
    password: String,
}

// ---- Responses ----

#[derive(ToSchema)]
pub struct Message {
    message: String,
}

/// 422: one object per bad field, `{"<field>": "<why>"}`; `body` for an unreadable body.
#[derive(ToSchema)]
pub struct FieldErrors {
    #[schema(example = json!([{"email": "is not a valid email address"}]))]
    error: Vec<BTreeMap<String, String>>,
}

#[derive(ToSchema)]
pub struct ErrorText {
    error: String,
}

/// Errors that concern no field: `{"error": {"error": "<message>"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    error: ErrorText,
}

#[derive(ToSchema)]
pub struct EmailError {
    #[schema(example = "Email already registered. Try logging in.")]
    email: String,
}

/// 400 at registration.
#[derive(ToSchema)]
pub struct EmailTaken {
    error: EmailError,
}

/// 401 on bearer-token routes: `Not authenticated` without a token, `Invalid Credentials`
/// with a bad, expired or ended one.
#[derive(ToSchema)]
pub struct Detail {
    #[schema(example = "Not authenticated")]
    detail: String,
}

#[derive(ToSchema)]
pub struct UserToken {
    /// The access token (a JWT).
    token: String,
    #[serde(rename = "tokenType")]
    #[schema(example = "Bearer")]
    token_type: String,
    #[serde(rename = "refreshToken")]
    refresh_token: String,
    /// Access token lifetime, seconds.
    #[serde(rename = "expiresIn")]
    expires_in: i64,
}

#[derive(ToSchema)]
pub struct SignedInUser {
    name: String,
    email: String,
    #[schema(required)]
    about: Option<String>,
    location: String,
    user_token: UserToken,
}

/// Login and refresh. A login by OAuth2 form also carries RFC 6749's members at the top
/// level (`access_token`, `token_type`, `refresh_token`, `expires_in`).
#[derive(ToSchema)]
pub struct SignedIn {
    #[schema(example = "Login successful.")]
    message: String,
    data: SignedInUser,
    access_token: Option<String>,
    token_type: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(ToSchema)]
pub struct LogoutAnswer {
    message: String,
    sessions_ended: i64,
}

/// RFC 7662 style: an inactive token is `{"active": false}` only.
#[derive(ToSchema)]
pub struct Validation {
    active: bool,
    user_id: Option<i64>,
    session_id: Option<String>,
    /// Expiry, seconds since the epoch.
    exp: Option<i64>,
}

#[derive(ToSchema)]
pub struct Profile {
    user_id: i64,
    name: String,
    email: String,
    #[schema(required)]
    about: Option<String>,
    location: String,
}

#[derive(ToSchema)]
pub struct PasswordChanged {
    message: String,
    /// The user's other sessions that were ended.
    sessions_ended: i64,
}

#[derive(ToSchema)]
pub struct SessionView {
    session_id: String,
    #[schema(format = DateTime)]
    created_at: String,
    /// Last login or refresh on this session.
    #[schema(format = DateTime)]
    last_used_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(required)]
    user_agent: Option<String>,
    #[schema(required)]
    ip: Option<String>,
    /// The session of the token making this call.
    current: bool,
}

#[derive(ToSchema)]
pub struct Sessions {
    sessions: Vec<SessionView>,
}

/// RFC 7517; empty with HMAC signing.
#[derive(ToSchema)]
pub struct Jwks {
    keys: Vec<BTreeMap<String, serde_json::Value>>,
}

#[derive(ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: String,
}
