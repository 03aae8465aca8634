//! How long a request may take.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use super::is_grpc;
use crate::rest;

/// Every request gets `limit` to be answered (reading a slow body included): past it,
/// gRPC callers get DEADLINE_EXCEEDED and others 503, and the work is dropped.
pub async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if grpc => tonic::Status::deadline_exceeded("request timed out").into_http::<Body>(),
        Err(_) => rest::error_body(http::StatusCode::SERVICE_UNAVAILABLE, "Request timed out."),
    }
}
