//! `users`: accounts, with the old app's columns (see migrations/postgres).

use chrono::{DateTime, Utc};

use super::{Pool, SessionChange, Store, StoreError, StoreResult, classify, on_pool, postgres, run};

/// The columns a `UserRecord` is read from (a macro, so that `concat!` makes each query a
/// constant).
macro_rules! user_columns {
    () => {
        "user_id, name, email, location, about, password, created_at, updated_at"
    };
}

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
        let inserted = on_pool!(self, |pool| sqlx::query_as(concat!(
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
        .fetch_one(pool)
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

    pub async fn set_password_hash(&self, user_id: i64, hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        run!(
            self,
            query("update users set password = $2, updated_at = $3 where user_id = $1", user_id, hash, now).execute
        )?;
        self.announce(SessionChange::User(user_id)).await
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
        self.announce(SessionChange::User(user_id)).await?;
        Ok(updated)
    }

    /// Deletes a user with every session, and with the rows that the old app's
    /// `refreshaccesstokens` table (if any) holds for it; `false` when there was no such user.
    pub async fn delete_user(&self, user_id: i64) -> StoreResult<bool> {
        let deleted = match &self.pool {
            Pool::Postgres(pool) => postgres::delete_user_and_old_tokens(pool, user_id).await.map_err(classify)?,
            // SQLite databases are authd's own: no table of the old app to clear.
            Pool::Sqlite(_) => run!(self, query(DELETE_USER, user_id).execute)?,
        };
        self.announce(SessionChange::User(user_id)).await?;
        Ok(deleted > 0)
    }
}

/// Whether an insert into `users` clashed with an existing email.
fn is_email_taken(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The only unique key a new row can clash on is the email's.
        db.is_unique_violation()
    } else {
        // The old app's case-sensitive constraint may still exist beside ours.
        matches!(db.constraint(), Some("users_email_lower_key" | "users_email_key"))
    }
}
