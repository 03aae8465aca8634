//! The admin API's use cases: finding users, changing, disabling and deleting accounts,
//! ending their sessions, setting their roles, and reading the audit trail. Every call is
//! made by an [`Admin`] (see [`Authd::authorize_admin`]) and is an audit event naming it,
//! written before the answer.

use chrono::{DateTime, Utc};

use super::{
    Authd, ClientInfo, Error, Registration, Result,
    audit::{Actor, Event},
    sessions::session_message,
    timestamp, user_message,
};
use crate::{
    domain::{FieldViolation, Role, Violations},
    pb,
    store::{AdminUserRecord, AuditQuery, AuditRecord, ProfileUpdate, SessionChange, UserQuery},
};

/// Page sizes of the lists: the default, and the most.
const PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;

/// A caller allowed into the admin API, and where it called from.
pub struct Admin {
    actor: Actor,
    client: ClientInfo,
}

impl Admin {
    pub fn actor(&self) -> &Actor {
        &self.actor
    }
}

/// Why a caller may not use the admin API (PERMISSION_DENIED, REST 403).
pub const NOT_AN_ADMIN: &str = "The admin API needs a user with the admin role or a client with the admin scope.";

impl Authd {
    /// The caller of an admin call, from its `authorization` value: a service client with
    /// the `admin` scope (Basic, or a service token), or an access token of a user who
    /// holds the `admin` role now (read from the store at each call, so that a
    /// revocation takes effect at once, whatever the token's claim says). No or a bad token:
    /// [`Error::MissingToken`] / [`Error::InvalidToken`]; anyone else:
    /// [`Error::PermissionDenied`], recorded in the audit trail.
    pub async fn authorize_admin(&self, authorization: Option<&str>, client: ClientInfo) -> Result<Admin> {
        if self.is_client_credential(authorization) {
            let service = self.authenticate_client(authorization, &client).await?;
            if !service.has("admin") {
                let actor = Actor::Client(service.client_id.clone());
                return Err(self.admin_refused(actor, "no admin scope", &client).await?);
            }
            return Ok(Admin { actor: Actor::Client(service.client_id), client });
        }
        let caller = self.authenticate(authorization, client).await?;
        let user_id = caller.user.user_id;
        let roles = self.store.user_roles(user_id).await?;
        if !roles.iter().any(|r| r == Role::ADMIN) {
            return Err(self.admin_refused(Actor::User(user_id), "no admin role", &caller.client).await?);
        }
        Ok(Admin { actor: Actor::Admin(user_id), client: caller.client })
    }

    /// Whether an `authorization` value is a client's (Basic, or a service token) rather
    /// than a user's access token.
    fn is_client_credential(&self, authorization: Option<&str>) -> bool {
        let Some(header) = authorization else { return false };
        match super::bearer_token(header) {
            Some(token) => self.access.verify(token).is_none() && self.access.verify_service(token).is_some(),
            None => header.trim().get(..6).is_some_and(|scheme| scheme.eq_ignore_ascii_case("basic ")),
        }
    }

    /// A caller refused by the admin API, logged and audited: the error to answer.
    async fn admin_refused(&self, actor: Actor, why: &'static str, client: &ClientInfo) -> Result<Error> {
        tracing::warn!(target: "authd::security", event = "admin_access", outcome = "refused", actor = ?actor,
            reason = why, "admin API refused");
        let detail = Some(why.to_owned());
        let event = Event { actor, subject: None, action: "admin_access", outcome: "refused", client, detail };
        self.audit.write(event).await?;
        Ok(Error::PermissionDenied(NOT_AN_ADMIN))
    }

    /// Records an admin action, before it is answered.
    async fn admin_did(
        &self,
        admin: &Admin,
        action: &'static str,
        subject: Option<i64>,
        detail: Option<String>,
    ) -> Result<()> {
        tracing::info!(target: "authd::security", event = action, outcome = "success", actor = ?admin.actor,
            subject_user_id = subject, "admin action");
        let event =
            Event { actor: admin.actor.clone(), subject, action, outcome: "success", client: &admin.client, detail };
        self.audit.write(event).await
    }

    pub async fn list_users(&self, admin: &Admin, req: &pb::ListUsersRequest) -> Result<pb::ListUsersResponse> {
        let mut v = Violations::default();
        let limit = v.check("page_size", page_size(req.page_size));
        let after = v.check("page_token", cursor(&req.page_token, 0));
        let prefix = req.email_prefix.trim().to_lowercase();
        if prefix.chars().count() > 254 || prefix.chars().any(char::is_control) {
            v.push(FieldViolation::new("email_prefix", "must be at most 254 characters, without control characters"));
        }
        let created_after = v.check("created_after", time(req.created_after.as_ref()));
        let created_before = v.check("created_before", time(req.created_before.as_ref()));
        if let (Some(Some(a)), Some(Some(b))) = (created_after, created_before)
            && a >= b
        {
            v.push(FieldViolation::new("created_before", "must be later than created_after"));
        }
        let (limit, after, created_after, created_before) =
            v.finish(|| Some((limit?, after?, created_after?, created_before?))).map_err(Error::InvalidInput)?;
        let escaped = escape_like(&prefix);
        let query = UserQuery {
            email_prefix: (!prefix.is_empty()).then_some(escaped.as_str()),
            created_after,
            created_before,
            disabled: req.disabled,
            verified: req.verified,
            after,
            limit: limit + 1,
        };
        let mut users = self.store.list_users(&query).await?;
        let next_page_token = next_page(&mut users, limit, |u| u.user.user_id);
        let roles = match (users.first(), users.last()) {
            (Some(first), Some(last)) => self.store.roles_between(first.user.user_id, last.user.user_id).await?,
            _ => Vec::new(),
        };
        let users = users
            .iter()
            .map(|u| {
                let held = roles.iter().filter(|(id, _)| *id == u.user.user_id).map(|(_, r)| r.clone()).collect();
                admin_user(u, held)
            })
            .collect();
        self.admin_did(admin, "admin_list_users", None, None).await?;
        Ok(pb::ListUsersResponse { users, next_page_token })
    }

    pub async fn get_user(&self, admin: &Admin, user_id: i64) -> Result<pb::GetUserResponse> {
        let user = self.admin_user_record(user_id).await?;
        let roles = self.store.user_roles(user_id).await?;
        let now = Utc::now();
        let sessions = self.store.user_sessions(user_id, now, now - self.sessions.idle_timeout).await?;
        let last_login = self.store.last_login(user_id).await?;
        self.admin_did(admin, "admin_get_user", Some(user_id), None).await?;
        Ok(pb::GetUserResponse {
            user: Some(admin_user(&user, roles)),
            // No session is the admin's own: the nil id marks none current.
            sessions: sessions.into_iter().map(|s| session_message(s, uuid::Uuid::nil())).collect(),
            last_login_at: last_login.map(timestamp),
        })
    }

    /// Checks the fields of a user created by an admin: registration's rules, and roles.
    pub fn validate_user_creation(&self, req: &pb::CreateUserRequest) -> Result<(), Vec<FieldViolation>> {
        self.parse_user_creation(req).map(|_| ())
    }

    fn parse_user_creation(
        &self,
        req: &pb::CreateUserRequest,
    ) -> Result<(Registration, Vec<String>), Vec<FieldViolation>> {
        match (self.validate_registration(&registration_of(req, &unknown_password())), roles(&req.roles)) {
            (Ok(registration), Ok(roles)) => Ok((registration, roles)),
            (registration, roles) => {
                Err(registration.err().unwrap_or_default().into_iter().chain(roles.err()).collect())
            }
        }
    }

    pub async fn create_user(&self, admin: &Admin, req: &pb::CreateUserRequest) -> Result<pb::CreateUserResponse> {
        let (r, roles) = self.parse_user_creation(req).map_err(Error::InvalidInput)?;
        // Without a password: one nobody knows, and an invitation to choose one.
        let invited = req.password.is_empty();
        let hash = self.passwords.hash(None, &r.password).await?;
        let user = self.store.insert_user(&r.new_user(&hash)).await?;
        self.store.set_roles(user.user_id, &roles, Utc::now()).await?;
        let mailed = if invited { self.send_invitation(&user).await } else { self.send_verification(&user).await };
        if let Err(e) = mailed {
            e.log_if_internal();
        }
        self.admin_did(admin, "admin_create_user", Some(user.user_id), Some(format!("roles={}", roles.join(","))))
            .await?;
        let user = AdminUserRecord { user, disabled_at: None };
        Ok(pb::CreateUserResponse { user: Some(admin_user(&user, roles)) })
    }

    /// Checks the fields of an admin's profile update, as the user's own.
    pub fn validate_user_update(&self, req: &pb::UpdateUserRequest) -> Result<(), Vec<FieldViolation>> {
        self.validate_update(&update_of(req)).map(|_| ())
    }

    pub async fn update_user(&self, admin: &Admin, req: &pb::UpdateUserRequest) -> Result<pb::UpdateUserResponse> {
        let change = self.validate_update(&update_of(req)).map_err(Error::InvalidInput)?;
        let update = ProfileUpdate {
            name: change.name.as_ref().map(|n| n.as_str()),
            location: change.location.as_ref().map(|l| l.as_str()),
            about: change.about.as_ref().map(|a| a.as_deref()),
        };
        self.store.update_user(req.user_id, &update, Utc::now()).await?.ok_or(Error::UserNotFound)?;
        self.cache.apply(SessionChange::User(req.user_id));
        self.admin_did(admin, "admin_update_user", Some(req.user_id), None).await?;
        let user = self.admin_user_record(req.user_id).await?;
        let roles = self.store.user_roles(req.user_id).await?;
        Ok(pb::UpdateUserResponse { user: Some(admin_user(&user, roles)) })
    }

    /// Disables the account: no login from now on, and every session and token of it ends
    /// at once, here and (through the change feed) in every other process.
    pub async fn disable_user(&self, admin: &Admin, user_id: i64) -> Result<u64> {
        let ended = self.store.disable_user(user_id, Utc::now()).await?.ok_or(Error::UserNotFound)?;
        self.cache.apply(SessionChange::User(user_id));
        self.admin_did(admin, "admin_disable_user", Some(user_id), Some(format!("sessions_ended={ended}"))).await?;
        Ok(ended)
    }

    pub async fn enable_user(&self, admin: &Admin, user_id: i64) -> Result<()> {
        if !self.store.enable_user(user_id).await? {
            return Err(Error::UserNotFound);
        }
        self.cache.apply(SessionChange::User(user_id));
        self.admin_did(admin, "admin_enable_user", Some(user_id), None).await
    }

    pub async fn delete_user(&self, admin: &Admin, user_id: i64) -> Result<()> {
        if !self.store.delete_user(user_id).await? {
            return Err(Error::UserNotFound);
        }
        self.cache.apply(SessionChange::User(user_id));
        self.admin_did(admin, "admin_delete_user", Some(user_id), None).await
    }

    /// Ends every session of the user (and forgets every known device of theirs), as a
    /// logout everywhere does.
    pub async fn revoke_user_sessions(&self, admin: &Admin, user_id: i64) -> Result<u64> {
        self.admin_user_record(user_id).await?;
        let now = Utc::now();
        let ended = self.store.end_all_sessions(user_id, uuid::Uuid::nil(), now, now).await?;
        self.cache.apply(SessionChange::User(user_id));
        let detail = Some(format!("sessions_ended={ended}"));
        self.admin_did(admin, "admin_revoke_user_sessions", Some(user_id), detail).await?;
        Ok(ended)
    }

    /// Replaces the user's roles; their next token carries them.
    pub async fn set_user_roles(&self, admin: &Admin, user_id: i64, requested: &[String]) -> Result<Vec<String>> {
        let roles = roles(requested).map_err(|v| Error::InvalidInput(vec![v]))?;
        self.admin_user_record(user_id).await?;
        self.store.set_roles(user_id, &roles, Utc::now()).await?;
        self.admin_did(admin, "admin_set_roles", Some(user_id), Some(format!("roles={}", roles.join(",")))).await?;
        Ok(roles)
    }

    pub async fn list_audit_events(
        &self,
        admin: &Admin,
        req: &pb::ListAuditEventsRequest,
    ) -> Result<pb::ListAuditEventsResponse> {
        let mut v = Violations::default();
        let limit = v.check("page_size", page_size(req.page_size));
        let before = v.check("page_token", cursor(&req.page_token, i64::MAX));
        if req.user_id < 0 {
            v.push(FieldViolation::new("user_id", "must be a user id (or 0 for any)"));
        }
        let action = req.action.trim();
        if action.len() > 64 || !action.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            v.push(FieldViolation::new("action", "must be an action name (a-z and '_', at most 64)"));
        }
        let since = v.check("since", time(req.since.as_ref()));
        let until = v.check("until", time(req.until.as_ref()));
        let (limit, before, since, until) =
            v.finish(|| Some((limit?, before?, since?, until?))).map_err(Error::InvalidInput)?;
        let query = AuditQuery {
            subject_user_id: (req.user_id > 0).then_some(req.user_id),
            action: (!action.is_empty()).then_some(action),
            since,
            until,
            before: Some(before),
            limit: limit + 1,
        };
        let mut events = self.store.audit_events(&query).await?;
        let next_page_token = next_page(&mut events, limit, |e| e.event_id);
        let subject = query.subject_user_id;
        self.admin_did(admin, "admin_list_audit_events", subject, None).await?;
        Ok(pb::ListAuditEventsResponse { events: events.into_iter().map(audit_event).collect(), next_page_token })
    }

    pub async fn list_clients(&self, admin: &Admin) -> Result<pb::ListClientsResponse> {
        let clients = super::clients::list_clients(&self.store).await?;
        self.admin_did(admin, "admin_list_clients", None, None).await?;
        Ok(pb::ListClientsResponse {
            clients: clients
                .into_iter()
                .map(|c| pb::ServiceClient {
                    client_id: c.client_id,
                    name: c.name,
                    scopes: c.scopes.split_whitespace().map(str::to_owned).collect(),
                    certificate: c.certificate_name.unwrap_or_default(),
                    created_at: Some(timestamp(c.created_at)),
                    rotated_at: c.rotated_at.map(timestamp),
                })
                .collect(),
        })
    }

    /// A new client, audited (`client_create`) with the admin as actor.
    pub async fn create_client(
        &self,
        admin: &Admin,
        req: &pb::CreateClientRequest,
    ) -> Result<pb::CreateClientResponse> {
        let store = std::sync::Arc::clone(&self.store);
        let certificate = Some(req.certificate.as_str());
        let created = super::clients::create_client(
            store,
            admin.actor.clone(),
            &req.name,
            &req.scopes,
            certificate,
            &admin.client,
        )
        .await?;
        Ok(pb::CreateClientResponse { client_id: created.client_id, client_secret: created.client_secret })
    }

    /// A new secret, audited (`client_rotate_secret`) with the admin as actor.
    pub async fn rotate_client_secret(
        &self,
        admin: &Admin,
        req: &pb::RotateClientSecretRequest,
    ) -> Result<pb::RotateClientSecretResponse> {
        let grace = match req.grace_seconds {
            None => self.client_secret_grace(),
            Some(s) => u64::try_from(s)
                .map(std::time::Duration::from_secs)
                .map_err(|_| Error::invalid("grace_seconds", "must not be negative"))?,
        };
        let store = std::sync::Arc::clone(&self.store);
        let rotated =
            super::clients::rotate_client_secret(store, admin.actor.clone(), &req.client_id, grace, &admin.client)
                .await;
        // At once here, whatever followed the change (the audit row) did.
        self.client_changed(&req.client_id);
        let rotated = rotated?;
        Ok(pb::RotateClientSecretResponse { client_id: rotated.client_id, client_secret: rotated.client_secret })
    }

    /// Deletes a client, audited (`client_delete`) with the admin as actor.
    pub async fn delete_client(&self, admin: &Admin, client_id: &str) -> Result<()> {
        let store = std::sync::Arc::clone(&self.store);
        let deleted = super::clients::delete_client(store, admin.actor.clone(), client_id, &admin.client).await;
        self.client_changed(client_id);
        deleted
    }

    async fn admin_user_record(&self, user_id: i64) -> Result<AdminUserRecord> {
        if user_id <= 0 {
            return Err(Error::invalid("user_id", "must be a positive integer"));
        }
        self.store.admin_user(user_id).await?.ok_or(Error::UserNotFound)
    }
}

/// The registration an admin's request makes; an empty password (an invitation) is
/// replaced by `unknown`.
fn registration_of(req: &pb::CreateUserRequest, unknown: &str) -> pb::RegisterUserRequest {
    pb::RegisterUserRequest {
        name: req.name.clone(),
        email: req.email.clone(),
        location: req.location.clone(),
        about: req.about.clone(),
        password: if req.password.is_empty() { unknown.to_owned() } else { req.password.clone() },
    }
}

/// A password no one knows (244 random bits), for an invited user until they choose one.
fn unknown_password() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn update_of(req: &pb::UpdateUserRequest) -> pb::UpdateMeRequest {
    pb::UpdateMeRequest {
        name: req.name.clone(),
        location: req.location.clone(),
        about: req.about.clone(),
        clear_about: req.clear_about,
    }
}

/// Roles as given: each a valid name, each once (sorted), at most 32.
fn roles(requested: &[String]) -> Result<Vec<String>, FieldViolation> {
    if requested.len() > 32 {
        return Err(FieldViolation::new("roles", "must be at most 32 roles"));
    }
    let mut roles = requested
        .iter()
        .map(|r| Role::parse(r).map(|r| r.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| FieldViolation::new("roles", format!("each role {why}")))?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

pub(super) fn page_size(size: i32) -> Result<i64, String> {
    match i64::from(size) {
        0 => Ok(PAGE_SIZE),
        n if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(format!("must be between 1 and {MAX_PAGE_SIZE} (0: {PAGE_SIZE})")),
    }
}

/// Cuts `rows` (fetched with one more than `limit`) to the page, and returns the token of
/// the next page: the id its last row ends at (`key`), or empty on the last page.
pub(super) fn next_page<T>(rows: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> i64) -> String {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    match (more, rows.last()) {
        (true, Some(last)) => key(last).to_string(),
        _ => String::new(),
    }
}

/// A page token: the id the previous page ended at; `empty` for none.
pub(super) fn cursor(token: &str, empty: i64) -> Result<i64, String> {
    match token.trim() {
        "" => Ok(empty),
        t => t.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| "is not a page token of this list".to_owned()),
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, String> {
    t.map(|t| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| "is not a valid time".to_owned())
    })
    .transpose()
}

/// `text` for a `like` pattern escaped by `\`.
fn escape_like(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

fn admin_user(u: &AdminUserRecord, roles: Vec<String>) -> pb::AdminUser {
    pb::AdminUser {
        user: Some(user_message(&u.user)),
        disabled: u.disabled_at.is_some(),
        disabled_at: u.disabled_at.map(timestamp),
        roles,
    }
}

fn audit_event(e: AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        event_id: e.event_id,
        occurred_at: Some(timestamp(e.occurred_at)),
        actor_kind: e.actor_kind,
        actor_id: e.actor_id.unwrap_or_default(),
        subject_user_id: e.subject_user_id.unwrap_or_default(),
        action: e.action,
        outcome: e.outcome,
        client_ip: e.client_ip.unwrap_or_default(),
        user_agent: e.user_agent.unwrap_or_default(),
        detail: e.detail.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_the_prefix_literally() {
        assert_eq!(escape_like("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(cursor("", 7), Ok(7));
        assert_eq!(cursor(" 12 ", 7), Ok(12));
        assert!(cursor("-3", 7).is_err() && cursor("x", 7).is_err() && cursor("0", 7).is_err());
        assert!(page_size(-1).is_err() && page_size(201).is_err());
        assert_eq!(page_size(0), Ok(PAGE_SIZE));
    }
}
