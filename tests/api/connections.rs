//! Connection hygiene against the real server: silent and half-open connections are
//! closed, idle HTTP/2 connections get a GOAWAY, and past the cap new connections are
//! refused while the server keeps serving.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{TestApp, ada, client_from, eventually, spawn_app_with};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const GOAWAY: u8 = 0x7;

/// A connection to `app` from `source` (any 127.0.0.0/8 address).
async fn connect_from(app: &TestApp, source: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(app.addr).await
}

/// Whether the server closes `stream` (end of stream or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn silent_and_half_open_connections_are_closed_at_the_header_deadline() {
    let app = spawn_app_with(|s| s.limits.header_read_timeout = Duration::from_secs(1)).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut one_byte = TcpStream::connect(app.addr).await.unwrap();
    one_byte.write_all(b"P").await.unwrap();
    let mut half_preface = TcpStream::connect(app.addr).await.unwrap();
    half_preface.write_all(&PREFACE[..16]).await.unwrap();
    let mut one_http1_byte = TcpStream::connect(app.addr).await.unwrap();
    one_http1_byte.write_all(b"G").await.unwrap();
    for (what, stream) in [
        ("0 bytes", &mut silent),
        ("1 byte of the HTTP/2 preface", &mut one_byte),
        ("half the HTTP/2 preface", &mut half_preface),
        ("1 byte of an HTTP/1.1 request", &mut one_http1_byte),
    ] {
        assert!(closed_within(stream, Duration::from_secs(5)).await, "{what}: still open 5 s after connecting");
    }
    // The server still serves.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
}

/// One HTTP/2 frame: 9 bytes of header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// Reads frames as a minimal HTTP/2 client would (acknowledging SETTINGS and PINGs) until
/// the server closes the connection or `limit` passes; the kinds of frames received.
async fn frames_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut kinds = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return;
            }
            let (kind, flags) = (head[3], head[4]);
            kinds.push(kind);
            let ack = match kind {
                0x4 if flags & 1 == 0 => frame(0x4, 1, 0, &[]),
                0x6 if flags & 1 == 0 => frame(0x6, 1, 0, &payload),
                _ => continue,
            };
            if stream.write_all(&ack).await.is_err() {
                return;
            }
        }
    };
    assert!(tokio::time::timeout(limit, read).await.is_ok(), "still open after {limit:?}; frames {kinds:?}");
    kinds
}

async fn idle_http2_connections_are_closed_with_a_goaway() {
    let app = spawn_app_with(|s| {
        s.limits.header_read_timeout = Duration::from_secs(1);
        s.limits.idle_timeout = Duration::from_secs(1);
    })
    .await;
    // One request (GET /healthz, HPACK by hand), then no stream open.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    let mut headers = vec![0x82, 0x86, 0x44, 8];
    headers.extend(b"/healthz");
    headers.extend([0x41, 5]);
    headers.extend(b"authd");
    hello.extend(frame(0x1, 0x5, 1, &headers));
    stream.write_all(&hello).await.unwrap();
    let kinds = frames_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert!(kinds.contains(&0x1), "the request was answered: {kinds:?}");
    assert_eq!(kinds.last(), Some(&GOAWAY), "closed with a GOAWAY: {kinds:?}");

    // A connection that never opens a stream is closed at the first-request deadline, alike.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    let kinds = frames_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert_eq!(kinds.last(), Some(&GOAWAY), "closed with a GOAWAY: {kinds:?}");
}

async fn past_max_connections_new_connections_are_refused_and_service_resumes_when_they_close() {
    const CAP: usize = 20;
    let app = spawn_app_with(|s| {
        s.limits.max_connections = Some(CAP as u32);
        // The flood's sockets stay for the test's length, past no deadline.
        s.limits.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    let registered = client_from("127.0.0.7").post(app.url("/api/v1/register-user")).json(&ada()).send().await;
    assert_eq!(registered.unwrap().status(), StatusCode::CREATED);

    let mut flood = Vec::new();
    for _ in 0..CAP * 2 {
        flood.push(connect_from(&app, "127.0.0.5").await.unwrap());
    }
    let closed = join_all(flood.iter_mut().map(|s| closed_within(s, Duration::from_millis(500)))).await;
    let held = closed.iter().filter(|closed| !**closed).count();
    // The registration's connection may still hold its slot for a moment.
    assert!((CAP - 1..=CAP).contains(&held), "{held} of {} idle connections held, cap {CAP}", CAP * 2);

    // Full: a newcomer's connection is closed at once, and its login fails.
    let mut newcomer = connect_from(&app, "127.0.0.6").await.unwrap();
    assert!(closed_within(&mut newcomer, Duration::from_secs(2)).await, "past the cap a connection is closed at once");
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let refused = client_from("127.0.0.6").post(app.url("/api/v1/auth/login")).json(&login).send().await;
    assert!(refused.is_err(), "{refused:?}");

    // The flood goes: the newcomer's login succeeds.
    drop(flood);
    eventually(Duration::from_secs(5), "a login once the flood has gone", || async {
        let response = client_from("127.0.0.6").post(app.url("/api/v1/auth/login")).json(&login).send().await;
        response.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

on_both_backends!(
    silent_and_half_open_connections_are_closed_at_the_header_deadline,
    idle_http2_connections_are_closed_with_a_goaway,
    past_max_connections_new_connections_are_refused_and_service_resumes_when_they_close,
);
