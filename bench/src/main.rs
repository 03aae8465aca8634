//! authd-bench: starts a release authd on PostgreSQL, loads it over loopback for a bounded
//! time after a warm-up, and prints one table of throughput and latency, each figure beside
//! its baseline, plus memory and start-up time.
//!
//!     cargo run --release -p authd-bench              # 10 s per case
//!     cargo run --release -p authd-bench -- --smoke   # 1 s per case, to keep it working
//!     cargo run --release -p authd-bench -- --idle-connections   # only the memory held by idle connections
//!     cargo run --release -p authd-bench -- --costs   # only the cost of each operation (CAPACITY.md)
//!     cargo run --release -p authd-bench -- --client   # only the authd-client cases (local checks, logout to refusal)
//!     cargo run --release -p authd-bench -- --throughput   # the table and the client cases, without the
//!                                                          # operation costs and the idle connections
//!
//! A second authd on the same database serves TLS (a certificate made here), for GetMe and
//! REST `/me` over TLS as a ratio to cleartext, and the rate of full TLS handshakes.
//!
//! `BENCH_DATABASE_URL` (else `TEST_DATABASE_URL`, else the local PostgreSQL) names a
//! database where the bench may create and drop its own.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use authd::pb::{
    GetMeRequest, LoginRequest, LogoutRequest, RefreshTokenRequest, RegisterUserRequest, ValidateTokenRequest,
    auth_service_client::AuthServiceClient, user_service_client::UserServiceClient,
};
use authd::{config::PasswordSettings, domain::Password, security::passwords::Passwords};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use sqlx::{Connection, Executor, PgConnection};
use tonic::{
    Request,
    transport::{Certificate, Channel, ClientTlsConfig},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const PASSWORD: &str = "correct horse battery staple";
/// Connections the gRPC load is spread over (HTTP/2 multiplexes the streams on each).
const CHANNELS: usize = 4;
/// Concurrency for the cheap calls, and for the argon2-bound ones. A login spends a few
/// milliseconds on the database besides its hash, so it takes about eight calls in flight
/// per hashing thread to keep every thread busy (measured: 8 in flight left 10% idle).
const CHEAP_CONCURRENCY: usize = 64;
const HASHING_CONCURRENCY: usize = 16;
const USERS: usize = 16;
/// Accounts the Login case and the login storm use: as many as logins in flight, since
/// authd hashes one password per account at a time and refuses a second at once; and apart
/// from the token users, so that `MAX_SESSIONS_PER_USER` never ends the sessions the cheap
/// cases send.
const LOGIN_USERS: usize = HASHING_CONCURRENCY * 2;
/// Idle connections held from each client address (authd's per-client cap is 100).
const CONNECTIONS_PER_ADDRESS: usize = 50;
/// New connections being set up at once, for the handshake rate.
const HANDSHAKE_CONCURRENCY: usize = 16;
/// Distinct live sessions whose tokens the "many sessions" cases send in rotation (a few
/// with `--smoke`), over users holding [`SESSIONS_PER_USER`] each.
const MANY_SESSIONS: usize = 100_000;
const SMOKE_SESSIONS: usize = 2_000;
const SESSIONS_PER_USER: usize = 4;
/// The HMAC key the bench's authd signs with, so that the bench can issue access tokens
/// for the sessions it inserts itself (100,000 logins would take an hour of argon2).
const BENCH_SECRET: &str = "authd-bench access-token key, not a secret: 0123456789abcdef";
/// GetMe and REST `/me` over TLS, as a share of their cleartext throughput.
const TLS_TARGET: f64 = 0.8;

/// How long each case runs, after a warm-up that is not recorded.
#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    duration: Duration,
}

#[tokio::main]
async fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let timing = Timing {
        duration: Duration::from_secs(if smoke { 1 } else { 10 }),
        warmup: Duration::from_secs(if smoke { 0 } else { 2 }),
    };
    let admin_url = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let binary = authd_binary()?;
    if std::env::args().any(|a| a == "--idle-connections") {
        let memory = idle_connections_rss(&binary).await?;
        memory.print();
        return Ok(());
    }
    if std::env::args().any(|a| a == "--client") {
        for algorithm in ["ES256", "EdDSA"] {
            client_cases(&binary, &admin_url, algorithm, timing, smoke).await?;
        }
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "authd-bench: {} per case after {} warm-up; {cores} cores shared by server and load; binary {}",
        humantime(timing.duration),
        humantime(timing.warmup),
        binary.display()
    );

    // The hashing baselines are measured before the load and again after it, each time
    // alone on the machine, and the best figures are kept.
    let mut hashing = HashingBaselines { cores, time: timing.duration / 3, ceiling: 0.0, all_cores: 0.0 };
    hashing.measure().await?;
    let startup_sqlite = startup_to_ready_sqlite(&binary).await?;
    let database = BenchDatabase::create(&admin_url).await?;
    // All the load comes from one address: the rate limits (tested in tests/api/abuse.rs)
    // would measure themselves here, so they are off; the hashing cap stays on.
    let unthrottled = [
        ("LOGIN_IP_LIMIT", "0"),
        ("REGISTER_IP_LIMIT", "0"),
        ("REFRESH_IP_LIMIT", "0"),
        ("UNAUTHENTICATED_IP_LIMIT", "0"),
    ];
    let mut env = vec![("DATABASE_URL", database.url.as_str()), ("SECRET_KEY", BENCH_SECRET)];
    env.extend(unthrottled);
    if std::env::args().any(|a| a == "--costs") {
        let report = Report { costs: measure_costs(&binary, &database, &env, smoke).await?, ..Report::default() };
        database.drop().await;
        report.print_costs();
        return Ok(());
    }
    let server = Server::start(&binary, &env, None).await?;
    // Let start-up allocations settle before reading the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kib()?;
    // The same service over TLS, on the same database (so the same users and keys).
    let tls_files = TlsFiles::create()?;
    let mut tls_env = env.clone();
    tls_env.extend([("TLS_CERT_FILE", tls_files.cert.as_str()), ("TLS_KEY_FILE", tls_files.key.as_str())]);
    let tls_server = Server::start(&binary, &tls_env, Some(tls_files.ca_pem.clone())).await?;
    let introspector = introspector(&binary, &database.url)?;
    let sessions = if smoke { SMOKE_SESSIONS } else { MANY_SESSIONS };
    let result = run_cases(&server, &tls_server, timing, &introspector, (&database.url, sessions)).await;
    let peak_rss = server.peak_rss_kib()?;
    drop(tls_server);
    drop(server);
    // `--throughput`: the table alone, for a quick run; the costs take four minutes.
    let throughput_only = std::env::args().any(|a| a == "--throughput");
    let costs = if throughput_only { Ok(Vec::new()) } else { measure_costs(&binary, &database, &env, smoke).await };
    database.drop().await;
    let mut report = result?;
    report.costs = costs?;
    hashing.measure().await?;
    report.argon2_ceiling = hashing.ceiling;
    report.argon2_all_cores = hashing.all_cores;
    report.memory = Some((idle_rss, peak_rss));
    report.startup_sqlite = Some(startup_sqlite);
    report.print();
    if !throughput_only {
        idle_connections_rss(&binary).await?.print();
    }
    for algorithm in ["ES256", "EdDSA"] {
        client_cases(&binary, &admin_url, algorithm, timing, smoke).await?;
    }
    Ok(())
}

/// Idle connections held at once in the memory measurement.
const IDLE_CONNECTIONS: usize = 10_000;

/// The server's RSS with no connection, then with [`IDLE_CONNECTIONS`] idle ones held.
struct IdleMemory {
    none_kib: u64,
    /// HTTP/2 connections, each after one request (`GET /healthz`), as gRPC clients keep them.
    http2_kib: u64,
    http2_held: usize,
    /// TCP connections that sent nothing yet (within the first-request deadline).
    silent_kib: u64,
    silent_held: usize,
}

/// Measures [`IdleMemory`] on the embedded database. This process holds the client ends:
/// its open-file limit is raised as the server's is.
async fn idle_connections_rss(binary: &Path) -> Result<IdleMemory> {
    authd::server::raise_open_file_limit();
    let data_dir = TempDir::new()?;
    let max = (IDLE_CONNECTIONS + 100).to_string();
    let env = [
        ("DATA_DIR", data_dir.0.to_str().context("a UTF-8 temporary directory")?),
        ("MAX_CONNECTIONS", max.as_str()),
        // The silent connections are held past no deadline while they are counted.
        ("HEADER_READ_TIMEOUT_SECONDS", "120"),
        ("REQUEST_TIMEOUT_SECONDS", "120"),
    ];
    let server = Server::start(binary, &env, None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let none_kib = server.rss_kib()?;

    // HTTP/2 with prior knowledge: the preface, empty SETTINGS, and one GET /healthz
    // (HPACK by hand: :method GET, :scheme http, :path, :authority).
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let headers = [&[0x82, 0x86, 0x44, 8][..], b"/healthz", &[0x41, 5], b"authd"].concat();
    hello.extend(&(headers.len() as u32).to_be_bytes()[1..]);
    hello.extend([0x1, 0x5, 0, 0, 0, 1]);
    hello.extend(headers);
    // Silent ones first: memory freed is not given back to the system at once, so the
    // second figure includes the first's high-water mark.
    let (silent_kib, silent_held) = hold_idle(&server, &[]).await?;
    let (http2_kib, http2_held) = hold_idle(&server, &hello).await?;
    Ok(IdleMemory { none_kib, http2_kib, http2_held, silent_kib, silent_held })
}

/// Opens [`IDLE_CONNECTIONS`] connections, each sending `hello`; the server's RSS once they
/// have settled, and how many it still held then.
async fn hold_idle(server: &Server, hello: &[u8]) -> Result<(u64, usize)> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::with_capacity(IDLE_CONNECTIONS);
    let server_addr: std::net::SocketAddr = server.addr.parse().context("the server's address")?;
    for i in 0..IDLE_CONNECTIONS {
        // From many loopback addresses, as many clients would: authd holds at most
        // MAX_CONNECTIONS_PER_CLIENT (100) connections from one address.
        let client = i / CONNECTIONS_PER_ADDRESS;
        let from = std::net::Ipv4Addr::new(127, 1, (client / 250) as u8, (client % 250 + 1) as u8);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((from, 0).into()).context("binding a loopback client address")?;
        let mut stream = socket.connect(server_addr).await.context("an idle connection")?;
        if !hello.is_empty() {
            stream.write_all(hello).await?;
        }
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = server.rss_kib()?;
    // Held: nothing more to read but not closed (answers already sent are read and dropped).
    let mut held = 0;
    let mut buffer = vec![0u8; 16 * 1024];
    for stream in &streams {
        loop {
            match stream.try_read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    held += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    drop(streams);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((rss, held))
}

impl IdleMemory {
    fn print(&self) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let verdict = |kib: u64| if kib <= 100 * 1024 { "met" } else { "MISSED" };
        println!(
            "RSS with idle connections (SQLite): none {:.1} MiB; {IDLE_CONNECTIONS} HTTP/2 connections after one request \
             each {:.1} MiB ({} held; target ≤ 100 MiB: {}); {IDLE_CONNECTIONS} silent TCP connections {:.1} MiB ({} held; {})",
            mib(self.none_kib),
            mib(self.http2_kib),
            self.http2_held,
            verdict(self.http2_kib),
            mib(self.silent_kib),
            self.silent_held,
            verdict(self.silent_kib),
        );
    }
}

/// The release `authd` beside this binary (the workspace shares one target directory),
/// built first if it is missing or older. It is built together with the bench, so with
/// the features the bench turns on in shared crates (tonic's client, say): those builds
/// are then reused, where building authd alone would compile them all again. The server's
/// code is the same either way.
fn authd_binary() -> Result<PathBuf> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("the bench binary's directory")?;
    let binary = dir.join("authd");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = dir.ends_with("release");
    // The workspace's manifest, wherever the bench was started from.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(cargo);
    build.arg("build").arg("--manifest-path").arg(manifest).args([
        "-p",
        "authd",
        "-p",
        "authd-bench",
        "--bin",
        "authd",
    ]);
    // `cargo run` describes this package in CARGO_* variables; passed on, they would make
    // build scripts that watch them (ring's) rebuild everything.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            build.env_remove(key.as_ref());
        }
    }
    if release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build for authd")?;
    if !status.success() || !binary.exists() {
        bail!("could not build {}", binary.display());
    }
    if !release {
        eprintln!("warning: this is a debug build; run with --release for meaningful figures");
    }
    Ok(binary)
}

struct BenchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    async fn create(admin_url: &str) -> Result<Self> {
        Self::create_named(admin_url, "").await
    }

    async fn create_named(admin_url: &str, suffix: &str) -> Result<Self> {
        let name = format!("authd_bench_{}{suffix}", std::process::id());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("PostgreSQL at {admin_url} (set BENCH_DATABASE_URL)"))?;
        admin.execute(sqlx::AssertSqlSafe(format!(r#"drop database if exists "{name}""#))).await?;
        admin.execute(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#))).await?;
        let (base, _) = admin_url.rsplit_once('/').context("a database URL ends in /<database>")?;
        Ok(Self { admin_url: admin_url.into(), url: format!("{base}/{name}"), name })
    }

    async fn drop(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(r#"drop database if exists "{}" with (force)"#, self.name)))
                .await;
        }
    }
}

/// A running authd process, killed on drop.
struct Server {
    child: Child,
    addr: String,
    /// The CA of its certificate, when it serves TLS.
    ca_pem: Option<String>,
}

impl Server {
    /// Starts authd with nothing configured but `env` and a listener on a free port.
    fn spawn(binary: &Path, env: &[(&str, &str)], ca_pem: Option<String>) -> Result<Self> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(binary)
            .env_clear()
            .env("LISTEN_ADDR", &addr)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting authd")?;
        Ok(Self { child, addr, ca_pem })
    }

    async fn start(binary: &Path, env: &[(&str, &str)], ca_pem: Option<String>) -> Result<Self> {
        let server = Self::spawn(binary, env, ca_pem)?;
        server.wait_ready(Duration::from_secs(30)).await?;
        Ok(server)
    }

    async fn wait_ready(&self, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        let client = self.http_client(1)?;
        let uri: http::Uri = self.url("/readyz").parse()?;
        while start.elapsed() < limit {
            if let Ok(response) = client.get(uri.clone()).await
                && response.status() == 200
            {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bail!("authd was not ready within {limit:?}")
    }

    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in /proc"))?;
        Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
    }

    fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS:")
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM:")
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    async fn channel(&self) -> Result<Channel> {
        let endpoint = Channel::from_shared(self.url(""))?;
        let endpoint = match &self.ca_pem {
            Some(ca) => endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?,
            None => endpoint,
        };
        Ok(endpoint.connect().await?)
    }

    /// An HTTP/1.1 client keeping up to `idle` connections alive, over TLS if it serves TLS.
    fn http_client(&self, idle: usize) -> Result<Client<HttpsConnector<HttpConnector>, Empty<bytes::Bytes>>> {
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_client_config(self.ca_pem.as_deref().unwrap_or(""))?)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(idle).build(connector))
    }
}

/// A rustls client trusting the CA in `ca_pem` (none when empty), with ring.
fn tls_client_config(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A CA and a server certificate for 127.0.0.1 (ECDSA P-256, as most ACME certificates
/// issued today), in files of a temporary directory.
struct TlsFiles {
    _dir: TempDir,
    cert: String,
    key: String,
    ca_pem: String,
}

impl TlsFiles {
    fn create() -> Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?.signed_by(&key, &ca)?;
        let dir = TempDir::new()?;
        let (cert_file, key_file) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        let path = |p: PathBuf| p.to_str().map(str::to_owned).context("a UTF-8 temporary directory");
        Ok(Self { cert: path(cert_file)?, key: path(key_file)?, ca_pem: ca.pem(), _dir: dir })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("authd-bench-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start-up to ready on the embedded database: a first start (creates and migrates the
/// file, generates keys) and a restart; the median of a few of each.
async fn startup_to_ready_sqlite(binary: &Path) -> Result<(Duration, Duration)> {
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let data_dir = TempDir::new()?;
        let data_dir = data_dir.0.to_str().context("a UTF-8 temporary directory")?;
        for times in [&mut first, &mut again] {
            let start = Instant::now();
            let server = Server::spawn(binary, &[("DATA_DIR", data_dir)], None)?;
            server.wait_ready(Duration::from_secs(10)).await?;
            times.push(start.elapsed());
        }
    }
    first.sort();
    again.sort();
    Ok((first[first.len() / 2], again[again.len() / 2]))
}

/// One case's measurements.
struct Stats {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Stats {
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `call` from `concurrency` tasks for the warm-up (not recorded) and then for the
/// duration. `call(task, n)` returns whether the call succeeded.
async fn load<F, Fut>(concurrency: usize, timing: Timing, call: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let warm_until = Instant::now() + timing.warmup;
    let end = warm_until + timing.duration;
    let tasks = (0..concurrency)
        .map(|task| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).ok();
                let (mut ok, mut errors, mut n) = (0u64, 0u64, 0u64);
                loop {
                    let start = Instant::now();
                    if start >= end {
                        break;
                    }
                    let success = call(task, n).await;
                    n += 1;
                    if start < warm_until {
                        continue;
                    }
                    if success {
                        ok += 1;
                        if let Some(h) = histogram.as_mut() {
                            let _ = h.record(start.elapsed().as_micros().max(1) as u64);
                        }
                    } else {
                        errors += 1;
                    }
                }
                (ok, errors, histogram)
            })
        })
        .collect::<Vec<_>>();
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        elapsed: timing.duration,
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
    };
    for task in tasks {
        if let Ok((ok, errors, Some(histogram))) = task.await {
            stats.ok += ok;
            stats.errors += errors;
            let _ = stats.latency_us.add(histogram);
        }
    }
    stats
}

struct Row {
    case: &'static str,
    concurrency: usize,
    stats: Stats,
    /// The baseline this case is measured against, and the target ratio.
    versus: Option<(Baseline, f64)>,
}

#[derive(Clone, Copy)]
enum Baseline {
    Health,
    Argon2,
    /// The same case in cleartext, measured in the same run (its req/s).
    Cleartext(f64),
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    argon2_ceiling: f64,
    argon2_all_cores: f64,
    health_ceiling: f64,
    getme_p99_rest_vs_storm: Option<(f64, f64)>,
    memory: Option<(u64, u64)>,
    startup_sqlite: Option<(Duration, Duration)>,
    costs: Vec<(&'static str, Vec<Cost>)>,
}

/// A service client with the `introspect` scope, which ValidateToken needs, made as an
/// operator makes one (`authd client create`): its `authorization` value.
fn introspector(binary: &Path, database_url: &str) -> Result<String> {
    let output = Command::new(binary)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .args(["client", "create", "authd-bench", "--scope", "introspect"])
        .output()
        .context("running authd client create")?;
    anyhow::ensure!(output.status.success(), "authd client create: {}", String::from_utf8_lossy(&output.stderr));
    let out = String::from_utf8(output.stdout)?;
    let value = |key: &str| out.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
    let (id, secret) = value("client_id: ").zip(value("client_secret: ")).context("authd client create's output")?;
    Ok(authd::security::client_secrets::basic_authorization(&id, &secret))
}

/// A ValidateToken request carrying the service client's `authorization`.
fn validate_request(token: String, authorization: &str) -> tonic::Request<ValidateTokenRequest> {
    let mut request = tonic::Request::new(ValidateTokenRequest { token });
    if let Ok(value) = authorization.parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// `count` live sessions inserted straight into the database (over `count /
/// SESSIONS_PER_USER` users, also inserted), and an access token for each, signed as authd
/// signs them with [`BENCH_SECRET`]: `Bearer <token>` values.
async fn many_sessions(database_url: &str, count: usize) -> Result<Vec<String>> {
    let mut db = PgConnection::connect(database_url).await?;
    let users = count.div_ceil(SESSIONS_PER_USER) as i64;
    sqlx::query(
        "insert into users (name, email, location, password, created_at, updated_at)
         select 'Many ' || i, 'many' || i || '@example.com', 'Loopback', 'not a hash', now(), now()
           from generate_series(1, $1) i",
    )
    .bind(users)
    .execute(&mut db)
    .await?;
    let sessions: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "insert into sessions (session_id, user_id, created_at, last_used_at, expires_at)
         select gen_random_uuid(), u.user_id, now(), now(), now() + interval '1 day'
           from users u, generate_series(1, $1) s
          where u.email like 'many%@example.com'
         returning session_id, user_id",
    )
    .bind(SESSIONS_PER_USER as i64)
    .fetch_all(&mut db)
    .await?;
    let settings = authd::config::Settings::with_database(database_url);
    let key = authd::security::keys::Key::hmac(settings.tokens.algorithm, BENCH_SECRET.as_bytes())?;
    let tokens = authd::security::access::AccessTokens::new(&settings.tokens, key, Vec::new())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    sessions
        .into_iter()
        .take(count)
        .map(|(session, user)| Ok(format!("Bearer {}", tokens.issue(user, session, now, false, &[])?)))
        .collect()
}

/// Whether ValidateToken, asked as the service client `introspector`, finds `bearer`'s token active.
fn active(channel: &Channel, introspector: &str, bearer: &str) -> impl Future<Output = bool> + use<> {
    let mut client = AuthServiceClient::new(channel.clone());
    let request = validate_request(bearer.trim_start_matches("Bearer ").to_owned(), introspector);
    async move { client.validate_token(request).await.is_ok_and(|r| r.into_inner().active) }
}

/// The client crate (`authd-client`) against an authd signing with `algorithm`: its local
/// verification rate beside ValidateToken round trips (target: 5×), and the time from a
/// logout at authd to the client refusing the token, over 200 logouts (target: p99 ≤
/// 100 ms).
async fn client_cases(binary: &Path, admin_url: &str, algorithm: &str, timing: Timing, smoke: bool) -> Result<()> {
    const KEY: &str = "authd-bench-service-key-not-a-secret-0123456789";
    let database = BenchDatabase::create_named(admin_url, &format!("_{}", algorithm.to_lowercase())).await?;
    let service_keys = format!("bench:{KEY}");
    let env = [
        ("DATABASE_URL", database.url.as_str()),
        ("TOKEN_CREATION_ALGORITHM", algorithm),
        ("REVOCATIONS_SERVICE_KEYS", service_keys.as_str()),
        ("LOGIN_IP_LIMIT", "0"),
        ("REGISTER_IP_LIMIT", "0"),
        // 200 logins and logouts from one address in a few seconds.
        ("UNAUTHENTICATED_IP_LIMIT", "0"),
        ("REFRESH_IP_LIMIT", "0"),
        ("MAX_SESSIONS_PER_USER", "1000"),
    ];
    let server = Server::start(binary, &env, None).await?;
    let result = async {
        let channel = server.channel().await?;
        let email = "client@example.com".to_owned();
        let register = RegisterUserRequest {
            name: "Client".into(),
            email: email.clone(),
            location: "Loopback".into(),
            about: None,
            password: PASSWORD.into(),
        };
        UserServiceClient::new(channel.clone()).register_user(register).await?;
        let login = || {
            let (mut auth, email) = (AuthServiceClient::new(channel.clone()), email.clone());
            async move {
                let request = LoginRequest { email, password: PASSWORD.into(), ..Default::default() };
                Ok::<_, tonic::Status>(auth.login(request).await?.into_inner().access_token)
            }
        };
        let token = Arc::new(login().await?);
        let config = authd_client::Config::new("authd", "authd").service_key(KEY);
        let verifier = authd_client::Verifier::connect(channel.clone(), config).await?;

        let introspector = introspector(binary, &database.url)?;
        let round_trips = {
            let (channel, token) = (channel.clone(), Arc::clone(&token));
            load(CHEAP_CONCURRENCY, timing, move |_, _| active(&channel, &introspector, &token)).await
        };
        let local = {
            let (verifier, token) = (verifier.clone(), Arc::clone(&token));
            load(CHEAP_CONCURRENCY, timing, move |_, _| {
                let ok = verifier.verify_local(&token).is_ok();
                async move {
                    tokio::task::yield_now().await;
                    ok
                }
            })
            .await
        };
        println!(
            "authd-client, {algorithm}: local verification {:.0}/s, ValidateToken {:.0}/s: {:.1}× (target ≥ 5×)",
            local.throughput(),
            round_trips.throughput(),
            local.throughput() / round_trips.throughput().max(1.0)
        );

        let logouts = if smoke { 20 } else { 200 };
        let mut took = Vec::with_capacity(logouts);
        for _ in 0..logouts {
            let access = login().await?;
            let mut request = Request::new(LogoutRequest { all_sessions: false });
            request.metadata_mut().insert("authorization", format!("Bearer {access}").parse()?);
            while verifier.verify_local(&access).is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            AuthServiceClient::new(channel.clone()).logout(request).await?;
            let started = Instant::now();
            while verifier.verify_local(&access).is_ok() {
                if started.elapsed() > Duration::from_secs(5) {
                    bail!("the client still accepts a token 5 s after its logout");
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            took.push(started.elapsed());
        }
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
        println!(
            "authd-client, {algorithm}: logout to refusal over {logouts} logouts: p50 {:?}, p99 {:?}, max {:?} (target p99 ≤ 100 ms)",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        Ok(())
    }
    .await;
    drop(server);
    database.drop().await;
    result
}

/// The token of call `n` of `task`: every task walks the whole list, each from its own place.
fn in_rotation(tokens: &[String], task: usize, n: u64) -> &str {
    &tokens[(n as usize).wrapping_mul(CHEAP_CONCURRENCY).wrapping_add(task) % tokens.len()]
}

/// What the server's metrics say of its user cache and revocation set.
async fn cache_gauges(server: &Server) -> Result<String> {
    let response = server.http_client(1)?.get(server.url("/metrics").parse()?).await?;
    let text = String::from_utf8(response.into_body().collect().await?.to_bytes().to_vec())?;
    let gauges =
        text.lines().filter(|l| l.starts_with("authd_users_cached") || l.starts_with("authd_revocations_held"));
    Ok(gauges.collect::<Vec<_>>().join(", "))
}

/// GetMe, ValidateToken and REST `/me`, each sending the tokens of `many` sessions in
/// rotation, after one pass over all of them (timed: each session's first check).
async fn many_sessions_cases(
    server: &Server,
    channels: &Arc<Vec<Channel>>,
    many: Arc<Vec<String>>,
    timing: Timing,
    introspector: &str,
    report: &mut Report,
) -> Result<()> {
    let count = many.len();
    let started = Instant::now();
    let checked = {
        let (channels, many, introspector) = (Arc::clone(channels), Arc::clone(&many), introspector.to_owned());
        batch(count, CHEAP_CONCURRENCY, move |i| active(&channels[i % CHANNELS], &introspector, &many[i])).await?
    };
    println!(
        "{count} distinct sessions: the first check of each (ValidateToken) took {} ({:.0}/s), {checked} active",
        humantime(started.elapsed()),
        count as f64 / started.elapsed().as_secs_f64()
    );
    let stats = {
        let (channels, many) = (Arc::clone(channels), Arc::clone(&many));
        load(CHEAP_CONCURRENCY, timing, move |task, n| {
            let mut client = UserServiceClient::new(channels[task % CHANNELS].clone());
            let mut request = Request::new(GetMeRequest {});
            let token = in_rotation(&many, task, n).parse();
            async move {
                let Ok(value) = token else { return false };
                request.metadata_mut().insert("authorization", value);
                client.get_me(request).await.is_ok()
            }
        })
        .await
    };
    report.rows.push(Row {
        case: "gRPC GetMe, many sessions in rotation",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });
    let stats = {
        let (channels, many, introspector) = (Arc::clone(channels), Arc::clone(&many), introspector.to_owned());
        load(CHEAP_CONCURRENCY, timing, move |task, n| {
            active(&channels[task % CHANNELS], &introspector, in_rotation(&many, task, n))
        })
        .await
    };
    report.rows.push(Row {
        case: "gRPC ValidateToken, many sessions in rotation",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });
    let stats = rest_me_with(server, timing, move |task, n| in_rotation(&many, task, n).to_owned()).await?;
    report.rows.push(Row {
        case: "REST GET /api/v1/me, many sessions in rotation",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });
    Ok(())
}

async fn run_cases(
    server: &Server,
    tls_server: &Server,
    timing: Timing,
    introspector: &str,
    (database_url, sessions): (&str, usize),
) -> Result<Report> {
    let mut channels = Vec::new();
    let mut tls_channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(server.channel().await?);
        tls_channels.push(tls_server.channel().await?);
    }
    let channels = Arc::new(channels);
    let tls_channels = Arc::new(tls_channels);

    // Users to log in as, each with a session whose access token the cheap cases send.
    let mut users = UserServiceClient::new(channels[0].clone());
    let mut auth = AuthServiceClient::new(channels[0].clone());
    let mut tokens = Vec::new();
    for i in 0..USERS {
        let email = format!("bench{i}@example.com");
        users
            .register_user(RegisterUserRequest {
                name: format!("Bench {i}"),
                email: email.clone(),
                location: "Loopback".into(),
                about: None,
                password: PASSWORD.into(),
            })
            .await?;
        let reply =
            auth.login(LoginRequest { email, password: PASSWORD.into(), ..Default::default() }).await?.into_inner();
        tokens.push(format!("Bearer {}", reply.access_token));
    }
    let tokens = Arc::new(tokens);
    for i in 0..LOGIN_USERS {
        users
            .register_user(RegisterUserRequest {
                name: format!("Login {i}"),
                email: format!("login{i}@example.com"),
                location: "Loopback".into(),
                about: None,
                password: PASSWORD.into(),
            })
            .await?;
    }
    let mut report = Report::default();

    let health = {
        let channels = Arc::clone(&channels);
        load(CHEAP_CONCURRENCY, timing, move |task, _| {
            let mut client = HealthClient::new(channels[task % CHANNELS].clone());
            async move { client.check(HealthCheckRequest { service: String::new() }).await.is_ok() }
        })
        .await
    };
    report.health_ceiling = health.throughput();
    report.rows.push(Row {
        case: "grpc.health.v1 Check (baseline)",
        concurrency: CHEAP_CONCURRENCY,
        stats: health,
        versus: None,
    });

    let get_me = |channels: Arc<Vec<Channel>>, tokens: Arc<Vec<String>>| {
        move |task: usize, _| {
            let mut client = UserServiceClient::new(channels[task % CHANNELS].clone());
            let mut request = Request::new(GetMeRequest {});
            let token = tokens[task % USERS].parse();
            async move {
                match token {
                    Ok(value) => {
                        request.metadata_mut().insert("authorization", value);
                        client.get_me(request).await.is_ok()
                    }
                    Err(_) => false,
                }
            }
        }
    };
    let stats = load(CHEAP_CONCURRENCY, timing, get_me(Arc::clone(&channels), Arc::clone(&tokens))).await;
    let getme_p99_rest = stats.quantile_ms(0.99);
    let cleartext = stats.throughput();
    report.rows.push(Row {
        case: "gRPC GetMe",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });
    let stats = load(CHEAP_CONCURRENCY, timing, get_me(Arc::clone(&tls_channels), Arc::clone(&tokens))).await;
    report.rows.push(Row {
        case: "gRPC GetMe over TLS",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Cleartext(cleartext), TLS_TARGET)),
    });

    let stats = {
        let (channels, tokens) = (Arc::clone(&channels), Arc::clone(&tokens));
        let introspector = introspector.to_owned();
        load(CHEAP_CONCURRENCY, timing, move |task, _| {
            let mut client = AuthServiceClient::new(channels[task % CHANNELS].clone());
            let token = tokens[task % USERS].trim_start_matches("Bearer ").to_owned();
            let request = validate_request(token, &introspector);
            async move { client.validate_token(request).await.is_ok_and(|r| r.into_inner().active) }
        })
        .await
    };
    report.rows.push(Row {
        case: "gRPC ValidateToken",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });

    let stats = rest_me(server, &tokens, timing).await?;
    let cleartext = stats.throughput();
    report.rows.push(Row {
        case: "REST GET /api/v1/me",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Health, 0.5)),
    });
    let stats = rest_me(tls_server, &tokens, timing).await?;
    report.rows.push(Row {
        case: "REST GET /api/v1/me over TLS",
        concurrency: CHEAP_CONCURRENCY,
        stats,
        versus: Some((Baseline::Cleartext(cleartext), TLS_TARGET)),
    });

    let many = Arc::new(many_sessions(database_url, sessions).await?);
    let rss_before = server.rss_kib()?;
    many_sessions_cases(server, &channels, many, timing, introspector, &mut report).await?;
    println!(
        "RSS grew by {} KiB while {sessions} sessions were checked (the user cache and the revocation set); {}",
        server.rss_kib()?.saturating_sub(rss_before),
        cache_gauges(server).await.unwrap_or_else(|e| format!("no metrics: {e}"))
    );

    // Each call a new connection and a full handshake (no session resumption), closed at once.
    let stats = {
        let mut config = tls_client_config(tls_server.ca_pem.as_deref().unwrap_or(""))?;
        config.resumption = rustls::client::Resumption::disabled();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = tls_server.addr.clone();
        load(HANDSHAKE_CONCURRENCY, timing, move |_, _| {
            let (connector, addr) = (connector.clone(), addr.clone());
            async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else { return false };
                let Ok(name) = ServerName::try_from("127.0.0.1") else { return false };
                connector.connect(name, tcp).await.is_ok()
            }
        })
        .await
    };
    report.rows.push(Row {
        case: "TLS handshake (new connection, TLS 1.3, ECDSA P-256)",
        concurrency: HANDSHAKE_CONCURRENCY,
        stats,
        versus: None,
    });

    let login = |channels: Arc<Vec<Channel>>| {
        move |task: usize, _| {
            let mut client = AuthServiceClient::new(channels[task % CHANNELS].clone());
            let email = format!("login{}@example.com", task % LOGIN_USERS);
            async move {
                client.login(LoginRequest { email, password: PASSWORD.into(), ..Default::default() }).await.is_ok()
            }
        }
    };
    let stats = load(HASHING_CONCURRENCY, timing, login(Arc::clone(&channels))).await;
    report.rows.push(Row {
        case: "gRPC Login",
        concurrency: HASHING_CONCURRENCY,
        stats,
        versus: Some((Baseline::Argon2, 0.85)),
    });

    let stats = {
        let channels = Arc::clone(&channels);
        load(HASHING_CONCURRENCY, timing, move |task, n| {
            let mut client = UserServiceClient::new(channels[task % CHANNELS].clone());
            let request = RegisterUserRequest {
                name: "New User".into(),
                email: format!("new-{task}-{n}@example.com"),
                location: "Loopback".into(),
                about: None,
                password: PASSWORD.into(),
            };
            async move { client.register_user(request).await.is_ok() }
        })
        .await
    };
    report.rows.push(Row {
        case: "gRPC RegisterUser",
        concurrency: HASHING_CONCURRENCY,
        stats,
        versus: Some((Baseline::Argon2, 0.85)),
    });

    // GetMe while logins keep every core hashing.
    let storm = tokio::spawn({
        let channels = Arc::clone(&channels);
        let storm = Timing { warmup: Duration::ZERO, duration: timing.warmup + timing.duration };
        async move { load(HASHING_CONCURRENCY * 2, storm, login(channels)).await }
    });
    let stats = load(CHEAP_CONCURRENCY / 4, timing, get_me(Arc::clone(&channels), Arc::clone(&tokens))).await;
    let storm = storm.await?;
    report.getme_p99_rest_vs_storm = Some((getme_p99_rest, stats.quantile_ms(0.99)));
    report.rows.push(Row {
        case: "gRPC GetMe during a login storm",
        concurrency: CHEAP_CONCURRENCY / 4,
        stats,
        versus: None,
    });
    report.rows.push(Row {
        case: "  (the storm: gRPC Login)",
        concurrency: HASHING_CONCURRENCY * 2,
        stats: storm,
        versus: None,
    });
    Ok(report)
}

/// What a number of operations of one kind cost: the authd process's CPU time, the CPU
/// time of the PostgreSQL backends serving its database, and what PostgreSQL's own
/// statistics counted for that database.
struct Cost {
    op: &'static str,
    ops: u64,
    authd_cpu_ms: f64,
    postgres_cpu_ms: f64,
    db: DbCounters,
}

/// PostgreSQL's counters for one database: `pg_stat_database` (committed transactions)
/// and `pg_stat_user_tables` (index and sequential scans started, rows read by them,
/// rows inserted, updated, deleted), summed over authd's tables.
#[derive(Default, Clone, Copy)]
struct DbCounters {
    xact_commit: f64,
    scans: f64,
    rows_read: f64,
    inserted: f64,
    updated: f64,
    deleted: f64,
}

impl DbCounters {
    async fn read(admin: &mut PgConnection, stats: &mut PgConnection, database: &str) -> Result<Self> {
        let xact_commit: i64 = sqlx::query_scalar("select xact_commit from pg_stat_database where datname = $1")
            .bind(database)
            .fetch_one(&mut *admin)
            .await?;
        // Read in a fresh snapshot: PostgreSQL caches statistics within a transaction.
        stats.execute("select pg_stat_clear_snapshot()").await?;
        let (scans, rows_read, inserted, updated, deleted): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "select coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint,
                    coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)::bigint,
                    coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
                    coalesce(sum(n_tup_del), 0)::bigint
               from pg_stat_user_tables",
        )
        .fetch_one(&mut *stats)
        .await?;
        Ok(Self {
            xact_commit: xact_commit as f64,
            scans: scans as f64,
            rows_read: rows_read as f64,
            inserted: inserted as f64,
            updated: updated as f64,
            deleted: deleted as f64,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            xact_commit: self.xact_commit - before.xact_commit,
            scans: self.scans - before.scans,
            rows_read: self.rows_read - before.rows_read,
            inserted: self.inserted - before.inserted,
            updated: self.updated - before.updated,
            deleted: self.deleted - before.deleted,
        }
    }
}

/// CPU time (user + system) of a process, in milliseconds, from /proc.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields = stat.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10.0)
}

/// A meter of one server's costs: counters are read before and after each batch of
/// operations, once PostgreSQL's backends have published their statistics (they do so
/// at most once a second, when idle).
struct Meter<'a> {
    server: &'a Server,
    admin: PgConnection,
    stats: PgConnection,
    database: String,
    /// How long a reading waits for authd's idle backends to publish their statistics.
    settle: Duration,
    /// The reading the last operation ended with, which the next one starts from.
    last: Option<Reading>,
}

/// A snapshot a [`Meter`] takes.
#[derive(Clone)]
struct Reading {
    authd_cpu_ms: f64,
    postgres_cpu_ms: std::collections::HashMap<i32, f64>,
    db: DbCounters,
}

impl Meter<'_> {
    async fn read(&mut self) -> Result<Reading> {
        tokio::time::sleep(self.settle).await;
        let backends: Vec<i32> =
            sqlx::query_scalar("select pid from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()")
                .bind(&self.database)
                .fetch_all(&mut self.admin)
                .await?;
        let postgres_cpu_ms = backends.into_iter().filter_map(|pid| Some((pid, cpu_ms(pid as u32)?))).collect();
        Ok(Reading {
            authd_cpu_ms: cpu_ms(self.server.child.id()).context("authd's CPU time")?,
            postgres_cpu_ms,
            db: DbCounters::read(&mut self.admin, &mut self.stats, &self.database).await?,
        })
    }

    /// Runs `batch` (which returns how many operations succeeded) between two readings.
    async fn cost<F: Future<Output = Result<u64>>>(&mut self, op: &'static str, batch: F) -> Result<Cost> {
        let before = match self.last.take() {
            Some(reading) => reading,
            None => self.read().await?,
        };
        let ops = batch.await?;
        let after = self.read().await?;
        self.last = Some(after.clone());
        // Backends that appeared meanwhile count from zero; the stats connection's own is
        // excluded by not being in authd's pool (it is, though, in pg_stat_activity:
        // subtract it).
        let stats_pid = self.stats_pid().await?;
        let postgres_cpu_ms = after
            .postgres_cpu_ms
            .iter()
            .filter(|(pid, _)| **pid != stats_pid)
            .map(|(pid, ms)| ms - before.postgres_cpu_ms.get(pid).copied().unwrap_or(0.0))
            .sum();
        Ok(Cost {
            op,
            ops: ops.max(1),
            authd_cpu_ms: after.authd_cpu_ms - before.authd_cpu_ms,
            postgres_cpu_ms,
            db: after.db.since(before.db),
        })
    }

    async fn stats_pid(&mut self) -> Result<i32> {
        Ok(sqlx::query_scalar("select pg_backend_pid()").fetch_one(&mut self.stats).await?)
    }
}

/// Runs `count` calls of `call(i)` from `concurrency` tasks; returns how many succeeded.
async fn batch<F, Fut>(count: usize, concurrency: usize, call: F) -> Result<u64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.spawn(async move {
            let mut ok = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break ok;
                }
                ok += u64::from(call(i).await);
            }
        });
    }
    Ok(tasks.join_all().await.into_iter().sum())
}

/// The cost of each operation, on a server of its own over the bench database whose
/// background work (health checks, key reloads, the change feed's heartbeat) is held off
/// so that it does not count: with prepared statements (the default), with them off (as
/// behind PgBouncer, though connected directly here), and token checks without the
/// session cache (as while the change feed is down).
async fn measure_costs(
    binary: &Path,
    database: &BenchDatabase,
    env: &[(&str, &str)],
    smoke: bool,
) -> Result<Vec<(&'static str, Vec<Cost>)>> {
    let scale = if smoke { 1 } else { 4 };
    let quiet = [
        ("HEALTH_CHECK_INTERVAL_MS", "3600000"),
        ("SIGNING_KEY_RELOAD_SECONDS", "3600"),
        ("CHANGE_FEED_HEARTBEAT_MS", "3600000"),
    ];
    let mut all = Vec::new();
    for (name, extra) in [
        ("prepared statements on (default)", &[][..]),
        ("DB_PREPARED_STATEMENTS=false", &[("DB_PREPARED_STATEMENTS", "false")][..]),
        (
            "SESSION_CACHE_SECONDS=0 (token checks as while the change feed is down)",
            &[("SESSION_CACHE_SECONDS", "0")][..],
        ),
    ] {
        let mut env = env.to_vec();
        env.extend(quiet);
        env.extend(extra.iter().copied());
        let server = Server::start(binary, &env, None).await?;
        let introspector = introspector(binary, &database.url)?;
        let stats_url = database.url.clone();
        let mut meter = Meter {
            server: &server,
            admin: PgConnection::connect(&database.admin_url).await?,
            stats: PgConnection::connect(&stats_url).await?,
            database: database.name.clone(),
            // PostgreSQL 15 publishes an idle backend's table and transaction counts up to
            // 10 s after its last statement (PGSTAT_IDLE_INTERVAL): read sooner, and one
            // operation's statements are counted in the next one's.
            settle: if smoke { Duration::from_millis(1500) } else { Duration::from_millis(11_500) },
            last: None,
        };
        let costs = op_costs(&server, &mut meter, name, scale, &introspector).await?;
        all.push((name, costs));
    }
    Ok(all)
}

async fn op_costs(
    server: &Server,
    meter: &mut Meter<'_>,
    name: &str,
    scale: usize,
    introspector: &str,
) -> Result<Vec<Cost>> {
    let channel = server.channel().await?;
    let users = 16 * scale;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let email = {
        let tag = tag.clone();
        move |i: usize| format!("cost-{tag}-{i}@example.com")
    };
    let mut costs = Vec::new();
    let only_checks = name.starts_with("SESSION_CACHE_SECONDS");

    let register = {
        let (channel, email) = (channel.clone(), email.clone());
        batch(users, 8, move |i| {
            let mut client = UserServiceClient::new(channel.clone());
            let request = RegisterUserRequest {
                name: "Cost".into(),
                email: email(i),
                location: "Loopback".into(),
                about: None,
                password: PASSWORD.into(),
            };
            async move { client.register_user(request).await.is_ok() }
        })
    };
    let cost = meter.cost("RegisterUser", register).await?;
    if !only_checks {
        costs.push(cost);
    }

    let sessions = Arc::new(Mutex::new(vec![(String::new(), String::new()); users]));
    let login = {
        let (channel, email, sessions) = (channel.clone(), email.clone(), Arc::clone(&sessions));
        batch(users, 8, move |i| {
            let mut client = AuthServiceClient::new(channel.clone());
            let request = LoginRequest { email: email(i), password: PASSWORD.into(), ..Default::default() };
            let sessions = Arc::clone(&sessions);
            async move {
                let Ok(reply) = client.login(request).await else { return false };
                let reply = reply.into_inner();
                sessions.lock().map(|mut s| s[i] = (reply.access_token, reply.refresh_token)).is_ok()
            }
        })
    };
    let cost = meter.cost("Login", login).await?;
    if !only_checks {
        costs.push(cost);
    }

    if !only_checks {
        // Each session rotated four times in a row.
        let refresh = {
            let (channel, sessions) = (channel.clone(), Arc::clone(&sessions));
            batch(users, 8, move |i| {
                let mut client = AuthServiceClient::new(channel.clone());
                let sessions = Arc::clone(&sessions);
                async move {
                    let mut ok = true;
                    for _ in 0..4 {
                        let Some(token) = sessions.lock().ok().map(|s| s[i].1.clone()) else { return false };
                        match client.refresh_token(RefreshTokenRequest { refresh_token: token }).await {
                            Ok(reply) => {
                                let reply = reply.into_inner();
                                if let Ok(mut s) = sessions.lock() {
                                    s[i] = (reply.access_token, reply.refresh_token);
                                }
                            }
                            Err(_) => ok = false,
                        }
                    }
                    ok
                }
            })
        };
        let mut cost = meter.cost("RefreshToken", refresh).await?;
        cost.ops *= 4;
        costs.push(cost);
    }

    let checks = 250 * scale;
    let get_me = {
        let (channel, sessions) = (channel.clone(), Arc::clone(&sessions));
        batch(checks, 16, move |i| {
            let mut client = UserServiceClient::new(channel.clone());
            let token = sessions.lock().ok().map(|s| s[i % s.len()].0.clone()).unwrap_or_default();
            async move {
                let mut request = Request::new(GetMeRequest {});
                let Ok(value) = format!("Bearer {token}").parse() else { return false };
                request.metadata_mut().insert("authorization", value);
                client.get_me(request).await.is_ok()
            }
        })
    };
    costs.push(meter.cost("GetMe (token check)", get_me).await?);
    let validate = {
        let (channel, sessions) = (channel.clone(), Arc::clone(&sessions));
        let introspector = introspector.to_owned();
        batch(checks, 16, move |i| {
            let mut client = AuthServiceClient::new(channel.clone());
            let token = sessions.lock().ok().map(|s| s[i % s.len()].0.clone()).unwrap_or_default();
            let request = validate_request(token, &introspector);
            async move { client.validate_token(request).await.is_ok_and(|r| r.into_inner().active) }
        })
    };
    costs.push(meter.cost("ValidateToken (token check)", validate).await?);

    if !only_checks {
        let logout = {
            let (channel, sessions) = (channel.clone(), Arc::clone(&sessions));
            batch(users, 8, move |i| {
                let mut client = AuthServiceClient::new(channel.clone());
                let token = sessions.lock().ok().map(|s| s[i].0.clone()).unwrap_or_default();
                async move {
                    let mut request = Request::new(LogoutRequest { all_sessions: false });
                    let Ok(value) = format!("Bearer {token}").parse() else { return false };
                    request.metadata_mut().insert("authorization", value);
                    client.logout(request).await.is_ok()
                }
            })
        };
        costs.push(meter.cost("Logout", logout).await?);
    }
    Ok(costs)
}

/// REST `GET /api/v1/me` over HTTP/1.1 keep-alive connections.
async fn rest_me(server: &Server, tokens: &Arc<Vec<String>>, timing: Timing) -> Result<Stats> {
    let tokens = Arc::clone(tokens);
    rest_me_with(server, timing, move |task, _| tokens[task % USERS].clone()).await
}

/// REST `GET /api/v1/me`, call `n` of `task` sending `authorization(task, n)`.
async fn rest_me_with<A>(server: &Server, timing: Timing, authorization: A) -> Result<Stats>
where
    A: Fn(usize, u64) -> String + Send + Sync + 'static,
{
    let client = server.http_client(CHEAP_CONCURRENCY)?;
    let uri: http::Uri = server.url("/api/v1/me").parse()?;
    Ok(load(CHEAP_CONCURRENCY, timing, move |task, n| {
        let request = http::Request::get(uri.clone())
            .header("authorization", authorization(task, n))
            .body(Empty::<bytes::Bytes>::new());
        let client = client.clone();
        async move {
            let Ok(request) = request else { return false };
            match client.request(request).await {
                Ok(response) => {
                    let ok = response.status() == 200;
                    ok && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            }
        }
    })
    .await)
}

/// The argon2 baselines, hashing with authd's own hasher and default parameters.
struct HashingBaselines {
    cores: usize,
    /// How long each measurement takes.
    time: Duration,
    /// Hashes per second the machine can do: one thread's rate times the cores.
    ceiling: f64,
    /// Hashes per second with every core hashing at once: argon2 is memory-hard, so the
    /// cores contend for memory bandwidth and cache, and this is below the ceiling.
    all_cores: f64,
}

impl HashingBaselines {
    /// Measures both figures in three windows each, keeping the best seen so far: on a
    /// shared VM a neighbour's burst lowers a rate, never raises it.
    async fn measure(&mut self) -> Result<()> {
        let window = self.time / 3;
        let one = Passwords::new(&PasswordSettings { concurrency: 1, ..PasswordSettings::default() })?;
        let all = Passwords::new(&PasswordSettings { concurrency: self.cores, ..PasswordSettings::default() })?;
        for _ in 0..3 {
            self.ceiling = self.ceiling.max(hash_rate(&one, 1, window).await? * self.cores as f64);
            self.all_cores = self.all_cores.max(hash_rate(&all, self.cores, window).await?);
        }
        Ok(())
    }
}

/// Hashes per second from `callers` hashing back to back for `time`, after one hash
/// each to warm up.
async fn hash_rate(passwords: &Passwords, callers: usize, time: Duration) -> Result<f64> {
    let mut hashing = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let passwords = passwords.clone();
        hashing.spawn(async move {
            let password = Password::parse_offered(PASSWORD).map_err(anyhow::Error::msg)?;
            passwords.hash(None, &password).await?;
            let (warm, mut hashes) = (Instant::now(), 0u32);
            while warm.elapsed() < time {
                passwords.hash(None, &password).await?;
                hashes += 1;
            }
            Ok::<_, anyhow::Error>(f64::from(hashes) / warm.elapsed().as_secs_f64())
        });
    }
    let rates = hashing.join_all().await.into_iter().collect::<Result<Vec<f64>>>()?;
    Ok(rates.iter().sum())
}

fn humantime(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl Report {
    fn print(&self) {
        println!();
        println!("| case | concurrency | req/s | p50 ms | p99 ms | p99.9 ms | errors | vs baseline | target |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for row in &self.rows {
            let s = &row.stats;
            let baseline = row.versus.map(|(baseline, target)| match baseline {
                Baseline::Health => ("health", self.health_ceiling, target),
                Baseline::Argon2 => ("argon2", self.argon2_ceiling, target),
                Baseline::Cleartext(throughput) => ("cleartext", throughput, target),
            });
            let (ratio, target) = match baseline {
                Some((name, baseline, target)) if baseline > 0.0 => {
                    let ratio = s.throughput() / baseline;
                    let verdict = if ratio >= target { "met" } else { "MISSED" };
                    (format!("{:.0}% of {name}", ratio * 100.0), format!("≥ {:.0}%: {verdict}", target * 100.0))
                }
                _ => (String::new(), String::new()),
            };
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                row.case,
                row.concurrency,
                s.throughput(),
                s.quantile_ms(0.5),
                s.quantile_ms(0.99),
                s.quantile_ms(0.999),
                s.errors,
                ratio,
                target
            );
        }
        println!();
        println!(
            "baselines: health check {:.0} req/s; argon2 ceiling {:.1} hashes/s (one thread × cores); \
             with all cores hashing at once {:.1} hashes/s",
            self.health_ceiling, self.argon2_ceiling, self.argon2_all_cores
        );
        if let Some((rest, storm)) = self.getme_p99_rest_vs_storm {
            let ratio = storm / rest.max(0.001);
            let verdict = if ratio <= 3.0 { "met" } else { "MISSED" };
            println!(
                "GetMe p99 at rest {rest:.2} ms, during the login storm {storm:.2} ms: {ratio:.1}× (target ≤ 3×: {verdict})"
            );
        }
        if let Some((idle, peak)) = self.memory {
            let verdict = if idle <= 30 * 1024 { "met" } else { "MISSED" };
            println!(
                "RSS on PostgreSQL: idle {:.1} MiB (target ≤ 30 MiB: {verdict}), peak {:.1} MiB",
                idle as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
        self.print_costs();
        if let Some((first, again)) = self.startup_sqlite {
            let verdict = if again <= Duration::from_millis(200) && first <= Duration::from_millis(200) {
                "met"
            } else {
                "MISSED"
            };
            println!(
                "start-up to ready on the embedded database (median of 5): first start {:.0} ms, restart {:.0} ms (target ≤ 200 ms: {verdict})",
                first.as_secs_f64() * 1000.0,
                again.as_secs_f64() * 1000.0
            );
        }
    }
}

impl Report {
    fn print_costs(&self) {
        for (server, costs) in &self.costs {
            println!();
            println!("Cost per operation, {server} (CPU from /proc; database figures from PostgreSQL's statistics):");
            println!(
                "| operation | ops | authd CPU ms | PostgreSQL CPU ms | transactions | table scans | rows read | rows inserted | rows updated | rows deleted |"
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for c in costs {
                let per = |v: f64| v / c.ops as f64;
                println!(
                    "| {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    c.op,
                    c.ops,
                    per(c.authd_cpu_ms),
                    per(c.postgres_cpu_ms),
                    per(c.db.xact_commit),
                    per(c.db.scans),
                    per(c.db.rows_read),
                    per(c.db.inserted),
                    per(c.db.updated),
                    per(c.db.deleted)
                );
            }
        }
    }
}
