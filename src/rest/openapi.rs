//! The OpenAPI 3.1 document of the REST surface, served at `/openapi.json`, with Swagger
//! UI at `/docs` and ReDoc at `/redoc`, all served by authd itself (no CDN). The paths
//! come from the handlers' `#[utoipa::path]`s as the router mounts them; what is declared
//! here is what no one route says.

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use utoipa::{
    IntoResponses, Modify, OpenApi,
    openapi::security::{
        ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityRequirement,
        SecurityScheme,
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::error::{
    BadRequestBody, CodedError, CodedText, Detail, EmailTaken, ErrorBody, FieldErrors, Unauthenticated,
};

pub const DOCUMENT_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "authd",
        description = "Registration, login, tokens and the caller's own account, in the old app's JSON dialect. \
                       The same service answers gRPC (`authd.v1`) on the same port.",
        license(name = "MIT", identifier = "MIT"),
    ),
    // The bodies of the shared error answers, which utoipa does not gather from them.
    components(schemas(ErrorBody, CodedError, CodedText, FieldErrors, BadRequestBody, EmailTaken, Detail)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "users", description = "Registration and the caller's own account"),
        (name = "auth", description = "Login, tokens and sessions"),
        (name = "factors", description = "The caller's second factors: TOTP and recovery codes"),
        (name = "operations", description = "Health, readiness, metrics and keys"),
        (name = "admin", description = "The operator's API: a user with the `admin` role"),
    )
)]
pub struct ApiDoc;

/// `bearer` for a pasted access token; `oauth2` so that Swagger UI's Authorize button can
/// log in through the OAuth2 password form that `/api/v1/auth/login` accepts.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        // Service clients (ValidateToken, the admin API): HTTP Basic with the client's id and
        // secret, or a service token from `POST /oauth/token`.
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "client_token",
            SecurityScheme::OAuth2(OAuth2::new([Flow::ClientCredentials(ClientCredentials::new(
                "/oauth/token",
                Scopes::new(),
            ))])),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new("/api/v1/auth/login", Scopes::new()))])),
        );
    }
}

/// `/openapi.json` serving `document`, `/docs` (Swagger UI), `/redoc`, and `/` redirecting
/// to `/docs`.
pub fn router(mut document: utoipa::openapi::OpenApi) -> Router {
    require_bearer(&mut document);
    let swagger = SwaggerUi::new("/docs").url(DOCUMENT_PATH, document);
    Router::new()
        .merge(swagger)
        // The old app's root redirected with 307, as FastAPI's RedirectResponse does.
        .route("/", get(|| async { Redirect::temporary("/docs") }))
        .route("/docs/oauth2-redirect", get(oauth2_redirect))
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=86400"),
                    ],
                    REDOC_JS,
                )
                    .into_response()
            }),
        )
}

/// Swagger UI's OAuth2 redirect page, where FastAPI serves it (Swagger UI's own copy is
/// `/docs/oauth2-redirect.html`).
async fn oauth2_redirect() -> Response {
    let file = utoipa_swagger_ui::serve("oauth2-redirect.html", Arc::new(Config::default())).ok().flatten();
    match file {
        Some(file) => {
            let mut page = ([(header::CONTENT_TYPE, file.content_type)], file.bytes.into_owned()).into_response();
            if file.gzpipped {
                page.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            page
        }
        None => super::not_found().await,
    }
}

/// A route that can answer [`Unauthenticated`] takes a bearer token (pasted, or got by
/// the OAuth2 password form): said here once rather than on each such route.
fn require_bearer(document: &mut utoipa::openapi::OpenApi) {
    let unauthenticated = Unauthenticated::responses();
    for item in document.paths.paths.values_mut() {
        for operation in
            [&mut item.get, &mut item.post, &mut item.patch, &mut item.put, &mut item.delete].into_iter().flatten()
        {
            if unauthenticated.iter().all(|(status, answer)| operation.responses.responses.get(status) == Some(answer))
            {
                operation.security = Some(
                    ["bearer", "oauth2"].map(|scheme| SecurityRequirement::new(scheme, Vec::<String>::new())).into(),
                );
            }
        }
    }
}

/// ReDoc's standalone bundle, vendored from its npm package (`assets/redoc/`, MIT).
const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>authd API (ReDoc)</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;
