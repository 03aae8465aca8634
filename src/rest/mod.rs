//! The REST shim: the old FastAPI app's routes and JSON dialect, over the same core.

mod body;
mod error;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
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
        .route("/api/v1/me", get(me))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .with_state(authd)
}

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
    let renamed = if fields.is_form() { [("email", "username")].as_slice() } else { &[] };
    fields.finish(authd.validate_login(&request).map_err(|v| rename(v, renamed)))?;
    let signed_in = authd.login(&request, &client_info(peer, &headers)).await.map_err(|e| rename_fields(e, renamed))?;
    Ok(Json(signed_in_body("Login successful.", signed_in)))
}

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

async fn me(State(authd): State<Authd>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let user = authd.me(authorization(&headers)).await?;
    Ok(Json(json!({
        "user_id": user.user_id,
        "name": user.name,
        "email": user.email,
        "about": user.about,
        "location": user.location,
    })))
}

/// `Authorization: Bearer <access>`; an optional body `{"all_sessions": true}`.
async fn logout(State(authd): State<Authd>, headers: HeaderMap, body: RequestBody) -> Result<Json<Value>, Error> {
    let mut fields = body.json_or_empty()?;
    let all_sessions = fields.optional_bool("all_sessions").unwrap_or(false);
    fields.finish(Ok(()))?;
    let ended = authd.logout(authorization(&headers), all_sessions).await?;
    Ok(Json(json!({"message": "Logout successful.", "sessions_ended": ended})))
}

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

async fn jwks(State(authd): State<Authd>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(json!({ "keys": authd.jwks() })))
}

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
