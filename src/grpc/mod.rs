//! The gRPC transport: thin adapters from the generated service traits to the core.

mod auth;
pub mod codec;
mod user;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use auth::AuthApi;
pub use user::UserApi;

use crate::core::{Authd, Caller, ClientInfo, Error};

/// The one mapping from core errors to gRPC statuses.
impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.log_if_internal();
        match error {
            Error::InvalidInput(violations) => {
                let fields = violations.iter().map(|v| format!("{} {}", v.field, v.description)).collect::<Vec<_>>();
                let details = ErrorDetails::with_bad_request(
                    violations.into_iter().map(|v| FieldViolation::new(v.field, v.description)).collect::<Vec<_>>(),
                );
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid request: {}", fields.join("; ")),
                    details,
                )
            }
            Error::EmailTaken => Status::already_exists("Email already registered. Try logging in."),
            Error::InvalidCredentials => Status::unauthenticated("Invalid credentials. Try again..."),
            Error::RefreshRejected => Status::unauthenticated("Authorization failed. Log in again."),
            Error::MissingToken => {
                Status::unauthenticated("Not authenticated: send `authorization: Bearer <access token>`")
            }
            Error::InvalidToken => Status::unauthenticated("Invalid Credentials"),
            Error::SessionNotFound => Status::not_found("Session not found."),
            Error::Overloaded { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                "Too many requests; try again later.",
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::Unavailable(_) => Status::unavailable("Service temporarily unavailable."),
            Error::Unexpected(_) => Status::internal("Internal server error."),
        }
    }
}

fn client_info<T>(request: &Request<T>) -> ClientInfo {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let user_agent = request.metadata().get("user-agent").and_then(|v| v.to_str().ok());
    ClientInfo::new(ip, user_agent)
}

/// The signed-in caller of a request, from its `authorization` metadata.
async fn caller<T>(authd: &Authd, request: &Request<T>) -> Result<Caller, Status> {
    let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    Ok(authd.authenticate(authorization).await?)
}
