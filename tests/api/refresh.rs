use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::helpers::{json_of, spawn_app};
use authd::pb::RefreshTokenRequest;

async fn rest_refresh_rotates_both_tokens_in_the_login_shape() {
    let app = spawn_app().await;
    let (_, refresh) = app.ada_tokens().await;
    let (status, body) = json_of(app.refresh(&refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["email"], "ada@example.com");
    let token = &body["data"]["user_token"];
    assert_eq!(token["tokenType"], "Bearer");
    let (new_access, new_refresh) = (token["token"].as_str().unwrap(), token["refreshToken"].as_str().unwrap());
    assert_ne!(new_refresh, refresh);
    assert_eq!(app.me(Some(&format!("Bearer {new_access}"))).await.status(), StatusCode::OK);
    // The successor works in turn.
    assert_eq!(app.refresh(new_refresh).await.status(), StatusCode::OK);
}

async fn bad_refresh_tokens_get_the_old_apps_401() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    for token in
        [access.as_str(), "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
    {
        let response = app.refresh(token).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(response).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"error": {"error": "Authorization failed. Log in again."}})),
            "{token}"
        );
    }
}

async fn bad_refresh_input_is_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), json!([{"token": "field required"}])),
        (json!({"token": ""}), json!([{"token": "must not be empty"}])),
        (json!({"token": 7}), json!([{"token": "must be a string"}])),
    ];
    for (body, errors) in cases {
        let (status, answer) = json_of(app.post_json("/api/v1/auth/refresh-token", &body).await).await;
        assert_eq!((status, answer), (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": errors })), "{body}");
    }
}

async fn grpc_refresh_rotates_and_refuses_access_tokens() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let mut auth = app.auth().await;
    let rotated =
        auth.refresh_token(RefreshTokenRequest { refresh_token: refresh.clone() }).await.unwrap().into_inner();
    assert_ne!(rotated.refresh_token, refresh);
    assert_eq!(rotated.token_type, "Bearer");

    let status = auth.refresh_token(RefreshTokenRequest { refresh_token: access }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "Authorization failed. Log in again.");

    let status = auth.refresh_token(RefreshTokenRequest { refresh_token: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

on_both_backends!(
    rest_refresh_rotates_both_tokens_in_the_login_shape,
    bad_refresh_tokens_get_the_old_apps_401,
    bad_refresh_input_is_422_naming_the_field,
    grpc_refresh_rotates_and_refuses_access_tokens,
);
