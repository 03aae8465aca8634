#![allow(dead_code)] // each test module uses a different part of the harness

use std::{net::SocketAddr, path::PathBuf};

use authd::{
    config::Settings,
    pb::{self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    startup::Application,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio::sync::oneshot;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

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
    pub async fn restart(mut self) -> TestApp {
        let server = self.server.take().unwrap();
        let _ = server.stop.send(());
        server.done.await.unwrap().unwrap();
        let db = self.db.take().unwrap();
        start(db, self.settings.clone()).await
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

    pub async fn grpc_login(&self, email: &str, password: &str) -> Result<pb::TokenResponse, Status> {
        let request = pb::LoginRequest { email: email.into(), password: password.into(), ..Default::default() };
        self.auth().await.login(request).await.map(tonic::Response::into_inner)
    }
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is local),
/// so one test can play callers at several addresses.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
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

    /// Runs one SQL statement on the app's database directly, as an operator would.
    pub async fn sql(&self, statement: &str) {
        let statement = sqlx::AssertSqlSafe(statement.to_owned());
        match backend() {
            Backend::Sqlite => {
                SqliteConnection::connect(self.database_url()).await.unwrap().execute(statement).await.unwrap();
            }
            Backend::Postgres(_) => {
                PgConnection::connect(self.database_url()).await.unwrap().execute(statement).await.unwrap();
            }
        };
    }

    /// The text in the first column of the first row a query returns, if any row.
    pub async fn sql_text(&self, query: &str) -> Option<String> {
        let query = sqlx::AssertSqlSafe(query.to_owned());
        match backend() {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(self.database_url()).await.unwrap();
                sqlx::query_scalar(query).fetch_optional(&mut conn).await.unwrap()
            }
            Backend::Postgres(_) => {
                let mut conn = PgConnection::connect(self.database_url()).await.unwrap();
                sqlx::query_scalar(query).fetch_optional(&mut conn).await.unwrap()
            }
        }
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
