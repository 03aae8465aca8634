//! Brute force, enumeration, overload and size limits, against the real server.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::{TestApp, ada, client_from, json_of, spawn_app, spawn_app_with};
use authd::pb::RegisterUserRequest;

const PASSWORD: &str = "correct horse battery";

async fn login_from(app: &TestApp, client: &reqwest::Client, email: &str, password: &str) -> reqwest::Response {
    client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// A 429 with a `Retry-After` of whole seconds, at least one.
fn assert_throttled(response: &reqwest::Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
}

async fn logins_past_the_per_ip_limit_are_refused_for_that_ip_only() {
    let app = spawn_app_with(|s| s.throttle.login_per_ip = 3).await;
    for _ in 0..3 {
        assert_eq!(app.login("nobody@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&app.login("nobody@example.com", "wrong password").await);
    let status = app.grpc_login("nobody@example.com", "wrong password").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let elsewhere = client_from("127.0.0.2");
    let response = login_from(&app, &elsewhere, "nobody@example.com", "wrong password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn registrations_and_refreshes_are_limited_per_ip() {
    let app = spawn_app_with(|s| {
        s.throttle.register_per_ip = 2;
        s.throttle.refresh_per_ip = 2;
    })
    .await;
    let (_, refresh) = app.ada_tokens().await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::BAD_REQUEST);
    assert_throttled(&app.register(&ada()).await);
    let request = RegisterUserRequest {
        name: "Bob".into(),
        email: "bob@example.com".into(),
        location: "Paris".into(),
        about: None,
        password: PASSWORD.into(),
    };
    assert_eq!(app.users().await.register_user(request).await.unwrap_err().code(), Code::ResourceExhausted);

    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    // A forged token is refused before it is counted (tests/api/flood.rs): it costs no write.
    assert_eq!(app.refresh("not-a-token").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK, "a retry within the grace window");
    assert_throttled(&app.refresh(&refresh).await);
}

async fn failed_logins_back_off_per_account_and_ip_without_locking_out_the_owner() {
    let app = spawn_app_with(|s| s.throttle.free_failures = 2).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    for _ in 0..2 {
        assert_eq!(app.login("ada@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    // The attacker's address now waits, even with the right password...
    assert_throttled(&app.login("ada@example.com", "wrong password").await);
    assert_throttled(&app.login("ada@example.com", PASSWORD).await);
    let status = app.grpc_login("ada@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // ...while the owner, from their own address, logs in.
    let owner = client_from("127.0.0.2");
    assert_eq!(login_from(&app, &owner, "ada@example.com", PASSWORD).await.status(), StatusCode::OK);
}

async fn a_successful_login_clears_the_backoff_of_its_address() {
    let app = spawn_app_with(|s| s.throttle.free_failures = 3).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    for _ in 0..2 {
        assert_eq!(app.login("ada@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK);
    // Three fresh failures are allowed again (without the reset, the second would be refused).
    for _ in 0..3 {
        assert_eq!(app.login("ada@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&app.login("ada@example.com", "wrong password").await);
}

async fn past_the_account_ceiling_only_addresses_without_failures_may_try() {
    let app = spawn_app_with(|s| s.throttle.account_failure_limit = 3).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let attackers = ["127.0.0.1", "127.0.0.3", "127.0.0.4"].map(client_from);
    for attacker in &attackers {
        let response = login_from(&app, attacker, "ada@example.com", "wrong password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&login_from(&app, &attackers[1], "ada@example.com", "wrong password").await);
    let owner = client_from("127.0.0.2");
    assert_eq!(login_from(&app, &owner, "ada@example.com", PASSWORD).await.status(), StatusCode::OK);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn an_unknown_email_and_a_wrong_password_look_alike() {
    let app = spawn_app_with(|s| {
        s.throttle.login_per_ip = 0;
        s.throttle.free_failures = 1000;
    })
    .await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    // The first unknown email also makes the dummy hash: keep it out of the samples.
    let (unknown_status, unknown_body) = json_of(app.login("nobody@example.com", PASSWORD).await).await;
    let (wrong_status, wrong_body) = json_of(app.login("ada@example.com", "wrong password").await).await;
    assert_eq!((unknown_status, &unknown_body), (wrong_status, &wrong_body));
    let unknown = app.grpc_login("nobody@example.com", PASSWORD).await.unwrap_err();
    let wrong = app.grpc_login("ada@example.com", "wrong password").await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()));

    let (mut unknown_times, mut wrong_times) = (Vec::new(), Vec::new());
    for i in 0..15 {
        // Interleaved, so that load from elsewhere falls on both alike.
        for (email, times) in [("nobody@example.com", &mut unknown_times), ("ada@example.com", &mut wrong_times)] {
            let start = Instant::now();
            let status = app.login(email, &format!("wrong password {i}")).await.status();
            times.push(start.elapsed());
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    let (unknown, wrong) = (median(unknown_times), median(wrong_times));
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "median unknown email {unknown:?}, wrong password {wrong:?}");
}

async fn hashing_past_its_queue_is_refused_at_once_and_recovers() {
    let app = spawn_app_with(|s| {
        s.passwords.concurrency = 1;
        s.passwords.queue_limit = 1;
        s.throttle.login_per_ip = 0;
    })
    .await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let logins = (0..12).map(|_| app.login("ada@example.com", PASSWORD));
    let responses = join_all(logins).await;
    let ok = responses.iter().filter(|r| r.status() == StatusCode::OK).count();
    let refused = responses.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(ok + refused, responses.len(), "{:?}", responses.iter().map(|r| r.status()).collect::<Vec<_>>());
    assert!(ok >= 1 && refused >= 1, "{ok} ok, {refused} refused");
    responses.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).for_each(assert_throttled);

    let grpc = (0..12).map(|_| app.grpc_login("ada@example.com", PASSWORD));
    let codes = join_all(grpc).await.into_iter().map(|r| r.map(drop).map_err(|s| s.code())).collect::<Vec<_>>();
    assert!(codes.iter().all(|c| matches!(c, Ok(()) | Err(Code::ResourceExhausted))), "{codes:?}");
    assert!(codes.contains(&Err(Code::ResourceExhausted)), "{codes:?}");

    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK);
}

async fn oversized_bodies_and_messages_are_refused() {
    let app = spawn_app().await;
    let mut body = ada();
    body["about"] = json!("x".repeat(70 * 1024));
    assert_eq!(app.register(&body).await.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let request = RegisterUserRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        location: "London".into(),
        about: Some("x".repeat(70 * 1024)),
        password: PASSWORD.into(),
    };
    let status = app.users().await.register_user(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A header larger than hyper reads is refused too.
    let response = app.http.get(app.url("/healthz")).header("x-big", "x".repeat(1024 * 1024)).send().await;
    assert!(response.map_or(true, |r| r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
}

async fn a_slow_body_times_out_and_frees_its_connection() {
    let app = spawn_app_with(|s| s.limits.request_timeout = Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/v1/register-user HTTP/1.1\r\nhost: authd\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    // Never finish the body: the server answers and closes rather than wait for ever.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes a connection whose body never comes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

async fn headers_that_never_end_do_not_hold_a_connection() {
    let app = spawn_app_with(|s| s.limits.request_timeout = Duration::from_secs(1)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: authd\r\nx-slow: ").await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the server closes a connection whose headers never end");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

on_both_backends!(
    headers_that_never_end_do_not_hold_a_connection,
    logins_past_the_per_ip_limit_are_refused_for_that_ip_only,
    registrations_and_refreshes_are_limited_per_ip,
    failed_logins_back_off_per_account_and_ip_without_locking_out_the_owner,
    a_successful_login_clears_the_backoff_of_its_address,
    past_the_account_ceiling_only_addresses_without_failures_may_try,
    an_unknown_email_and_a_wrong_password_look_alike,
    hashing_past_its_queue_is_refused_at_once_and_recovers,
    oversized_bodies_and_messages_are_refused,
    a_slow_body_times_out_and_frees_its_connection,
);
