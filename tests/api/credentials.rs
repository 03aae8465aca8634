//! The credential lifecycle: no session outlives a password change, adopted bcrypt
//! passwords are never replaced by a guess, a password change starts a new session,
//! refresh tokens are revoked without an access token, and guessable passwords are refused.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Replica, TestApp, ada, client_from, field_violations, json_of, spawn_app, spawn_app_with};
use authd::pb::{RefreshTokenRequest, RegisterUserRequest, RevokeTokenRequest};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a new passphrase";

/// A server whose own hashes are slow (argon2 over 512 MiB, on one thread), and a replica
/// with the default cost on the same database. A user registered through the replica has
/// a hash of the default cost, which the slow server checks at once and then rehashes
/// slowly: a login there is still in its rehash while the replica changes the password or
/// logs out everywhere.
async fn slow_and_fast() -> (TestApp, Replica) {
    let app = spawn_app_with(|s| {
        s.passwords.memory_kib = 512 * 1024;
        s.passwords.concurrency = 1;
        s.tokens.session_cache_ttl = Duration::ZERO;
    })
    .await;
    let fast = app.replica(|s| s.tokens.session_cache_ttl = Duration::ZERO).await;
    (app, fast)
}

async fn post(http: &reqwest::Client, url: String, access: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = http.post(url).json(&body);
    if let Some(access) = access {
        request = request.bearer_auth(access);
    }
    json_of(request.send().await.unwrap()).await
}

async fn login_at(http: &reqwest::Client, url: String, password: &str) -> (StatusCode, Value) {
    post(http, url, None, json!({"email": "ada@example.com", "password": password})).await
}

fn tokens_of(body: &Value) -> (String, String) {
    let token = &body["data"]["user_token"];
    (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
}

/// Waits until the slow server has counted the login it was sent: it reads the user
/// first, so from then on that login holds the user's credentials as they were.
async fn until_the_login_is_counted(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let query = "select cast(hits as text) from throttle where key like 'login-account:%'";
    while app.sql_text(query).await.as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "the slow login was never counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The login is still hashing: another for the account is refused at once (one hash in
/// flight per account), so whatever happened before this happened during its hash.
async fn assert_still_hashing(app: &TestApp) {
    let probe = client_from("127.0.0.9");
    let response = probe
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": "a probe, not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "the slow login is no longer hashing");
}

async fn a_login_still_hashing_when_its_user_logs_out_everywhere_starts_no_session() {
    let (app, fast) = slow_and_fast().await;
    assert_eq!(app.http.post(fast.url("/api/v1/register-user")).json(&ada()).send().await.unwrap().status(), 201);
    let (status, body) = login_at(&app.http, fast.url("/api/v1/auth/login"), PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (access, _) = tokens_of(&body);

    let slow_login = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/api/v1/auth/login"));
        async move { login_at(&http, url, PASSWORD).await }
    });
    until_the_login_is_counted(&app).await;
    let (status, body) =
        post(&app.http, fast.url("/api/v1/auth/logout"), Some(&access), json!({"all_sessions": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_still_hashing(&app).await;

    let (status, body) = slow_login.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a login that began before the logout got in: {body}");
    // Nothing was left behind.
    let live = "select cast(count(*) as text) from sessions where revoked_at is null";
    assert_eq!(app.sql_text(live).await.as_deref(), Some("0"));
}

async fn a_login_still_hashing_across_a_password_change_neither_gets_in_nor_undoes_the_change() {
    let (app, fast) = slow_and_fast().await;
    assert_eq!(app.http.post(fast.url("/api/v1/register-user")).json(&ada()).send().await.unwrap().status(), 201);
    let (_, body) = login_at(&app.http, fast.url("/api/v1/auth/login"), PASSWORD).await;
    let (access, _) = tokens_of(&body);

    // The slow login checks the old password against the old hash, then rehashes it.
    let slow_login = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/api/v1/auth/login"));
        async move { login_at(&http, url, PASSWORD).await }
    });
    until_the_login_is_counted(&app).await;
    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let (status, body) = post(&app.http, fast.url("/api/v1/me/password"), Some(&access), change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_still_hashing(&app).await;

    let (status, body) = slow_login.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password got in after the change: {body}");
    // Its rehash did not put the old password back.
    assert_eq!(login_at(&app.http, fast.url("/api/v1/auth/login"), PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login_at(&app.http, fast.url("/api/v1/auth/login"), NEW_PASSWORD).await.0, StatusCode::OK);
}

/// An adopted user's bcrypt hash, put in place as adoption leaves it.
async fn adopt_with_bcrypt(app: &TestApp, email: &str, password: &str) {
    let hash = bcrypt::hash(password, 4).unwrap();
    app.sql(&format!("update users set password = '{hash}' where email = '{email}'"), &[]).await;
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    app.sql_text(&format!("select password from users where email = '{email}'")).await.unwrap()
}

async fn a_bcrypt_password_of_72_bytes_or_more_is_never_replaced_by_one_sharing_its_first_72() {
    // Login takes any password an adopted user may have, whatever the limit on new ones.
    let app = spawn_app_with(|s| s.passwords.max_length = 64).await;
    let mut bob = ada();
    bob["email"] = json!("bob@example.com");
    for user in [ada(), bob] {
        assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    }
    let first_72 = "an adopted user's passphrase, long enough to run past what bcrypt reads.";
    assert_eq!(first_72.len(), 72);
    let real = format!("{first_72} And then it ends like this.");
    adopt_with_bcrypt(&app, "ada@example.com", &real).await;

    // bcrypt never saw past byte 72, for the old app nor for us: these all match the hash...
    for password in [real.clone(), format!("{first_72} But this is a guess."), first_72.to_owned()] {
        let (status, body) = json_of(app.login("ada@example.com", &password).await).await;
        assert_eq!(status, StatusCode::OK, "{password:?}: {body}");
        // ...so none may become the password: the bcrypt hash stays.
        assert!(stored_hash(&app, "ada@example.com").await.starts_with("$2b$"), "replaced after {password:?}");
    }
    assert_eq!(app.login("ada@example.com", &real).await.status(), StatusCode::OK);

    // Under 72 bytes, bcrypt read every byte (and the end): the hash is upgraded.
    let short = "an adopted user's short passphrase";
    adopt_with_bcrypt(&app, "bob@example.com", short).await;
    assert_eq!(app.login("bob@example.com", short).await.status(), StatusCode::OK);
    assert!(stored_hash(&app, "bob@example.com").await.starts_with("$argon2id$"));
    assert_eq!(app.login("bob@example.com", short).await.status(), StatusCode::OK);

    // Login's bound is 4 KiB, not the new-password limit.
    let (status, body) = json_of(app.login("ada@example.com", &"p".repeat(4097)).await).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": "must be at most 4096 bytes"}]}))
    );
    assert_eq!(app.login("ada@example.com", &"p".repeat(4096)).await.status(), StatusCode::UNAUTHORIZED);
}

async fn a_password_change_ends_the_callers_session_too_and_returns_a_new_one() {
    let app = spawn_app().await;
    let (mine, my_refresh) = app.ada_tokens().await;
    let (_, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    let (other, _) = tokens_of(&body);

    let change = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let (status, body) = post(&app.http, app.url("/api/v1/me/password"), Some(&mine), change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["message"], &body["sessions_ended"]), (&json!("Password changed successfully."), &json!(1)));
    let token = &body["user_token"];
    assert_eq!((&token["tokenType"], &token["expiresIn"]), (&json!("Bearer"), &json!(900)));
    let (access, refresh) = (token["token"].as_str().unwrap(), token["refreshToken"].as_str().unwrap());

    for (ended, token) in [("the caller's", &mine), ("the other", &other)] {
        assert_eq!(app.me(Some(&format!("Bearer {token}"))).await.status(), StatusCode::UNAUTHORIZED, "{ended}");
    }
    assert_eq!(app.refresh(&my_refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(refresh).await.status(), StatusCode::OK);
}

async fn revoke(app: &TestApp, form: &[(&str, &str)]) -> (StatusCode, Value) {
    json_of(app.http.post(app.url("/api/v1/auth/revoke")).form(form).send().await.unwrap()).await
}

async fn a_refresh_token_is_revoked_without_an_access_token_as_rfc_7009_says() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let (status, _) = revoke(&app, &[("token", &refresh), ("token_type_hint", "refresh_token")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::UNAUTHORIZED, "its session ended");

    // Unknown, invalid, or already revoked: 200 all the same (RFC 7009 §2.2).
    for token in [refresh.as_str(), "not-a-token", ""] {
        assert_eq!(revoke(&app, &[("token", token)]).await.0, StatusCode::OK, "{token:?}");
    }
    // JSON too, and an access token ends its session as well.
    let (_, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    let (access, refresh) = tokens_of(&body);
    let (status, _) = post(&app.http, app.url("/api/v1/auth/revoke"), None, json!({"token": access})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = post(&app.http, app.url("/api/v1/auth/revoke"), None, json!({})).await;
    assert_eq!((status, body), (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"token": "field required"}]})));

    // gRPC: the same, for any token.
    let tokens = app.grpc_login("ada@example.com", PASSWORD).await.unwrap();
    let mut auth = app.auth().await;
    for token in [tokens.refresh_token.as_str(), tokens.refresh_token.as_str(), "not-a-token"] {
        let request = RevokeTokenRequest { token: token.into(), token_type_hint: "refresh_token".into() };
        auth.revoke_token(request).await.unwrap();
    }
    let status = auth.refresh_token(RefreshTokenRequest { refresh_token: tokens.refresh_token }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn register_with(app: &TestApp, password: &str) -> (StatusCode, Value) {
    let mut body = ada();
    body["password"] = json!(password);
    json_of(app.register(&body).await).await
}

const TOO_COMMON: &str = "is one of the most common passwords; choose another";
const PERSONAL: &str = "must not contain your name or the first part of your email";

async fn passwords_people_guess_are_refused_when_new_and_still_work_when_old() {
    let app = spawn_app().await;
    for common in ["password", "iloveyou", "Sunshine", "P@ssw0rd", "12345678"] {
        let answer = register_with(&app, common).await;
        assert_eq!(
            answer,
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": TOO_COMMON}]})),
            "{common}"
        );
    }
    // The name's parts and the email's local part, in any case, from 3 characters.
    for personal in ["lovelace-forever", "my name is ADA, hi", "Ada Lovelace"] {
        let answer = register_with(&app, personal).await;
        assert_eq!(
            answer,
            (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": PERSONAL}]})),
            "{personal}"
        );
    }
    let request = RegisterUserRequest {
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        location: "London".into(),
        about: None,
        password: "trustno1".into(),
    };
    let status = app.users().await.register_user(request).await.unwrap_err();
    assert_eq!(field_violations(&status), [("password".to_owned(), TOO_COMMON.to_owned())]);
    assert_eq!(register_with(&app, "my password is long enough").await.0, StatusCode::CREATED);

    let (_, body) = json_of(app.login("ada@example.com", "my password is long enough").await).await;
    let (access, _) = tokens_of(&body);
    for (new, why) in [("baseball", TOO_COMMON), ("lovelace and more", PERSONAL)] {
        let change = json!({"current_password": "my password is long enough", "new_password": new});
        let answer = post(&app.http, app.url("/api/v1/me/password"), Some(&access), change).await;
        assert_eq!(answer, (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"new_password": why}]})), "{new}");
    }

    // Existing users with such a password still log in: the rule is for new passwords.
    let lax = app.replica(|s| s.passwords.refuse_guessable = false).await;
    let mut bob = ada();
    (bob["email"], bob["password"]) = (json!("bob@example.com"), json!("iloveyou"));
    assert_eq!(app.http.post(lax.url("/api/v1/register-user")).json(&bob).send().await.unwrap().status(), 201);
    assert_eq!(app.login("bob@example.com", "iloveyou").await.status(), StatusCode::OK);
}

on_both_backends!(
    a_login_still_hashing_when_its_user_logs_out_everywhere_starts_no_session,
    a_login_still_hashing_across_a_password_change_neither_gets_in_nor_undoes_the_change,
    a_bcrypt_password_of_72_bytes_or_more_is_never_replaced_by_one_sharing_its_first_72,
    a_password_change_ends_the_callers_session_too_and_returns_a_new_one,
    a_refresh_token_is_revoked_without_an_access_token_as_rfc_7009_says,
    passwords_people_guess_are_refused_when_new_and_still_work_when_old,
);
