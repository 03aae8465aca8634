//! Wiring: one listener serving gRPC (h2c), grpc-web, the REST shim, health and
//! reflection, with graceful shutdown.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    config::Settings,
    core::Authd,
    grpc::{AuthApi, UserApi},
    metrics,
    pb::{auth_service_server::AuthServiceServer, user_service_server::UserServiceServer},
    rest,
    store::{self, Migrations},
};

/// The largest request body or gRPC message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How often spent rate-limit counters are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// `authd migrate`: applies pending migrations (after the adoption check) and returns.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    store::open(&settings.database, Migrations::Apply).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// `authd rotate-key`: a new generated signing key signs from now on; replicas follow
/// within `SIGNING_KEY_RELOAD_SECONDS`, and the old key stays published until its tokens
/// have expired.
pub async fn rotate_key(settings: &Settings) -> anyhow::Result<()> {
    let store = store::open(&settings.database, Migrations::RequireCurrent).await?;
    let kid = crate::core::keys::rotate(store.as_ref(), &settings.tokens).await?;
    tracing::info!(kid, "signing key rotated");
    Ok(())
}

/// A plain start: builds the application and serves until ctrl-c or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings).await.context("start-up")?.run_until(shutdown_signal()).await
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    authd: Authd,
    health: HealthReporter,
    health_check_interval: Duration,
    header_read_timeout: Duration,
}

impl Application {
    /// Connects to and migrates the database, builds the service and binds the listener
    /// (port 0 picks a free port: see [`Application::local_addr`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let migrations =
            if settings.database.migrate_on_start { Migrations::Apply } else { Migrations::RequireCurrent };
        metrics::install();
        let store = store::open(&settings.database, migrations).await?;
        let authd = Authd::new(store, &settings).await?;
        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, true).await;
        let router = router(authd.clone(), &settings, health_service)?;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("binding LISTEN_ADDR {}", settings.listen_addr))?;
        Ok(Self {
            listener,
            router,
            authd,
            health,
            health_check_interval: settings.limits.health_check_interval,
            header_read_timeout: settings.limits.request_timeout.min(HEADER_READ_TIMEOUT),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets
    /// in-flight requests finish (for at most [`SHUTDOWN_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "authd listening");
        let watcher = tokio::spawn(watch_database(self.authd.clone(), self.health, self.health_check_interval));
        let key_reloader = tokio::spawn(reload_keys(self.authd.clone()));
        let cache_follower = tokio::spawn(async move { self.authd.follow_session_changes().await });
        serve_connections(self.listener, self.router, self.header_read_timeout, shutdown).await;
        watcher.abort();
        key_reloader.abort();
        cache_follower.abort();
        tracing::info!("authd stopped");
        Ok(())
    }
}

/// Headers must arrive within this (or the request timeout, if shorter), or the
/// connection is closed: slow-loris clients cannot hold it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle HTTP/2 connections are pinged this often, and closed when the ping goes unanswered.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The most header bytes read per HTTP/1.1 request, and per HTTP/2 header list.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// In-flight requests get this long to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// hyper's server, configured by hand (axum::serve sets no timer, so no header timeout):
/// HTTP/1.1 and h2c on one listener, each request told its peer address.
async fn serve_connections(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto::Builder, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    use tower::ServiceExt;

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

fn router(
    authd: Authd,
    settings: &Settings,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> anyhow::Result<Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // So that reflection clients can decode the error details we send.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let grpc = Routes::new(UserServiceServer::new(UserApi(authd.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(AuthServiceServer::new(AuthApi(authd.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(health)
        .add_service(reflection().build_v1().context("reflection v1")?)
        .add_service(reflection().build_v1alpha().context("reflection v1alpha")?)
        .into_axum_router()
        .layer(middleware::map_response(oversized_message_status))
        // Only here: on plain HTTP/1.1 routes the grpc-web layer would answer 400.
        .layer(tonic_web::GrpcWebLayer::new());

    Ok(grpc
        .merge(rest::router(authd))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn_with_state(settings.limits.request_timeout, request_timeout))
        .layer(middleware::from_fn(access_log))
        .layer(cors(&settings.cors_allowed_origins)?))
}

/// tonic answers OUT_OF_RANGE to a request message over the size limit; our contract
/// says RESOURCE_EXHAUSTED. No authd method answers OUT_OF_RANGE otherwise. A decoding
/// failure ends the call before any message, so the status is in the headers.
async fn oversized_message_status(mut response: Response) -> Response {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == out_of_range.as_bytes()) {
        let headers = response.headers_mut();
        headers.insert("grpc-status", HeaderValue::from(tonic::Code::ResourceExhausted as i32));
        headers.insert("grpc-message", HeaderValue::from_static("request%20message%20too%20large"));
    }
    response
}

/// Every request gets `limit` to be answered (reading a slow body included): past it,
/// gRPC callers get DEADLINE_EXCEEDED and others 503, and the work is dropped.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if grpc => tonic::Status::deadline_exceeded("request timed out").into_http::<Body>(),
        Err(_) => rest::error_body(http::StatusCode::SERVICE_UNAVAILABLE, "Request timed out."),
    }
}

/// Unknown paths: UNIMPLEMENTED for gRPC callers, FastAPI's 404 for everyone else.
async fn fallback(request: Request) -> Response {
    if is_grpc(&request) {
        tonic::Status::unimplemented("unknown service or method").into_http::<Body>()
    } else {
        rest::not_found().await.into_response()
    }
}

fn is_grpc(request: &Request) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS_ALLOWED_ORIGINS: {o:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names = |names: &[&'static str]| names.iter().map(|n| HeaderName::from_static(n)).collect::<Vec<_>>();
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers(names(&["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"]))
        .expose_headers(names(&[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "www-authenticate",
            "retry-after",
        ]))
        .max_age(Duration::from_secs(600)))
}

/// One log line and one metrics sample per request: method, path (never the query),
/// status, gRPC status when visible, latency. gRPC statuses come in trailers, so the line
/// waits for the body's end. Metrics are labelled by route template, never the raw path.
async fn access_log(request: Request, next: Next) -> Response {
    let grpc = is_grpc(&request);
    let mut line = AccessLine {
        start: Instant::now(),
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
    start: Instant,
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
        let latency = self.start.elapsed();
        if self.grpc {
            // A served method's path names it; any other (UNIMPLEMENTED) is one label.
            let served = self.route.is_some() && grpc_status != Some("12");
            let rpc = if served { self.path.as_str() } else { "unmatched" };
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

/// Keeps gRPC health in step with the database, and prunes spent rate-limit counters.
async fn watch_database(authd: Authd, health: HealthReporter, interval: Duration) {
    // Start-up has just reached the database and reported serving.
    let mut serving = true;
    let mut last_prune = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let now_serving = authd.ready().await.is_ok();
        if now_serving && last_prune.elapsed() >= PRUNE_INTERVAL {
            last_prune = Instant::now();
            if let Err(e) = authd.prune_throttle().await {
                e.log_if_internal();
            }
        }
        if serving != now_serving {
            set_serving(&health, now_serving).await;
            tracing::warn!(serving = now_serving, "database reachability changed");
            serving = now_serving;
        }
    }
}

/// Follows key rotations made by other replicas or by `authd rotate-key`.
async fn reload_keys(authd: Authd) {
    loop {
        tokio::time::sleep(authd.key_reload_interval()).await;
        if let Err(e) = authd.reload_keys().await {
            tracing::warn!(error = format!("{e:#}"), "could not reload the signing keys");
        }
    }
}

async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in ["", "authd.v1.UserService", "authd.v1.AuthService"] {
        health.set_service_status(service, status).await;
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
