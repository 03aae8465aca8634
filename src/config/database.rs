//! Which database, and where the embedded one lives when none is named.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Env, bad, flag};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://...` or `sqlite://<path>`.
    pub url: SecretString,
    pub max_connections: u32,
    /// Whether a plain start applies pending migrations (`MIGRATE_ON_START`); when off,
    /// start-up refuses a database whose schema is behind (run `authd migrate`).
    pub migrate_on_start: bool,
    /// `DATABASE_LISTEN_URL`: a direct connection to PostgreSQL, past any transaction
    /// pooler, for what needs a session of its own: the change feed (LISTEN), and at
    /// start-up creating a missing database and applying migrations (which hold a session
    /// lock). `None`: `url` serves for these too.
    pub listen_url: Option<SecretString>,
    /// `DB_PREPARED_STATEMENTS`: off behind a transaction pooler (PgBouncer in transaction
    /// mode), which cannot carry a named prepared statement from one transaction to the
    /// next: then no statement is cached or named, each runs in a transaction of its own,
    /// and no `extra_float_digits` start-up parameter is sent.
    pub prepared_statements: bool,
    /// `CHANGE_FEED_HEARTBEAT_MS`: how often each process sends itself a heartbeat through
    /// NOTIFY; the change feed counts as down when none is heard for three of these.
    pub heartbeat_interval: Duration,
}

/// The embedded database's file name, inside the data directory.
const DEFAULT_DATABASE_FILE: &str = "authd.db";

impl DatabaseSettings {
    pub(super) fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let url = match (env.database_url.take(), env.db_host.take()) {
            (Some(url), _) => url,
            (None, Some(host)) => SecretString::from(postgres_url(
                &host,
                env.db_port.unwrap_or(5432),
                env.db_user.as_deref().unwrap_or("postgres"),
                env.db_password.as_ref().map(|p| p.expose_secret()),
                env.db_name.as_deref().unwrap_or("postgres"),
            )),
            (None, None) => {
                let dir = data_dir(env.data_dir.take(), env.xdg_data_home.take(), env.home.take())?;
                SecretString::from(sqlite_url(&dir.join(DEFAULT_DATABASE_FILE)))
            }
        };
        let migrate_on_start = flag("MIGRATE_ON_START", env.migrate_on_start.as_deref(), true)?;
        let listen_url = env.database_listen_url.take().filter(|u| !u.expose_secret().trim().is_empty());
        if let Some(listen) = &listen_url {
            let scheme = listen.expose_secret().split_once(':').map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
                return Err(bad("DATABASE_LISTEN_URL", "expected a postgres:// URL"));
            }
        }
        let prepared_statements = flag("DB_PREPARED_STATEMENTS", env.db_prepared_statements.as_deref(), true)?;
        let heartbeat_interval = Duration::from_millis(env.change_feed_heartbeat_ms.unwrap_or(1000).max(10));
        Ok(Self {
            url,
            max_connections: env.db_max_connections.unwrap_or(10).max(1),
            migrate_on_start,
            listen_url,
            prepared_statements,
            heartbeat_interval,
        })
    }
}

/// Where the embedded database lives when nothing else is configured: `DATA_DIR`, else
/// `$XDG_DATA_HOME/authd`, else `$HOME/.local/share/authd`.
pub(super) fn data_dir(
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
    use secrecy::ExposeSecret;

    use super::super::tests::env;

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
}
