//! The database boundary: every query the core makes, written once for both backends.
//!
//! A [`Store`] holds a pool of either backend, and `run!` compiles one statement for
//! each (both drivers number `$1`, `$2`, ... alike). Each table's queries live in its own
//! module; what really differs between the backends (connecting, migrating, adopting the
//! old app's database, hearing other processes' session changes) lives in `postgres` and
//! `sqlite`. Timestamps are bound by authd, never read from the database's clock: SQLite
//! keeps them as RFC 3339 text, which compares in time order.

mod admin;
mod adoption;
mod audit;
mod clients;
mod devices;
mod email_tokens;
mod factors;
mod outbox;
mod passkeys;
mod postgres;
mod revocations;
mod roles;
mod secrets;
mod sessions;
mod signing_keys;
mod sqlite;
mod throttle;
mod users;

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{PgPool, SqlitePool, migrate::Migrator};
use url::Url;

pub use admin::{AdminUserRecord, UserQuery};
pub use audit::{AuditQuery, AuditRecord, NewAuditEvent};
pub use clients::{ClientRecord, NewClient};
pub use email_tokens::{CODE_ATTEMPTS, EmailChanged, EmailTokenRecord, NewEmailToken, Purpose};
pub use factors::{ChallengeRecord, FactorActivation, FactorRecord, NewChallenge, NewFactor};
pub use outbox::{MailRecord, NewMail};
pub use passkeys::{CeremonyPurpose, CeremonyRecord, NewCeremony};
pub use postgres::shares_sessions;
pub use revocations::{Revocation, RevocationKind};
pub use sessions::{ClientKey, NewSession, SessionChange, SessionRecord, SessionSummary};
pub use signing_keys::SigningKeyRecord;
pub use throttle::{Allowance, CeilingHit, ThrottleCount};
pub use users::{NewUser, PasswordChange, ProfileUpdate, UserRecord};

use crate::config::DatabaseSettings;

/// The database: every query the core makes is a method of this.
pub struct Store {
    pool: Pool,
    /// Off behind a transaction pooler (`DB_PREPARED_STATEMENTS`): then no statement is
    /// named, and each runs in a transaction of its own (see [`on_statement`]).
    prepared_statements: bool,
    /// PostgreSQL: where the change feed listens, and how often it checks itself.
    feed: Option<(sqlx::postgres::PgConnectOptions, std::time::Duration)>,
}

enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Evaluates `$body` with `$pool` bound to whichever pool `$store` holds: the one body is
/// compiled, and type-checked, for each backend.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Postgres($pool) => $body,
            $crate::store::Pool::Sqlite($pool) => $body,
        }
    };
}
use on_pool;

/// Evaluates `$body`, one statement giving a `sqlx::Result`, with `$exec` bound to where
/// it runs and `$persistent` to whether it may be a named prepared statement. Behind a
/// transaction pooler (prepared statements off) that is a transaction of its own: sqlx
/// parses a statement and binds it in two exchanges, and the pooler may hand the second
/// to another server connection between them, unless a transaction holds it.
macro_rules! on_statement {
    ($store:expr, |$exec:ident, $persistent:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Postgres(pool) if !$store.prepared_statements => {
                async {
                    let mut tx = pool.begin().await?;
                    let result = {
                        let ($exec, $persistent) = (&mut *tx, false);
                        $body
                    }?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(result)
                }
                .await
            }
            $crate::store::Pool::Postgres($exec) => {
                let $persistent = true;
                $body
            }
            $crate::store::Pool::Sqlite($exec) => {
                let $persistent = true;
                $body
            }
        }
    };
}
use on_statement;

/// Runs one statement on the store's pool, binding the arguments to `$1`, `$2`, ... in
/// order, and sorts any error with `classify`: `query_as(..).fetch_*` gives records,
/// `query_scalar(..).fetch_*` values, and `query(..).execute` the number of rows changed.
macro_rules! run {
    ($store:expr, query($sql:expr $(, $arg:expr)* $(,)?).execute) => {
        $crate::store::on_statement!($store, |exec, persistent| {
            sqlx::query($sql)$(.bind($arg))*.persistent(persistent).execute(exec).await.map(|done| done.rows_affected())
        })
        .map_err($crate::store::classify)
    };
    ($store:expr, $make:ident($sql:expr $(, $arg:expr)* $(,)?).$fetch:ident) => {
        $crate::store::on_statement!($store, |exec, persistent| {
            sqlx::$make($sql)$(.bind($arg))*.persistent(persistent).$fetch(exec).await
        })
        .map_err($crate::store::classify)
    };
}
use run;

/// The longest a revocation's log row may take from its time (`at`) to its commit, which
/// readers of the log look back over: the row is written last in its transaction, just
/// before the commit, and no store waits longer than this for a connection (PostgreSQL 3 s,
/// SQLite 6 s) or a write lock.
pub const LONGEST_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_secs(6);

/// Rows one pruning statement deletes at most, so that none holds a table for long.
const PRUNE_BATCH: i64 = 5000;

/// Runs `delete_batch` (one statement deleting at most [`PRUNE_BATCH`] rows) until a run
/// deletes fewer; returns how many rows went in all.
async fn in_batches<F: Future<Output = StoreResult<u64>>>(mut delete_batch: impl FnMut() -> F) -> StoreResult<u64> {
    let mut deleted = 0;
    loop {
        let batch = delete_batch().await?;
        deleted += batch;
        if batch < PRUNE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// What opening a store does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Check that an existing database can be adopted, then apply pending migrations
    /// (creating the database first if need be).
    Apply,
    /// Change nothing; refuse a database with pending migrations.
    RequireCurrent,
}

/// The two backends, told apart by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            _ => anyhow::bail!("DATABASE_URL: expected a postgres:// or sqlite:// URL, got scheme {scheme:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }
}

/// Opens the configured database, applying or checking migrations, and logs one line
/// saying which database is in use (never its password).
pub async fn open(settings: &DatabaseSettings, migrations: Migrations) -> anyhow::Result<Arc<Store>> {
    let url = settings.url.expose_secret();
    let backend = Backend::of(url)?;
    tracing::info!(backend = backend.name(), url = %redacted(url), "database");
    let store = Store::connect(settings, backend, migrations).await;
    Ok(Arc::new(store.with_context(|| format!("opening {} at {} (DATABASE_URL)", backend.name(), redacted(url)))?))
}

/// Connections of the pool right now.
#[derive(Debug, Clone, Copy)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
}

impl PoolUsage {
    pub fn in_use(self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

impl Store {
    async fn connect(settings: &DatabaseSettings, backend: Backend, migrations: Migrations) -> anyhow::Result<Self> {
        let url = settings.url.expose_secret();
        let prepared_statements = settings.prepared_statements;
        let store = match backend {
            Backend::Postgres => {
                let connected = postgres::connect(settings, migrations).await?;
                let store = Self {
                    pool: Pool::Postgres(connected.pool.clone()),
                    prepared_statements,
                    feed: Some((connected.listen, settings.heartbeat_interval)),
                };
                // The migrator names its statements and holds a session lock: over a
                // direct connection when one is configured. Behind a transaction pooler
                // (where that one may be wrongly configured too) it runs only when a
                // migration is pending.
                let direct = connected.migrations;
                let needed = migrations == Migrations::Apply
                    && (prepared_statements || !store.pending_migrations(&postgres::MIGRATOR).await?.is_empty());
                if needed {
                    let pool = direct.as_ref().unwrap_or(&connected.pool);
                    adoption::check(pool, &postgres::MIGRATOR).await?;
                    postgres::MIGRATOR.run(pool).await.context("applying migrations")?;
                }
                if let Some(direct) = direct {
                    direct.close().await;
                }
                store
            }
            Backend::Sqlite => {
                let pool = sqlite::connect(url, settings.max_connections, migrations).await?;
                if migrations == Migrations::Apply {
                    sqlite::MIGRATOR.run(&pool).await.context("applying migrations")?;
                }
                Self { pool: Pool::Sqlite(pool), prepared_statements, feed: None }
            }
        };
        if migrations == Migrations::RequireCurrent {
            let migrator = match store.pool {
                Pool::Postgres(_) => &postgres::MIGRATOR,
                Pool::Sqlite(_) => &sqlite::MIGRATOR,
            };
            store.require_current(migrator).await?;
        }
        Ok(store)
    }

    /// Fails, naming them, if any of the migrator's migrations is not applied yet.
    async fn require_current(&self, migrator: &Migrator) -> anyhow::Result<()> {
        let pending = self.pending_migrations(migrator).await?;
        if pending.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "the database schema is behind ({} pending: {}) and MIGRATE_ON_START is off: run `authd migrate` first",
                pending.len(),
                pending.join(", ")
            )
        }
    }

    /// The migrator's migrations not applied yet, as "version description".
    async fn pending_migrations(&self, migrator: &Migrator) -> anyhow::Result<Vec<String>> {
        let has_table = match self.pool {
            Pool::Postgres(_) => "select to_regclass('_sqlx_migrations') is not null",
            Pool::Sqlite(_) => {
                "select exists (select 1 from sqlite_master where type = 'table' and name = '_sqlx_migrations')"
            }
        };
        let applied: Vec<i64> = if run!(self, query_scalar(has_table).fetch_one)? {
            run!(self, query_scalar("select version from _sqlx_migrations where success").fetch_all)?
        } else {
            Vec::new()
        };
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        run!(self, query("select 1").execute)?;
        Ok(())
    }

    /// The connection pool's state, for metrics.
    pub fn pool_usage(&self) -> PoolUsage {
        on_pool!(self, |pool| PoolUsage { open: pool.size(), idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX) })
    }
}

/// A database URL fit for a log line: any password (in the user info or a `password=`
/// parameter) replaced by `***`. A URL that does not parse, or whose user info may have
/// been read as host, port or path, shows nothing but its scheme.
pub fn redacted(url: &str) -> String {
    let Some(mut parsed) = Url::parse(url).ok().filter(|u| !has_stray_at(u)) else {
        let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric()));
        return format!("{}<unparseable URL>", scheme.map(|s| format!("{s}:")).unwrap_or_default());
    };
    if parsed.password().is_some() {
        // Fails only for a URL without a host, which has no password.
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect::<Vec<_>>();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Whether an '@' follows the host: then a raw '/' in a password may have ended the
/// authority early (`app:1234/x@db` reads as port 1234 and path `/x@db`), so hide it all.
fn has_stray_at(url: &Url) -> bool {
    url.host_str().is_some_and(|h| !h.is_empty()) && url[url::Position::BeforePath..].contains('@')
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    /// Another row already has that unique value (a service client's certificate identity).
    #[error("already taken")]
    Conflict,
    /// The database cannot be reached (or refuses connections) right now.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Sorts sqlx errors into "try again later" and "something is wrong".
fn classify(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unavailable = match &error {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        // The conversation broke off, as when something between us and the database
        // accepts a connection and closes it ("unexpected response from SSLRequest").
        E::Protocol(_) => true,
        // SQLite: busy or locked past the busy timeout (5, 6), I/O error (10), full disk
        // (13), cannot open (14); extended codes keep the primary code in the low byte.
        E::Database(db) if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
        }
        // PostgreSQL: connection exceptions (08), operator intervention such as a
        // shutdown (57P), and too many connections (53300).
        E::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    };
    if unavailable { StoreError::Unavailable(error) } else { StoreError::Other(error.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_in_logs() {
        for (url, shown) in [
            ("postgres://app:hunter2@db:5432/users", "postgres://app:***@db:5432/users"),
            ("postgres://app:p%40ss@db/users?sslmode=require", "postgres://app:***@db/users?sslmode=require"),
            (
                "postgres://app@db/users?password=hunter2&sslmode=disable",
                "postgres://app@db/users?password=***&sslmode=disable",
            ),
            ("postgres://db/users", "postgres://db/users"),
            ("postgres://app:hunter2@db/users?Password=hunter2", "postgres://app:***@db/users?Password=***"),
            ("sqlite:///home/ada/.local/share/authd/authd.db", "sqlite:///home/ada/.local/share/authd/authd.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite:///srv/ada@example/authd.db", "sqlite:///srv/ada@example/authd.db"),
        ] {
            assert_eq!(redacted(url), shown);
        }
    }

    #[test]
    fn a_password_with_url_delimiters_stays_out_of_logs() {
        // A raw '/', '?' or '#' ends the authority early: the password is read as a port,
        // and the rest as a path.
        for url in [
            "postgres://app:s3cr3t+/x==@db/users",
            "postgres://app:s3cr3t?x==@db/users",
            "postgres://app:s3cr3t#x==@db/users",
            "postgres://app:s3/cr3t@db/users?password=s3/cr3t",
            "postgres://app:1234/cr3t@db/users",
        ] {
            assert_eq!(redacted(url), "postgres:<unparseable URL>", "{url}");
        }
    }

    #[test]
    fn the_scheme_picks_the_backend() {
        assert!(LONGEST_COMMIT_DELAY >= postgres::ACQUIRE_TIMEOUT && LONGEST_COMMIT_DELAY >= sqlite::ACQUIRE_TIMEOUT);
        assert_eq!(Backend::of("postgres://x/y").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://x/y").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("sqlite:///tmp/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert!(Backend::of("mysql://x/y").unwrap_err().to_string().contains("DATABASE_URL"));
    }
}
