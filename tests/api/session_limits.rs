//! Sessions are bounded: a cap per user, ended sessions pruned in the background, and idle
//! ones out of the owner's list.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Arg, TestApp, ada, eventually, json_of, spawn_app, spawn_app_with};

const PASSWORD: &str = "correct horse battery";

/// Logs Ada in; her (access, refresh) tokens.
async fn login(app: &TestApp) -> (String, String) {
    let (status, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = &body["data"]["user_token"];
    (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
}

/// The ids of the sessions the owner of `access` is shown, most recently used first.
async fn listed(app: &TestApp, access: &str) -> Vec<String> {
    let response = app.http.get(app.url("/api/v1/me/sessions")).bearer_auth(access).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap().to_owned()).collect()
}

/// The session id of an access token (its `sid` claim).
fn session_of(access: &str) -> uuid::Uuid {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sid"].as_str().unwrap().parse().unwrap()
}

async fn a_login_past_the_cap_ends_the_session_unused_longest() {
    let app = spawn_app_with(|s| s.tokens.max_sessions_per_user = 3).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let first = login(&app).await;
    let second = login(&app).await;
    let third = login(&app).await;
    // The first session is used again: it is now the second's that has waited longest.
    let response = app.refresh(&first.1).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first_refreshed = json_of(response).await.1["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();

    let fourth = login(&app).await;
    let live = listed(&app, &fourth.0).await;
    assert_eq!(live.len(), 3, "{live:?}");
    assert!(!live.contains(&session_of(&second.0).to_string()), "the session unused longest went: {live:?}");
    assert_eq!(app.refresh(&second.1).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(Some(&format!("Bearer {}", second.0))).await.status(), StatusCode::UNAUTHORIZED);
    for refresh in [&first_refreshed, &third.1, &fourth.1] {
        assert_eq!(app.refresh(refresh).await.status(), StatusCode::OK);
    }

    // Over gRPC alike: one more login, and the next longest unused goes.
    app.grpc_login("ada@example.com", PASSWORD).await.unwrap();
    assert_eq!(listed(&app, &fourth.0).await.len(), 3);
}

async fn the_session_list_leaves_out_idle_sessions() {
    let app = spawn_app().await;
    let (idle, _) = app.ada_tokens().await;
    let (current, _) = login(&app).await;
    assert_eq!(listed(&app, &current).await.len(), 2);
    // Unused for longer than REFRESH_TOKEN_IDLE_DAYS (7): the session has ended.
    let long_ago = Utc::now() - chrono::Duration::days(8);
    let aged = app
        .sql(
            "update sessions set last_used_at = $1 where session_id = $2",
            &[Arg::Time(long_ago), Arg::Id(session_of(&idle))],
        )
        .await;
    assert_eq!(aged, 1);
    assert_eq!(listed(&app, &current).await, [session_of(&current).to_string()]);
}

async fn ended_sessions_are_pruned_after_their_retention() {
    let app = spawn_app_with(|s| s.limits.health_check_interval = Duration::from_millis(100)).await;
    let (revoked_long_ago, _) = app.ada_tokens().await;
    let mut sessions = vec![session_of(&revoked_long_ago)];
    for _ in 0..4 {
        sessions.push(session_of(&login(&app).await.0));
    }
    let [revoked_long_ago, expired_long_ago, idle_long_ago, revoked_lately, live] = sessions[..] else {
        unreachable!()
    };
    let ago = |hours| Arg::Time(Utc::now() - chrono::Duration::hours(hours));
    for (sql, id, when) in [
        ("update sessions set revoked_at = $1 where session_id = $2", revoked_long_ago, ago(25)),
        ("update sessions set expires_at = $1 where session_id = $2", expired_long_ago, ago(25)),
        // Idle after 7 days, and a day's retention since.
        ("update sessions set last_used_at = $1 where session_id = $2", idle_long_ago, ago(8 * 24 + 1)),
        ("update sessions set revoked_at = $1 where session_id = $2", revoked_lately, ago(1)),
    ] {
        assert_eq!(app.sql(sql, &[when, Arg::Id(id)]).await, 1);
    }

    // The pruner's first pass comes one health check after start-up.
    let app = app.restart().await;
    let rows = |sql| app.sql_column(sql, &[]);
    eventually(Duration::from_secs(20), "three ended sessions pruned", || async {
        rows("select 'row' from sessions").await.len() == 2
    })
    .await;
    let kept = app
        .sql_column(
            "select 'kept' from sessions where session_id in ($1, $2)",
            &[Arg::Id(revoked_lately), Arg::Id(live)],
        )
        .await;
    assert_eq!(kept.len(), 2, "the session ended lately (kept for reuse detection) and the live one remain");
}

on_both_backends!(
    a_login_past_the_cap_ends_the_session_unused_longest,
    the_session_list_leaves_out_idle_sessions,
    ended_sessions_are_pruned_after_their_retention,
);
