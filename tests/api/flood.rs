//! Cheap checks before expensive ones: a flood from one address is turned away in process,
//! before it costs the database anything, while every other client goes on.

use std::time::Duration;

use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ada, client_from, spawn_app};

const PASSWORD: &str = "correct horse battery";

/// A refresh token of the right shape whose MAC is wrong, and plain junk.
fn forged(genuine: &str, i: usize) -> String {
    if i.is_multiple_of(2) {
        let mut forged = genuine.to_owned();
        let last = if forged.ends_with('A') { 'B' } else { 'A' };
        forged.pop();
        forged.push(last);
        forged
    } else {
        format!("forged-{i}-{}", uuid::Uuid::new_v4().simple())
    }
}

async fn a_flood_of_forged_refresh_tokens_writes_nothing_and_starves_no_one() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.2");
    let post = |client: &reqwest::Client, path: &str, body: Value| client.post(app.url(path)).json(&body).send();
    assert_eq!(post(&owner, "/api/v1/register-user", ada()).await.unwrap().status(), StatusCode::CREATED);
    let login = json!({"email": "ada@example.com", "password": PASSWORD});
    let signed_in: Value = post(&owner, "/api/v1/auth/login", login.clone()).await.unwrap().json().await.unwrap();
    let genuine = signed_in["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();

    let attacker = client_from("127.0.0.3");
    let flood = stream::iter(0..600)
        .map(|i| {
            let request = attacker
                .post(app.url("/api/v1/auth/refresh-token"))
                .json(&json!({"token": forged(&genuine, i), "tokenType": "Bearer"}));
            async move {
                let response = request.send().await.unwrap();
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (response.status(), retry_after)
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let meanwhile = async {
        // Let the flood get going first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refreshed = post(&owner, "/api/v1/auth/refresh-token", json!({"token": genuine})).await.unwrap();
        let logged_in = post(&owner, "/api/v1/auth/login", login.clone()).await.unwrap();
        (refreshed.status(), logged_in.status())
    };
    let (answers, (refreshed, logged_in)) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(flood, meanwhile) })
            .await
            .expect("the flood and the owner's calls complete");

    assert_eq!((refreshed, logged_in), (StatusCode::OK, StatusCode::OK), "the owner is served during the flood");
    let unexpected = answers
        .iter()
        .filter(|(status, _)| ![StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(status))
        .collect::<Vec<_>>();
    assert!(unexpected.is_empty(), "forged tokens get 401 or 429, never {unexpected:?}");
    let refused = answers.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).collect::<Vec<_>>();
    assert!(refused.len() > 300, "the flood is cut off: only {} of 600 refused", refused.len());
    for (_, retry_after) in refused {
        let seconds: u64 = retry_after.as_deref().expect("a Retry-After").parse().unwrap();
        assert!(seconds >= 1);
    }
    // Not one forged token cost a database write: no counter of the attacker's address.
    let counters = app.sql_column("select key from throttle", &[]).await;
    let counters = counters.iter().map(|key| String::from_utf8_lossy(key).into_owned()).collect::<Vec<_>>();
    assert!(!counters.iter().any(|key| key.contains("127.0.0.3")), "{counters:?}");
}

on_both_backends!(a_flood_of_forged_refresh_tokens_writes_nothing_and_starves_no_one);
