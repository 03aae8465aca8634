//! The REST shim: the old FastAPI app's routes and JSON dialect, over the same core. Each
//! route is declared once, by its handler's `#[utoipa::path]`: the router and the OpenAPI
//! document are both built from it.

mod admin;
mod body;
mod error;
mod factors;
mod oauth;
mod openapi;
mod passkeys;
mod wire;

use std::convert::Infallible;

use axum::{
    Extension, Json, Router,
    extract::{FromRequestParts, Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header, request::Parts},
    middleware,
    response::{IntoResponse, Response},
    routing::any,
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use self::{
    body::{AllowedOrigins, Body, Patch},
    error::{
        BodyRejected, ClientUnauthenticated, CrossSite, EmailNotVerified, ErrorBody, Forbidden, Overloaded,
        RefreshRejected, ServerFailed, SessionNotFound, Unauthenticated, WrongCredentials,
    },
    wire::{
        ChangeEmailBody, ChangePasswordBody, ConfirmEmailChangeBody, DeleteMeBody, ForgotPasswordBody, Jwks, LoginBody,
        LoginForm, LogoutBody, Message, PasswordChanged, Profile, Readiness, RefreshBody, RegisterUserBody,
        ResendVerificationBody, ResetPasswordBody, RevokeBody, Sessions, SessionsEnded, SignedIn, Status, UpdateMeBody,
        ValidateBody, Validation, VerifyEmailBody,
    },
};
use crate::{
    core::{Authd, Caller, ClientInfo, DEVICE_CANDIDATES, Error},
    domain::FieldViolation,
    pb,
    server::{ClientAddr, TlsConnection},
};

/// A handler's answer: a body of the old app's dialect, or an error mapped in `error.rs`.
type Reply<T> = Result<Json<T>, Error>;

/// Every REST route, with the OpenAPI document and its viewers (`/openapi.json`, `/docs`,
/// `/redoc`). Same-path handlers only share a `routes!`: it mounts each of its handlers
/// on each of its paths.
pub fn router(authd: Authd, allowed_origins: &[String]) -> Router {
    let documented = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi());
    let (routes, document) = passkeys::routes(factors::routes(admin::routes(documented)))
        .routes(routes!(register_user))
        .routes(routes!(login))
        .routes(routes!(refresh_token))
        .routes(routes!(revoke_token))
        .routes(routes!(logout))
        .routes(routes!(validate))
        .routes(routes!(oauth::oauth_token))
        .routes(routes!(me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(list_sessions))
        .routes(routes!(my_activity))
        .routes(routes!(revoke_session))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(change_email))
        .routes(routes!(confirm_email_change))
        .routes(routes!(jwks))
        .routes(routes!(server_metadata))
        .routes(routes!(healthz))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
        .split_for_parts();
    let slashed = document
        .paths
        .paths
        .keys()
        .fold(Router::new(), |router, path| router.route(&format!("{path}/"), any(without_trailing_slash)));
    // No API answer is for a cache to keep: some carry tokens, the rest personal data.
    routes
        .with_state(authd)
        .layer(middleware::map_response(crate::server::not_cached))
        .layer(Extension(AllowedOrigins::new(allowed_origins)))
        .merge(slashed)
        .merge(openapi::router(document))
        .method_not_allowed_fallback(method_not_allowed)
}

/// FastAPI's `redirect_slashes`, as the old app's clients met it: a route's path with a
/// trailing slash is a 307 (method and body kept) to the path without it, as an absolute
/// URL on the request's host, the query kept.
async fn without_trailing_slash(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_end_matches('/');
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(uri.authority().map(|a| a.as_str()));
    let location = match host {
        Some(host) => format!("{}://{host}{path}{query}", uri.scheme_str().unwrap_or("http")),
        None => format!("{path}{query}"),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response(),
        Err(_) => not_found().await,
    }
}

/// Register a user
///
/// Creates an account. Surrounding whitespace is trimmed from every field but the password; the
/// email is compared case-insensitively.
#[utoipa::path(post, path = "/api/v1/register-user", tag = "users", request_body = RegisterUserBody,
    responses((status = 201, description = "Created", body = Message), BodyRejected, Overloaded, ServerFailed))]
async fn register_user(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Result<impl IntoResponse, Error> {
    let (body, bad_fields) = body.json::<RegisterUserBody>()?;
    let request = pb::RegisterUserRequest {
        name: body.name,
        email: body.email,
        location: body.location,
        about: body.about,
        password: body.password,
    };
    bad_fields.finish_screened(|| authd.screen_registration(&request, &client))?;
    authd.register(&request, &client).await?;
    Ok((StatusCode::CREATED, Json(Message { message: "User created successfully." })))
}

/// Log in
///
/// Checks the credentials and starts a session. Takes JSON `{email, password}` or the OAuth2
/// password form (`username` is the email), which Swagger UI's Authorize button uses; the form's
/// answer also carries `access_token` and `token_type` at the top level. A wrong password and an
/// unknown email fail alike. The answer's `device_token` (also set as the `authd_device` cookie)
/// names this device at its next login: past the account's failure ceiling, a known device may
/// still log in. A form posted by a page of another site (by its `Origin` or `Sec-Fetch-Site`)
/// that `CORS_ALLOWED_ORIGINS` does not list is refused.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body(content((LoginBody = "application/json"), (LoginForm = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Logged in: a new session", body = SignedIn,
            headers(("Set-Cookie" = String, description = "`authd_device=<device token>`, HttpOnly, SameSite=Strict"))),
        WrongCredentials, EmailNotVerified, CrossSite, BodyRejected, Overloaded, ServerFailed))]
async fn login(
    State(authd): State<Authd>,
    client: ClientInfo,
    parts: RequestHead,
    body: Body,
) -> Result<Response, Error> {
    let form = body.is_form();
    let (email, password, device_token, bad_fields) = if form {
        let (form, bad_fields) = body.form::<LoginForm>()?;
        (form.username, form.password, form.device_token, bad_fields)
    } else {
        let (body, bad_fields) = body.json::<LoginBody>()?;
        (body.email, body.password, body.device_token, bad_fields)
    };
    // The one in the body, then every one a browser keeps as a cookie: a sibling domain
    // may have set one of its own beside ours.
    let request = pb::LoginRequest { email, password, device_token: device_token.unwrap_or_default() };
    let cookies = parts.cookies(DEVICE_COOKIE);
    let renamed = if form { [("email", "username")].as_slice() } else { &[] };
    bad_fields.finish(authd.validate_login(&request).map_err(|v| rename(v, renamed)))?;
    let signed_in = authd.login_presenting(&request, &cookies, &client).await.map_err(|e| rename_fields(e, renamed))?;
    let cookie = device_cookie(&signed_in.tokens.device_token, parts.over_tls());
    let body = SignedIn::new("Login successful.", signed_in);
    let body = if form { body.with_oauth2_members() } else { body };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// The cookie that remembers a browser as a device that has logged in before.
const DEVICE_COOKIE: &str = "authd_device";

/// `Set-Cookie` for a device token: sent back to the login route only, never readable by
/// scripts, never sent from another site, and kept as long as the device is remembered.
fn device_cookie(token: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = crate::core::DEVICE_LIFETIME.as_secs();
    let cookie = format!(
        "{DEVICE_COOKIE}={token}; Path=/api/v1/auth/login; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // A device token is base64url: always a valid header value.
    HeaderValue::try_from(cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What the login route reads of a request's head besides the body: cookies, and whether
/// the request came over TLS.
struct RequestHead {
    headers: HeaderMap,
    uri: Uri,
    /// Whether the connection is authd's own TLS.
    direct_tls: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestHead {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let direct_tls = parts.extensions.get::<TlsConnection>().is_some();
        Ok(Self { headers: parts.headers.clone(), uri: parts.uri.clone(), direct_tls })
    }
}

impl RequestHead {
    /// The values of every cookie called `name`, in the order sent, the first
    /// [`DEVICE_CANDIDATES`] of them.
    fn cookies(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| value.trim().to_owned())
            .take(DEVICE_CANDIDATES)
            .collect()
    }

    /// Over TLS: authd's own, or as far as the request tells, HTTP/2's `:scheme` or the
    /// proxy in front (a client claiming it only makes its own cookie stricter).
    fn over_tls(&self) -> bool {
        if self.direct_tls {
            return true;
        }
        let forwarded_https = |name| {
            self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(|v| {
                v.split([',', ';']).any(|item| {
                    let item = item.trim().to_ascii_lowercase();
                    item == "https" || item == "proto=https"
                })
            })
        };
        self.uri.scheme_str() == Some("https") || forwarded_https("x-forwarded-proto") || forwarded_https("forwarded")
    }
}

/// Revoke a token
///
/// Ends the session of a refresh token (or of an access token), with no other credential, as
/// RFC 7009's revocation endpoint does: a form or JSON `token`, and an optional `token_type_hint`
/// (ignored). An unknown, invalid or already revoked token gets the same 200. Limited per client
/// address as refresh is (429 past it).
#[utoipa::path(post, path = "/api/v1/auth/revoke", tag = "auth",
    request_body(content((RevokeBody = "application/x-www-form-urlencoded"), (RevokeBody = "application/json"))),
    responses((status = 200, description = "The token's session, if any, has ended", body = Message),
        BodyRejected, Overloaded, ServerFailed))]
async fn revoke_token(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<Message> {
    let (body, bad_fields) = if body.is_form() { body.form::<RevokeBody>()? } else { body.json::<RevokeBody>()? };
    bad_fields.finish(Ok(()))?;
    authd.revoke_token(&body.token, &client).await?;
    Ok(Json(Message { message: "Token revoked." }))
}

/// Refresh the tokens
///
/// Exchanges a refresh token for a new access token and a new refresh token (single use; a retry
/// within the grace window gets the same pair, a later replay ends the session). With
/// `REQUIRE_EMAIL_VERIFICATION`, an unverified user's refresh is refused (403 `email_not_verified`).
#[utoipa::path(post, path = "/api/v1/auth/refresh-token", tag = "auth", request_body = RefreshBody,
    responses((status = 200, description = "A new access token and a new refresh token", body = SignedIn),
        RefreshRejected, EmailNotVerified, BodyRejected, Overloaded, ServerFailed))]
async fn refresh_token(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<SignedIn> {
    let (body, bad_fields) = body.json::<RefreshBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::RefreshTokenRequest { refresh_token: body.token };
    let signed_in =
        authd.refresh(&request, &client).await.map_err(|e| rename_fields(e, &[("refresh_token", "token")]))?;
    Ok(Json(SignedIn::new("Login successful.", signed_in)))
}

/// The caller as far as the request tells: its client address (the peer's, or behind a
/// trusted proxy the client's) and user agent.
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let certificate = parts.extensions.get::<TlsConnection>().and_then(|tls| tls.client.clone());
        Ok(ClientInfo::new(
            ClientAddr::of(&parts.extensions),
            parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        )
        .with_certificate(certificate))
    }
}

/// The signed-in caller of a bearer route. As an extractor it runs before the body's, so
/// that a request without a good token is a 401 whatever its body, as for `/me`.
impl FromRequestParts<Authd> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, authd: &Authd) -> Result<Self, Error> {
        let Ok(client) = ClientInfo::from_request_parts(parts, authd).await;
        authd.authenticate(parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), client).await
    }
}

/// Get my profile
///
/// The caller's profile.
#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    responses((status = 200, description = "The caller's profile", body = Profile), Unauthenticated, ServerFailed))]
async fn me(State(authd): State<Authd>, caller: Caller) -> Reply<Profile> {
    Ok(Json(authd.me(&caller).into()))
}

/// Update my profile
///
/// Changes name, location or about; fields left out stay as they are, `"about": null` clears it.
/// Each given field is checked as at registration.
#[utoipa::path(patch, path = "/api/v1/me", tag = "users", request_body = UpdateMeBody,
    responses((status = 200, description = "The updated profile", body = Profile),
        Unauthenticated, BodyRejected, ServerFailed))]
async fn update_me(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<Profile> {
    let (body, bad_fields) = body.json::<UpdateMeBody>()?;
    let (about, clear_about) = match body.about {
        Patch::Keep => (None, false),
        Patch::Clear => (None, true),
        Patch::Set(about) => (Some(about), false),
    };
    let request = pb::UpdateMeRequest { name: body.name, location: body.location, about, clear_about };
    bad_fields.finish(authd.validate_update(&request))?;
    Ok(Json(authd.update_me(&caller, &request).await?.into()))
}

/// Change my password
///
/// Replaces the password, given the current one (a wrong one is a 422 naming `current_password`),
/// and ends every session of the user, the caller's too: the answer carries the tokens of a new
/// session. Every known device of the user is forgotten but the one this session logged in with
/// (if still known), which keeps its device token: none is handed out. Wrong current passwords
/// count with the account's failed logins (429 past them). With `REQUIRE_EMAIL_VERIFICATION`, an
/// unverified user's change is refused (403 `email_not_verified`): it would start a session.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "users", request_body = ChangePasswordBody,
    responses((status = 200, description = "Changed; every session ended, and a new one started", body = PasswordChanged),
        Unauthenticated, EmailNotVerified, BodyRejected, Overloaded, ServerFailed))]
async fn change_password(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<PasswordChanged> {
    let (body, bad_fields) = body.json::<ChangePasswordBody>()?;
    let request =
        pb::ChangePasswordRequest { current_password: body.current_password, new_password: body.new_password };
    bad_fields.finish_screened(|| authd.screen_password_change(&caller, &request))?;
    let tokens = authd.change_password(&caller, &request).await?;
    Ok(Json(PasswordChanged {
        message: "Password changed successfully.",
        sessions_ended: tokens.sessions_ended,
        user_token: tokens.signed_in.tokens.into(),
    }))
}

/// Delete my account
///
/// Deletes the account and every session of it, given its password: its tokens stop working at once
/// and the email can be registered again. A wrong password is a 422 naming `password`.
#[utoipa::path(delete, path = "/api/v1/me", tag = "users", request_body = DeleteMeBody,
    responses((status = 200, description = "Deleted, with every session", body = Message),
        Unauthenticated, BodyRejected, Overloaded, ServerFailed))]
async fn delete_me(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<Message> {
    let (body, bad_fields) = body.json::<DeleteMeBody>()?;
    let request = pb::DeleteMeRequest { password: body.password };
    bad_fields.finish(authd.validate_deletion(&request))?;
    authd.delete_me(&caller, &request).await?;
    Ok(Json(Message { message: "Account deleted successfully." }))
}

/// List my sessions
///
/// The caller's live sessions, most recently used first; `current` marks the caller's own.
/// `last_used_at` is the last login or refresh.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "auth",
    responses((status = 200, description = "The caller's live sessions, most recently used first", body = Sessions),
        Unauthenticated, ServerFailed))]
async fn list_sessions(State(authd): State<Authd>, caller: Caller) -> Reply<Sessions> {
    Ok(Json(authd.list_sessions(&caller).await?.into()))
}

/// One event on the caller's account.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ActivityView {
    #[schema(format = DateTime)]
    occurred_at: String,
    /// Such as `login`, `password_change`, `session_revoked`.
    action: String,
    /// `success`, `failure` or `refused`.
    outcome: String,
    /// `user` (the caller), `admin`, `client`, `operator` or `anonymous`.
    actor_kind: String,
    #[schema(required)]
    client_ip: Option<String>,
    #[schema(required)]
    user_agent: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Activity {
    events: Vec<ActivityView>,
    /// Pass as `page_token` for the next page; null on the last.
    #[schema(required)]
    next_page_token: Option<String>,
}

/// My security activity
///
/// The caller's own security activity, newest first, a page at a time (`page_size` 1 to 200,
/// default 50; `page_token`): logins and failed ones, password and email changes, sessions ended,
/// what admins did to the account; as far as the audit trail holds (`AUDIT_RETENTION_DAYS`).
#[utoipa::path(get, path = "/api/v1/me/activity", tag = "users",
    params(("page_size" = Option<i32>, Query, description = "1 to 200 (default 50)"),
        ("page_token" = Option<String>, Query, description = "`next_page_token` of the previous page")),
    responses((status = 200, description = "A page of events, newest first", body = Activity),
        Unauthenticated, BodyRejected, ServerFailed))]
async fn my_activity(
    State(authd): State<Authd>,
    caller: Caller,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Reply<Activity> {
    let query = admin::Query::parse(raw)?;
    let mut v = crate::domain::Violations::default();
    let page_size = query.parsed::<i32>(&mut v, "page_size", "an integer").unwrap_or(0);
    v.finish(|| Some(())).map_err(Error::InvalidInput)?;
    let request = pb::GetMyActivityRequest { page_size, page_token: query.text("page_token") };
    let page = authd.my_activity(&caller, &request).await?;
    let present = |s: String| (!s.is_empty()).then_some(s);
    Ok(Json(Activity {
        events: page
            .events
            .into_iter()
            .map(|e| ActivityView {
                occurred_at: wire::rfc3339(e.occurred_at),
                action: e.action,
                outcome: e.outcome,
                actor_kind: e.actor_kind,
                client_ip: present(e.client_ip),
                user_agent: present(e.user_agent),
            })
            .collect(),
        next_page_token: present(page.next_page_token),
    }))
}

/// End one of my sessions
///
/// Ends one of the caller's sessions. An unknown or ended session, or another user's, is the same
/// 404.
#[utoipa::path(delete, path = "/api/v1/me/sessions/{session_id}", tag = "auth",
    params(("session_id" = String, Path, description = "A session id from the list")),
    responses((status = 200, description = "Ended", body = Message), Unauthenticated, SessionNotFound, ServerFailed))]
async fn revoke_session(
    State(authd): State<Authd>,
    caller: Caller,
    session_id: Result<Path<String>, PathRejection>,
) -> Reply<Message> {
    // A path that does not decode is an unknown session too: the core decides what is one.
    let session_id = session_id.map(|Path(id)| id).unwrap_or_default();
    authd.revoke_session(&caller, &session_id).await?;
    Ok(Json(Message { message: "Session revoked successfully." }))
}

/// Log out
///
/// Ends the caller's session, or every session of the user with `{"all_sessions": true}`, which
/// also forgets every known device of the user but the one this session logged in with (if still
/// known), which keeps its device token: none is handed out. The body may be empty.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = LogoutBody, description = "Optional"),
    responses((status = 200, description = "Ended", body = SessionsEnded), Unauthenticated, BodyRejected, ServerFailed))]
async fn logout(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<SessionsEnded> {
    let (body, bad_fields) = body.json_or_empty::<LogoutBody>()?;
    bad_fields.finish(Ok(()))?;
    let out = authd.logout(&caller, body.all_sessions.unwrap_or(false)).await?;
    Ok(Json(SessionsEnded { message: "Logout successful.", sessions_ended: out.sessions_ended }))
}

/// Validate an access token
///
/// Whether an access token is active right now (RFC 7662 style): an inactive one is `{"active":
/// false}`, not an error.
#[utoipa::path(post, path = "/api/v1/auth/validate", tag = "auth", request_body = ValidateBody,
    responses((status = 200, description = "Whether the access token is active now", body = Validation),
        ClientUnauthenticated, Forbidden, BodyRejected, ServerFailed),
    security(("client_basic" = []), ("client_token" = [])))]
async fn validate(State(authd): State<Authd>, client: ClientInfo, headers: HeaderMap, body: Body) -> Reply<Validation> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (body, bad_fields) = body.json::<ValidateBody>()?;
    // The client is checked first: a caller that may not ask learns nothing of its input.
    let checked = match authd.validate_token(authorization, &client, &body.token).await {
        Err(Error::InvalidInput(violations)) => Err(Error::InvalidInput(violations)),
        Err(refused) => return Err(refused),
        Ok(answer) => Ok(answer),
    };
    bad_fields.finish(Ok(()))?;
    Ok(Json(checked?.into()))
}

/// Forgot my password
///
/// Mails a one-time reset link to the address if it has an account. The answer is the same 200, in
/// the same time, whether it has or not; 429 past the mails allowed per address (counted for every
/// address) or per client.
#[utoipa::path(post, path = "/api/v1/auth/forgot-password", tag = "auth", request_body = ForgotPasswordBody,
    responses((status = 200, description = "If the address has an account, a reset mail is on its way", body = Message),
        BodyRejected, Overloaded, ServerFailed))]
async fn forgot_password(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<Message> {
    let (body, bad_fields) = body.json::<ForgotPasswordBody>()?;
    bad_fields.finish(Ok(()))?;
    authd.request_password_reset(&pb::RequestPasswordResetRequest { email: body.email }, &client).await?;
    Ok(Json(Message { message: "If the address has an account, a reset link is on its way." }))
}

/// Reset my password
///
/// Sets a new password with the token of a reset mail (single use, valid for
/// `PASSWORD_RESET_TOKEN_MINUTES`). Every session ends, known devices are forgotten, and the address
/// counts as verified. A bad, expired or used token is a 422 naming `token`.
#[utoipa::path(post, path = "/api/v1/auth/reset-password", tag = "auth", request_body = ResetPasswordBody,
    responses((status = 200, description = "The password is set; every session ended", body = SessionsEnded),
        BodyRejected, Overloaded, ServerFailed))]
async fn reset_password(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<SessionsEnded> {
    let (body, bad_fields) = body.json::<ResetPasswordBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::ResetPasswordRequest { token: body.token, new_password: body.new_password };
    let ended = authd.reset_password(&request, &client).await?;
    Ok(Json(SessionsEnded {
        message: "Password reset successfully. Log in with the new password.",
        sessions_ended: ended,
    }))
}

/// Verify my email address
///
/// With the `token` of the verification link, or the `email` and the six-digit `code` of the mail.
/// A bad, expired or used token, or a wrong code, is a 422 naming `token` or `code`.
#[utoipa::path(post, path = "/api/v1/verify-email", tag = "users", request_body = VerifyEmailBody,
    responses((status = 200, description = "The address is verified", body = Message),
        BodyRejected, Overloaded, ServerFailed))]
async fn verify_email(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<Message> {
    let (body, bad_fields) = body.json::<VerifyEmailBody>()?;
    let request = pb::VerifyEmailRequest {
        token: body.token.unwrap_or_default(),
        email: body.email.unwrap_or_default(),
        code: body.code.unwrap_or_default(),
    };
    bad_fields.finish(authd.validate_verification(&request).map(|_| ()))?;
    authd.verify_email(&request, &client).await?;
    Ok(Json(Message { message: "Email verified." }))
}

/// Send the verification mail again
///
/// Mails a new verification link and code if the address has an account not verified yet; the
/// answer is the same either way. 429 past the mails allowed per address or client.
#[utoipa::path(post, path = "/api/v1/verify-email/resend", tag = "users", request_body = ResendVerificationBody,
    responses((status = 200, description = "If the address awaits verification, a mail is on its way", body = Message),
        BodyRejected, Overloaded, ServerFailed))]
async fn resend_verification(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<Message> {
    let (body, bad_fields) = body.json::<ResendVerificationBody>()?;
    bad_fields.finish(Ok(()))?;
    authd.resend_verification(&pb::ResendVerificationEmailRequest { email: body.email }, &client).await?;
    Ok(Json(Message { message: "If the address awaits verification, a mail is on its way." }))
}

/// Change my email address
///
/// Given the current password (a wrong one is a 422 naming `current_password`), mails a confirmation
/// link to the new address and a notice to the current one. Nothing changes until the link is used.
/// An address that already has an account gets a warning in place of the link, with the same answer
/// and the same notice. 429 past `MAIL_PER_ADDRESS_HOURLY` changes an hour per account or per new
/// address, or past the per-client limit of mail-sending calls.
#[utoipa::path(post, path = "/api/v1/me/email", tag = "users", request_body = ChangeEmailBody,
    responses((status = 200, description = "A confirmation mail is on its way to the new address", body = Message),
        Unauthenticated, BodyRejected, Overloaded, ServerFailed))]
async fn change_email(State(authd): State<Authd>, caller: Caller, body: Body) -> Reply<Message> {
    let (body, bad_fields) = body.json::<ChangeEmailBody>()?;
    let request = pb::ChangeEmailRequest { new_email: body.new_email, current_password: body.current_password };
    bad_fields.finish(authd.validate_email_change(&caller, &request))?;
    authd.change_email(&caller, &request).await?;
    Ok(Json(Message { message: "Check the new address for a confirmation link." }))
}

/// Confirm an email change
///
/// With the token of the confirmation mail: the new address becomes the account's (verified), and
/// every session but the one that asked for the change ends. A bad, expired or used token is a 422
/// naming `token`; an address taken meanwhile, a 400.
#[utoipa::path(post, path = "/api/v1/confirm-email-change", tag = "users", request_body = ConfirmEmailChangeBody,
    responses((status = 200, description = "The address is changed", body = SessionsEnded),
        BodyRejected, Overloaded, ServerFailed))]
async fn confirm_email_change(State(authd): State<Authd>, client: ClientInfo, body: Body) -> Reply<SessionsEnded> {
    let (body, bad_fields) = body.json::<ConfirmEmailChangeBody>()?;
    bad_fields.finish(Ok(()))?;
    let ended = authd.confirm_email_change(&pb::ConfirmEmailChangeRequest { token: body.token }, &client).await?;
    Ok(Json(SessionsEnded { message: "Email changed.", sessions_ended: ended }))
}

/// Public signing keys
///
/// The JWKS that verifies access tokens (empty with HMAC signing).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "The public keys that verify access tokens", body = Jwks)))]
async fn jwks(State(authd): State<Authd>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(Jwks { keys: authd.jwks() }))
}

/// Authorization server metadata
///
/// RFC 8414: the issuer, the JWKS, the token (login), introspection and revocation
/// endpoints under `PUBLIC_URL`, and the algorithm that signs access tokens.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "operations",
    responses((status = 200, description = "The metadata", body = wire::ServerMetadata)))]
async fn server_metadata(State(authd): State<Authd>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(wire::ServerMetadata::from(authd.server_metadata())))
}

/// Prometheus metrics
///
/// Request counts and latencies per route and RPC, login outcomes, refresh reuse detections,
/// database pool connections.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 503, description = "Metrics not available", body = ErrorBody)))]
async fn metrics_text(State(authd): State<Authd>) -> Response {
    match crate::metrics::render(authd.pool_usage(), authd.change_feed_up(), authd.cache_sizes()) {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        None => error_body(StatusCode::SERVICE_UNAVAILABLE, "Metrics are not available."),
    }
}

/// Liveness
///
/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness
///
/// Whether the database answered the last health check (every `HEALTH_CHECK_INTERVAL_MS`); asking
/// costs the database nothing. `change_feed` says whether this process hears the session
/// changes other processes announce (`up`); while it is `down`, token checks ask the
/// database instead of the session cache, so the process stays ready.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The database answers", body = Readiness),
        (status = 503, description = "The database does not answer", body = Readiness)))]
async fn ready(State(authd): State<Authd>) -> (StatusCode, Json<Readiness>) {
    let change_feed = if authd.change_feed_up() { "up" } else { "down" };
    if authd.ready() {
        (StatusCode::OK, Json(Readiness { status: "ready", change_feed }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "unavailable", change_feed }))
    }
}

/// Names fields in violations as this route's callers sent them, where that differs
/// from the proto field name.
fn rename_fields(error: Error, renamed: &[(&str, &str)]) -> Error {
    match error {
        Error::InvalidInput(violations) => Error::InvalidInput(rename(violations, renamed)),
        other => other,
    }
}

fn rename(mut violations: Vec<FieldViolation>, renamed: &[(&str, &str)]) -> Vec<FieldViolation> {
    for v in &mut violations {
        if let Some((_, to)) = renamed.iter().find(|(from, _)| *from == v.field) {
            v.field = (*to).to_owned();
        }
    }
    violations
}

use self::error::method_not_allowed;
pub use self::error::{error_body, not_found};
