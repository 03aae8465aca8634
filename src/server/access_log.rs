//! One log line and one metrics sample per request.

use std::{net::IpAddr, time::Instant};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use http_body_util::BodyExt;
use tracing::Span;

use super::{ClientAddr, is_grpc};
use crate::metrics;

/// One log line and one metrics sample per request: client address, method, path (never the query),
/// status, gRPC status when visible, latency. gRPC statuses come in trailers, so the line
/// waits for the body's end. Metrics are labelled by route template, never the raw path.
pub async fn access_log(request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    let mut line = AccessLine {
        span: Span::current(),
        start: Instant::now(),
        client: ClientAddr::of(request.extensions()),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        route: request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()),
        grpc,
        status: 0,
        done: false,
    };
    let response = next.run(request).await;
    line.status = response.status().as_u16();
    let grpc_status =
        |headers: &http::HeaderMap| headers.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if !grpc || grpc_status(response.headers()).is_some() {
        line.emit(grpc_status(response.headers()).as_deref());
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body.map_frame(move |frame| {
        if let Some(trailers) = frame.trailers_ref() {
            line.emit(grpc_status(trailers).as_deref());
        }
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

struct AccessLine {
    /// The request's span: a call broken off ends outside it, and its line belongs in it.
    span: Span,
    start: Instant,
    /// The address the request was served as (behind a trusted proxy, the client's).
    client: Option<IpAddr>,
    method: Method,
    path: String,
    /// The matched route template; `None` for the fallback.
    route: Option<String>,
    grpc: bool,
    status: u16,
    done: bool,
}

impl AccessLine {
    fn emit(&mut self, grpc_status: Option<&str>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let _span = self.span.clone().entered();
        let latency = self.start.elapsed();
        if self.grpc {
            // A served method's path names it; any other is one label, however it failed.
            let rpc = if crate::grpc::is_served_method(&self.path) { self.path.as_str() } else { "unmatched" };
            // No status at all means the call broke off before its trailers.
            metrics::grpc_request(rpc, grpc_status.unwrap_or("aborted"), latency);
        } else {
            metrics::http_request(
                self.method.as_str(),
                self.route.as_deref().unwrap_or("unmatched"),
                self.status,
                latency,
            );
        }
        let latency_ms = latency.as_secs_f64() * 1000.0;
        tracing::info!(
            client = self.client.map(tracing::field::display),
            method = %self.method,
            path = %self.path,
            status = self.status,
            grpc_status,
            latency_ms = format!("{latency_ms:.2}"),
            "request"
        );
    }
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        self.emit(None);
    }
}
