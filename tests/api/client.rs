//! The crate services use (`client/`), against the real server: local verification with
//! authd's rules, keys found by `kid`, revocations followed, the tower layer and the tonic
//! interceptor.

use std::time::{Duration, Instant};

use authd_client::{Claims, Config, Rejection, Verifier, WhenStale};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{TestApp, json_of},
    revocations::{SERVICE_KEY, with_a_service_key},
};

const PASSWORD: &str = "correct horse battery";

async fn app_signing_with(algorithm: Algorithm) -> TestApp {
    with_a_service_key(|s| {
        s.tokens.algorithm = algorithm;
        s.tokens.key_reload_interval = Duration::from_millis(100);
    })
    .await
}

async fn verifier(app: &TestApp, config: Config) -> Verifier {
    Verifier::connect(app.grpc_channel().await, config).await.expect("the verifier connects")
}

/// As a service client with the `revocations` scope (the feed) and `introspect` (asking
/// authd about a token while unsure).
fn config(app: &TestApp) -> Config {
    let (id, secret) = app.create_client("orders", "revocations,introspect");
    Config::new("authd", "authd").client_credentials(&id, &secret)
}

async fn login(app: &TestApp) -> String {
    let (status, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["user_token"]["token"].as_str().unwrap().to_owned()
}

async fn logout(app: &TestApp, access: &str, all_sessions: bool) {
    let request = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(access);
    let response = request.json(&json!({"all_sessions": all_sessions})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Waits until `verify` stops accepting `token`; returns how long that took.
async fn refused_within(verifier: &Verifier, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while verifier.verify_local(token).is_ok() {
        assert!(started.elapsed() < limit, "the service still accepts the token after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// ES256 and EdDSA tokens verify locally, with the claims; a logout at authd is refused by
/// the service within a second (here far sooner), and a logout everywhere makes the
/// user's older tokens be asked about at authd, which refuses them.
async fn a_service_verifies_locally_and_refuses_a_logout_within_a_second() {
    for algorithm in [Algorithm::ES256, Algorithm::EdDSA] {
        let app = app_signing_with(algorithm).await;
        let (access, _) = app.ada_tokens().await;
        let service = verifier(&app, config(&app)).await;
        assert!(service.feed_fresh());
        let claims = service.verify(&access).await.expect("a live token");
        assert_eq!((claims.user_id(), claims.iss.as_str(), claims.aud.as_str()), (Some(1), "authd", "authd"));
        assert_eq!(service.verify(&format!("Bearer {access}")).await, Ok(claims.clone()));

        logout(&app, &access, false).await;
        let took = refused_within(&service, &access, Duration::from_secs(1)).await;
        eprintln!("{algorithm:?}: logout at authd refused by the service after {took:?}");
        assert_eq!(service.verify(&access).await, Err(Rejection::Revoked));

        let (older, newer) = (login(&app).await, login(&app).await);
        logout(&app, &newer, true).await;
        let started = Instant::now();
        while service.verify(&older).await.is_ok() {
            assert!(started.elapsed() < Duration::from_secs(1), "a logout everywhere not seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(service.verify_local(&older), Err(Rejection::Stale), "the interceptor cannot ask");
        let after = login(&app).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let after_later = login(&app).await;
        assert!(service.verify(&after).await.is_ok(), "asked at authd: live");
        // Issued within the revocation leeway (5 s) of the change: it might be older, on a
        // clock behind, so it is asked about rather than trusted.
        assert_eq!(service.verify_local(&after_later), Err(Rejection::Stale), "within the leeway");
        assert!(service.verify(&after_later).await.is_ok(), "asked at authd: live");
    }
}

/// authd's rules, not the token's: a refresh token, garbage, another audience, an
/// algorithm not pinned, are all refused.
async fn authds_rules_are_applied() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (access, refresh) = app.ada_tokens().await;
    let service = verifier(&app, config(&app)).await;
    for token in [refresh.as_str(), "garbage", "a.b.c", ""] {
        assert!(service.verify(token).await.is_err(), "{token}");
    }
    assert_eq!(service.verify("").await, Err(Rejection::Missing));
    let other_audience = verifier(&app, Config::new("authd", "billing").service_key(SERVICE_KEY)).await;
    assert_eq!(other_audience.verify(&access).await, Err(Rejection::Invalid));
    let other_issuer = verifier(&app, Config::new("someone", "authd").service_key(SERVICE_KEY)).await;
    assert_eq!(other_issuer.verify(&access).await, Err(Rejection::Invalid));
    let only_eddsa = verifier(&app, config(&app).algorithms(&[Algorithm::EdDSA])).await;
    assert_eq!(only_eddsa.verify(&access).await, Err(Rejection::Invalid));
    // A token of another authd, with keys of its own: its kid is unknown here.
    let stranger = app_signing_with(Algorithm::ES256).await;
    let (foreign, _) = stranger.ada_tokens().await;
    assert_eq!(service.verify(&foreign).await, Err(Rejection::Invalid));
    assert!(service.verify(&access).await.is_ok());
}

/// After a key rotation, a token with the new `kid` is verified: the keys are fetched
/// again (the rotation is announced on the feed, and an unknown kid refetches too).
async fn a_rotated_key_is_found_by_its_kid() {
    let app = app_signing_with(Algorithm::EdDSA).await;
    let _ = app.ada_tokens().await;
    let service = verifier(&app, config(&app).algorithms(&[Algorithm::EdDSA])).await;
    let settings = authd::config::Settings::with_database(app.database_url());
    let store = authd::store::open(&settings.database, authd::store::Migrations::RequireCurrent).await.unwrap();
    let mut tokens = settings.tokens.clone();
    tokens.algorithm = Algorithm::EdDSA;
    let new_kid = authd::core::keys::rotate(store.as_ref(), &tokens).await.unwrap();
    let started = Instant::now();
    let access = loop {
        let access = login(&app).await;
        if jsonwebtoken::decode_header(&access).unwrap().kid.as_deref() == Some(new_kid.as_str()) {
            break access;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "authd never signed with the new key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(service.verify(&access).await.is_ok());
}

/// With the feed down past the bound (here: a client without the revocations scope, so it
/// never comes up),
/// the service's choice applies: ask authd for each token, or refuse them all.
async fn a_stale_feed_asks_authd_or_refuses_as_the_service_chose() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (access, _) = app.ada_tokens().await;
    // A client that may ask about tokens, but not follow the feed.
    let (id, secret) = app.create_client("billing", "introspect");
    let down = |then| Config::new("authd", "authd").client_credentials(&id, &secret).when_stale(Duration::ZERO, then);
    let asking = verifier(&app, down(WhenStale::AskAuthd)).await;
    let refusing = verifier(&app, down(WhenStale::Refuse)).await;
    assert!(!asking.feed_fresh());
    assert!(asking.verify(&access).await.is_ok(), "authd says it is live");
    assert_eq!(refusing.verify(&access).await, Err(Rejection::Stale));
    logout(&app, &access, false).await;
    assert_eq!(asking.verify(&access).await, Err(Rejection::Revoked), "authd says it is not");
}

/// The tower layer on an axum router: no token 401 with `WWW-Authenticate: Bearer`; a live
/// one reaches the handler with its claims; a logged-out one 401 again. The interceptor
/// puts the claims into the request's extensions, or refuses with UNAUTHENTICATED.
async fn the_layer_and_the_interceptor_put_the_claims_into_the_request() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (access, _) = app.ada_tokens().await;
    let service = verifier(&app, config(&app)).await;
    let whoami = |claims: axum::Extension<Claims>| async move { claims.sub.clone() };
    let router = axum::Router::new().route("/whoami", axum::routing::get(whoami)).layer(service.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/whoami", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let me = http.get(&url).bearer_auth(&access).send().await.unwrap();
    assert_eq!((me.status(), me.text().await.unwrap()), (StatusCode::OK, "1".to_owned()));

    let mut intercept = service.interceptor();
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert("authorization", format!("Bearer {access}").parse().unwrap());
    let request = intercept(request).expect("a live token passes");
    assert_eq!(request.extensions().get::<Claims>().map(|c| c.sub.as_str()), Some("1"));
    assert_eq!(intercept(tonic::Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);

    logout(&app, &access, false).await;
    refused_within(&service, &access, Duration::from_secs(1)).await;
    assert_eq!(http.get(&url).bearer_auth(&access).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    server.abort();
}

/// The example service (`examples/protected-service`) behind its layer: a logout at
/// authd is refused there, over HTTP, within a second; measured over ten logouts.
async fn the_example_service_refuses_a_logout_within_a_second() {
    let app = app_signing_with(Algorithm::ES256).await;
    let _ = app.ada_tokens().await;
    let service = verifier(&app, config(&app)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/orders", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, protected_service::router(&service)).into_future());
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    for _ in 0..10 {
        let access = login(&app).await;
        let (status, body) = json_of(http.get(&url).bearer_auth(&access).send().await.unwrap()).await;
        assert_eq!((status, &body["user_id"]), (StatusCode::OK, &json!(1)), "{body}");
        logout(&app, &access, false).await;
        let started = Instant::now();
        while http.get(&url).bearer_auth(&access).send().await.unwrap().status() != StatusCode::UNAUTHORIZED {
            assert!(started.elapsed() < Duration::from_secs(1), "the example service still serves a logged-out token");
        }
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!("logout to refusal at the example service: median {:?}, max {:?}", took[5], took[9]);
    server.abort();
}

on_both_backends!(
    the_example_service_refuses_a_logout_within_a_second,
    a_service_verifies_locally_and_refuses_a_logout_within_a_second,
    authds_rules_are_applied,
    a_rotated_key_is_found_by_its_kid,
    a_stale_feed_asks_authd_or_refuses_as_the_service_chose,
    the_layer_and_the_interceptor_put_the_claims_into_the_request,
    a_stalled_feed_is_found_out_by_its_missing_heartbeats,
    freshness_counts_from_the_last_message_heard,
);

/// A proxy in front of authd's port that, on its first connection only, passes
/// `limit` bytes from authd to the client and then closes; later connections pass all.
async fn truncating_proxy(target: String, limit: usize) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut first = true;
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { continue };
            let truncate = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let (mut in_read, mut in_write) = inbound.into_split();
                let (mut out_read, mut out_write) = outbound.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
                });
                let mut passed = 0usize;
                let mut buffer = vec![0u8; 8192];
                while let Ok(n) = out_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let n = if truncate { n.min(limit - passed) } else { n };
                    if in_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                    if truncate && passed >= limit {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (format!("http://{addr}"), task)
}

/// A snapshot's parts each carry the log's newest cursor. A service whose stream breaks
/// before the last part must ask for the whole snapshot again: resuming past that cursor
/// would lose the rest, and a token whose logout was in a lost part would be accepted from
/// memory with the feed counted as in step.
async fn a_snapshot_cut_short_is_asked_for_again() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (throwaway, _) = app.ada_tokens().await;
    logout(&app, &throwaway, false).await;
    let filler = "with recursive n(i) as (select 1 union all select i + 1 from n where i < 1998)
        insert into revocations (kind, session_id, user_id, at)
        select 'session', randomblob(16), 1, (select at from revocations order by seq limit 1) from n";
    app.sql(filler, &[]).await;
    let stolen = login(&app).await;
    logout(&app, &stolen, false).await;
    // A later revocation, more than the feed's 2 s look-back after the others: it is the
    // cursor the snapshot's parts carry.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let last = login(&app).await;
    logout(&app, &last, false).await;
    // Control: a service connected straight to authd refuses the logged-out token.
    let direct = verifier(&app, config(&app)).await;
    assert!(direct.feed_fresh());
    assert_eq!(direct.verify_local(&stolen), Err(Rejection::Revoked));
    // Through the proxy: the first connection is cut after `limit` bytes from authd,
    // somewhere in the snapshot; later connections pass everything.
    let target = app.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut accepted = Vec::new();
    for limit in (30_000..=150_000).step_by(10_000) {
        let (proxied, proxy) = truncating_proxy(target.clone(), limit).await;
        let channel = tonic::transport::Channel::from_shared(proxied).unwrap().connect_lazy();
        let service = Verifier::connect(channel, config(&app)).await.expect("connects");
        let started = Instant::now();
        while !service.feed_fresh() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let verdict = service.verify_local(&stolen);
        eprintln!("cut at {limit}: fresh {}, the logged-out token: {verdict:?}", service.feed_fresh());
        if verdict.is_ok() {
            accepted.push(limit);
        }
        proxy.abort();
    }
    assert!(accepted.is_empty(), "a logged-out token is accepted from memory after a snapshot cut at {accepted:?}");
}

/// On SQLite only: the filler revocations are written with SQLite's `randomblob`.
#[tokio::test]
async fn a_snapshot_cut_short_is_asked_for_again_sqlite() {
    crate::helpers::on_sqlite(a_snapshot_cut_short_is_asked_for_again()).await
}

/// A proxy in front of authd's port that can stall: while stalled it passes no byte either
/// way but keeps every connection open, as a hung peer or a wedged middlebox does.
async fn stalling_proxy(target: String) -> (String, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut stalled: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut buffer = vec![0u8; 16384];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // What was read while stalled is held until the stall ends.
            if stalled.wait_for(|stalled| !*stalled).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stall, _) = tokio::sync::watch::channel(false);
    let stalls = stall.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, stalls.subscribe()));
            tokio::spawn(pump(out_read, in_write, stalls.subscribe()));
        }
    });
    (format!("http://{addr}"), stall)
}

/// authd's heartbeat keeps an idle feed alive past the client's timeout, and a feed that
/// stops hearing anything (the stream stalled, the connection still open) is found dead
/// within the timeout: the verifier stops trusting memory, and trusts it again once the
/// feed is back.
async fn a_stalled_feed_is_found_out_by_its_missing_heartbeats() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (url, stall) = stalling_proxy(app.addr.to_string()).await;
    let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut config =
        Config::new("authd", "authd").service_key(SERVICE_KEY).when_stale(Duration::ZERO, WhenStale::Refuse);
    config.heartbeat_timeout = Duration::from_secs(7);
    let verifier = Verifier::connect(channel, config).await.expect("the verifier connects");
    let started = Instant::now();
    while !verifier.feed_fresh() {
        assert!(started.elapsed() < Duration::from_secs(10), "the feed never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(verifier.feed_fresh(), "heartbeats keep an idle feed in step");
    stall.send_replace(true);
    let stalled = Instant::now();
    while verifier.feed_fresh() {
        assert!(stalled.elapsed() < Duration::from_secs(9), "a stalled feed still counts as in step");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stall.send_replace(false);
    let resumed = Instant::now();
    while !verifier.feed_fresh() {
        assert!(resumed.elapsed() < Duration::from_secs(15), "the feed did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Freshness is counted from the last message heard, not from when a dead stream is found
/// out: with a long heartbeat timeout (30 s), a stalled feed stops counting as in step
/// within authd's heartbeat interval (5 s) plus `stale_after` (1 s) of its last message.
async fn freshness_counts_from_the_last_message_heard() {
    let app = app_signing_with(Algorithm::ES256).await;
    let (url, stall) = stalling_proxy(app.addr.to_string()).await;
    let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut config =
        Config::new("authd", "authd").service_key(SERVICE_KEY).when_stale(Duration::from_secs(1), WhenStale::Refuse);
    config.heartbeat_timeout = Duration::from_secs(30);
    let verifier = Verifier::connect(channel, config).await.expect("the verifier connects");
    let started = Instant::now();
    while !verifier.feed_fresh() {
        assert!(started.elapsed() < Duration::from_secs(10), "the feed never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(verifier.feed_fresh(), "heartbeats keep an idle feed in step");
    stall.send_replace(true);
    let stalled = Instant::now();
    while verifier.feed_fresh() {
        assert!(stalled.elapsed() < Duration::from_secs(8), "a silent feed still counts as in step");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stall.send_replace(false);
}
