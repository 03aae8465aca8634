//! The credential lifecycle under attack: floods that cost CPU before any limit, devices
//! across password changes, the account's failure ceiling over time, revocation floods,
//! cookie tossing, and values planted in the database.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Backend, LogCapture, TestApp, ada, backend, client_from, json_of, spawn_app_with, with_bearer};
use authd::{
    pb::{ChangePasswordRequest, RegisterUserRequest},
    startup::Application,
};

const PASSWORD: &str = "correct horse battery";

/// Every l33t character zxcvbn substituted: once the costliest password for the strength check.
/// With the owner's name in it, the policy refuses it (422), after that check has run.
const COSTLY_AND_REFUSED: &str = "4@8({[<369!|170$5+%2ada";

fn bob() -> Value {
    let mut bob = ada();
    bob["email"] = json!("bob@example.com");
    bob["name"] = json!("Bob Stone");
    bob
}

/// How many of `statuses` were `answered` and how many refused by a limit (429); nothing else.
fn answered_and_refused(statuses: &[StatusCode], answered: StatusCode) -> (usize, usize) {
    let checked = statuses.iter().filter(|s| **s == answered).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, statuses.len(), "{statuses:?}");
    (checked, refused)
}

async fn a_flood_of_costly_new_passwords_is_limited_before_the_strength_check() {
    const LIMIT: usize = 10;
    let app = spawn_app_with(|s| {
        s.throttle.address_limit = LIMIT as u32;
        s.throttle.register_per_ip = 0;
    })
    .await;
    assert_eq!(app.register(&bob()).await.status(), StatusCode::CREATED);
    let attacker = client_from("127.0.0.9");
    let register = |i: usize| {
        let mut body = ada();
        body["email"] = json!(format!("ada{i}@example.com"));
        body["password"] = json!(COSTLY_AND_REFUSED);
        attacker.post(app.url("/api/v1/register-user")).json(&body).send()
    };
    // Another client logs in during the flood.
    let owner = client_from("127.0.0.2");
    let login =
        owner.post(app.url("/api/v1/auth/login")).json(&json!({"email": "bob@example.com", "password": PASSWORD}));
    let (flood, login) = tokio::join!(join_all((0..100).map(register)), login.send());
    assert_eq!(login.unwrap().status(), StatusCode::OK, "another client's login during the flood");
    let statuses = flood.into_iter().map(|r| r.unwrap().status()).collect::<Vec<_>>();
    let (checked, refused) = answered_and_refused(&statuses, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(checked <= LIMIT, "{checked} passwords checked from one address, past its limit of {LIMIT}");
    assert!(refused >= 100 - LIMIT, "{refused} refused");
    // A body with a field missing as well is refused by the limit too, before the check.
    let mut partial = ada();
    partial["password"] = json!(COSTLY_AND_REFUSED);
    partial.as_object_mut().unwrap().remove("location");
    let response = attacker.post(app.url("/api/v1/register-user")).json(&partial).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // Over gRPC alike (the test's gRPC client is 127.0.0.1, whose allowance is untouched:
    // spend it first).
    let request = |i: usize| RegisterUserRequest {
        name: "Ada Lovelace".into(),
        email: format!("grpc{i}@example.com"),
        location: "London".into(),
        about: None,
        password: COSTLY_AND_REFUSED.into(),
    };
    let mut users = app.users().await;
    let mut codes = Vec::new();
    for i in 0..LIMIT + 2 {
        codes.push(users.register_user(request(i)).await.unwrap_err().code());
    }
    assert!(codes[..LIMIT - 1].iter().all(|c| *c == Code::InvalidArgument), "{codes:?}");
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
}

async fn a_flood_of_costly_password_changes_is_limited_before_the_strength_check() {
    const LIMIT: usize = 10;
    let app = spawn_app_with(|s| s.throttle.address_limit = LIMIT as u32).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    // Ada logs in from 127.0.0.9 (one call of its allowance), then floods from there.
    let attacker = client_from("127.0.0.9");
    let (_, body) = json_of(
        attacker
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let change = |_| {
        let body = json!({"current_password": PASSWORD, "new_password": COSTLY_AND_REFUSED});
        attacker.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send()
    };
    let statuses = join_all((0..60).map(change)).await.into_iter().map(|r| r.unwrap().status()).collect::<Vec<_>>();
    let (checked, refused) = answered_and_refused(&statuses, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(checked < LIMIT, "{checked} new passwords checked from one address, past its limit of {LIMIT}");
    assert!(refused > 0);
}

/// An app whose account ceiling is 3 failures, with no other limit in the way.
async fn app_with_a_ceiling_of_three(configure: impl FnOnce(&mut authd::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.throttle.account_failure_limit = 3;
        s.throttle.free_failures = 1000;
        s.throttle.login_per_ip = 0;
        configure(s);
    })
    .await
}

async fn login_with(app: &TestApp, from: &str, password: &str, device: &str) -> reqwest::Response {
    let body = json!({"email": "ada@example.com", "password": password, "device_token": device});
    client_from(from).post(app.url("/api/v1/auth/login")).json(&body).send().await.unwrap()
}

/// The device token and access token of a successful REST login.
async fn signed_in(response: reqwest::Response) -> (String, String) {
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["device_token"].as_str().unwrap().to_owned(),
        body["data"]["user_token"]["token"].as_str().unwrap().to_owned(),
    )
}

/// Wrong guesses at Ada's password from fresh addresses (127.0.2.`first`, ...) until the
/// account's ceiling refuses one; returns how many were checked.
async fn guess_until_refused(app: &TestApp, first: u8) -> usize {
    for (checked, last) in (first..=255).enumerate() {
        let response = login_with(app, &format!("127.0.2.{last}"), "wrong password", "").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return checked;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    panic!("no ceiling")
}

async fn a_password_change_keeps_the_callers_device_known_and_forgets_the_others() {
    let app = app_with_a_ceiling_of_three(|_| {}).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (laptop, access) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    let (phone, _) = signed_in(login_with(&app, "127.0.0.3", PASSWORD, "").await).await;

    // Ada changes her password from the laptop: no device token is handed out (the
    // laptop keeps the one it has), neither as a field nor as a cookie.
    let body = json!({"current_password": PASSWORD, "new_password": "a new passphrase"});
    let response = app.http.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send().await.unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("device_token").is_none(), "{body}");

    // An attacker hammers the account to its ceiling: the owner's laptop still gets in,
    // by its token; the phone is known no more.
    // (A right password starts the account's count over: the refusals come first.)
    assert_eq!(guess_until_refused(&app, 1).await, 3);
    let response = login_with(&app, "127.0.0.2", "a new passphrase", &phone).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_with(&app, "127.0.0.2", "a new passphrase", &laptop).await.status(), StatusCode::OK);

    // Over gRPC likewise: the device of the session that changed the password stays
    // known, and the answer carries no device token.
    let signed_in = app.grpc_login("ada@example.com", "a new passphrase").await.unwrap();
    let request = with_bearer(
        ChangePasswordRequest {
            current_password: "a new passphrase".into(),
            new_password: "another passphrase".into(),
        },
        &signed_in.access_token,
    );
    let tokens = app.users().await.change_password(request).await.unwrap().into_inner().tokens.unwrap();
    assert_eq!(tokens.device_token, "");
    assert_eq!(guess_until_refused(&app, 10).await, 3);
    let response = login_with(&app, "127.0.0.4", "another passphrase", &laptop).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = login_with(&app, "127.0.0.4", "another passphrase", &signed_in.device_token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn logging_out_everywhere_keeps_the_callers_device_known_and_forgets_the_others() {
    let app = app_with_a_ceiling_of_three(|_| {}).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (laptop, _) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    let (phone, access) = signed_in(login_with(&app, "127.0.0.3", PASSWORD, "").await).await;
    // The laptop is lost: Ada logs out everywhere from her phone, which keeps its token.
    let response = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&access)
        .json(&json!({"all_sessions": true}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("device_token").is_none(), "{body}");
    assert_eq!(guess_until_refused(&app, 1).await, 3);
    assert_eq!(login_with(&app, "127.0.0.3", PASSWORD, &laptop).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_with(&app, "127.0.0.3", PASSWORD, &phone).await.status(), StatusCode::OK);
    // A plain logout forgets no device and gives none.
    let (_, access) = signed_in(login_with(&app, "127.0.0.3", PASSWORD, &phone).await).await;
    let response = app.http.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert!(response.headers().get("set-cookie").is_none());
    let (_, body) = json_of(response).await;
    assert!(body.get("device_token").is_none(), "{body}");
}

/// Whoever holds only an access token of Ada's (a relying service, a log, a script) and
/// logs out everywhere with it gets no device: nothing that passes the account's ceiling,
/// nor locks Ada's own device out.
async fn logging_out_everywhere_with_a_stolen_access_token_yields_no_device() {
    let app = app_with_a_ceiling_of_three(|_| {}).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (laptop, access) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    let attacker = client_from("127.0.9.9");
    let logout =
        attacker.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).json(&json!({"all_sessions": true}));
    let response = logout.send().await.unwrap();
    let cookie = response.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body.get("device_token"), cookie), (None, None), "{body}");

    // Over gRPC neither.
    let (_, access) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, &laptop).await).await;
    let request = with_bearer(authd::pb::LogoutRequest { all_sessions: true }, &access);
    let out = app.auth().await.logout(request).await.unwrap().into_inner();
    assert_eq!(out.device_token, "");

    // Past the ceiling the attacker's guesses are refused, whatever he sends as a device;
    // Ada's laptop, whose session was used, still gets in.
    assert_eq!(guess_until_refused(&app, 1).await, 3);
    for token in ["", "forged-device-token", &laptop[..laptop.len() - 1]] {
        assert_eq!(
            login_with(&app, "127.0.9.9", "wrong password", token).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(login_with(&app, "127.0.0.2", PASSWORD, &laptop).await.status(), StatusCode::OK);
}

async fn the_account_ceiling_holds_past_a_window_until_a_right_password_or_a_slow_decay() {
    let app = app_with_a_ceiling_of_three(|s| s.throttle.failure_window = std::time::Duration::from_secs(1)).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (laptop, _) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    assert_eq!(guess_until_refused(&app, 1).await, 3);
    let refused = login_with(&app, "127.0.3.1", "wrong password", "").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // One failure of three is forgotten every 86,400 s / 3.
    assert!((28_000..=28_800).contains(&retry_after), "Retry-After {retry_after}");

    // Well past the window: still no fresh guesses.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(login_with(&app, "127.0.3.2", "wrong password", "").await.status(), StatusCode::TOO_MANY_REQUESTS);

    // A day's third later (the count aged by one step): one guess more, and no other.
    let step = 86_400_000 / 3;
    let aged = app
        .sql(
            &format!("update throttle set window_start_ms = window_start_ms - {step} where key like 'login-account:%'"),
            &[],
        )
        .await;
    assert_eq!(aged, 1);
    assert_eq!(login_with(&app, "127.0.3.3", "wrong password", "").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login_with(&app, "127.0.3.4", "wrong password", "").await.status(), StatusCode::TOO_MANY_REQUESTS);

    // The owner's device gets in, and that starts the count over.
    assert_eq!(login_with(&app, "127.0.0.2", PASSWORD, &laptop).await.status(), StatusCode::OK);
    assert_eq!(guess_until_refused(&app, 100).await, 3);
}

async fn a_device_added_by_a_login_racing_a_password_change_is_not_honoured() {
    let app = app_with_a_ceiling_of_three(|_| {}).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (stale, _) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    let (_, access) = signed_in(login_with(&app, "127.0.0.3", PASSWORD, "").await).await;
    // A login that checked the old password remembers its device after the change
    // committed: the row it writes is the one it would have written before.
    app.sql("create table raced_devices as select * from known_devices", &[]).await;
    let body = json!({"current_password": PASSWORD, "new_password": "a new passphrase"});
    let response = app.http.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.sql("delete from raced_devices where token_hash in (select token_hash from known_devices)", &[]).await;
    assert!(app.sql("insert into known_devices select * from raced_devices", &[]).await >= 1);

    assert_eq!(guess_until_refused(&app, 1).await, 3);
    let response = login_with(&app, "127.0.0.2", "a new passphrase", &stale).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "a device of the old credentials");
}

async fn revocations_are_limited_per_address_and_logged() {
    const LIMIT: usize = 10;
    let log = LogCapture::start();
    let app = spawn_app_with(|s| s.throttle.address_limit = LIMIT as u32).await;
    let (_, refresh) = app.ada_tokens().await;
    let attacker = client_from("127.0.0.9");
    let revoke = |i: usize| {
        attacker.post(app.url("/api/v1/auth/revoke")).json(&json!({"token": format!("forged.token.{i}")})).send()
    };
    let statuses = join_all((0..50).map(revoke)).await.into_iter().map(|r| r.unwrap().status()).collect::<Vec<_>>();
    let (answered, refused) = answered_and_refused(&statuses, StatusCode::OK);
    assert!(answered <= LIMIT, "{answered} revocations answered from one address, past its limit of {LIMIT}");
    assert!(refused >= 50 - LIMIT);
    // Over gRPC alike, once its address (127.0.0.1) has spent its allowance.
    let mut auth = app.auth().await;
    let mut codes = Vec::new();
    for _ in 0..LIMIT {
        let request = authd::pb::RevokeTokenRequest { token: "forged".into(), token_type_hint: String::new() };
        codes.push(auth.revoke_token(request).await.map(drop).map_err(|s| s.code()));
    }
    assert_eq!(codes.last(), Some(&Err(Code::ResourceExhausted)), "{codes:?}");

    // Another client revokes its own token, and that is a security event.
    let owner = client_from("127.0.0.2");
    let response = owner.post(app.url("/api/v1/auth/revoke")).json(&json!({"token": refresh})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed = owner.post(app.url("/api/v1/auth/refresh-token")).json(&json!({"token": refresh})).send().await;
    assert_eq!(refreshed.unwrap().status(), StatusCode::UNAUTHORIZED);
    let events = log.events();
    let revoked = events
        .iter()
        .filter(|e| e["target"] == "authd::security" && e["reason"] == "token_revocation")
        .collect::<Vec<_>>();
    assert_eq!(revoked.len(), 1, "{events:#?}");
    assert_eq!(revoked[0]["event"], "session_revoked");
    assert_eq!(revoked[0]["outcome"], "success");
    assert_eq!(revoked[0]["client_ip"], "127.0.0.2");
    assert!(revoked[0]["user_id"].is_u64(), "{}", revoked[0]);
    assert!(!log.text().contains(&refresh), "the token in the log");
    let throttled = events.iter().filter(|e| e["event"] == "throttled" && e["action"] == "revoke").count();
    assert!(throttled >= 1);
}

async fn every_authd_device_cookie_is_tried_so_a_tossed_one_hides_nothing() {
    let app = app_with_a_ceiling_of_three(|_| {}).await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let (device, _) = signed_in(login_with(&app, "127.0.0.2", PASSWORD, "").await).await;
    assert_eq!(guess_until_refused(&app, 1).await, 3);
    // A sibling domain set its own authd_device cookie, which the browser sends first.
    let tossed = "Q0FGRUJBQkVDQUZFQkFCRUNBRkVCQUJFQ0FGRUJBQkU";
    let response = client_from("127.0.0.2")
        .post(app.url("/api/v1/auth/login"))
        .header("cookie", format!("authd_device={tossed}; theme=dark; authd_device={device}"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let (known, _) = signed_in(response).await;
    assert_eq!(known, device, "recognised as the known device");
}

async fn with_a_key_encryption_key_a_clear_value_planted_later_is_refused() {
    let kek = Some(secrecy::SecretSlice::from(vec![7u8; 32]));
    let app = spawn_app_with(|s| s.tokens.key_encryption_key = kek).await;
    app.ada_tokens().await;
    // Someone who can write the database, but has not the key, plants a device key of
    // their own in the clear.
    let planted = hex("a device key the attacker knows, in the clear, 64 bytes long ...");
    let literal = match backend() {
        Backend::Sqlite => format!("x'{planted}'"),
        Backend::Postgres(_) => format!("decode('{planted}', 'hex')"),
    };
    let sql = format!("update secrets set value = {literal} where name = 'device_token_hmac'");
    assert_eq!(app.sql(&sql, &[]).await, 1);
    // Only the start-up that first seals a database takes clear values: this one refuses.
    let (db, settings) = app.stop().await;
    let refused = Application::build(settings).await.err().expect("start-up refuses the planted value");
    let message = format!("{refused:#}");
    assert!(message.contains("device_token_hmac") && message.contains("in the clear"), "{message}");
    drop(db);
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

on_both_backends!(
    with_a_key_encryption_key_a_clear_value_planted_later_is_refused,
    a_flood_of_costly_new_passwords_is_limited_before_the_strength_check,
    a_flood_of_costly_password_changes_is_limited_before_the_strength_check,
    a_password_change_keeps_the_callers_device_known_and_forgets_the_others,
    logging_out_everywhere_keeps_the_callers_device_known_and_forgets_the_others,
    logging_out_everywhere_with_a_stolen_access_token_yields_no_device,
    the_account_ceiling_holds_past_a_window_until_a_right_password_or_a_slow_decay,
    a_device_added_by_a_login_racing_a_password_change_is_not_honoured,
    revocations_are_limited_per_address_and_logged,
    every_authd_device_cookie_is_tried_so_a_tossed_one_hides_nothing,
);
