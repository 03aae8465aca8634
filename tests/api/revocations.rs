//! Token checks answered from memory: the in-process revocation set, kept complete by
//! local changes, other replicas' NOTIFY, and a resync from the revocation log whenever the
//! feed (re)connects; the database while the feed is down.

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::helpers::{
    TestApp, TestDb, eventually, json_of, on_postgres, spawn_app, spawn_app_with, start, test_settings,
};
use authd::pb::{GetMeRequest, RevocationEvent, WatchRevocationsRequest, revocation_event::Event};

const PASSWORD: &str = "correct horse battery";

async fn feed(http: &reqwest::Client, base: &str) -> String {
    let (_, body) = json_of(http.get(format!("{base}/readyz")).send().await.unwrap()).await;
    body["change_feed"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the server at `base` trusts memory: its feed is up (and caught up).
async fn feed_up(http: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(10), "the change feed is up", || async { feed(http, base).await == "up" }).await;
}

async fn me_status(http: &reqwest::Client, base: &str, access: &str) -> StatusCode {
    http.get(format!("{base}/api/v1/me")).bearer_auth(access).send().await.unwrap().status()
}

fn access_of(body: &Value) -> String {
    body["data"]["user_token"]["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_owned()
}

async fn login(app: &TestApp) -> String {
    let (status, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    access_of(&body)
}

/// Once memory is in step, a live session's token is checked with no query: with the
/// session's row gone behind authd's back, GetMe, ValidateToken and /me still answer from
/// memory. With in-memory checks turned off the database is asked, and refuses.
async fn a_token_check_asks_no_database_once_memory_is_in_step() {
    for in_memory in [true, false] {
        let app = spawn_app_with(|s| {
            if !in_memory {
                s.tokens.session_cache_ttl = Duration::ZERO;
            }
        })
        .await;
        let (access, _) = app.ada_tokens().await;
        feed_up(&app.http, &app.url("")).await;
        assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::OK);
        // The row goes without an announcement, as no code of authd would do it.
        app.sql("delete from sessions", &[]).await;
        let me = me_status(&app.http, &app.url(""), &access).await;
        let grpc = app.users().await.get_me(crate::helpers::with_bearer(GetMeRequest {}, &access)).await;
        let validated = app.grpc_validate(&access).await;
        let active = validated.unwrap().active;
        if in_memory {
            assert_eq!(me, StatusCode::OK, "answered from memory");
            assert_eq!(grpc.unwrap().into_inner().email, "ada@example.com", "the profile from the user cache");
            assert!(active);
        } else {
            assert_eq!(me, StatusCode::UNAUTHORIZED, "answered by the database");
            assert_eq!(grpc.unwrap_err().code(), tonic::Code::Unauthenticated);
            assert!(!active);
        }
    }
}

/// A logout is refused at once, and still after a restart with the session's row pruned:
/// the restarted process reads the revocation log before it trusts memory.
async fn a_logout_is_refused_at_once_and_after_a_restart() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    feed_up(&app.http, &app.url("")).await;
    assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::OK);
    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::UNAUTHORIZED);

    // As the pruning of ended sessions would: only the log still knows.
    app.sql("delete from sessions", &[]).await;
    let app = app.restart().await;
    feed_up(&app.http, &app.url("")).await;
    assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::UNAUTHORIZED);
    let validated = app.grpc_validate(&access).await.unwrap();
    assert!(!validated.active);
}

/// A deleted user's tokens, of every session, are refused at once; a profile change shows
/// in GetMe at once (the user cache is dropped with it).
async fn a_deleted_users_tokens_are_refused_and_profile_changes_show_at_once() {
    let app = spawn_app().await;
    let (first, _) = app.ada_tokens().await;
    let second = login(&app).await;
    feed_up(&app.http, &app.url("")).await;
    let base = app.url("");
    for access in [&first, &second] {
        assert_eq!(me_status(&app.http, &base, access).await, StatusCode::OK);
    }
    let patch = app.http.patch(app.url("/api/v1/me")).bearer_auth(&first).json(&json!({"location": "Paris"}));
    assert_eq!(patch.send().await.unwrap().status(), StatusCode::OK);
    let (status, body) = json_of(app.http.get(app.url("/api/v1/me")).bearer_auth(&second).send().await.unwrap()).await;
    assert_eq!((status, body["location"].as_str()), (StatusCode::OK, Some("Paris")), "{body}");

    let delete = app.http.delete(app.url("/api/v1/me")).bearer_auth(&first).json(&json!({"password": PASSWORD}));
    assert_eq!(delete.send().await.unwrap().status(), StatusCode::OK);
    for access in [&first, &second] {
        assert_eq!(me_status(&app.http, &base, access).await, StatusCode::UNAUTHORIZED);
        let validated = app.grpc_validate(access).await;
        assert!(!validated.unwrap().active);
    }
}

/// A logout on replica A is refused by replica B, which answered from memory until then,
/// within a second; so is a deleted user's token, and a logout everywhere.
#[tokio::test]
async fn a_logout_on_one_replica_is_refused_on_the_other_within_a_second() {
    on_postgres("revocations::a_logout_on_one_replica_is_refused_on_the_other_within_a_second", async {
        let a = spawn_app().await;
        let b = a.replica(|_| {}).await;
        let (a_base, b_base) = (a.url(""), b.url(""));
        feed_up(&a.http, &a_base).await;
        feed_up(&a.http, &b_base).await;
        let (access, _) = a.ada_tokens().await;
        let others = [login(&a).await, login(&a).await];
        let third = login(&a).await;
        for token in others.iter().chain([&access, &third]) {
            assert_eq!(me_status(&a.http, &b_base, token).await, StatusCode::OK);
        }

        let refused_on_b_within = |token: String, what: &'static str| {
            let (http, b_base) = (a.http.clone(), b_base.clone());
            async move {
                let started = Instant::now();
                while me_status(&http, &b_base, &token).await != StatusCode::UNAUTHORIZED {
                    assert!(started.elapsed() < Duration::from_secs(1), "B still accepts the token after {what}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                started.elapsed()
            }
        };
        let logout = a.http.post(a.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        let took = refused_on_b_within(access.clone(), "a logout").await;
        eprintln!("logout on A refused on B after {took:?}");

        let everywhere =
            a.http.post(a.url("/api/v1/auth/logout")).bearer_auth(&others[0]).json(&json!({"all_sessions": true}));
        assert_eq!(everywhere.send().await.unwrap().status(), StatusCode::OK);
        for token in others.iter().chain([&third]) {
            refused_on_b_within(token.clone(), "a logout everywhere").await;
        }

        // A new login after all that is live on B; then the user is deleted on A.
        let fresh = login(&a).await;
        assert_eq!(me_status(&a.http, &b_base, &fresh).await, StatusCode::OK);
        let delete = a.http.delete(a.url("/api/v1/me")).bearer_auth(&fresh).json(&json!({"password": PASSWORD}));
        assert_eq!(delete.send().await.unwrap().status(), StatusCode::OK);
        refused_on_b_within(fresh, "the user's deletion").await;
    })
    .await
}

/// A TCP proxy that can cut every connection through it (and refuse new ones) until told
/// to let them through again, as a network fault or a PostgreSQL restart would.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let acceptor = tokio::spawn({
            let cut = cut.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let mut cut = cut.subscribe();
                    if *cut.borrow() {
                        continue;
                    }
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            }
        });
        Self { addr, cut, acceptor }
    }

    fn url(&self, url: &str) -> String {
        let options = PgConnectOptions::from_str(url).unwrap();
        format!("postgres://{}@{}/{}", options.get_username(), self.addr, options.get_database().unwrap_or_default())
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Replica A's feed goes through a proxy that is cut; B (direct) serves the logout.
async fn a_behind_a_cuttable_feed() -> (TestApp, crate::helpers::Replica, CuttableProxy) {
    let db = TestDb::create().await;
    let target = PgConnectOptions::from_str(&db.url).unwrap();
    let proxy = CuttableProxy::start(format!("{}:{}", target.get_host(), target.get_port())).await;
    let mut settings = test_settings(&db.url);
    settings.database.listen_url = Some(proxy.url(&db.url).into());
    settings.database.heartbeat_interval = Duration::from_millis(100);
    let a = start(db, settings).await;
    let b = a.replica(|_| {}).await;
    feed_up(&a.http, &a.url("")).await;
    feed_up(&a.http, &b.url("")).await;
    (a, b, proxy)
}

/// The feed is cut as the logout happens on B, so A never hears its NOTIFY. When the feed
/// is back, A first reads the revocations logged since it went deaf: the token is refused
/// from memory (the session's row is gone, so only the log can tell).
#[tokio::test]
async fn a_logout_missed_during_a_feed_cut_is_refused_after_the_resync() {
    on_postgres("revocations::a_logout_missed_during_a_feed_cut_is_refused_after_the_resync", async {
        let (a, b, proxy) = a_behind_a_cuttable_feed().await;
        let (access, _) = a.ada_tokens().await;
        assert_eq!(me_status(&a.http, &a.url(""), &access).await, StatusCode::OK);

        proxy.set_cut(true);
        let logout = a.http.post(b.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        a.sql("delete from sessions where revoked_at is not null", &[]).await;
        eventually(Duration::from_secs(5), "A's feed is found down", || async {
            feed(&a.http, &a.url("")).await == "down"
        })
        .await;
        proxy.set_cut(false);
        feed_up(&a.http, &a.url("")).await;
        assert_eq!(me_status(&a.http, &a.url(""), &access).await, StatusCode::UNAUTHORIZED, "the resync found it");
    })
    .await
}

/// While A's feed is down, A asks the database for every check: a logout on B that A
/// cannot hear is refused by A at once. And A still refuses it once the feed is back.
#[tokio::test]
async fn with_the_feed_down_checks_ask_the_database() {
    on_postgres("revocations::with_the_feed_down_checks_ask_the_database", async {
        let (a, b, proxy) = a_behind_a_cuttable_feed().await;
        let (access, _) = a.ada_tokens().await;
        assert_eq!(me_status(&a.http, &a.url(""), &access).await, StatusCode::OK);

        proxy.set_cut(true);
        eventually(Duration::from_secs(5), "A's feed is found down", || async {
            feed(&a.http, &a.url("")).await == "down"
        })
        .await;
        let logout = a.http.post(b.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        assert_eq!(me_status(&a.http, &a.url(""), &access).await, StatusCode::UNAUTHORIZED, "asked the database");
        let other = login(&a).await;
        assert_eq!(me_status(&a.http, &a.url(""), &other).await, StatusCode::OK, "a live session still works");
        let metrics = a.http.get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(
            metrics.lines().any(|l| l.starts_with("authd_token_checks_total{answered_by=\"database\"}")),
            "{metrics}"
        );

        proxy.set_cut(false);
        feed_up(&a.http, &a.url("")).await;
        assert_eq!(me_status(&a.http, &a.url(""), &access).await, StatusCode::UNAUTHORIZED);
        assert_eq!(me_status(&a.http, &a.url(""), &other).await, StatusCode::OK);
    })
    .await
}

/// While A's feed is down, A asks the database for every client check too: a client
/// deleted by the command (which A cannot hear) is refused by A at once, though A held it
/// in memory; and still once the feed is back.
#[tokio::test]
async fn with_the_feed_down_client_checks_ask_the_database() {
    on_postgres("revocations::with_the_feed_down_client_checks_ask_the_database", async {
        let (a, _b, proxy) = a_behind_a_cuttable_feed().await;
        let (access, _) = a.ada_tokens().await;
        let (id, secret) = a.create_client("billing", "introspect");
        let basic = TestApp::basic(&id, &secret);
        let validate = || async {
            let request = a.http.post(a.url("/api/v1/auth/validate")).header("authorization", &basic);
            request.json(&json!({"token": access})).send().await.unwrap().status()
        };
        assert_eq!(validate().await, StatusCode::OK, "and now held in memory");

        proxy.set_cut(true);
        eventually(Duration::from_secs(5), "A's feed is found down", || async {
            feed(&a.http, &a.url("")).await == "down"
        })
        .await;
        let (ok, out, err) = a.authd_command(&["client", "delete", &id]);
        assert!(ok, "{out}{err}");
        assert_eq!(validate().await, StatusCode::UNAUTHORIZED, "asked the database");
        proxy.set_cut(false);
        feed_up(&a.http, &a.url("")).await;
        assert_eq!(validate().await, StatusCode::UNAUTHORIZED);
    })
    .await
}

pub const SERVICE_KEY: &str = "billing-service-key-0123456789abcdef";

/// A server that lets the `billing` service follow the revocations with [`SERVICE_KEY`].
pub async fn with_a_service_key(configure: impl FnOnce(&mut authd::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(SERVICE_KEY.as_bytes()).into();
        s.tokens.service_keys = vec![authd::config::ServiceKey { name: "billing".into(), digest }];
        configure(s);
    })
    .await
}

async fn watch(
    app: &TestApp,
    key: Option<&str>,
    cursor: i64,
) -> Result<tonic::Streaming<RevocationEvent>, tonic::Status> {
    let mut request = tonic::Request::new(WatchRevocationsRequest { cursor });
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    app.auth().await.watch_revocations(request).await.map(tonic::Response::into_inner)
}

/// The next event that is not a heartbeat.
async fn next(events: &mut tonic::Streaming<RevocationEvent>) -> RevocationEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .expect("an event within 5 s")
            .expect("the feed goes on")
            .expect("the feed is open");
        if !matches!(event.event, Some(Event::Heartbeat(_))) {
            return event;
        }
    }
}

fn session_of(access: &str) -> String {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// Only services follow the revocations: no credential, a user's access token or a wrong
/// key are UNAUTHENTICATED; a negative cursor is INVALID_ARGUMENT, naming the field.
async fn only_services_may_watch_revocations() {
    let app = with_a_service_key(|_| {}).await;
    let (access, _) = app.ada_tokens().await;
    for key in [None, Some(access.as_str()), Some("billing-service-key-0123456789abcdeX")] {
        let refused = watch(&app, key, 0).await.map(|_| ()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{key:?}");
    }
    let refused = watch(&app, Some(SERVICE_KEY), -1).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(crate::helpers::field_violations(&refused), [("cursor".to_owned(), "must not be negative".to_owned())]);
    let mut events = watch(&app, Some(SERVICE_KEY), 0).await.unwrap();
    assert!(matches!(next(&mut events).await.event, Some(Event::Snapshot(s)) if s.complete));
}

/// A service client follows the revocations with the `revocations` scope, by its secret
/// (Basic) or by a service token from the client credentials grant; a client without that
/// scope is PERMISSION_DENIED, one with a wrong secret UNAUTHENTICATED.
async fn a_service_client_needs_the_revocations_scope_to_watch() {
    let app = spawn_app().await;
    let (feeds_id, feeds_secret) = app.create_client("feeds", "revocations");
    let (billing_id, billing_secret) = app.create_client("billing", "introspect");
    let watch_as = |authorization: String| {
        let app = &app;
        async move {
            let mut request = tonic::Request::new(WatchRevocationsRequest { cursor: 0 });
            request.metadata_mut().insert("authorization", authorization.parse().unwrap());
            app.auth().await.watch_revocations(request).await.map(tonic::Response::into_inner)
        }
    };
    let refused = watch_as(TestApp::basic(&billing_id, &billing_secret)).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "WatchRevocations needs a client with the revocations scope.");
    let refused = watch_as(TestApp::basic(&feeds_id, "not-the-secret")).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut events = watch_as(TestApp::basic(&feeds_id, &feeds_secret)).await.unwrap();
    assert!(matches!(next(&mut events).await.event, Some(Event::Snapshot(s)) if s.complete));
    let grant = app
        .http
        .post(app.url("/oauth/token"))
        .header("authorization", TestApp::basic(&feeds_id, &feeds_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(grant).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let service_token = body["access_token"].as_str().unwrap();
    let mut events = watch_as(format!("Bearer {service_token}")).await.unwrap();
    assert!(matches!(next(&mut events).await.event, Some(Event::Snapshot(s)) if s.complete));
}

/// A service client's right to its feed is asked again while the feed runs: once the
/// client is deleted, its open stream ends with UNAUTHENTICATED instead of carrying on.
async fn a_deleted_clients_feed_ends() {
    let app = spawn_app().await;
    let (id, secret) = app.create_client("feeds", "revocations");
    let mut request = tonic::Request::new(WatchRevocationsRequest { cursor: 0 });
    request.metadata_mut().insert("authorization", TestApp::basic(&id, &secret).parse().unwrap());
    let mut events = app.auth().await.watch_revocations(request).await.unwrap().into_inner();
    assert!(matches!(next(&mut events).await.event, Some(Event::Snapshot(s)) if s.complete));
    let (ok, out, err) = app.authd_command(&["client", "delete", &id]);
    assert!(ok, "{out}{err}");
    // Within the recheck interval (5 s), with room for a loaded machine.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the feed ends once its client is deleted");
    assert_eq!(ended, Some(tonic::Code::Unauthenticated));
}

/// The snapshot holds what ended before; then each revocation arrives as it happens (a
/// session ended, every session of the user, the user deleted); a service that resumes
/// with the cursor of an event gets what came after it, and a fresh snapshot for a
/// cursor the log does not know.
async fn the_feed_sends_a_snapshot_then_each_revocation_and_resumes_from_a_cursor() {
    let app = with_a_service_key(|_| {}).await;
    let (first, _) = app.ada_tokens().await;
    let second = login(&app).await;
    let logout = |access: String, all: bool| {
        let request = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(access);
        async move { assert_eq!(request.json(&json!({"all_sessions": all})).send().await.unwrap().status(), StatusCode::OK) }
    };
    logout(first.clone(), false).await;

    let mut events = watch(&app, Some(SERVICE_KEY), 0).await.unwrap();
    let snapshot = next(&mut events).await;
    let Some(Event::Snapshot(s)) = snapshot.event else { panic!("a snapshot first: {snapshot:?}") };
    assert!(s.complete);
    assert_eq!(s.sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), [session_of(&first)]);
    assert!(s.users.is_empty() && s.deleted_users.is_empty());

    logout(second.clone(), false).await;
    let ended = next(&mut events).await;
    let Some(Event::SessionRevoked(ref revoked)) = ended.event else { panic!("{ended:?}") };
    assert_eq!(revoked.session_id, session_of(&second));
    assert!(ended.cursor > snapshot.cursor);

    let third = login(&app).await;
    logout(third.clone(), true).await;
    let everywhere = next(&mut events).await;
    let Some(Event::UserSessionsRevoked(ref revoked)) = everywhere.event else { panic!("{everywhere:?}") };
    let user_id = revoked.user_id;
    assert!(revoked.revoked_at.unwrap().seconds >= chrono::Utc::now().timestamp() - 5);

    let fourth = login(&app).await;
    let delete = app.http.delete(app.url("/api/v1/me")).bearer_auth(&fourth).json(&json!({"password": PASSWORD}));
    assert_eq!(delete.send().await.unwrap().status(), StatusCode::OK);
    let deleted = next(&mut events).await;
    assert_eq!(deleted.event, Some(Event::UserDeleted(authd::pb::UserDeleted { user_id, ..deleted_of(&deleted) })));
    drop(events);

    // Resumed from the logout everywhere: what came after it (after those of the two
    // seconds before the cursor again, which may repeat: nothing can be lost to a row that
    // committed after one of a greater number), then the keys, which tell the service it
    // has caught up.
    let mut resumed = watch(&app, Some(SERVICE_KEY), everywhere.cursor).await.unwrap();
    let mut repeated = 0;
    let missed = loop {
        let event = next(&mut resumed).await;
        assert!(!matches!(event.event, Some(Event::SigningKeysChanged(_))), "the keys before what was missed");
        if event.cursor > everywhere.cursor {
            break event;
        }
        repeated += 1;
        assert!(repeated <= 3, "only what came before the cursor repeats: {event:?}");
    };
    assert_eq!((missed.cursor, missed.event), (deleted.cursor, deleted.event));
    let caught_up = next(&mut resumed).await;
    assert!(matches!(caught_up.event, Some(Event::SigningKeysChanged(_))), "{caught_up:?}");
    assert_eq!(caught_up.cursor, deleted.cursor);
    // A cursor the log does not hold: a snapshot, with all four.
    let mut fresh = watch(&app, Some(SERVICE_KEY), deleted.cursor + 1000).await.unwrap();
    let Some(Event::Snapshot(s)) = next(&mut fresh).await.event else { panic!("a fresh snapshot") };
    assert_eq!((s.sessions.len(), s.users.len(), s.deleted_users.len()), (2, 1, 1), "{s:?}");
}

fn deleted_of(event: &RevocationEvent) -> authd::pb::UserDeleted {
    match &event.event {
        Some(Event::UserDeleted(deleted)) => *deleted,
        other => panic!("not a deletion: {other:?}"),
    }
}

/// A rotation of the signing keys reaches the services following the feed, with the
/// `kid`s now accepted.
async fn a_signing_key_rotation_reaches_the_feed() {
    let app = with_a_service_key(|s| {
        s.tokens.algorithm = jsonwebtoken::Algorithm::ES256;
        s.tokens.key_reload_interval = Duration::from_millis(100);
    })
    .await;
    let mut events = watch(&app, Some(SERVICE_KEY), 0).await.unwrap();
    let Some(Event::Snapshot(s)) = next(&mut events).await.event else { panic!("a snapshot first") };
    assert_eq!(s.signing_kids.len(), 1);
    let settings = authd::config::Settings::with_database(app.database_url());
    let store = authd::store::open(&settings.database, authd::store::Migrations::RequireCurrent).await.unwrap();
    let mut tokens = settings.tokens.clone();
    tokens.algorithm = jsonwebtoken::Algorithm::ES256;
    let new_kid = authd::core::keys::rotate(store.as_ref(), &tokens).await.unwrap();
    let changed = next(&mut events).await;
    let Some(Event::SigningKeysChanged(keys)) = changed.event else { panic!("{changed:?}") };
    assert_eq!(keys.signing_kids.len(), 2);
    assert!(keys.signing_kids.contains(&new_kid) && keys.signing_kids.contains(&s.signing_kids[0]));
}

/// A logout whose revocation cannot be logged (the log's table is gone here; a database
/// lost mid-way in life) fails as a whole: the session's end and its log row commit
/// together or not at all, so no other process (nor service) can miss a revocation that
/// committed. The process that served the single logout still refuses its token (it fails
/// closed).
async fn a_logout_that_could_not_be_logged_is_not_committed_and_still_holds_here() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let everywhere = login(&app).await;
    feed_up(&app.http, &app.url("")).await;
    assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::OK);
    app.sql("alter table revocations rename to revocations_away", &[]).await;
    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert!(logout.status().is_server_error(), "{}", logout.status());
    let all =
        app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&everywhere).json(&json!({"all_sessions": true}));
    assert!(all.send().await.unwrap().status().is_server_error());
    // The ended session stays ended in this process's memory (fail closed); the user's
    // change sends its checks to the store, which tells the truth: nothing changed.
    assert_eq!(me_status(&app.http, &app.url(""), &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app.http, &app.url(""), &everywhere).await, StatusCode::OK, "the logout-all failed");
    app.sql("alter table revocations_away rename to revocations", &[]).await;
    let ended = app.sql_text("select cast(count(*) as text) from sessions where revoked_at is not null").await;
    assert_eq!(ended.as_deref(), Some("0"), "no session ended without its log row");
    let version = app.sql_text("select cast(credentials_version as text) from users").await;
    let logged = app.sql_text("select cast(count(*) as text) from revocations").await;
    assert_eq!(logged.as_deref(), Some("0"));
    // Once the log is back, a logout commits with its row.
    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&everywhere).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(kinds(&app).await, ["session"]);
    assert_eq!(
        app.sql_text("select cast(credentials_version as text) from users").await,
        version,
        "logout-all rolled back"
    );
}

/// The kinds of the rows of the revocation log, in order.
async fn kinds(app: &TestApp) -> Vec<String> {
    let rows = app.sql_column("select kind from revocations order by seq", &[]).await;
    rows.iter().map(|kind| String::from_utf8_lossy(kind).into_owned()).collect()
}

/// Every revoking change writes its log row in its own transaction: a logout, a token
/// revocation (RFC 7009), a session ended by its owner, a logout everywhere, a password
/// change, an account disabled and enabled again, a deletion.
async fn each_revoking_change_commits_its_log_row() {
    let app = spawn_app().await;
    let (first, _) = app.ada_tokens().await;
    let (id, secret) = app.create_client("ops", "admin");
    let ops = TestApp::basic(&id, &secret);
    let refresh_of = |body: &Value| body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();
    let session = |password: &str| {
        let app = &app;
        let password = password.to_owned();
        async move {
            let (status, body) = json_of(app.login("ada@example.com", &password).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (access_of(&body), refresh_of(&body))
        }
    };
    let mut expected: Vec<&str> = Vec::new();
    let mut step = |kind: &'static str| {
        expected.push(kind);
        expected.clone()
    };

    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&first).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert_eq!(kinds(&app).await, step("session"), "logout");

    let (_, refresh) = session(PASSWORD).await;
    let revoke = app.http.post(app.url("/api/v1/auth/revoke")).json(&json!({"token": refresh}));
    assert_eq!(revoke.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(kinds(&app).await, step("session"), "token revocation");

    let (other, _) = session(PASSWORD).await;
    let (mine, _) = session(PASSWORD).await;
    let path = format!("/api/v1/me/sessions/{}", session_of(&other));
    let ended = app.http.delete(app.url(&path)).bearer_auth(&mine).send().await.unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    assert_eq!(kinds(&app).await, step("session"), "a session ended by its owner");

    let all = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&mine).json(&json!({"all_sessions": true}));
    assert_eq!(all.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(kinds(&app).await, step("user"), "logout everywhere");

    let (mine, _) = session(PASSWORD).await;
    let change = json!({"current_password": PASSWORD, "new_password": "a new passphrase"});
    let changed = app.http.post(app.url("/api/v1/me/password")).bearer_auth(&mine).json(&change);
    assert_eq!(changed.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(kinds(&app).await, step("user"), "password change");

    let user_id = app.sql_text("select cast(user_id as text) from users").await.unwrap();
    for action in ["disable", "enable"] {
        let path = format!("/api/v1/admin/users/{user_id}/{action}");
        let done = app.http.post(app.url(&path)).header("authorization", &ops).send().await.unwrap();
        assert!(done.status().is_success(), "{action}: {}", done.status());
        assert_eq!(kinds(&app).await, step("user"), "{action}");
    }

    let (mine, _) = session("a new passphrase").await;
    let delete =
        app.http.delete(app.url("/api/v1/me")).bearer_auth(&mine).json(&json!({"password": "a new passphrase"}));
    assert!(delete.send().await.unwrap().status().is_success());
    assert_eq!(kinds(&app).await, step("user_deleted"), "deletion");
}

on_both_backends!(
    a_logout_that_could_not_be_logged_is_not_committed_and_still_holds_here,
    each_revoking_change_commits_its_log_row,
    a_token_check_asks_no_database_once_memory_is_in_step,
    a_logout_is_refused_at_once_and_after_a_restart,
    a_deleted_users_tokens_are_refused_and_profile_changes_show_at_once,
    only_services_may_watch_revocations,
    a_service_client_needs_the_revocations_scope_to_watch,
    a_deleted_clients_feed_ends,
    the_feed_sends_a_snapshot_then_each_revocation_and_resumes_from_a_cursor,
    a_signing_key_rotation_reaches_the_feed,
);

/// A revocation made on another replica reaches a service following this one's feed.
#[tokio::test]
async fn a_revocation_on_another_replica_reaches_the_feed() {
    on_postgres("revocations::a_revocation_on_another_replica_reaches_the_feed", async {
        let a = with_a_service_key(|_| {}).await;
        let b = a.replica(|_| {}).await;
        feed_up(&a.http, &a.url("")).await;
        let (access, _) = a.ada_tokens().await;
        let mut events = watch(&a, Some(SERVICE_KEY), 0).await.unwrap();
        next(&mut events).await;
        let started = Instant::now();
        let logout = a.http.post(b.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        let Some(Event::SessionRevoked(revoked)) = next(&mut events).await.event else { panic!("a revoked session") };
        assert_eq!(revoked.session_id, session_of(&access));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    })
    .await
}

/// A revocation whose transaction commits well after its row took its number (and after
/// a later revocation was sent) still reaches a running feed, even past the longest commit
/// delay (`LONGEST_COMMIT_DELAY`, which bounded an 8 s look-back): the feed looks for the
/// numbers it skipped, whenever they commit.
#[tokio::test]
async fn a_revocation_committed_late_still_reaches_the_feed() {
    on_postgres("revocations::a_revocation_committed_late_still_reaches_the_feed", async {
        use sqlx::Connection;
        let app = with_a_service_key(|_| {}).await;
        let (access, _) = app.ada_tokens().await;
        let mut events = watch(&app, Some(SERVICE_KEY), 0).await.unwrap();
        next(&mut events).await;
        let mut slow = sqlx::PgConnection::connect(app.database_url()).await.unwrap();
        let mut late = slow.begin().await.unwrap();
        let session = uuid::Uuid::new_v4();
        sqlx::query("insert into revocations (kind, session_id, at) values ('session', $1, clock_timestamp())")
            .bind(session)
            .execute(&mut *late)
            .await
            .unwrap();
        let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        let Some(Event::SessionRevoked(sent)) = next(&mut events).await.event else { panic!("the later one") };
        assert_eq!(sent.session_id, session_of(&access));
        tokio::time::sleep(Duration::from_secs(10)).await;
        late.commit().await.unwrap();
        let Some(Event::SessionRevoked(sent)) = next(&mut events).await.event else { panic!("the late one") };
        assert_eq!(sent.session_id, session.to_string());
    })
    .await
}

/// A revocation stamped long before it commits (its writer's clock behind, or a commit
/// that lagged) still reaches the feed, whether it was pending when the snapshot was taken
/// or when a later revocation was sent: the feed tracks the numbers it has not seen, not a
/// window of time.
#[tokio::test]
async fn a_revocation_stamped_long_before_its_commit_still_reaches_the_feed() {
    on_postgres("revocations::a_revocation_stamped_long_before_its_commit_still_reaches_the_feed", async {
        use sqlx::Connection;
        let app = with_a_service_key(|_| {}).await;
        let (first, _) = app.ada_tokens().await;
        let stamped_late = "insert into revocations (kind, session_id, at)
                            values ('session', $1, clock_timestamp() - interval '20 seconds')";
        let mut one = sqlx::PgConnection::connect(app.database_url()).await.unwrap();
        let mut before_snapshot = one.begin().await.unwrap();
        let pending = uuid::Uuid::new_v4();
        sqlx::query(stamped_late).bind(pending).execute(&mut *before_snapshot).await.unwrap();
        let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&first).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        let mut events = watch(&app, Some(SERVICE_KEY), 0).await.unwrap();
        let Some(Event::Snapshot(snapshot)) = next(&mut events).await.event else { panic!("a snapshot") };
        assert_eq!(snapshot.sessions.iter().map(|s| s.session_id.clone()).collect::<Vec<_>>(), [session_of(&first)]);

        let mut two = sqlx::PgConnection::connect(app.database_url()).await.unwrap();
        let mut after_snapshot = two.begin().await.unwrap();
        let later = uuid::Uuid::new_v4();
        sqlx::query(stamped_late).bind(later).execute(&mut *after_snapshot).await.unwrap();
        let body: Value = app.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
        let second = access_of(&body);
        let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&second).send().await.unwrap();
        assert_eq!(logout.status(), StatusCode::OK);
        let Some(Event::SessionRevoked(sent)) = next(&mut events).await.event else { panic!("the second logout") };
        assert_eq!(sent.session_id, session_of(&second));

        after_snapshot.commit().await.unwrap();
        let Some(Event::SessionRevoked(sent)) = next(&mut events).await.event else { panic!("the later one") };
        assert_eq!(sent.session_id, later.to_string());
        before_snapshot.commit().await.unwrap();
        let Some(Event::SessionRevoked(sent)) = next(&mut events).await.event else { panic!("the pending one") };
        assert_eq!(sent.session_id, pending.to_string());
    })
    .await
}
