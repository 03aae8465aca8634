//! The caller's own account: profile update, password change, deletion, and sessions.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{TestApp, ada, field_violations, json_of, spawn_app, with_bearer};
use authd::pb::{
    ChangePasswordRequest, DeleteMeRequest, GetMeRequest, ListSessionsRequest, RevokeSessionRequest, UpdateMeRequest,
};

const PASSWORD: &str = "correct horse battery";

impl TestApp {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        access: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(access);
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.unwrap()).await
    }

    /// Logs Ada in again (a new session) with a user agent; returns (access, refresh).
    async fn ada_session(&self, password: &str, user_agent: &str) -> (String, String) {
        let response = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .header("user-agent", user_agent)
            .json(&json!({"email": "ada@example.com", "password": password}))
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = &body["data"]["user_token"];
        (token["token"].as_str().unwrap().into(), token["refreshToken"].as_str().unwrap().into())
    }
}

async fn update_me_changes_only_the_given_fields_and_null_clears_about() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let patch = |body: Value| app.send(reqwest::Method::PATCH, "/api/v1/me", &access, Some(body));

    let (status, body) = patch(json!({"name": "  Countess Ada  "})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["name"], &body["location"], &body["about"]),
        (&json!("Countess Ada"), &json!("London"), &json!("Analyst"))
    );
    let (_, body) = patch(json!({"about": null, "location": "Paris"})).await;
    assert_eq!((&body["location"], &body["about"]), (&json!("Paris"), &Value::Null));
    let (_, me) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
    assert_eq!(me, body, "GET /me sees the change");

    // Validation is registration's, every bad field at once; nothing changes.
    let (status, body) = patch(json!({"name": "", "location": "x".repeat(1001), "about": 7})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = body["error"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_object().unwrap().keys().next().unwrap().as_str())
        .collect();
    assert_eq!(fields, ["about", "name", "location"], "{body}");
    let (_, me) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
    assert_eq!(me["name"], "Countess Ada");

    // Without a token, the /me dialect.
    let response = app.http.patch(app.url("/api/v1/me")).json(&json!({"name": "X"})).send().await.unwrap();
    assert_eq!(json_of(response).await, (StatusCode::UNAUTHORIZED, json!({"detail": "Not authenticated"})));

    // gRPC: an empty about is kept, clear_about clears it, absent fields stay, a bad field
    // is named.
    let mut users = app.users().await;
    let grpc_token = app.grpc_login("ada@example.com", PASSWORD).await.unwrap().access_token;
    let request = UpdateMeRequest { about: Some("Poet".into()), ..Default::default() };
    let user = users.update_me(with_bearer(request, &grpc_token)).await.unwrap().into_inner();
    assert_eq!((user.name.as_str(), user.about.as_deref()), ("Countess Ada", Some("Poet")));
    let request = UpdateMeRequest { about: Some(String::new()), ..Default::default() };
    assert_eq!(users.update_me(with_bearer(request, &grpc_token)).await.unwrap().into_inner().about, Some("".into()));
    let request = UpdateMeRequest { clear_about: true, ..Default::default() };
    assert_eq!(users.update_me(with_bearer(request, &grpc_token)).await.unwrap().into_inner().about, None);
    let request = UpdateMeRequest { about: Some("Poet".into()), clear_about: true, ..Default::default() };
    let status = users.update_me(with_bearer(request, &grpc_token)).await.unwrap_err();
    assert_eq!(field_violations(&status).iter().map(|v| v.0.as_str()).collect::<Vec<_>>(), ["clear_about"]);
    let request = UpdateMeRequest { name: Some(" ".into()), ..Default::default() };
    let status = users.update_me(with_bearer(request, &grpc_token)).await.unwrap_err();
    assert_eq!(field_violations(&status).iter().map(|v| v.0.as_str()).collect::<Vec<_>>(), ["name"]);
}

async fn changing_the_password_ends_every_session_and_starts_a_new_one() {
    let app = spawn_app().await;
    let (mine, _) = app.ada_tokens().await;
    let (other, other_refresh) = app.ada_session(PASSWORD, "other-device").await;
    let change = |body: Value| app.send(reqwest::Method::POST, "/api/v1/me/password", &mine, Some(body));

    let (status, body) =
        change(json!({"current_password": "wrong password!", "new_password": "a new passphrase"})).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"current_password": "is incorrect"}]}))
    );
    let (status, body) = change(json!({"current_password": PASSWORD, "new_password": "short"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"][0]["new_password"].is_string(), "{body}");

    let (status, body) = change(json!({"current_password": PASSWORD, "new_password": "a new passphrase"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sessions_ended"], 1);
    let new_access = body["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(Some(&format!("Bearer {new_access}"))).await.status(), StatusCode::OK, "the new session");
    for ended in [&mine, &other] {
        assert_eq!(app.me(Some(&format!("Bearer {ended}"))).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.refresh(&other_refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);

    // gRPC, back again; a wrong current password names the field.
    let token = app.grpc_login("ada@example.com", "a new passphrase").await.unwrap().access_token;
    let mut users = app.users().await;
    let wrong = ChangePasswordRequest { current_password: "not it at all".into(), new_password: PASSWORD.into() };
    let status = users.change_password(with_bearer(wrong, &token)).await.unwrap_err();
    assert_eq!(field_violations(&status), [("current_password".to_owned(), "is incorrect".to_owned())]);
    let right = ChangePasswordRequest { current_password: "a new passphrase".into(), new_password: PASSWORD.into() };
    let changed = users.change_password(with_bearer(right, &token)).await.unwrap().into_inner();
    assert_eq!(changed.sessions_ended, 1, "the REST caller's new session");
    assert_eq!(app.me(Some(&format!("Bearer {new_access}"))).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(users.get_me(with_bearer(GetMeRequest {}, &token)).await.unwrap_err().code(), Code::Unauthenticated);
    let tokens = changed.tokens.expect("the new session's tokens");
    assert!(users.get_me(with_bearer(GetMeRequest {}, &tokens.access_token)).await.is_ok());
    assert_eq!(app.refresh(&tokens.refresh_token).await.status(), StatusCode::OK);
}

async fn deleting_the_account_kills_its_tokens_and_frees_the_email() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    let delete = |body: Value| app.send(reqwest::Method::DELETE, "/api/v1/me", &access, Some(body));

    let (status, body) = delete(json!({"password": "not the password"})).await;
    assert_eq!((status, body), (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": "is incorrect"}]})));
    let (status, body) = delete(json!({})).await;
    assert_eq!((status, body), (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": "field required"}]})));
    let (status, body) = delete(json!({"password": PASSWORD})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"message": "Account deleted successfully."})));

    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);

    // The email is free again; and over gRPC, the same.
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let token = app.grpc_login("ada@example.com", PASSWORD).await.unwrap().access_token;
    let mut users = app.users().await;
    let status = users.delete_me(with_bearer(DeleteMeRequest { password: "nope nope nope".into() }, &token)).await;
    assert_eq!(status.unwrap_err().code(), Code::InvalidArgument);
    users.delete_me(with_bearer(DeleteMeRequest { password: PASSWORD.into() }, &token)).await.unwrap();
    assert_eq!(users.get_me(with_bearer(GetMeRequest {}, &token)).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn sessions_are_listed_and_revoked_by_their_owner_only() {
    let app = spawn_app().await;
    let (mine, _) = app.ada_tokens().await;
    let (phone_access, phone_refresh) = app.ada_session(PASSWORD, "phone/1.0").await;

    let (status, body) = app.send(reqwest::Method::GET, "/api/v1/me/sessions", &mine, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{body}");
    let phone = sessions.iter().find(|s| s["user_agent"] == "phone/1.0").expect("the phone's session");
    assert_eq!(phone["ip"], "127.0.0.1");
    assert_eq!(phone["current"], false);
    for key in ["session_id", "created_at", "last_used_at", "expires_at"] {
        assert!(phone[key].is_string(), "{key}: {phone}");
    }
    let phone_id = phone["session_id"].as_str().unwrap().to_owned();

    // Another user cannot see or end Ada's sessions: theirs are "not found" like any other.
    let mut bob = ada();
    bob["email"] = json!("bob@example.com");
    assert_eq!(app.register(&bob).await.status(), StatusCode::CREATED);
    let bob_token = app.grpc_login("bob@example.com", PASSWORD).await.unwrap().access_token;
    let not_found = (StatusCode::NOT_FOUND, json!({"error": {"error": "Session not found."}}));
    let revoke = |token: String, id: String| {
        let app = &app;
        async move { app.send(reqwest::Method::DELETE, &format!("/api/v1/me/sessions/{id}"), &token, None).await }
    };
    assert_eq!(revoke(bob_token.clone(), phone_id.to_string()).await, not_found);
    assert_eq!(revoke(bob_token.clone(), uuid::Uuid::new_v4().to_string()).await, not_found);
    assert_eq!(revoke(bob_token.clone(), "not-a-session-id".into()).await, not_found);
    let (_, bobs) = app.send(reqwest::Method::GET, "/api/v1/me/sessions", &bob_token, None).await;
    assert_eq!(bobs["sessions"].as_array().unwrap().len(), 1);
    // Not even in the revocation set: the phone's token still works.
    let (status, body) = app.send(reqwest::Method::GET, "/api/v1/me", &phone_access, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Ada ends her phone's session: it is gone from the list and its tokens die.
    let (status, _) = revoke(mine.clone(), phone_id.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoke(mine.clone(), phone_id.to_string()).await, not_found, "already ended");
    assert_eq!(app.refresh(&phone_refresh).await.status(), StatusCode::UNAUTHORIZED);

    // gRPC: the same list and the same rule.
    let mut auth = app.auth().await;
    let listed = auth.list_sessions(with_bearer(ListSessionsRequest {}, &mine)).await.unwrap().into_inner().sessions;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current);
    let status = auth
        .revoke_session(with_bearer(RevokeSessionRequest { session_id: listed[0].session_id.clone() }, &bob_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    auth.revoke_session(with_bearer(RevokeSessionRequest { session_id: listed[0].session_id.clone() }, &mine))
        .await
        .unwrap();
    assert_eq!(app.me(Some(&format!("Bearer {mine}"))).await.status(), StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    update_me_changes_only_the_given_fields_and_null_clears_about,
    changing_the_password_ends_every_session_and_starts_a_new_one,
    deleting_the_account_kills_its_tokens_and_frees_the_email,
    sessions_are_listed_and_revoked_by_their_owner_only,
);
