//! Passkeys (WebAuthn): the relying party a browser binds each passkey to, and whether a
//! passkey alone may log in.

use url::Url;

use super::{ConfigError, Env, bad, flag};

/// The relying party of every WebAuthn ceremony. Passkeys are bound to `rp_id` by the
/// authenticators that hold them: changing it later orphans every passkey registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    /// `WEBAUTHN_RP_ID`: a domain, the origin's host or a parent of it.
    pub rp_id: String,
    /// `WEBAUTHN_ORIGIN`: the origin of the pages that run the ceremonies (scheme, host,
    /// port: nothing else), exactly as browsers report it.
    pub origin: Url,
    /// `WEBAUTHN_RP_NAME`: the name authenticators may show.
    pub rp_name: String,
    /// `PASSKEY_LOGIN`: a passkey alone (a discoverable credential) may log in.
    pub passkey_login: bool,
}

/// The name authenticators show when `WEBAUTHN_RP_NAME` is unset.
pub const DEFAULT_RP_NAME: &str = "authd";

impl WebauthnSettings {
    /// The relying party of `origin` (an origin: `https://host[:port]`), with `rp_id` (the
    /// origin's host when `None`), under the default name, passkey login off.
    pub fn new(rp_id: Option<&str>, origin: &str) -> Result<Self, ConfigError> {
        let origin = parse_origin("WEBAUTHN_ORIGIN", origin)?;
        let rp_id = check_rp_id(rp_id, &origin)?;
        Ok(Self { rp_id, origin, rp_name: DEFAULT_RP_NAME.into(), passkey_login: false })
    }

    /// `None` when passkeys are not configured: neither `WEBAUTHN_ORIGIN` nor a
    /// `PUBLIC_URL` that browsers would run WebAuthn on (an https URL, or http on
    /// localhost, with a domain name). Reads `PUBLIC_URL` without taking it: the mail's
    /// settings read it too.
    pub(super) fn from_env(env: &mut Env) -> Result<Option<Self>, ConfigError> {
        let rp_id = env.webauthn_rp_id.take().filter(|v| !v.trim().is_empty());
        let origin = env.webauthn_origin.take().filter(|v| !v.trim().is_empty());
        let rp_name = env.webauthn_rp_name.take().map(|name| name.trim().to_owned());
        let passkey_login = flag("PASSKEY_LOGIN", env.passkey_login.as_deref(), false)?;
        let settings = match origin {
            Some(origin) => Some(Self::new(rp_id.as_deref(), &origin)?),
            // PUBLIC_URL is also the base of the links in mail, where an IP address or a
            // plain-http host is fine: then passkeys are just not configured.
            None => match env.public_url.as_deref().and_then(|url| Url::parse(url.trim()).ok()) {
                Some(url) if webauthn_capable(&url) => {
                    let origin = Url::parse(&url.origin().ascii_serialization())
                        .map_err(|e| bad("PUBLIC_URL", format!("has no origin ({e})")))?;
                    let rp_id = check_rp_id(rp_id.as_deref(), &origin)?;
                    Some(Self { rp_id, origin, rp_name: DEFAULT_RP_NAME.into(), passkey_login: false })
                }
                _ if rp_id.is_some() => {
                    return Err(bad(
                        "WEBAUTHN_RP_ID",
                        "needs WEBAUTHN_ORIGIN (or a PUBLIC_URL with a domain name, https or http://localhost)",
                    ));
                }
                _ => None,
            },
        };
        let Some(mut settings) = settings else {
            if passkey_login {
                return Err(bad("PASSKEY_LOGIN", "needs passkeys configured: set WEBAUTHN_ORIGIN (or PUBLIC_URL)"));
            }
            return Ok(None);
        };
        if let Some(name) = rp_name {
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err(bad("WEBAUTHN_RP_NAME", "must be 1 to 64 printable characters"));
            }
            settings.rp_name = name;
        }
        settings.passkey_login = passkey_login;
        Ok(Some(settings))
    }
}

/// Whether browsers run WebAuthn for pages of `url`: a domain name (never an IP address),
/// over https, or http on localhost (a secure context).
fn webauthn_capable(url: &Url) -> bool {
    match url.domain() {
        Some(host) => url.scheme() == "https" || (url.scheme() == "http" && is_localhost(host)),
        None => false,
    }
}

fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// An origin, as `var` gives it: `https://host[:port]` (or `http://localhost[:port]`),
/// with no path, query or fragment.
fn parse_origin(var: &str, value: &str) -> Result<Url, ConfigError> {
    let example = "such as https://login.example.com (or http://localhost:8080)";
    let url = Url::parse(value.trim()).map_err(|e| bad(var, format!("{value:?} is not a URL ({e}), {example}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(var, format!("{value:?} is not an http(s) origin, {example}")));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad(var, format!("{value:?} is not an origin (scheme, host and port only), {example}")));
    }
    let Some(host) = url.domain() else {
        return Err(bad(var, format!("{value:?} has no domain name: browsers refuse WebAuthn on an IP address")));
    };
    if url.scheme() == "http" && !is_localhost(host) {
        return Err(bad(var, format!("{value:?}: browsers allow WebAuthn over http on localhost only; use https")));
    }
    Ok(url)
}

/// The relying-party id: `rp_id` (lowercased) or the origin's host, which must be it or a
/// subdomain of it.
fn check_rp_id(rp_id: Option<&str>, origin: &Url) -> Result<String, ConfigError> {
    let host = origin.domain().unwrap_or_default();
    let Some(rp_id) = rp_id.map(|id| id.trim().trim_end_matches('.').to_ascii_lowercase()) else {
        return Ok(host.to_owned());
    };
    let is_domain = !rp_id.is_empty()
        && rp_id.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !label.starts_with('-')
        })
        && rp_id.parse::<std::net::IpAddr>().is_err();
    if !is_domain {
        return Err(bad("WEBAUTHN_RP_ID", format!("{rp_id:?} is not a domain name (such as example.com)")));
    }
    if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
        return Err(bad(
            "WEBAUTHN_RP_ID",
            format!("{rp_id:?} must be the origin's host {host:?} or a parent domain of it"),
        ));
    }
    Ok(rp_id)
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;

    #[test]
    fn passkeys_are_off_unless_an_origin_is_known() {
        for vars in [&[("HOME", "/h")][..], &[("HOME", "/h"), ("PUBLIC_URL", "http://10.0.0.5:8000")]] {
            assert!(env(vars).unwrap().webauthn.is_none(), "{vars:?}");
        }
        let s = env(&[("HOME", "/h"), ("PUBLIC_URL", "https://id.example.com/app/")]).unwrap().webauthn.unwrap();
        assert_eq!((s.rp_id.as_str(), s.origin.as_str()), ("id.example.com", "https://id.example.com/"));
        assert_eq!((s.rp_name.as_str(), s.passkey_login), ("authd", false));
        let s = env(&[
            ("HOME", "/h"),
            ("PUBLIC_URL", "http://127.0.0.1:8000"),
            ("WEBAUTHN_ORIGIN", "https://login.example.com:8443"),
            ("WEBAUTHN_RP_ID", "Example.COM"),
            ("WEBAUTHN_RP_NAME", " Example "),
            ("PASSKEY_LOGIN", "on"),
        ])
        .unwrap()
        .webauthn
        .unwrap();
        assert_eq!((s.rp_id.as_str(), s.origin.as_str()), ("example.com", "https://login.example.com:8443/"));
        assert_eq!((s.rp_name.as_str(), s.passkey_login), ("Example", true));
        let s = env(&[("HOME", "/h"), ("WEBAUTHN_ORIGIN", "http://localhost:5173")]).unwrap().webauthn.unwrap();
        assert_eq!(s.rp_id, "localhost");
    }

    #[test]
    fn bad_passkey_settings_name_their_variable() {
        for (vars, var) in [
            (&[("WEBAUTHN_ORIGIN", "login.example.com")][..], "WEBAUTHN_ORIGIN"),
            (&[("WEBAUTHN_ORIGIN", "ftp://login.example.com")], "WEBAUTHN_ORIGIN"),
            (&[("WEBAUTHN_ORIGIN", "https://login.example.com/app")], "WEBAUTHN_ORIGIN"),
            (&[("WEBAUTHN_ORIGIN", "http://login.example.com")], "WEBAUTHN_ORIGIN"),
            (&[("WEBAUTHN_ORIGIN", "https://192.0.2.1")], "WEBAUTHN_ORIGIN"),
            (&[("WEBAUTHN_ORIGIN", "https://login.example.com"), ("WEBAUTHN_RP_ID", "other.com")], "WEBAUTHN_RP_ID"),
            (&[("WEBAUTHN_ORIGIN", "https://login.example.com"), ("WEBAUTHN_RP_ID", "ample.com")], "WEBAUTHN_RP_ID"),
            (
                &[("WEBAUTHN_ORIGIN", "https://login.example.com"), ("WEBAUTHN_RP_ID", "https://example.com")],
                "WEBAUTHN_RP_ID",
            ),
            (&[("WEBAUTHN_ORIGIN", "https://login.example.com"), ("WEBAUTHN_RP_NAME", " ")], "WEBAUTHN_RP_NAME"),
            (&[("WEBAUTHN_RP_ID", "example.com")], "WEBAUTHN_RP_ID"),
            (&[("PUBLIC_URL", "https://id.example.com"), ("WEBAUTHN_RP_ID", "other.com")], "WEBAUTHN_RP_ID"),
            (&[("PASSKEY_LOGIN", "true")], "PASSKEY_LOGIN"),
            (&[("PASSKEY_LOGIN", "true"), ("PUBLIC_URL", "http://10.0.0.5")], "PASSKEY_LOGIN"),
            (&[("WEBAUTHN_ORIGIN", "https://login.example.com"), ("PASSKEY_LOGIN", "sometimes")], "PASSKEY_LOGIN"),
        ] {
            let err = env(&[vars, &[("HOME", "/h")]].concat()).unwrap_err().to_string();
            assert!(err.contains(var), "{vars:?}: {err}");
        }
    }
}
