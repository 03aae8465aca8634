//! Settings from the environment (and a `.env` file, if present), read once at start-up,
//! one file per concern: the listener, the database, tokens, passwords, limits. Each
//! variable is read in [`Env`]; a bad value stops start-up with a message naming it.

mod database;
mod limits;
mod mail;
mod passwords;
mod server;
mod tls;
mod tokens;
mod webauthn;

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

pub use database::{DatabaseSettings, sqlite_url};
pub use limits::{DEFAULT_MAX_CONNECTIONS, LimitSettings, ThrottleSettings};
pub use mail::{MailSettings, credentials_in_clear};
pub use passwords::PasswordSettings;
pub use server::{ForwardedHeader, LogFormat, ServerSettings};
pub use tls::{ClientAuth, TlsSettings};
pub use tokens::{ServiceKey, TokenSettings};
pub use webauthn::WebauthnSettings;

/// A setting that could not be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn bad(var: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{var}: {why}"))
}

/// The environment as given, before interpretation. Field names are the variable names.
#[derive(Deserialize)]
struct Env {
    database_url: Option<SecretString>,
    database_listen_url: Option<SecretString>,
    db_host: Option<String>,
    db_port: Option<u16>,
    db_user: Option<String>,
    db_password: Option<SecretString>,
    db_name: Option<String>,
    secret_key: Option<SecretString>,
    token_creation_algorithm: Option<String>,
    token_expiry_limit: Option<u64>,
    token_issuer: Option<String>,
    token_audience: Option<String>,
    refresh_token_secret: Option<SecretString>,
    token_private_key_file: Option<PathBuf>,
    signing_key_reload_seconds: Option<u64>,
    session_cache_seconds: Option<u64>,
    user_cache_size: Option<usize>,
    revocations_service_keys: Option<SecretString>,
    refresh_token_lifetime_days: Option<u64>,
    refresh_token_idle_days: Option<u64>,
    refresh_reuse_grace_seconds: Option<u64>,
    max_sessions_per_user: Option<u32>,
    session_retention_hours: Option<u64>,
    key_encryption_key: Option<SecretString>,
    key_encryption_key_file: Option<PathBuf>,
    listen_addr: Option<String>,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    tls_client_ca_file: Option<String>,
    tls_client_auth: Option<String>,
    log_format: Option<String>,
    cors_allowed_origins: Option<String>,
    trusted_proxies: Option<String>,
    trusted_proxy_header: Option<String>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    argon2_parallelism: Option<u32>,
    hash_concurrency: Option<usize>,
    hash_queue_limit: Option<usize>,
    password_min_length: Option<usize>,
    password_max_length: Option<usize>,
    password_refuse_guessable: Option<String>,
    db_max_connections: Option<u32>,
    db_prepared_statements: Option<String>,
    change_feed_heartbeat_ms: Option<u64>,
    data_dir: Option<String>,
    xdg_data_home: Option<String>,
    home: Option<String>,
    migrate_on_start: Option<String>,
    throttle_window_seconds: Option<u64>,
    login_ip_limit: Option<u32>,
    register_ip_limit: Option<u32>,
    refresh_ip_limit: Option<u32>,
    login_free_failures: Option<u32>,
    login_backoff_max_seconds: Option<u64>,
    login_account_failure_limit: Option<u32>,
    login_failure_window_seconds: Option<u64>,
    login_account_failure_decay_seconds: Option<u64>,
    unauthenticated_ip_limit: Option<u32>,
    request_timeout_seconds: Option<u64>,
    header_read_timeout_seconds: Option<u64>,
    connection_idle_timeout_seconds: Option<u64>,
    max_connections: Option<u32>,
    max_connections_per_client: Option<u32>,
    max_connection_age_seconds: Option<u64>,
    health_check_interval_ms: Option<u64>,
    smtp_url: Option<SecretString>,
    mail_from: Option<String>,
    public_url: Option<String>,
    require_email_verification: Option<String>,
    password_reset_token_minutes: Option<u64>,
    email_verification_token_hours: Option<u64>,
    mail_template_dir: Option<String>,
    mail_retry_max_seconds: Option<u64>,
    mail_max_attempts: Option<u32>,
    mail_per_address_hourly: Option<u32>,
    audit_retention_days: Option<u64>,
    open_introspection: Option<String>,
    service_token_lifetime_seconds: Option<u64>,
    client_secret_grace_seconds: Option<u64>,
    webauthn_rp_id: Option<String>,
    webauthn_origin: Option<String>,
    webauthn_rp_name: Option<String>,
    passkey_login: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    /// `None`: cleartext (HTTP/1.1 and h2c).
    pub tls: Option<TlsSettings>,
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    pub tokens: TokenSettings,
    pub passwords: PasswordSettings,
    pub throttle: ThrottleSettings,
    pub limits: LimitSettings,
    pub mail: MailSettings,
    /// Passkeys; `None` when not configured (then every passkey call says so).
    pub webauthn: Option<WebauthnSettings>,
}

impl Settings {
    /// Reads `.env` (if present) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(ConfigError(format!(".env: {e}")));
        }
        let env: Env = envy::from_env().map_err(|e| ConfigError(e.to_string()))?;
        Self::from_parts(env)
    }

    fn from_parts(mut env: Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerSettings::from_env(&mut env)?,
            tls: TlsSettings::from_env(&mut env)?,
            log_format: LogFormat::from_env(&mut env)?,
            tokens: TokenSettings::from_env(&mut env)?,
            passwords: PasswordSettings::from_env(&mut env)?,
            // Before the mail's, which takes PUBLIC_URL.
            webauthn: WebauthnSettings::from_env(&mut env)?,
            // Before the database's, which takes the data directory's variables.
            mail: MailSettings::from_env(&mut env)?,
            database: DatabaseSettings::from_env(&mut env)?,
            throttle: ThrottleSettings::from_env(&mut env)?,
            limits: LimitSettings::from_env(&mut env)?,
        })
    }

    /// Settings for a server on `database_url` with every other value at its default;
    /// what the tests and embedders start from.
    pub fn with_database(database_url: &str) -> Self {
        let vars = [("DATABASE_URL".to_owned(), database_url.to_owned())];
        #[allow(clippy::expect_used)] // the defaults are valid, as the tests show
        envy::from_iter(vars)
            .map_err(|e| ConfigError(e.to_string()))
            .and_then(Self::from_parts)
            .expect("default settings are valid")
    }
}

/// A boolean variable: `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`.
fn flag(var: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(bad(var, format!("{v:?} is neither true nor false"))),
        },
    }
}

/// A duration in whole seconds that must not be zero.
fn seconds(var: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(bad(var, "must be at least 1 second")),
        s => Ok(Duration::from_secs(s)),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;
    use secrecy::ExposeSecret;

    use super::*;

    /// Settings from exactly these variables, as `from_env` would read them.
    pub(super) fn env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_parts(envy::from_iter(vars).map_err(|e| ConfigError(e.to_string()))?)
    }

    #[test]
    fn defaults_need_nothing_configured() {
        let s = env(&[("HOME", "/home/ada")]).unwrap();
        assert_eq!(s.database.url.expose_secret(), "sqlite:///home/ada/.local/share/authd/authd.db");
        assert!(s.database.migrate_on_start);
        assert_eq!(s.server.listen_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.tokens.algorithm, Algorithm::HS256);
        assert_eq!(s.tokens.access_lifetime, Duration::from_secs(15 * 60));
        assert_eq!(s.passwords.memory_kib, 19456);
        assert!(s.server.cors_allowed_origins.is_empty());
        assert!(s.mail.smtp_url.is_none() && !s.mail.require_verification);
        assert_eq!(s.mail.reset_token_lifetime, Duration::from_secs(3600));
        assert_eq!(s.mail.fallback_dir.unwrap().to_str(), Some("/home/ada/.local/share/authd/mail"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("TOKEN_EXPIRY_LIMIT", "soon"),
            ("TOKEN_EXPIRY_LIMIT", "0"),
            ("TOKEN_CREATION_ALGORITHM", "none"),
            ("LISTEN_ADDR", "localhost"),
            ("LOG_FORMAT", "xml"),
            ("SECRET_KEY", "short"),
            ("ARGON2_MEMORY_KIB", "1024"),
            ("DB_PORT", "postgres"),
            ("MIGRATE_ON_START", "maybe"),
            ("DATA_DIR", "relative/dir"),
            ("DB_MAX_CONNECTIONS", "many"),
            ("DB_PREPARED_STATEMENTS", "sometimes"),
            ("CHANGE_FEED_HEARTBEAT_MS", "often"),
            ("DATABASE_LISTEN_URL", "mysql://db/authd"),
            ("LOGIN_IP_LIMIT", "-1"),
            ("THROTTLE_WINDOW_SECONDS", "0"),
            ("LOGIN_ACCOUNT_FAILURE_DECAY_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("KEY_ENCRYPTION_KEY", "c2hvcnQ="),
            ("KEY_ENCRYPTION_KEY", "not base64!"),
            ("KEY_ENCRYPTION_KEY_FILE", "/nonexistent/kek"),
            ("MAX_SESSIONS_PER_USER", "0"),
            ("SESSION_RETENTION_HOURS", "0"),
            ("USER_CACHE_SIZE", "lots"),
            ("CLIENT_SECRET_GRACE_SECONDS", "2592001"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("AUDIT_RETENTION_DAYS", "36501"),
            ("REVOCATIONS_SERVICE_KEYS", "billing:short"),
            ("REVOCATIONS_SERVICE_KEYS", "no pair here"),
            ("TLS_CERT_FILE", "/etc/authd/cert.pem"),
            ("TLS_KEY_FILE", "/etc/authd/key.pem"),
            ("TLS_CLIENT_CA_FILE", "/etc/authd/ca.pem"),
            ("TLS_CLIENT_AUTH", "sometimes"),
            ("TLS_CLIENT_AUTH", "required"),
            ("TLS_CLIENT_CA_FILE", " "),
            ("SMTP_URL", "http://mail.example"),
            ("SMTP_URL", "not a url"),
            ("MAIL_FROM", "not a mailbox"),
            ("PUBLIC_URL", "example.com/app"),
            ("REQUIRE_EMAIL_VERIFICATION", "sometimes"),
            ("PASSWORD_RESET_TOKEN_MINUTES", "0"),
            ("EMAIL_VERIFICATION_TOKEN_HOURS", "never"),
            ("MAIL_TEMPLATE_DIR", "/nonexistent/templates"),
            ("MAIL_RETRY_MAX_SECONDS", "0"),
            ("MAIL_MAX_ATTEMPTS", "0"),
            ("MAIL_PER_ADDRESS_HOURLY", "-1"),
            ("TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "lots"),
            ("MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("MAX_CONNECTION_AGE_SECONDS", "0"),
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("CONNECTION_IDLE_TIMEOUT_SECONDS", "0"),
            ("CONNECTION_IDLE_TIMEOUT_SECONDS", "-5"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("AUDIT_RETENTION_DAYS", "forever"),
            ("OPEN_INTROSPECTION", "sometimes"),
            ("SERVICE_TOKEN_LIFETIME_SECONDS", "0"),
            ("SERVICE_TOKEN_LIFETIME_SECONDS", "86400"),
            ("CLIENT_SECRET_GRACE_SECONDS", "-1"),
        ] {
            let err = env(&[(var, value), ("HOME", "/home/ada")]).unwrap_err().to_string();
            assert!(err.contains(var) || err.contains(&var.replace("_KIB", "")), "{var}={value}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let s = env(&[("HOME", "/h"), ("TRUSTED_PROXIES", " 10.0.0.0/8, ::1 ,,192.168.1.7")]).unwrap();
        let nets = s.server.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.168.1.7/32"]);
        assert!(env(&[("HOME", "/h")]).unwrap().server.trusted_proxies.is_empty());
    }

    #[test]
    fn tls_needs_both_files_and_client_auth_needs_a_ca() {
        assert!(env(&[("HOME", "/h")]).unwrap().tls.is_none());
        let pair = [("HOME", "/h"), ("TLS_CERT_FILE", "/c.pem"), ("TLS_KEY_FILE", "/k.pem")];
        let tls = env(&pair).unwrap().tls.unwrap();
        assert_eq!((tls.cert_file.to_str(), tls.key_file.to_str()), (Some("/c.pem"), Some("/k.pem")));
        assert_eq!((tls.client_ca_file, tls.client_auth), (None, ClientAuth::Required));
        let tls =
            env(&[pair.as_slice(), &[("TLS_CLIENT_CA_FILE", "/ca.pem"), ("TLS_CLIENT_AUTH", "optional")]].concat())
                .unwrap()
                .tls
                .unwrap();
        assert_eq!(tls.client_auth, ClientAuth::Optional);
        // Client certificates asked for without a CA to check them: refused, never off (fail open).
        for auth in ["optional", "required", " required ", ""] {
            let err = env(&[pair.as_slice(), &[("TLS_CLIENT_AUTH", auth)]].concat()).unwrap_err().to_string();
            assert!(err.contains("TLS_CLIENT_AUTH") && err.contains("TLS_CLIENT_CA_FILE"), "{auth:?}: {err}");
        }
        for ca in ["", "  "] {
            let vars = [pair.as_slice(), &[("TLS_CLIENT_AUTH", "required"), ("TLS_CLIENT_CA_FILE", ca)]].concat();
            assert!(env(&vars).unwrap_err().to_string().contains("TLS_CLIENT_CA_FILE"), "{ca:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let kek = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let s = env(&[
            ("SECRET_KEY", "a-very-secret-key-123"),
            ("DATABASE_URL", "postgres://u:hunter2@h/d"),
            ("KEY_ENCRYPTION_KEY", kek),
            ("SMTP_URL", "smtps://mailer:hunter3@smtp.example:465"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("a-very-secret-key-123"), "{debug}");
        assert!(!debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
        assert!(!debug.contains("0123456789abcdef") && !debug.contains(kek), "{debug}");
        assert_eq!(s.tokens.key_encryption_key.unwrap().expose_secret(), b"0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn the_key_encryption_key_comes_from_the_variable_or_a_file_but_not_both() {
        let path = std::env::temp_dir().join(format!("authd-kek-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
        let file = path.to_str().unwrap();
        let s = env(&[("HOME", "/h"), ("KEY_ENCRYPTION_KEY_FILE", file)]).unwrap();
        assert_eq!(s.tokens.key_encryption_key.unwrap().expose_secret(), b"0123456789abcdef0123456789abcdef");
        let both = env(&[("HOME", "/h"), ("KEY_ENCRYPTION_KEY_FILE", file), ("KEY_ENCRYPTION_KEY", "eA==")]);
        assert!(both.unwrap_err().to_string().contains("KEY_ENCRYPTION_KEY"));
        std::fs::remove_file(&path).unwrap();
        assert!(env(&[("HOME", "/h")]).unwrap().tokens.key_encryption_key.is_none());
    }
}
