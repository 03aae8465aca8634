//! Security events: one structured log event per login, failure, refusal, password change,
//! refresh-token reuse, revocation and deletion, under the target `authd::security`, naming
//! the user (or a keyed digest of the account), the client address and the outcome, and
//! never a password or a token.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{LogCapture, TestApp, ada, json_of, spawn_app_with};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

async fn login(app: &TestApp, password: &str) -> (String, String) {
    let (status, body) = json_of(app.login("ada@example.com", password).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = &body["data"]["user_token"];
    (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn every_security_event_names_who_from_where_and_how_and_no_secret() {
    let log = LogCapture::start();
    let app = spawn_app_with(|s| {
        s.tokens.refresh_reuse_grace = Duration::ZERO;
        s.throttle.register_per_ip = 2;
    })
    .await;
    let mut secrets = vec![PASSWORD.to_owned(), NEW_PASSWORD.to_owned()];

    let (access, refresh) = app.ada_tokens().await;
    secrets.extend([access.clone(), refresh.clone()]);
    for (email, password) in [("ada@example.com", "wrong password one"), ("nobody@example.com", "wrong password two")] {
        assert_eq!(app.login(email, password).await.status(), StatusCode::UNAUTHORIZED);
        secrets.push(password.to_owned());
    }
    assert_eq!(app.register(&ada()).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.register(&ada()).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let grpc = app.grpc_login("ada@example.com", PASSWORD).await.unwrap();
    secrets.extend([grpc.access_token.clone(), grpc.refresh_token.clone()]);

    // A rotated refresh token replayed: the session ends.
    let (status, body) = json_of(app.refresh(&refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    secrets.push(body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);

    let (access, _) = login(&app, PASSWORD).await;
    let change = |current: &str| {
        let body = json!({"current_password": current, "new_password": NEW_PASSWORD});
        app.http.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send()
    };
    assert_eq!(change("wrong password three").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    secrets.push("wrong password three".to_owned());
    assert_eq!(change(PASSWORD).await.unwrap().status(), StatusCode::OK);

    let (other_access, _) = login(&app, NEW_PASSWORD).await;
    let (access, refresh) = login(&app, NEW_PASSWORD).await;
    secrets.extend([other_access, access.clone(), refresh]);
    let sessions: Value =
        app.http.get(app.url("/api/v1/me/sessions")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    let other = sessions["sessions"].as_array().unwrap().iter().find(|s| s["current"] == false).unwrap();
    let revoke = app.http.delete(app.url(&format!("/api/v1/me/sessions/{}", other["session_id"].as_str().unwrap())));
    assert_eq!(revoke.bearer_auth(&access).send().await.unwrap().status(), StatusCode::OK);
    let logout = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);

    let (access, _) = login(&app, NEW_PASSWORD).await;
    let delete = |password: &str| {
        app.http.delete(app.url("/api/v1/me")).bearer_auth(&access).json(&json!({"password": password})).send()
    };
    assert_eq!(delete("wrong password four").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    secrets.push("wrong password four".to_owned());
    assert_eq!(delete(NEW_PASSWORD).await.unwrap().status(), StatusCode::OK);

    let events = log.events();
    let security = events.iter().filter(|e| e["target"] == "authd::security").collect::<Vec<_>>();
    let find = |event: &str, outcome: &str| {
        security.iter().filter(|e| e["event"] == event && e["outcome"] == outcome).copied().collect::<Vec<&Value>>()
    };
    for (event, outcome, count) in [
        ("login", "success", 6),
        ("login", "failure", 2),
        ("throttled", "refused", 1),
        ("refresh_token_reuse", "refused", 1),
        ("password_change", "failure", 1),
        ("password_change", "success", 1),
        ("session_revoked", "success", 3),
        ("account_deletion", "failure", 1),
        ("account_deletion", "success", 1),
    ] {
        let found = find(event, outcome);
        assert_eq!(found.len(), count, "{event} {outcome}: {found:#?}\nin {security:#?}");
        for e in found {
            assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
            // A refusal per address is about the address alone.
            assert!(e["user_id"].is_u64() || e["account"].is_string() || event == "throttled", "who: {e}");
        }
    }
    let reasons = find("session_revoked", "success").iter().map(|e| e["reason"].as_str().unwrap()).collect::<Vec<_>>();
    assert_eq!(reasons, ["refresh_token_reuse", "revoked", "logout"]);
    assert_eq!(find("throttled", "refused")[0]["action"], "register");

    // Failed logins name the account by a keyed digest: stable, distinct, and not a hash
    // anyone could compute from an email alone.
    let failures = find("login", "failure");
    let digests = failures.iter().map(|e| e["account"].as_str().unwrap()).collect::<Vec<_>>();
    assert_ne!(digests[0], digests[1]);
    for (digest, email) in digests.iter().zip(["ada@example.com", "nobody@example.com"]) {
        assert!(digest.len() >= 32, "{digest}");
        assert!(!sha256_hex(email).contains(digest) && !digest.contains(&sha256_hex(email)[..16]), "{digest}");
    }

    for e in &security {
        let line = e.to_string();
        assert!(!line.contains("@example.com"), "an email in {line}");
    }
    let text = log.text();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in the log: {secret}");
    }
}

on_both_backends!(every_security_event_names_who_from_where_and_how_and_no_secret);
