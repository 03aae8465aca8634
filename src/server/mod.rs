//! The one listener, and what every request goes through before and after its route:
//! connection serving with its timeouts, the deadline, CORS, the access log, shutdown.
//! The routes themselves are wired in `startup`.

mod access_log;
mod connections;
mod cors;
mod deadline;
mod shutdown;

use axum::{Router, extract::Request, http::header, middleware};

pub use connections::serve;
pub use shutdown::{SHUTDOWN_GRACE, shutdown_signal};

use crate::config::Settings;

/// The largest request body or gRPC message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Puts every request of `routes` under the server's limits, CORS and the access log.
pub fn layers(routes: Router, settings: &Settings) -> anyhow::Result<Router> {
    Ok(routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn_with_state(settings.limits.request_timeout, deadline::request_timeout))
        .layer(middleware::from_fn(access_log::access_log))
        .layer(cors::layer(&settings.server.cors_allowed_origins)?))
}

/// Whether a request speaks gRPC (or grpc-web), whose errors go in `grpc-status`.
pub fn is_grpc(request: &Request) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
