//! Settings from the environment (and a `.env` file, if present), read once at start-up.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    refresh_token_lifetime_days: Option<u64>,
    refresh_token_idle_days: Option<u64>,
    refresh_reuse_grace_seconds: Option<u64>,
    listen_addr: Option<String>,
    log_format: Option<String>,
    cors_allowed_origins: Option<String>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    argon2_parallelism: Option<u32>,
    hash_concurrency: Option<usize>,
    hash_queue_limit: Option<usize>,
    password_min_length: Option<usize>,
    password_max_length: Option<usize>,
    db_max_connections: Option<u32>,
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
    request_timeout_seconds: Option<u64>,
    health_check_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    pub tokens: TokenSettings,
    pub passwords: PasswordSettings,
    /// Origins allowed to call from a browser (grpc-web and REST); empty means none.
    pub cors_allowed_origins: Vec<String>,
    pub throttle: ThrottleSettings,
    pub limits: LimitSettings,
}

/// Rate limits against brute force (see the README's "Abuse resistance").
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// The window of the per-IP limits.
    pub window: Duration,
    /// Login, register and refresh calls allowed per client IP and window; 0 turns the limit off.
    pub login_per_ip: u32,
    pub register_per_ip: u32,
    pub refresh_per_ip: u32,
    /// Failed logins allowed for one (account, IP) in `failure_window`; from then on each
    /// try waits 1 s after the last failure, doubling with every further failure up to
    /// `backoff_max`. A successful login clears them.
    pub free_failures: u32,
    pub backoff_max: Duration,
    /// Failed logins for one account, from all IPs, in `failure_window`, past which only
    /// IPs without a failure for that account may still try.
    pub account_failure_limit: u32,
    pub failure_window: Duration,
}

/// Bounds on requests and background checks.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Every request gets this long; then REST answers 503 and gRPC DEADLINE_EXCEEDED.
    pub request_timeout: Duration,
    /// How often the database is checked for gRPC health and `/readyz` reporting.
    pub health_check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://...` or `sqlite://<path>`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Whether a plain start applies pending migrations (`MIGRATE_ON_START`); when off,
    /// start-up refuses a database whose schema is behind (run `authd migrate`).
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub algorithm: Algorithm,
    /// HMAC key for access tokens; generated and kept in the database when `None`.
    pub secret_key: Option<SecretString>,
    /// HMAC key for refresh tokens; generated and kept in the database when `None`.
    pub refresh_secret: Option<SecretString>,
    /// PEM private key for RS256, ES256 or EdDSA; generated and kept in the database
    /// when `None`.
    pub private_key_file: Option<PathBuf>,
    /// How often each replica re-reads the signing keys, to follow a rotation.
    pub key_reload_interval: Duration,
    /// How long a session confirmed live is trusted without asking the database again
    /// (changes announced by any replica drop it sooner); zero turns the cache off.
    pub session_cache_ttl: Duration,
    pub access_lifetime: Duration,
    pub refresh_lifetime: Duration,
    pub refresh_idle_timeout: Duration,
    pub refresh_reuse_grace: Duration,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_length: usize,
    pub max_length: usize,
    /// Hashes computed at once; further requests wait.
    pub concurrency: usize,
    /// Requests allowed to wait for a hashing slot; more are refused at once.
    pub queue_limit: usize,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            min_length: 8,
            max_length: 128,
            concurrency: cores,
            queue_limit: 64 * cores,
        }
    }
}

/// The embedded database's file name, inside the data directory.
const DEFAULT_DATABASE_FILE: &str = "authd.db";
const DAY: u64 = 24 * 60 * 60;

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

    fn from_parts(env: Env) -> Result<Self, ConfigError> {
        let listen_addr = match env.listen_addr {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(s) => s
                .trim()
                .parse()
                .map_err(|e| bad("LISTEN_ADDR", format!("{e} (expected host:port, such as 127.0.0.1:8000)")))?,
        };
        let log_format = match env.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(bad("LOG_FORMAT", format!("{other:?} is neither text nor json"))),
        };
        let algorithm = match env.token_creation_algorithm.as_deref().map(str::trim) {
            None => Algorithm::HS256,
            Some("HS256") => Algorithm::HS256,
            Some("HS384") => Algorithm::HS384,
            Some("HS512") => Algorithm::HS512,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(other) => {
                return Err(bad(
                    "TOKEN_CREATION_ALGORITHM",
                    format!("{other:?} is not supported (use HS256, HS384, HS512, RS256, ES256 or EdDSA)"),
                ));
            }
        };
        let symmetric = matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if symmetric && env.token_private_key_file.is_some() {
            return Err(bad("TOKEN_PRIVATE_KEY_FILE", "applies to RS256, ES256 and EdDSA, not to HMAC algorithms"));
        }
        let minutes = env.token_expiry_limit.unwrap_or(15);
        if !(1..=24 * 60).contains(&minutes) {
            return Err(bad("TOKEN_EXPIRY_LIMIT", "must be 1 to 1440 minutes"));
        }
        for (var, secret) in [("SECRET_KEY", &env.secret_key), ("REFRESH_TOKEN_SECRET", &env.refresh_token_secret)] {
            if secret.as_ref().is_some_and(|s| s.expose_secret().len() < 16) {
                return Err(bad(var, "must be at least 16 bytes"));
            }
        }
        let days = |var, value: Option<u64>, default| match value.unwrap_or(default) {
            0 => Err(bad(var, "must be at least 1 day")),
            d => Ok(Duration::from_secs(d * DAY)),
        };
        let tokens = TokenSettings {
            algorithm,
            secret_key: env.secret_key,
            refresh_secret: env.refresh_token_secret,
            private_key_file: env.token_private_key_file,
            key_reload_interval: Duration::from_secs(env.signing_key_reload_seconds.unwrap_or(60).max(1)),
            session_cache_ttl: Duration::from_secs(env.session_cache_seconds.unwrap_or(5)),
            access_lifetime: Duration::from_secs(minutes * 60),
            refresh_lifetime: days("REFRESH_TOKEN_LIFETIME_DAYS", env.refresh_token_lifetime_days, 30)?,
            refresh_idle_timeout: days("REFRESH_TOKEN_IDLE_DAYS", env.refresh_token_idle_days, 7)?,
            refresh_reuse_grace: Duration::from_secs(env.refresh_reuse_grace_seconds.unwrap_or(10)),
            issuer: env.token_issuer.unwrap_or_else(|| "authd".into()),
            audience: env.token_audience.unwrap_or_else(|| "authd".into()),
        };

        let defaults = PasswordSettings::default();
        let passwords = PasswordSettings {
            memory_kib: env.argon2_memory_kib.unwrap_or(defaults.memory_kib),
            iterations: env.argon2_iterations.unwrap_or(defaults.iterations),
            parallelism: env.argon2_parallelism.unwrap_or(defaults.parallelism),
            min_length: env.password_min_length.unwrap_or(defaults.min_length),
            max_length: env.password_max_length.unwrap_or(defaults.max_length),
            concurrency: env.hash_concurrency.unwrap_or(defaults.concurrency),
            queue_limit: env.hash_queue_limit.unwrap_or(defaults.queue_limit),
        };
        if passwords.memory_kib < 19 * 1024 || passwords.iterations < 2 {
            return Err(bad(
                "ARGON2_MEMORY_KIB/ARGON2_ITERATIONS",
                "below the OWASP minimum (19456 KiB, 2 iterations)",
            ));
        }
        if passwords.parallelism == 0 {
            return Err(bad("ARGON2_PARALLELISM", "must be at least 1"));
        }
        if passwords.min_length == 0 || passwords.min_length > passwords.max_length {
            return Err(bad("PASSWORD_MIN_LENGTH", "must be at least 1 and at most PASSWORD_MAX_LENGTH"));
        }
        if passwords.max_length > 1024 {
            return Err(bad("PASSWORD_MAX_LENGTH", "must be at most 1024"));
        }
        if passwords.concurrency == 0 {
            return Err(bad("HASH_CONCURRENCY", "must be at least 1"));
        }

        let url = match (env.database_url, env.db_host) {
            (Some(url), _) => url,
            (None, Some(host)) => SecretString::from(postgres_url(
                &host,
                env.db_port.unwrap_or(5432),
                env.db_user.as_deref().unwrap_or("postgres"),
                env.db_password.as_ref().map(|p| p.expose_secret()),
                env.db_name.as_deref().unwrap_or("postgres"),
            )),
            (None, None) => {
                let dir = data_dir(env.data_dir, env.xdg_data_home, env.home)?;
                SecretString::from(sqlite_url(&dir.join(DEFAULT_DATABASE_FILE)))
            }
        };
        let migrate_on_start = flag("MIGRATE_ON_START", env.migrate_on_start.as_deref(), true)?;
        let database =
            DatabaseSettings { url, max_connections: env.db_max_connections.unwrap_or(10).max(1), migrate_on_start };

        let cors_allowed_origins = env
            .cors_allowed_origins
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect::<Vec<_>>();
        if let Some(origin) = cors_allowed_origins.iter().find(|o| http::HeaderValue::from_str(o).is_err()) {
            return Err(bad("CORS_ALLOWED_ORIGINS", format!("{origin:?} is not a valid origin")));
        }

        let seconds = |var, value: Option<u64>, default| match value.unwrap_or(default) {
            0 => Err(bad(var, "must be at least 1 second")),
            s => Ok(Duration::from_secs(s)),
        };
        let throttle = ThrottleSettings {
            window: seconds("THROTTLE_WINDOW_SECONDS", env.throttle_window_seconds, 60)?,
            login_per_ip: env.login_ip_limit.unwrap_or(30),
            register_per_ip: env.register_ip_limit.unwrap_or(10),
            refresh_per_ip: env.refresh_ip_limit.unwrap_or(60),
            free_failures: env.login_free_failures.unwrap_or(5),
            backoff_max: seconds("LOGIN_BACKOFF_MAX_SECONDS", env.login_backoff_max_seconds, 900)?,
            account_failure_limit: env.login_account_failure_limit.unwrap_or(100),
            failure_window: seconds("LOGIN_FAILURE_WINDOW_SECONDS", env.login_failure_window_seconds, 900)?,
        };
        let limits = LimitSettings {
            request_timeout: seconds("REQUEST_TIMEOUT_SECONDS", env.request_timeout_seconds, 30)?,
            health_check_interval: Duration::from_millis(env.health_check_interval_ms.unwrap_or(5000).max(100)),
        };

        Ok(Self { listen_addr, log_format, database, tokens, passwords, cors_allowed_origins, throttle, limits })
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

/// Where the embedded database lives when nothing else is configured: `DATA_DIR`, else
/// `$XDG_DATA_HOME/authd`, else `$HOME/.local/share/authd`.
fn data_dir(
    data_dir: Option<String>,
    xdg_data_home: Option<String>,
    home: Option<String>,
) -> Result<PathBuf, ConfigError> {
    let absolute = |var: &str, value: String| {
        let path = PathBuf::from(value.trim());
        if path.is_absolute() { Ok(path) } else { Err(bad(var, format!("{path:?} is not an absolute path"))) }
    };
    let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    if let Some(dir) = non_empty(data_dir) {
        return absolute("DATA_DIR", dir);
    }
    // The XDG specification says to ignore a relative XDG_DATA_HOME.
    if let Some(xdg) = non_empty(xdg_data_home).filter(|x| Path::new(x.trim()).is_absolute()) {
        return Ok(PathBuf::from(xdg.trim()).join("authd"));
    }
    match non_empty(home) {
        Some(home) => Ok(absolute("HOME", home)?.join(".local/share/authd")),
        None => {
            Err(bad("DATA_DIR", "not set, and neither is XDG_DATA_HOME nor HOME: name a directory for the database"))
        }
    }
}

/// A `sqlite://` URL for a file; `%`, `?` and `#` in the path are percent-encoded.
pub fn sqlite_url(path: &Path) -> String {
    let path = path.to_string_lossy();
    let mut url = String::from("sqlite://");
    for c in path.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// The old app's `DB_*` variables as one URL; user, password and database are percent-encoded.
fn postgres_url(host: &str, port: u16, user: &str, password: Option<&str>, name: &str) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let credentials = match password {
        Some(p) => format!("{}:{}", encode(user), encode(p)),
        None => encode(user),
    };
    format!("postgres://{credentials}@{host}:{port}/{}", encode(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_parts(envy::from_iter(vars).map_err(|e| ConfigError(e.to_string()))?)
    }

    #[test]
    fn defaults_need_nothing_configured() {
        let s = env(&[("HOME", "/home/ada")]).unwrap();
        assert_eq!(s.database.url.expose_secret(), "sqlite:///home/ada/.local/share/authd/authd.db");
        assert!(s.database.migrate_on_start);
        assert_eq!(s.listen_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.tokens.algorithm, Algorithm::HS256);
        assert_eq!(s.tokens.access_lifetime, Duration::from_secs(15 * 60));
        assert_eq!(s.passwords.memory_kib, 19456);
        assert!(s.cors_allowed_origins.is_empty());
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
            ("LOGIN_IP_LIMIT", "-1"),
            ("THROTTLE_WINDOW_SECONDS", "0"),
            ("REQUEST_TIMEOUT_SECONDS", "0"),
        ] {
            let err = env(&[(var, value), ("HOME", "/home/ada")]).unwrap_err().to_string();
            assert!(err.contains(var) || err.contains(&var.replace("_KIB", "")), "{var}={value}: {err}");
        }
    }

    #[test]
    fn the_embedded_database_lives_in_the_data_directory() {
        let url = |pairs: &[(&str, &str)]| env(pairs).unwrap().database.url.expose_secret().to_owned();
        assert_eq!(url(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]), "sqlite:///x/authd/authd.db");
        assert_eq!(url(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")]), "sqlite:///h/.local/share/authd/authd.db");
        assert_eq!(url(&[("DATA_DIR", "/srv/a?b#c%d"), ("HOME", "/h")]), "sqlite:///srv/a%3Fb%23c%25d/authd.db");
        assert_eq!(url(&[("DATABASE_URL", "sqlite:///tmp/x.db"), ("DB_HOST", "db")]), "sqlite:///tmp/x.db");
        let err = env(&[]).unwrap_err().to_string();
        assert!(err.contains("DATA_DIR"), "{err}");
        assert!(!env(&[("HOME", "/h"), ("MIGRATE_ON_START", "false")]).unwrap().database.migrate_on_start);
    }

    #[test]
    fn old_app_db_variables_build_the_url() {
        let s =
            env(&[("DB_HOST", "db"), ("DB_USER", "app"), ("DB_PASSWORD", "p@ss/word"), ("DB_NAME", "users")]).unwrap();
        assert_eq!(s.database.url.expose_secret(), "postgres://app:p%40ss%2Fword@db:5432/users");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = env(&[("SECRET_KEY", "a-very-secret-key-123"), ("DATABASE_URL", "postgres://u:hunter2@h/d")]).unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("a-very-secret-key-123"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
