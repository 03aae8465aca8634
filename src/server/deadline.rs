//! How long a request may take: the server's limit, or the gRPC caller's own deadline
//! when that is sooner.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    http::HeaderMap,
    middleware::Next,
    response::Response,
};

use super::is_grpc;
use crate::rest;

/// Every request gets `limit` to be answered (reading a slow body included), or less when
/// a gRPC caller sends a shorter `grpc-timeout`: past it, gRPC callers get
/// DEADLINE_EXCEEDED and others 503, and the work is dropped.
pub async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    let callers_deadline = if grpc { grpc_timeout(request.headers()).filter(|d| *d < limit) } else { None };
    match tokio::time::timeout(callers_deadline.unwrap_or(limit), next.run(request)).await {
        Ok(response) => response,
        Err(_) if callers_deadline.is_some() => {
            tonic::Status::deadline_exceeded("deadline exceeded (grpc-timeout)").into_http::<Body>()
        }
        Err(_) if grpc => tonic::Status::deadline_exceeded("request timed out").into_http::<Body>(),
        Err(_) => rest::error_body(http::StatusCode::SERVICE_UNAVAILABLE, "Request timed out."),
    }
}

/// The caller's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n). A malformed
/// one is ignored, leaving the server's limit.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse("30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("1n"), Some(Duration::from_nanos(1)));
        for malformed in ["", "S", "10", "10s", "-1S", "123456789S", "1.5S", "1 S"] {
            assert_eq!(parse(malformed), None, "{malformed:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
