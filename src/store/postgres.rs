//! PostgreSQL, the production backend: what differs from SQLite. Processes share the
//! database, so each one announces session changes to the others with NOTIFY.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};

use super::{Migrations, SessionChange, users::DELETE_USER};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Waiting longer than this for a connection means the database is in trouble: answer
/// UNAVAILABLE rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The NOTIFY channel on which every process announces session changes.
const CHANGES_CHANNEL: &str = "authd_session_changes";

/// Connects; when migrations may be applied, a missing database is created first.
pub(super) async fn connect(url: &str, max_connections: u32, migrations: Migrations) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    if migrations == Migrations::Apply && !Postgres::database_exists(url).await? {
        tracing::info!(database = options.get_database().unwrap_or_default(), "creating the database");
        Postgres::create_database(url).await?;
    }
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// Tells every process listening (this one included) of a change.
pub(super) async fn announce(pool: &PgPool, change: SessionChange) -> sqlx::Result<()> {
    let payload = match change {
        SessionChange::Session(id) => format!("session:{id}"),
        SessionChange::User(id) => format!("user:{id}"),
        SessionChange::Listening => return Ok(()),
    };
    sqlx::query("select pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(payload).execute(pool).await?;
    Ok(())
}

pub(super) async fn follow_session_changes(
    pool: &PgPool,
    on_change: &(dyn Fn(SessionChange) + Send + Sync),
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    on_change(SessionChange::Listening);
    loop {
        // `recv` would reconnect silently and lose what was sent meanwhile: end instead.
        let notification = listener.try_recv().await?.context("the notification connection closed")?;
        match parse_change(notification.payload()) {
            Some(change) => on_change(change),
            None => tracing::warn!(payload = notification.payload(), "unknown session change"),
        }
    }
}

fn parse_change(payload: &str) -> Option<SessionChange> {
    match payload.split_once(':')? {
        ("session", id) => id.parse().ok().map(SessionChange::Session),
        ("user", id) => id.parse().ok().map(SessionChange::User),
        _ => None,
    }
}

/// Deletes a user, first clearing its rows in the old app's `refreshaccesstokens` where an
/// adopted database keeps that table (its foreign key to users has no `on delete cascade`);
/// returns how many users were deleted.
pub(super) async fn delete_user_and_old_tokens(pool: &PgPool, user_id: i64) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let old_tokens: bool =
        sqlx::query_scalar("select to_regclass('refreshaccesstokens') is not null").fetch_one(&mut *tx).await?;
    if old_tokens {
        sqlx::query("delete from refreshaccesstokens where user_id = $1").bind(user_id).execute(&mut *tx).await?;
    }
    let done = sqlx::query(DELETE_USER).bind(user_id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
