//! `AUTHD_URL` (the gRPC endpoint, `http://127.0.0.1:8000`), `AUTHD_CLIENT_ID` and
//! `AUTHD_CLIENT_SECRET` (a service client with the `revocations` and `introspect` scopes,
//! from `authd client create`), `LISTEN_ADDR` (`127.0.0.1:8080`).

use authd_client::{Config, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let channel = tonic::transport::Channel::from_shared(var("AUTHD_URL", "http://127.0.0.1:8000"))?.connect().await?;
    let config = Config::new(&var("TOKEN_ISSUER", "authd"), &var("TOKEN_AUDIENCE", "authd"))
        .client_credentials(&std::env::var("AUTHD_CLIENT_ID")?, &std::env::var("AUTHD_CLIENT_SECRET")?);
    let verifier = Verifier::connect(channel, config).await?;
    let listener = tokio::net::TcpListener::bind(var("LISTEN_ADDR", "127.0.0.1:8080")).await?;
    axum::serve(listener, protected_service::router(&verifier)).await?;
    Ok(())
}
