//! The gRPC transport: thin adapters from the generated service traits to the core.

mod auth;
pub mod codec;
mod user;

use std::net::SocketAddr;

use anyhow::Context;
use axum::{Router, extract::ConnectInfo, http::HeaderValue, middleware, response::Response};
use tonic::{Code, Request, Status, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use auth::AuthApi;
pub use user::UserApi;

use crate::{
    core::{Authd, Caller, ClientInfo, Error},
    pb::{auth_service_server::AuthServiceServer, user_service_server::UserServiceServer},
    server::MAX_MESSAGE_BYTES,
};

/// The gRPC services (also over grpc-web), health and reflection, as axum routes.
pub fn router(authd: Authd, health: HealthServer<impl Health>) -> anyhow::Result<Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So that reflection clients can decode the error details we send.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(Routes::new(UserServiceServer::new(UserApi(authd.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(AuthServiceServer::new(AuthApi(authd)).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(health)
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .into_axum_router()
        .layer(middleware::map_response(oversized_message_status))
        // Only here: on plain HTTP/1.1 routes the grpc-web layer would answer 400.
        .layer(tonic_web::GrpcWebLayer::new()))
}

/// tonic answers OUT_OF_RANGE to a request message over the size limit; our contract
/// says RESOURCE_EXHAUSTED. No authd method answers OUT_OF_RANGE otherwise. A decoding
/// failure ends the call before any message, so the status is in the headers.
async fn oversized_message_status(mut response: Response) -> Response {
    let out_of_range = (Code::OutOfRange as i32).to_string();
    if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == out_of_range.as_bytes()) {
        let headers = response.headers_mut();
        headers.insert("grpc-status", HeaderValue::from(Code::ResourceExhausted as i32));
        headers.insert("grpc-message", HeaderValue::from_static("request%20message%20too%20large"));
    }
    response
}

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
