//! Mail: the SMTP transport, the sender, the links in mail, and the rules of the flows that
//! send it (verification, password reset, email change).

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{ConfigError, Env, bad, flag, seconds};

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// lettre's URL form (`smtp://`, `smtp://...?tls=required`, `smtps://`, credentials in
    /// the user info); `None`: mail goes to the log and to files in `fallback_dir`.
    pub smtp_url: Option<SecretString>,
    /// The `From` of every mail.
    pub from: String,
    /// The base of the links in mail (the pages that take a token from `?token=`).
    pub public_url: String,
    /// Refuse login until the address is verified; registration then answers alike for
    /// taken and new addresses.
    pub require_verification: bool,
    pub reset_token_lifetime: Duration,
    /// Verification links and codes, and email-change confirmations.
    pub verification_token_lifetime: Duration,
    /// A directory of `<template>.txt` / `<template>.html` files overriding the built-in ones.
    pub template_dir: Option<PathBuf>,
    /// The longest wait between two attempts at one mail.
    pub retry_max: Duration,
    /// Attempts at one mail before it is given up.
    pub max_attempts: u32,
    /// Mail asked for one address (resend, reset) per hour; 0 turns the limit off.
    pub per_address_hourly: u32,
    /// Where mail goes when no SMTP server is configured (`<data dir>/mail`), if anywhere.
    pub fallback_dir: Option<PathBuf>,
}

impl MailSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let smtp_url = env.smtp_url.take().filter(|u| !u.expose_secret().trim().is_empty());
        if let Some(url) = &smtp_url {
            check_smtp_url(url.expose_secret())?;
        }
        let from = env.mail_from.take().unwrap_or_else(|| "authd <authd@localhost>".into());
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(bad("MAIL_FROM", format!("{from:?} is not a mailbox such as `authd <no-reply@example.com>`")));
        }
        let public_url = env.public_url.take().unwrap_or_else(|| "http://127.0.0.1:8000".into());
        match Url::parse(public_url.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => return Err(bad("PUBLIC_URL", format!("{public_url:?} is not an http(s) URL"))),
        }
        let template_dir = env.mail_template_dir.take().map(PathBuf::from);
        if let Some(dir) = &template_dir
            && !dir.is_dir()
        {
            return Err(bad("MAIL_TEMPLATE_DIR", format!("{} is not a directory", dir.display())));
        }
        let fallback_dir = super::database::data_dir(env.data_dir.clone(), env.xdg_data_home.clone(), env.home.clone())
            .ok()
            .map(|dir| dir.join("mail"));
        Ok(Self {
            smtp_url,
            from,
            public_url: public_url.trim().trim_end_matches('/').to_owned(),
            require_verification: flag("REQUIRE_EMAIL_VERIFICATION", env.require_email_verification.as_deref(), false)?,
            reset_token_lifetime: Duration::from_secs(
                60 * seconds("PASSWORD_RESET_TOKEN_MINUTES", env.password_reset_token_minutes, 60)?.as_secs(),
            ),
            verification_token_lifetime: Duration::from_secs(
                3600 * seconds("EMAIL_VERIFICATION_TOKEN_HOURS", env.email_verification_token_hours, 48)?.as_secs(),
            ),
            template_dir,
            retry_max: seconds("MAIL_RETRY_MAX_SECONDS", env.mail_retry_max_seconds, 300)?,
            max_attempts: match env.mail_max_attempts.unwrap_or(100) {
                0 => return Err(bad("MAIL_MAX_ATTEMPTS", "must be at least 1")),
                n => n,
            },
            per_address_hourly: env.mail_per_address_hourly.unwrap_or(5),
            fallback_dir,
        })
    }
}

/// Why `url` would send its credentials where they can be read or stripped of TLS (plain
/// `smtp://`, or `tls=opportunistic`, which an on-path attacker can downgrade), if it
/// carries any and its host is not a loopback address; `None` when it is safe enough.
pub fn credentials_in_clear(url: &str) -> Option<&'static str> {
    let parsed = Url::parse(url.trim()).ok()?;
    if parsed.username().is_empty() && parsed.password().is_none() {
        return None;
    }
    let loopback = match parsed.host()? {
        // An smtp:// host is opaque to the URL parser: an IPv4 address comes as a name.
        url::Host::Domain(name) => {
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    if loopback || parsed.scheme() == "smtps" {
        return None;
    }
    match parsed.query_pairs().find(|(key, _)| key == "tls").map(|(_, value)| value.into_owned()).as_deref() {
        Some("required") => None,
        Some("opportunistic") => Some("tls=opportunistic lets an on-path attacker strip STARTTLS"),
        _ => Some("smtp:// without tls=required sends them unencrypted"),
    }
}

/// The schemes lettre reads, and nothing it would misread.
fn check_smtp_url(url: &str) -> Result<(), ConfigError> {
    let parsed = Url::parse(url.trim()).map_err(|e| bad("SMTP_URL", format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") || !parsed.has_host() {
        return Err(bad(
            "SMTP_URL",
            format!("expected smtp://host:port or smtps://host:port, got scheme {:?}", parsed.scheme()),
        ));
    }
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url.trim())
        .map(|_| ())
        .map_err(|e| bad("SMTP_URL", e))
}

#[cfg(test)]
mod tests {
    use super::credentials_in_clear;

    #[test]
    fn credentials_without_tls_are_named_unless_the_host_is_loopback() {
        assert!(credentials_in_clear("smtp://user:pass@mail.example:25").is_some());
        assert!(credentials_in_clear("smtp://user:pass@mail.example:587?tls=opportunistic").is_some());
        assert!(credentials_in_clear("smtp://user@mail.example").is_some());
        assert_eq!(credentials_in_clear("smtp://user:pass@mail.example:587?tls=required"), None);
        assert_eq!(credentials_in_clear("smtps://user:pass@mail.example"), None);
        assert_eq!(credentials_in_clear("smtp://mail.example:25"), None, "no credentials");
        assert_eq!(credentials_in_clear("smtp://user:pass@127.0.0.1:25"), None);
        assert_eq!(credentials_in_clear("smtp://user:pass@[::1]:25"), None);
        assert_eq!(credentials_in_clear("smtp://user:pass@localhost:25"), None);
    }
}
