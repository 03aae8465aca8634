//! Roles: `authd admin grant|revoke EMAIL ROLE`, the `roles` claim of the next access
//! token (a refresh picks a change up), and ValidateToken's roles.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    audit::audit_rows,
    helpers::{TestApp, json_of, spawn_app},
};

fn authd_command(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    app.authd_command(args)
}

pub fn claims(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

async fn refreshed(app: &TestApp, refresh: &str) -> (String, String) {
    let (status, body) = json_of(app.refresh(refresh).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = &body["data"]["user_token"];
    (token["token"].as_str().unwrap().to_owned(), token["refreshToken"].as_str().unwrap().to_owned())
}

async fn a_granted_role_reaches_the_next_token_and_validate_token() {
    let app = spawn_app().await;
    let (access, refresh) = app.ada_tokens().await;
    assert_eq!(claims(&access)["roles"], json!([]));

    let (ok, out, err) = authd_command(&app, &["admin", "grant", "ada@example.com", "admin"]);
    assert!(ok, "{out}{err}");
    assert!(out.lines().any(|l| l == "admin: granted"), "{out}");
    let (ok, out, _) = authd_command(&app, &["admin", "grant", "ADA@example.com", "billing:read"]);
    assert!(ok && out.contains("billing:read: granted"), "{out}");
    // The token in hand keeps what it was issued with; the next one carries the roles.
    assert_eq!(claims(&access)["roles"], json!([]));
    let (access, refresh) = refreshed(&app, &refresh).await;
    assert_eq!(claims(&access)["roles"], json!(["admin", "billing:read"]));

    let answer = app.grpc_validate(&access).await;
    assert_eq!(answer.unwrap().roles, ["admin", "billing:read"]);
    let (status, body) = app.validate(&access).await;
    assert_eq!((status, &body["roles"]), (StatusCode::OK, &json!(["admin", "billing:read"])));

    let (ok, out, _) = authd_command(&app, &["admin", "revoke", "ada@example.com", "admin"]);
    assert!(ok && out.contains("admin: revoked"), "{out}");
    let (ok, out, _) = authd_command(&app, &["admin", "revoke", "ada@example.com", "admin"]);
    assert!(ok && out.contains("admin: not held"), "{out}");
    let (access, _) = refreshed(&app, &refresh).await;
    assert_eq!(claims(&access)["roles"], json!(["billing:read"]));

    let rows = audit_rows(&app).await;
    let role_rows = rows.iter().filter(|r| r.starts_with("role_")).collect::<Vec<_>>();
    assert_eq!(role_rows.len(), 4, "{rows:#?}");
    assert!(role_rows[0].starts_with("role_grant|success|operator||") && role_rows[0].contains("role=admin"));
    assert!(role_rows[2].starts_with("role_revoke|success|operator||"), "{}", role_rows[2]);
}

async fn the_command_line_refuses_an_unknown_user_and_a_bad_role_by_name() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let (ok, _, err) = authd_command(&app, &["admin", "grant", "nobody@example.com", "admin"]);
    assert!(!ok && err.contains("no user with the email"), "{err}");
    for role in ["Admin", "ad min", ""] {
        let (ok, _, err) = authd_command(&app, &["admin", "grant", "ada@example.com", role]);
        assert!(!ok && err.contains("role:"), "{role:?}: {err}");
    }
    let (ok, _, err) = authd_command(&app, &["admin", "grant", "ada@example.com"]);
    assert!(!ok && err.contains("usage"), "{err}");
    assert_eq!(app.sql_text("select role from user_roles").await, None);
}

on_both_backends!(
    a_granted_role_reaches_the_next_token_and_validate_token,
    the_command_line_refuses_an_unknown_user_and_a_bad_role_by_name,
);
