//! Asymmetric signing: JWKS checked by an independent JWT library (jwt-simple), key
//! rotation, and the attacks of RFC 8725.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike, JWTClaims, NoCustomClaims,
    RS256PublicKey, RSAPublicKeyLike, VerificationOptions,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of, spawn_app, spawn_app_with};
use authd::{pb::GetJwksRequest, security::keys::generate_private_pem};

fn b64(value: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(value.as_str().unwrap()).unwrap()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn jwks(app: &TestApp) -> Vec<Value> {
    let response = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert!(response.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    body["keys"].as_array().unwrap().clone()
}

/// Verifies `token` as another service would: with jwt-simple and the key JWKS names.
fn verify_independently(token: &str, jwk: &Value) -> JWTClaims<NoCustomClaims> {
    let options = VerificationOptions {
        allowed_issuers: Some(["authd".to_owned()].into()),
        allowed_audiences: Some(["authd".to_owned()].into()),
        required_key_id: Some(jwk["kid"].as_str().unwrap().to_owned()),
        ..Default::default()
    };
    match jwk["kty"].as_str().unwrap() {
        "RSA" => RS256PublicKey::from_components(&b64(&jwk["n"]), &b64(&jwk["e"]))
            .unwrap()
            .verify_token::<NoCustomClaims>(token, Some(options)),
        "EC" => {
            let mut point = vec![0x04];
            point.extend(b64(&jwk["x"]));
            point.extend(b64(&jwk["y"]));
            ES256PublicKey::from_bytes(&point).unwrap().verify_token::<NoCustomClaims>(token, Some(options))
        }
        "OKP" => {
            Ed25519PublicKey::from_bytes(&b64(&jwk["x"])).unwrap().verify_token::<NoCustomClaims>(token, Some(options))
        }
        other => panic!("unexpected key type {other}"),
    }
    .expect("the token verifies with the published key")
}

async fn tokens_of_each_asymmetric_algorithm_verify_with_jwks_in_another_library() {
    for (algorithm, kty, alg) in
        [(Algorithm::RS256, "RSA", "RS256"), (Algorithm::ES256, "EC", "ES256"), (Algorithm::EdDSA, "OKP", "EdDSA")]
    {
        let app = spawn_app_with(|s| s.tokens.algorithm = algorithm).await;
        let (access, _) = app.ada_tokens().await;
        let keys = jwks(&app).await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        let jwk = &keys[0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str(), jwk["use"].as_str()),
            (Some(kty), Some(alg), Some("sig"))
        );
        assert!(jwk.get("d").is_none() && jwk.get("p").is_none(), "no private member in {jwk}");
        assert_eq!(jwk["kid"], kid_of(&access).as_str());

        let claims = verify_independently(&access, jwk);
        let me: Value = app.me(Some(&format!("Bearer {access}"))).await.json().await.unwrap();
        assert_eq!(claims.subject.unwrap(), me["user_id"].to_string());

        let grpc = app.auth().await.get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
        assert_eq!(grpc.keys.len(), 1);
        assert_eq!((grpc.keys[0].kid.as_str(), grpc.keys[0].kty.as_str()), (jwk["kid"].as_str().unwrap(), kty));
    }
}

async fn hmac_secrets_are_never_published() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    assert!(jwks(&app).await.is_empty());
    assert!(app.auth().await.get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys.is_empty());
}

async fn a_rotated_key_signs_new_tokens_while_the_old_one_stays_published() {
    let app = spawn_app_with(|s| {
        s.tokens.algorithm = Algorithm::ES256;
        s.tokens.key_reload_interval = Duration::from_millis(200);
    })
    .await;
    let (before, _) = app.ada_tokens().await;
    let old_kid = kid_of(&before);

    // What `authd rotate-key` does, from another process's connection.
    let settings = authd::config::Settings::with_database(app.database_url());
    let store = authd::store::open(&settings.database, authd::store::Migrations::RequireCurrent).await.unwrap();
    let mut tokens = settings.tokens.clone();
    tokens.algorithm = Algorithm::ES256;
    let new_kid = authd::core::keys::rotate(store.as_ref(), &tokens).await.unwrap();
    assert_ne!(new_kid, old_kid);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let body: Value = app.login("ada@example.com", "correct horse battery").await.json().await.unwrap();
    let after = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&after), new_kid, "the new key signs");
    let keys = jwks(&app).await;
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
    for token in [&before, &after] {
        assert_eq!(app.me(Some(&format!("Bearer {token}"))).await.status(), StatusCode::OK);
        let jwk = keys.iter().find(|k| k["kid"] == kid_of(token).as_str()).unwrap();
        verify_independently(token, jwk);
    }
}

/// An app whose ES256 key the test holds too, so that it can sign what an attacker
/// could only dream of, and check that each flaw is caught.
async fn app_with_known_key() -> (TestApp, String, tempfile_path::TempPem) {
    let pem = generate_private_pem(Algorithm::ES256).unwrap();
    let file = tempfile_path::TempPem::new(&pem);
    let path = file.0.clone();
    let app = spawn_app_with(|s| {
        s.tokens.algorithm = Algorithm::ES256;
        s.tokens.private_key_file = Some(path);
    })
    .await;
    (app, pem, file)
}

mod tempfile_path {
    /// A PEM file removed on drop.
    pub struct TempPem(pub std::path::PathBuf);
    impl TempPem {
        pub fn new(pem: &str) -> Self {
            let path = std::env::temp_dir().join(format!("authd-test-{}.pem", uuid::Uuid::new_v4()));
            std::fs::write(&path, pem).unwrap();
            Self(path)
        }
    }
    impl Drop for TempPem {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn every_rfc_8725_flaw_in_a_token_is_refused() {
    let (app, pem, _file) = app_with_known_key().await;
    let (access, refresh) = app.ada_tokens().await;
    let kid = kid_of(&access);
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let sign = |header: &Header, claims: &Value, key: &EncodingKey| jsonwebtoken::encode(header, claims, key).unwrap();
    let header = |alg: Algorithm, typ: &str, kid: &str| {
        let mut h = Header::new(alg);
        h.typ = Some(typ.into());
        h.kid = Some(kid.into());
        h
    };
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let now = chrono::Utc::now().timestamp();

    // Our own signature on good claims is accepted: the forgeries below differ in one flaw.
    let genuine = sign(&header(Algorithm::ES256, "at+jwt", &kid), &claims, &key);
    assert_eq!(app.me(Some(&format!("Bearer {genuine}"))).await.status(), StatusCode::OK);

    let jwk = jwks(&app).await.remove(0);
    let public_bytes = serde_json::to_vec(&jwk).unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"at+jwt","kid":"{kid}"}}"#)),
        access.split('.').nth(1).unwrap()
    );
    let mut claims_without_aud = claims.clone();
    claims_without_aud.as_object_mut().unwrap().remove("aud");
    let forgeries = [
        ("alg none", none),
        (
            "HS256 keyed with the public key",
            sign(&header(Algorithm::HS256, "at+jwt", &kid), &claims, &EncodingKey::from_secret(&public_bytes).unwrap()),
        ),
        ("typ JWT", sign(&header(Algorithm::ES256, "JWT", &kid), &claims, &key)),
        ("no typ", sign(&Header { typ: None, ..header(Algorithm::ES256, "at+jwt", &kid) }, &claims, &key)),
        ("unknown kid", sign(&header(Algorithm::ES256, "at+jwt", "someone-else"), &claims, &key)),
        ("expired", sign(&header(Algorithm::ES256, "at+jwt", &kid), &with("exp", json!(now - 120)), &key)),
        ("not yet valid", sign(&header(Algorithm::ES256, "at+jwt", &kid), &with("nbf", json!(now + 600)), &key)),
        ("foreign issuer", sign(&header(Algorithm::ES256, "at+jwt", &kid), &with("iss", json!("evil")), &key)),
        (
            "foreign audience",
            sign(&header(Algorithm::ES256, "at+jwt", &kid), &with("aud", json!("other-service")), &key),
        ),
        ("no audience", sign(&header(Algorithm::ES256, "at+jwt", &kid), &claims_without_aud, &key)),
        ("refresh token", refresh.clone()),
    ];
    for (flaw, token) in forgeries {
        let response = app.me(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{flaw}");
        let (_, body) = app.validate(&token).await;
        assert_eq!(body, json!({"active": false}), "{flaw}");
    }
    // A small clock difference is tolerated.
    let skewed = sign(&header(Algorithm::ES256, "at+jwt", &kid), &with("nbf", json!(now + 10)), &key);
    assert_eq!(app.me(Some(&format!("Bearer {skewed}"))).await.status(), StatusCode::OK);
}

async fn a_key_file_of_the_wrong_type_stops_start_up_naming_the_variable() {
    let pem = generate_private_pem(Algorithm::EdDSA).unwrap();
    let file = tempfile_path::TempPem::new(&pem);
    let app = spawn_app().await; // a fresh database to start a second server on
    let mut settings = authd::config::Settings::with_database(app.database_url());
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.tokens.algorithm = Algorithm::RS256;
    settings.tokens.private_key_file = Some(file.0.clone());
    let error = match authd::startup::Application::build(settings).await {
        Ok(_) => panic!("started with an Ed25519 key for RS256"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("TOKEN_PRIVATE_KEY_FILE"), "{error}");
}

/// RFC 8414 metadata names the issuer and, under `PUBLIC_URL`, the JWKS, token,
/// introspection and revocation endpoints and the signing algorithm; following it as a
/// third party would, the keys it names verify an access token in another library
/// (jwt-simple).
async fn the_metadata_leads_to_the_keys_that_verify_a_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(|s| {
        s.tokens.algorithm = Algorithm::ES256;
        s.server.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
        s.mail.public_url.clone_from(&base);
    })
    .await;
    let (access, _) = app.ada_tokens().await;
    let response = app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap();
    assert!(response.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let (status, metadata) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["issuer"], "authd");
    for (name, path) in [
        ("jwks_uri", "/.well-known/jwks.json"),
        ("token_endpoint", "/api/v1/auth/login"),
        ("introspection_endpoint", "/api/v1/auth/validate"),
        ("revocation_endpoint", "/api/v1/auth/revoke"),
    ] {
        assert_eq!(metadata[name], format!("{base}{path}"), "{name}");
    }
    assert_eq!(metadata["access_token_signing_alg_values_supported"], json!(["ES256"]));
    let (_, jwks) = json_of(app.http.get(metadata["jwks_uri"].as_str().unwrap()).send().await.unwrap()).await;
    let kid = kid_of(&access);
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("the token's key");
    let claims = verify_independently(&access, jwk);
    assert_eq!(claims.subject.as_deref(), Some("1"));
    let introspected = app
        .http
        .post(metadata["introspection_endpoint"].as_str().unwrap())
        .header("authorization", app.introspector().await)
        .json(&json!({"token": access}));
    assert_eq!(json_of(introspected.send().await.unwrap()).await.1["active"], true);
}

on_both_backends!(
    the_metadata_leads_to_the_keys_that_verify_a_token,
    tokens_of_each_asymmetric_algorithm_verify_with_jwks_in_another_library,
    hmac_secrets_are_never_published,
    a_rotated_key_signs_new_tokens_while_the_old_one_stays_published,
    every_rfc_8725_flaw_in_a_token_is_refused,
    a_key_file_of_the_wrong_type_stops_start_up_naming_the_variable,
);
