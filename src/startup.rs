//! Wiring: builds the core over the store, the routes of both transports, and the
//! background tasks, and hands them to the server. Also the one-shot commands.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Router, body::Body, extract::Request, response::Response};
use tokio::net::TcpListener;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{LimitSettings, Settings},
    core::Authd,
    grpc, metrics, rest, server,
    store::{self, Migrations},
};

/// How often spent rate-limit counters and ended sessions are deleted.
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

/// `authd admin grant|revoke EMAIL ROLE`: prints what it did on a line of its own.
pub async fn change_role(settings: &Settings, email: &str, role: &str, grant: bool) -> anyhow::Result<()> {
    let store = store::open(&settings.database, Migrations::RequireCurrent).await?;
    let role = role.trim();
    let changed = match crate::core::change_role_as_operator(store, email, role, grant).await {
        Ok(changed) => changed,
        Err(crate::core::Error::InvalidInput(violations)) => {
            let why = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>();
            anyhow::bail!("{}", why.join("; "))
        }
        Err(crate::core::Error::UserNotFound) => anyhow::bail!("no user with the email {email:?}"),
        Err(e) => return Err(anyhow::anyhow!(e)),
    };
    let done = match (grant, changed) {
        (true, crate::core::RoleChange::Done) => "granted",
        (true, crate::core::RoleChange::Unchanged) => "already held",
        (false, crate::core::RoleChange::Done) => "revoked",
        (false, crate::core::RoleChange::Unchanged) => "not held",
    };
    println!("{role}: {done}");
    Ok(())
}

/// `authd client ...`, as parsed from the command line.
pub enum ClientCommand {
    Create { name: String, scopes: Vec<String>, certificate: Option<String> },
    List,
    Rotate { client_id: String, grace: Option<Duration> },
    Delete { client_id: String },
}

impl ClientCommand {
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        match args {
            ["create", name, rest @ ..] => {
                let (mut scopes, mut certificate) = (Vec::new(), None);
                let mut rest = rest.iter();
                while let Some(flag) = rest.next() {
                    let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                    match *flag {
                        "--scope" => scopes.push((*value).to_owned()),
                        "--certificate" => certificate = Some((*value).to_owned()),
                        _ => return Err(format!("unknown option {flag}")),
                    }
                }
                Ok(Self::Create { name: (*name).to_owned(), scopes, certificate })
            }
            ["list"] => Ok(Self::List),
            ["rotate", id] => Ok(Self::Rotate { client_id: (*id).to_owned(), grace: None }),
            ["rotate", id, "--grace-seconds", n] => {
                let seconds = n.parse().map_err(|_| format!("--grace-seconds: {n:?} is not a number of seconds"))?;
                Ok(Self::Rotate { client_id: (*id).to_owned(), grace: Some(Duration::from_secs(seconds)) })
            }
            ["delete", id] => Ok(Self::Delete { client_id: (*id).to_owned() }),
            _ => Err("unexpected client arguments".to_owned()),
        }
    }
}

/// `authd client ...`: prints what the operator needs, one item a line.
pub async fn client_command(settings: &Settings, command: ClientCommand) -> anyhow::Result<()> {
    use crate::core::{self, Actor, ClientInfo, Error};
    let store = store::open(&settings.database, Migrations::RequireCurrent).await?;
    let operator = ClientInfo::default();
    let result = match command {
        ClientCommand::Create { name, scopes, certificate } => {
            core::create_client(store, Actor::Operator, &name, &scopes, certificate.as_deref(), &operator).await.map(
                |created| {
                    println!("client_id: {}", created.client_id);
                    println!("client_secret: {}", created.client_secret);
                },
            )
        }
        ClientCommand::List => core::list_clients(&store).await.map(|clients| {
            for c in clients {
                let certificate = c.certificate_name.map(|n| format!(" certificate={n}")).unwrap_or_default();
                println!("{} name={:?} scopes={}{certificate}", c.client_id, c.name, c.scopes.replace(' ', ","));
            }
        }),
        ClientCommand::Rotate { client_id, grace } => {
            let grace = grace.unwrap_or(settings.tokens.client_secret_grace);
            core::rotate_client_secret(store, Actor::Operator, &client_id, grace, &operator).await.map(|rotated| {
                println!("client_id: {}", rotated.client_id);
                println!("client_secret: {}", rotated.client_secret);
            })
        }
        ClientCommand::Delete { client_id } => {
            core::delete_client(store, Actor::Operator, &client_id, &operator).await.map(|()| println!("deleted"))
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(Error::InvalidInput(violations)) => {
            let why = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>();
            anyhow::bail!("{}", why.join("; "))
        }
        Err(Error::ClientNotFound) => anyhow::bail!("no such client"),
        Err(e) => Err(anyhow::anyhow!(e)),
    }
}

/// A plain start: builds the application and serves until ctrl-c or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    Application::build(settings).await.context("start-up")?.run_until(server::shutdown_signal()).await
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    authd: Authd,
    health: HealthReporter,
    health_check_interval: Duration,
    limits: LimitSettings,
    max_connections: u32,
    tls: Option<server::Tls>,
    proxies: server::TrustedProxies,
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
        let routes = grpc::router(authd.clone(), health_service)?
            .merge(rest::router(authd.clone(), &settings.server.cors_allowed_origins))
            .fallback(fallback);
        let router = server::layers(routes, &settings)?;
        let tls = settings.tls.as_ref().map(server::Tls::load).transpose()?;
        let listen_addr = settings.server.listen_addr;
        let listener =
            TcpListener::bind(listen_addr).await.with_context(|| format!("binding LISTEN_ADDR {listen_addr}"))?;
        Ok(Self {
            listener,
            router,
            authd,
            health,
            health_check_interval: settings.limits.health_check_interval,
            max_connections: server::connection_cap(settings.limits.max_connections, settings.database.max_connections),
            proxies: server::TrustedProxies::new(
                &settings.server.trusted_proxies,
                settings.server.trusted_proxy_header,
            ),
            limits: settings.limits,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets
    /// in-flight requests finish (for at most [`server::SHUTDOWN_GRACE`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(
            addr = %self.local_addr(),
            max_connections = self.max_connections,
            tls = self.tls.is_some(),
            "authd listening"
        );
        let watcher = tokio::spawn(watch_database(self.authd.clone(), self.health, self.health_check_interval));
        let key_reloader = tokio::spawn(reload_keys(self.authd.clone()));
        // Asked here, before serving, so that an idle sender never speaks to the database
        // later unless woken.
        let first_mail = self.authd.next_mail_due().await;
        let mail_sender = tokio::spawn({
            let authd = self.authd.clone();
            async move { authd.send_mail(first_mail).await }
        });
        let audit_writer = tokio::spawn({
            let authd = self.authd.clone();
            async move { authd.write_audit().await }
        });
        let cache_follower = tokio::spawn(async move { self.authd.follow_session_changes().await });
        let tls_reloader = self.tls.clone().map(|tls| tokio::spawn(tls.watch()));
        server::serve(self.listener, self.router, &self.limits, self.max_connections, self.tls, self.proxies, shutdown)
            .await;
        if let Some(reloader) = tls_reloader {
            reloader.abort();
        }
        watcher.abort();
        key_reloader.abort();
        cache_follower.abort();
        mail_sender.abort();
        audit_writer.abort();
        tracing::info!("authd stopped");
        Ok(())
    }
}

/// Unknown paths: UNIMPLEMENTED for gRPC callers, FastAPI's 404 for everyone else.
async fn fallback(request: Request) -> Response {
    if server::is_grpc(&request) {
        tonic::Status::unimplemented("unknown service or method").into_http::<Body>()
    } else {
        rest::not_found().await
    }
}

/// Keeps gRPC health and `/readyz` in step with the database, and prunes spent rate-limit
/// counters, ended sessions, spent mail and audit events past their retention (first one check after start-up, then every
/// minute).
async fn watch_database(authd: Authd, health: HealthReporter, interval: Duration) {
    // Start-up has just reached the database and reported serving.
    let mut serving = true;
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::time::sleep(interval).await;
        let now_serving = authd.check_database().await;
        if now_serving {
            // Mail that another replica queued, or left behind, is looked at from here too.
            authd.wake_mail_sender();
        }
        if now_serving && last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            last_prune = Some(Instant::now());
            let pruned = [
                authd.prune_throttle().await,
                authd.prune_sessions().await,
                authd.prune_mail().await,
                authd.prune_passkey_ceremonies().await,
                authd.prune_audit().await,
            ];
            for pruned in pruned {
                if let Err(e) = pruned {
                    e.log_if_internal();
                }
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
    for service in ["", "authd.v1.UserService", "authd.v1.AuthService", "authd.v1.AdminService"] {
        health.set_service_status(service, status).await;
    }
}
