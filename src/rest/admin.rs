//! The admin API's REST routes, under `/api/v1/admin`: thin adapters over the core's admin
//! use cases, each declared once for the router and the OpenAPI document.

use axum::{
    Json,
    extract::{FromRequestParts, Path, RawQuery, State, rejection::PathRejection},
    http::{StatusCode, header, request::Parts},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    Reply,
    body::{Body, Patch},
    error::{BodyRejected, ClientNotFound, Forbidden, ServerFailed, Unauthenticated, UserNotFound},
    wire::{Message, SessionView, Sessions, SessionsEnded, rfc3339},
};
use crate::{
    core::{Admin, Authd, ClientInfo, Error},
    domain::Violations,
    pb,
};

pub fn routes(router: OpenApiRouter<Authd>) -> OpenApiRouter<Authd> {
    router
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(revoke_user_sessions))
        .routes(routes!(set_user_roles))
        .routes(routes!(list_audit_events))
        .routes(routes!(list_clients, create_client))
        .routes(routes!(rotate_client_secret))
        .routes(routes!(delete_client))
}

/// The caller of an admin route: runs before the body's extractor, so that a caller who may
/// not call is refused whatever the body.
impl FromRequestParts<Authd> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, authd: &Authd) -> Result<Self, Error> {
        let Ok(client) = ClientInfo::from_request_parts(parts, authd).await;
        authd.authorize_admin(parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), client).await
    }
}

/// A user id from the path: a positive integer, or a 422 naming `user_id`.
fn user_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, Error> {
    match path {
        Ok(Path(id)) if id > 0 => Ok(id),
        _ => Err(Error::invalid("user_id", "must be a positive integer")),
    }
}

/// The query string's parameters, each given at most once.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<String>) -> Result<Self, Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|_| Error::invalid("query", "is not a valid query string"))?;
        for (i, (key, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(seen, _)| seen == key) {
                return Err(Error::invalid(key, "must be given once"));
            }
        }
        Ok(Self(pairs))
    }

    pub(super) fn text(&self, name: &str) -> String {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    pub(super) fn parsed<T: std::str::FromStr>(&self, v: &mut Violations, name: &str, what: &str) -> Option<T> {
        let text = self.text(name);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        v.check(name, text.parse().map_err(|_| format!("must be {what}")))
    }

    fn time(&self, v: &mut Violations, name: &str) -> Option<prost_types::Timestamp> {
        self.parsed::<chrono::DateTime<chrono::FixedOffset>>(v, name, "an RFC 3339 time")
            .map(|t| prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
    }
}

#[derive(Serialize, ToSchema)]
pub struct AdminUserView {
    user_id: i64,
    name: String,
    email: String,
    #[schema(required)]
    about: Option<String>,
    location: String,
    email_verified: bool,
    #[schema(format = DateTime)]
    created_at: String,
    disabled: bool,
    #[schema(format = DateTime, required)]
    disabled_at: Option<String>,
    roles: Vec<String>,
}

impl From<pb::AdminUser> for AdminUserView {
    fn from(u: pb::AdminUser) -> Self {
        let user = u.user.unwrap_or_default();
        Self {
            user_id: user.user_id,
            name: user.name,
            email: user.email,
            about: user.about,
            location: user.location,
            email_verified: user.email_verified,
            created_at: rfc3339(user.created_at),
            disabled: u.disabled,
            disabled_at: u.disabled_at.map(|t| rfc3339(Some(t))),
            roles: u.roles,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    users: Vec<AdminUserView>,
    /// Pass as `page_token` for the next page; null on the last.
    #[schema(required)]
    next_page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    user: AdminUserView,
    /// Live sessions, most recently used first.
    sessions: Vec<SessionView>,
    /// The last login the audit trail still holds.
    #[schema(format = DateTime, required)]
    last_login_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Roles {
    roles: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    event_id: i64,
    #[schema(format = DateTime)]
    occurred_at: String,
    /// `user`, `admin`, `client`, `operator` or `anonymous`.
    actor_kind: String,
    #[schema(required)]
    actor_id: Option<String>,
    #[schema(required)]
    subject_user_id: Option<i64>,
    action: String,
    /// `success`, `failure` or `refused`.
    outcome: String,
    #[schema(required)]
    client_ip: Option<String>,
    #[schema(required)]
    user_agent: Option<String>,
    #[schema(required)]
    detail: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEventView>,
    #[schema(required)]
    next_page_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateUserBody {
    /// As at registration.
    pub name: String,
    pub email: String,
    pub location: String,
    pub about: Option<String>,
    /// As at registration; absent (or empty): an invitation is mailed, a link to choose
    /// the password, which also verifies the address.
    #[schema(max_length = 128)]
    pub password: Option<String>,
    /// Roles to give at once.
    pub roles: Option<Vec<String>>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUserBody {
    pub name: Option<String>,
    pub location: Option<String>,
    /// `null` clears it.
    #[schema(value_type = Option<String>)]
    pub about: Patch,
}

#[derive(Deserialize, ToSchema)]
pub struct SetRolesBody {
    /// The user's roles from now on (each lowercase letters, digits, `-_.:`).
    pub roles: Vec<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document; `Query` reads it
struct ListUsersParams {
    /// 1 to 200 (default 50).
    page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
    /// Emails starting so, whatever the case.
    email_prefix: Option<String>,
    /// RFC 3339; created at or after.
    created_after: Option<String>,
    /// RFC 3339; created before.
    created_before: Option<String>,
    disabled: Option<bool>,
    verified: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document; `Query` reads it
struct ListAuditParams {
    page_size: Option<i32>,
    page_token: Option<String>,
    /// Events on this user's account.
    user_id: Option<i64>,
    /// Such as `login` or `admin_disable_user`.
    action: Option<String>,
    /// RFC 3339; at or after.
    since: Option<String>,
    /// RFC 3339; before.
    until: Option<String>,
}

/// List users
///
/// Users by id, a page at a time; every filter given must hold.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(ListUsersParams),
    responses((status = 200, description = "A page of users", body = UsersPage),
        Unauthenticated, Forbidden, BodyRejected, ServerFailed))]
async fn list_users(State(authd): State<Authd>, admin: Admin, RawQuery(raw): RawQuery) -> Reply<UsersPage> {
    let query = Query::parse(raw)?;
    let mut v = Violations::default();
    let page_size = query.parsed::<i32>(&mut v, "page_size", "an integer").unwrap_or(0);
    let disabled = query.parsed::<bool>(&mut v, "disabled", "true or false");
    let verified = query.parsed::<bool>(&mut v, "verified", "true or false");
    let created_after = query.time(&mut v, "created_after");
    let created_before = query.time(&mut v, "created_before");
    v.finish(|| Some(())).map_err(Error::InvalidInput)?;
    let request = pb::ListUsersRequest {
        page_size,
        page_token: query.text("page_token"),
        email_prefix: query.text("email_prefix"),
        created_after,
        created_before,
        disabled,
        verified,
    };
    let page = authd.list_users(&admin, &request).await?;
    Ok(Json(UsersPage {
        users: page.users.into_iter().map(Into::into).collect(),
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// Create a user
///
/// Creates an account by registration's rules (a verification mail goes out), with roles if
/// given.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = CreateUserBody,
    responses((status = 201, description = "Created", body = AdminUserView),
        Unauthenticated, Forbidden, BodyRejected, ServerFailed))]
async fn create_user(State(authd): State<Authd>, admin: Admin, body: Body) -> Result<impl IntoResponse, Error> {
    let (body, bad_fields) = body.json::<CreateUserBody>()?;
    let request = pb::CreateUserRequest {
        name: body.name,
        email: body.email,
        location: body.location,
        about: body.about,
        password: body.password.unwrap_or_default(),
        roles: body.roles.unwrap_or_default(),
    };
    bad_fields.finish(authd.validate_user_creation(&request))?;
    let created = authd.create_user(&admin, &request).await?;
    Ok((StatusCode::CREATED, Json(AdminUserView::from(created.user.unwrap_or_default()))))
}

/// Get a user
///
/// One user, with live sessions, roles and last login.
#[utoipa::path(get, path = "/api/v1/admin/users/{user_id}", tag = "admin",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = UserDetail),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn get_user(State(authd): State<Authd>, admin: Admin, id: Result<Path<i64>, PathRejection>) -> Reply<UserDetail> {
    let found = authd.get_user(&admin, user_id(id)?).await?;
    Ok(Json(UserDetail {
        user: found.user.unwrap_or_default().into(),
        sessions: Sessions::from(found.sessions).sessions,
        last_login_at: found.last_login_at.map(|t| rfc3339(Some(t))),
    }))
}

/// Update a user's profile
///
/// Changes name, location or about; fields left out stay, `"about": null` clears it.
#[utoipa::path(patch, path = "/api/v1/admin/users/{user_id}", tag = "admin", request_body = UpdateUserBody,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "The updated user", body = AdminUserView),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn update_user(
    State(authd): State<Authd>,
    admin: Admin,
    id: Result<Path<i64>, PathRejection>,
    body: Body,
) -> Reply<AdminUserView> {
    let user_id = user_id(id)?;
    let (body, bad_fields) = body.json::<UpdateUserBody>()?;
    let (about, clear_about) = match body.about {
        Patch::Keep => (None, false),
        Patch::Clear => (None, true),
        Patch::Set(about) => (Some(about), false),
    };
    let request = pb::UpdateUserRequest { user_id, name: body.name, location: body.location, about, clear_about };
    bad_fields.finish(authd.validate_user_update(&request))?;
    let updated = authd.update_user(&admin, &request).await?;
    Ok(Json(updated.user.unwrap_or_default().into()))
}

/// Delete a user
///
/// Deletes the account with every session; its tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}", tag = "admin",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "Deleted", body = Message),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn delete_user(State(authd): State<Authd>, admin: Admin, id: Result<Path<i64>, PathRejection>) -> Reply<Message> {
    authd.delete_user(&admin, user_id(id)?).await?;
    Ok(Json(Message { message: "User deleted." }))
}

/// Disable a user
///
/// The account cannot log in, and every session and token of it stops at once, on every replica.
#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/disable", tag = "admin",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "Disabled", body = SessionsEnded),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn disable_user(
    State(authd): State<Authd>,
    admin: Admin,
    id: Result<Path<i64>, PathRejection>,
) -> Reply<SessionsEnded> {
    let ended = authd.disable_user(&admin, user_id(id)?).await?;
    Ok(Json(SessionsEnded { message: "User disabled.", sessions_ended: ended }))
}

/// Enable a user
///
/// A disabled account may log in again; its old sessions stay ended.
#[utoipa::path(post, path = "/api/v1/admin/users/{user_id}/enable", tag = "admin",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "Enabled", body = Message),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn enable_user(State(authd): State<Authd>, admin: Admin, id: Result<Path<i64>, PathRejection>) -> Reply<Message> {
    authd.enable_user(&admin, user_id(id)?).await?;
    Ok(Json(Message { message: "User enabled." }))
}

/// End a user's sessions
///
/// Ends every session of the user; their tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/admin/users/{user_id}/sessions", tag = "admin",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "Ended", body = SessionsEnded),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn revoke_user_sessions(
    State(authd): State<Authd>,
    admin: Admin,
    id: Result<Path<i64>, PathRejection>,
) -> Reply<SessionsEnded> {
    let ended = authd.revoke_user_sessions(&admin, user_id(id)?).await?;
    Ok(Json(SessionsEnded { message: "Sessions ended.", sessions_ended: ended }))
}

/// Set a user's roles
///
/// Replaces the user's roles; the user's next token (a refresh) carries them.
#[utoipa::path(put, path = "/api/v1/admin/users/{user_id}/roles", tag = "admin", request_body = SetRolesBody,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses((status = 200, description = "The user's roles now", body = Roles),
        Unauthenticated, Forbidden, UserNotFound, BodyRejected, ServerFailed))]
async fn set_user_roles(
    State(authd): State<Authd>,
    admin: Admin,
    id: Result<Path<i64>, PathRejection>,
    body: Body,
) -> Reply<Roles> {
    let user_id = user_id(id)?;
    let (body, bad_fields) = body.json::<SetRolesBody>()?;
    bad_fields.finish(Ok(()))?;
    let roles = authd.set_user_roles(&admin, user_id, &body.roles).await?;
    Ok(Json(Roles { roles }))
}

/// List audit events
///
/// The audit trail, newest first, a page at a time; every filter given must hold.
#[utoipa::path(get, path = "/api/v1/admin/audit-events", tag = "admin", params(ListAuditParams),
    responses((status = 200, description = "A page of events", body = AuditPage),
        Unauthenticated, Forbidden, BodyRejected, ServerFailed))]
async fn list_audit_events(State(authd): State<Authd>, admin: Admin, RawQuery(raw): RawQuery) -> Reply<AuditPage> {
    let query = Query::parse(raw)?;
    let mut v = Violations::default();
    let page_size = query.parsed::<i32>(&mut v, "page_size", "an integer").unwrap_or(0);
    let user_id = query.parsed::<i64>(&mut v, "user_id", "a user id").unwrap_or(0);
    let since = query.time(&mut v, "since");
    let until = query.time(&mut v, "until");
    v.finish(|| Some(())).map_err(Error::InvalidInput)?;
    let request = pb::ListAuditEventsRequest {
        page_size,
        page_token: query.text("page_token"),
        user_id,
        action: query.text("action"),
        since,
        until,
    };
    let page = authd.list_audit_events(&admin, &request).await?;
    let present = |s: String| (!s.is_empty()).then_some(s);
    Ok(Json(AuditPage {
        events: page
            .events
            .into_iter()
            .map(|e| AuditEventView {
                event_id: e.event_id,
                occurred_at: rfc3339(e.occurred_at),
                actor_kind: e.actor_kind,
                actor_id: present(e.actor_id),
                subject_user_id: (e.subject_user_id != 0).then_some(e.subject_user_id),
                action: e.action,
                outcome: e.outcome,
                client_ip: present(e.client_ip),
                user_agent: present(e.user_agent),
                detail: present(e.detail),
            })
            .collect(),
        next_page_token: present(page.next_page_token),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ClientView {
    client_id: String,
    name: String,
    scopes: Vec<String>,
    /// The client certificate identity that authenticates as this client.
    #[schema(required)]
    certificate: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime, required)]
    rotated_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Clients {
    clients: Vec<ClientView>,
}

/// A client's id and secret: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct ClientSecret {
    client_id: String,
    client_secret: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateClientBody {
    /// 1 to 100 characters.
    pub name: String,
    /// `introspect`, `revocations`, `admin`; at least one.
    pub scopes: Vec<String>,
    /// A client certificate identity (its common name, else first alternative name).
    pub certificate: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document; `Query` reads it
struct RotateParams {
    /// How long the old secret keeps working (default `CLIENT_SECRET_GRACE_SECONDS`).
    grace_seconds: Option<i64>,
}

/// List service clients
///
/// The service clients, oldest first (never their secrets).
#[utoipa::path(get, path = "/api/v1/admin/clients", tag = "admin",
    responses((status = 200, description = "The clients", body = Clients), Unauthenticated, Forbidden, ServerFailed))]
async fn list_clients(State(authd): State<Authd>, admin: Admin) -> Reply<Clients> {
    let listed = authd.list_clients(&admin).await?;
    let present = |s: String| (!s.is_empty()).then_some(s);
    Ok(Json(Clients {
        clients: listed
            .clients
            .into_iter()
            .map(|c| ClientView {
                client_id: c.client_id,
                name: c.name,
                scopes: c.scopes,
                certificate: present(c.certificate),
                created_at: rfc3339(c.created_at),
                rotated_at: c.rotated_at.map(|t| rfc3339(Some(t))),
            })
            .collect(),
    }))
}

/// Create a service client
///
/// A new service client with scopes; the answer holds its secret, shown this once.
#[utoipa::path(post, path = "/api/v1/admin/clients", tag = "admin", request_body = CreateClientBody,
    responses((status = 201, description = "Created", body = ClientSecret),
        Unauthenticated, Forbidden, BodyRejected, ServerFailed))]
async fn create_client(State(authd): State<Authd>, admin: Admin, body: Body) -> Result<impl IntoResponse, Error> {
    let (body, bad_fields) = body.json::<CreateClientBody>()?;
    bad_fields.finish(Ok(()))?;
    let request = pb::CreateClientRequest {
        name: body.name,
        scopes: body.scopes,
        certificate: body.certificate.unwrap_or_default(),
    };
    let created = authd.create_client(&admin, &request).await?;
    Ok((StatusCode::CREATED, Json(ClientSecret { client_id: created.client_id, client_secret: created.client_secret })))
}

/// Rotate a client's secret
///
/// A new secret, shown this once; the old one keeps working for `grace_seconds`.
#[utoipa::path(post, path = "/api/v1/admin/clients/{client_id}/rotate", tag = "admin",
    params(("client_id" = String, Path, description = "The client's id"), RotateParams),
    responses((status = 200, description = "The new secret", body = ClientSecret),
        Unauthenticated, Forbidden, ClientNotFound, BodyRejected, ServerFailed))]
async fn rotate_client_secret(
    State(authd): State<Authd>,
    admin: Admin,
    Path(client_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Reply<ClientSecret> {
    let query = Query::parse(raw)?;
    let mut v = Violations::default();
    let grace_seconds = query.parsed::<i64>(&mut v, "grace_seconds", "a number of seconds");
    v.finish(|| Some(())).map_err(Error::InvalidInput)?;
    let request = pb::RotateClientSecretRequest { client_id, grace_seconds };
    let rotated = authd.rotate_client_secret(&admin, &request).await?;
    Ok(Json(ClientSecret { client_id: rotated.client_id, client_secret: rotated.client_secret }))
}

/// Delete a service client
///
/// Its secrets and service tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/admin/clients/{client_id}", tag = "admin",
    params(("client_id" = String, Path, description = "The client's id")),
    responses((status = 200, description = "Deleted", body = Message),
        Unauthenticated, Forbidden, ClientNotFound, ServerFailed))]
async fn delete_client(State(authd): State<Authd>, admin: Admin, Path(client_id): Path<String>) -> Reply<Message> {
    authd.delete_client(&admin, &client_id).await?;
    Ok(Json(Message { message: "Client deleted." }))
}
