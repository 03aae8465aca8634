//! SQLite, the embedded backend: one file, nothing to install or configure.
//!
//! WAL lets readers run beside the one writer; the busy timeout makes concurrent writers
//! queue rather than fail. Every write is a single statement, so SQLite takes the write
//! lock before reading the rows it changes, and a conditional `update ... returning`
//! is atomic just as on PostgreSQL.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::Migrations;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another to finish before giving up (UNAVAILABLE).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Waiting longer than this for a connection means trouble: answer UNAVAILABLE rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(6);

/// Opens the database file, creating it and its directory when migrations may be applied.
pub(super) async fn connect(url: &str, max_connections: u32, migrations: Migrations) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(migrations == Migrations::Apply)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if migrations == Migrations::RequireCurrent && !in_memory && !options.get_filename().exists() {
        anyhow::bail!(
            "{} does not exist, and MIGRATE_ON_START is off: run `authd migrate` first",
            options.get_filename().display()
        );
    }
    if migrations == Migrations::Apply
        && !in_memory
        && let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    // An in-memory database lives as long as its connections: keep exactly one.
    let pool_options = if in_memory {
        SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(max_connections)
    };
    Ok(pool_options.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?)
}
