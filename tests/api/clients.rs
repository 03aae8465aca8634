//! Service clients: `authd client create|list|rotate|delete`; authentication by HTTP Basic,
//! by a service token from the client credentials grant (`POST /oauth/token`), and over gRPC
//! by the same credentials in metadata; ValidateToken needs a client with the `introspect`
//! scope (unless OPEN_INTROSPECTION), the admin API accepts one with `admin`.

use authd::pb::{ListUsersRequest, ValidateTokenRequest, admin_service_client::AdminServiceClient};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestApp, backend, eventually, json_of, spawn_app};

const CLIENT_REQUIRED: &str = "This call needs a service client: authorization: Basic <client_id:client_secret>, or \
                               Bearer <service token from POST /oauth/token>.";

/// How long a change to a client made by another process (`authd client ...`, or SQL) may
/// take to reach a running server: none on SQLite, where servers keep no client in memory;
/// on PostgreSQL the change feed's delay, which README bounds at 1 s.
fn cross_process_delay() -> Duration {
    match backend() {
        Backend::Sqlite => Duration::ZERO,
        Backend::Postgres(_) => Duration::from_secs(1),
    }
}

/// Waits until the server trusts memory (its change feed is up and caught up).
async fn feed_up(app: &TestApp) {
    eventually(Duration::from_secs(10), "the change feed is up", || async {
        let (_, body) = json_of(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
        body["change_feed"] == "up"
    })
    .await;
}

/// REST ValidateToken with this `authorization` (or none).
async fn validate_as(app: &TestApp, authorization: Option<&str>, token: &str) -> (StatusCode, Value, Option<String>) {
    let mut request = app.http.post(app.url("/api/v1/auth/validate")).json(&json!({"token": token}));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request).await
}

/// A request's status, JSON body and `WWW-Authenticate` challenge.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value, Option<String>) {
    let response = request.send().await.unwrap();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = json_of(response).await;
    (status, body, challenge)
}

/// gRPC ValidateToken with this `authorization` (or none).
async fn grpc_validate_as(app: &TestApp, authorization: Option<&str>, token: &str) -> Result<bool, tonic::Status> {
    let mut request = tonic::Request::new(ValidateTokenRequest { token: token.into() });
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    app.auth().await.validate_token(request).await.map(|r| r.into_inner().active)
}

/// `POST /oauth/token` with a form and, optionally, an `authorization` value.
async fn token_request(
    app: &TestApp,
    authorization: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, Value, Option<String>) {
    let mut request = app.http.post(app.url("/oauth/token")).form(form);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request).await
}

async fn service_token(app: &TestApp, basic: &str) -> String {
    let (status, body, _) = token_request(app, Some(basic), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

async fn validate_token_needs_a_client_with_the_introspect_scope() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, secret) = app.create_client("billing", "introspect");
    let basic = TestApp::basic(&id, &secret);
    let (admin_id, admin_secret) = app.create_client("ops", "admin,revocations");
    let not_introspect = TestApp::basic(&admin_id, &admin_secret);

    let (status, body, challenge) = validate_as(&app, None, &access).await;
    assert_eq!(
        (status, body, challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, json!({"error": {"error": CLIENT_REQUIRED}}), Some("Basic realm=\"authd\""))
    );
    for wrong in [
        TestApp::basic(&id, "not-the-secret"),
        TestApp::basic("svc_nobody", &secret),
        format!("Bearer {access}"),
        "Bearer garbage".to_owned(),
        "Digest abc".to_owned(),
    ] {
        let (status, body, _) = validate_as(&app, Some(&wrong), &access).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"error": {"error": "Invalid client credentials."}})),
            "{wrong}"
        );
        let status = grpc_validate_as(&app, Some(&wrong), &access).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{wrong}");
    }
    let (status, body, _) = validate_as(&app, Some(&not_introspect), &access).await;
    assert_eq!(
        (status, body),
        (StatusCode::FORBIDDEN, json!({"error": {"error": "ValidateToken needs a client with the introspect scope."}}))
    );
    assert_eq!(
        grpc_validate_as(&app, Some(&not_introspect), &access).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let status = grpc_validate_as(&app, None, &access).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, CLIENT_REQUIRED));
    // A refused caller learns nothing of its input either.
    let (status, _, _) = validate_as(&app, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The client, by Basic and by its service token, over REST and gRPC.
    let bearer = format!("Bearer {}", service_token(&app, &basic).await);
    for authorization in [&basic, &bearer] {
        let (status, body, _) = validate_as(&app, Some(authorization), &access).await;
        assert_eq!((status, &body["active"]), (StatusCode::OK, &json!(true)), "{authorization}");
        assert!(grpc_validate_as(&app, Some(authorization), &access).await.unwrap());
    }
    // Failed client authentications are audited.
    crate::helpers::eventually(std::time::Duration::from_secs(5), "client failures audited", || async {
        app.sql_column("select action from audit_events where action = 'client_auth' and outcome = 'failure'", &[])
            .await
            .len()
            >= 10
    })
    .await;

    // Old deployments may keep introspection open, by choice.
    let app = app.restart_with(|s| s.tokens.open_introspection = true).await;
    let (access, _) = {
        let (status, body) = json_of(app.login("ada@example.com", "correct horse battery").await).await;
        assert_eq!(status, StatusCode::OK);
        (body["data"]["user_token"]["token"].as_str().unwrap().to_owned(), ())
    };
    let (status, body, _) = validate_as(&app, None, &access).await;
    assert_eq!((status, &body["active"]), (StatusCode::OK, &json!(true)));
}

async fn the_client_credentials_grant_gives_a_short_lived_service_token() {
    let app = spawn_app().await;
    let (id, secret) = app.create_client("billing", "introspect,admin");
    let basic = TestApp::basic(&id, &secret);
    let grant = [("grant_type", "client_credentials")];

    let (status, body, _) = token_request(&app, Some(&basic), &grant).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["token_type"], &body["expires_in"], &body["scope"]),
        (&json!("Bearer"), &json!(300), &json!("admin introspect"))
    );
    let token = body["access_token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!((&c["client_id"], &c["sub"], &c["scope"]), (&json!(id), &json!(id), &json!("admin introspect")));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert!(c.get("sid").is_none() && c.get("roles").is_none());
    // A service token is no user's: it opens no user route.
    assert_eq!(app.me(Some(&format!("Bearer {token}"))).await.status(), StatusCode::UNAUTHORIZED);

    let (status, body, _) =
        token_request(&app, Some(&basic), &[("grant_type", "client_credentials"), ("scope", "introspect")]).await;
    assert_eq!((status, &body["scope"]), (StatusCode::OK, &json!("introspect")));
    let (status, body, _) = token_request(
        &app,
        None,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "credentials in the form: {body}");

    for (authorization, form, status, error) in [
        (
            Some(basic.as_str()),
            vec![("grant_type", "client_credentials"), ("client_id", id.as_str()), ("client_secret", secret.as_str())],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (Some(basic.as_str()), vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        (Some(basic.as_str()), vec![("grant_type", "password")], StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (
            Some(basic.as_str()),
            vec![("grant_type", "client_credentials"), ("scope", "revocations")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            Some(basic.as_str()),
            vec![("grant_type", "client_credentials"), ("scope", "everything")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (None, vec![("grant_type", "client_credentials")], StatusCode::UNAUTHORIZED, "invalid_client"),
        (
            None,
            vec![("grant_type", "client_credentials"), ("client_id", id.as_str()), ("client_secret", "wrong")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
    ] {
        let (got, body, challenge) = token_request(&app, authorization, &form).await;
        assert_eq!((got, &body["error"]), (status, &json!(error)), "{form:?}: {body}");
        assert!(body["error_description"].is_string());
        assert_eq!(challenge.is_some(), status == StatusCode::UNAUTHORIZED, "{form:?}");
    }
    // A service token is not a credential for getting another: only the secret is.
    let bearer = format!("Bearer {token}");
    let (status, body, _) = token_request(&app, Some(&bearer), &grant).await;
    assert_eq!((status, &body["error"]), (StatusCode::UNAUTHORIZED, &json!("invalid_client")));
    let response = app
        .http
        .post(app.url("/oauth/token"))
        .header("authorization", &basic)
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, &body["error"]), (StatusCode::BAD_REQUEST, &json!("invalid_request")));
}

async fn a_rotated_secret_works_for_its_grace_and_a_deleted_client_stops_within_a_second() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, first) = app.create_client("billing", "introspect");
    let works = |secret: String| {
        let app = &app;
        let access = access.clone();
        let id = id.clone();
        async move { validate_as(app, Some(&TestApp::basic(&id, &secret)), &access).await.0 == StatusCode::OK }
    };
    let (ok, out, err) = app.authd_command(&["client", "rotate", &id]);
    assert!(ok, "{err}");
    let second = out.lines().find_map(|l| l.strip_prefix("client_secret: ")).unwrap().to_owned();
    assert!(works(first.clone()).await, "the old secret within its grace (a day by default)");
    assert!(works(second.clone()).await);
    let (ok, out, _) = app.authd_command(&["client", "rotate", &id, "--grace-seconds", "0"]);
    assert!(ok);
    let third = out.lines().find_map(|l| l.strip_prefix("client_secret: ")).unwrap().to_owned();
    // Rotated by another process: refused once the server hears of it.
    eventually(cross_process_delay(), "the previous secret past its grace", || async { !works(second.clone()).await })
        .await;
    assert!(!works(first).await, "two rotations ago");
    assert!(works(third.clone()).await);

    let token = service_token(&app, &TestApp::basic(&id, &third)).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(validate_as(&app, Some(&bearer), &access).await.0, StatusCode::OK);
    let (ok, out, _) = app.authd_command(&["client", "list"]);
    assert!(ok && out.contains(&id) && out.contains("name=\"billing\" scopes=introspect"), "{out}");
    let (ok, out, _) = app.authd_command(&["client", "delete", &id]);
    assert!(ok && out.contains("deleted"), "{out}");
    // Deleted by another process: refused once the server hears of it (at once on SQLite).
    eventually(cross_process_delay(), "a deleted client's secret refused", || async { !works(third.clone()).await })
        .await;
    assert_eq!(validate_as(&app, Some(&bearer), &access).await.0, StatusCode::UNAUTHORIZED, "a deleted client's token");
    let (ok, out, _) = app.authd_command(&["client", "list"]);
    assert!(ok && !out.contains(&id), "{out}");

    let (ok, _, err) = app.authd_command(&["client", "delete", &id]);
    assert!(!ok && err.contains("no such client"), "{err}");
    let (ok, _, err) = app.authd_command(&["client", "create", "x", "--scope", "everything"]);
    assert!(!ok && err.contains("scope"), "{err}");
    let (ok, _, err) = app.authd_command(&["client", "create", "x"]);
    assert!(!ok && err.contains("scope"), "{err}");
    let actions = app
        .sql_column("select action from audit_events where actor_kind = 'operator' order by audit_events.event_id", &[])
        .await;
    let actions = actions.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>();
    assert_eq!(actions, ["client_create", "client_rotate_secret", "client_rotate_secret", "client_delete"]);
    // No secret in the trail.
    let details = app.sql_column("select coalesce(detail, '') from audit_events", &[]).await;
    assert!(details.iter().all(|d| !String::from_utf8_lossy(d).contains(&second)));
}

async fn a_client_with_the_admin_scope_may_use_the_admin_api() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let (id, secret) = app.create_client("ops", "admin");
    let basic = TestApp::basic(&id, &secret);
    let (status, body) =
        json_of(app.http.get(app.url("/api/v1/admin/users")).header("authorization", &basic).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["users"][0]["email"], "ada@example.com");
    let bearer = service_token(&app, &basic).await;
    let mut grpc = AdminServiceClient::new(app.grpc_channel().await);
    let listed = grpc.list_users(crate::helpers::with_bearer(ListUsersRequest::default(), &bearer)).await.unwrap();
    assert_eq!(listed.into_inner().users.len(), 1);
    let mut request = tonic::Request::new(ListUsersRequest::default());
    request.metadata_mut().insert("authorization", basic.parse().unwrap());
    assert!(grpc.list_users(request).await.is_ok(), "Basic in gRPC metadata");

    let actors = app
        .sql_column("select actor_kind || ':' || actor_id from audit_events where action = 'admin_list_users'", &[])
        .await;
    assert_eq!(actors.len(), 3);
    assert!(actors.iter().all(|a| *a == format!("client:{id}").into_bytes()));

    let (other, other_secret) = app.create_client("billing", "introspect");
    let response = app
        .http
        .get(app.url("/api/v1/admin/users"))
        .header("authorization", TestApp::basic(&other, &other_secret))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app
        .http
        .get(app.url("/api/v1/admin/users"))
        .header("authorization", TestApp::basic(&id, "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let refused = app
        .sql_column("select actor_id from audit_events where action = 'admin_access' and outcome = 'refused'", &[])
        .await;
    assert_eq!(refused, [other.into_bytes()]);
}

async fn an_admin_manages_clients_through_the_admin_api_and_each_change_is_audited() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (root_id, root) = crate::admin::admin_token(&app).await;
    let admin = |method: reqwest::Method, path: &str| app.http.request(method, app.url(path)).bearer_auth(&root);

    let (status, created, _) = answer(
        admin(reqwest::Method::POST, "/api/v1/admin/clients")
            .json(&json!({"name": "billing", "scopes": ["introspect"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["client_id"].as_str().unwrap().to_owned();
    let first = TestApp::basic(&id, created["client_secret"].as_str().unwrap());
    assert_eq!(validate_as(&app, Some(&first), &access).await.0, StatusCode::OK);

    let (status, listed, _) = answer(admin(reqwest::Method::GET, "/api/v1/admin/clients")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&listed["clients"][0]["client_id"], &listed["clients"][0]["scopes"]),
        (&json!(id), &json!(["introspect"]))
    );
    assert!(listed.to_string().find("secret").is_none(), "no secret in a list: {listed}");

    let (status, rotated, _) =
        answer(admin(reqwest::Method::POST, &format!("/api/v1/admin/clients/{id}/rotate?grace_seconds=0"))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = TestApp::basic(&id, rotated["client_secret"].as_str().unwrap());
    assert_eq!(validate_as(&app, Some(&first), &access).await.0, StatusCode::UNAUTHORIZED, "no grace asked for");
    assert_eq!(validate_as(&app, Some(&second), &access).await.0, StatusCode::OK);

    let (status, body, _) =
        answer(admin(reqwest::Method::POST, "/api/v1/admin/clients").json(&json!({"name": "x", "scopes": ["root"]})))
            .await;
    assert_eq!((status, &body["error"][0]["scope"].is_string()), (StatusCode::UNPROCESSABLE_ENTITY, &true), "{body}");
    let (status, body, _) =
        answer(admin(reqwest::Method::POST, &format!("/api/v1/admin/clients/{id}/rotate?grace_seconds=-1"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A grace past any sensible one (here past what a date can hold) is refused, naming it.
    for grace in ["2592001", "9223372036854775807"] {
        let rotate = format!("/api/v1/admin/clients/{id}/rotate?grace_seconds={grace}");
        let (status, body, _) = answer(admin(reqwest::Method::POST, &rotate)).await;
        assert_eq!(
            (status, &body["error"][0]["grace_seconds"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("must be at most 2592000 (30 days)")),
            "{grace}: {body}"
        );
    }

    let mut grpc = AdminServiceClient::new(app.grpc_channel().await);
    let request = crate::helpers::with_bearer(authd::pb::DeleteClientRequest { client_id: id.clone() }, &root);
    grpc.delete_client(request).await.unwrap();
    assert_eq!(validate_as(&app, Some(&second), &access).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, _) = answer(admin(reqwest::Method::DELETE, &format!("/api/v1/admin/clients/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let rows = app.sql_column("select action || ':' || actor_kind || ':' || actor_id from audit_events where action like 'client_%' and outcome = 'success' order by audit_events.event_id", &[]).await;
    let rows = rows.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect::<Vec<_>>();
    let by = |action: &str| format!("{action}:admin:{root_id}");
    assert_eq!(rows, [by("client_create"), by("client_rotate_secret"), by("client_delete")]);
}

/// Refused client credentials count against the address's allowance: past it, wrong
/// secrets are answered 429 with Retry-After (and leave no audit row), while the right
/// secret still gets its token.
async fn wrong_client_secrets_are_limited_per_address() {
    const LIMIT: usize = 10;
    let app = crate::helpers::spawn_app_with(|s| s.throttle.address_limit = LIMIT as u32).await;
    let (id, secret) = app.create_client("billing", "introspect");
    let form = [("grant_type", "client_credentials")];
    for i in 0..LIMIT {
        let basic = TestApp::basic(&id, &format!("guess-{i}"));
        assert_eq!(token_request(&app, Some(&basic), &form).await.0, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let response = app
        .http
        .post(app.url("/oauth/token"))
        .header("authorization", TestApp::basic(&id, "one guess too many"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let (status, body, _) = token_request(&app, Some(&TestApp::basic(&id, &secret)), &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Written in the background: one row per refused guess within the allowance, none past it.
    let failures =
        || async { app.sql_column("select action from audit_events where action = 'client_auth'", &[]).await.len() };
    crate::helpers::eventually(std::time::Duration::from_secs(5), "the refusals written", || async {
        failures().await >= LIMIT
    })
    .await;
    assert_eq!(failures().await, LIMIT);
}

/// Removes a client's row with no trace in the revocation log (its triggers are set
/// aside), as a lost change would: what a server then says shows where it looked.
async fn delete_unlogged(app: &TestApp, client_id: &str) {
    match backend() {
        Backend::Postgres(_) => {
            app.sql("alter table service_clients disable trigger service_clients_changed", &[]).await;
            app.sql(&format!("delete from service_clients where client_id = '{client_id}'"), &[]).await;
            app.sql("alter table service_clients enable trigger service_clients_changed", &[]).await;
        }
        Backend::Sqlite => {
            app.sql("drop trigger service_clients_deleted", &[]).await;
            app.sql(&format!("delete from service_clients where client_id = '{client_id}'"), &[]).await;
        }
    }
}

/// Once memory is in step, a client check asks no database on PostgreSQL: with the client's
/// row gone behind authd's back (and unlogged), its secret still works there. On SQLite,
/// where `authd client ...` changes the file unheard, every check asks the store.
async fn a_client_check_asks_no_database_once_memory_is_in_step() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, secret) = app.create_client("billing", "introspect");
    let basic = TestApp::basic(&id, &secret);
    feed_up(&app).await;
    assert_eq!(validate_as(&app, Some(&basic), &access).await.0, StatusCode::OK);
    delete_unlogged(&app, &id).await;
    let expected = match backend() {
        Backend::Postgres(_) => StatusCode::OK,
        Backend::Sqlite => StatusCode::UNAUTHORIZED,
    };
    assert_eq!(validate_as(&app, Some(&basic), &access).await.0, expected);
}

/// A client deleted by the command (another process) while a server holds it in memory:
/// refused within a second, by its secret and by its service token.
async fn a_client_deleted_by_the_command_is_refused_within_a_second() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, secret) = app.create_client("billing", "introspect");
    let basic = TestApp::basic(&id, &secret);
    let bearer = format!("Bearer {}", service_token(&app, &basic).await);
    feed_up(&app).await;
    for authorization in [&basic, &bearer] {
        assert_eq!(validate_as(&app, Some(authorization), &access).await.0, StatusCode::OK);
    }
    let (ok, out, err) = app.authd_command(&["client", "delete", &id]);
    assert!(ok, "{out}{err}");
    let deleted = Instant::now();
    eventually(cross_process_delay(), "the deleted client's secret refused", || async {
        validate_as(&app, Some(&basic), &access).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(validate_as(&app, Some(&bearer), &access).await.0, StatusCode::UNAUTHORIZED);
    assert!(deleted.elapsed() <= Duration::from_secs(1) + Duration::from_millis(200), "{:?}", deleted.elapsed());
}

/// A rotated secret's grace ends on time even for a record held in memory: nothing has
/// to be heard for the previous secret to stop.
async fn a_previous_secret_stops_at_the_end_of_its_grace_even_from_memory() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, first) = app.create_client("billing", "introspect");
    feed_up(&app).await;
    let (ok, out, err) = app.authd_command(&["client", "rotate", &id, "--grace-seconds", "2"]);
    assert!(ok, "{out}{err}");
    let rotated = Instant::now();
    let second = out.lines().find_map(|l| l.strip_prefix("client_secret: ")).unwrap().to_owned();
    let (first, second) = (TestApp::basic(&id, &first), TestApp::basic(&id, &second));
    // Both work within the grace, the record (with both hashes) now in memory.
    for authorization in [&second, &first, &first] {
        assert_eq!(validate_as(&app, Some(authorization), &access).await.0, StatusCode::OK);
    }
    assert!(rotated.elapsed() < Duration::from_millis(1500), "too slow to test the grace");
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(rotated.elapsed()) + Duration::from_millis(200)).await;
    assert_eq!(validate_as(&app, Some(&first), &access).await.0, StatusCode::UNAUTHORIZED, "past its grace");
    assert_eq!(validate_as(&app, Some(&second), &access).await.0, StatusCode::OK);
}

/// A scope taken from a client (here by SQL: no command does it) stops working within a
/// second, for its secret and for a service token granted with it.
async fn a_removed_scope_stops_working_within_a_second() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let (id, secret) = app.create_client("billing", "introspect,revocations");
    let basic = TestApp::basic(&id, &secret);
    let bearer = format!("Bearer {}", service_token(&app, &basic).await);
    feed_up(&app).await;
    for authorization in [&basic, &bearer] {
        assert_eq!(validate_as(&app, Some(authorization), &access).await.0, StatusCode::OK);
    }
    app.sql(&format!("update service_clients set scopes = 'revocations' where client_id = '{id}'"), &[]).await;
    eventually(cross_process_delay(), "the removed scope refused", || async {
        validate_as(&app, Some(&basic), &access).await.0 == StatusCode::FORBIDDEN
    })
    .await;
    assert_eq!(validate_as(&app, Some(&bearer), &access).await.0, StatusCode::FORBIDDEN);
}

on_both_backends!(
    wrong_client_secrets_are_limited_per_address,
    an_admin_manages_clients_through_the_admin_api_and_each_change_is_audited,
    validate_token_needs_a_client_with_the_introspect_scope,
    the_client_credentials_grant_gives_a_short_lived_service_token,
    a_rotated_secret_works_for_its_grace_and_a_deleted_client_stops_within_a_second,
    a_client_check_asks_no_database_once_memory_is_in_step,
    a_client_deleted_by_the_command_is_refused_within_a_second,
    a_previous_secret_stops_at_the_end_of_its_grace_even_from_memory,
    a_removed_scope_stops_working_within_a_second,
    a_client_with_the_admin_scope_may_use_the_admin_api,
);
