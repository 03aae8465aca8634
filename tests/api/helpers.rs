#![allow(dead_code)] // each test module uses a different part of the harness

use std::{
    cell::RefCell,
    io::Write,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use authd::{
    config::{LogFormat, Settings},
    pb::{self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    startup::Application,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, Row, SqliteConnection};
use tokio::sync::oneshot;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;
use tracing_subscriber::EnvFilter;

/// The origin the test server lets browsers call from.
pub const ALLOWED_ORIGIN: &str = "https://app.example";

/// Runs each named `async fn()` test twice: on SQLite always, and on PostgreSQL when
/// `TEST_DATABASE_URL` is set (skipped with a line on stderr otherwise, or failed when
/// `AUTHD_REQUIRE_POSTGRES=1`). The tests are then `<module>::sqlite::<name>` and
/// `<module>::postgres::<name>`.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::helpers::on_sqlite(super::$test()).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::helpers::on_postgres(concat!(module_path!(), "::", stringify!($test)), super::$test()).await
                }
            )+
        }
    };
}

/// The database backend a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// With the URL of a database where tests may create and drop databases.
    Postgres(String),
}

tokio::task_local! {
    static BACKEND: Backend;
}

pub async fn on_sqlite(test: impl Future<Output = ()>) {
    BACKEND.scope(Backend::Sqlite, test).await
}

pub async fn on_postgres(name: &str, test: impl Future<Output = ()>) {
    match postgres_admin_url() {
        Some(url) => BACKEND.scope(Backend::Postgres(url), test).await,
        None if std::env::var("AUTHD_REQUIRE_POSTGRES").is_ok_and(|v| v.trim() == "1") => {
            panic!("AUTHD_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set: {name} cannot run on PostgreSQL")
        }
        None => eprintln!("skipped on PostgreSQL (TEST_DATABASE_URL is not set): {name}"),
    }
}

/// Where tests may create and drop PostgreSQL databases, if anywhere.
fn postgres_admin_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.trim().is_empty())
}

/// The backend of the running test: SQLite unless it runs under [`on_postgres`].
pub fn backend() -> Backend {
    BACKEND.try_with(Backend::clone).unwrap_or(Backend::Sqlite)
}

/// A database of a test's own, removed on drop: a fresh PostgreSQL database, or a
/// SQLite file (not yet created) in a fresh temporary directory.
pub struct TestDb {
    pub url: String,
    place: Place,
}

enum Place {
    Sqlite(PathBuf),
    Postgres { admin_url: String, database: String },
}

impl TestDb {
    pub async fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple();
        match backend() {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("authd-test-{id}"));
                let url = authd::config::sqlite_url(&dir.join("data").join("authd.db"));
                Self { url, place: Place::Sqlite(dir) }
            }
            Backend::Postgres(admin_url) => {
                let database = format!("authd_test_{id}");
                let mut admin =
                    PgConnection::connect(&admin_url).await.expect("PostgreSQL must be reachable at TEST_DATABASE_URL");
                admin.execute(sqlx::AssertSqlSafe(format!(r#"create database "{database}""#))).await.unwrap();
                let url = with_database(&admin_url, &database);
                Self { url, place: Place::Postgres { admin_url, database } }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.place {
            Place::Sqlite(dir) => {
                if let Err(e) = std::fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    eprintln!("could not remove test database directory {}: {e}", dir.display());
                }
            }
            Place::Postgres { admin_url, database } => {
                let (admin_url, database) = (admin_url.clone(), database.clone());
                // Drop runs inside the test's runtime, which cannot block on itself.
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    runtime.block_on(async {
                        let mut admin = PgConnection::connect(&admin_url).await?;
                        admin
                            .execute(sqlx::AssertSqlSafe(format!(
                                r#"drop database if exists "{database}" with (force)"#
                            )))
                            .await
                    })
                })
                .join();
                if !matches!(dropped, Ok(Ok(_))) {
                    eprintln!("could not drop test database {}", self.url);
                }
            }
        }
    }
}

/// A server of our own over a database of its own, dropped with it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Fields drop in order: the server stops before its database goes.
    server: Option<Server>,
    db: Option<TestDb>,
    settings: Settings,
    /// The `authorization` value of a service client with the introspect scope, once made.
    introspector: tokio::sync::OnceCell<String>,
}

struct Server {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::create().await;
    let mut settings = test_settings(&db.url);
    configure(&mut settings);
    start(db, settings).await
}

/// Settings for a test server on `database_url`: port 0, and the test origin allowed.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::with_database(database_url);
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.cors_allowed_origins = vec![ALLOWED_ORIGIN.into()];
    settings
}

/// Starts a server on `db` with `settings` (whose URL should be the database's).
pub async fn start(db: TestDb, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone()).await.expect("the app starts");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel();
    let done = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        server: Some(Server { stop, done }),
        db: Some(db),
        settings,
        introspector: tokio::sync::OnceCell::new(),
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL ends in /<database>");
    format!("{base}/{database}")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop.send(());
        }
    }
}

/// A registration that passes every rule.
pub fn ada() -> Value {
    json!({"name": "Ada Lovelace", "email": "ada@example.com", "location": "London", "about": "Analyst", "password": "correct horse battery"})
}

impl TestApp {
    /// The URL of the app's database, to look at it from a test.
    pub fn database_url(&self) -> &str {
        &self.db.as_ref().unwrap().url
    }

    /// Stops the server, waits for it to finish, and starts a new one (on a new port)
    /// over the same database with the same settings.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// Like [`TestApp::restart`], with the settings changed by `configure` first.
    pub async fn restart_with(self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let (db, mut settings) = self.stop().await;
        configure(&mut settings);
        start(db, settings).await
    }

    /// Stops the server and waits for it to finish; its database and settings remain.
    pub async fn stop(mut self) -> (TestDb, Settings) {
        let server = self.server.take().unwrap();
        let _ = server.stop.send(());
        server.done.await.unwrap().unwrap();
        (self.db.take().unwrap(), self.settings.clone())
    }

    /// Runs one statement on the app's database, binding `args` to `$1`, `$2`, ...; returns
    /// the rows changed. For looking at, or ageing, what the server stored.
    pub async fn sql(&self, sql: &str, args: &[Arg]) -> u64 {
        let url = self.database_url();
        match backend() {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(url).await.unwrap();
                bind!(sql, args).execute(&mut conn).await.unwrap().rows_affected()
            }
            Backend::Postgres(_) => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                bind!(sql, args).execute(&mut conn).await.unwrap().rows_affected()
            }
        }
    }

    /// The first column of every row a query returns, as bytes (text columns too).
    pub async fn sql_column(&self, sql: &str, args: &[Arg]) -> Vec<Vec<u8>> {
        fn bytes<R: Row>(row: &R) -> Vec<u8>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            row.try_get::<Vec<u8>, _>(0).unwrap_or_else(|_| row.get::<String, _>(0).into_bytes())
        }
        let url = self.database_url();
        match backend() {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(url).await.unwrap();
                bind!(sql, args).fetch_all(&mut conn).await.unwrap().iter().map(bytes).collect()
            }
            Backend::Postgres(_) => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                bind!(sql, args).fetch_all(&mut conn).await.unwrap().iter().map(bytes).collect()
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn grpc_channel(&self) -> Channel {
        Channel::from_shared(self.url("")).unwrap().connect().await.expect("gRPC connects")
    }

    pub async fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.grpc_channel().await)
    }

    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.grpc_channel().await)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn register(&self, body: &Value) -> Response {
        self.post_json("/api/v1/register-user", body).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json("/api/v1/auth/login", &json!({"email": email, "password": password})).await
    }

    pub async fn refresh(&self, token: &str) -> Response {
        self.post_json("/api/v1/auth/refresh-token", &json!({"token": token, "tokenType": "Bearer"})).await
    }

    pub async fn me(&self, authorization: Option<&str>) -> Response {
        let mut request = self.http.get(self.url("/api/v1/me"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.unwrap()
    }

    /// Registers Ada and logs her in over REST; returns (access, refresh).
    pub async fn ada_tokens(&self) -> (String, String) {
        assert_eq!(self.register(&ada()).await.status(), StatusCode::CREATED);
        let body: Value = self.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
        let token = &body["data"]["user_token"];
        (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
    }

    /// Runs the authd binary on the app's database with `args`, as an operator would:
    /// (whether it succeeded, stdout, stderr).
    pub fn authd_command(&self, args: &[&str]) -> (bool, String, String) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
            .args(args)
            .env("DATABASE_URL", self.database_url())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    }

    /// A service client made by `authd client create NAME --scope SCOPES`: (id, secret).
    pub fn create_client(&self, name: &str, scopes: &str) -> (String, String) {
        let (ok, out, err) = self.authd_command(&["client", "create", name, "--scope", scopes]);
        assert!(ok, "{out}{err}");
        let value = |key: &str| {
            out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {out}")).to_owned()
        };
        (value("client_id: "), value("client_secret: "))
    }

    /// `Authorization: Basic` for a client id and secret.
    pub fn basic(client_id: &str, secret: &str) -> String {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}")))
    }

    /// The `authorization` value of a service client with the introspect scope (ValidateToken
    /// needs one), made on first use.
    pub async fn introspector(&self) -> String {
        let made = self.introspector.get_or_init(|| async {
            let (id, secret) = self.create_client("introspector", "introspect");
            Self::basic(&id, &secret)
        });
        made.await.clone()
    }

    /// REST ValidateToken as a service client with the introspect scope.
    pub async fn validate(&self, token: &str) -> (StatusCode, Value) {
        let authorization = self.introspector().await;
        let request = self.http.post(self.url("/api/v1/auth/validate")).header("authorization", authorization);
        json_of(request.json(&json!({"token": token})).send().await.unwrap()).await
    }

    /// gRPC ValidateToken as a service client with the introspect scope.
    pub async fn grpc_validate(&self, token: &str) -> Result<pb::ValidateTokenResponse, Status> {
        let mut request = tonic::Request::new(pb::ValidateTokenRequest { token: token.into() });
        request.metadata_mut().insert("authorization", self.introspector().await.parse().unwrap());
        self.auth().await.validate_token(request).await.map(tonic::Response::into_inner)
    }

    pub async fn grpc_login(&self, email: &str, password: &str) -> Result<pb::TokenResponse, Status> {
        let request = pb::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
        self.auth().await.login(request).await.map(tonic::Response::into_inner)
    }
}

/// Another server over the same database, as a second replica would be; stopped on drop.
pub struct Replica {
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    /// Starts a second server on this app's database, with its own settings.
    pub async fn replica(&self, configure: impl FnOnce(&mut Settings)) -> Replica {
        let mut settings = test_settings(self.database_url());
        configure(&mut settings);
        let app = Application::build(settings).await.expect("the replica starts");
        let addr = app.local_addr();
        Replica { addr, server: tokio::spawn(app.run_until(std::future::pending())) }
    }

    /// The text in the first column of the first row a query returns, if any row.
    pub async fn sql_text(&self, query: &str) -> Option<String> {
        self.sql_column(query, &[]).await.first().map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}

/// A value for [`TestApp::sql`].
pub enum Arg {
    Time(chrono::DateTime<chrono::Utc>),
    Id(uuid::Uuid),
}

/// `sqlx::query(sql)` with `args` bound in order; one expansion per backend.
macro_rules! bind {
    ($sql:expr, $args:expr) => {
        $args.iter().fold(sqlx::query(sqlx::AssertSqlSafe($sql.to_owned())), |query, arg| match arg {
            Arg::Time(t) => query.bind(*t),
            Arg::Id(id) => query.bind(*id),
        })
    };
}
use bind;

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is local),
/// so one test can play callers at several addresses.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<IpAddr>().unwrap()).build().unwrap()
}

/// Log events as authd writes them in JSON, caught on this thread (`#[tokio::test]` runs a
/// test and the server it starts on one thread) until dropped. One global subscriber
/// routes each event to its thread's capture: a subscriber per thread would miss events,
/// as tracing decides once per call site, from whichever thread reaches it first, whether
/// any subscriber wants it.
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

impl LogCapture {
    pub fn start() -> Self {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            let subscriber = authd::telemetry::subscriber(LogFormat::Json, EnvFilter::new("info"), || ThreadLog);
            tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
        });
        let buffer = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.set(Some(buffer.clone()));
        Self(buffer)
    }

    /// The events logged so far.
    pub fn events(&self) -> Vec<Value> {
        self.text().lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    }

    /// The log as written.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURE.set(None);
    }
}

/// Writes to the capture of the thread it runs on, if any.
struct ThreadLog;

impl Write for ThreadLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with_borrow(|capture| {
            if let Some(buffer) = capture {
                buffer.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
pub async fn eventually<F: Future<Output = bool>>(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A gRPC request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The (field, description) pairs of an INVALID_ARGUMENT status, checking the code.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad_request = status.get_details_bad_request().expect("a google.rpc.BadRequest detail");
    bad_request.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, body)
}
