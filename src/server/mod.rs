//! The one listener, and what every request goes through before and after its route:
//! connection serving with its timeouts and limits, the client address (behind trusted
//! proxies), the request id and span, the deadline, CORS,
//! the access log, shutdown. The routes themselves are wired in `startup`.

mod access_log;
mod connections;
mod cors;
mod deadline;
mod proxies;
mod request_id;
mod shutdown;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware,
    response::Response,
};
use tower_http::trace::TraceLayer;

pub use connections::{connection_cap, raise_open_file_limit, serve};
pub use proxies::{ClientAddr, TrustedProxies};
pub use request_id::X_REQUEST_ID;
pub use shutdown::{SHUTDOWN_GRACE, shutdown_signal};

use crate::config::Settings;

/// The largest request body or gRPC message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Puts every request of `routes` under the server's limits, CORS, its client address, a
/// request id and its span, and the access log.
pub fn layers(routes: Router, settings: &Settings) -> anyhow::Result<Router> {
    // Only the span: the access log says how each request went.
    let span = TraceLayer::new_for_http()
        .make_span_with(request_id::span)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(());
    let proxies = TrustedProxies::new(&settings.server.trusted_proxies, settings.server.trusted_proxy_header);
    // The last layer added is the first a request meets.
    Ok(routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn_with_state(settings.limits.request_timeout, deadline::request_timeout))
        .layer(middleware::from_fn(access_log::access_log))
        .layer(span)
        .layer(middleware::from_fn_with_state(proxies.clone(), request_id::request_id))
        .layer(middleware::from_fn_with_state(proxies, proxies::client_address))
        .layer(cors::layer(&settings.server.cors_allowed_origins)?))
}

/// Whether a request speaks gRPC (or grpc-web), whose errors go in `grpc-status`.
pub fn is_grpc(request: &Request) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Marks an answer as not to be kept by any cache (RFC 6749 §5.1 for answers carrying
/// tokens; RFC 9111's `no-store`, and `Pragma` for HTTP/1.0 caches), unless its route chose
/// a cache policy of its own.
pub async fn not_cached(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}
