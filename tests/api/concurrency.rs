use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;

use crate::helpers::{ada, spawn_app};
use authd::pb::RegisterUserRequest;

async fn concurrent_registrations_of_one_email_give_exactly_one_account() {
    let app = spawn_app().await;
    let emails = ["race@example.com", "RACE@example.com", "Race@Example.com", "race@EXAMPLE.COM"];
    let rest = emails.iter().map(|email| {
        let mut body = ada();
        body["email"] = json!(email);
        let app = &app;
        async move { app.register(&body).await.status() }
    });
    let grpc = emails.iter().map(|email| {
        let app = &app;
        async move {
            let request = RegisterUserRequest {
                name: "Racer".into(),
                email: email.to_string(),
                location: "Track".into(),
                about: None,
                password: "correct horse battery".into(),
            };
            app.users().await.register_user(request).await.map(|_| ()).map_err(|s| s.code())
        }
    });
    let (rest, grpc) = tokio::join!(join_all(rest), join_all(grpc));

    let created =
        rest.iter().filter(|s| **s == StatusCode::CREATED).count() + grpc.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 1, "rest {rest:?}, grpc {grpc:?}");
    assert!(rest.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST), "{rest:?}");
    assert!(grpc.iter().all(|r| matches!(r, Ok(()) | Err(Code::AlreadyExists))), "{grpc:?}");
}

on_both_backends!(concurrent_registrations_of_one_email_give_exactly_one_account,);
