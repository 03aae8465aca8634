//! Accepting connections and serving HTTP/1.1 and h2c (or, with TLS configured, both over
//! TLS) on them until shutdown, each under the server's bounds: a cap on connections held at once, TCP keepalive, a deadline for
//! the first request (protocol detection included), an idle timeout, and HTTP/2's limits
//! on streams and header lists.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;

use super::{
    SHUTDOWN_GRACE, TrustedProxies,
    tls::{Tls, TlsConnection},
};
use crate::config::{DEFAULT_MAX_CONNECTIONS, LimitSettings};

/// File descriptors kept back from client connections beside the database pool's: the
/// listener, SQLite's files, logs, and some to spare.
const RESERVED_FDS: u64 = 64;

/// Idle HTTP/2 connections are pinged this often, and closed when the ping goes unanswered.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The most header bytes read per HTTP/1.1 request, and per HTTP/2 header list.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Streams one HTTP/2 connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// TCP keepalive: a silent peer is probed after this long, then every
/// [`TCP_KEEPALIVE_INTERVAL`]; one gone for good frees its connection within minutes.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A connection asked to close (idle, or no request in time) that has not within this is
/// dropped: an HTTP/2 client that never answers the GOAWAY's ping cannot hold it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What every connection is served with.
struct Shared {
    builder: Builder<TokioExecutor>,
    router: Router,
    /// A connection's first request must arrive this soon after it was accepted.
    first_request_within: Duration,
    idle_timeout: Duration,
    /// A connection is asked to close this long after it was accepted ...
    max_age: Duration,
    /// ... and dropped this long after that if it has not (a response that cannot drain).
    age_grace: Duration,
    /// `None`: cleartext.
    tls: Option<Tls>,
}

/// hyper's server, configured by hand (axum::serve sets no timer, so no header timeout):
/// HTTP/1.1 and h2c on one listener, each request told its peer address. At most
/// `max_connections` are held at once: past it, a new connection is closed as soon as it
/// is accepted. Serves until `shutdown` completes, then refuses new connections, asks the
/// open ones to finish (HTTP/2: GOAWAY) and waits for them for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &LimitSettings,
    max_connections: u32,
    tls: Option<Tls>,
    proxies: TrustedProxies,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let header_read_timeout = limits.request_timeout.min(limits.header_read_timeout);
    let shared = Arc::new(Shared {
        builder: builder(header_read_timeout),
        router,
        first_request_within: header_read_timeout,
        idle_timeout: limits.idle_timeout,
        max_age: limits.max_connection_age,
        age_grace: limits.request_timeout.max(CLOSE_GRACE),
        tls,
    });
    let per_client = PerClient::new(limits.max_connections_per_client);
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let (stop, stopped) = watch::channel(false);
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
        let accepted_at = Instant::now();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: the file descriptors left are for the database and for the
            // connections already held.
            crate::metrics::connection_closed("over_capacity");
            tracing::debug!(%peer, max_connections, "connection refused: MAX_CONNECTIONS reached");
            continue;
        };
        // A trusted proxy carries many clients: only the others are capped one by one.
        let via_proxy = proxies.trusts(peer.ip());
        let client_slot = if via_proxy {
            None
        } else {
            let Some(client_slot) = per_client.take(peer.ip()) else {
                crate::metrics::connection_closed("over_client_capacity");
                tracing::debug!(%peer, "connection refused: MAX_CONNECTIONS_PER_CLIENT reached");
                continue;
            };
            Some(client_slot)
        };
        let slot = (slot, client_slot);
        configure_socket(&stream, peer);
        let (shared, stopped) = (shared.clone(), stopped.clone());
        tokio::spawn(async move {
            let first_request_by = accepted_at + shared.first_request_within;
            let Some(tls) = &shared.tls else {
                return serve_connection(stream, peer, None, accepted_at, &shared, stopped, slot).await;
            };
            // The TLS handshake is part of the first request's deadline: a client that never
            // finishes it holds the socket no longer than one that sends nothing.
            match tls.accept(stream, first_request_by.saturating_duration_since(Instant::now())).await {
                Ok((stream, mut session)) => {
                    // A trusted proxy's own certificate is not its clients' identity.
                    if via_proxy {
                        session.client = None;
                    }
                    serve_connection(stream, peer, Some(session), accepted_at, &shared, stopped, slot).await;
                }
                Err(e) => {
                    crate::metrics::connection_closed("tls_handshake");
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                }
            }
        });
    }
    // New connections are refused from here on.
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all slots back means all are done.
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(max_connections)).await.is_err() {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: stopping anyway");
    }
}

/// The cap on connections: `MAX_CONNECTIONS` (or the default), lowered to what the
/// open-file limit leaves beside the database pool and [`RESERVED_FDS`]. The soft limit is
/// raised to the hard one first.
pub fn connection_cap(configured: Option<u32>, db_pool: u32) -> u32 {
    let wanted = configured.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let Some(open_files) = raise_open_file_limit() else { return wanted };
    let room = open_files.saturating_sub(RESERVED_FDS + u64::from(db_pool));
    let cap = u32::try_from(room).unwrap_or(u32::MAX).clamp(1, wanted);
    if cap < wanted {
        tracing::warn!(
            max_connections = cap,
            open_file_limit = open_files,
            "MAX_CONNECTIONS lowered to fit the open-file limit (raise `ulimit -n` or LimitNOFILE)"
        );
    }
    cap
}

/// Raises the soft open-file limit to the hard one; the limit now (`None`: unlimited or
/// unknown).
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, soft, hard, "raising the open-file limit failed");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

fn builder(header_read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

fn configure_socket(stream: &TcpStream, peer: SocketAddr) {
    // Without it, a response written in pieces (HTTP/2 headers, data, trailers) can
    // wait out the peer's delayed ACK: 40 ms stalls at the tail of gRPC latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, %peer, "setting TCP_NODELAY failed");
    }
    // A peer that vanished (powered off, its NAT forgot it) sends no FIN: only probes find out.
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE_TIME).with_interval(TCP_KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, %peer, "setting TCP keepalive failed");
    }
}

/// How busy a connection is: whether it has had a request yet, and how many are in flight
/// (an HTTP/2 stream is in flight until its response has been sent).
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    started: bool,
    in_flight: usize,
}

/// Serves one connection until it ends, the client's first request is late, it stays idle
/// past the idle timeout, or the server stops. `_slot` is its place under the cap, held
/// until it ends. Generic over the stream, so that a TLS stream is served alike; each of
/// its requests is told the peer address and, over TLS, the [`TlsConnection`].
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    tls: Option<TlsConnection>,
    accepted_at: Instant,
    shared: &Shared,
    mut stopped: watch::Receiver<bool>,
    _slot: (OwnedSemaphorePermit, Option<ClientSlot>),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (load, mut watched) = watch::channel(Load::default());
    let mut watched_for_first = watched.clone();
    let load = Arc::new(load);
    let router = shared.router.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&load);
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(tls) = &tls {
            request.extensions_mut().insert(tls.clone());
        }
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // The request is in flight until its answer's body has been sent, or dropped.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        }
    });
    let connection = shared.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);

    // Until its first request a connection is only a cost: past the deadline (0 bytes, a
    // partial preface, headers never finished) it is closed. Once idle past the idle
    // timeout, it is closed too: gracefully (HTTP/2: GOAWAY), then for good after
    // CLOSE_GRACE if the client does not finish it.
    let first_request_by = accepted_at + shared.first_request_within;
    let too_old_at = accepted_at + shared.max_age;
    let mut started = false;
    let mut close_by: Option<Instant> = None;
    loop {
        let closing = close_by.is_some();
        tokio::select! {
            ended = connection.as_mut() => return finished(ended, peer),
            first = tokio::time::timeout_at(first_request_by, first_request(&mut watched_for_first)), if !started && !closing => {
                if first.is_ok() {
                    started = true;
                } else {
                    crate::metrics::connection_closed("no_request");
                    tracing::debug!(%peer, "closing a connection: no request before the deadline");
                    connection.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = idle_for(&mut watched, shared.idle_timeout), if started && !closing => {
                crate::metrics::connection_closed("idle");
                tracing::debug!(%peer, "closing a connection: idle");
                connection.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(too_old_at), if !closing => {
                crate::metrics::connection_closed("max_age");
                tracing::debug!(%peer, "closing a connection: older than MAX_CONNECTION_AGE_SECONDS");
                connection.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + shared.age_grace);
            }
            () = stop_asked(&mut stopped), if !closing => {
                connection.as_mut().graceful_shutdown();
                close_by = Some(Instant::now() + SHUTDOWN_GRACE);
            }
            () = tokio::time::sleep_until(close_by.unwrap_or(first_request_by)), if closing => {
                tracing::debug!(%peer, "connection dropped: it did not finish when asked to");
                return;
            }
        }
    }
}

/// Connections held per client address (IPv6: per /64).
#[derive(Clone)]
struct PerClient {
    cap: u32,
    held: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One connection's place under its client's cap, given back when dropped.
struct ClientSlot {
    key: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl PerClient {
    fn new(cap: u32) -> Self {
        Self { cap, held: Arc::default() }
    }

    fn take(&self, peer: IpAddr) -> Option<ClientSlot> {
        let key = client_key(peer);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot { key, held: self.held.clone() })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The address a client's connections are counted under: IPv4 itself, IPv6 its /64.
fn client_key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

fn finished(ended: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// A request in flight on its connection, until dropped.
struct InFlight(Arc<watch::Sender<Load>>);

impl InFlight {
    fn begin(load: &Arc<watch::Sender<Load>>) -> Self {
        load.send_modify(|load| {
            load.started = true;
            load.in_flight += 1;
        });
        Self(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|load| load.in_flight -= 1);
    }
}

async fn first_request(load: &mut watch::Receiver<Load>) {
    if load.wait_for(|load| load.started).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes once no request has been in flight for `timeout`.
async fn idle_for(load: &mut watch::Receiver<Load>, timeout: Duration) {
    loop {
        if load.wait_for(|load| load.in_flight == 0).await.is_err() {
            // The connection is gone: its own future ends it.
            return std::future::pending().await;
        }
        if tokio::time::timeout(timeout, load.wait_for(|load| load.in_flight > 0)).await.is_err() {
            return;
        }
    }
}

async fn stop_asked(stopped: &mut watch::Receiver<bool>) {
    // An error means the server is gone: stop too.
    let _ = stopped.wait_for(|stop| *stop).await;
}
