//! Second factors (issue 16): TOTP enrolment and activation, the login challenge, recovery
//! codes, `amr`, and removing a factor. Codes are computed here from the enrolment's
//! secret with totp-rs, as an authenticator app would.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use reqwest::{Response, StatusCode};
use secrecy::SecretSlice;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use totp_rs::{Builder, Secret};

use crate::helpers::{
    Arg, Backend, TestApp, backend, eventually, field_violations, json_of, spawn_app, spawn_app_with, with_bearer,
};
use authd::pb::{self, factor_service_client::FactorServiceClient};

const PASSWORD: &str = "correct horse battery";
const SOON: std::time::Duration = std::time::Duration::from_secs(5);

/// The code an authenticator shows `steps` time steps from now.
fn code(secret: &str, steps: i64) -> String {
    let totp = Builder::new().with_secret(Secret::try_from_base32(secret).unwrap()).build().unwrap();
    let at = Utc::now().timestamp() + steps * 30;
    totp.generate(at as u64).to_string()
}

/// The claims of a JWT, unverified (the signature is other tests' business).
fn claims(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn amr(token: &str) -> Value {
    claims(token)["amr"].clone()
}

/// (access, refresh) of the old app's login body.
fn tokens(body: &Value) -> (String, String) {
    let token = &body["data"]["user_token"];
    (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    access: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(access);
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap()).await
}

async fn post(app: &TestApp, path: &str, access: &str, body: Value) -> (StatusCode, Value) {
    call(app, reqwest::Method::POST, path, access, Some(body)).await
}

/// A user with an active TOTP factor.
struct Enrolled {
    secret: String,
    /// The code that activated it (its step is used).
    activation_code: String,
    factor_id: String,
    recovery_codes: Vec<String>,
    access: String,
    refresh: String,
}

/// Enrols and activates a TOTP factor for the holder of `access`.
async fn with_totp(app: &TestApp, access: &str) -> Enrolled {
    let (status, enrolment) =
        post(app, "/api/v1/me/factors/totp", access, json!({"name": "Phone", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let factor_id = enrolment["factor_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/me/factors/{factor_id}/activate");
    let activation_code = code(&secret, 0);
    let (status, activated) = post(app, &path, access, json!({"code": activation_code})).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let recovery_codes =
        activated["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    let token = &activated["user_token"];
    Enrolled {
        secret,
        activation_code,
        factor_id,
        recovery_codes,
        access: token["token"].as_str().unwrap().to_owned(),
        refresh: token["refreshToken"].as_str().unwrap().to_owned(),
    }
}

/// Registers Ada with an active TOTP factor.
async fn ada_with_totp(app: &TestApp) -> Enrolled {
    let (access, _) = app.ada_tokens().await;
    with_totp(app, &access).await
}

/// Logs Ada in with her password: the challenge to answer.
async fn challenge(app: &TestApp) -> String {
    let (status, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    body["challenge"].as_str().unwrap().to_owned()
}

async fn complete(app: &TestApp, answer: Value) -> Response {
    app.post_json("/api/v1/auth/login/second-factor", &answer).await
}

async fn audited(app: &TestApp, action: &str, outcome: &str) -> bool {
    let sql = format!("select action from audit_events where action = '{action}' and outcome = '{outcome}'");
    !app.sql_column(&sql, &[]).await.is_empty()
}

async fn a_totp_factor_is_enrolled_activated_and_asked_for_at_login() {
    // With a key-encryption key: the secret is stored sealed, and opens at each check.
    let app = spawn_app_with(|s| s.tokens.key_encryption_key = Some(SecretSlice::from(vec![7u8; 32]))).await;
    let (before, before_refresh) = app.ada_tokens().await;
    assert_eq!(amr(&before), json!(["pwd"]));

    let (status, enrolment) = post(&app, "/api/v1/me/factors/totp", &before, json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap();
    assert!(enrolment["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/authd:ada%40example.com?secret="));
    assert!(enrolment["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let stored = app.sql_column("select secret from factors", &[]).await;
    assert!(stored[0].starts_with(b"authd-sealed:v1:"), "the secret is sealed at rest");
    // Not active yet: the password alone still logs in.
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK);
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &before, None).await;
    assert_eq!(listed["factors"][0]["active"], false);

    let factor_id = enrolment["factor_id"].as_str().unwrap();
    let path = format!("/api/v1/me/factors/{factor_id}/activate");
    let (status, activated) = post(&app, &path, &before, json!({"code": code(secret, 0)})).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let codes = activated["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let upgraded = activated["user_token"]["token"].as_str().unwrap();
    assert_eq!(amr(upgraded), json!(["pwd", "otp"]));
    // The caller's session proved no factor before: the new one is no recent proof either.
    assert!(claims(upgraded)["auth_time"].is_null(), "{}", claims(upgraded));
    // Every session begun with the password alone has ended, the enrolling one too.
    assert_eq!(app.me(Some(&format!("Bearer {before}"))).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&before_refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(Some(&format!("Bearer {upgraded}"))).await.status(), StatusCode::OK);

    // The password now gets a challenge, not tokens.
    let (status, body) = json_of(app.login("ada@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Second factor required.");
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("data").is_none() && body.get("error").is_none(), "{body}");
    let challenge = body["challenge"].as_str().unwrap();
    // The next step's code (the activation used this step's).
    let response = complete(&app, json!({"challenge": challenge, "totp_code": code(secret, 1)})).await;
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Login successful.");
    let (access, refresh) = tokens(&body);
    assert_eq!(amr(&access), json!(["pwd", "otp"]));
    // Services asking about the token hear it too.
    let (status, validation) = app.validate(&access).await;
    assert_eq!((status, &validation["amr"]), (StatusCode::OK, &json!(["pwd", "otp"])));
    assert_eq!(app.grpc_validate(&access).await.unwrap().amr, ["pwd", "otp"]);
    // A refreshed token carries the same amr.
    let (status, body) = json_of(app.refresh(&refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(amr(&tokens(&body).0), json!(["pwd", "otp"]));

    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    let factor = &listed["factors"][0];
    assert_eq!(
        (factor["kind"].as_str(), factor["name"].as_str(), factor["active"].as_bool()),
        (Some("totp"), Some("Authenticator"), Some(true))
    );
    assert!(factor["last_used_at"].is_string());
    assert_eq!(listed["recovery_codes_left"], 10);
    eventually(SOON, "enrolment and activation audited", || async {
        audited(&app, "factor_enrolled", "success").await
            && audited(&app, "factor_activated", "success").await
            && audited(&app, "second_factor", "success").await
    })
    .await;
}

async fn wrong_replayed_and_expired_codes_are_refused_over_grpc_and_rest() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let mut auth = app.auth().await;
    let login = pb::LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into(), ..Default::default() };
    let refused = auth.login(login.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let info = refused.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "SECOND_FACTOR_REQUIRED");
    assert_eq!(info.metadata["methods"], "totp,recovery_code");
    let challenge = info.metadata["challenge"].clone();
    let answer = |totp: String| pb::CompleteLoginRequest {
        challenge: challenge.clone(),
        answer: Some(pb::complete_login_request::Answer::TotpCode(totp)),
    };

    let right = code(&ada.secret, 1);
    let wrong = if right == "000000" { "000001".to_owned() } else { "000000".to_owned() };
    let status = auth.complete_login(answer(wrong)).await.unwrap_err();
    assert_eq!(field_violations(&status), [("totp_code".to_owned(), "is incorrect".to_owned())]);
    // Out of the window (±1 step): three steps back, three ahead.
    for steps in [-3, 3] {
        let status = auth.complete_login(answer(code(&ada.secret, steps))).await.unwrap_err();
        assert_eq!(field_violations(&status)[0].0, "totp_code", "{steps} steps");
    }
    // The activation's own code, already used.
    let status = auth.complete_login(answer(ada.activation_code.clone())).await.unwrap_err();
    assert_eq!(field_violations(&status)[0], ("totp_code".into(), "was used already: wait for the next code".into()));
    let tokens = auth.complete_login(answer(right.clone())).await.unwrap().into_inner();
    assert_eq!(amr(&tokens.access_token), json!(["pwd", "otp"]));

    // The same code again, on a fresh challenge: a replay.
    let challenge = json_of(app.login("ada@example.com", PASSWORD).await).await.1["challenge"].clone();
    let (status, body) = json_of(complete(&app, json!({"challenge": challenge, "totp_code": right})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"][0]["totp_code"], "was used already: wait for the next code");
    eventually(SOON, "a failed answer audited", || audited(&app, "second_factor", "failure")).await;
}

async fn repeated_wrong_codes_are_throttled() {
    let app = spawn_app_with(|s| s.throttle.free_failures = 2).await;
    let ada = ada_with_totp(&app).await;
    let wrong = if code(&ada.secret, 1) == "000000" { "111111" } else { "000000" };
    let challenge = challenge(&app).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let response = complete(&app, json!({"challenge": challenge, "totp_code": wrong})).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            break;
        }
    }
    assert_eq!(&statuses[..2], [StatusCode::UNPROCESSABLE_ENTITY; 2]);
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    // During the backoff the right code is refused too: no guess is even looked at.
    let right = complete(&app, json!({"challenge": challenge, "totp_code": code(&ada.secret, 1)})).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn a_recovery_code_works_once_and_regenerating_voids_the_old_ones() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let first = &ada.recovery_codes[0];
    assert_eq!(first.len(), 19, "{first}");
    // Typed loosely: lower case, without dashes.
    let typed = first.to_lowercase().replace('-', "");
    let (status, body) =
        json_of(complete(&app, json!({"challenge": challenge(&app).await, "recovery_code": typed})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (access, _) = tokens(&body);
    assert_eq!(amr(&access), json!(["pwd", "otp"]));
    let (status, body) =
        json_of(complete(&app, json!({"challenge": challenge(&app).await, "recovery_code": first})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"][0]["recovery_code"], "is incorrect or used");
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!(listed["recovery_codes_left"], 9);

    // The session proved a factor just now: no further proof needed.
    let (status, body) = post(&app, "/api/v1/me/factors/recovery-codes", &access, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let (status, _) = json_of(
        complete(&app, json!({"challenge": challenge(&app).await, "recovery_code": ada.recovery_codes[1]})).await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "the old codes are void");
    let new = body["recovery_codes"][0].as_str().unwrap();
    let (status, _) =
        json_of(complete(&app, json!({"challenge": challenge(&app).await, "recovery_code": new})).await).await;
    assert_eq!(status, StatusCode::OK);
    eventually(SOON, "regeneration audited", || audited(&app, "recovery_codes_regenerated", "success")).await;
}

async fn a_challenge_is_single_use_short_lived_and_takes_few_answers() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let used = challenge(&app).await;
    let answer = |c: &str, code: &str| json!({"challenge": c, "recovery_code": code});
    assert_eq!(complete(&app, answer(&used, &ada.recovery_codes[0])).await.status(), StatusCode::OK);
    let (status, body) = json_of(complete(&app, answer(&used, &ada.recovery_codes[1])).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "used twice");
    assert_eq!(body["error"]["error"], "Login challenge expired or used. Log in again.");

    let expired = challenge(&app).await;
    let past = Utc::now() - chrono::Duration::seconds(1);
    app.sql("update login_challenges set expires_at = $1 where consumed_at is null", &[Arg::Time(past)]).await;
    assert_eq!(complete(&app, answer(&expired, &ada.recovery_codes[1])).await.status(), StatusCode::UNAUTHORIZED);
    // The refused challenge used no code.
    assert_eq!(complete(&app, answer(&challenge(&app).await, &ada.recovery_codes[1])).await.status(), StatusCode::OK);

    // Five answers at most, right or wrong.
    let guessed = challenge(&app).await;
    for _ in 0..5 {
        let wrong = answer(&guessed, "AAAA-AAAA-AAAA-AAAA");
        assert_eq!(complete(&app, wrong).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(complete(&app, answer(&guessed, &ada.recovery_codes[2])).await.status(), StatusCode::UNAUTHORIZED);
    let unknown = "A".repeat(43);
    assert_eq!(complete(&app, answer(&unknown, &ada.recovery_codes[2])).await.status(), StatusCode::UNAUTHORIZED);
}

async fn no_token_without_a_second_factor_reaches_a_user_who_has_one() {
    let app = spawn_app().await;
    let (phone, phone_refresh) = app.ada_tokens().await;
    let laptop = tokens(&json_of(app.login("ada@example.com", PASSWORD).await).await.1);
    let ada = with_totp(&app, &laptop.0).await;
    // Sessions begun before the activation: no refresh, no access.
    assert_eq!(app.refresh(&phone_refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&laptop.1).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(Some(&format!("Bearer {phone}"))).await.status(), StatusCode::UNAUTHORIZED);
    // gRPC login: no token either.
    let login = pb::LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into(), ..Default::default() };
    assert_eq!(app.auth().await.login(login).await.unwrap_err().code(), Code::Unauthenticated);
    // A password change goes on in a session that keeps what the caller's proved.
    let change = json!({"current_password": PASSWORD, "new_password": "another horse battery"});
    let (status, body) = post(&app, "/api/v1/me/password", &ada.access, change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = body["user_token"]["token"].as_str().unwrap();
    assert_eq!(amr(changed), json!(["pwd", "otp"]));

    // A factor that became active under a live password-only session (as a race with an
    // activation elsewhere would leave it): its refresh is refused where tokens are minted.
    assert_eq!(
        app.register(&json!({"name": "Bob", "email": "bob@example.com", "location": "Paris", "password": PASSWORD}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let (_, bob_refresh) = tokens(&json_of(app.login("bob@example.com", PASSWORD).await).await.1);
    let insert = match backend() {
        Backend::Sqlite => "insert into factors (factor_id, user_id, kind, name, secret, created_at, activated_at)
             select $1, user_id, 'totp', 'planted', cast('x' as blob), $2, $2 from users where email = 'bob@example.com'",
        Backend::Postgres(_) => "insert into factors (factor_id, user_id, kind, name, secret, created_at, activated_at)
             select $1, user_id, 'totp', 'planted', cast('x' as bytea), $2, $2 from users where email = 'bob@example.com'",
    };
    assert_eq!(app.sql(insert, &[Arg::Id(uuid::Uuid::new_v4()), Arg::Time(Utc::now())]).await, 1);
    assert_eq!(app.refresh(&bob_refresh).await.status(), StatusCode::UNAUTHORIZED);

    // A user without a factor keeps the old app's reply, with amr ["pwd"].
    assert_eq!(
        app.register(&json!({"name": "Cy", "email": "cy@example.com", "location": "Rome", "password": PASSWORD}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let (status, body) = json_of(app.login("cy@example.com", PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Login successful.");
    assert!(body.get("mfa_required").is_none());
    assert_eq!(amr(&tokens(&body).0), json!(["pwd"]));
}

async fn removing_a_factor_takes_a_recent_proof() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let path = format!("/api/v1/me/factors/{}", ada.factor_id);
    // The session proved its factor an hour ago: too long.
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    app.sql("update sessions set auth_time = $1", &[Arg::Time(hour_ago)]).await;
    let (status, body) = json_of(app.refresh(&ada.refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    let (access, _) = tokens(&body);
    assert_eq!(claims(&access)["auth_time"], hour_ago.timestamp());

    let delete = |body: Value| call(&app, reqwest::Method::DELETE, &path, &access, Some(body));
    let (status, body) = delete(json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = delete(json!({"totp_code": "12345x"})).await;
    assert_eq!(
        (status, &body["error"][0]["totp_code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be 6 digits"))
    );
    let wrong = if code(&ada.secret, 1) == "000000" { "111111" } else { "000000" };
    let (status, body) = delete(json!({"totp_code": wrong})).await;
    assert_eq!((status, &body["error"][0]["totp_code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("is incorrect")));
    let (status, body) = delete(json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"][0]["recovery_code"].is_string(), "{body}");
    let (status, body) = delete(json!({"password": "not the password", "recovery_code": ada.recovery_codes[0]})).await;
    assert_eq!((status, &body["error"][0]["password"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("is incorrect")));
    // Nothing was removed, and the factor is still asked for.
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!(listed["factors"].as_array().unwrap().len(), 1);
    eventually(SOON, "a refused removal audited", || audited(&app, "factor_removed", "failure")).await;

    let (status, body) = delete(json!({"password": PASSWORD, "recovery_code": ada.recovery_codes[0]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["factors_left"], 0);
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!((listed["factors"].as_array().unwrap().len(), &listed["recovery_codes_left"]), (0, &json!(0)));
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::OK, "no factor, no challenge");
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &access, Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    eventually(SOON, "the removal audited", || audited(&app, "factor_removed", "success")).await;

    // With a fresh login that proved the factor (a recent proof), it goes without one.
    let again = with_totp(&app, &tokens(&json_of(app.login("ada@example.com", PASSWORD).await).await.1).0).await;
    let answer = json!({"challenge": challenge(&app).await, "totp_code": code(&again.secret, 1)});
    let (status, body) = json_of(complete(&app, answer).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path = format!("/api/v1/me/factors/{}", again.factor_id);
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, &tokens(&body).0, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn bad_input_names_the_field() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (status, body) = json_of(complete(&app, json!({})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<_> =
        body["error"].as_array().unwrap().iter().flat_map(|e| e.as_object().unwrap().keys().cloned()).collect();
    assert_eq!(fields, ["challenge", "answer"], "{body}");
    let (status, body) = json_of(complete(&app, json!({"challenge": "c", "totp_code": "12ab56"})).await).await;
    assert_eq!(
        (status, &body["error"][0]["totp_code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be 6 digits"))
    );
    let both = json!({"challenge": "c", "totp_code": "123456", "recovery_code": "AAAA-AAAA-AAAA-AAAA"});
    assert_eq!(
        json_of(complete(&app, both).await).await.1["error"][0]["answer"],
        "give one of totp_code, recovery_code, not both"
    );
    // A well-formed answer to a challenge that is no challenge.
    let (status, _) = json_of(complete(&app, json!({"challenge": "c", "totp_code": "123456"})).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = post(&app, "/api/v1/me/factors/totp", &access, json!({"name": "x".repeat(65)})).await;
    assert_eq!(
        (status, &body["error"][0]["name"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be at most 64 characters"))
    );
    let (_, enrolment) =
        post(&app, "/api/v1/me/factors/totp", &access, json!({"name": "Phone", "password": PASSWORD})).await;
    let path = format!("/api/v1/me/factors/{}/activate", enrolment["factor_id"].as_str().unwrap());
    let (status, body) = post(&app, &path, &access, json!({"code": "abc"})).await;
    assert_eq!((status, &body["error"][0]["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be 6 digits")));
    let wrong = if code(enrolment["secret"].as_str().unwrap(), 0) == "000000" { "111111" } else { "000000" };
    let (status, body) = post(&app, &path, &access, json!({"code": wrong})).await;
    assert_eq!((status, &body["error"][0]["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("is incorrect")));
    let unknown = format!("/api/v1/me/factors/{}/activate", uuid::Uuid::new_v4());
    assert_eq!(post(&app, &unknown, &access, json!({"code": "123456"})).await.0, StatusCode::NOT_FOUND);
    let (status, body) = post(&app, "/api/v1/me/factors/nope/activate", &access, json!({"code": "123456"})).await;
    assert_eq!(
        (status, &body["error"][0]["factor_id"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be a factor id (a UUID)"))
    );
    // Enrolling again replaces the enrolment that was never activated.
    let (_, again) = post(&app, "/api/v1/me/factors/totp", &access, json!({"password": PASSWORD})).await;
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!(listed["factors"].as_array().unwrap().len(), 1);
    assert_eq!(listed["factors"][0]["factor_id"], again["factor_id"]);
    assert_eq!(post(&app, &path, &access, json!({"code": "123456"})).await.0, StatusCode::NOT_FOUND);
    // No recovery codes without a factor.
    assert_eq!(post(&app, "/api/v1/me/factors/recovery-codes", &access, json!({})).await.0, StatusCode::FORBIDDEN);
    // gRPC: the same rules, as field violations.
    let mut factors = FactorServiceClient::new(app.grpc_channel().await);
    let request = pb::ActivateTotpRequest { factor_id: "nope".into(), code: "1".into() };
    let status = factors.activate_totp(with_bearer(request, &access)).await.unwrap_err();
    let fields: Vec<_> = field_violations(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["factor_id", "code"]);
    let listed = factors.list_factors(with_bearer(pb::ListFactorsRequest {}, &access)).await.unwrap().into_inner();
    assert_eq!(listed.factors.len(), 1);
    assert!(!listed.factors[0].active);
}

async fn a_secret_enrolled_before_the_key_encryption_key_is_sealed_by_its_first_start() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    assert_eq!(app.sql_column("select secret from factors", &[]).await[0].len(), 20, "in the clear");
    let app = app.restart_with(|s| s.tokens.key_encryption_key = Some(SecretSlice::from(vec![3u8; 32]))).await;
    assert!(app.sql_column("select secret from factors", &[]).await[0].starts_with(b"authd-sealed:v1:"));
    let answer = json!({"challenge": challenge(&app).await, "totp_code": code(&ada.secret, 1)});
    assert_eq!(complete(&app, answer).await.status(), StatusCode::OK, "the sealed secret opens");
}

/// H1, attack A: a stolen access token of a user without a factor cannot add one (and with
/// it end the owner's sessions and keep the account): enrolling takes the password.
async fn adding_the_first_factor_takes_the_password() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (status, body) = post(&app, "/api/v1/me/factors/totp", &access, json!({"name": "Mine now"})).await;
    assert_eq!(
        (status, &body["error"][0]["password"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("is needed to add a second factor")),
        "{body}"
    );
    let wrong = json!({"password": "not the password"});
    let (status, body) = post(&app, "/api/v1/me/factors/totp", &access, wrong).await;
    assert_eq!((status, &body["error"][0]["password"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("is incorrect")));
    let mut factors = FactorServiceClient::new(app.grpc_channel().await);
    let request = pb::EnrollTotpRequest { name: "Mine now".into(), password: String::new(), proof: None };
    let status = factors.enroll_totp(with_bearer(request, &access)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&status).into_iter().map(|(f, _)| f).collect::<Vec<_>>(), ["password"]);
    // Nothing was enrolled, and the refusals are audited.
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!(listed["factors"], json!([]), "{listed}");
    eventually(SOON, "a refused enrolment audited", || audited(&app, "factor_enrolled", "failure")).await;
    // With the password it goes.
    let ada = with_totp(&app, &access).await;
    assert_eq!(amr(&ada.access), json!(["pwd", "otp"]));
}

/// H1, attack B: an old session (its factor proved an hour ago) can add a factor only with a
/// fresh proof of an existing one, and the new factor's activation keeps the session's
/// `auth_time`: it is no fresh proof for removing the old factor or replacing the codes.
async fn a_new_factor_is_no_fresh_proof_of_the_old_ones() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    app.sql("update sessions set auth_time = $1", &[Arg::Time(hour_ago)]).await;
    let (_, body) = json_of(app.refresh(&ada.refresh).await).await;
    let (access, _) = tokens(&body);
    assert_eq!(claims(&access)["auth_time"], hour_ago.timestamp());

    // Neither nothing nor the password alone adds a factor for a user who has one.
    let (status, body) = post(&app, "/api/v1/me/factors/totp", &access, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post(&app, "/api/v1/me/factors/totp", &access, json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["recovery_code"].is_string(), "{body}");
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!(listed["factors"].as_array().unwrap().len(), 1, "{listed}");

    // A fresh code of the existing factor adds one; its activation keeps the old auth_time.
    let proof = json!({"name": "Second", "totp_code": code(&ada.secret, 1)});
    let (status, enrolment) = post(&app, "/api/v1/me/factors/totp", &access, proof).await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let path = format!("/api/v1/me/factors/{}/activate", enrolment["factor_id"].as_str().unwrap());
    let new_code = code(enrolment["secret"].as_str().unwrap(), 0);
    let (status, activated) = post(&app, &path, &access, json!({"code": new_code})).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    let access = activated["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(amr(&access), json!(["pwd", "otp"]));
    assert_eq!(claims(&access)["auth_time"], hour_ago.timestamp(), "the caller's auth_time is kept");

    // So the old factor stays, and so do the recovery codes.
    let path = format!("/api/v1/me/factors/{}", ada.factor_id);
    let (status, body) = call(&app, reqwest::Method::DELETE, &path, &access, Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post(&app, "/api/v1/me/factors/recovery-codes", &access, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, listed) = call(&app, reqwest::Method::GET, "/api/v1/me/factors", &access, None).await;
    assert_eq!((listed["factors"].as_array().unwrap().len(), &listed["recovery_codes_left"]), (2, &json!(10)));
}

/// An app whose account ceiling is 3 failures, with no backoff per source before it.
async fn ceiling_of_three() -> TestApp {
    spawn_app_with(|s| {
        s.throttle.free_failures = 100;
        s.throttle.account_failure_limit = 3;
    })
    .await
}

/// M2: second-factor guesses from a signed-in session (here proofs for new recovery codes)
/// meet the account's ceiling: a stolen session cannot guess codes for ever.
async fn wrong_codes_from_a_session_meet_the_account_ceiling() {
    let app = ceiling_of_three().await;
    let ada = ada_with_totp(&app).await;
    let wrong = if code(&ada.secret, 1) == "000000" { "111111" } else { "000000" };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, _) =
            post(&app, "/api/v1/me/factors/recovery-codes", &ada.access, json!({"totp_code": wrong})).await;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Past the ceiling the right code is not even looked at.
    let right = json!({"totp_code": code(&ada.secret, 1)});
    assert_eq!(
        post(&app, "/api/v1/me/factors/recovery-codes", &ada.access, right).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// M1: whoever has the password cannot lock the owner's known device out of second-factor
/// logins: past the account's ceiling, reached by wrong codes from elsewhere, a challenge
/// of a known device is still answered.
async fn wrong_codes_from_elsewhere_do_not_lock_out_a_known_device() {
    let app = ceiling_of_three().await;
    let ada = ada_with_totp(&app).await;
    // The owner's device becomes known by a login it completes (a recovery code, so that the
    // authenticator's next step is left for the end).
    let answer = json!({"challenge": challenge(&app).await, "recovery_code": ada.recovery_codes[0]});
    let (status, body) = json_of(complete(&app, answer).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let device = body["device_token"].as_str().expect("a device token").to_owned();

    // The attacker, with the password, answers wrong codes until the ceiling refuses them.
    let attacker = challenge(&app).await;
    let wrong = if code(&ada.secret, 1) == "000000" { "111111" } else { "000000" };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(complete(&app, json!({"challenge": attacker, "totp_code": wrong})).await.status());
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    // The owner's device still logs in with the right code.
    let body = json!({"email": "ada@example.com", "password": PASSWORD, "device_token": device});
    let (status, body) = json_of(app.post_json("/api/v1/auth/login", &body).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let answer = json!({"challenge": body["challenge"], "totp_code": code(&ada.secret, 1)});
    let (status, body) = json_of(complete(&app, answer).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// L1: a challenge is tied to the credentials it proved: after a logout everywhere (which
/// bumps them, as a password change does) a phisher's challenge is no longer answered.
async fn a_logout_everywhere_voids_outstanding_challenges() {
    let app = spawn_app().await;
    let ada = ada_with_totp(&app).await;
    let phished = challenge(&app).await;
    let (status, body) = post(&app, "/api/v1/auth/logout", &ada.access, json!({"all_sessions": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = json!({"challenge": phished, "totp_code": code(&ada.secret, 1)});
    assert_eq!(complete(&app, answer).await.status(), StatusCode::UNAUTHORIZED);
    // A challenge made since is answered.
    let answer = json!({"challenge": challenge(&app).await, "totp_code": code(&ada.secret, 1)});
    assert_eq!(complete(&app, answer).await.status(), StatusCode::OK);
}

on_both_backends!(
    a_totp_factor_is_enrolled_activated_and_asked_for_at_login,
    wrong_replayed_and_expired_codes_are_refused_over_grpc_and_rest,
    repeated_wrong_codes_are_throttled,
    a_recovery_code_works_once_and_regenerating_voids_the_old_ones,
    a_challenge_is_single_use_short_lived_and_takes_few_answers,
    no_token_without_a_second_factor_reaches_a_user_who_has_one,
    removing_a_factor_takes_a_recent_proof,
    bad_input_names_the_field,
    a_secret_enrolled_before_the_key_encryption_key_is_sealed_by_its_first_start,
    adding_the_first_factor_takes_the_password,
    a_new_factor_is_no_fresh_proof_of_the_old_ones,
    wrong_codes_from_a_session_meet_the_account_ceiling,
    wrong_codes_from_elsewhere_do_not_lock_out_a_known_device,
    a_logout_everywhere_voids_outstanding_challenges,
);
