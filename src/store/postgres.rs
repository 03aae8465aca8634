//! PostgreSQL, the production backend: what differs from SQLite. Processes share the
//! database, so each one announces session changes to the others with NOTIFY.

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::{
    Connection, Executor, PgConnection, PgPool, Postgres, Row,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions},
};
use tokio::sync::mpsc;

use super::{
    Migrations, SessionChange,
    revocations::{RevocationKind, RevocationLog},
    users::DELETE_USER,
};
use crate::config::DatabaseSettings;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Waiting longer than this for a connection means the database is in trouble: answer
/// UNAVAILABLE rather than hang.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The NOTIFY channel on which every process announces session changes.
const CHANGES_CHANNEL: &str = "authd_session_changes";

/// The change feed counts as down when no heartbeat came back for this many intervals.
const HEARTBEATS_MISSED: u32 = 3;

/// The pools of a PostgreSQL store.
pub(super) struct Connected {
    /// For every query; through a transaction pooler if one is configured.
    pub pool: PgPool,
    /// Where the change feed listens: `DATABASE_LISTEN_URL`, else `DATABASE_URL`.
    pub listen: PgConnectOptions,
    /// Where migrations are applied, when not on `pool`: one direct connection to
    /// `DATABASE_LISTEN_URL`, for start-ups that apply them.
    pub migrations: Option<PgPool>,
}

/// Connects: first to the configured database itself, creating it (through the
/// `postgres` maintenance database) only if it is really missing and migrations may be
/// applied.
pub(super) async fn connect(settings: &DatabaseSettings, migrations: Migrations) -> anyhow::Result<Connected> {
    let url = settings.url.expose_secret();
    // A transaction pooler hands each transaction to any server connection: a named
    // statement prepared on one is unknown (or another's) on the next. PgBouncer also
    // refuses start-up parameters it does not track unless told to ignore them. The
    // direct connection gets the same treatment, in case it is not direct after all.
    let pooler_safe = |options: PgConnectOptions| match settings.prepared_statements {
        true => options,
        false => options.statement_cache_capacity(0).extra_float_digits(None),
    };
    let options = pooler_safe(PgConnectOptions::from_str(url)?);
    let (direct_url, direct) = match &settings.listen_url {
        Some(listen) => {
            let listen = listen.expose_secret();
            (listen, pooler_safe(PgConnectOptions::from_str(listen).context("DATABASE_LISTEN_URL")?))
        }
        None => (url, options.clone()),
    };
    if migrations == Migrations::Apply {
        create_if_missing(direct_url, &direct).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    let migration_pool = match &settings.listen_url {
        Some(_) if migrations == Migrations::Apply => Some(
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(direct.clone())
                .await?,
        ),
        _ => None,
    };
    Ok(Connected { pool, listen: direct, migrations: migration_pool })
}

/// Creates the database of `options` if connecting to it says it does not exist (and only
/// then: a pooler, or a role that may not connect to `postgres`, is never asked for more).
async fn create_if_missing(url: &str, options: &PgConnectOptions) -> anyhow::Result<()> {
    match PgConnection::connect_with(options).await {
        Ok(connection) => {
            let _ = connection.close().await;
            Ok(())
        }
        // invalid_catalog_name: "database ... does not exist"
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {
            tracing::info!(database = options.get_database().unwrap_or_default(), "creating the database");
            Ok(Postgres::create_database(url).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `NOTIFY channel, payload` as its own statement.
async fn notify(pool: &PgPool, prepared: bool, channel: &str, payload: &str) -> sqlx::Result<()> {
    let query = sqlx::query("select pg_notify($1, $2)").bind(channel).bind(payload);
    alone(pool, prepared, query).await
}

/// Runs `query` as a statement of its own: in a transaction of its own when prepared
/// statements are off, as every statement then is.
async fn alone(
    pool: &PgPool,
    prepared: bool,
    query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> sqlx::Result<()> {
    let query = query.persistent(prepared);
    if prepared {
        query.execute(pool).await?;
    } else {
        let mut tx = pool.begin().await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Tells every process listening (this one included) of a change.
pub(super) async fn announce(pool: &PgPool, prepared: bool, change: SessionChange) -> sqlx::Result<()> {
    let payload = match change {
        SessionChange::Session(id) => format!("session:{id}"),
        SessionChange::User(id) => format!("user:{id}"),
        SessionChange::Listening | SessionChange::Unheard | SessionChange::Client(_) => return Ok(()),
    };
    notify(pool, prepared, CHANGES_CHANNEL, &payload).await
}

/// Logs a revocation and announces it, in one statement, on `connection` (inside the
/// transaction of the change it records): the row and the NOTIFY are committed with the
/// change, so no process hears of a change it then cannot read back, nor misses one.
pub(super) async fn log_and_announce(
    connection: &mut PgConnection,
    prepared: bool,
    kind: &str,
    change: SessionChange,
) -> sqlx::Result<()> {
    let (session_id, user_id, payload) = match change {
        SessionChange::Session(id) => (Some(id), None, format!("session:{id}")),
        SessionChange::User(id) => (None, Some(id), format!("user:{id}")),
        SessionChange::Listening | SessionChange::Unheard | SessionChange::Client(_) => return Ok(()),
    };
    sqlx::query(
        "with logged as (insert into revocations (kind, session_id, user_id, at)
                         values ($1, $2, $3, clock_timestamp()) returning seq)
         select pg_notify($4, $5) from logged",
    )
    .bind(kind)
    .bind(session_id)
    .bind(user_id)
    .bind(CHANGES_CHANNEL)
    .bind(payload)
    .persistent(prepared)
    .execute(connection)
    .await
    .map(|_| ())
}

/// The change feed: LISTEN on a connection of its own (made from `listen`), and a
/// heartbeat sent every `interval` the way announcements go (through `pool`) on a channel
/// only this process listens to. The feed is up ([`SessionChange::Listening`]) once a
/// heartbeat comes back, and down ([`SessionChange::Unheard`]) when none has for
/// [`HEARTBEATS_MISSED`] intervals: a connection that looks fine but hears nothing, as a
/// LISTEN through a transaction pooler does, is found out. Returns only on failure.
pub(super) async fn follow_session_changes(
    pool: &PgPool,
    prepared: bool,
    listen: &PgConnectOptions,
    interval: Duration,
    on_change: &(dyn Fn(SessionChange) + Send + Sync),
) -> anyhow::Result<()> {
    if shares_sessions(listen).await? {
        tracing::error!(
            "DATABASE_LISTEN_URL (else DATABASE_URL) reaches PostgreSQL through a transaction pooler, where \
             LISTEN hears nothing and would leave pooled connections listening: the change feed stays down, \
             and token checks ask the database; point DATABASE_LISTEN_URL straight at PostgreSQL"
        );
        tokio::time::sleep(POOLED_RETRY).await;
        anyhow::bail!("the change feed's connection is pooled");
    }
    let listen_pool =
        PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(listen.clone());
    let mut listener = PgListener::connect_with(&listen_pool).await?;
    let heartbeat_channel = format!("authd_heartbeat_{}", uuid::Uuid::new_v4().simple());
    listener.listen_all([CHANGES_CHANNEL, heartbeat_channel.as_str()]).await?;
    // Received in a task of its own, so that waiting for the next heartbeat never cancels
    // a read half-way.
    let (sender, mut notifications) = mpsc::channel::<sqlx::Result<PgNotification>>(256);
    let receiver = tokio::spawn(async move {
        loop {
            // `recv` would reconnect silently and lose what was sent meanwhile: end instead.
            let next = match listener.try_recv().await {
                Ok(Some(notification)) => Ok(notification),
                Ok(None) => Err(sqlx::Error::Protocol("the notification connection closed".into())),
                Err(e) => Err(e),
            };
            let failed = next.is_err();
            if sender.send(next).await.is_err() || failed {
                break;
            }
        }
    });
    let _abort_receiver = AbortOnDrop(receiver);
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `unheard_since`: when the oldest heartbeat not yet heard back was sent. Counted from
    // the sending, not the tick, so that waiting for a busy pool never looks like deafness.
    let (mut up, mut unheard_since, mut beat) = (false, None::<Instant>, 0u64);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if up && unheard_since.is_some_and(|at| at.elapsed() > interval * HEARTBEATS_MISSED) {
                    up = false;
                    tracing::warn!(
                        "change feed down: its heartbeat was not heard back; token checks ask the database until it is"
                    );
                    on_change(SessionChange::Unheard);
                }
                beat += 1;
                match notify(pool, prepared, &heartbeat_channel, &beat.to_string()).await {
                    Ok(()) => {
                        unheard_since.get_or_insert_with(Instant::now);
                    }
                    Err(e) => tracing::debug!(error = %e, "could not send the change feed's heartbeat"),
                }
            }
            received = notifications.recv() => {
                let notification = received.context("the notification receiver ended")??;
                if notification.channel() == heartbeat_channel {
                    unheard_since = None;
                    if !up {
                        up = true;
                        tracing::info!("change feed up: its heartbeat was heard back");
                        on_change(SessionChange::Listening);
                    }
                    continue;
                }
                match parse_change(notification.payload()) {
                    Some(change) => on_change(change),
                    None => tracing::warn!(payload = notification.payload(), "unknown session change"),
                }
            }
        }
    }
}

/// How long a feed found behind a transaction pooler waits before looking again.
const POOLED_RETRY: Duration = Duration::from_secs(60);

/// Whether connections to `listen` share their server sessions, as through a transaction
/// pooler, where a LISTEN would hear nothing and would leave a pooled server connection
/// listening (every later client of that connection then receives notifications it
/// cannot read).
///
/// Asked without LISTEN, by backend process ids: a direct connection keeps one backend for
/// its life, and two live connections never share one. So the first connection's backend
/// must neither show up under a second connection (held in a transaction meanwhile), nor
/// change when the first asks again. Through PgBouncer in transaction mode the second
/// connection usually gets the first's server connection back (idle ones are reused most
/// recently released first); when someone else holds it instead, the first connection's
/// next statement lands elsewhere. A round misses only if that server connection is busy
/// when the second asks and free again when the first does, so [`PROBE_ROUNDS`] rounds are
/// asked, and the heartbeat still finds a deaf feed out after that.
pub async fn shares_sessions(listen: &PgConnectOptions) -> anyhow::Result<bool> {
    let mut first = PgConnection::connect_with(listen).await?;
    let mut second = PgConnection::connect_with(listen).await?;
    let shared = async {
        for _ in 0..PROBE_ROUNDS {
            let own = backend_pid(&mut first).await?;
            second.execute("begin").await?;
            let other = backend_pid(&mut second).await?;
            // Asked while `second` holds its server connection; a pool of one would make
            // this wait for ever, which is itself a shared session.
            let again = match tokio::time::timeout(PROBE_WAIT, backend_pid(&mut first)).await {
                Ok(pid) => pid?,
                Err(_) => return Ok(true),
            };
            second.execute("rollback").await?;
            if other == own || again != own {
                return Ok(true);
            }
        }
        anyhow::Ok(false)
    }
    .await;
    let _ = first.close().await;
    let _ = second.close().await;
    shared
}

/// Asked as a simple query, one round trip: through a transaction pooler, the extended
/// protocol's describe and execute may each reach a different server connection.
async fn backend_pid(connection: &mut PgConnection) -> sqlx::Result<i32> {
    sqlx::raw_sql("select pg_backend_pid()").fetch_one(connection).await?.try_get(0)
}

/// Rounds of the pooler probe: each one misses only on an unlucky interleaving.
const PROBE_ROUNDS: usize = 5;
/// How long the probe waits for a second server connection before calling it shared.
const PROBE_WAIT: Duration = Duration::from_secs(5);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn parse_change(payload: &str) -> Option<SessionChange> {
    match payload.split_once(':')? {
        ("session", id) => id.parse().ok().map(SessionChange::Session),
        ("user", id) => id.parse().ok().map(SessionChange::User),
        ("client", id) => Some(SessionChange::client(id)),
        _ => None,
    }
}

/// Deletes a user, first clearing its rows in the old app's `refreshaccesstokens` where an
/// adopted database keeps that table (its foreign key to users has no `on delete cascade`),
/// and logs the deletion in the same transaction; returns how many users were deleted.
pub(super) async fn delete_user_and_old_tokens(pool: &PgPool, prepared: bool, user_id: i64) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let old_tokens: bool = sqlx::query_scalar("select to_regclass('refreshaccesstokens') is not null")
        .persistent(prepared)
        .fetch_one(&mut *tx)
        .await?;
    if old_tokens {
        sqlx::query("delete from refreshaccesstokens where user_id = $1")
            .bind(user_id)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?;
    }
    let done = sqlx::query(DELETE_USER).bind(user_id).persistent(prepared).execute(&mut *tx).await?;
    if done.rows_affected() > 0 {
        tx.log_revocation(prepared, RevocationKind::UserDeleted, SessionChange::User(user_id)).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
}
