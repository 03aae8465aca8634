//! Prometheus metrics. Callers record through the small functions here (the core its
//! login and refresh outcomes, startup's access log each request); the names and labels
//! live in this one file. Labels are route templates, RPC names, methods and status
//! codes: never a raw path, and never anything about a user.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::PoolUsage;

const HTTP_REQUESTS: &str = "authd_http_requests_total";
const HTTP_DURATION: &str = "authd_http_request_duration_seconds";
const GRPC_REQUESTS: &str = "authd_grpc_requests_total";
const GRPC_DURATION: &str = "authd_grpc_request_duration_seconds";
const LOGINS: &str = "authd_logins_total";
const REFRESH_REUSE: &str = "authd_refresh_token_reuse_detected_total";
const POOL_CONNECTIONS: &str = "authd_db_pool_connections";
const CHANGE_FEED_UP: &str = "authd_change_feed_up";
const CONNECTIONS_CLOSED: &str = "authd_connections_closed_total";
const TOKEN_CHECKS: &str = "authd_token_checks_total";
const CLIENT_CHECKS: &str = "authd_client_checks_total";
const REVOCATIONS_HELD: &str = "authd_revocations_held";
const USERS_CACHED: &str = "authd_users_cached";

/// Latency buckets, in seconds: from a cached token check to a slow password hash.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls, as from each test server,
/// share it). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
                .map(PrometheusBuilder::build_recorder);
            let recorder = match recorder {
                Ok(recorder) => recorder,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("metrics disabled: another recorder is installed");
                return None;
            }
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "REST and other plain HTTP requests, by method, route and status");
    metrics::describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request latency, by method and route");
    metrics::describe_counter!(GRPC_REQUESTS, "gRPC and grpc-web calls, by RPC and gRPC status code");
    metrics::describe_histogram!(GRPC_DURATION, metrics::Unit::Seconds, "gRPC call latency, by RPC");
    metrics::describe_counter!(LOGINS, "Login attempts with well-formed input, by outcome (success, failure)");
    metrics::describe_counter!(REFRESH_REUSE, "Refresh tokens presented again after rotation: the session was ended");
    metrics::describe_gauge!(POOL_CONNECTIONS, "Database pool connections, by state (in_use, idle)");
    metrics::describe_gauge!(
        CHANGE_FEED_UP,
        "1 while this process hears other processes' session changes (its heartbeat comes back), else 0: token checks then ask the database"
    );
    metrics::describe_counter!(
        TOKEN_CHECKS,
        "Access-token liveness checks, by what answered: memory (no query), user_lookup (live from memory, profile read), database (the feed was down, or the user changed)"
    );
    metrics::describe_gauge!(
        REVOCATIONS_HELD,
        "Ended sessions and changed users held in the in-process revocation set"
    );
    metrics::describe_gauge!(USERS_CACHED, "Users in the in-process user cache");
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "Client connections closed by authd, by reason (over_capacity, no_request, idle)"
    );
}

/// The text exposition of every metric, after sampling the pool and the change feed.
pub fn render(pool: PoolUsage, change_feed_up: bool, cache_sizes: (usize, usize)) -> Option<String> {
    let handle = install()?;
    metrics::gauge!(REVOCATIONS_HELD).set(cache_sizes.0 as f64);
    metrics::gauge!(USERS_CACHED).set(cache_sizes.1 as f64);
    metrics::gauge!(CHANGE_FEED_UP).set(if change_feed_up { 1.0 } else { 0.0 });
    metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use").set(f64::from(pool.in_use()));
    metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
    handle.run_upkeep();
    Some(handle.render())
}

/// One plain HTTP request; `route` is the matched route template (`unmatched` for none).
pub fn http_request(method: &str, route: &str, status: u16, latency: Duration) {
    // A client may send any method name: only the standard ones become label values.
    let method = match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "CONNECT" | "TRACE" => method,
        _ => "other",
    };
    let (method, route) = (method.to_owned(), route.to_owned());
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route).record(latency.as_secs_f64());
}

/// One gRPC call; `rpc` is `/package.Service/Method` of a served method (`unmatched` for none).
pub fn grpc_request(rpc: &str, code: &str, latency: Duration) {
    let rpc = rpc.to_owned();
    metrics::counter!(GRPC_REQUESTS, "rpc" => rpc.clone(), "code" => code.to_owned()).increment(1);
    metrics::histogram!(GRPC_DURATION, "rpc" => rpc).record(latency.as_secs_f64());
}

pub fn login_succeeded() {
    metrics::counter!(LOGINS, "outcome" => "success").increment(1);
}

pub fn login_failed() {
    metrics::counter!(LOGINS, "outcome" => "failure").increment(1);
}

pub fn refresh_reuse_detected() {
    metrics::counter!(REFRESH_REUSE).increment(1);
}

/// A client connection authd closed: `over_capacity` (past `MAX_CONNECTIONS`), `no_request`
/// (none before the deadline), `idle`, or `tls_handshake` (failed or unfinished by then).
pub fn connection_closed(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// What answered a token's liveness check.
#[derive(Debug, Clone, Copy)]
pub enum CheckedBy {
    Memory,
    UserLookup,
    Database,
}

pub fn token_checked(by: CheckedBy) {
    let by = match by {
        CheckedBy::Memory => "memory",
        CheckedBy::UserLookup => "user_lookup",
        CheckedBy::Database => "database",
    };
    metrics::counter!(TOKEN_CHECKS, "answered_by" => by).increment(1);
}

/// What gave a service client's record: `memory` (the client cache) or `database`.
pub fn client_checked(from_memory: bool) {
    let by = if from_memory { "memory" } else { "database" };
    metrics::counter!(CLIENT_CHECKS, "answered_by" => by).increment(1);
}
