use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{ada, field_violations, json_of, spawn_app};

async fn rest_login_answers_in_the_old_apps_shape() {
    let app = spawn_app().await;
    app.register(&ada()).await;
    let (status, body) = json_of(app.login("ADA@example.com", "correct horse battery").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Login successful.");
    let data = &body["data"];
    assert_eq!(
        (&data["name"], &data["email"], &data["about"], &data["location"]),
        (&json!("Ada Lovelace"), &json!("ada@example.com"), &json!("Analyst"), &json!("London"))
    );
    let token = &data["user_token"];
    assert_eq!(token["tokenType"], "Bearer");
    assert_eq!(token["expiresIn"], 900);
    assert_eq!(token["token"].as_str().unwrap().split('.').count(), 3, "a JWT");
    assert!(token["refreshToken"].as_str().unwrap().len() > 40);
    assert_ne!(token["token"], token["refreshToken"]);
}

async fn the_oauth2_password_form_logs_in_too() {
    let app = spawn_app().await;
    app.register(&ada()).await;
    let form = [("grant_type", "password"), ("username", "ada@example.com"), ("password", "correct horse battery")];
    let response = app.http.post(app.url("/api/v1/auth/login")).form(&form).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["email"], "ada@example.com");

    let response = app.http.post(app.url("/api/v1/auth/login")).form(&[("password", "x")]).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, json!({"error": [{"username": "field required"}]}));
}

async fn a_wrong_password_and_an_unknown_email_fail_alike() {
    let app = spawn_app().await;
    app.register(&ada()).await;
    let expected = json!({"error": {"error": "Invalid credentials. Try again..."}});
    for (email, password) in [("ada@example.com", "wrong password"), ("nobody@example.com", "correct horse battery")] {
        let response = app.login(email, password).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(response).await;
        assert_eq!((status, &body), (StatusCode::UNAUTHORIZED, &expected), "{email}");

        let status = app.grpc_login(email, password).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "Invalid credentials. Try again...");
    }
}

async fn grpc_login_returns_bearer_tokens() {
    let app = spawn_app().await;
    app.register(&ada()).await;
    let tokens = app.grpc_login("ada@example.com", "correct horse battery").await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert!(!tokens.access_token.is_empty() && !tokens.refresh_token.is_empty());
}

async fn bad_login_input_names_the_field_on_both_transports() {
    let app = spawn_app().await;
    let cases: Vec<(Value, Value, Vec<&str>)> = vec![
        (json!({"email": "nope", "password": "pw"}), json!([{"email": "is not a valid email address"}]), vec!["email"]),
        (
            json!({"email": "ada@example.com", "password": "p".repeat(129)}),
            json!([{"password": "must be at most 128 characters"}]),
            vec!["password"],
        ),
        (json!({"email": "", "password": ""}), json!([{"email": "must not be empty"}]), vec!["email"]),
    ];
    for (body, rest_errors, grpc_fields) in cases {
        let (status, answer) = json_of(app.post_json("/api/v1/auth/login", &body).await).await;
        assert_eq!((status, answer), (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": rest_errors })), "{body}");
        let status =
            app.grpc_login(body["email"].as_str().unwrap(), body["password"].as_str().unwrap()).await.unwrap_err();
        let fields: Vec<String> = field_violations(&status).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, grpc_fields, "{body}");
    }
    let (status, answer) = json_of(app.post_json("/api/v1/auth/login", &json!({"email": 1})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer, json!({"error": [{"email": "must be a string"}, {"password": "field required"}]}));
}

on_both_backends!(
    rest_login_answers_in_the_old_apps_shape,
    the_oauth2_password_form_logs_in_too,
    a_wrong_password_and_an_unknown_email_fail_alike,
    grpc_login_returns_bearer_tokens,
    bad_login_input_names_the_field_on_both_transports,
);
