//! The admin API (`AdminService`, REST under /api/v1/admin): only a user holding the
//! `admin` role now may call it; every call is an audit event naming the caller; a
//! disabled user's tokens stop at once, on every replica.

use std::time::Duration;

use authd::pb::{GetUserRequest, ListUsersRequest, admin_service_client::AdminServiceClient};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Code;

use crate::{
    helpers::{Arg, TestApp, field_violations, json_of, spawn_app, spawn_app_with, with_bearer},
    roles::claims,
};

const NOT_AN_ADMIN: &str = "The admin API needs a user with the admin role or a client with the admin scope.";

pub const ROOT_PASSWORD: &str = "seven purple elephants dance";

/// Registers root@example.com, gives it the admin role (as `authd admin grant` would) and
/// logs it in: (its user id, its access token).
pub async fn admin_token(app: &TestApp) -> (i64, String) {
    let body = json!({"name": "Root", "email": "root@example.com", "location": "Ops", "password": ROOT_PASSWORD});
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);
    let id = app.sql_text("select cast(user_id as text) from users where email = 'root@example.com'").await.unwrap();
    let grant = format!("insert into user_roles (user_id, role, granted_at) values ({id}, 'admin', $1)");
    assert_eq!(app.sql(&grant, &[Arg::Time(Utc::now())]).await, 1);
    let (status, body) = json_of(app.login("root@example.com", ROOT_PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (id.parse().unwrap(), body["data"]["user_token"]["token"].as_str().unwrap().to_owned())
}

/// Ada, registered and logged in: (her user id, access, refresh).
async fn ada_signed_in(app: &TestApp) -> (i64, String, String) {
    let (access, refresh) = app.ada_tokens().await;
    (claims(&access)["sub"].as_str().unwrap().parse().unwrap(), access, refresh)
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Every admin route, with a body where it takes one.
fn routes(user_id: i64) -> Vec<(Method, String, Option<Value>)> {
    let user = format!("/api/v1/admin/users/{user_id}");
    vec![
        (Method::GET, "/api/v1/admin/users".into(), None),
        (
            Method::POST,
            "/api/v1/admin/users".into(),
            Some(
                json!({"name": "X", "email": "x@example.com", "location": "Y", "password": "another good passphrase"}),
            ),
        ),
        (Method::GET, user.clone(), None),
        (Method::PATCH, user.clone(), Some(json!({"name": "Eve"}))),
        (Method::DELETE, user.clone(), None),
        (Method::POST, format!("{user}/disable"), None),
        (Method::POST, format!("{user}/enable"), None),
        (Method::DELETE, format!("{user}/sessions"), None),
        (Method::PUT, format!("{user}/roles"), Some(json!({"roles": ["admin"]}))),
        (Method::GET, "/api/v1/admin/audit-events".into(), None),
        (Method::GET, "/api/v1/admin/clients".into(), None),
        (Method::POST, "/api/v1/admin/clients".into(), Some(json!({"name": "x", "scopes": ["admin"]}))),
        (Method::POST, "/api/v1/admin/clients/svc_0/rotate".into(), None),
        (Method::DELETE, "/api/v1/admin/clients/svc_0".into(), None),
    ]
}

async fn every_admin_route_refuses_a_caller_without_the_admin_role() {
    let app = spawn_app().await;
    let (ada_id, ada_access, _) = ada_signed_in(&app).await;
    for (method, path, body) in routes(ada_id) {
        let (status, answer) = call(&app, method.clone(), &path, None, body.clone()).await;
        assert_eq!(
            (status, &answer),
            (StatusCode::UNAUTHORIZED, &json!({"detail": "Not authenticated"})),
            "{method} {path}"
        );
        let (status, _) = call(&app, method.clone(), &path, Some("not-a-token"), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        // Ada's own token, even on her own account.
        let (status, answer) = call(&app, method.clone(), &path, Some(&ada_access), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer, json!({"error": {"error": NOT_AN_ADMIN}}));
    }
    let refused = app
        .sql_column("select actor_id from audit_events where action = 'admin_access' and outcome = 'refused'", &[])
        .await;
    assert_eq!(refused.len(), routes(0).len(), "each refusal of a signed-in caller is audited");
    assert!(refused.iter().all(|actor| *actor == ada_id.to_string().into_bytes()));
    // Nothing was done: Ada is still there, unchanged, with no role.
    assert_eq!(
        app.sql_text("select name from users where email = 'ada@example.com'").await.as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(app.sql_text("select role from user_roles").await, None);
    assert_eq!(app.sql_text("select client_id from service_clients").await, None);

    let mut grpc = AdminServiceClient::new(app.grpc_channel().await);
    let status = grpc.list_users(ListUsersRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = grpc.list_users(with_bearer(ListUsersRequest::default(), &ada_access)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, NOT_AN_ADMIN));
}

async fn a_revoked_admin_role_closes_the_admin_api_at_once_whatever_the_token_says() {
    let app = spawn_app().await;
    let (_, root) = admin_token(&app).await;
    let (ada_id, _, _) = ada_signed_in(&app).await;
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/admin/users/{ada_id}/roles"),
        Some(&root),
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = json_of(app.login("ada@example.com", "correct horse battery").await).await;
    assert_eq!(status, StatusCode::OK);
    let ada_admin = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&ada_admin)["roles"], json!(["admin"]));
    assert_eq!(call(&app, Method::GET, "/api/v1/admin/users", Some(&ada_admin), None).await.0, StatusCode::OK);

    // Root takes the role back: Ada's token still claims it, and is refused.
    let (status, body) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/admin/users/{ada_id}/roles"),
        Some(&root),
        Some(json!({"roles": []})),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"roles": []})));
    assert_eq!(claims(&ada_admin)["roles"], json!(["admin"]));
    assert_eq!(call(&app, Method::GET, "/api/v1/admin/users", Some(&ada_admin), None).await.0, StatusCode::FORBIDDEN);
}

async fn an_admin_manages_a_user_and_every_action_is_audited_with_its_actor() {
    let app = spawn_app().await;
    let (root_id, root) = admin_token(&app).await;
    let root = Some(root.as_str());

    let create = json!({"name": " Bob ", "email": "Bob@Example.com", "location": "Paris", "password": "violet sunrise over hills", "roles": ["support", "support"]});
    let (status, bob) = call(&app, Method::POST, "/api/v1/admin/users", root, Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(
        (&bob["name"], &bob["email"], &bob["roles"], &bob["disabled"]),
        (&json!("Bob"), &json!("Bob@Example.com"), &json!(["support"]), &json!(false))
    );
    let bob_id = bob["user_id"].as_i64().unwrap();
    let user = format!("/api/v1/admin/users/{bob_id}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/admin/users",
        root,
        Some(
            json!({"name": "B", "email": "bob@example.com", "location": "P", "password": "violet sunrise over hills"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a taken email: {body}");

    let (status, body) = json_of(app.login("bob@example.com", "violet sunrise over hills").await).await;
    assert_eq!(status, StatusCode::OK);
    let bob_access = body["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let bob_refresh = body["data"]["user_token"]["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(claims(&bob_access)["roles"], json!(["support"]));

    let (status, detail) = call(&app, Method::GET, &user, root, None).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(detail["sessions"][0]["ip"], "127.0.0.1");
    // The login's audit row is written in the background.
    crate::helpers::eventually(Duration::from_secs(5), "the last login shows", || async {
        call(&app, Method::GET, &user, root, None).await.1["last_login_at"].is_string()
    })
    .await;

    let (status, body) =
        call(&app, Method::PATCH, &user, root, Some(json!({"location": "Lyon", "about": "Ops"}))).await;
    assert_eq!(
        (status, &body["location"], &body["about"], &body["name"]),
        (StatusCode::OK, &json!("Lyon"), &json!("Ops"), &json!("Bob"))
    );

    let (status, body) =
        call(&app, Method::PUT, &format!("{user}/roles"), root, Some(json!({"roles": ["billing:read", "support"]})))
            .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"roles": ["billing:read", "support"]})));
    let (status, refreshed) = json_of(app.refresh(&bob_refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    let bob_access = refreshed["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&bob_access)["roles"], json!(["billing:read", "support"]), "a refresh picks the change up");

    let (status, body) = call(&app, Method::DELETE, &format!("{user}/sessions"), root, None).await;
    assert_eq!((status, &body["sessions_ended"]), (StatusCode::OK, &json!(1)));
    assert_eq!(app.me(Some(&format!("Bearer {bob_access}"))).await.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = call(&app, Method::POST, &format!("{user}/disable"), root, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.login("bob@example.com", "violet sunrise over hills").await.status(), StatusCode::UNAUTHORIZED);
    let (_, listed) = call(&app, Method::GET, "/api/v1/admin/users?disabled=true", root, None).await;
    assert_eq!(
        listed["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_i64().unwrap()).collect::<Vec<_>>(),
        [bob_id]
    );
    assert!(listed["users"][0]["disabled_at"].is_string());
    assert_eq!(call(&app, Method::POST, &format!("{user}/enable"), root, None).await.0, StatusCode::OK);
    assert_eq!(app.login("bob@example.com", "violet sunrise over hills").await.status(), StatusCode::OK);

    assert_eq!(call(&app, Method::DELETE, &user, root, None).await.0, StatusCode::OK);
    let (status, body) = call(&app, Method::GET, &user, root, None).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"error": {"error": "User not found."}})));
    assert_eq!(call(&app, Method::DELETE, &user, root, None).await.0, StatusCode::NOT_FOUND);

    let (status, page) =
        call(&app, Method::GET, &format!("/api/v1/admin/audit-events?user_id={bob_id}&page_size=200"), root, None)
            .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    let admin_actions =
        events.iter().filter(|e| e["actor_kind"] == "admin").map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>();
    for e in events.iter().filter(|e| e["actor_kind"] == "admin") {
        assert_eq!(
            (&e["actor_id"], &e["subject_user_id"], &e["outcome"], &e["client_ip"]),
            (&json!(root_id.to_string()), &json!(bob_id), &json!("success"), &json!("127.0.0.1")),
            "{e}"
        );
    }
    let mut seen = admin_actions.clone();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "admin_delete_user",
            "admin_enable_user",
            "admin_disable_user",
            "admin_revoke_user_sessions",
            "admin_set_roles",
            "admin_update_user",
            "admin_get_user",
            "admin_create_user"
        ]
    );
    // Bob's own events are there too, with Bob as the actor.
    assert!(events.iter().any(|e| e["action"] == "login"
        && e["actor_kind"] == "user"
        && e["actor_id"].as_str() == Some(bob_id.to_string().as_str())));
}

/// Bob's access token, cached as live by `me` on `at` (an app or a replica).
async fn bob_me(http: &reqwest::Client, base: &str, access: &str) -> StatusCode {
    http.get(format!("{base}/api/v1/me")).bearer_auth(access).send().await.unwrap().status()
}

async fn disabling_a_user_stops_their_live_token_at_once_on_every_replica() {
    let long_cache = |s: &mut authd::config::Settings| s.tokens.session_cache_ttl = Duration::from_secs(60);
    let app = spawn_app_with(long_cache).await;
    let (_, root) = admin_token(&app).await;
    let (ada_id, access, refresh) = ada_signed_in(&app).await;
    let postgres = matches!(crate::helpers::backend(), crate::helpers::Backend::Postgres(_));
    let replica = match postgres {
        true => Some(app.replica(long_cache).await),
        false => None,
    };
    let bases = std::iter::once(app.url("")).chain(replica.as_ref().map(|r| r.url(""))).collect::<Vec<_>>();
    // Each process confirms the session, and caches it for a minute.
    for base in &bases {
        for _ in 0..2 {
            assert_eq!(bob_me(&app.http, base, &access).await, StatusCode::OK);
        }
    }
    let (status, body) =
        call(&app, Method::POST, &format!("/api/v1/admin/users/{ada_id}/disable"), Some(&root), None).await;
    assert_eq!((status, &body["sessions_ended"]), (StatusCode::OK, &json!(1)));
    // At once in the process that disabled her; within the change feed's delivery elsewhere.
    assert_eq!(bob_me(&app.http, &bases[0], &access).await, StatusCode::UNAUTHORIZED);
    for base in &bases[1..] {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while bob_me(&app.http, base, &access).await != StatusCode::UNAUTHORIZED {
            assert!(std::time::Instant::now() < deadline, "the replica still accepts a disabled user's token");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_, validation) = app.validate(&access).await;
    assert_eq!(validation, json!({"active": false}));
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = json_of(app.login("ada@example.com", "correct horse battery").await).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"error": {"error": "Invalid credentials. Try again..."}}))
    );
    crate::helpers::eventually(Duration::from_secs(5), "the refused login audited", || async {
        let refused = "select detail from audit_events where action = 'login' and outcome = 'refused'";
        app.sql_text(refused).await.as_deref() == Some("account disabled")
    })
    .await;
    // Enabled again: she may log in; the old tokens stay dead.
    assert_eq!(
        call(&app, Method::POST, &format!("/api/v1/admin/users/{ada_id}/enable"), Some(&root), None).await.0,
        StatusCode::OK
    );
    assert_eq!(app.login("ada@example.com", "correct horse battery").await.status(), StatusCode::OK);
    assert_eq!(bob_me(&app.http, &bases[0], &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::UNAUTHORIZED);
}

async fn users_are_listed_in_pages_without_duplicates_or_gaps_and_filtered() {
    let app = spawn_app().await;
    let (_, root) = admin_token(&app).await;
    let root = Some(root.as_str());
    for email in [
        "user_1@example.com",
        "user_2@example.com",
        "userx@example.com",
        "USER_3@example.com",
        "zed@example.com",
        "amy@example.com",
    ] {
        let body = json!({"name": "N", "email": email, "location": "L", "password": "a good long passphrase"});
        let (status, answer) = call(&app, Method::POST, "/api/v1/admin/users", root, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let all = app.sql_column("select cast(user_id as text) from users order by users.user_id", &[]).await;
    let all = all.iter().map(|id| String::from_utf8_lossy(id).parse::<i64>().unwrap()).collect::<Vec<_>>();
    assert_eq!(all.len(), 7);

    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = token.as_ref().map(|t| format!("&page_token={t}")).unwrap_or_default();
        let (status, page) =
            call(&app, Method::GET, &format!("/api/v1/admin/users?page_size=3{query}"), root, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        listed.extend(page["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_i64().unwrap()));
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((listed, pages), (all, 3), "every user once, in order");

    let emails = |page: Value| {
        page["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (_, page) = call(&app, Method::GET, "/api/v1/admin/users?email_prefix=User_", root, None).await;
    assert_eq!(
        emails(page),
        ["user_1@example.com", "user_2@example.com", "USER_3@example.com"],
        "'_' is a character, not a wildcard"
    );
    let (_, page) = call(&app, Method::GET, "/api/v1/admin/users?verified=true", root, None).await;
    assert!(emails(page).is_empty());
    let (_, page) = call(&app, Method::GET, "/api/v1/admin/users?verified=false&email_prefix=z", root, None).await;
    assert_eq!(emails(page), ["zed@example.com"]);
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (_, page) =
        call(&app, Method::GET, &format!("/api/v1/admin/users?created_after={}", urlencode(&future)), root, None).await;
    assert!(emails(page).is_empty());
    let (_, page) = call(
        &app,
        Method::GET,
        &format!(
            "/api/v1/admin/users?created_after={}&created_before={}&page_size=200",
            urlencode(&past),
            urlencode(&future)
        ),
        root,
        None,
    )
    .await;
    assert_eq!(emails(page).len(), 7);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn audit_pages_stay_stable_while_events_are_added() {
    let app = spawn_app().await;
    let (root_id, root) = admin_token(&app).await;
    let root = Some(root.as_str());
    for _ in 0..6 {
        assert_eq!(
            call(&app, Method::GET, &format!("/api/v1/admin/users/{root_id}"), root, None).await.0,
            StatusCode::OK
        );
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let query = token.as_ref().map(|t| format!("&page_token={t}")).unwrap_or_default();
        let (status, page) = call(
            &app,
            Method::GET,
            &format!("/api/v1/admin/audit-events?action=admin_get_user&page_size=2{query}"),
            root,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_i64().unwrap()));
        // Events added between pages (these very reads, and more) land before the first page.
        assert_eq!(
            call(&app, Method::GET, &format!("/api/v1/admin/users/{root_id}"), root, None).await.0,
            StatusCode::OK
        );
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "the six reads made before the first page, each once: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, no duplicates: {seen:?}");
    let ids = app.sql_column("select cast(event_id as text) from audit_events where action = 'admin_get_user' order by audit_events.event_id desc", &[]).await;
    let ids = ids.iter().map(|id| String::from_utf8_lossy(id).parse::<i64>().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids.len(), 6 + 3, "one more read after each of the three pages");
    assert_eq!(&ids[3..], seen.as_slice(), "no gap: the pages hold exactly the events that were there");
}

async fn bad_admin_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_, root) = admin_token(&app).await;
    let token = Some(root.as_str());
    for (path, field) in [
        ("/api/v1/admin/users?page_size=500", "page_size"),
        ("/api/v1/admin/users?page_size=ten", "page_size"),
        ("/api/v1/admin/users?page_token=abc", "page_token"),
        ("/api/v1/admin/users?created_after=yesterday", "created_after"),
        ("/api/v1/admin/users?disabled=maybe", "disabled"),
        ("/api/v1/admin/users?page_size=1&page_size=2", "page_size"),
        ("/api/v1/admin/audit-events?since=soon", "since"),
        ("/api/v1/admin/audit-events?action=DROP%20TABLE", "action"),
        ("/api/v1/admin/audit-events?user_id=-4", "user_id"),
        ("/api/v1/admin/users/abc", "user_id"),
        ("/api/v1/admin/users/0", "user_id"),
    ] {
        let (status, body) = call(&app, Method::GET, path, token, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert!(body["error"].as_array().unwrap().iter().any(|e| e.get(field).is_some()), "{path}: {body}");
    }
    let future = urlencode(&(Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    let (status, body) = call(
        &app,
        Method::GET,
        &format!("/api/v1/admin/users?created_after={future}&created_before={future}"),
        token,
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"][0]["created_before"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be later than created_after"))
    );
    let create = json!({"name": "", "email": "not an email", "location": "L", "password": "a good long passphrase", "roles": ["Admin"]});
    let (status, body) = call(&app, Method::POST, "/api/v1/admin/users", token, Some(create)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = body["error"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e.as_object().unwrap().keys().cloned())
        .collect::<Vec<_>>();
    assert_eq!(fields, ["name", "email", "roles"], "{body}");
    let (status, body) =
        call(&app, Method::PUT, "/api/v1/admin/users/1/roles", token, Some(json!({"roles": "admin"}))).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"roles": "must be a list of strings"}]}))
    );
    let (status, body) =
        call(&app, Method::PUT, "/api/v1/admin/users/1/roles", token, Some(json!({"roles": ["ok", "Not OK"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"][0]["roles"].is_string());
    assert_eq!(
        app.sql_text("select cast(count(*) as text) from user_roles").await.as_deref(),
        Some("1"),
        "nothing changed"
    );

    let mut grpc = AdminServiceClient::new(app.grpc_channel().await);
    let status = grpc
        .list_users(with_bearer(ListUsersRequest { page_size: 500, ..Default::default() }, &root))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status)[0].0, "page_size");
    let status = grpc.get_user(with_bearer(GetUserRequest { user_id: 0 }, &root)).await.unwrap_err();
    assert_eq!(field_violations(&status)[0].0, "user_id");
    let status = grpc.get_user(with_bearer(GetUserRequest { user_id: 999 }, &root)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

on_both_backends!(
    every_admin_route_refuses_a_caller_without_the_admin_role,
    a_revoked_admin_role_closes_the_admin_api_at_once_whatever_the_token_says,
    an_admin_manages_a_user_and_every_action_is_audited_with_its_actor,
    disabling_a_user_stops_their_live_token_at_once_on_every_replica,
    users_are_listed_in_pages_without_duplicates_or_gaps_and_filtered,
    audit_pages_stay_stable_while_events_are_added,
    bad_admin_input_is_refused_naming_the_field,
);
