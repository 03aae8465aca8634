//! The bodies of the REST shim, in the old app's JSON dialect: the handlers decode and
//! answer with these very types, and the OpenAPI document is derived from them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::Patch;
use crate::{core, pb};

// ---- Request bodies ----

#[derive(Deserialize, ToSchema)]
pub struct RegisterUserBody {
    /// Trimmed; 1 to 1000 characters.
    #[schema(min_length = 1, max_length = 1000, example = "Ada Lovelace")]
    pub name: String,
    /// Compared case-insensitively; at most 254 characters.
    #[schema(max_length = 254, example = "ada@example.com")]
    pub email: String,
    #[schema(min_length = 1, max_length = 1000, example = "London")]
    pub location: String,
    /// At most 10000 characters; null or left out means none, `""` is kept as `""`.
    #[schema(max_length = 10000, example = "Analyst")]
    pub about: Option<String>,
    /// 8 to 128 characters (configurable), taken exactly as given; not one of the most
    /// common passwords, and not containing the name or the email's local part.
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// At most 4096 bytes.
    #[schema(example = "correct horse battery")]
    pub password: String,
    /// The `device_token` of an earlier login from this device (or send the
    /// `authd_device` cookie): past the account's failure ceiling, a known device may
    /// still log in.
    pub device_token: Option<String>,
}

/// The OAuth2 password grant form (RFC 6749 §4.3); `grant_type`, `scope` and the client
/// credentials are accepted and ignored.
#[derive(Deserialize, ToSchema)]
pub struct LoginForm {
    /// The email.
    pub username: String,
    pub password: String,
    /// As in the JSON body; a browser sends the `authd_device` cookie instead.
    pub device_token: Option<String>,
    #[serde(rename = "grant_type")]
    _grant_type: Option<String>,
    #[serde(rename = "scope")]
    _scope: Option<String>,
    #[serde(rename = "client_id")]
    _client_id: Option<String>,
    #[serde(rename = "client_secret")]
    _client_secret: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    /// The refresh token of the last login or refresh.
    pub token: String,
    /// Ignored, as the old app ignored it.
    #[serde(rename = "tokenType")]
    #[schema(example = "Bearer")]
    _token_type: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LogoutBody {
    /// End every session of the user, not only the caller's. The body may be empty.
    pub all_sessions: Option<bool>,
}

/// A password reset asked for an address.
#[derive(Deserialize, ToSchema)]
pub struct ForgotPasswordBody {
    #[schema(example = "ada@example.com")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetPasswordBody {
    /// The `token` of the link in the reset mail.
    pub token: String,
    /// The rules of registration's `password`.
    #[schema(example = "a new correct horse")]
    pub new_password: String,
}

/// Either `token` (from the link), or `email` and `code` (the six digits in the mail).
#[derive(Deserialize, ToSchema)]
pub struct VerifyEmailBody {
    pub token: Option<String>,
    pub email: Option<String>,
    #[schema(example = "123456")]
    pub code: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ResendVerificationBody {
    #[schema(example = "ada@example.com")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangeEmailBody {
    #[schema(example = "ada@lovelace.example")]
    pub new_email: String,
    pub current_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ConfirmEmailChangeBody {
    /// The `token` of the link in the confirmation mail.
    pub token: String,
}

/// RFC 7009's revocation request, as a form or JSON.
#[derive(Deserialize, ToSchema)]
pub struct RevokeBody {
    /// A refresh token (or an access token): its session ends.
    pub token: String,
    /// `refresh_token` or `access_token`; ignored, as RFC 7009 allows.
    #[serde(rename = "token_type_hint")]
    _token_type_hint: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ValidateBody {
    /// An access token.
    pub token: String,
}

/// Fields left out stay as they are; each given one is checked as at registration.
#[derive(Deserialize, ToSchema)]
pub struct UpdateMeBody {
    #[schema(min_length = 1, max_length = 1000)]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 1000)]
    pub location: Option<String>,
    /// `null` clears it.
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub about: Patch,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordBody {
    /// A wrong one is a 422 naming `current_password`.
    pub current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteMeBody {
    /// A wrong one is a 422 naming `password`.
    pub password: String,
}

// ---- Responses ----

#[derive(Serialize, ToSchema)]
pub struct Message {
    pub message: &'static str,
}

/// Login and refresh. A login by OAuth2 form also carries RFC 6749's members at the top
/// level (`access_token`, `token_type`, `refresh_token`, `expires_in`).
#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    #[schema(example = "Login successful.")]
    message: &'static str,
    data: SignedInUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
    /// Login only: this device's token, for its next login (also set as the
    /// `authd_device` cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignedInUser {
    name: String,
    email: String,
    #[schema(required)]
    about: Option<String>,
    location: String,
    user_token: UserToken,
}

#[derive(Serialize, ToSchema)]
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

impl From<pb::TokenResponse> for UserToken {
    fn from(tokens: pb::TokenResponse) -> Self {
        Self {
            token: tokens.access_token,
            token_type: tokens.token_type,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in,
        }
    }
}

impl SignedIn {
    /// The old app's login body, which refresh answers with too.
    pub fn new(message: &'static str, core::SignedIn { user, mut tokens }: core::SignedIn) -> Self {
        let device_token = Some(std::mem::take(&mut tokens.device_token)).filter(|t| !t.is_empty());
        let user_token = tokens.into();
        let data =
            SignedInUser { name: user.name, email: user.email, about: user.about, location: user.location, user_token };
        Self {
            message,
            data,
            access_token: None,
            token_type: None,
            refresh_token: None,
            expires_in: None,
            device_token,
        }
    }

    /// An OAuth2 client (such as Swagger UI's Authorize button) reads RFC 6749's token
    /// response members at the top level: add them beside the old app's shape.
    pub fn with_oauth2_members(self) -> Self {
        let token = &self.data.user_token;
        Self {
            access_token: Some(token.token.clone()),
            token_type: Some(token.token_type.clone()),
            refresh_token: Some(token.refresh_token.clone()),
            expires_in: Some(token.expires_in),
            ..self
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Profile {
    user_id: i64,
    name: String,
    email: String,
    #[schema(required)]
    about: Option<String>,
    location: String,
    /// Whether the address was proven (a verification, a reset by mail, a confirmed change).
    email_verified: bool,
}

impl From<pb::User> for Profile {
    fn from(user: pb::User) -> Self {
        Self {
            user_id: user.user_id,
            name: user.name,
            email: user.email,
            about: user.about,
            location: user.location,
            email_verified: user.email_verified,
        }
    }
}

/// A password change: the other sessions ended, and the caller's too; these are the
/// tokens of the new session.
#[derive(Serialize, ToSchema)]
pub struct PasswordChanged {
    #[schema(example = "Password changed successfully.")]
    pub message: &'static str,
    /// The user's other sessions that were ended.
    pub sessions_ended: u64,
    pub user_token: UserToken,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsEnded {
    pub message: &'static str,
    /// The sessions that were ended.
    pub sessions_ended: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Sessions {
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, ToSchema)]
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

/// A time as RFC 3339 text (UTC, whole seconds); empty when absent.
pub fn rfc3339(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl From<Vec<pb::Session>> for Sessions {
    fn from(sessions: Vec<pb::Session>) -> Self {
        let present = |s: String| (!s.is_empty()).then_some(s);
        let sessions = sessions
            .into_iter()
            .map(|s| SessionView {
                session_id: s.session_id,
                created_at: rfc3339(s.created_at),
                last_used_at: rfc3339(s.last_used_at),
                expires_at: rfc3339(s.expires_at),
                user_agent: present(s.user_agent),
                ip: present(s.ip),
                current: s.current,
            })
            .collect();
        Self { sessions }
    }
}

/// RFC 7662 style: an inactive token is `{"active": false}` only.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    /// Whether the user's address is verified now.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    /// The roles the token carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    /// How the session's user authenticated (RFC 8176): `pwd`, then `otp` or `hwk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    amr: Option<Vec<String>>,
}

impl From<pb::ValidateTokenResponse> for Validation {
    fn from(answer: pb::ValidateTokenResponse) -> Self {
        match answer.expires_at {
            Some(expires_at) if answer.active => Self {
                active: true,
                user_id: Some(answer.user_id),
                session_id: Some(answer.session_id),
                exp: Some(expires_at.seconds),
                email_verified: Some(answer.email_verified),
                roles: Some(answer.roles),
                amr: Some(answer.amr),
            },
            _ => Self {
                active: false,
                user_id: None,
                session_id: None,
                exp: None,
                email_verified: None,
                roles: None,
                amr: None,
            },
        }
    }
}

/// RFC 8414 authorization server metadata.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub jwks_uri: String,
    /// Login with an OAuth2 password form (`username`, `password`) or JSON.
    pub token_endpoint: String,
    /// RFC 7662 (`POST {"token"}`, or a form).
    pub introspection_endpoint: String,
    /// RFC 7009.
    pub revocation_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    /// No authorization endpoint: none.
    pub response_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    pub revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    /// The algorithm that signs access tokens (RFC 9068 JWTs, `typ: at+jwt`).
    pub access_token_signing_alg_values_supported: Vec<String>,
}

impl From<crate::core::ServerMetadata> for ServerMetadata {
    fn from(m: crate::core::ServerMetadata) -> Self {
        let at = |path: &str| format!("{}{path}", m.base_url);
        Self {
            jwks_uri: at("/.well-known/jwks.json"),
            token_endpoint: at("/api/v1/auth/login"),
            introspection_endpoint: at("/api/v1/auth/validate"),
            revocation_endpoint: at("/api/v1/auth/revoke"),
            issuer: m.issuer,
            grant_types_supported: vec!["password"],
            response_types_supported: Vec::new(),
            token_endpoint_auth_methods_supported: vec!["none"],
            introspection_endpoint_auth_methods_supported: vec!["none"],
            revocation_endpoint_auth_methods_supported: vec!["none"],
            access_token_signing_alg_values_supported: vec![m.algorithm],
        }
    }
}

/// RFC 7517; empty with HMAC signing.
#[derive(Serialize, ToSchema)]
pub struct Jwks {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<jsonwebtoken::jwk::Jwk>,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `/readyz`: whether the database answers, and whether the change feed (how this process
/// hears of logouts made by others) is up; while it is down, token checks ask the database.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    #[schema(example = "up")]
    pub change_feed: &'static str,
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::{RegisterUserBody, UpdateMeBody};
    use crate::domain::{About, Email, Location, UserName};

    /// The bounds the document shows are the domain's.
    #[test]
    fn the_documented_field_limits_are_the_domains() {
        let limits = [
            ("name", UserName::MAX_CHARS),
            ("location", Location::MAX_CHARS),
            ("about", About::MAX_CHARS),
            ("email", Email::MAX_LEN),
        ];
        for schema in [RegisterUserBody::schema(), UpdateMeBody::schema()] {
            let schema = serde_json::to_value(schema).unwrap_or_default();
            for (field, limit) in limits {
                let documented = &schema["properties"][field]["maxLength"];
                assert!(documented.is_null() || documented == limit, "{field}: {documented} in {schema}");
            }
            assert_eq!(schema["properties"]["name"]["maxLength"], UserName::MAX_CHARS, "{schema}");
        }
    }
}
