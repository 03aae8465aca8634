//! The old FastAPI app's REST clients, point by point (issue 19): each test pins the old
//! app's exact answer (status, body, headers) where authd now gives it too. Where authd
//! deliberately answers otherwise, the README's table of differences says why.

use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{ada, json_of, spawn_app, spawn_app_with};
use authd::pb::RegisterUserRequest;

/// The status, the headers named, and the body (parsed as JSON when it is not empty).
async fn answer(response: Response, headers: &[&str]) -> (StatusCode, Vec<Option<String>>, Value) {
    let status = response.status();
    let values =
        headers.iter().map(|name| response.headers().get(*name).map(|v| v.to_str().unwrap().to_owned())).collect();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, values, body)
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

/// Point 3: the refresh answers with the login's message.
async fn the_refresh_answers_login_successful_as_the_old_app_did() {
    let app = spawn_app().await;
    let (_, refresh) = app.ada_tokens().await;
    let (status, body) = json_of(app.refresh(&refresh).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Login successful.");
    let data = body["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["name", "email", "about", "location", "user_token"]);
}

/// Point 6: an empty password is a wrong password (401), for a known and an unknown
/// email alike, on both transports.
async fn an_empty_password_at_login_is_the_old_apps_401() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    for email in ["ada@example.com", "nobody@example.com"] {
        let response = app.login(email, "").await;
        assert_eq!(
            answer(response, &["www-authenticate", "content-type"]).await,
            (
                StatusCode::UNAUTHORIZED,
                some(&["Bearer", "application/json"]),
                json!({"error": {"error": "Invalid credentials. Try again..."}})
            ),
            "{email}"
        );
        let status = app.grpc_login(email, "").await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "Invalid credentials. Try again..."));
    }
}

/// Point 6: `tokenType` in the refresh body is ignored, whatever it says.
async fn the_refresh_ignores_token_type_as_the_old_app_did() {
    let app = spawn_app().await;
    let (_, refresh) = app.ada_tokens().await;
    let body = json!({"token": refresh, "tokenType": "Basic"});
    let (status, body) = json_of(app.post_json("/api/v1/auth/refresh-token", &body).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user_token"]["tokenType"], "Bearer");
}

/// Point 6: a JSON body that is not UTF-8 is FastAPI's 400, on every route that reads one.
async fn a_json_body_that_is_not_utf8_is_fastapis_400() {
    let app = spawn_app().await;
    let (access, _) = app.ada_tokens().await;
    let latin1 = b"{\"email\": \"ada@example.com\", \"password\": \"caf\xe9\"}".to_vec();
    for (method, path) in [
        ("POST", "/api/v1/register-user"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/refresh-token"),
        ("PATCH", "/api/v1/me"),
        ("POST", "/api/v1/me/password"),
    ] {
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&access)
            .header(header::CONTENT_TYPE, "application/json")
            .body(latin1.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(response, &["content-type"]).await,
            (
                StatusCode::BAD_REQUEST,
                some(&["application/json"]),
                json!({"detail": "There was an error parsing the body"})
            ),
            "{method} {path}"
        );
    }
    // As Python's JSON reader, a UTF-8 byte order mark is no obstacle.
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(br#"{"email": "ada@example.com", "password": "correct horse battery"}"#);
    let response = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(with_bom)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Point 5: on every bearer route, the token is checked before the body, so a request
/// without a good token is a 401 whatever its body, as for `GET /api/v1/me`.
async fn bearer_routes_check_the_token_before_the_body() {
    let app = spawn_app().await;
    let routes = [
        ("DELETE", "/api/v1/me"),
        ("POST", "/api/v1/me/password"),
        ("PATCH", "/api/v1/me"),
        ("POST", "/api/v1/auth/logout"),
    ];
    let bodies: [Option<&[u8]>; 4] = [None, Some(b"{}"), Some(b"{\"password\": 7}"), Some(b"{not json")];
    for (method, path) in routes {
        for body in bodies {
            for (authorization, detail) in
                [(None, "Not authenticated"), (Some("Bearer not-a-token"), "Invalid Credentials")]
            {
                let mut request = app.http.request(method.parse().unwrap(), app.url(path));
                if let Some(body) = body {
                    request = request.header(header::CONTENT_TYPE, "application/json").body(body.to_vec());
                }
                if let Some(value) = authorization {
                    request = request.header(header::AUTHORIZATION, value);
                }
                assert_eq!(
                    answer(request.send().await.unwrap(), &["www-authenticate"]).await,
                    (StatusCode::UNAUTHORIZED, some(&["Bearer"]), json!({ "detail": detail })),
                    "{method} {path} {authorization:?} {body:?}"
                );
            }
        }
    }
}

/// Point 4: `"about": ""` is stored and returned as `""`; absent or null stays null. The
/// same rule over gRPC, whose `optional string` tells unset from empty.
async fn an_empty_about_is_kept_as_empty_and_a_missing_one_stays_null() {
    let app = spawn_app().await;
    let cases = [
        ("empty@example.com", Some(json!("")), json!("")),
        ("blank@example.com", Some(json!("   ")), json!("")),
        ("null@example.com", Some(Value::Null), Value::Null),
        ("absent@example.com", None, Value::Null),
    ];
    for (email, about, expected) in cases {
        let mut body =
            json!({"name": "Ada", "email": email, "location": "London", "password": "correct horse battery"});
        if let Some(about) = about {
            body["about"] = about;
        }
        assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);
        let (_, login) = json_of(app.login(email, "correct horse battery").await).await;
        assert_eq!(login["data"]["about"], expected, "{email}");
        let access = login["data"]["user_token"]["token"].as_str().unwrap();
        let (_, me) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
        assert_eq!(me["about"], expected, "{email}");
    }

    let mut users = app.users().await;
    for (email, about) in [("grpc-empty@example.com", Some(String::new())), ("grpc-unset@example.com", None)] {
        let request = RegisterUserRequest {
            name: "Ada".into(),
            email: email.into(),
            location: "London".into(),
            about: about.clone(),
            password: "correct horse battery".into(),
        };
        let user = users.register_user(request).await.unwrap().into_inner().user.unwrap();
        assert_eq!(user.about, about, "{email}");
    }
}

/// Point 1: FastAPI's `redirect_slashes`. A route's path with a trailing slash is a 307,
/// with no body, to the absolute URL without it (query kept); clients that follow
/// redirects land on the route, method and body kept.
async fn a_trailing_slash_redirects_307_to_the_route_without_it() {
    let app = spawn_app().await;
    let origin = format!("http://{}", app.addr);
    for (method, path, query) in [
        ("GET", "/api/v1/me/", ""),
        ("POST", "/api/v1/register-user/", ""),
        ("POST", "/api/v1/auth/login/", "?next=%2Fhome&x=1"),
        ("POST", "/api/v1/auth/refresh-token/", ""),
    ] {
        let response =
            app.http.request(method.parse().unwrap(), app.url(&format!("{path}{query}"))).send().await.unwrap();
        let location = format!("{origin}{}{query}", path.trim_end_matches('/'));
        assert_eq!(
            answer(response, &["location", "content-length"]).await,
            (StatusCode::TEMPORARY_REDIRECT, some(&[&location, "0"]), Value::Null),
            "{method} {path}"
        );
    }
    // A path that is no route's with or without the slash is still FastAPI's 404.
    let (status, body) = json_of(app.http.get(app.url("/api/v1/nothing/")).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));

    let following = reqwest::Client::new();
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    assert_eq!(following.post(app.url("/api/v1/register-user/")).json(&ada()).send().await.unwrap().status(), 201);
    let response = following.post(app.url("/api/v1/auth/login/")).json(&login).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, &body["message"]), (StatusCode::OK, &json!("Login successful.")));
    let access = body["data"]["user_token"]["token"].as_str().unwrap();
    let response = following.get(app.url("/api/v1/me/")).bearer_auth(access).send().await.unwrap();
    assert_eq!(json_of(response).await.1["email"], "ada@example.com");
}

/// Point 2: a route's path with a method it does not serve is FastAPI's 405: a JSON body,
/// and the route's methods in `allow`.
async fn a_wrong_method_is_fastapis_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("GET", "/api/v1/register-user", "POST"),
        ("GET", "/api/v1/auth/login", "POST"),
        ("PUT", "/api/v1/auth/refresh-token", "POST"),
        ("POST", "/api/v1/me", "GET, HEAD, PATCH, DELETE"),
        ("DELETE", "/docs/", "GET, HEAD"),
    ] {
        let response = app.http.request(method.parse().unwrap(), app.url(path)).send().await.unwrap();
        // The route's methods, as FastAPI's `GET, HEAD`; axum spells the list without the
        // space (HTTP's list syntax allows both) and in the route's order, not a set's.
        let allowed = response.headers()["allow"].to_str().unwrap().split(',').map(str::trim).collect::<Vec<_>>();
        assert_eq!(allowed.join(", "), allow, "{method} {path}");
        assert_eq!(
            answer(response, &["content-type"]).await,
            (StatusCode::METHOD_NOT_ALLOWED, some(&["application/json"]), json!({"detail": "Method Not Allowed"})),
            "{method} {path}"
        );
    }
}

/// Point 7: the root redirects with 307, and Swagger UI's OAuth2 redirect page is where
/// FastAPI serves it.
async fn the_root_redirects_307_and_the_oauth2_redirect_page_exists() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        answer(response, &["location", "content-length"]).await,
        (StatusCode::TEMPORARY_REDIRECT, some(&["/docs", "0"]), Value::Null)
    );
    let response = app.http.get(app.url("/docs/oauth2-redirect")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("<!doctype html>") || page.contains("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("oauth2"), "{page}");
}

/// Point 9: the old Postman collection's flow registers with the password `"string"` (six
/// characters, and the user's name too): register, log in, refresh, get the profile. It
/// works once `PASSWORD_MIN_LENGTH` is lowered and `PASSWORD_REFUSE_GUESSABLE` is off;
/// otherwise the registration says why not.
async fn the_postman_collections_flow_works_with_a_lowered_password_minimum() {
    let user = json!({
        "name": "string", "email": "user@example.com", "location": "string", "about": "string", "password": "string"
    });
    let (status, body) = json_of(spawn_app().await.register(&user).await).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": "must be at least 8 characters"}]}))
    );
    let (status, body) = json_of(spawn_app_with(|s| s.passwords.min_length = 6).await.register(&user).await).await;
    let why = "must not contain your name or the first part of your email";
    assert_eq!((status, body), (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": [{"password": why}]})));

    let app = spawn_app_with(|settings| {
        settings.passwords.min_length = 6;
        settings.passwords.refuse_guessable = false;
    })
    .await;
    let (status, body) = json_of(app.register(&user).await).await;
    assert_eq!((status, body), (StatusCode::CREATED, json!({"message": "User created successfully."})));
    let (status, login) = json_of(app.login("user@example.com", "string").await).await;
    assert_eq!((status, &login["message"]), (StatusCode::OK, &json!("Login successful.")), "{login}");
    let refresh = login["data"]["user_token"]["refreshToken"].as_str().unwrap();
    let (status, refreshed) = json_of(app.refresh(refresh).await).await;
    assert_eq!((status, &refreshed["message"]), (StatusCode::OK, &json!("Login successful.")), "{refreshed}");
    let access = refreshed["data"]["user_token"]["token"].as_str().unwrap();
    let (status, mut me) = json_of(app.me(Some(&format!("Bearer {access}"))).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me.as_object_mut().unwrap().remove("user_id").is_some_and(|id| id.is_i64()));
    // Added members an old client ignores (README, "extra members").
    assert_eq!(me.as_object_mut().unwrap().remove("email_verified"), Some(json!(false)));
    assert_eq!(me, json!({"name": "string", "email": "user@example.com", "about": "string", "location": "string"}));
}

on_both_backends!(
    the_postman_collections_flow_works_with_a_lowered_password_minimum,
    a_trailing_slash_redirects_307_to_the_route_without_it,
    a_wrong_method_is_fastapis_405_with_allow,
    the_root_redirects_307_and_the_oauth2_redirect_page_exists,
    an_empty_about_is_kept_as_empty_and_a_missing_one_stays_null,
    bearer_routes_check_the_token_before_the_body,
    the_refresh_answers_login_successful_as_the_old_app_did,
    an_empty_password_at_login_is_the_old_apps_401,
    the_refresh_ignores_token_type_as_the_old_app_did,
    a_json_body_that_is_not_utf8_is_fastapis_400,
);
