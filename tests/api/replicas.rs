//! Three replicas of the real binary over one PostgreSQL, behind a real nginx
//! (Debian's nginx-light) balancing round robin: tokens, throttles, refresh rotation and
//! logout work across them, and killing one mid-load loses nothing acknowledged.
//! PostgreSQL only, by nature.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::{
    helpers::{TestDb, ada, eventually, json_of, on_postgres},
    resilience::Process,
};

const PASSWORD: &str = "correct horse battery";

/// nginx in front of `upstreams`, round robin, started unprivileged in a temporary
/// directory of its own (as root: as `nobody`, through setpriv); stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// `None` (after saying why) if nginx is not installed and this is not CI.
    pub async fn round_robin(upstreams: &[SocketAddr]) -> Option<Self> {
        let Some(binary) = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but nginx is not installed (.ci/run installs Debian's nginx-light)"
            );
            eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
            return None;
        };
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("authd-nginx-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers = upstreams.iter().map(|a| format!("server {a} max_fails=1 fail_timeout=10s;")).collect::<String>();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               upstream authd {{ {servers} keepalive 16; }}\n\
               server {{\n\
                 listen {addr};\n\
                 location / {{\n\
                   proxy_pass http://authd;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                   proxy_connect_timeout 1s;\n\
                 }}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mut command = if as_root {
            // Its workers would run as nobody anyway; the whole of it does, in a directory
            // nobody owns.
            assert!(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&dir).status().unwrap().success());
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let child = command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let nginx = Self { addr, child, dir };
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(10), "nginx answers", || async {
            http.get(nginx.url("/healthz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        Some(nginx)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn token(body: &Value, name: &str) -> String {
    body["data"]["user_token"][name].as_str().unwrap_or_else(|| panic!("no {name} in {body}")).to_owned()
}

#[tokio::test]
async fn three_replicas_behind_nginx_act_as_one_and_survive_losing_one() {
    on_postgres("replicas::three_replicas_behind_nginx_act_as_one_and_survive_losing_one", async {
        let db = TestDb::create().await;
        // nginx is the one trusted proxy: each replica sees the caller's own address.
        // The load below comes from one address: only the per-account login throttle,
        // counted in the database, is left on.
        let env = [
            ("LOGIN_FREE_FAILURES", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SESSION_CACHE_SECONDS", "60"),
            ("REGISTER_IP_LIMIT", "0"),
            ("REFRESH_IP_LIMIT", "0"),
            ("UNAUTHENTICATED_IP_LIMIT", "0"),
        ];
        // One after the other: the first migrates and generates the keys all use.
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(Process::spawn(&db.url, &env).await);
        }
        let addrs = replicas.iter().map(|r| r.addr).collect::<Vec<_>>();
        let Some(nginx) = Nginx::round_robin(&addrs).await else { return };
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| http.post(nginx.url(path)).json(&body).send();

        assert_eq!(post("/api/v1/register-user", ada()).await.unwrap().status(), StatusCode::CREATED);
        let login = json!({"email": "ada@example.com", "password": PASSWORD});
        let (status, body) = json_of(post("/api/v1/auth/login", login.clone()).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (access, refresh) = (token(&body, "token"), token(&body, "refreshToken"));

        // Tokens issued through one are accepted by every replica, asked directly.
        for replica in &replicas {
            let me = http.get(replica.url("/api/v1/me")).bearer_auth(&access).send().await.unwrap();
            assert_eq!(me.status(), StatusCode::OK);
        }

        // Racing refreshes of one token, spread over all three by nginx: one successor.
        let refreshes = (0..12).map(|_| post("/api/v1/auth/refresh-token", json!({"token": refresh})));
        let mut successors = Vec::new();
        for response in join_all(refreshes).await {
            let (status, body) = json_of(response.unwrap()).await;
            match status {
                StatusCode::OK => successors.push(token(&body, "refreshToken")),
                StatusCode::UNAUTHORIZED => {}
                other => panic!("refresh answered {other}: {body}"),
            }
        }
        successors.sort();
        successors.dedup();
        assert_eq!(successors.len(), 1, "{successors:?}");
        let (status, body) =
            json_of(post("/api/v1/auth/refresh-token", json!({"token": successors[0]})).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let access = token(&body, "token");

        // Throttling is shared: failures counted wherever they land.
        let wrong = json!({"email": "ada@example.com", "password": "wrong password"});
        for _ in 0..2 {
            assert_eq!(post("/api/v1/auth/login", wrong.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let throttled = post("/api/v1/auth/login", wrong).await.unwrap();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(throttled.headers().contains_key("retry-after"));

        // Every replica has the session cached; a logout through nginx ends it on all
        // three at once.
        for replica in &replicas {
            let me = http.get(replica.url("/api/v1/me")).bearer_auth(&access).send().await.unwrap();
            assert_eq!(me.status(), StatusCode::OK);
        }
        let logout = http.post(nginx.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        for replica in &replicas {
            eventually(Duration::from_secs(2), "every replica refuses the logged-out token", || async {
                let me = http.get(replica.url("/api/v1/me")).bearer_auth(&access).send().await.unwrap();
                me.status() == StatusCode::UNAUTHORIZED
            })
            .await;
        }

        // Load through nginx: registrations, and refresh chains (each rotating its own
        // session's token). One replica is killed half-way.
        let mut chains = Vec::new();
        for i in 0..4 {
            let mut user = ada();
            user["email"] = json!(format!("chain{i}@example.com"));
            assert_eq!(post("/api/v1/register-user", user).await.unwrap().status(), StatusCode::CREATED);
            let login = json!({"email": format!("chain{i}@example.com"), "password": PASSWORD});
            let (status, body) = json_of(post("/api/v1/auth/login", login).await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            chains.push(token(&body, "refreshToken"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at = Arc::new(Mutex::new(None::<Instant>));
        // (registered emails, failures after the kill settled)
        let registered = Arc::new(Mutex::new(Vec::<String>::new()));
        let late_failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let settled = |killed_at: &Mutex<Option<Instant>>, started: Instant| {
            killed_at.lock().unwrap().is_some_and(|at| started > at + Duration::from_millis(500))
        };
        let mut load = Vec::new();
        for task in 0..3 {
            let (http, url, stop) = (http.clone(), nginx.url("/api/v1/register-user"), stop.clone());
            let (registered, late_failures, killed_at) = (registered.clone(), late_failures.clone(), killed_at.clone());
            load.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let email = format!("load{task}-{n}@example.com");
                    n += 1;
                    let mut user = ada();
                    user["email"] = json!(email);
                    let started = Instant::now();
                    match http.post(&url).json(&user).send().await.map(|r| r.status()) {
                        Ok(StatusCode::CREATED) => registered.lock().unwrap().push(email),
                        other if settled(&killed_at, started) => {
                            late_failures.lock().unwrap().push(format!("{other:?}"))
                        }
                        _ => {}
                    }
                }
            }));
        }
        let mut rotations = Vec::new();
        for refresh in chains {
            let (http, url, stop) = (http.clone(), nginx.url("/api/v1/auth/refresh-token"), stop.clone());
            let (late_failures, killed_at) = (late_failures.clone(), killed_at.clone());
            rotations.push(tokio::spawn(async move {
                // The last successor acknowledged, and whether a later attempt went unanswered.
                let (mut current, mut unknown) = (refresh, false);
                while !stop.load(Ordering::SeqCst) && !unknown {
                    let started = Instant::now();
                    let response = http.post(&url).json(&json!({"token": current})).send().await;
                    match response {
                        Ok(r) if r.status() == StatusCode::OK => {
                            let body: Value = r.json().await.unwrap();
                            current = token(&body, "refreshToken");
                        }
                        other => {
                            // Perhaps rotated by the killed replica before it could answer.
                            unknown = true;
                            if settled(&killed_at, started) {
                                late_failures.lock().unwrap().push(format!("refresh: {:?}", other.map(|r| r.status())));
                            }
                        }
                    }
                }
                (current, unknown)
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        replicas[2].kill();
        *killed_at.lock().unwrap() = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(2000)).await;
        stop.store(true, Ordering::SeqCst);
        for task in load {
            task.await.unwrap();
        }
        let mut chain_ends = Vec::new();
        for task in rotations {
            chain_ends.push(task.await.unwrap());
        }
        let late_failures = late_failures.lock().unwrap().clone();
        assert!(late_failures.is_empty(), "the two survivors failed requests: {late_failures:?}");

        // No acknowledged registration is lost.
        let registered = registered.lock().unwrap().clone();
        assert!(registered.len() >= 3, "too little load to tell: {registered:?}");
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let stored: i64 = sqlx::query_scalar("select count(*) from users where email = any($1)")
            .bind(&registered)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, registered.len() as i64);
        // No acknowledged rotation is lost: each chain's last successor still rotates,
        // unless an attempt after it went unanswered (then its fate is unknown to the client).
        let known = chain_ends.iter().filter(|(_, unknown)| !unknown).collect::<Vec<_>>();
        assert!(!known.is_empty(), "every chain lost track of its token: {chain_ends:?}");
        for (current, _) in known {
            let (status, body) =
                json_of(post("/api/v1/auth/refresh-token", json!({"token": current})).await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // And the survivors keep serving everything.
        let (status, body) =
            json_of(post("/api/v1/auth/login", json!({"email": registered[0], "password": PASSWORD})).await.unwrap())
                .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        drop(nginx);
    })
    .await
}
