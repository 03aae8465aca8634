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
    extract::{MatchedPath, Request},
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
/// How often the database is checked for gRPC health.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

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
        Ok(Self { listener, router, authd, health })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "authd listening");
        let watcher = tokio::spawn(watch_database(self.authd.clone(), self.health));
        let key_reloader = tokio::spawn(reload_keys(self.authd));
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, service).with_graceful_shutdown(shutdown).await;
        watcher.abort();
        key_reloader.abort();
        tracing::info!("authd stopped");
        Ok(served?)
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
        // Only here: on plain HTTP/1.1 routes the grpc-web layer would answer 400.
        .layer(tonic_web::GrpcWebLayer::new());

    Ok(grpc
        .merge(rest::router(authd))
        .merge(rest::openapi::router())
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn(access_log))
        .layer(cors(&settings.cors_allowed_origins)?))
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

/// Keeps gRPC health in step with the database.
async fn watch_database(authd: Authd, health: HealthReporter) {
    // Start-up has just reached the database and reported serving.
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let now_serving = authd.ready().await.is_ok();
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
