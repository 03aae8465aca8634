//! `users`: accounts, with the old app's columns (see migrations/postgres).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    NewSession, Pool, SessionChange, Store, StoreError, StoreResult, classify, on_pool, on_statement, postgres,
    revocations::{RevocationKind, RevocationLog},
    run,
    sessions::insert_session,
};

/// Inside the transaction `$tx`: replaces the password of `$user_id` if it is still
/// `$current_hash`, moves the credentials version on, ends every session (counting those
/// other than `$current_session`, if any), and forgets the user's devices but the one
/// `$current_session` logged in with, if it was known until now (seen since `$seen_since`).
/// Gives `Some((new version, sessions ended, that device's hash))`, or `None` if the
/// password had changed meanwhile (then nothing is done). The one way a password is replaced: a change and a reset alike.
macro_rules! replace_password {
    (
        $tx:expr, $user_id:expr, $current_hash:expr, $new_hash:expr, $now:expr, $current_session:expr,
        $seen_since:expr, $prepared:expr
    ) => {
        async {
            let tx = $tx;
            let version: Option<i64> = sqlx::query_scalar(
                "update users set password = $3, credentials_version = credentials_version + 1, updated_at = $4
                  where user_id = $1 and password = $2
                 returning credentials_version",
            )
            .bind($user_id)
            .bind($current_hash)
            .bind($new_hash)
            .bind($now)
            .persistent($prepared)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(version) = version else { return Ok::<_, sqlx::Error>(None) };
            let mut ended = 0;
            let mut kept: Option<Vec<u8>> = None;
            if let Some(current) = $current_session {
                sqlx::query("update sessions set revoked_at = $2 where session_id = $1 and revoked_at is null")
                    .bind(current)
                    .bind($now)
                    .persistent($prepared)
                    .execute(&mut **tx)
                    .await?;
                kept = sqlx::query_scalar($crate::store::sessions::KEEP_SESSION_DEVICE)
                    .bind($user_id)
                    .bind(current)
                    .bind(version)
                    .bind($seen_since)
                    .persistent($prepared)
                    .fetch_optional(&mut **tx)
                    .await?;
            }
            ended += sqlx::query($crate::store::sessions::REVOKE_USER_SESSIONS)
                .bind($user_id)
                .bind($now)
                .persistent($prepared)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            sqlx::query($crate::store::sessions::FORGET_DEVICES)
                .bind($user_id)
                .bind(version)
                .persistent($prepared)
                .execute(&mut **tx)
                .await?;
            sqlx::query($crate::store::email_tokens::VOID_USER_TOKENS)
                .bind($user_id)
                .bind($now)
                .persistent($prepared)
                .execute(&mut **tx)
                .await?;
            Ok(Some((version, ended, kept)))
        }
        .await?
    };
}
pub(super) use replace_password;

/// The columns a `UserRecord` is read from, each after an optional table alias (a macro,
/// so that `concat!` makes each query a constant).
macro_rules! user_columns {
    () => {
        user_columns!("")
    };
    ($alias:literal) => {
        concat!(
            $alias,
            "user_id, ",
            $alias,
            "name, ",
            $alias,
            "email, ",
            $alias,
            "location, ",
            $alias,
            "about, ",
            $alias,
            "password, ",
            $alias,
            "created_at, ",
            $alias,
            "updated_at, ",
            $alias,
            "credentials_version, ",
            $alias,
            "email_verified_at"
        )
    };
}
pub(super) use user_columns;

/// Sessions go with the user (on delete cascade).
pub(super) const DELETE_USER: &str = "delete from users where user_id = $1";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub user_id: i64,
    pub name: String,
    pub email: String,
    pub location: String,
    pub about: Option<String>,
    /// A PHC string.
    pub password: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Moves on with every change of password and every logout everywhere: a session
    /// started with another is over.
    pub credentials_version: i64,
    /// When the address was proven; `None` while it is not.
    pub email_verified_at: Option<DateTime<Utc>>,
}

/// A password change: the hash it replaces, the session it starts in place of every
/// other (the caller's own included), which keeps the device that the caller's session
/// logged in with (if it was known until now, seen since `devices_seen_since`), and no
/// other.
pub struct PasswordChange<'a> {
    pub user_id: i64,
    pub current_hash: &'a str,
    pub new_hash: &'a str,
    pub current_session: Uuid,
    pub new_session: NewSession<'a>,
    pub devices_seen_since: DateTime<Utc>,
}

pub struct NewUser<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub location: &'a str,
    pub about: Option<&'a str>,
    pub password_hash: &'a str,
}

/// A partial profile change: `None` leaves a column as it is; `about: Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileUpdate<'a> {
    pub name: Option<&'a str>,
    pub location: Option<&'a str>,
    pub about: Option<Option<&'a str>>,
}

impl Store {
    /// Inserts a user; [`StoreError::EmailTaken`] when the email exists in any case.
    pub async fn insert_user(&self, user: &NewUser<'_>) -> StoreResult<UserRecord> {
        let inserted = on_statement!(self, |exec, persistent| sqlx::query_as(concat!(
            "insert into users (name, email, location, about, password, created_at, updated_at)
             values ($1, $2, $3, $4, $5, $6, $6)
             returning ",
            user_columns!()
        ))
        .bind(user.name)
        .bind(user.email)
        .bind(user.location)
        .bind(user.about)
        .bind(user.password_hash)
        .bind(Utc::now())
        .persistent(persistent)
        .fetch_one(exec)
        .await);
        inserted.map_err(|e| if is_email_taken(&e) { StoreError::EmailTaken } else { classify(e) })
    }

    /// Looks an email up case-insensitively.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        run!(
            self,
            query_as(concat!("select ", user_columns!(), " from users where lower(email) = lower($1)"), email)
                .fetch_optional
        )
    }

    pub async fn user_by_id(&self, user_id: i64) -> StoreResult<Option<UserRecord>> {
        run!(
            self,
            query_as(concat!("select ", user_columns!(), " from users where user_id = $1"), user_id).fetch_optional
        )
    }

    /// Replaces a hash by a stronger one of the same password, unless the password has
    /// changed since `current` was read; returns whether it did.
    pub async fn upgrade_password_hash(&self, user_id: i64, current: &str, upgraded: &str) -> StoreResult<bool> {
        let done = run!(
            self,
            query("update users set password = $3 where user_id = $1 and password = $2", user_id, current, upgraded)
                .execute
        )?;
        Ok(done == 1)
    }

    /// In one transaction: replaces the password if it is still `current_hash`, moves the
    /// credentials version on, ends every session, forgets the user's devices but the one
    /// the caller's session logged in with, and starts the new session with that device.
    /// Returns how
    /// many sessions other than the caller's were live, or `None` if the password had
    /// changed meanwhile (then nothing is done).
    pub async fn change_password(&self, change: &PasswordChange<'_>) -> StoreResult<Option<u64>> {
        let PasswordChange { user_id, current_hash, new_hash, current_session, new_session, devices_seen_since } =
            change;
        let prepared = self.prepared_statements;
        let ended = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let Some((version, others, kept)) = replace_password!(
                &mut tx,
                user_id,
                current_hash,
                new_hash,
                new_session.now,
                Some(current_session),
                devices_seen_since,
                prepared
            ) else {
                return Ok(None);
            };
            let device_hash = kept.as_deref();
            let new_session = NewSession { credentials_version: version, device_hash, ..*new_session };
            insert_session!(new_session).persistent(prepared).execute(&mut *tx).await?;
            tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(*user_id)).await?;
            tx.commit().await?;
            Ok(Some(others))
        }
        .await)
        .map_err(classify)?;
        Ok(ended)
    }

    /// Applies a partial profile change; `None` when there is no such user.
    pub async fn update_user(
        &self,
        user_id: i64,
        update: &ProfileUpdate<'_>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserRecord>> {
        let updated = run!(
            self,
            query_as(
                concat!(
                    "update users
                        set name = coalesce($2, name), location = coalesce($3, location),
                            about = case when $4 then $5 else about end, updated_at = $6
                      where user_id = $1
                     returning ",
                    user_columns!()
                ),
                user_id,
                update.name,
                update.location,
                update.about.is_some(),
                update.about.flatten(),
                now,
            )
            .fetch_optional
        )?;
        self.announce_profile(user_id).await?;
        Ok(updated)
    }

    /// Deletes a user with every session, and with the rows that the old app's
    /// `refreshaccesstokens` table (if any) holds for it; `false` when there was no such user.
    pub async fn delete_user(&self, user_id: i64) -> StoreResult<bool> {
        let prepared = self.prepared_statements;
        let deleted = match &self.pool {
            Pool::Postgres(pool) => postgres::delete_user_and_old_tokens(pool, prepared, user_id).await,
            // SQLite databases are authd's own: no table of the old app to clear.
            Pool::Sqlite(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    let deleted = sqlx::query(DELETE_USER).bind(user_id).persistent(prepared).execute(&mut *tx).await?;
                    if deleted.rows_affected() > 0 {
                        tx.log_revocation(prepared, RevocationKind::UserDeleted, SessionChange::User(user_id)).await?;
                    }
                    tx.commit().await?;
                    Ok(deleted.rows_affected())
                }
                .await
            }
        }
        .map_err(classify)?;
        Ok(deleted > 0)
    }
}

/// Whether an insert into `users` clashed with an existing email.
pub(super) fn is_email_taken(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The only unique key a new row can clash on is the email's.
        db.is_unique_violation()
    } else {
        // The old app's case-sensitive constraint may still exist beside ours.
        matches!(db.constraint(), Some("users_email_lower_key" | "users_email_key"))
    }
}
