//! Accepting connections and serving HTTP/1.1 and h2c on them, with header and keep-alive
//! timeouts, until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto::Builder,
        graceful::{GracefulShutdown, Watcher},
    },
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
};
use tower::ServiceExt;

use super::{
    SHUTDOWN_GRACE,
    tls::{Tls, TlsConnection},
};

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
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let header_read_timeout = request_timeout.min(HEADER_READ_TIMEOUT);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
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
        let (builder, router, tls, watcher) = (builder.clone(), router.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(&builder, stream, router, peer, None, watcher).await,
                // The handshake runs here, under the header timeout: a client that never
                // finishes it holds the socket no longer than one that sends no request.
                Some(tls) => match tls.accept(stream, header_read_timeout).await {
                    Ok((stream, session)) => {
                        serve_connection(&builder, stream, router, peer, Some(session), watcher).await
                    }
                    Err(e) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                },
            };
            if let Err(e) = served {
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

/// hyper serving one connection (cleartext, or after its TLS handshake) until it ends or
/// the server shuts down; each request is told its peer address and, over TLS, the
/// connection's [`TlsConnection`].
async fn serve_connection<I>(
    builder: &Builder<TokioExecutor>,
    io: I,
    router: Router,
    peer: SocketAddr,
    tls: Option<TlsConnection>,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        if let Some(tls) = &tls {
            request.extensions_mut().insert(tls.clone());
        }
        request.map(Body::new)
    });
    watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))).await
}
