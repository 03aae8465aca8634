//! A request id on every request, and a span carrying it around everything logged while
//! the request is served, so one grep follows one call.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Span;

use super::proxies::TrustedProxies;

/// The header the id comes in (from a trusted proxy) and goes back out in, to REST
/// callers as a header and to gRPC callers as response metadata.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a proxy; a longer one is replaced.
const MAX_ID_BYTES: usize = 128;

/// Keeps the `x-request-id` a trusted proxy sent, or sets a new one, on the request (for
/// the span) and on its answer.
pub async fn request_id(State(proxies): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let from_proxy = peer.is_some_and(|ip| proxies.trusts(ip));
    let id =
        request.headers().get(X_REQUEST_ID).filter(|id| from_proxy && acceptable(id)).cloned().unwrap_or_else(generate);
    request.headers_mut().insert(X_REQUEST_ID, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// The span every event of a request is logged in (for `TraceLayer`).
pub fn span(request: &Request) -> Span {
    let id = request.headers().get(X_REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", request_id = id)
}

/// Short printable ASCII, so that a log line stays one line and one token.
fn acceptable(id: &HeaderValue) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len()) && id.as_bytes().iter().all(u8::is_ascii_graphic)
}

fn generate() -> HeaderValue {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_kept() {
        let ok = |s: &str| acceptable(&HeaderValue::from_str(s).unwrap());
        assert!(ok("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(ok("req-1:2/3"));
        assert!(!ok(""));
        assert!(!ok("two words"));
        assert!(!ok(&"x".repeat(MAX_ID_BYTES + 1)));
        assert!(!acceptable(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
        assert!(acceptable(&generate()));
    }
}
