//! Requests you can follow: an `x-request-id` on every answer (kept from a trusted proxy,
//! else generated), the same id on every log event of the request, and gRPC deadlines.

use std::{convert::Infallible, time::Duration};

use authd::pb::GetMeRequest;
use bytes::Bytes;
use futures::stream;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::StatusCode;
use serde_json::Value;
use tonic::{Code, Status, metadata::MetadataMap};

use crate::helpers::{LogCapture, TestApp, ada, spawn_app, spawn_app_with, with_bearer};

fn is_generated(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 4)
}

fn rest_id(response: &reqwest::Response) -> String {
    response.headers().get("x-request-id").expect("an x-request-id header").to_str().unwrap().to_owned()
}

fn grpc_id(metadata: &MetadataMap) -> String {
    metadata.get("x-request-id").expect("x-request-id metadata").to_str().unwrap().to_owned()
}

/// A REST call and a gRPC call (which fails: its status carries the metadata too), each
/// sending `id` as `x-request-id`; the ids they were answered with.
async fn ids_answered_to(app: &TestApp, id: &str) -> (String, String) {
    let rest = app.http.get(app.url("/healthz")).header("x-request-id", id).send().await.unwrap();
    let mut request = tonic::Request::new(GetMeRequest {});
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    let status = app.users().await.get_me(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    (rest_id(&rest), grpc_id(status.metadata()))
}

async fn every_answer_carries_a_generated_request_id() {
    let app = spawn_app().await;
    let registered = app.register(&ada()).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let not_found = app.http.get(app.url("/no/such/path")).send().await.unwrap();
    let tokens = app.grpc_login("ada@example.com", "correct horse battery").await.unwrap();
    let me = app.users().await.get_me(with_bearer(GetMeRequest {}, &tokens.access_token)).await.unwrap();
    let refused = app.users().await.get_me(GetMeRequest {}).await.unwrap_err();

    let ids = [rest_id(&registered), rest_id(&not_found), grpc_id(me.metadata()), grpc_id(refused.metadata())];
    for id in &ids {
        assert!(is_generated(id), "{id:?}");
    }
    let mut distinct = ids.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "one id per request: {ids:?}");
}

async fn an_id_sent_by_a_trusted_proxy_is_kept_and_by_anyone_else_replaced() {
    let behind_proxy = spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(ids_answered_to(&behind_proxy, "edge-7f3a:42").await, ("edge-7f3a:42".into(), "edge-7f3a:42".into()));
    // Even a trusted proxy's id must be short and printable to reach the log.
    let (rest, grpc) = ids_answered_to(&behind_proxy, &"x".repeat(200)).await;
    assert!(is_generated(&rest) && is_generated(&grpc), "{rest} {grpc}");

    let other_proxy = spawn_app_with(|s| s.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let direct = spawn_app().await;
    for app in [&other_proxy, &direct] {
        let (rest, grpc) = ids_answered_to(app, "edge-7f3a:42").await;
        assert!(is_generated(&rest) && is_generated(&grpc), "{rest} {grpc}");
    }
}

/// The `request_id` of the span an event was logged in.
fn request_id_of(event: &Value) -> Option<&str> {
    event["spans"].as_array()?.iter().find_map(|span| span["request_id"].as_str())
}

async fn events_inside_a_request_carry_its_id() {
    let log = LogCapture::start();
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (_, refresh) = app.ada_tokens().await;
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reused = app.refresh(&refresh).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    let id = rest_id(&reused);
    // The access line is written as the answer leaves; let it reach the buffer.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let events = log.events();
    let revoked = events
        .iter()
        .find(|e| e["message"] == "refresh token reused: session revoked")
        .unwrap_or_else(|| panic!("no reuse event in {events:#?}"));
    assert_eq!(request_id_of(revoked), Some(id.as_str()), "{revoked}");
    let access_lines = events.iter().filter(|e| e["message"] == "request" && request_id_of(e) == Some(&id));
    let paths = access_lines.map(|e| (e["path"].as_str().unwrap(), e["status"].as_u64().unwrap())).collect::<Vec<_>>();
    assert_eq!(paths, [("/api/v1/auth/refresh-token", 401)], "the access line of that call, and no other");
}

/// A Login whose request message never comes: it can only end by a deadline. Sent with
/// hyper itself, as tonic's channel would enforce `grpc-timeout` on its own side too.
async fn login_that_never_sends(app: &TestApp, grpc_timeout: &str) -> Status {
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let body = StreamBody::new(stream::pending::<Result<Frame<Bytes>, Infallible>>());
    let request = http::Request::post(app.url("/authd.v1.AuthService/Login"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    // The call ends before any message, so its status comes in the headers.
    Status::from_header_map(response.headers()).expect("a gRPC status")
}

async fn a_grpc_call_past_its_grpc_timeout_gets_deadline_exceeded() {
    // The server's own limit (30 s) is far off: only the caller's deadline can end the call.
    let app = spawn_app().await;
    let status = login_that_never_sends(&app, "200m").await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("grpc-timeout"), "the caller's deadline, not the server's: {status:?}");
    assert!(is_generated(&grpc_id(status.metadata())), "answered by the server: {status:?}");
}

async fn a_grpc_timeout_beyond_the_servers_limit_is_cut_to_it() {
    let app = spawn_app_with(|s| s.limits.request_timeout = Duration::from_secs(1)).await;
    let status = login_that_never_sends(&app, "1H").await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "request timed out", "the server's limit: {status:?}");
}

on_both_backends!(
    every_answer_carries_a_generated_request_id,
    an_id_sent_by_a_trusted_proxy_is_kept_and_by_anyone_else_replaced,
    events_inside_a_request_carry_its_id,
    a_grpc_call_past_its_grpc_timeout_gets_deadline_exceeded,
    a_grpc_timeout_beyond_the_servers_limit_is_cut_to_it,
);
