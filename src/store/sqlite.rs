//! SQLite, the embedded backend: one file, nothing to install or configure.
//!
//! WAL lets readers run beside the one writer; the busy timeout makes concurrent writers
//! queue rather than fail. Every write is a single statement, so SQLite takes the write
//! lock before reading the rows it changes, and a conditional `update ... returning`
//! is atomic just as on PostgreSQL.

use std::{path::Path, str::FromStr, time::Duration};

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
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(6);

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
    if migrations == Migrations::Apply && !in_memory {
        create_private(options.get_filename())?;
    }
    // An in-memory database lives as long as its connections: keep exactly one.
    let pool_options = if in_memory {
        SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(max_connections)
    };
    Ok(pool_options.acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await?)
}

/// Creates the database file, if missing, readable by its owner only (SQLite gives its
/// journal files the same mode), in directories it creates likewise: the file holds
/// password hashes and, unless `KEY_ENCRYPTION_KEY` is set, the keys that sign tokens.
fn create_private(file: &Path) -> anyhow::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_others_may_read(file);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating the database file {}", file.display())),
    }
}

/// A file created before authd made it private, or by hand, keeps its mode: say so.
fn warn_if_others_may_read(file: &Path) {
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(file) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} has mode {mode:o}: other users may read its password hashes and keys; `chmod 600` it",
                file.display()
            );
        }
    }
}
