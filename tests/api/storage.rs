//! What both backends must guarantee alike: persistence across restarts, one successor
//! per refresh token under concurrency, and migrations on (or off) at start-up.

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestDb, spawn_app, spawn_app_with, test_settings};
use authd::{pb::RefreshTokenRequest, startup::Application};

async fn a_restart_keeps_users_and_the_tokens_already_issued() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let app = app.restart().await;
    // The generated keys were kept in the database, so the old tokens still verify.
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    assert_eq!(app.login("ada@example.com", "correct horse battery").await.status(), StatusCode::OK);
}

/// Concurrent refreshes with one token, over both transports, yield one successor at most.
async fn racing_refreshes(grace: Duration) -> Vec<Result<String, String>> {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = grace).await;
    let (_, refresh) = app.ada_tokens().await;
    let rest = (0..6).map(|_| {
        let (app, refresh) = (&app, &refresh);
        async move {
            let response = app.refresh(refresh).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            match status {
                StatusCode::OK => Ok(body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned()),
                other => Err(other.to_string()),
            }
        }
    });
    let grpc = (0..6).map(|_| {
        let (app, refresh) = (&app, &refresh);
        async move {
            let request = RefreshTokenRequest { refresh_token: refresh.clone() };
            match app.auth().await.refresh_token(request).await {
                Ok(reply) => Ok(reply.into_inner().refresh_token),
                Err(status) => Err(format!("{:?}", status.code())),
            }
        }
    });
    let (mut results, grpc) = tokio::join!(join_all(rest), join_all(grpc));
    results.extend(grpc);
    results
}

async fn concurrent_refreshes_of_one_token_share_one_successor() {
    let results = racing_refreshes(Duration::from_secs(10)).await;
    let successors = results.iter().filter_map(|r| r.as_ref().ok()).collect::<HashSet<_>>();
    // Inside the grace window every racer gets the same successor.
    assert_eq!(successors.len(), 1, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

async fn without_a_grace_window_concurrent_refreshes_never_fork_the_session() {
    let results = racing_refreshes(Duration::ZERO).await;
    let successors = results.iter().filter_map(|r| r.as_ref().ok()).collect::<HashSet<_>>();
    assert!(successors.len() <= 1, "two live successors: {results:?}");
}

async fn with_migrations_off_start_up_refuses_an_unmigrated_database_until_migrate() {
    let db = TestDb::create().await;
    let mut settings = test_settings(&db.url);
    settings.database.migrate_on_start = false;
    let error = Application::build(settings.clone()).await.err().expect("start-up refuses");
    assert!(format!("{error:#}").contains("authd migrate"), "{error:#}");

    authd::startup::migrate(&settings).await.unwrap();
    let app = crate::helpers::start(db, settings).await;
    assert_eq!(app.register(&crate::helpers::ada()).await.status(), StatusCode::CREATED);
}

on_both_backends!(
    a_restart_keeps_users_and_the_tokens_already_issued,
    concurrent_refreshes_of_one_token_share_one_successor,
    without_a_grace_window_concurrent_refreshes_never_fork_the_session,
    with_migrations_off_start_up_refuses_an_unmigrated_database_until_migrate,
);
