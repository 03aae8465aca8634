//! authd behind a real PgBouncer in transaction mode (see `pgbouncer.rs`), with prepared
//! statements off (`DB_PREPARED_STATEMENTS=false`): the main flows, and the change feed,
//! which must take a direct connection (`DATABASE_LISTEN_URL`) to hear anything, and
//! finds out by its heartbeat when it does not. PostgreSQL only, by nature.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    helpers::{TestApp, TestDb, ada, eventually, json_of, on_postgres, start, test_settings},
    pgbouncer::PgBouncer,
};

const PASSWORD: &str = "correct horse battery";

/// Where the change feed of the apps under test listens.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// Straight to PostgreSQL, as the README says to configure it.
    Direct,
    /// Through PgBouncer too: a misconfiguration, which the heartbeat must find out.
    ThroughPooler,
}

/// A fresh database, a PgBouncer in front of it, and an app reaching the database through
/// PgBouncer with a session cache of a minute (so only the feed can end a cached session
/// early) and a heartbeat every 100 ms.
async fn behind_pgbouncer(
    feed: Feed,
    configure: impl FnOnce(&mut authd::config::Settings),
) -> Option<(PgBouncer, TestApp)> {
    let db = TestDb::create().await;
    if feed == Feed::ThroughPooler {
        // Without a direct connection, migrations are applied beforehand, straight to
        // PostgreSQL, as the README says (the migrator needs a session).
        authd::startup::migrate(&test_settings(&db.url)).await.unwrap();
    }
    let bouncer = PgBouncer::start(&db.url).await?;
    let mut settings = pooled_settings(&bouncer, &db.url, feed);
    configure(&mut settings);
    Some((bouncer, start(db, settings).await))
}

fn pooled_settings(bouncer: &PgBouncer, direct_url: &str, feed: Feed) -> authd::config::Settings {
    let pooled = bouncer.url(direct_url);
    let mut settings = test_settings(&pooled);
    settings.database.prepared_statements = false;
    settings.database.listen_url = Some(match feed {
        Feed::Direct => direct_url.to_owned().into(),
        Feed::ThroughPooler => pooled.into(),
    });
    settings.database.heartbeat_interval = Duration::from_millis(100);
    settings.tokens.session_cache_ttl = Duration::from_secs(60);
    settings
}

/// Another app on the same database, reached the same way.
async fn second_replica(app: &TestApp, bouncer: &PgBouncer, direct_url: &str, feed: Feed) -> crate::helpers::Replica {
    let settings = pooled_settings(bouncer, direct_url, feed);
    app.replica(move |s| *s = settings).await
}

async fn change_feed(http: &reqwest::Client, base: &str) -> String {
    let (status, body) = json_of(http.get(format!("{base}/readyz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["change_feed"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_main_flows_work_through_pgbouncer_in_transaction_mode() {
    on_postgres("pooler::the_main_flows_work_through_pgbouncer_in_transaction_mode", async {
        let Some((_bouncer, app_owned)) = behind_pgbouncer(Feed::Direct, |s| {
            s.throttle.free_failures = 2;
            s.throttle.register_per_ip = 0;
        })
        .await
        else {
            return;
        };
        let app = &app_owned;
        // Register, login, me, refresh.
        let (access, refresh) = app.ada_tokens().await;
        assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
        let (status, body) = json_of(app.refresh(&refresh).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
        assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK, "a retry within the grace window");

        // Self-service: profile, sessions, password.
        let patch = app.http.patch(app.url("/api/v1/me")).bearer_auth(&access).json(&json!({"location": "Paris"}));
        let (status, body) = json_of(patch.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["location"], "Paris");
        let sessions = app.http.get(app.url("/api/v1/me/sessions")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(sessions.status(), StatusCode::OK);
        let change = json!({"current_password": PASSWORD, "new_password": "another horse battery"});
        let changed = app.http.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&change).send().await;
        let (status, body) = json_of(changed.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Many statements at once, so that PgBouncer shares its server connections among
        // authd's: every one must still get its own statement's answer.
        let registrations = (0..12).map(|i| async move {
            let mut user = ada();
            user["email"] = json!(format!("user{i}@example.com"));
            app.register(&user).await
        });
        let bearer = format!("Bearer {access}");
        let checks = (0..24).map(|_| app.me(Some(&bearer)));
        let (registered, checked) = tokio::join!(join_all(registrations), join_all(checks));
        assert!(registered.iter().all(|r| r.status() == StatusCode::CREATED));
        // The password change ended the session the access token belongs to.
        assert!(checked.iter().all(|r| r.status() == StatusCode::UNAUTHORIZED));

        // Logout.
        let body: Value = app.login("ada@example.com", "another horse battery").await.json().await.unwrap();
        let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
        let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::UNAUTHORIZED);

        // Throttling: the account's failures are counted in the database.
        for _ in 0..2 {
            assert_eq!(app.login("user0@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
        }
        let throttled = app.login("user0@example.com", "wrong password").await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);

        // A restart over the migrated database, through PgBouncer.
        let app = app_owned.restart().await;
        assert_eq!(app.login("user1@example.com", PASSWORD).await.status(), StatusCode::OK);
    })
    .await
}

/// Both replicas reach the database through PgBouncer and their feeds go direct: a logout
/// on A reaches B's session cache at once.
#[tokio::test]
async fn a_logout_through_pgbouncer_reaches_the_other_replica_over_the_direct_feed() {
    on_postgres("pooler::a_logout_through_pgbouncer_reaches_the_other_replica_over_the_direct_feed", async {
        let Some((bouncer, a)) = behind_pgbouncer(Feed::Direct, |_| {}).await else { return };
        let direct = a.database_url().to_owned();
        let b = second_replica(&a, &bouncer, &direct, Feed::Direct).await;
        let b_base = b.url("");
        for base in [a.url(""), b_base.clone()] {
            eventually(Duration::from_secs(5), "the change feed is up", || {
                let (http, base) = (a.http.clone(), base.clone());
                async move { change_feed(&http, &base).await == "up" }
            })
            .await;
        }
        let (access, _) = a.ada_tokens().await;
        let b_me = || a.http.get(b.url("/api/v1/me")).bearer_auth(&access).send();
        // B confirms the session, and caches it for a minute.
        for _ in 0..3 {
            assert_eq!(b_me().await.unwrap().status(), StatusCode::OK);
        }
        let logout = a.http.post(a.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        eventually(Duration::from_secs(2), "replica B refuses the logged-out token", || async {
            b_me().await.unwrap().status() == StatusCode::UNAUTHORIZED
        })
        .await;
    })
    .await
}

/// The feed wrongly pointed through PgBouncer: LISTEN succeeds there, but nothing is ever
/// heard. The heartbeat finds it out, the feed is reported down, and token checks ask the
/// database, so a logout on A still ends the session on B at once.
#[tokio::test]
async fn a_feed_through_pgbouncer_is_found_down_and_logouts_still_reach_every_replica() {
    on_postgres("pooler::a_feed_through_pgbouncer_is_found_down_and_logouts_still_reach_every_replica", async {
        let Some((bouncer, a)) = behind_pgbouncer(Feed::ThroughPooler, |_| {}).await else { return };
        let direct = a.database_url().to_owned();
        let b = second_replica(&a, &bouncer, &direct, Feed::ThroughPooler).await;
        // Found down: by the pooler check at once, or at the latest when the heartbeat's three
        // intervals pass unheard (a bound with room for a loaded machine, not a timing claim).
        for base in [a.url(""), b.url("")] {
            eventually(Duration::from_secs(10), "the feed is found down", || {
                let (http, base) = (a.http.clone(), base.clone());
                async move { change_feed(&http, &base).await == "down" }
            })
            .await;
        }
        let metrics = a.http.get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.lines().any(|l| l == "authd_change_feed_up 0"), "{metrics}");

        assert_eq!(a.register(&ada()).await.status(), StatusCode::CREATED);
        let (status, body) = json_of(a.login("ada@example.com", PASSWORD).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
        let b_me = || a.http.get(b.url("/api/v1/me")).bearer_auth(&access).send();
        for _ in 0..3 {
            assert_eq!(b_me().await.unwrap().status(), StatusCode::OK);
        }
        let logout = a.http.post(a.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        // At once: B asks the database, it does not trust its cache.
        assert_eq!(b_me().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    })
    .await
}

/// A feed that goes direct hears its heartbeat: up, in readiness and in the metric.
#[tokio::test]
async fn a_direct_feed_reports_up_in_readiness_and_metrics() {
    on_postgres("pooler::a_direct_feed_reports_up_in_readiness_and_metrics", async {
        let Some((_bouncer, app)) = behind_pgbouncer(Feed::Direct, |_| {}).await else { return };
        eventually(Duration::from_secs(5), "the change feed is up", || async {
            change_feed(&app.http, &app.url("")).await == "up"
        })
        .await;
        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.lines().any(|l| l == "authd_change_feed_up 1"), "{metrics}");
    })
    .await
}

/// A TCP proxy whose answers can be held back: the connections stay open and what the
/// server sends waits in the proxy, as on a link that went quiet.
struct MutableProxy {
    addr: std::net::SocketAddr,
    muted: Arc<AtomicBool>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl MutableProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let muted = Arc::new(AtomicBool::new(false));
        let acceptor = tokio::spawn({
            let muted = muted.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (target, muted) = (target.clone(), muted.clone());
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else { return };
                        let (mut client_read, mut client_write) = inbound.into_split();
                        let (mut server_read, mut server_write) = outbound.into_split();
                        tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        });
                        let mut buffer = vec![0u8; 16 * 1024];
                        while let Ok(n) = server_read.read(&mut buffer).await {
                            if n == 0 {
                                break;
                            }
                            while muted.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, muted, acceptor }
    }

    /// `url` with the proxy's address in place of the server's.
    fn url(&self, url: &str) -> String {
        let options = PgConnectOptions::from_str(url).unwrap();
        format!("postgres://{}@{}/{}", options.get_username(), self.addr, options.get_database().unwrap_or_default())
    }
}

impl Drop for MutableProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// A feed that was up and goes quiet (its connection open, nothing arriving) is found
/// down by its heartbeat within three intervals, and token checks ask the database: a
/// logout on another replica is refused at once. When the link speaks again the
/// heartbeat comes back and so does the feed.
#[tokio::test]
async fn a_feed_that_goes_quiet_is_found_down_and_comes_back_up() {
    on_postgres("pooler::a_feed_that_goes_quiet_is_found_down_and_comes_back_up", async {
        let db = TestDb::create().await;
        let target = PgConnectOptions::from_str(&db.url).unwrap();
        let proxy = MutableProxy::start(format!("{}:{}", target.get_host(), target.get_port())).await;
        let mut settings = test_settings(&db.url);
        settings.database.listen_url = Some(proxy.url(&db.url).into());
        settings.database.heartbeat_interval = Duration::from_millis(100);
        settings.tokens.session_cache_ttl = Duration::from_secs(60);
        let a = start(db, settings).await;
        let b = a.replica(|_| {}).await;
        let feed_is = |state: &'static str| {
            let (http, base) = (a.http.clone(), a.url(""));
            move || {
                let (http, base) = (http.clone(), base.clone());
                async move { change_feed(&http, &base).await == state }
            }
        };
        eventually(Duration::from_secs(5), "A's change feed is up", feed_is("up")).await;

        let (access, _) = a.ada_tokens().await;
        let a_me = || a.http.get(a.url("/api/v1/me")).bearer_auth(&access).send();
        assert_eq!(a_me().await.unwrap().status(), StatusCode::OK);

        proxy.muted.store(true, Ordering::SeqCst);
        eventually(Duration::from_secs(2), "A's change feed is down", feed_is("down")).await;
        let logout = a.http.post(b.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        assert_eq!(a_me().await.unwrap().status(), StatusCode::UNAUTHORIZED, "A asks the database");

        proxy.muted.store(false, Ordering::SeqCst);
        eventually(Duration::from_secs(5), "A's change feed is up again", feed_is("up")).await;
    })
    .await
}

/// The probe that keeps the feed from LISTENing through a pooler (where it would leave a
/// pooled server connection listening, and every later client of it would receive
/// notifications it cannot read) is right every time: through PgBouncer while other
/// clients keep the pooler's server connections busy, and straight to PostgreSQL.
#[tokio::test]
async fn the_pooler_probe_finds_pgbouncer_every_time_also_under_load() {
    on_postgres("pooler::the_pooler_probe_finds_pgbouncer_every_time_also_under_load", async {
        let db = TestDb::create().await;
        let Some(bouncer) = PgBouncer::start(&db.url).await else { return };
        let pooled = PgConnectOptions::from_str(&bouncer.url(&db.url)).unwrap().extra_float_digits(None);
        let direct = PgConnectOptions::from_str(&db.url).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Eight clients, each holding a server connection half of the time.
        let load: Vec<_> = (0..8)
            .map(|_| {
                let (pooled, stop) = (pooled.clone(), stop.clone());
                tokio::spawn(async move {
                    use sqlx::{Connection, Executor};
                    let mut connection = sqlx::PgConnection::connect_with(&pooled).await.unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        connection.execute("select pg_sleep(0.002)").await.unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        for round in 0..20 {
            assert!(authd::store::shares_sessions(&pooled).await.unwrap(), "PgBouncer not found in round {round}");
        }
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        for round in 0..5 {
            assert!(
                !authd::store::shares_sessions(&direct).await.unwrap(),
                "PostgreSQL taken for a pooler in round {round}"
            );
        }
    })
    .await
}
