//! The REST shim: the old FastAPI app's routes and JSON dialect, over the same core.

mod body;
mod error;
pub mod openapi;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde_json::{Value, json};

use self::body::RequestBody;
use crate::{
    core::{Authd, ClientInfo, Error, SignedIn},
    domain::FieldViolation,
    pb,
};

pub fn router(authd: Authd) -> Router {
    Router::new()
        .route("/api/v1/register-user", post(register_user))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh-token", post(refresh_token))
        .route("/api/v1/me", get(me).patch(update_me).delete(delete_me))
        .route("/api/v1/me/password", post(change_password))
        .route("/api/v1/me/sessions", get(list_sessions))
        .route("/api/v1/me/sessions/{session_id}", delete(revoke_session))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(authd)
}

#[utoipa::path(post, path = "/api/v1/register-user", summary = "Register a user",
    description = "Creates an account. Surrounding whitespace is trimmed from every field but the password; the email is compared case-insensitively.",
    tag = "users",
    request_body = openapi::RegisterUserBody,
    responses(
        (status = 201, description = "Created", body = openapi::Message),
        (status = 400, description = "Email already registered", body = openapi::EmailTaken),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 429, description = "Too many password checks waiting", body = openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
async fn register_user(
    State(authd): State<Authd>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<impl IntoResponse, Error> {
    let mut fields = body.json()?;
    let request = pb::RegisterUserRequest {
        name: fields.string("name"),
        email: fields.string("email"),
        location: fields.string("location"),
        about: fields.optional_string("about"),
        password: fields.string("password"),
    };
    fields.finish(authd.validate_registration(&request))?;
    authd.register(&request, &client_info(peer, &headers)).await?;
    Ok((StatusCode::CREATED, Json(json!({"message": "User created successfully."}))))
}

#[utoipa::path(post, path = "/api/v1/auth/login", summary = "Log in",
    description = "Checks the credentials and starts a session. Takes JSON `{email, password}` or the OAuth2 password form (`username` is the email), which Swagger UI's Authorize button uses; the form's answer also carries `access_token` and `token_type` at the top level. A wrong password and an unknown email fail alike.",
    tag = "auth",
    request_body(content(
        (openapi::LoginBody = "application/json"),
        (openapi::LoginForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in: a new session", body = openapi::SignedIn),
        (status = 401, description = "Wrong email or password, alike", body = openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 429, description = "Too many password checks waiting", body = openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// JSON `{"email", "password"}`, or the OAuth2 password form (`username`, `password`).
async fn login(
    State(authd): State<Authd>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<Json<Value>, Error> {
    let (request, fields) = if body.is_form() {
        let mut fields = body.form()?;
        let request = pb::LoginRequest { email: fields.string("username"), password: fields.string("password") };
        (request, fields)
    } else {
        let mut fields = body.json()?;
        let request = pb::LoginRequest { email: fields.string("email"), password: fields.string("password") };
        (request, fields)
    };
    let fields_were_form = fields.is_form();
    let renamed = if fields.is_form() { [("email", "username")].as_slice() } else { &[] };
    fields.finish(authd.validate_login(&request).map_err(|v| rename(v, renamed)))?;
    let signed_in = authd.login(&request, &client_info(peer, &headers)).await.map_err(|e| rename_fields(e, renamed))?;
    let mut body = signed_in_body("Login successful.", signed_in);
    if fields_were_form {
        oauth2_token_response(&mut body);
    }
    Ok(Json(body))
}

/// An OAuth2 client (such as Swagger UI's Authorize button) reads RFC 6749's token
/// response members at the top level: add them beside the old app's shape.
fn oauth2_token_response(body: &mut Value) {
    let token = body["data"]["user_token"].clone();
    if let Value::Object(object) = body {
        object.insert("access_token".into(), token["token"].clone());
        object.insert("token_type".into(), token["tokenType"].clone());
        object.insert("refresh_token".into(), token["refreshToken"].clone());
        object.insert("expires_in".into(), token["expiresIn"].clone());
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh-token", summary = "Refresh the tokens",
    description = "Exchanges a refresh token for a new access token and a new refresh token (single use; a retry within the grace window gets the same pair, a later replay ends the session).",
    tag = "auth",
    request_body = openapi::RefreshBody,
    responses(
        (status = 200, description = "A new access token and a new refresh token", body = openapi::SignedIn),
        (status = 401, description = "A bad, expired, ended or reused refresh token", body = openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `{"token": "<refresh token>", "tokenType": "Bearer"}`; the old app's field names.
async fn refresh_token(
    State(authd): State<Authd>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<Json<Value>, Error> {
    let mut fields = body.json()?;
    let request = pb::RefreshTokenRequest { refresh_token: fields.string("token") };
    if let Some(token_type) = fields.optional_string("tokenType")
        && !token_type.eq_ignore_ascii_case("bearer")
    {
        fields.violation("tokenType", "must be Bearer");
    }
    fields.finish(Ok(()))?;
    let signed_in = authd
        .refresh(&request, &client_info(peer, &headers))
        .await
        .map_err(|e| rename_fields(e, &[("refresh_token", "token")]))?;
    Ok(Json(signed_in_body("Token refreshed successfully.", signed_in)))
}

/// The peer address of the connection (proxies' `X-Forwarded-For` is not trusted).
fn client_info(peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
    ClientInfo::new(Some(peer.ip()), headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

#[utoipa::path(get, path = "/api/v1/me", summary = "Get my profile",
    description = "The caller's profile.",
    tag = "users",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = openapi::Profile),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
async fn me(State(authd): State<Authd>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let user = authd.me(authorization(&headers)).await?;
    Ok(Json(profile_body(&user)))
}

fn profile_body(user: &pb::User) -> Value {
    json!({
        "user_id": user.user_id,
        "name": user.name,
        "email": user.email,
        "about": user.about,
        "location": user.location,
    })
}

#[utoipa::path(patch, path = "/api/v1/me", summary = "Update my profile",
    description = "Changes name, location or about; fields left out stay as they are, `\"about\": null` (or `\"\"`) clears it. Each given field is checked as at registration.",
    tag = "users",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = openapi::UpdateMeBody,
    responses(
        (status = 200, description = "The updated profile", body = openapi::Profile),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `{"name"?, "location"?, "about"?}`: fields left out stay; `"about": null` clears it.
async fn update_me(State(authd): State<Authd>, headers: HeaderMap, body: RequestBody) -> Result<Json<Value>, Error> {
    let mut fields = body.json()?;
    let request = pb::UpdateMeRequest {
        name: fields.optional_string("name"),
        location: fields.optional_string("location"),
        about: fields.clearable_string("about"),
    };
    fields.finish(authd.validate_update(&request))?;
    let user = authd.update_me(authorization(&headers), &request).await?;
    Ok(Json(profile_body(&user)))
}

#[utoipa::path(post, path = "/api/v1/me/password", summary = "Change my password",
    description = "Replaces the password, given the current one (a wrong one is a 422 naming `current_password`), and ends every other session of the user; the caller's stays.",
    tag = "users",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = openapi::ChangePasswordBody,
    responses(
        (status = 200, description = "Changed; the user's other sessions ended", body = openapi::PasswordChanged),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 429, description = "Too many password checks waiting", body = openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `{"current_password", "new_password"}`; ends the user's other sessions.
async fn change_password(
    State(authd): State<Authd>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<Json<Value>, Error> {
    let mut fields = body.json()?;
    let request = pb::ChangePasswordRequest {
        current_password: fields.string("current_password"),
        new_password: fields.string("new_password"),
    };
    fields.finish(authd.validate_password_change(&request))?;
    let ended = authd.change_password(authorization(&headers), &request).await?;
    Ok(Json(json!({"message": "Password changed successfully.", "sessions_ended": ended})))
}

#[utoipa::path(delete, path = "/api/v1/me", summary = "Delete my account",
    description = "Deletes the account and every session of it, given its password: its tokens stop working at once and the email can be registered again. A wrong password is a 422 naming `password`.",
    tag = "users",
    security(("bearer" = []), ("oauth2" = [])),
    request_body = openapi::DeleteMeBody,
    responses(
        (status = 200, description = "Deleted, with every session", body = openapi::Message),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 429, description = "Too many password checks waiting", body = openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `{"password"}`: deletes the account and every session of it.
async fn delete_me(State(authd): State<Authd>, headers: HeaderMap, body: RequestBody) -> Result<Json<Value>, Error> {
    let mut fields = body.json()?;
    let request = pb::DeleteMeRequest { password: fields.string("password") };
    fields.finish(authd.validate_deletion(&request))?;
    authd.delete_me(authorization(&headers), &request).await?;
    Ok(Json(json!({"message": "Account deleted successfully."})))
}

#[utoipa::path(get, path = "/api/v1/me/sessions", summary = "List my sessions",
    description = "The caller's live sessions, most recently used first; `current` marks the caller's own. `last_used_at` is the last login or refresh.",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The caller's live sessions, most recently used first", body = openapi::Sessions),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
async fn list_sessions(State(authd): State<Authd>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let sessions = authd.list_sessions(authorization(&headers)).await?;
    let rfc3339 = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let present = |s: String| (!s.is_empty()).then_some(s);
    let list = sessions
        .into_iter()
        .map(|s| {
            json!({
                "session_id": s.session_id,
                "created_at": rfc3339(&s.created_at),
                "last_used_at": rfc3339(&s.last_used_at),
                "expires_at": rfc3339(&s.expires_at),
                "user_agent": present(s.user_agent),
                "ip": present(s.ip),
                "current": s.current,
            })
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({ "sessions": list })))
}

#[utoipa::path(delete, path = "/api/v1/me/sessions/{session_id}", summary = "End one of my sessions",
    description = "Ends one of the caller's sessions. An unknown or ended session, or another user's, is the same 404.",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    params(("session_id" = String, Path, description = "A session id from the list")),
    responses(
        (status = 200, description = "Ended", body = openapi::Message),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 404, description = "No such live session of the caller's (another user's looks the same)",
            body = openapi::ErrorBody),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// A path that does not decode is an unknown session too: the core decides what is one.
async fn revoke_session(
    State(authd): State<Authd>,
    headers: HeaderMap,
    session_id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Error> {
    let session_id = session_id.map(|Path(id)| id).unwrap_or_default();
    authd.revoke_session(authorization(&headers), &session_id).await?;
    Ok(Json(json!({"message": "Session revoked successfully."})))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", summary = "Log out",
    description = "Ends the caller's session, or every session of the user with `{\"all_sessions\": true}`. The body may be empty.",
    tag = "auth",
    security(("bearer" = []), ("oauth2" = [])),
    request_body(content = openapi::LogoutBody, description = "Optional"),
    responses(
        (status = 200, description = "Ended", body = openapi::LogoutAnswer),
        (status = 401, description = "No token, or a bad, expired or ended one", body = openapi::Detail,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `Authorization: Bearer <access>`; an optional body `{"all_sessions": true}`.
async fn logout(State(authd): State<Authd>, headers: HeaderMap, body: RequestBody) -> Result<Json<Value>, Error> {
    let mut fields = body.json_or_empty()?;
    let all_sessions = fields.optional_bool("all_sessions").unwrap_or(false);
    fields.finish(Ok(()))?;
    let ended = authd.logout(authorization(&headers), all_sessions).await?;
    Ok(Json(json!({"message": "Logout successful.", "sessions_ended": ended})))
}

#[utoipa::path(post, path = "/api/v1/auth/validate", summary = "Validate an access token",
    description = "Whether an access token is active right now (RFC 7662 style): an inactive one is `{\"active\": false}`, not an error.",
    tag = "auth",
    request_body = openapi::ValidateBody,
    responses(
        (status = 200, description = "Whether the access token is active now", body = openapi::Validation),
        (status = 413, description = "Body over 64 KiB", body = openapi::ErrorBody),
        (status = 422, description = "Bad or missing fields, or an unreadable body", body = openapi::FieldErrors),
        (status = 500, description = "Internal error", body = openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = openapi::ErrorBody),
    ))]
/// `{"token": "<access token>"}`: whether it is active right now (RFC 7662).
async fn validate(State(authd): State<Authd>, body: RequestBody) -> Result<Json<Value>, Error> {
    let mut fields = body.json()?;
    let token = fields.string("token");
    fields.finish(Ok(()))?;
    let answer = authd.validate_token(&token).await?;
    Ok(Json(match answer.expires_at {
        Some(expires_at) if answer.active => json!({
            "active": true,
            "user_id": answer.user_id,
            "session_id": answer.session_id,
            "exp": expires_at.seconds,
        }),
        _ => json!({"active": false}),
    }))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", summary = "Public signing keys",
    description = "The JWKS that verifies access tokens (empty with HMAC signing).",
    tag = "operations",
    responses((status = 200, description = "The public keys that verify access tokens", body = openapi::Jwks)))]
async fn jwks(State(authd): State<Authd>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(json!({ "keys": authd.jwks() })))
}

#[utoipa::path(get, path = "/metrics", summary = "Prometheus metrics",
    description = "Request counts and latencies per route and RPC, login outcomes, refresh reuse detections, database pool connections.",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 503, description = "Metrics not available", body = openapi::ErrorBody),
    ))]
/// Prometheus text exposition.
async fn metrics_text(State(authd): State<Authd>) -> Response {
    match crate::metrics::render(authd.pool_usage()) {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        None => error_body(StatusCode::SERVICE_UNAVAILABLE, "Metrics are not available."),
    }
}

#[utoipa::path(get, path = "/healthz", summary = "Liveness",
    description = "The process is up.",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = openapi::Status)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", summary = "Readiness",
    description = "Whether the database answers.",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = openapi::Status),
        (status = 503, description = "The database does not answer", body = openapi::Status),
    ))]
async fn ready(State(authd): State<Authd>) -> impl IntoResponse {
    match authd.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => {
            e.log_if_internal();
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable"})))
        }
    }
}

/// The old app's login body, which refresh answers with too.
fn signed_in_body(message: &str, SignedIn { user, tokens }: SignedIn) -> Value {
    json!({
        "message": message,
        "data": {
            "name": user.name,
            "email": user.email,
            "about": user.about,
            "location": user.location,
            "user_token": {
                "token": tokens.access_token,
                "tokenType": tokens.token_type,
                "refreshToken": tokens.refresh_token,
                "expiresIn": tokens.expires_in,
            },
        },
    })
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

pub use self::error::{error_body, not_found};
