//! TLS on the listener, and client certificates (mTLS). Only the variables are read here;
//! the files are read (and refused, naming their variable) when the listener starts, and
//! again at each reload (`server::tls`).

use std::{path::PathBuf, time::Duration};

use super::{ConfigError, Env, bad};

/// How often the certificate files are checked for a change, by default.
const RELOAD_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// `TLS_CERT_FILE`: PEM, the server's certificate first, then its chain.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: PEM, the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `TLS_CLIENT_CA_FILE`: PEM, the CA(s) client certificates must chain to; `None`: no
    /// client certificates are asked for.
    pub client_ca_file: Option<PathBuf>,
    /// `TLS_CLIENT_AUTH`: whether a client must present a certificate (with a client CA).
    pub client_auth: ClientAuth,
    /// How often the files are checked for a change (besides SIGHUP). Not a variable:
    /// tests shorten it.
    pub reload_poll: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate from `TLS_CLIENT_CA_FILE` fails the handshake.
    Required,
    /// A client may present no certificate; one that presents a certificate must present
    /// a good one.
    Optional,
}

impl TlsSettings {
    /// `None` when neither `TLS_CERT_FILE` nor `TLS_KEY_FILE` is set (cleartext).
    pub(super) fn from_env(env: &mut Env) -> Result<Option<Self>, ConfigError> {
        let path =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cert_file = path(env.tls_cert_file.take());
        let key_file = path(env.tls_key_file.take());
        let client_ca_file = path(env.tls_client_ca_file.take());
        let client_auth = match env.tls_client_auth.take().as_deref().map(str::trim) {
            None | Some("" | "required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(other) => return Err(bad("TLS_CLIENT_AUTH", format!("{other:?} is neither required nor optional"))),
        };
        let (cert_file, key_file) = match (cert_file, key_file) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if client_ca_file.is_some() {
                    return Err(bad("TLS_CLIENT_CA_FILE", "needs TLS_CERT_FILE and TLS_KEY_FILE (mTLS is TLS)"));
                }
                return Ok(None);
            }
            (Some(_), None) => return Err(bad("TLS_KEY_FILE", "must be set with TLS_CERT_FILE")),
            (None, Some(_)) => return Err(bad("TLS_CERT_FILE", "must be set with TLS_KEY_FILE")),
        };
        if client_ca_file.is_none() && client_auth == ClientAuth::Optional {
            return Err(bad("TLS_CLIENT_AUTH", "optional needs TLS_CLIENT_CA_FILE, the CA of client certificates"));
        }
        Ok(Some(Self { cert_file, key_file, client_ca_file, client_auth, reload_poll: RELOAD_POLL }))
    }
}
