//! The gRPC transport: thin adapters from the generated service traits to the core.

mod admin;
mod auth;
pub mod codec;
mod factors;
mod user;

use std::{collections::HashSet, sync::LazyLock};

use anyhow::Context;
use axum::{Router, http::HeaderValue, middleware, response::Response};
use prost::Message;
use tonic::{Code, Request, Status, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use admin::AdminApi;
pub use auth::AuthApi;
pub use factors::FactorApi;
pub use user::UserApi;

use crate::{
    core::{Authd, Caller, ClientInfo, Error, error},
    pb::{
        admin_service_server::AdminServiceServer, auth_service_server::AuthServiceServer,
        factor_service_server::FactorServiceServer, user_service_server::UserServiceServer,
    },
    server::{ClientAddr, MAX_MESSAGE_BYTES, TlsConnection},
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
        .add_service(AuthServiceServer::new(AuthApi(authd.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(AdminServiceServer::new(AdminApi(authd.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(FactorServiceServer::new(FactorApi(authd)).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(health)
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .into_axum_router()
        .layer(middleware::map_response(oversized_message_status))
        .layer(middleware::map_response(crate::server::not_cached))
        // Only here: on plain HTTP/1.1 routes the grpc-web layer would answer 400.
        .layer(tonic_web::GrpcWebLayer::new()))
}

/// Whether `path` names a method served here (`/authd.v1.AuthService/Login`, health,
/// reflection): the only paths that may become a metrics label. Any other is the caller's
/// free text, and a label per name would grow the metrics without bound.
pub fn is_served_method(path: &str) -> bool {
    static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .filter_map(|set| prost_types::FileDescriptorSet::decode(set).ok())
        .flat_map(|set| set.file)
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.into_iter().flat_map(move |service| {
                let prefix = format!("/{package}.{}/", service.name());
                service.method.into_iter().map(move |method| format!("{prefix}{}", method.name()))
            })
        })
        .collect()
    });
    METHODS.contains(path)
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
            Error::EmailNotVerified => Status::with_error_details(
                Code::FailedPrecondition,
                "Email not verified. Check your inbox, or ask for a new verification mail.",
                ErrorDetails::with_error_info("EMAIL_NOT_VERIFIED", "authd", std::collections::HashMap::new()),
            ),
            Error::RefreshRejected => Status::unauthenticated("Authorization failed. Log in again."),
            Error::MissingToken => {
                Status::unauthenticated("Not authenticated: send `authorization: Bearer <access token>`")
            }
            Error::InvalidToken => Status::unauthenticated("Invalid Credentials"),
            Error::SessionNotFound => Status::not_found("Session not found."),
            Error::UserNotFound => Status::not_found("User not found."),
            Error::PermissionDenied(why) => Status::permission_denied(why),
            Error::ClientRequired => Status::unauthenticated(crate::core::CLIENT_REQUIRED),
            Error::InvalidClient => Status::unauthenticated("Invalid client credentials."),
            Error::ClientNotFound => Status::not_found("Client not found."),
            Error::SecondFactorRequired(challenge) => {
                let metadata = std::collections::HashMap::from([
                    ("challenge".to_owned(), challenge.token),
                    ("methods".to_owned(), challenge.methods.join(",")),
                    ("expires_in".to_owned(), challenge.expires_in.as_secs().to_string()),
                ]);
                Status::with_error_details(
                    Code::Unauthenticated,
                    "A second factor is required: answer the challenge with CompleteLogin.",
                    ErrorDetails::with_error_info("SECOND_FACTOR_REQUIRED", "authd", metadata),
                )
            }
            Error::ChallengeRejected => Status::unauthenticated("Login challenge expired or used. Log in again."),
            Error::FactorNotFound => Status::not_found("Factor not found."),
            Error::PasskeysNotConfigured => {
                failed_precondition(error::PASSKEYS_NOT_CONFIGURED, "PASSKEYS_NOT_CONFIGURED")
            }
            Error::PasskeyLoginDisabled => failed_precondition(error::PASSKEY_LOGIN_DISABLED, "PASSKEY_LOGIN_DISABLED"),
            Error::CeremonyNotFound => failed_precondition(error::CEREMONY_NOT_FOUND, "PASSKEY_CEREMONY_NOT_FOUND"),
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

/// FAILED_PRECONDITION with `google.rpc.ErrorInfo` naming `reason`, for clients to branch on.
fn failed_precondition(message: &'static str, reason: &str) -> Status {
    let info = ErrorDetails::with_error_info(reason, "authd", std::collections::HashMap::new());
    Status::with_error_details(Code::FailedPrecondition, message, info)
}

fn client_info<T>(request: &Request<T>) -> ClientInfo {
    let ip = ClientAddr::of(request.extensions());
    let user_agent = request.metadata().get("user-agent").and_then(|v| v.to_str().ok());
    let certificate = request.extensions().get::<TlsConnection>().and_then(|tls| tls.client.clone());
    ClientInfo::new(ip, user_agent).with_certificate(certificate)
}

/// The signed-in caller of a request, from its `authorization` metadata.
async fn caller<T>(authd: &Authd, request: &Request<T>) -> Result<Caller, Status> {
    let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    Ok(authd.authenticate(authorization, client_info(request)).await?)
}

#[cfg(test)]
mod tests {
    use super::is_served_method;

    #[test]
    fn served_methods_are_known_by_their_paths_and_nothing_else_is() {
        for path in [
            "/authd.v1.AuthService/Login",
            "/authd.v1.UserService/GetMe",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(is_served_method(path), "{path}");
        }
        for path in ["/authd.v1.AuthService/x1", "/authd.v1.AuthService/", "/authd.v1.AuthService/Login/x", "/"] {
            assert!(!is_served_method(path), "{path}");
        }
    }
}
