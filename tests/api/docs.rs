//! The API documented where users look for it: the OpenAPI document, Swagger UI and ReDoc
//! served by authd itself, and a schema-driven tester (schemathesis) proving that the
//! document matches what the live server answers.

use std::{process::Command, time::Duration};

use reqwest::StatusCode;

use crate::helpers::{json_of, spawn_app, spawn_app_with};

/// Every route of the REST shim with its methods, as the router serves them.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/register-user", &["post"]),
    ("/api/v1/auth/login", &["post"]),
    ("/api/v1/auth/refresh-token", &["post"]),
    ("/api/v1/auth/revoke", &["post"]),
    ("/api/v1/auth/logout", &["post"]),
    ("/api/v1/auth/validate", &["post"]),
    ("/oauth/token", &["post"]),
    ("/api/v1/me", &["get", "patch", "delete"]),
    ("/api/v1/me/password", &["post"]),
    ("/api/v1/me/sessions", &["get"]),
    ("/api/v1/me/activity", &["get"]),
    ("/api/v1/me/sessions/{session_id}", &["delete"]),
    ("/api/v1/me/factors", &["get"]),
    ("/api/v1/me/factors/totp", &["post"]),
    ("/api/v1/me/factors/{factor_id}/activate", &["post"]),
    ("/api/v1/me/factors/{factor_id}", &["delete"]),
    ("/api/v1/me/factors/recovery-codes", &["post"]),
    ("/api/v1/auth/login/second-factor", &["post"]),
    ("/api/v1/me/factors/passkeys/options", &["post"]),
    ("/api/v1/me/factors/passkeys", &["post"]),
    ("/api/v1/auth/login/second-factor/passkey-options", &["post"]),
    ("/api/v1/auth/passkey-login/options", &["post"]),
    ("/api/v1/auth/passkey-login", &["post"]),
    ("/api/v1/me/email", &["post"]),
    ("/api/v1/auth/forgot-password", &["post"]),
    ("/api/v1/auth/reset-password", &["post"]),
    ("/api/v1/verify-email", &["post"]),
    ("/api/v1/verify-email/resend", &["post"]),
    ("/api/v1/confirm-email-change", &["post"]),
    ("/.well-known/jwks.json", &["get"]),
    ("/.well-known/oauth-authorization-server", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/api/v1/admin/users", &["get", "post"]),
    ("/api/v1/admin/users/{user_id}", &["get", "patch", "delete"]),
    ("/api/v1/admin/users/{user_id}/disable", &["post"]),
    ("/api/v1/admin/users/{user_id}/enable", &["post"]),
    ("/api/v1/admin/users/{user_id}/sessions", &["delete"]),
    ("/api/v1/admin/users/{user_id}/roles", &["put"]),
    ("/api/v1/admin/audit-events", &["get"]),
    ("/api/v1/admin/clients", &["get", "post"]),
    ("/api/v1/admin/clients/{client_id}/rotate", &["post"]),
    ("/api/v1/admin/clients/{client_id}", &["delete"]),
];

async fn the_openapi_document_covers_every_route_and_the_security_schemes() {
    let app = spawn_app().await;
    let (status, doc) = json_of(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ROUTES.iter().map(|(_, m)| m.len()).sum::<usize>(), "no undocumented extras");
    for (path, methods) in ROUTES {
        for method in *methods {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["oauth2"]["flows"]["password"]["tokenUrl"], "/api/v1/auth/login");
    // The old dialect's shapes, as documented.
    let me_401 = &doc["paths"]["/api/v1/me"]["get"]["responses"]["401"]["content"]["application/json"]["schema"];
    assert_eq!(me_401["$ref"], "#/components/schemas/Detail");
    let login = &doc["paths"]["/api/v1/auth/login"]["post"]["requestBody"]["content"];
    assert!(login["application/x-www-form-urlencoded"].is_object(), "the OAuth2 form is documented");
}

/// The router serves exactly what the document lists: no handler is mounted on a path it
/// was not declared for (one `routes!` mounts each of its handlers on each of its paths).
async fn every_route_answers_only_its_documented_methods() {
    let app = spawn_app().await;
    for (path, methods) in ROUTES {
        let url = app.url(&path.replace("{session_id}", "00000000-0000-0000-0000-000000000000"));
        for method in ["get", "post", "put", "patch", "delete"] {
            let response = app.http.request(method.to_uppercase().parse().unwrap(), &url).send().await.unwrap();
            let served = response.status() != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(served, methods.contains(&method), "{method} {path}: {}", response.status());
        }
    }
}

async fn swagger_ui_and_redoc_are_served_by_authd_and_the_root_redirects() {
    let app = spawn_app().await;
    let root = app.http.get(app.url("/")).send().await.unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()["location"], "/docs");

    let get = |path: &'static str| {
        let url = app.url(path);
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status();
            let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            (status, content_type.unwrap_or_default(), response.text().await.unwrap())
        }
    };
    // Swagger UI: the page, its assets (no CDN), and its config pointing at our document.
    let (status, _, page) = get("/docs/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(!page.contains(r#"src="http"#) && !page.contains(r#"href="http"#), "nothing from the internet: {page}");
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"] {
        assert_eq!(get(asset).await.0, StatusCode::OK, "{asset}");
    }
    let (_, _, initializer) = get("/docs/swagger-initializer.js").await;
    assert!(initializer.contains("/openapi.json"), "{initializer}");

    // ReDoc: the page loads its bundle from authd, which serves it.
    let (status, _, page) = get("/redoc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"spec-url="/openapi.json""#) && page.contains(r#"src="/redoc/redoc.standalone.js""#));
    let (status, content_type, bundle) = get("/redoc/redoc.standalone.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/javascript"));
    assert!(bundle.len() > 500_000 && bundle.contains("Redoc"));
}

/// Swagger UI's Authorize button posts the OAuth2 password form and reads
/// `access_token` from the top level of the answer.
async fn the_oauth2_password_form_answers_what_swagger_uis_authorize_button_reads() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let form = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "correct horse battery"),
        ("scope", ""),
    ];
    let response = app.http.post(app.url("/api/v1/auth/login")).form(&form).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(access, body["data"]["user_token"]["token"]);
    assert_eq!(app.me(Some(&format!("Bearer {access}"))).await.status(), StatusCode::OK);
}

on_both_backends!(
    the_openapi_document_covers_every_route_and_the_security_schemes,
    every_route_answers_only_its_documented_methods,
    swagger_ui_and_redoc_are_served_by_authd_and_the_root_redirects,
    the_oauth2_password_form_answers_what_swagger_uis_authorize_button_reads,
);

/// Runs schemathesis against the live server (SQLite): no 5xx, and every answer's status,
/// content type, headers and body as the document says. Signed in, so that the bearer
/// routes are exercised beyond their 401. Skipped with a line when `st` is not installed,
/// unless `AUTHD_REQUIRE_SCHEMATHESIS=1` (as in `.ci/run`).
#[tokio::test]
async fn schemathesis_finds_the_live_server_true_to_its_document() {
    let installed = Command::new("st").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        if std::env::var("AUTHD_REQUIRE_SCHEMATHESIS").is_ok_and(|v| v.trim() == "1") {
            panic!("AUTHD_REQUIRE_SCHEMATHESIS=1 but schemathesis (`st`) is not installed: pip install schemathesis");
        }
        eprintln!("skipped: schemathesis (`st`) is not installed; pip install schemathesis");
        return;
    }
    // Passkeys on, passwordless login too: their routes answer as a deployment with them
    // does (without, they answer 501, which is what a server error looks like to the run).
    let app = spawn_app_with(|s| {
        let mut webauthn = authd::config::WebauthnSettings::new(None, "http://localhost:8000").unwrap();
        webauthn.passkey_login = true;
        s.webauthn = Some(webauthn);
    })
    .await;
    let (access, _) = app.ada_tokens().await;
    // Logout and a password change end the session whose token the run sends: test them
    // last, so that the other bearer routes are exercised signed in, not only for their 401.
    let ending = ["/api/v1/auth/logout", "/api/v1/me/password"];
    schemathesis(&app, &access, &["--exclude-path", ending[0], "--exclude-path", ending[1]]).await;
    schemathesis(&app, &access, &["--include-path", ending[0], "--include-path", ending[1]]).await;
}

/// One `st run` against the app with the checks above; fails the test on any finding.
async fn schemathesis(app: &crate::helpers::TestApp, access: &str, filter: &[&str]) {
    let schema = app.url("/openapi.json");
    let report = std::env::temp_dir().join(format!("authd-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&report).unwrap();
    let workdir = report.clone();
    let auth = format!("Authorization: Bearer {access}");
    let filter: Vec<String> = filter.iter().map(|f| (*f).to_owned()).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("st")
            .args(["run", &schema])
            .args(["--checks", SCHEMATHESIS_CHECKS])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", "8", "--workers", "2", "--request-timeout", "10", "--seed", "1"])
            .args(["--header", &auth])
            .args(&filter)
            .args(["--suppress-health-check", "all", "--no-color"])
            // Its example database and reports go to a directory of its own, not the worktree.
            .current_dir(&workdir)
            .output()
    });
    let output =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("schemathesis finishes").unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&report);
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";
