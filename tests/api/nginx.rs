//! A real nginx in front of authd, serving the configuration kept in
//! `examples/nginx/authd.conf`: clients behind it keep limits of their own, over REST and
//! over gRPC (`grpc_pass`).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;
use tonic::{Code, transport::Endpoint};

use crate::helpers::{TestApp, client_from, eventually, spawn_app_with};
use authd::pb::{LoginRequest, auth_service_client::AuthServiceClient};

/// nginx serving `examples/nginx/authd.conf` in front of one authd, killed on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    /// The HTTP/1.1 listener (REST) and the h2c one (gRPC).
    http: SocketAddr,
    grpc: SocketAddr,
}

/// nginx's binary: on PATH or in /usr/sbin. Missing: the test fails under CI (`.ci/run`
/// installs it), and is skipped with a line on stderr elsewhere.
fn nginx_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true but nginx is not installed (apt-get install nginx-light)");
        eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
    }
    found
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl Nginx {
    async fn start(binary: &Path, authd: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("authd-nginx-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // Run as root (CI), nginx's workers are `nobody`: they write its temporary files here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (http, grpc) = (free_port(), free_port());
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nginx/authd.conf"))
            .expect("examples/nginx/authd.conf");
        let site = example
            .replace("127.0.0.1:8000", &authd.to_string())
            .replace("127.0.0.1:8080", &http.to_string())
            .replace("127.0.0.1:8081", &grpc.to_string());
        assert_ne!(site, example, "the example names authd at 127.0.0.1:8000 and listens on 8080 and 8081");
        std::fs::write(dir.join("authd.conf"), site).unwrap();
        let d = dir.display();
        // What nginx needs to run unprivileged too: every path under `dir`.
        let main = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/authd.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(binary)
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c", &format!("{d}/nginx.conf")])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let nginx = Self { child, dir, http, grpc };
        eventually(Duration::from_secs(10), "nginx listens", || async {
            tokio::net::TcpStream::connect(nginx.http).await.is_ok()
                && tokio::net::TcpStream::connect(nginx.grpc).await.is_ok()
        })
        .await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A gRPC client whose connections to nginx come from `source`.
    async fn auth_from(&self, source: &str) -> AuthServiceClient<tonic::transport::Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.grpc)).unwrap();
        let channel = endpoint.local_address(Some(source.parse().unwrap())).connect().await.expect("gRPC via nginx");
        AuthServiceClient::new(channel)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const LOGIN: &str = r#"{"email": "nobody@example.com", "password": "wrong password"}"#;

async fn rest_login(client: &reqwest::Client, url: &str, forwarded_for: Option<&str>) -> StatusCode {
    let body: serde_json::Value = serde_json::from_str(LOGIN).unwrap();
    let mut request = client.post(url).json(&body);
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    request.send().await.unwrap().status()
}

async fn grpc_login(client: &mut AuthServiceClient<tonic::transport::Channel>) -> Code {
    let request =
        LoginRequest { email: "nobody@example.com".into(), password: "wrong password".into(), ..Default::default() };
    client.login(request).await.unwrap_err().code()
}

async fn app_behind_nginx() -> TestApp {
    spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.throttle.login_per_ip = 2;
    })
    .await
}

async fn clients_behind_nginx_keep_their_own_limits_over_rest_and_grpc() {
    let Some(binary) = nginx_binary() else { return };
    let app = app_behind_nginx().await;
    let nginx = Nginx::start(&binary, app.addr).await;
    let login = nginx.url("/api/v1/auth/login");

    // REST: two clients at two addresses, one proxy between them and authd.
    let (alice, bob) = (client_from("127.0.0.21"), client_from("127.0.0.22"));
    for _ in 0..2 {
        assert_eq!(rest_login(&alice, &login, None).await, StatusCode::UNAUTHORIZED, "{}", nginx.error_log());
    }
    assert_eq!(rest_login(&alice, &login, None).await, StatusCode::TOO_MANY_REQUESTS);
    // A forged X-Forwarded-For does not buy alice a budget: nginx appends her address.
    assert_eq!(rest_login(&alice, &login, Some("198.51.100.1")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rest_login(&alice, &login, Some("127.0.0.22")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rest_login(&bob, &login, None).await, StatusCode::UNAUTHORIZED);

    // gRPC through grpc_pass, likewise.
    let (mut carol, mut dave) = (nginx.auth_from("127.0.0.23").await, nginx.auth_from("127.0.0.24").await);
    for _ in 0..2 {
        assert_eq!(grpc_login(&mut carol).await, Code::Unauthenticated, "{}", nginx.error_log());
    }
    assert_eq!(grpc_login(&mut carol).await, Code::ResourceExhausted);
    assert_eq!(grpc_login(&mut dave).await, Code::Unauthenticated);

    // Everything else still works through it: a registration and a login over REST.
    let registered = bob
        .post(nginx.url("/api/v1/register-user"))
        .json(&json!({"name": "Bob", "email": "bob@example.com", "location": "Paris", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
}

async fn a_client_going_around_nginx_gets_no_other_address_budget() {
    let Some(binary) = nginx_binary() else { return };
    let app = app_behind_nginx().await;
    let nginx = Nginx::start(&binary, app.addr).await;
    // Straight to authd, not through nginx: its forged header is its own word.
    let direct = client_from("127.0.0.31");
    let login = app.url("/api/v1/auth/login");
    for _ in 0..2 {
        assert_eq!(rest_login(&direct, &login, None).await, StatusCode::UNAUTHORIZED);
    }
    for forged in ["198.51.100.1", "127.0.0.32", "127.0.0.32, 127.0.0.1"] {
        assert_eq!(rest_login(&direct, &login, Some(forged)).await, StatusCode::TOO_MANY_REQUESTS, "{forged}");
    }
    // The address it named still has its whole budget, through nginx.
    let named = client_from("127.0.0.32");
    assert_eq!(rest_login(&named, &nginx.url("/api/v1/auth/login"), None).await, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    clients_behind_nginx_keep_their_own_limits_over_rest_and_grpc,
    a_client_going_around_nginx_gets_no_other_address_budget,
);
