//! Sessions: rotation, the reuse grace window, theft detection, logout, validation.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{TestApp, ada, json_of, spawn_app, spawn_app_with, with_bearer};
use authd::pb::{GetMeRequest, LogoutRequest, RefreshTokenRequest};

async fn refresh_tokens(app: &TestApp, refresh: &str) -> Result<(String, String), StatusCode> {
    let response = app.refresh(refresh).await;
    if response.status() != StatusCode::OK {
        return Err(response.status());
    }
    let body: Value = response.json().await.unwrap();
    let token = &body["data"]["user_token"];
    Ok((token["token"].as_str().unwrap().into(), token["refreshToken"].as_str().unwrap().into()))
}

async fn active(app: &TestApp, access: &str) -> bool {
    let grpc = app.grpc_validate(access).await.unwrap();
    let (status, rest) = app.validate(access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest["active"], grpc.active, "REST and gRPC agree");
    grpc.active
}

async fn me_ok(app: &TestApp, access: &str) -> bool {
    app.me(Some(&format!("Bearer {access}"))).await.status() == StatusCode::OK
}

async fn a_retried_refresh_inside_the_grace_window_gets_the_same_successor() {
    let app = spawn_app().await;
    let (_, r0) = app.ada_tokens().await;
    let (a1, r1) = refresh_tokens(&app, &r0).await.unwrap();
    let (a1_again, r1_again) = refresh_tokens(&app, &r0).await.unwrap();
    assert_eq!(r1_again, r1, "one token, one successor");
    assert!(me_ok(&app, &a1).await && me_ok(&app, &a1_again).await);
    // The session goes on from the successor.
    let (a2, _) = refresh_tokens(&app, &r1).await.unwrap();
    assert!(me_ok(&app, &a2).await);
}

async fn a_reused_refresh_token_after_the_window_ends_the_whole_session() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (a0, r0) = app.ada_tokens().await;
    let (a1, r1) = refresh_tokens(&app, &r0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(refresh_tokens(&app, &r0).await, Err(StatusCode::UNAUTHORIZED), "the replay is refused");
    // ...and everything of that session dies with it, the newest tokens included.
    assert_eq!(refresh_tokens(&app, &r1).await, Err(StatusCode::UNAUTHORIZED));
    for access in [&a0, &a1] {
        assert!(!me_ok(&app, access).await);
        assert!(!active(&app, access).await);
    }
    // Another login is a new session and works.
    let (status, _) = json_of(app.login("ada@example.com", "correct horse battery").await).await;
    assert_eq!(status, StatusCode::OK);
}

async fn twenty_concurrent_refreshes_of_one_token_give_one_successor_and_keep_the_session() {
    let app = spawn_app().await;
    let (_, r0) = app.ada_tokens().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(app.auth().await);
    }
    let calls = (0..20).map(|i| {
        let mut client = clients[i % clients.len()].clone();
        let refresh_token = r0.clone();
        async move { client.refresh_token(RefreshTokenRequest { refresh_token }).await.map(|r| r.into_inner()) }
    });
    let results = join_all(calls).await;
    let successors: Vec<String> =
        results.into_iter().map(|r| r.expect("no caller is logged out").refresh_token).collect();
    assert!(successors.iter().all(|s| *s == successors[0]), "exactly one live successor");
    assert_ne!(successors[0], r0);
    let (a2, _) = refresh_tokens(&app, &successors[0]).await.expect("the successor is live");
    assert!(me_ok(&app, &a2).await);
}

async fn logout_ends_the_callers_session_at_once_and_no_other() {
    let app = spawn_app().await;
    let (a1, r1) = app.ada_tokens().await;
    let other: Value = app.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
    let a2 = other["data"]["user_token"]["token"].as_str().unwrap().to_owned();

    let (status, body) =
        json_of(app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&a1).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"message": "Logout successful.", "sessions_ended": 1})));

    assert!(!me_ok(&app, &a1).await, "the access token dies before its expiry");
    assert!(!active(&app, &a1).await);
    assert_eq!(refresh_tokens(&app, &r1).await, Err(StatusCode::UNAUTHORIZED));
    let status = app.users().await.get_me(with_bearer(GetMeRequest {}, &a1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    assert!(me_ok(&app, &a2).await, "the other session lives on");
    assert!(active(&app, &a2).await);
}

async fn logout_of_all_sessions_over_grpc_ends_every_one() {
    let app = spawn_app().await;
    let (a1, r1) = app.ada_tokens().await;
    let t2 = app.grpc_login("ada@example.com", "correct horse battery").await.unwrap();
    let ended = app
        .auth()
        .await
        .logout(with_bearer(LogoutRequest { all_sessions: true }, &t2.access_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.sessions_ended, 2);
    for access in [&a1, &t2.access_token] {
        assert!(!me_ok(&app, access).await);
        assert!(!active(&app, access).await);
    }
    for refresh in [&r1, &t2.refresh_token] {
        assert_eq!(refresh_tokens(&app, refresh).await, Err(StatusCode::UNAUTHORIZED));
    }
    // Logging out again with a dead token is refused.
    let status = app.auth().await.logout(with_bearer(LogoutRequest::default(), &a1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let response = app.http.post(app.url("/api/v1/auth/logout")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(json_of(response).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Not authenticated"})));
}

async fn validate_token_answers_active_with_the_claims_or_inactive_without_error() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let answer = app.grpc_validate(&access).await.unwrap();
    assert!(answer.active);
    assert!(answer.user_id > 0);
    assert_eq!(answer.session_id.len(), 36);
    let expires = answer.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((890..=900).contains(&expires), "{expires}");

    let (status, body) = app.validate(&access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["active"], true);
    assert_eq!(body["user_id"], answer.user_id);
    assert_eq!(body["session_id"], answer.session_id.as_str());

    for token in [refresh.as_str(), "garbage", "a.b.c"] {
        assert!(!active(&app, token).await, "{token}");
        let (_, body) = app.validate(token).await;
        assert_eq!(body, json!({"active": false}));
    }
    let status = app.grpc_validate("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let request = app.http.post(app.url("/api/v1/auth/validate")).header("authorization", app.introspector().await);
    let (status, body) = json_of(request.json(&json!({})).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"token": "field required"}]})));
}

async fn the_logout_body_is_optional_but_checked() {
    let app = spawn_app().await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (access, _) = {
        let body: Value = app.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
        (body["data"]["user_token"]["token"].as_str().unwrap().to_owned(), ())
    };
    let response = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({"all_sessions": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(response).await,
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"all_sessions": "must be true or false"}]}))
    );
    assert!(me_ok(&app, &access).await, "a refused logout changes nothing");
}

on_both_backends!(
    a_retried_refresh_inside_the_grace_window_gets_the_same_successor,
    a_reused_refresh_token_after_the_window_ends_the_whole_session,
    twenty_concurrent_refreshes_of_one_token_give_one_successor_and_keep_the_session,
    logout_ends_the_callers_session_at_once_and_no_other,
    logout_of_all_sessions_over_grpc_ends_every_one,
    validate_token_answers_active_with_the_claims_or_inactive_without_error,
    the_logout_body_is_optional_but_checked,
);

/// Two processes on one PostgreSQL database: a logout on one reaches the other's session
/// cache through NOTIFY, long before the cache would have expired the session.
#[tokio::test]
async fn a_logout_on_one_replica_ends_the_session_on_the_other_at_once() {
    crate::helpers::on_postgres("sessions::a_logout_on_one_replica_ends_the_session_on_the_other_at_once", async {
        let long_cache = |s: &mut authd::config::Settings| s.tokens.session_cache_ttl = Duration::from_secs(60);
        let a = spawn_app_with(long_cache).await;
        let mut settings = crate::helpers::test_settings(a.database_url());
        long_cache(&mut settings);
        let b = authd::startup::Application::build(settings).await.unwrap();
        let b_addr = b.local_addr();
        let b_server = tokio::spawn(b.run_until(std::future::pending()));
        let b_me = |access: String| {
            let http = a.http.clone();
            async move {
                http.get(format!("http://{b_addr}/api/v1/me")).bearer_auth(access).send().await.unwrap().status()
            }
        };

        let (access, _) = a.ada_tokens().await;
        // B confirms the session (and caches it) before the logout.
        for _ in 0..3 {
            assert_eq!(b_me(access.clone()).await, StatusCode::OK);
        }
        let response = a.http.post(a.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let status = b_me(access.clone()).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "replica B still accepts the logged-out token: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b_server.abort();
    })
    .await
}
