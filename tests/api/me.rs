use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::helpers::{json_of, spawn_app, with_bearer};
use authd::pb::GetMeRequest;

async fn me_returns_the_profile_for_a_valid_access_token() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (status, body) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
    assert_eq!(status, StatusCode::OK);
    let user_id = body["user_id"].as_i64().unwrap();
    assert_eq!(
        body,
        json!({"user_id": user_id, "name": "Ada Lovelace", "email": "ada@example.com", "about": "Analyst", "location": "London", "email_verified": false})
    );

    let user = app.users().await.get_me(with_bearer(GetMeRequest {}, &access)).await.unwrap().into_inner();
    assert_eq!(
        (user.user_id, user.email.as_str(), user.about.as_deref()),
        (user_id, "ada@example.com", Some("Analyst"))
    );
}

async fn me_without_a_bearer_token_is_not_authenticated() {
    let app = spawn_app().await;
    for authorization in [None, Some("Basic YWRhOnB3"), Some("Bearer"), Some("")] {
        let response = app.me(authorization).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(response).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"detail": "Not authenticated"})),
            "{authorization:?}"
        );
    }
    let status = app.users().await.get_me(GetMeRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn me_with_a_bad_or_wrong_kind_of_token_is_refused() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    let none_alg = {
        let claims = access.split('.').nth(1).unwrap();
        format!("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{claims}.")
    };
    for token in [refresh.as_str(), tampered.as_str(), none_alg.as_str(), "garbage", "a.b.c"] {
        let response = app.me(Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = json_of(response).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({"detail": "Invalid Credentials"})), "{token}");

        let status = app.users().await.get_me(with_bearer(GetMeRequest {}, token)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token}");
    }
}

on_both_backends!(
    me_returns_the_profile_for_a_valid_access_token,
    me_without_a_bearer_token_is_not_authenticated,
    me_with_a_bad_or_wrong_kind_of_token_is_refused,
);
