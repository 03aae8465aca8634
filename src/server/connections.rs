//! Accepting connections and serving HTTP/1.1 and h2c on them, with header and keep-alive
//! timeouts, until shutdown.

use std::{future::Future, time::Duration};

use axum::{Router, body::Body};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::SHUTDOWN_GRACE;

/// Headers must arrive within this (or the request timeout, if shorter), or the
/// connection is closed: slow-loris clients cannot hold it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle HTTP/2 connections are pinged this often, and closed when the ping goes unanswered.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The most header bytes read per HTTP/1.1 request, and per HTTP/2 header list.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's server, configured by hand (axum::serve sets no timer, so no header timeout):
/// HTTP/1.1 and h2c on one listener, each request told its peer address. Serves until
/// `shutdown` completes, then refuses new connections and lets requests in flight finish
/// for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    request_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout.min(HEADER_READ_TIMEOUT))
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without it, a response written in pieces (HTTP/2 headers, data, trailers) can
        // wait out the peer's delayed ACK: 40 ms stalls at the tail of gRPC latency.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, %peer, "setting TCP_NODELAY failed");
        }
        let service = router.clone().map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request.map(Body::new)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    // New connections are refused from here on.
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: stopping anyway");
    }
}
