//! The listener and who may call it from a browser; the log format.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{ConfigError, Env, bad};

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen_addr: SocketAddr,
    /// Origins allowed to call from a browser (grpc-web and REST); empty means none.
    pub cors_allowed_origins: Vec<String>,
    /// Peers whose word on the client's address and `x-request-id` is believed (the
    /// proxies in front of authd); empty means none.
    pub trusted_proxies: Vec<IpNet>,
    /// Which header the trusted proxies name the client in.
    pub trusted_proxy_header: ForwardedHeader,
}

/// The header a trusted proxy names the client in. Only the one the proxies write may be
/// read: they pass the other on from the client unchanged, forgeries included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, Envoy, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, its `for=` parameters.
    Forwarded,
}

impl ServerSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let listen_addr = match env.listen_addr.take() {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(s) => s
                .trim()
                .parse()
                .map_err(|e| bad("LISTEN_ADDR", format!("{e} (expected host:port, such as 127.0.0.1:8000)")))?,
        };
        let cors_allowed_origins = list(env.cors_allowed_origins.take());
        if let Some(origin) = cors_allowed_origins.iter().find(|o| http::HeaderValue::from_str(o).is_err()) {
            return Err(bad("CORS_ALLOWED_ORIGINS", format!("{origin:?} is not a valid origin")));
        }
        let trusted_proxies = list(env.trusted_proxies.take())
            .iter()
            .map(|cidr| {
                let net = cidr.parse::<IpNet>().or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from));
                net.map_err(|_| {
                    bad("TRUSTED_PROXIES", format!("{cidr:?} is neither a CIDR (such as 10.0.0.0/8) nor an address"))
                })
            })
            .collect::<Result<_, _>>()?;
        let trusted_proxy_header = match env.trusted_proxy_header.take().map(|h| h.trim().to_ascii_lowercase()) {
            None => ForwardedHeader::default(),
            Some(h) if h == "x-forwarded-for" => ForwardedHeader::XForwardedFor,
            Some(h) if h == "forwarded" => ForwardedHeader::Forwarded,
            Some(other) => {
                return Err(bad("TRUSTED_PROXY_HEADER", format!("{other:?} is neither x-forwarded-for nor forwarded")));
            }
        };
        Ok(Self { listen_addr, cors_allowed_origins, trusted_proxies, trusted_proxy_header })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        match env.log_format.take().as_deref().map(str::trim) {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(bad("LOG_FORMAT", format!("{other:?} is neither text nor json"))),
        }
    }
}

/// A comma-separated variable's items, trimmed, empty ones left out.
fn list(value: Option<String>) -> Vec<String> {
    value.unwrap_or_default().split(',').map(str::trim).filter(|o| !o.is_empty()).map(String::from).collect()
}
