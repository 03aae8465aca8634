use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{ada, field_violations, json_of, spawn_app};
use authd::pb::RegisterUserRequest;

async fn rest_registration_answers_201_in_the_old_dialect_and_the_user_can_log_in() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.register(&ada()).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"message": "User created successfully."}));
    assert_eq!(app.login("ada@example.com", "correct horse battery").await.status(), StatusCode::OK);
}

async fn surrounding_whitespace_is_trimmed_but_the_password_is_kept_exactly() {
    let app = spawn_app().await;
    let body =
        json!({"name": "  Ada ", "email": " ada@example.com\t", "location": " London ", "password": " spaced pass "});
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);
    assert_eq!(app.login("ada@example.com", "spaced pass").await.status(), StatusCode::UNAUTHORIZED);
    let (_, login) = json_of(app.login("ada@example.com", " spaced pass ").await).await;
    assert_eq!(login["data"]["name"], "Ada");
    assert_eq!(login["data"]["location"], "London");
    assert_eq!(login["data"]["about"], Value::Null);
}

async fn an_email_registered_in_any_case_is_refused_with_400() {
    let app = spawn_app().await;
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
    let mut again = ada();
    again["email"] = json!("ADA@Example.COM");
    let (status, body) = json_of(app.register(&again).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": {"email": "Email already registered. Try logging in."}}));
}

async fn bad_rest_registrations_get_422_naming_every_bad_field_and_create_nothing() {
    let app = spawn_app().await;
    let long = "x".repeat(1001);
    let cases: Vec<(Value, Value)> = vec![
        (
            json!({"email": "ada@example.com", "location": "L", "password": "correct horse"}),
            json!([{"name": "field required"}]),
        ),
        (
            json!({"name": "   ", "email": "ada@example.com", "location": "L", "password": "correct horse"}),
            json!([{"name": "must not be empty"}]),
        ),
        (
            json!({"name": long, "email": "ada@example.com", "location": "L", "password": "correct horse"}),
            json!([{"name": "must be at most 1000 characters"}]),
        ),
        (
            json!({"name": "Ada", "email": "not-an-email", "location": "L", "password": "correct horse"}),
            json!([{"email": "is not a valid email address"}]),
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "location": "", "password": "correct horse"}),
            json!([{"location": "must not be empty"}]),
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "location": "L", "password": "short"}),
            json!([{"password": "must be at least 8 characters"}]),
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "location": "L", "password": "p".repeat(129)}),
            json!([{"password": "must be at most 128 characters"}]),
        ),
        (
            json!({"name": "Ada", "email": "ada@example.com", "location": "L", "about": "a".repeat(10_001), "password": "correct horse"}),
            json!([{"about": "must be at most 10000 characters"}]),
        ),
        (
            json!({"name": 42, "email": ["ada@example.com"], "location": "L", "about": false, "password": "correct horse"}),
            json!([{"name": "must be a string"}, {"email": "must be a string"}, {"about": "must be a string"}]),
        ),
        (
            json!({"name": 42, "email": "nope", "location": "L", "password": "short"}),
            json!([{"name": "must be a string"}, {"email": "is not a valid email address"}, {"password": "must be at least 8 characters"}]),
        ),
        (
            json!({}),
            json!([{"name": "field required"}, {"email": "field required"}, {"location": "field required"}, {"password": "field required"}]),
        ),
        (json!([1, 2]), json!([{"body": "must be a JSON object"}])),
        (json!("text"), json!([{"body": "must be a JSON object"}])),
    ];
    for (body, expected) in cases {
        let (status, answer) = json_of(app.register(&body).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer, json!({ "error": expected }), "{body}");
    }
    // Nothing was created: the email is still free.
    assert_eq!(app.register(&ada()).await.status(), StatusCode::CREATED);
}

async fn malformed_rest_bodies_get_422_on_the_body() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/register-user");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{\"name\": ".to_vec()),
        ("application/json", b"".to_vec()),
        ("application/json", b"null".to_vec()),
        ("text/plain", ada().to_string().into_bytes()),
        ("application/x-www-form-urlencoded", b"name=Ada".to_vec()),
    ];
    for (content_type, body) in cases {
        let response =
            app.http.post(&url).header("content-type", content_type).body(body.clone()).send().await.unwrap();
        let (status, answer) = json_of(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{content_type} {body:?}");
        let violations = answer["error"].as_array().unwrap();
        assert_eq!(violations.len(), 1, "{answer}");
        assert!(violations[0]["body"].is_string(), "{answer}");
    }
}

async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let mut body = ada();
    body["about"] = json!("a".repeat(100_000));
    let (status, answer) = json_of(app.register(&body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer, json!({"error": {"error": "Request body too large."}}));
}

fn grpc_registration() -> RegisterUserRequest {
    RegisterUserRequest {
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        location: "London".into(),
        about: None,
        password: "correct horse battery".into(),
    }
}

async fn grpc_registration_returns_the_user_and_refuses_a_duplicate() {
    let app = spawn_app().await;
    let mut users = app.users().await;
    let user = users.register_user(grpc_registration()).await.unwrap().into_inner().user.unwrap();
    assert!(user.user_id > 0);
    assert_eq!(
        (user.name.as_str(), user.email.as_str(), user.location.as_str()),
        ("Ada Lovelace", "ada@example.com", "London")
    );
    assert_eq!(user.about, None);
    assert!(user.created_at.is_some());

    let duplicate = RegisterUserRequest { email: "Ada@EXAMPLE.com".into(), ..grpc_registration() };
    let status = users.register_user(duplicate).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.message(), "Email already registered. Try logging in.");
}

async fn bad_grpc_registrations_get_one_field_violation_per_bad_field() {
    let app = spawn_app().await;
    let mut users = app.users().await;
    let base = grpc_registration;
    let cases: Vec<(RegisterUserRequest, Vec<&str>)> = vec![
        (RegisterUserRequest { name: "".into(), ..base() }, vec!["name"]),
        (RegisterUserRequest { name: " \t ".into(), ..base() }, vec!["name"]),
        (RegisterUserRequest { name: "a\u{0}b".into(), ..base() }, vec!["name"]),
        (RegisterUserRequest { email: "ada".into(), ..base() }, vec!["email"]),
        (RegisterUserRequest { email: "ada@localhost".into(), ..base() }, vec!["email"]),
        (RegisterUserRequest { location: "l".repeat(1001), ..base() }, vec!["location"]),
        (RegisterUserRequest { about: Some("a".repeat(10_001)), ..base() }, vec!["about"]),
        (RegisterUserRequest { password: "1234567".into(), ..base() }, vec!["password"]),
        (RegisterUserRequest::default(), vec!["name", "email", "location", "password"]),
    ];
    for (request, fields) in cases {
        let status = users.register_user(request.clone()).await.unwrap_err();
        let violations = field_violations(&status);
        let named: Vec<&str> = violations.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(named, fields, "{request:?}");
        assert!(violations.iter().all(|(_, why)| !why.is_empty()));
    }
    assert!(users.register_user(grpc_registration()).await.is_ok(), "nothing was created by the bad requests");
}

async fn a_message_that_is_not_valid_protobuf_is_invalid_argument() {
    use authd::pb::RegisterUserResponse;
    let app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(app.grpc_channel().await);
    // Raw bytes sent as the request: field 1 (name) as a string that is not UTF-8, then a
    // truncated field.
    let codec = RawCodec::<RegisterUserResponse>::default();
    let path: http::uri::PathAndQuery = "/authd.v1.UserService/RegisterUser".parse().unwrap();
    for bytes in [vec![0x0a, 0x02, 0xff, 0xfe], vec![0x0a, 0x10, b'a'], vec![0xff; 8]] {
        grpc.ready().await.unwrap();
        let status = grpc.unary(tonic::Request::new(bytes.clone()), path.clone(), codec.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bytes:?}: {status:?}");
    }
}

/// Sends raw bytes as the request message, so that a test can send what no client would.
#[derive(Clone, Default)]
struct RawCodec<U>(std::marker::PhantomData<U>);

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl<U: prost::Message + Default + Send + 'static> tonic::codec::Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

on_both_backends!(
    rest_registration_answers_201_in_the_old_dialect_and_the_user_can_log_in,
    surrounding_whitespace_is_trimmed_but_the_password_is_kept_exactly,
    an_email_registered_in_any_case_is_refused_with_400,
    bad_rest_registrations_get_422_naming_every_bad_field_and_create_nothing,
    malformed_rest_bodies_get_422_on_the_body,
    an_oversized_body_is_refused_with_413,
    grpc_registration_returns_the_user_and_refuses_a_duplicate,
    bad_grpc_registrations_get_one_field_violation_per_bad_field,
    a_message_that_is_not_valid_protobuf_is_invalid_argument,
);
