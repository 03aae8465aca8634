//! Brute force, enumeration, overload and size limits, against the real server.

use std::time::{Duration, Instant};

use futures::{StreamExt, future::join_all};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::{TestApp, ada, client_from, json_of, spawn_app, spawn_app_with, with_bearer};
use authd::pb::{ChangePasswordRequest, LoginRequest, RegisterUserRequest};

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

/// The `device_token` a REST login answered with.
async fn device_token_of(response: reqwest::Response) -> String {
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["device_token"].as_str().unwrap_or_else(|| panic!("no device_token in {body}")).to_owned()
}

async fn login_with_device(app: &TestApp, client: &reqwest::Client, password: &str, device: &str) -> reqwest::Response {
    let body = json!({"email": "ada@example.com", "password": password, "device_token": device});
    client.post(app.url("/api/v1/auth/login")).json(&body).send().await.unwrap()
}

async fn register_ada_and_bob(app: &TestApp) {
    let mut bob = ada();
    bob["email"] = json!("bob@example.com");
    for user in [ada(), bob] {
        assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    }
}

/// 127.0.1.1, 127.0.1.2, ...: `n` distinct loopback addresses.
fn addresses(n: usize) -> impl Iterator<Item = String> {
    (257..257 + n).map(|k| format!("127.0.{}.{}", k / 256, k % 256))
}

/// How many of `statuses` were checked (401) and how many refused unchecked (429); nothing else.
fn checked_and_refused(statuses: &[StatusCode]) -> (usize, usize) {
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, statuses.len(), "{statuses:?}");
    (checked, refused)
}

async fn guesses_stop_at_the_account_ceiling_from_any_address_and_in_flight_but_the_owners_device_gets_in() {
    const CEILING: usize = 20;
    let app = spawn_app_with(|s| {
        s.throttle.account_failure_limit = CEILING as u32;
        // The ceiling alone is under test: no per-IP limit, no (account, address) backoff.
        s.throttle.login_per_ip = 0;
        s.throttle.free_failures = 1000;
    })
    .await;
    register_ada_and_bob(&app).await;
    // Ada has logged in from her laptop before: it is a known device from now on.
    let response = app.login("ada@example.com", PASSWORD).await;
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let device = device_token_of(response).await;
    assert!(cookie.starts_with(&format!("authd_device={device};")), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/v1/auth/login"] {
        assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
    }
    // Bob's phone logs in over gRPC: its device token is in the reply.
    let bobs_phone = app.grpc_login("bob@example.com", PASSWORD).await.unwrap().device_token;
    assert!(!bobs_phone.is_empty());

    // 300 guesses from 300 addresses, each new to the account, 16 at a time; then more,
    // one at a time, until the ceiling refuses them.
    let mut addresses = addresses(400);
    let guesses = futures::stream::iter(addresses.by_ref().take(300))
        .map(|ip| {
            let app = &app;
            async move { login_from(app, &client_from(&ip), "ada@example.com", "wrong password").await.status() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (mut checked, _) = checked_and_refused(&guesses);
    for ip in addresses.by_ref() {
        let response = login_from(&app, &client_from(&ip), "ada@example.com", "wrong password").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        checked += 1;
    }
    assert_eq!(checked, CEILING, "guesses checked on Ada's account, from 300 and more addresses");

    // 50 guesses in flight at once from one address, on Bob's account, then more.
    let attacker = client_from("127.0.3.1");
    let guesses = join_all((0..50).map(|_| login_from(&app, &attacker, "bob@example.com", "wrong password"))).await;
    let (mut checked, _) = checked_and_refused(&guesses.iter().map(|r| r.status()).collect::<Vec<_>>());
    for _ in 0..=CEILING {
        let response = login_from(&app, &attacker, "bob@example.com", "wrong password").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        checked += 1;
    }
    assert_eq!(checked, CEILING, "guesses checked on Bob's account, 50 of them at once");

    // Past the ceiling, a new place is refused even with the right password...
    let elsewhere = client_from("127.0.4.1");
    assert_throttled(&login_from(&app, &elsewhere, "ada@example.com", PASSWORD).await);
    // ...but Ada's laptop gets in, by its cookie as a browser sends it, or by the field.
    let response = elsewhere
        .post(app.url("/api/v1/auth/login"))
        .header("cookie", format!("theme=dark; authd_device={device}"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(device_token_of(response).await, device, "a known device keeps its token");
    assert_eq!(login_with_device(&app, &elsewhere, PASSWORD, &device).await.status(), StatusCode::OK);
    // Over gRPC likewise, on Bob's account.
    let status = app.grpc_login("bob@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let request = LoginRequest { email: "bob@example.com".into(), password: PASSWORD.into(), device_token: bobs_phone };
    assert!(app.auth().await.login(request).await.is_ok(), "Bob's phone");
}

async fn past_the_ceiling_a_known_device_gets_in_within_its_own_backoff_and_nothing_else_does() {
    let app = spawn_app_with(|s| {
        s.throttle.account_failure_limit = 3;
        s.throttle.free_failures = 2;
    })
    .await;
    register_ada_and_bob(&app).await;
    let device = device_token_of(app.login("ada@example.com", PASSWORD).await).await;
    let phone = device_token_of(app.login("ada@example.com", PASSWORD).await).await;
    let bobs_device = device_token_of(app.login("bob@example.com", PASSWORD).await).await;

    let attackers = ["127.0.0.3", "127.0.0.4", "127.0.0.5"].map(client_from);
    for attacker in &attackers {
        let response = login_from(&app, attacker, "ada@example.com", "wrong password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // The ceiling holds for every address, the owner's own included...
    let owner = client_from("127.0.0.2");
    assert_throttled(&login_from(&app, &owner, "ada@example.com", PASSWORD).await);
    // ...and for tokens that are not a device of Ada's.
    for not_adas in [bobs_device.as_str(), "forged-device-token", ""] {
        assert_throttled(&login_with_device(&app, &owner, PASSWORD, not_adas).await);
    }
    // Ada's device gets in; stolen, it would still wait out its own backoff.
    assert_eq!(login_with_device(&app, &owner, PASSWORD, &device).await.status(), StatusCode::OK);
    for _ in 0..2 {
        let response = login_with_device(&app, &attackers[0], "wrong password", &device).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&login_with_device(&app, &attackers[0], "wrong password", &device).await);
    assert_throttled(&login_with_device(&app, &owner, PASSWORD, &device).await);

    // Ada's phone gets in (which starts the account's count over); having lost her laptop,
    // she logs out everywhere, and from then on no device of hers is known until it logs
    // in again, but the phone, whose session logged out everywhere (by the token it has).
    let (status, body) = json_of(login_with_device(&app, &owner, PASSWORD, &phone).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["data"]["user_token"]["token"].as_str().unwrap();
    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(access).json(&json!({"all_sessions": true}));
    let (status, body) = json_of(logout.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for attacker in &attackers {
        let response = login_from(&app, attacker, "ada@example.com", "wrong password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&login_with_device(&app, &owner, PASSWORD, &device).await);
    assert_eq!(login_with_device(&app, &owner, PASSWORD, &phone).await.status(), StatusCode::OK);
}

async fn password_checks_behind_a_token_count_with_the_logins_and_starve_no_one() {
    let app = spawn_app_with(|s| {
        // One hashing thread and one place in its queue: two callers fill it.
        s.passwords.concurrency = 1;
        s.passwords.queue_limit = 1;
        s.throttle.free_failures = 3;
        s.throttle.account_failure_limit = 3;
        s.throttle.login_per_ip = 0;
    })
    .await;
    let (access, _) = app.ada_tokens().await;
    let mut bob = ada();
    bob["email"] = json!("bob@example.com");
    assert_eq!(app.register(&bob).await.status(), StatusCode::CREATED);

    // A stolen access token guesses the password by changing it, 60 at once, while Bob
    // logs in.
    let guess = |i: usize| {
        let body = json!({"current_password": format!("guess number {i}"), "new_password": "a new passphrase"});
        app.http.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send()
    };
    let (guesses, bobs_login) = tokio::join!(join_all((0..60).map(guess)), app.login("bob@example.com", PASSWORD));
    assert_eq!(bobs_login.status(), StatusCode::OK, "Bob's login during the flood");
    let statuses = guesses.into_iter().map(|r| r.unwrap().status()).collect::<Vec<_>>();
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, statuses.len(), "{statuses:?}");
    assert!((1..=3).contains(&checked), "{checked} guesses checked, past 3 free failures");

    // Deleting the account checks the same password, counted with them: the session has
    // three failures, then is refused.
    let mut checked = checked;
    for _ in 0..=3 {
        let request = app.http.delete(app.url("/api/v1/me")).bearer_auth(&access).json(&json!({"password": "guess"}));
        let response = request.send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_throttled(&response);
            break;
        }
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        checked += 1;
    }
    assert_eq!(checked, 3, "password checks made behind one access token");
    let request = with_bearer(
        ChangePasswordRequest { current_password: "one more guess".into(), new_password: "a new passphrase".into() },
        &access,
    );
    let status = app.users().await.change_password(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // These failures are the account's, as failed logins are: it is past its ceiling.
    assert_throttled(&login_from(&app, &client_from("127.0.0.2"), "ada@example.com", PASSWORD).await);
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
    // Twelve accounts at once (one account has but one hash in flight anyway).
    let emails = (0..12).map(|i| format!("nobody{i}@example.com")).collect::<Vec<_>>();
    let logins = emails.iter().map(|email| app.login(email, PASSWORD));
    let responses = join_all(logins).await;
    let statuses = responses.iter().map(|r| r.status()).collect::<Vec<_>>();
    let (checked, refused) = checked_and_refused(&statuses);
    assert!(checked >= 1 && refused >= 1, "{checked} checked, {refused} refused");
    responses.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).for_each(assert_throttled);

    let grpc = emails.iter().map(|email| app.grpc_login(email, PASSWORD));
    let codes = join_all(grpc).await.into_iter().map(|r| r.map(drop).map_err(|s| s.code())).collect::<Vec<_>>();
    assert!(codes.iter().all(|c| matches!(c, Err(Code::Unauthenticated | Code::ResourceExhausted))), "{codes:?}");
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
    guesses_stop_at_the_account_ceiling_from_any_address_and_in_flight_but_the_owners_device_gets_in,
    past_the_ceiling_a_known_device_gets_in_within_its_own_backoff_and_nothing_else_does,
    password_checks_behind_a_token_count_with_the_logins_and_starve_no_one,
    an_unknown_email_and_a_wrong_password_look_alike,
    hashing_past_its_queue_is_refused_at_once_and_recovers,
    oversized_bodies_and_messages_are_refused,
    a_slow_body_times_out_and_frees_its_connection,
);
