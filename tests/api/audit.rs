//! The audit trail: the security events of the log, also kept in `audit_events` with who
//! (actor kind and id), on whose account, what, how it went, the client's address and user
//! agent, and no secret; pruned after AUDIT_RETENTION_DAYS.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Arg, TestApp, ada, eventually, json_of, spawn_app_with};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";
const AGENT: &str = "audit-test/1.0";

/// Every audit event, oldest first, as `action|outcome|actor_kind|actor_id|subject|ip|agent|detail`.
pub async fn audit_rows(app: &TestApp) -> Vec<String> {
    let rows = app
        .sql_column(
            "select action || '|' || outcome || '|' || actor_kind || '|' || coalesce(actor_id, '') || '|'
                    || coalesce(cast(subject_user_id as text), '') || '|' || coalesce(client_ip, '') || '|'
                    || coalesce(user_agent, '') || '|' || coalesce(detail, '')
               from audit_events order by event_id",
            &[],
        )
        .await;
    rows.into_iter().map(|r| String::from_utf8(r).unwrap()).collect()
}

async fn login(app: &TestApp, client: &reqwest::Client, password: &str) -> (StatusCode, serde_json::Value) {
    let body = json!({"email": "ada@example.com", "password": password});
    json_of(client.post(app.url("/api/v1/auth/login")).json(&body).send().await.unwrap()).await
}

async fn security_events_are_kept_in_the_audit_trail_with_who_and_from_where_and_no_secret() {
    let app = spawn_app_with(|s| {
        s.tokens.refresh_reuse_grace = Duration::ZERO;
        s.throttle.register_per_ip = 2;
    })
    .await;
    let client = reqwest::Client::builder().user_agent(AGENT).build().unwrap();
    let mut secrets = vec![PASSWORD.to_owned(), NEW_PASSWORD.to_owned()];
    let register = || client.post(app.url("/api/v1/register-user")).json(&ada()).send();
    assert_eq!(register().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(register().await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(register().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);

    let (status, _) = login(&app, &client, "wrong password one").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    secrets.push("wrong password one".into());
    let (status, body) = login(&app, &client, PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let refresh = body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();
    let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    secrets.extend([refresh.clone(), access.clone()]);
    let refreshed = client.post(app.url("/api/v1/auth/refresh-token")).json(&json!({"token": refresh})).send();
    assert_eq!(refreshed.await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let replayed = client.post(app.url("/api/v1/auth/refresh-token")).json(&json!({"token": refresh})).send();
    assert_eq!(replayed.await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let (_, body) = login(&app, &client, PASSWORD).await;
    let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let changed = client.post(app.url("/api/v1/me/password")).bearer_auth(&access).json(&body).send();
    assert_eq!(changed.await.unwrap().status(), StatusCode::OK);
    let (_, body) = login(&app, &client, NEW_PASSWORD).await;
    let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    let logout = client.post(app.url("/api/v1/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);

    let expected = [
        "throttled|refused|anonymous",
        "login|failure|anonymous",
        "login|success|user",
        "refresh_token_reuse|refused|anonymous",
        "session_revoked|success|anonymous",
        "login|success|user",
        "password_change|success|user",
        "login|success|user",
        "session_revoked|success|user",
    ];
    eventually(Duration::from_secs(5), "every event written", || async {
        audit_rows(&app).await.len() >= expected.len()
    })
    .await;
    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    let user_id = app.sql_text("select cast(user_id as text) from users").await.unwrap();
    for (row, start) in rows.iter().zip(expected) {
        assert!(row.starts_with(start), "{row} is not {start}: {rows:#?}");
        let fields = row.split('|').collect::<Vec<_>>();
        assert_eq!((fields[5], fields[6]), ("127.0.0.1", AGENT), "{row}");
        if fields[2] == "user" {
            assert_eq!(fields[3], user_id, "the user acted: {row}");
        }
        if start != "throttled|refused|anonymous" {
            assert_eq!(fields[4], user_id, "on Ada's account: {row}");
        }
        assert!(!row.contains("@example.com"), "an email in {row}");
        for secret in &secrets {
            assert!(!row.contains(secret.as_str()), "a secret in {row}");
        }
    }
    assert!(rows[0].contains("action=register limit=ip"), "{}", rows[0]);
    assert!(rows[4].contains("reason=refresh_token_reuse"), "{}", rows[4]);
    assert!(rows[8].contains("reason=logout"), "{}", rows[8]);
}

async fn audit_events_past_the_retention_are_pruned_in_the_background() {
    let app = spawn_app_with(|s| s.limits.audit_retention = Duration::from_secs(30 * 86_400)).await;
    let insert =
        "insert into audit_events (occurred_at, actor_kind, action, outcome) values ($1, 'operator', $2, 'success')";
    // Bound as text: both backends take the action name from the statement itself.
    for (days, action) in [(31, "old"), (29, "recent")] {
        let at = Utc::now() - chrono::Duration::days(days);
        app.sql(&insert.replace("$2", &format!("'{action}'")), &[Arg::Time(at)]).await;
    }
    // The pruning runs at a health check, the first one soon after start-up.
    let app = app.restart_with(|s| s.limits.health_check_interval = Duration::from_millis(100)).await;
    eventually(Duration::from_secs(5), "the old event pruned", || async {
        app.sql_text("select action from audit_events where action = 'old'").await.is_none()
    })
    .await;
    let kept = app.sql_text("select action from audit_events where action = 'recent'").await;
    assert_eq!(kept.as_deref(), Some("recent"), "an event within the retention is kept");
}

async fn users_see_their_own_security_activity_and_no_one_elses() {
    let app = spawn_app_with(|_| {}).await;
    let client = reqwest::Client::builder().user_agent(AGENT).build().unwrap();
    assert_eq!(
        client.post(app.url("/api/v1/register-user")).json(&ada()).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let bob = json!({"name": "Bob", "email": "bob@example.com", "location": "Paris", "password": "violet sunrise over hills"});
    assert_eq!(app.register(&bob).await.status(), StatusCode::CREATED);
    assert_eq!(login(&app, &client, "wrong password one").await.0, StatusCode::UNAUTHORIZED);
    let (_, body) = login(&app, &client, PASSWORD).await;
    let access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(app.login("bob@example.com", "violet sunrise over hills").await.status(), StatusCode::OK);
    let activity = |query: &'static str| {
        let request = app.http.get(app.url(&format!("/api/v1/me/activity{query}"))).bearer_auth(&access);
        async move { json_of(request.send().await.unwrap()).await }
    };
    eventually(Duration::from_secs(5), "the login written", || async {
        activity("").await.1["events"].as_array().is_some_and(|e| e.len() >= 2)
    })
    .await;
    let (status, page) = activity("").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seen = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect::<Vec<_>>();
    assert_eq!(seen, [("login", "success"), ("login", "failure")], "Ada's, newest first, and not Bob's: {page}");
    assert_eq!(
        (&page["events"][0]["client_ip"], &page["events"][0]["user_agent"]),
        (&json!("127.0.0.1"), &json!(AGENT))
    );
    assert!(page["events"][0].get("detail").is_none() && page["events"][0].get("actor_id").is_none());
    let (_, first) = activity("?page_size=1").await;
    assert_eq!(first["events"].as_array().unwrap().len(), 1);
    assert!(first["next_page_token"].is_string());

    assert_eq!(app.http.get(app.url("/api/v1/me/activity")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (status, body) = activity("?page_size=0x10").await;
    assert_eq!(
        (status, &body["error"][0]["page_size"].is_string()),
        (StatusCode::UNPROCESSABLE_ENTITY, &true),
        "{body}"
    );
    let (status, body) = activity("?page_token=-1").await;
    assert_eq!(
        (status, &body["error"][0]["page_token"].is_string()),
        (StatusCode::UNPROCESSABLE_ENTITY, &true),
        "{body}"
    );
    let request = crate::helpers::with_bearer(authd::pb::GetMyActivityRequest::default(), &access);
    let grpc = app.users().await.get_my_activity(request).await.unwrap().into_inner();
    assert_eq!(grpc.events.len(), 2);
}

/// What an admin did to an account shows in its owner's activity, but not where the admin
/// did it from; an admin only looking at the account does not show at all.
async fn an_admins_address_and_lookups_stay_out_of_the_users_activity() {
    const CONSOLE: &str = "internal-admin-console/7.3 (ops-host-17.corp)";
    let app = spawn_app_with(|_| {}).await;
    let (_, root) = crate::admin::admin_token(&app).await;
    let (access, _) = app.ada_tokens().await;
    let ada_id: i64 = crate::roles::claims(&access)["sub"].as_str().unwrap().parse().unwrap();
    let console = reqwest::Client::builder().user_agent(CONSOLE).build().unwrap();
    let looked =
        console.get(app.url(&format!("/api/v1/admin/users/{ada_id}"))).bearer_auth(&root).send().await.unwrap();
    assert_eq!(looked.status(), StatusCode::OK);
    let roles = console
        .put(app.url(&format!("/api/v1/admin/users/{ada_id}/roles")))
        .bearer_auth(&root)
        .json(&json!({"roles": ["support"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(roles.status(), StatusCode::OK);
    let activity = || async {
        json_of(app.http.get(app.url("/api/v1/me/activity")).bearer_auth(&access).send().await.unwrap()).await
    };
    eventually(Duration::from_secs(5), "the role change written", || async {
        activity().await.1.to_string().contains("admin_set_roles")
    })
    .await;
    let (status, body) = activity().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    let set = events.iter().find(|e| e["action"] == "admin_set_roles").unwrap();
    assert_eq!(set["actor_kind"], "admin", "{body}");
    assert!(!body.to_string().contains(CONSOLE), "the admin's user agent is shown: {body}");
    assert!(set["client_ip"].as_str().unwrap_or_default().is_empty(), "the admin's address is shown: {body}");
    assert!(events.iter().all(|e| e["action"] != "admin_get_user"), "a lookup is shown: {body}");
}

on_both_backends!(
    an_admins_address_and_lookups_stay_out_of_the_users_activity,
    users_see_their_own_security_activity_and_no_one_elses,
    security_events_are_kept_in_the_audit_trail_with_who_and_from_where_and_no_secret,
    audit_events_past_the_retention_are_pruned_in_the_background,
);
