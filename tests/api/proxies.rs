//! Behind a proxy: whose word on the client's address is believed, and what the per-IP
//! limits, the security log and the access log then see.

use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::helpers::{LogCapture, TestApp, client_from, spawn_app_with};
use authd::pb::LoginRequest;

/// A REST login of an unknown account, as from `forwarded_for` (an `X-Forwarded-For`).
async fn login_as(app: &TestApp, client: &reqwest::Client, forwarded_for: Option<&str>) -> StatusCode {
    let mut request =
        client.post(app.url("/api/v1/auth/login")).json(&json!({"email": "nobody@example.com", "password": "wrong"}));
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    request.send().await.unwrap().status()
}

/// A gRPC login of an unknown account with `x-forwarded-for` metadata.
async fn grpc_login_as(app: &TestApp, forwarded_for: &str) -> Code {
    let mut request = tonic::Request::new(LoginRequest {
        email: "nobody@example.com".into(),
        password: "wrong".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("x-forwarded-for", forwarded_for.parse().unwrap());
    app.auth().await.login(request).await.unwrap_err().code()
}

async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        s.throttle.login_per_ip = 2;
    })
    .await;
    let proxy = reqwest::Client::new();
    for _ in 0..2 {
        assert_eq!(login_as(&app, &proxy, Some("198.51.100.1")).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_as(&app, &proxy, Some("198.51.100.1")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(grpc_login_as(&app, "198.51.100.1").await, Code::ResourceExhausted);
    // Another client of the same proxy has a budget of its own, over REST and gRPC.
    assert_eq!(login_as(&app, &proxy, Some("198.51.100.2")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(grpc_login_as(&app, "198.51.100.2").await, Code::Unauthenticated);
    // What a client wrote to the left of the address our proxy appended is not believed.
    assert_eq!(login_as(&app, &proxy, Some("198.51.100.3, 198.51.100.1")).await, StatusCode::TOO_MANY_REQUESTS);
    // Nor is a client that names the proxy (a trusted hop): the walk goes on to the left.
    assert_eq!(login_as(&app, &proxy, Some("198.51.100.1, 127.0.0.9")).await, StatusCode::TOO_MANY_REQUESTS);
}

async fn behind_a_trusted_proxy_ipv6_clients_share_the_budget_of_their_64() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.throttle.login_per_ip = 2;
    })
    .await;
    let proxy = reqwest::Client::new();
    assert_eq!(login_as(&app, &proxy, Some("2001:db8:1:2::1")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_as(&app, &proxy, Some("2001:db8:1:2:ffff:ffff:ffff:fffe")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_as(&app, &proxy, Some("[2001:db8:1:2::3]:4711")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(grpc_login_as(&app, "2001:db8:1:2::4").await, Code::ResourceExhausted);
    assert_eq!(login_as(&app, &proxy, Some("2001:db8:1:3::1")).await, StatusCode::UNAUTHORIZED);
}

async fn a_forged_forwarded_for_from_an_untrusted_peer_gets_no_other_budget() {
    // 127.0.0.1 is not among the trusted proxies: its headers are its own word.
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.2/32".parse().unwrap()];
        s.throttle.login_per_ip = 2;
    })
    .await;
    let direct = client_from("127.0.0.1");
    for forged in [None, Some("198.51.100.7")] {
        assert_eq!(login_as(&app, &direct, forged).await, StatusCode::UNAUTHORIZED);
    }
    for forged in ["198.51.100.8", "10.0.0.1", "127.0.0.3", "198.51.100.9, 127.0.0.2"] {
        assert_eq!(login_as(&app, &direct, Some(forged)).await, StatusCode::TOO_MANY_REQUESTS, "{forged}");
        assert_eq!(grpc_login_as(&app, forged).await, Code::ResourceExhausted, "{forged}");
    }
    // Nor can it spend another address's budget: 127.0.0.3's is whole.
    let other = client_from("127.0.0.3");
    assert_eq!(login_as(&app, &other, None).await, StatusCode::UNAUTHORIZED);
}

async fn the_access_and_security_logs_show_the_forwarded_client() {
    let logs = LogCapture::start();
    let app = spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let proxy = client_from("127.0.0.1");
    assert_eq!(login_as(&app, &proxy, Some("6.6.6.6, 203.0.113.45")).await, StatusCode::UNAUTHORIZED);
    let events = logs.events();
    let access = events
        .iter()
        .find(|e| e["message"] == "request" && e["path"] == "/api/v1/auth/login")
        .unwrap_or_else(|| panic!("an access log line: {events:#?}"));
    assert_eq!(access["client"], "203.0.113.45", "{access}");
    let failed = events.iter().find(|e| e["message"] == "login failed").expect("a security event");
    assert_eq!(failed["client_ip"], "203.0.113.45", "{failed}");
}

on_both_backends!(
    behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget,
    behind_a_trusted_proxy_ipv6_clients_share_the_budget_of_their_64,
    a_forged_forwarded_for_from_an_untrusted_peer_gets_no_other_budget,
    the_access_and_security_logs_show_the_forwarded_client,
);
