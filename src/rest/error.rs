//! The one mapping from core errors to the old app's HTTP statuses and bodies.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::core::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        match self {
            Error::InvalidInput(violations) => {
                let list: Vec<Value> = violations.into_iter().map(|v| json!({ v.field: v.description })).collect();
                (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": list }))).into_response()
            }
            Error::EmailTaken => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"email": "Email already registered. Try logging in."}})),
            )
                .into_response(),
            Error::InvalidCredentials => unauthorized(json!({"error": {"error": "Invalid credentials. Try again..."}})),
            Error::RefreshRejected => unauthorized(json!({"error": {"error": "Authorization failed. Log in again."}})),
            Error::MissingToken => unauthorized(json!({"detail": "Not authenticated"})),
            Error::InvalidToken => unauthorized(json!({"detail": "Invalid Credentials"})),
            Error::SessionNotFound => error_body(StatusCode::NOT_FOUND, "Session not found."),
            Error::Overloaded { retry_after } => {
                let mut response = error_body(StatusCode::TOO_MANY_REQUESTS, "Too many requests. Try again later.");
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                response
            }
            Error::Unavailable(_) => error_body(StatusCode::SERVICE_UNAVAILABLE, "Service temporarily unavailable."),
            Error::Unexpected(_) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error."),
        }
    }
}

fn unauthorized(body: Value) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The old app's body for errors that concern no field: `{"error": {"error": message}}`.
pub fn error_body(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"error": message}}))).into_response()
}

/// Paths that match no route, in FastAPI's words.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}
