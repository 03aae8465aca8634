//! `POST /oauth/token`: the client credentials grant (RFC 6749 §4.4), answered in RFC 6749's
//! own JSON (§5.1, §5.2) rather than the old app's dialect.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{body::Body, error::basic_challenge};
use crate::core::{Authd, ClientInfo, Error};

/// The token request (`application/x-www-form-urlencoded`). The client authenticates with
/// HTTP Basic (preferred), or with `client_id` and `client_secret` in the form.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// `client_credentials`.
    pub grant_type: Option<String>,
    /// Space-separated scopes, each held by the client; all of its scopes when left out.
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Serialize, ToSchema)]
pub struct ServiceTokenBody {
    /// A JWT (`typ: at+jwt`) with `client_id` and `scope`.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds (`SERVICE_TOKEN_LIFETIME_SECONDS`).
    expires_in: u64,
    scope: String,
}

/// RFC 6749 §5.2.
#[derive(Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type` or `invalid_scope`.
    error: &'static str,
    error_description: String,
}

fn oauth_error(status: StatusCode, error: &'static str, description: impl Into<String>) -> Response {
    let response = (status, Json(OAuthError { error, error_description: description.into() }));
    if status == StatusCode::UNAUTHORIZED { basic_challenge(response) } else { response.into_response() }
}

/// Get a service token
///
/// The client credentials grant (RFC 6749 §4.4): a service client trades its id and secret (HTTP
/// Basic, or `client_id` and `client_secret` in the form) for a short-lived service access token,
/// to send as `Authorization: Bearer` where a client is needed (ValidateToken, the admin API).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A service token", body = ServiceTokenBody),
        (status = 400, description = "A bad request, grant type or scope", body = OAuthError),
        (status = 401, description = "Unknown client, or a wrong or expired secret", body = OAuthError,
            headers(("WWW-Authenticate" = String, description = "Basic realm=\"authd\""))),
    ))]
pub async fn oauth_token(State(authd): State<Authd>, client: ClientInfo, headers: HeaderMap, body: Body) -> Response {
    if !body.is_form() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send an application/x-www-form-urlencoded body",
        );
    }
    let form = match body.form::<TokenForm>() {
        Ok((form, _)) => form,
        Err(_) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the body is not a valid form"),
    };
    match form.grant_type.as_deref().map(str::trim) {
        Some("client_credentials") => {}
        None | Some("") => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
        Some(_) => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials is served");
        }
    }
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let in_form = form.client_id.as_deref().zip(form.client_secret.as_deref());
    let caller = match (basic, in_form) {
        (Some(_), Some(_)) => {
            let why = "authenticate the client one way: HTTP Basic or the form, not both";
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why);
        }
        (Some(header), None) => authd.client_by_secret(header, &client).await,
        (None, Some((id, secret))) => authd.client_with_secret(id, secret, &client).await,
        (None, None) => Err(Error::InvalidClient),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(Error::InvalidClient) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, or a wrong or expired secret",
            );
        }
        Err(e) => return e.into_response(),
    };
    match authd.issue_service_token(&caller, form.scope.as_deref()) {
        Ok(token) => Json(ServiceTokenBody {
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in,
            scope: token.scopes.join(" "),
        })
        .into_response(),
        Err(Error::InvalidInput(violations)) => {
            let why = violations.into_iter().map(|v| format!("{} {}", v.field, v.description)).collect::<Vec<_>>();
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", why.join("; "))
        }
        Err(e) => e.into_response(),
    }
}
