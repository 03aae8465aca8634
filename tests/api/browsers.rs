//! What a page on another site can make a browser send, and what a cache between the
//! client and authd may keep: no login from a cross-site page, no token in a cache.

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::{ALLOWED_ORIGIN, TestApp, json_of, spawn_app};
use authd::pb::{LoginRequest, RefreshTokenRequest};

const PASSWORD: &str = "correct horse battery";

/// A page on another site can post a body with no `Content-Type` without a preflight
/// (`fetch` with a Blob, `sendBeacon`): such a body is not JSON.
async fn a_body_without_a_content_type_is_not_read_as_json() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let login = json!({"email": "ada@example.com", "password": PASSWORD}).to_string();
    for (path, body) in [("/api/v1/auth/login", login), ("/api/v1/register-user", crate::helpers::ada().to_string())] {
        let response = app.http.post(app.url(path)).body(body).send().await.unwrap();
        assert_eq!(
            json_of(response).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": [{"body": "must be JSON (Content-Type: application/json)"}]})
            ),
            "{path}"
        );
    }
}

async fn form_login(app: &TestApp, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request =
        app.http.post(app.url("/api/v1/auth/login")).form(&[("username", "ada@example.com"), ("password", PASSWORD)]);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

/// An HTML form on any site can post `application/x-www-form-urlencoded` to the login:
/// the browser says where the page came from, and authd refuses other sites' pages.
async fn a_form_login_from_a_cross_site_page_is_refused() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let own_origin = format!("http://{}", app.addr);
    let cross_site = [
        vec![("origin", "https://evil.example".to_owned())],
        vec![("origin", "https://evil.example".to_owned()), ("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned()), ("origin", "http://other.localhost".to_owned())],
        // A sandboxed frame's page has the opaque origin "null".
        vec![("origin", "null".to_owned())],
    ];
    for headers in cross_site {
        assert_eq!(
            json_of(form_login(&app, &headers).await).await,
            (StatusCode::FORBIDDEN, json!({"error": {"error": "Cross-site login refused."}})),
            "{headers:?}"
        );
    }
    let allowed = [
        // curl, scripts and other clients that are not browsers say nothing.
        vec![],
        // authd's own pages (Swagger UI's Authorize button), and a typed-in address.
        vec![("origin", own_origin.clone()), ("sec-fetch-site", "same-origin".to_owned())],
        vec![("origin", own_origin)],
        vec![("sec-fetch-site", "none".to_owned())],
        // A site listed in CORS_ALLOWED_ORIGINS.
        vec![("origin", ALLOWED_ORIGIN.to_owned()), ("sec-fetch-site", "cross-site".to_owned())],
    ];
    for headers in allowed {
        assert_eq!(form_login(&app, &headers).await.status(), StatusCode::OK, "{headers:?}");
    }
}

fn assert_not_cacheable(headers: &http::HeaderMap, what: &str) {
    assert_eq!(headers.get(header::CACHE_CONTROL).map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
    assert_eq!(headers.get(header::PRAGMA).map(|v| v.to_str().unwrap()), Some("no-cache"), "{what}");
}

/// RFC 6749 §5.1: an answer carrying a token says no cache may keep it.
async fn answers_carrying_tokens_are_never_cached() {
    let app = spawn_app().await;
    let (_, refresh) = app.ada_tokens().await;
    let json_login = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(json_login.status(), StatusCode::OK);
    assert_not_cacheable(json_login.headers(), "REST login");
    let form = form_login(&app, &[]).await;
    assert_eq!(form.status(), StatusCode::OK);
    assert_not_cacheable(form.headers(), "REST form login");
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_not_cacheable(refreshed.headers(), "REST refresh");

    let mut auth = app.auth().await;
    let login = LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into(), ..Default::default() };
    let reply = auth.login(login).await.unwrap();
    assert_not_cacheable(&reply.metadata().clone().into_headers(), "gRPC Login");
    let refresh_token = reply.into_inner().refresh_token;
    let reply = auth.refresh_token(RefreshTokenRequest { refresh_token }).await.unwrap();
    assert_not_cacheable(&reply.metadata().clone().into_headers(), "gRPC RefreshToken");
}

on_both_backends!(
    a_body_without_a_content_type_is_not_read_as_json,
    a_form_login_from_a_cross_site_page_is_refused,
    answers_carrying_tokens_are_never_cached,
);
