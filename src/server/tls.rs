//! TLS on the one listener (rustls with ring): the certificate and key of `TLS_CERT_FILE`
//! and `TLS_KEY_FILE`, client certificates against `TLS_CLIENT_CA_FILE` (mTLS), ALPN `h2`
//! and `http/1.1`. The files are read again on SIGHUP and when they change on disk; a
//! connection keeps the configuration it was accepted with, so open ones go on undisturbed.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{Context, anyhow, bail};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    config::{ClientAuth, TlsSettings},
    core::ClientCertificate,
};

/// What a request learns of the TLS connection it came on: an extension of every request
/// served over TLS (and of none served in cleartext).
#[derive(Debug, Clone)]
pub struct TlsConnection {
    /// The client certificate verified in the handshake (mTLS), if the client sent one.
    pub client: Option<Arc<ClientCertificate>>,
}

/// The listener's TLS configuration, shared by the accept loop and the reloader.
#[derive(Clone)]
pub struct Tls(Arc<Inner>);

struct Inner {
    settings: TlsSettings,
    /// What new connections are accepted with.
    config: RwLock<Arc<ServerConfig>>,
    /// The files as last read (or tried), to notice a change.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    /// Reads the certificate, the key and the client CA, or says which variable's file is
    /// missing, unreadable or wrong.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Self> {
        let seen = stamps(settings);
        let config = server_config(settings)?;
        Ok(Self(Arc::new(Inner { settings: settings.clone(), config: RwLock::new(config), seen: Mutex::new(seen) })))
    }

    /// Reads the files again: from now on new connections get the new certificate (and
    /// client CA). On an error the configuration in use stays, and the error says why.
    pub fn reload(&self) -> anyhow::Result<()> {
        *self.0.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamps(&self.0.settings);
        let config = server_config(&self.0.settings)?;
        *self.0.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The TLS handshake on a new connection, within `limit`; then the client certificate
    /// it presented, if any.
    pub async fn accept(
        &self,
        stream: TcpStream,
        limit: Duration,
    ) -> std::io::Result<(TlsStream<TcpStream>, TlsConnection)> {
        let config = self.0.config.read().unwrap_or_else(PoisonError::into_inner).clone();
        let stream = tokio::time::timeout(limit, TlsAcceptor::from(config).accept(stream))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let client = stream.get_ref().1.peer_certificates().and_then(<[_]>::first).map(|der| Arc::new(identity(der)));
        Ok((stream, TlsConnection { client }))
    }

    /// Reloads on SIGHUP and when a file's modification time or size changes (checked
    /// every `reload_poll`), until aborted. A bad new pair keeps the old one, loudly.
    pub async fn watch(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "no SIGHUP handler: TLS files reload on change only"))
            .ok();
        loop {
            let reason = tokio::select! {
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                () = tokio::time::sleep(self.0.settings.reload_poll) => {
                    if stamps(&self.0.settings) == *self.0.seen.lock().unwrap_or_else(PoisonError::into_inner) {
                        continue;
                    }
                    "the files changed"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!(reason, "TLS certificate reloaded: new connections get it"),
                Err(e) => tracing::error!(
                    reason,
                    error = format!("{e:#}"),
                    "TLS certificate NOT reloaded: still serving the previous one"
                ),
            }
        }
    }
}

/// The files' modification times and sizes (`None` for one that cannot be read).
fn stamps(settings: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&settings.cert_file), Some(&settings.key_file), settings.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

fn server_config(settings: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(ring::default_provider());
    let chain = certificates("TLS_CERT_FILE", &settings.cert_file)?;
    let key = std::fs::read(&settings.key_file)
        .map_err(|e| anyhow!(e))
        .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem).map_err(|e| anyhow!("no private key in it ({e})")))
        .with_context(|| format!("TLS_KEY_FILE {}", settings.key_file.display()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        anyhow!(
            "TLS_KEY_FILE {} does not go with the certificate of TLS_CERT_FILE {}: {e}",
            settings.key_file.display(),
            settings.cert_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("TLS_CLIENT_CA_FILE", path)? {
                roots.add(ca).with_context(|| format!("TLS_CLIENT_CA_FILE {}: a CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier.build().with_context(|| format!("TLS_CLIENT_CA_FILE {}", path.display()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    // hyper tells HTTP/2 from HTTP/1.1 by the preface, but clients choose by ALPN: without
    // h2 here browsers fall back to HTTP/1.1 and gRPC clients may refuse the connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, at least one.
fn certificates(var: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let context = || format!("{var} {}", path.display());
    let pem = std::fs::read(path).with_context(context)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("not PEM ({e})"))
        .with_context(context)?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", context());
    }
    Ok(certs)
}

/// Who a verified client certificate names: its subject, common name and alternative names.
fn identity(der: &CertificateDer<'_>) -> ClientCertificate {
    use x509_parser::{extensions::GeneralName, prelude::FromDer};
    // rustls has verified it already, so it parses; an unnamed identity if not.
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()) else {
        return ClientCertificate { subject: String::new(), common_name: None, alt_names: Vec::new() };
    };
    let subject = cert.subject();
    let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let alt_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => Some(s.to_string()),
                    GeneralName::IPAddress(bytes) => ip_text(bytes),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    ClientCertificate { subject: subject.to_string(), common_name, alt_names }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}
