//! Passkeys (WebAuthn): registration as a second factor, a login challenge answered with a
//! passkey, and a login with a passkey alone where PASSKEY_LOGIN allows it. The ceremonies
//! are real: webauthn-rs's own software authenticator (SoftPasskey) makes and signs the
//! credentials, as a browser's authenticator would (the browser test does it in Chromium).

use authd::{config::WebauthnSettings, pb};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;
use webauthn_authenticator_rs::{
    WebauthnAuthenticator,
    prelude::{CreationChallengeResponse, RequestChallengeResponse, Url},
    softpasskey::SoftPasskey,
};

use crate::helpers::{Arg, TestApp, json_of, spawn_app, spawn_app_with, with_bearer};

const ORIGIN: &str = "https://login.example.test";
const PASSWORD: &str = "correct horse battery";

async fn passkey_app(passkey_login: bool) -> TestApp {
    spawn_app_with(|s| {
        let mut webauthn = WebauthnSettings::new(None, ORIGIN).unwrap();
        webauthn.passkey_login = passkey_login;
        s.webauthn = Some(webauthn);
    })
    .await
}

/// A user's authenticator: a software passkey that claims user verification.
struct Authenticator(WebauthnAuthenticator<SoftPasskey>);

impl Authenticator {
    fn new() -> Self {
        Self(WebauthnAuthenticator::new(SoftPasskey::new(true)))
    }

    /// The credential JSON (as `credential.toJSON()` gives it) for registration options.
    fn create(&mut self, options_json: &str) -> String {
        let options: CreationChallengeResponse = serde_json::from_str(options_json).unwrap();
        let credential = self.0.do_registration(Url::parse(ORIGIN).unwrap(), options).unwrap();
        serde_json::to_string(&credential).unwrap()
    }

    /// The credential JSON for authentication options.
    fn get(&mut self, options_json: &str) -> String {
        let options: RequestChallengeResponse = serde_json::from_str(options_json).unwrap();
        let credential = self.0.do_authentication(Url::parse(ORIGIN).unwrap(), options).unwrap();
        serde_json::to_string(&credential).unwrap()
    }
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_of(request.send().await.unwrap()).await
}

/// The `amr` of an access token (its payload read, not verified: the server's tests do that).
fn amr(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["amr"].clone()
}

/// Registers `email` (password [`PASSWORD`]) and logs in: the access token.
async fn user_token(app: &TestApp, name: &str, email: &str) -> String {
    let user = json!({"name": name, "email": email, "location": "London", "password": PASSWORD});
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let (status, body) = json_of(app.login(email, PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["user_token"]["token"].as_str().unwrap().to_owned()
}

/// Registers a passkey of `authenticator` for the holder of `token`: (options JSON, the
/// answer's body).
async fn register_passkey(app: &TestApp, token: &str, authenticator: &mut Authenticator) -> (String, Value) {
    let (status, started) =
        post(app, "/api/v1/me/factors/passkeys/options", Some(token), json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let options = started["options_json"].as_str().unwrap().to_owned();
    let credential = authenticator.create(&options);
    let body = json!({"name": "Laptop", "credential": credential});
    let (status, registered) = post(app, "/api/v1/me/factors/passkeys", Some(token), body).await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    (options, registered)
}

/// Logs in with the password: the second-factor challenge.
async fn challenge(app: &TestApp, email: &str) -> String {
    let (status, body) = json_of(app.login(email, PASSWORD).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["methods"].as_array().unwrap().contains(&json!("passkey")), "{body}");
    body["challenge"].as_str().unwrap().to_owned()
}

async fn passkey_options(app: &TestApp, challenge: &str) -> String {
    let body = json!({"challenge": challenge});
    let (status, started) = post(app, "/api/v1/auth/login/second-factor/passkey-options", None, body).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    started["options_json"].as_str().unwrap().to_owned()
}

async fn answer(app: &TestApp, challenge: &str, credential: &str) -> (StatusCode, Value) {
    let body = json!({"challenge": challenge, "passkey_credential": credential});
    post(app, "/api/v1/auth/login/second-factor", None, body).await
}

async fn factors(app: &TestApp, token: &str) -> Value {
    app.http.get(app.url("/api/v1/me/factors")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Registration makes an active factor (listed, with its last use) and a session that proved
/// `hwk`; a login then needs the passkey, and its tokens carry `pwd` and `hwk`; the passkey's
/// counter and last use are stored after each use.
async fn a_registered_passkey_answers_the_login_challenge() {
    let app = passkey_app(false).await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    let mut laptop = Authenticator::new();
    let (_, registered) = register_passkey(&app, &token, &mut laptop).await;
    assert_eq!(registered["recovery_codes"].as_array().unwrap().len(), 10, "{registered}");
    let new_token = registered["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(amr(&new_token), json!(["pwd", "hwk"]));
    // Every session ended with the activation, the caller's old one too.
    assert_eq!(app.me(Some(&format!("Bearer {token}"))).await.status(), StatusCode::UNAUTHORIZED);

    let listed = factors(&app, &new_token).await;
    let factor = &listed["factors"][0];
    assert_eq!(
        (factor["kind"].as_str(), factor["name"].as_str(), factor["active"].as_bool()),
        (Some("passkey"), Some("Laptop"), Some(true)),
        "{listed}"
    );
    let stored = app.sql_column("select secret from factors", &[]).await;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    app.sql("update factors set last_used_at = $1", &[Arg::Time(an_hour_ago)]).await;

    let challenge = challenge(&app, "ada@example.com").await;
    let credential = laptop.get(&passkey_options(&app, &challenge).await);
    let (status, body) = answer(&app, &challenge, &credential).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(amr(body["data"]["user_token"]["token"].as_str().unwrap()), json!(["pwd", "hwk"]));
    // The counter moved on: the stored passkey changed, and its use is recorded.
    assert_ne!(app.sql_column("select secret from factors", &[]).await, stored);
    let used = factors(&app, &new_token).await["factors"][0]["last_used_at"].clone();
    let used = chrono::DateTime::parse_from_rfc3339(used.as_str().unwrap()).unwrap();
    assert!(used > an_hour_ago + chrono::Duration::minutes(59), "{used}");

    // The same answer again: the challenge is used.
    let (status, body) = answer(&app, &challenge, &credential).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// Each ceremony's state serves once: a registration finished with a bad credential cannot be
/// finished again, a challenge's passkey ceremony cannot answer twice, and a passkey login's
/// ceremony cannot be finished twice.
async fn a_ceremony_state_serves_once() {
    let app = passkey_app(true).await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    let mut laptop = Authenticator::new();
    let (status, started) =
        post(&app, "/api/v1/me/factors/passkeys/options", Some(&token), json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let options = started["options_json"].as_str().unwrap();
    // What is not a credential leaves the ceremony waiting.
    let (status, body) =
        post(&app, "/api/v1/me/factors/passkeys", Some(&token), json!({"credential": "{\"id\": 1}"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["credential"].as_str().unwrap().contains("is not a WebAuthn credential"), "{body}");
    // A credential for another challenge is refused, and uses the ceremony up.
    let mut other: Value = serde_json::from_str(options).unwrap();
    other["publicKey"]["challenge"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]));
    let forged = laptop.create(&other.to_string());
    let (status, body) = post(&app, "/api/v1/me/factors/passkeys", Some(&token), json!({"credential": forged})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["credential"].as_str().unwrap().contains("was refused"), "{body}");
    let credential = laptop.create(options);
    let (status, body) =
        post(&app, "/api/v1/me/factors/passkeys", Some(&token), json!({"credential": credential})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("passkey_ceremony_not_found")),
        "{body}"
    );
    let (registration, registered) = register_passkey(&app, &token, &mut laptop).await;
    let token = registered["user_token"]["token"].as_str().unwrap().to_owned();

    // A challenge's ceremony: a forged answer uses it up; the right credential for it then
    // finds none (and a new ceremony is needed).
    let challenge = challenge(&app, "ada@example.com").await;
    let options = passkey_options(&app, &challenge).await;
    let credential = laptop.get(&options);
    let forged = forge_signature(&credential);
    let (status, body) = answer(&app, &challenge, &forged).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["passkey_credential"].as_str().unwrap().contains("was refused"), "{body}");
    let (status, body) = answer(&app, &challenge, &credential).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["passkey_credential"].as_str().unwrap().contains("no passkey ceremony"), "{body}");
    let credential = laptop.get(&passkey_options(&app, &challenge).await);
    assert_eq!(answer(&app, &challenge, &credential).await.0, StatusCode::OK);

    // A passkey login's ceremony: finished once, then gone.
    let (started, credential) = passkey_login_credential(&app, &mut laptop, &token, &registration).await;
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential});
    let (status, signed_in) = post(&app, "/api/v1/auth/passkey-login", None, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{signed_in}");
    assert_eq!(amr(signed_in["data"]["user_token"]["token"].as_str().unwrap()), json!(["hwk"]));
    let (status, again) = post(&app, "/api/v1/auth/passkey-login", None, body).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("passkey_ceremony_not_found")));
}

/// The credential's signature with one bit changed.
fn forge_signature(credential: &str) -> String {
    let mut credential: Value = serde_json::from_str(credential).unwrap();
    let signature = credential["response"]["signature"].as_str().unwrap();
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    credential["response"]["signature"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    credential.to_string()
}

/// Starts a passkey login and has `authenticator` answer it as the holder of `token`'s
/// discoverable passkey would: SoftPasskey keeps no resident keys, so the test names the
/// credential in the options and puts the user handle (from the registration options) in the
/// answer, as a browser's authenticator does by itself. Neither is signed over.
async fn passkey_login_credential(
    app: &TestApp,
    authenticator: &mut Authenticator,
    token: &str,
    registration_options: &str,
) -> (Value, String) {
    let listed = factors(app, token).await;
    assert_eq!(listed["factors"][0]["kind"], "passkey");
    let id = app.sql_column("select credential_id from factors where kind = 'passkey'", &[]).await;
    let credential_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id[0]);
    let registration: Value = serde_json::from_str(registration_options).unwrap();
    let handle = registration["publicKey"]["user"]["id"].clone();
    let (status, started) = post(app, "/api/v1/auth/passkey-login/options", None, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let mut options: Value = serde_json::from_str(started["options_json"].as_str().unwrap()).unwrap();
    options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": credential_id}]);
    let mut credential: Value = serde_json::from_str(&authenticator.get(&options.to_string())).unwrap();
    credential["response"]["userHandle"] = json!(handle);
    (started, credential.to_string())
}

/// A challenge of one user cannot be answered with another's ceremony or passkey.
async fn another_users_challenge_or_passkey_is_refused() {
    let app = passkey_app(false).await;
    let ada_token = user_token(&app, "Ada", "ada@example.com").await;
    let bob_token = user_token(&app, "Bob", "bob@example.com").await;
    let (mut ada_key, mut bob_key) = (Authenticator::new(), Authenticator::new());
    register_passkey(&app, &ada_token, &mut ada_key).await;
    register_passkey(&app, &bob_token, &mut bob_key).await;
    let ada_challenge = challenge(&app, "ada@example.com").await;
    let bob_challenge = challenge(&app, "bob@example.com").await;

    // Ada's credential for Ada's challenge, sent with Bob's: Bob's challenge has no ceremony.
    let ada_credential = ada_key.get(&passkey_options(&app, &ada_challenge).await);
    let (status, body) = answer(&app, &bob_challenge, &ada_credential).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // With a ceremony of Bob's challenge started, Ada's credential is still refused.
    let bob_options = passkey_options(&app, &bob_challenge).await;
    let (status, body) = answer(&app, &bob_challenge, &ada_credential).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Bob's passkey signing Bob's ceremony's challenge for Ada's: refused, not Ada's passkey.
    let ada_options = passkey_options(&app, &ada_challenge).await;
    let mut options: Value = serde_json::from_str(&ada_options).unwrap();
    let bob: Value = serde_json::from_str(&bob_options).unwrap();
    options["publicKey"]["allowCredentials"] = bob["publicKey"]["allowCredentials"].clone();
    let bob_credential = bob_key.get(&options.to_string());
    let (status, body) = answer(&app, &ada_challenge, &bob_credential).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["passkey_credential"].as_str().unwrap().contains("refused"), "{body}");
    // Each still answers its own.
    let credential = ada_key.get(&passkey_options(&app, &ada_challenge).await);
    assert_eq!(answer(&app, &ada_challenge, &credential).await.0, StatusCode::OK);
}

/// A passkey login with a credential whose user handle is another user's is refused.
async fn a_passkey_login_with_another_users_handle_is_refused() {
    let app = passkey_app(true).await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    let mut laptop = Authenticator::new();
    let (registration, registered) = register_passkey(&app, &token, &mut laptop).await;
    let token = registered["user_token"]["token"].as_str().unwrap().to_owned();
    let bob_token = user_token(&app, "Bob", "bob@example.com").await;
    // Bob gets a handle (by starting a registration he does not finish).
    let (status, bob_started) =
        post(&app, "/api/v1/me/factors/passkeys/options", Some(&bob_token), json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK);
    let bob_options: Value = serde_json::from_str(bob_started["options_json"].as_str().unwrap()).unwrap();
    let (started, credential) = passkey_login_credential(&app, &mut laptop, &token, &registration).await;
    let mut credential: Value = serde_json::from_str(&credential).unwrap();
    credential["response"]["userHandle"] = bob_options["publicKey"]["user"]["id"].clone();
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential.to_string()});
    let (status, body) = post(&app, "/api/v1/auth/passkey-login", None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// Bad and forged JSON get clear errors naming the field, over REST and gRPC, never a panic.
async fn bad_credentials_are_named_never_a_panic() {
    let app = passkey_app(true).await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    let mut factors_client = pb::factor_service_client::FactorServiceClient::new(app.grpc_channel().await);
    let request = pb::StartPasskeyRegistrationRequest { password: PASSWORD.into(), proof: None };
    factors_client.start_passkey_registration(with_bearer(request, &token)).await.unwrap();
    for (credential, says) in [
        ("", "must not be empty"),
        ("not json", "is not JSON"),
        ("{\"id\": \"x\", \"rawId\": 7}", "is not a WebAuthn credential"),
    ] {
        let request = pb::FinishPasskeyRegistrationRequest { name: "x".into(), credential: credential.into() };
        let status = factors_client.finish_passkey_registration(with_bearer(request, &token)).await.unwrap_err();
        let violations = crate::helpers::field_violations(&status);
        assert!(
            violations.iter().any(|(f, why)| f == "credential" && why.contains(says)),
            "{credential}: {violations:?}"
        );
    }
    // No password, or a wrong one.
    let (status, body) = post(&app, "/api/v1/me/factors/passkeys/options", Some(&token), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["password"].is_string(), "{body}");
    let wrong = json!({"password": "not the password"});
    let (status, body) = post(&app, "/api/v1/me/factors/passkeys/options", Some(&token), wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut auth = app.auth().await;
    for (ceremony_id, credential, field) in [
        ("not a uuid", "{}", "ceremony_id"),
        (&*uuid::Uuid::new_v4().to_string(), "[1, 2", "credential"),
        (&*uuid::Uuid::new_v4().to_string(), "{\"type\": \"public-key\"}", "credential"),
    ] {
        let request = pb::FinishPasskeyLoginRequest { ceremony_id: ceremony_id.into(), credential: credential.into() };
        let status = auth.finish_passkey_login(request).await.unwrap_err();
        let violations = crate::helpers::field_violations(&status);
        assert!(violations.iter().any(|(f, _)| f == field), "{ceremony_id} {credential}: {violations:?}");
    }
    // A well-formed credential for a ceremony that does not exist.
    let (status, started) = post(&app, "/api/v1/auth/passkey-login/options", None, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let request = pb::FinishPasskeyLoginRequest {
        ceremony_id: uuid::Uuid::new_v4().to_string(),
        credential: json!({"id": "AA", "rawId": "AA", "type": "public-key",
            "response": {"authenticatorData": "AA", "clientDataJSON": "AA", "signature": "AA"},
            "extensions": {}})
        .to_string(),
    };
    let status = auth.finish_passkey_login(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // The same garbage for a live ceremony: refused as credentials are, not a panic.
    let request =
        pb::FinishPasskeyLoginRequest { ceremony_id: started["ceremony_id"].as_str().unwrap().into(), ..request };
    let status = auth.finish_passkey_login(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A challenge answer that is not a credential names its field.
    let body = json!({"challenge": "no-such-challenge", "passkey_credential": ""});
    let (status, body) = post(&app, "/api/v1/auth/login/second-factor", None, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["passkey_credential"].is_string(), "{body}");
}

/// Without a relying party configured, every passkey call says so (gRPC FAILED_PRECONDITION with
/// reason PASSKEYS_NOT_CONFIGURED, REST 501); with one but PASSKEY_LOGIN off, a passkey alone
/// cannot log in.
async fn passkeys_off_or_passkey_login_off_say_so() {
    let app = spawn_app().await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    for (path, token) in [
        ("/api/v1/me/factors/passkeys/options", Some(token.as_str())),
        ("/api/v1/me/factors/passkeys", Some(&token)),
        ("/api/v1/auth/login/second-factor/passkey-options", None),
        ("/api/v1/auth/passkey-login/options", None),
        ("/api/v1/auth/passkey-login", None),
    ] {
        let body = json!({"password": PASSWORD, "credential": "{}", "challenge": "x", "ceremony_id": "x"});
        let (status, body) = post(&app, path, token, body).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_IMPLEMENTED, Some("passkeys_not_configured")),
            "{path}: {body}"
        );
    }
    let status = app.auth().await.start_passkey_login(pb::StartPasskeyLoginRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.get_details_error_info().unwrap().reason, "PASSKEYS_NOT_CONFIGURED");

    let app = passkey_app(false).await;
    let (status, body) = post(&app, "/api/v1/auth/passkey-login/options", None, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_IMPLEMENTED, Some("passkey_login_disabled")));
    let request =
        pb::FinishPasskeyLoginRequest { ceremony_id: uuid::Uuid::new_v4().to_string(), credential: "{}".into() };
    let status = app.auth().await.finish_passkey_login(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.get_details_error_info().unwrap().reason, "PASSKEY_LOGIN_DISABLED");
}

/// H1: a passkey is added with a recent proof of a factor the user has, the password alone no
/// longer being enough once they have one; its registration keeps the caller's `auth_time`,
/// so it is no fresh proof for removing the old factor.
async fn a_new_passkey_takes_a_proof_of_an_existing_factor_and_is_none_itself() {
    let app = passkey_app(false).await;
    let token = user_token(&app, "Ada", "ada@example.com").await;
    let mut laptop = Authenticator::new();
    let (_, registered) = register_passkey(&app, &token, &mut laptop).await;
    let codes = registered["recovery_codes"].clone();
    let old_factor = registered["factor_id"].as_str().unwrap().to_owned();
    // The registration's session proved no factor the user had: no recent proof.
    let first = registered["user_token"]["token"].as_str().unwrap().to_owned();
    let (status, body) = post(&app, "/api/v1/me/factors/passkeys/options", Some(&first), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A login that proved the passkey is one for 10 minutes: no password needed.
    let challenge = challenge(&app, "ada@example.com").await;
    let credential = laptop.get(&passkey_options(&app, &challenge).await);
    let (status, body) = answer(&app, &challenge, &credential).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recent = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let refresh = body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();
    let (status, body) = post(&app, "/api/v1/me/factors/passkeys/options", Some(&recent), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An hour later, it is not, and the password alone does not serve either.
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    app.sql("update sessions set auth_time = $1", &[Arg::Time(hour_ago)]).await;
    let (status, body) = json_of(app.refresh(&refresh).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let options = |body: Value| post(&app, "/api/v1/me/factors/passkeys/options", Some(&old), body);
    let (status, body) = options(json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = options(json!({"password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["recovery_code"].is_string(), "{body}");

    // The password and a recovery code prove the old factor: the new passkey is added, and
    // its session keeps the old auth_time.
    let (status, started) = options(json!({"password": PASSWORD, "recovery_code": codes[0]})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let credential = Authenticator::new().create(started["options_json"].as_str().unwrap());
    let (status, second) =
        post(&app, "/api/v1/me/factors/passkeys", Some(&old), json!({"credential": credential})).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let new = second["user_token"]["token"].as_str().unwrap().to_owned();
    let payload = new.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["auth_time"], hour_ago.timestamp(), "{claims}");
    let removal = app.http.delete(app.url(&format!("/api/v1/me/factors/{old_factor}"))).bearer_auth(&new);
    let (status, body) = json_of(removal.json(&json!({})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(factors(&app, &new).await["factors"].as_array().unwrap().len(), 2);
}

on_both_backends!(
    a_registered_passkey_answers_the_login_challenge,
    a_ceremony_state_serves_once,
    another_users_challenge_or_passkey_is_refused,
    a_passkey_login_with_another_users_handle_is_refused,
    bad_credentials_are_named_never_a_panic,
    passkeys_off_or_passkey_login_off_say_so,
    a_new_passkey_takes_a_proof_of_an_existing_factor_and_is_none_itself,
);
