//! Faults: a database that goes away and comes back, SIGTERM with requests in flight, and
//! two replicas over one PostgreSQL. The replica and shutdown tests run the real binary.

use std::{
    net::SocketAddr,
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{TestApp, TestDb, ada, eventually, json_of, on_postgres, start, test_settings, with_bearer};
use authd::pb::GetMeRequest;

const PASSWORD: &str = "correct horse battery";

/// A TCP proxy the test can cut (dropping every connection and refusing new ones) and
/// restore: a database outage without touching the machine's PostgreSQL.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bytes the app has sent the database through the proxy.
    sent: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio::spawn({
            let (cut, sent, connections) = (cut.clone(), sent.clone(), connections.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection closes at once
                    }
                    let (target, sent) = (target.clone(), sent.clone());
                    connections.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let mut inbound = Counted { stream: inbound, count: sent };
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            }
        });
        Self { addr, cut, sent, connections, acceptor }
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.connections.lock().unwrap().drain(..).for_each(|c| c.abort());
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

/// A stream that counts the bytes read from it.
struct Counted {
    stream: TcpStream,
    count: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.count.fetch_add((buf.filled().len() - before) as u64, Ordering::SeqCst);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// `postgres://user@host:port/db` with the host and port replaced by `addr`; and the
/// host and port it had.
fn via(url: &str, addr: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (user, host) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:5432") };
    let at = if user.is_empty() { String::new() } else { format!("{user}@") };
    (format!("{scheme}://{at}{addr}/{path}"), host)
}

/// An app whose database connections go through a [`Proxy`] of the test's.
async fn behind_proxy(configure: impl FnOnce(&mut authd::config::Settings)) -> (TestApp, Proxy) {
    let db = TestDb::create().await;
    let (_, target) = via(&db.url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target).await;
    let mut settings = test_settings(&via(&db.url, proxy.addr).0);
    configure(&mut settings);
    (start(db, settings).await, proxy)
}

async fn health(app: &TestApp) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(app.url("")).unwrap().connect().await.ok()?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

#[tokio::test]
async fn a_database_outage_answers_unavailable_and_heals_without_a_restart() {
    on_postgres("resilience::a_database_outage_answers_unavailable_and_heals_without_a_restart", async {
        let (app, proxy) = behind_proxy(|s| s.limits.health_check_interval = Duration::from_millis(200)).await;
        let (access, _) = app.ada_tokens().await;

        proxy.cut();
        // Every call answers, and soon: UNAVAILABLE / 503 with nothing of the cause.
        let unavailable = json!({"error": {"error": "Service temporarily unavailable."}});
        let bearer = format!("Bearer {access}");
        let calls = async {
            let mut bob = ada();
            bob["email"] = json!("bob@example.com");
            tokio::join!(app.me(Some(&bearer)), app.login("ada@example.com", PASSWORD), app.register(&bob), async {
                app.users().await.get_me(with_bearer(GetMeRequest {}, &access)).await
            },)
        };
        let (me, login, register, grpc_me) =
            tokio::time::timeout(Duration::from_secs(20), calls).await.expect("calls answer during an outage");
        for response in [me, login, register] {
            assert_eq!(json_of(response).await, (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone()));
        }
        let status = grpc_me.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "Service temporarily unavailable."));
        // Readiness is the health watcher's last finding: it follows within its interval.
        eventually(Duration::from_secs(20), "/readyz 503", || async {
            app.http.get(app.url("/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        eventually(Duration::from_secs(20), "gRPC health NOT_SERVING", || async {
            health(&app).await == Some(ServingStatus::NotServing)
        })
        .await;

        proxy.restore();
        eventually(Duration::from_secs(30), "/readyz 200 again", || async {
            app.http.get(app.url("/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        eventually(Duration::from_secs(20), "gRPC health SERVING again", || async {
            health(&app).await == Some(ServingStatus::Serving)
        })
        .await;
        // The registration acknowledged before the outage is there; new ones work.
        assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK);
        let mut bob = ada();
        bob["email"] = json!("bob@example.com");
        assert_eq!(app.register(&bob).await.status(), StatusCode::CREATED);
        assert_eq!(app.login("bob@example.com", PASSWORD).await.status(), StatusCode::OK);
    })
    .await
}

/// The authd binary, serving on a port of its own; killed on drop.
/// The real binary, as a deployment runs it; killed on drop.
pub(crate) struct Process {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Process {
    pub(crate) async fn spawn(database_url: &str, env: &[(&str, &str)]) -> Self {
        // A free port: bound and released (the binary reports its port only in its log).
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_authd"))
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let process = Self { child, addr };
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "authd answers /healthz", || async {
            http.get(process.url("/healthz")).send().await.is_ok()
        })
        .await;
        process
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL: the process ends at once, requests in flight and all.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// The exit code, waiting at most `limit`.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(tokio::time::Instant::now() < deadline, "authd did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/readyz` is asked by load balancers every few seconds, and by anyone who likes: it
/// answers from what the health watcher last found, and sends the database nothing.
#[tokio::test]
async fn readiness_answers_from_the_health_watcher_without_asking_the_database() {
    on_postgres("resilience::readiness_answers_from_the_health_watcher_without_asking_the_database", async {
        let (app, proxy) = behind_proxy(|s| {
            // Neither the watcher, the key reloader nor the change feed's heartbeat (after
            // its first) speaks during the test.
            s.limits.health_check_interval = Duration::from_secs(3600);
            s.tokens.key_reload_interval = Duration::from_secs(3600);
            s.database.heartbeat_interval = Duration::from_secs(3600);
        })
        .await;
        assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
        // The change feed has connected and heard its first heartbeat.
        eventually(Duration::from_secs(5), "the change feed is up", || async {
            let body: Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
            body["change_feed"] == "up"
        })
        .await;

        let before = proxy.bytes_sent();
        for _ in 0..50 {
            assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
        }
        // One `select 1` takes over a hundred bytes on the wire; fifty would take kilobytes.
        let sent = proxy.bytes_sent() - before;
        assert!(sent < 100, "50 readiness checks sent the database {sent} bytes");
    })
    .await
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let db = TestDb::create().await;
    let mut authd = Process::spawn(&db.url, &[]).await;

    // A registration in flight: headers and half the body sent.
    let body = ada().to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(authd.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/register-user HTTP/1.1\r\nhost: authd\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    authd.terminate();
    eventually(Duration::from_secs(10), "new connections are refused", || async {
        TcpStream::connect(authd.addr).await.is_err()
    })
    .await;

    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(authd.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn two_replicas_act_as_one_service() {
    on_postgres("resilience::two_replicas_act_as_one_service", async {
        let db = TestDb::create().await;
        let env = [("LOGIN_FREE_FAILURES", "2")];
        // One after the other: the first generates the keys both use.
        let a = Process::spawn(&db.url, &env).await;
        let b = Process::spawn(&db.url, &env).await;
        let http = reqwest::Client::new();
        let post = |p: &Process, path: &str, body: Value| http.post(p.url(path)).json(&body).send();

        assert_eq!(post(&a, "/api/v1/register-user", ada()).await.unwrap().status(), StatusCode::CREATED);
        let login = json!({"email": "ada@example.com", "password": PASSWORD});
        let (status, body) = json_of(post(&a, "/api/v1/auth/login", login).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
        let refresh = body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();

        // Tokens issued by one are accepted by the other.
        let me = http.get(b.url("/api/v1/me")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(me.status(), StatusCode::OK);

        // Concurrent refreshes of one token, split across both, yield one successor.
        let refreshes = (0..8).map(|i| {
            let replica = if i % 2 == 0 { &a } else { &b };
            post(replica, "/api/v1/auth/refresh-token", json!({"token": refresh, "tokenType": "Bearer"}))
        });
        let mut successors = Vec::new();
        for response in join_all(refreshes).await {
            let (status, body) = json_of(response.unwrap()).await;
            match status {
                StatusCode::OK => successors.push(body["data"]["user_token"]["refreshToken"].clone()),
                StatusCode::UNAUTHORIZED => {}
                other => panic!("refresh answered {other}: {body}"),
            }
        }
        successors.dedup();
        assert_eq!(successors.len(), 1, "{successors:?}");
        let next = json!({"token": successors[0], "tokenType": "Bearer"});
        assert_eq!(post(&b, "/api/v1/auth/refresh-token", next).await.unwrap().status(), StatusCode::OK);

        // Throttling is shared: failures on one replica count on the other.
        let wrong = json!({"email": "ada@example.com", "password": "wrong password"});
        for _ in 0..2 {
            assert_eq!(post(&a, "/api/v1/auth/login", wrong.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let throttled = post(&b, "/api/v1/auth/login", wrong).await.unwrap();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(throttled.headers().contains_key("retry-after"));
    })
    .await
}
