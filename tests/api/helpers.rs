#![allow(dead_code)] // each test module uses a different part of the harness

use std::net::SocketAddr;

use authd::{
    config::Settings,
    pb::{self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    startup::Application,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::oneshot;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// The origin the test server lets browsers call from.
pub const ALLOWED_ORIGIN: &str = "https://app.example";

/// A server of our own over a database of its own, dropped with it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub database_url: String,
    pub http: reqwest::Client,
    admin_url: String,
    database: String,
    stop: Option<oneshot::Sender<()>>,
}

/// Where tests may create and drop databases; `TEST_DATABASE_URL` overrides.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let admin_url = admin_url();
    let database = format!("authd_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await.expect(
        "PostgreSQL must be reachable at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)",
    );
    admin.execute(sqlx::AssertSqlSafe(format!(r#"create database "{database}""#))).await.unwrap();
    let database_url = with_database(&admin_url, &database);

    let mut settings = Settings::with_database(&database_url);
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.cors_allowed_origins = vec![ALLOWED_ORIGIN.into()];
    configure(&mut settings);

    let app = Application::build(settings).await.expect("the app starts");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        database_url,
        http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        admin_url,
        database,
        stop: Some(stop),
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL ends in /<database>");
    format!("{base}/{database}")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (admin_url, database) = (self.admin_url.clone(), self.database.clone());
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(r#"drop database if exists "{database}" with (force)"#)))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database {}", self.database);
        }
    }
}

/// A registration that passes every rule.
pub fn ada() -> Value {
    json!({"name": "Ada Lovelace", "email": "ada@example.com", "location": "London", "about": "Analyst", "password": "correct horse battery"})
}

impl TestApp {
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
        let request = pb::LoginRequest { email: email.into(), password: password.into() };
        self.auth().await.login(request).await.map(tonic::Response::into_inner)
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
