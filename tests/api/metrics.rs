//! `GET /metrics`: Prometheus text with request counts and latencies per route and RPC,
//! login outcomes, refresh reuse detections and the database pool; no user data.

use std::time::Duration;

use futures::{StreamExt, stream};
use reqwest::StatusCode;

use crate::helpers::{spawn_app_with, with_bearer};
use authd::pb::GetMeRequest;

async fn metrics_count_requests_logins_and_reuse_by_route_without_user_data() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (access, refresh) = app.ada_tokens().await;
    assert_eq!(app.login("ada@example.com", "not the password").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED, "reused");
    let session_id = uuid::Uuid::new_v4();
    let revoke = app.http.delete(app.url(&format!("/api/v1/me/sessions/{session_id}"))).bearer_auth(&access);
    assert_eq!(revoke.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "the reuse ended the session");
    let mut users = app.users().await;
    assert!(users.get_me(with_bearer(GetMeRequest {}, "not-a-token")).await.is_err());

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for expected in [
        r#"authd_http_requests_total{method="POST",route="/api/v1/auth/login",status="200"}"#,
        r#"authd_http_requests_total{method="POST",route="/api/v1/auth/login",status="401"}"#,
        r#"authd_http_requests_total{method="DELETE",route="/api/v1/me/sessions/{session_id}",status="401"}"#,
        r#"authd_http_request_duration_seconds_bucket{method="POST",route="/api/v1/register-user",le="0.5"}"#,
        r#"authd_grpc_requests_total{rpc="/authd.v1.UserService/GetMe",code="16"}"#,
        r#"authd_grpc_request_duration_seconds_count{rpc="/authd.v1.UserService/GetMe"}"#,
        r#"authd_logins_total{outcome="success"}"#,
        r#"authd_logins_total{outcome="failure"}"#,
        "authd_refresh_token_reuse_detected_total ",
        r#"authd_db_pool_connections{state="in_use"}"#,
        r#"authd_db_pool_connections{state="idle"}"#,
        "# TYPE authd_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    for private in [session_id.to_string(), "ada@example.com".to_owned(), access, refresh] {
        assert!(!text.contains(&private), "metrics must carry no user data");
    }
}

/// Method names are the caller's to choose: any that authd does not serve is one label,
/// `unmatched`, whatever the transport and however it failed.
async fn unknown_grpc_methods_add_no_series() {
    let app = spawn_app_with(|_| {}).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let names = (0..1000).map(|i| {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = match i % 3 {
            0 => format!("/authd.v1.AuthService/{name}"),
            1 => format!("/authd.v1.UserService/{name}"),
            _ => format!("/{name}.Service/Method"),
        };
        (i, path, name)
    });
    let calls = stream::iter(names)
        .map(|(i, path, name)| {
            let (client, content_type) = match i % 4 {
                0 => (&h2, "application/grpc"),
                1 => (&app.http, "application/grpc"),
                2 => (&h2, "application/grpc-web+proto"),
                _ => (&app.http, "application/grpc-web-text"),
            };
            let request = client.post(app.url(&path)).header("content-type", content_type).header("te", "trailers");
            async move {
                // Whatever the answer, it must not name the method in /metrics.
                let _ = request.body(vec![0u8; 5]).send().await.unwrap().bytes().await;
                name
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"authd_grpc_requests_total{rpc="unmatched""#), "{text}");
    let leaked = calls.iter().filter(|name| text.contains(name.as_str())).count();
    assert_eq!(leaked, 0, "{leaked} of 1000 unknown method names became labels");
}

on_both_backends!(
    metrics_count_requests_logins_and_reuse_by_route_without_user_data,
    unknown_grpc_methods_add_no_series
);
