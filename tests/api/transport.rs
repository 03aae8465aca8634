//! The one listener: grpc-web (binary and text, HTTP/1.1 and HTTP/2) with CORS,
//! reflection v1 and v1alpha, health, and the plain HTTP routes.

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use reqwest::StatusCode;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{ALLOWED_ORIGIN, TestApp, json_of, spawn_app};
use authd::pb::{GetMeRequest, LoginRequest, TokenResponse, User};

/// One grpc-web call; returns the reply message bytes (if any) and the trailers.
async fn grpc_web(
    app: &TestApp,
    client: &reqwest::Client,
    method: &str,
    message: &impl Message,
    text: bool,
    bearer: Option<&str>,
) -> (Option<Vec<u8>>, String) {
    let mut frame = vec![0u8];
    let payload = message.encode_to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let (content_type, body) = if text {
        ("application/grpc-web-text", STANDARD.encode(&frame).into_bytes())
    } else {
        ("application/grpc-web+proto", frame)
    };
    let mut request = client
        .post(app.url(method))
        .header("content-type", content_type)
        // grpc-web clients choose the reply's encoding with Accept.
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .header("origin", ALLOWED_ORIGIN)
        .body(body);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    let reply_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(reply_type.starts_with(content_type), "{reply_type}");
    // A reply with no message ("trailers-only") carries its status in the headers.
    let mut trailers: String = ["grpc-status", "grpc-message"]
        .iter()
        .filter_map(|name| response.headers().get(*name).map(|v| format!("{name}:{}\r\n", v.to_str().unwrap())))
        .collect();
    let raw = response.bytes().await.unwrap().to_vec();
    let mut bytes = if text { decode_base64_chunks(&raw) } else { raw };

    let mut reply = None;
    while bytes.len() >= 5 {
        let flag = bytes[0];
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let data = bytes[5..5 + len].to_vec();
        bytes.drain(..5 + len);
        if flag & 0x80 != 0 {
            trailers = String::from_utf8(data).unwrap();
        } else {
            reply = Some(data);
        }
    }
    (reply, trailers)
}

/// grpc-web-text replies may be several base64 pieces, each padded.
fn decode_base64_chunks(raw: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(raw).unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '=' {
            while i < chars.len() && chars[i] == '=' {
                i += 1;
            }
            out.extend(STANDARD.decode(&text[start..i]).unwrap());
            start = i;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        out.extend(STANDARD.decode(&text[start..]).unwrap());
    }
    out
}

async fn grpc_web_works_binary_and_text_over_http1_and_http2() {
    let app = spawn_app().await;
    app.ada_tokens().await;
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&http1, "HTTP/1.1"), (&http2, "HTTP/2")] {
        for text in [false, true] {
            let login = LoginRequest {
                email: "ada@example.com".into(),
                password: "correct horse battery".into(),
                ..Default::default()
            };
            let (reply, trailers) = grpc_web(&app, client, "/authd.v1.AuthService/Login", &login, text, None).await;
            assert!(trailers.contains("grpc-status:0"), "{version} text={text}: {trailers}");
            let tokens = TokenResponse::decode(reply.unwrap().as_slice()).unwrap();

            let (reply, trailers) = grpc_web(
                &app,
                client,
                "/authd.v1.UserService/GetMe",
                &GetMeRequest {},
                text,
                Some(&tokens.access_token),
            )
            .await;
            assert!(trailers.contains("grpc-status:0"), "{trailers}");
            assert_eq!(User::decode(reply.unwrap().as_slice()).unwrap().email, "ada@example.com");

            let (reply, trailers) =
                grpc_web(&app, client, "/authd.v1.UserService/GetMe", &GetMeRequest {}, text, None).await;
            assert!(reply.is_none());
            assert!(trailers.contains("grpc-status:16"), "{version} text={text}: {trailers}");
        }
    }
}

async fn cors_preflight_is_answered_for_allowed_origins_only() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/authd.v1.UserService/GetMe"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
            .send()
    };
    let allowed = preflight(ALLOWED_ORIGIN).await.unwrap();
    assert!(allowed.status().is_success());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    for header in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    let response = app.http.get(app.url("/healthz")).header("origin", ALLOWED_ORIGIN).send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], ALLOWED_ORIGIN);
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-message"), "{exposed}");
}

async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app().await;
    let expected = ["authd.v1.AuthService", "authd.v1.UserService", "grpc.health.v1.Health"];

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.grpc_channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream_once(request)).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = reply.message_response
    else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.grpc_channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "authd.v1.UserService".into(),
        )),
    };
    let mut replies = client.server_reflection_info(tokio_stream_once(request)).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        reply.message_response
    else {
        panic!("unexpected reply {reply:?}");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "authd.v1");
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert!(methods.contains(&"RegisterUser") && methods.contains(&"GetMe"), "{methods:?}");
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::iter([item])
}

async fn health_is_served_over_grpc_and_http() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.grpc_channel().await);
    for service in ["", "authd.v1.UserService", "authd.v1.AuthService"] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let (status, body) = json_of(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = json_of(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ready")), "{body}");
    // The change feed's own states are tested in pooler.rs; here only that it is reported.
    assert!(matches!(body["change_feed"].as_str(), Some("up" | "down")), "{body}");
}

async fn unknown_paths_get_404_and_unknown_methods_unimplemented() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.http.get(app.url("/api/v1/nope")).send().await.unwrap()).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));

    let mut grpc = tonic::client::Grpc::new(app.grpc_channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<GetMeRequest, User>::default();
    let path = "/authd.v1.UserService/NoSuchMethod".parse().unwrap();
    let status = grpc.unary(tonic::Request::new(GetMeRequest {}), path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

on_both_backends!(
    grpc_web_works_binary_and_text_over_http1_and_http2,
    cors_preflight_is_answered_for_allowed_origins_only,
    reflection_lists_the_services_in_v1_and_v1alpha,
    health_is_served_over_grpc_and_http,
    unknown_paths_get_404_and_unknown_methods_unimplemented,
);
