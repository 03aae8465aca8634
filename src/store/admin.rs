//! What the admin API reads and changes about users beyond their own use: listing, the
//! disabled flag, and the last login.

use chrono::{DateTime, Utc};

use super::{
    SessionChange, Store, StoreResult, classify, on_pool,
    revocations::{RevocationKind, RevocationLog},
    run,
    sessions::{FORGET_DEVICES, REVOKE_USER_SESSIONS},
    users::{UserRecord, user_columns},
};

/// A user with what only the operator sees.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminUserRecord {
    #[sqlx(flatten)]
    pub user: UserRecord,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// Which users to list: each `None` matches all; by id, those above `after` (the cursor
/// of the previous page), at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct UserQuery<'a> {
    /// Lowercase, with `%`, `_` and `\` escaped by `\`.
    pub email_prefix: Option<&'a str>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub disabled: Option<bool>,
    pub verified: Option<bool>,
    pub after: i64,
    pub limit: i64,
}

impl Store {
    pub async fn list_users(&self, q: &UserQuery<'_>) -> StoreResult<Vec<AdminUserRecord>> {
        run!(
            self,
            query_as(
                concat!(
                    "select ",
                    user_columns!(),
                    ", disabled_at from users
                      where user_id > $1 and ($2 is null or lower(email) like $2 || '%' escape '\\')
                        and ($3 is null or created_at >= $3) and ($4 is null or created_at < $4)
                        and ($5 is null or (disabled_at is not null) = $5)
                        and ($6 is null or (email_verified_at is not null) = $6)
                      order by user_id
                      limit $7"
                ),
                q.after,
                q.email_prefix,
                q.created_after,
                q.created_before,
                q.disabled,
                q.verified,
                q.limit,
            )
            .fetch_all
        )
    }

    pub async fn admin_user(&self, user_id: i64) -> StoreResult<Option<AdminUserRecord>> {
        run!(
            self,
            query_as(concat!("select ", user_columns!(), ", disabled_at from users where user_id = $1"), user_id)
                .fetch_optional
        )
    }

    /// The roles of the users whose ids are between `first` and `last`, as (user, role).
    pub async fn roles_between(&self, first: i64, last: i64) -> StoreResult<Vec<(i64, String)>> {
        run!(
            self,
            query_as(
                "select user_id, role from user_roles where user_id between $1 and $2 order by user_id, role",
                first,
                last,
            )
            .fetch_all
        )
    }

    /// Whether the account is disabled; `None` when there is no such user.
    pub async fn user_disabled(&self, user_id: i64) -> StoreResult<Option<bool>> {
        run!(self, query_scalar("select disabled_at is not null from users where user_id = $1", user_id).fetch_optional)
    }

    /// Disables the account (keeping the first time it was) and, in the same transaction,
    /// ends every session of it and forgets its devices, its credentials version moving
    /// on so that a login under way starts none; every process hears of it. Returns how
    /// many sessions were live, or `None` when there is no such user.
    pub async fn disable_user(&self, user_id: i64, now: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let prepared = self.prepared_statements;
        let ended = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let version: Option<i64> = sqlx::query_scalar(
                "update users set disabled_at = coalesce(disabled_at, $2), credentials_version = credentials_version + 1
                  where user_id = $1
                 returning credentials_version",
            )
            .bind(user_id)
            .bind(now)
            .persistent(prepared)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(version) = version else { return Ok(None) };
            sqlx::query(FORGET_DEVICES).bind(user_id).bind(version).persistent(prepared).execute(&mut *tx).await?;
            let ended = sqlx::query(REVOKE_USER_SESSIONS)
                .bind(user_id)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(user_id)).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(ended.rows_affected()))
        }
        .await)
        .map_err(classify)?;
        Ok(ended)
    }

    /// Lets a disabled account log in again, logged as a change of the user in the same
    /// transaction; `false` when there is no such user.
    pub async fn enable_user(&self, user_id: i64) -> StoreResult<bool> {
        let prepared = self.prepared_statements;
        let done = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("update users set disabled_at = null where user_id = $1")
                .bind(user_id)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done > 0 {
                tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(user_id)).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done)
        }
        .await)
        .map_err(classify)?;
        Ok(done == 1)
    }

    /// When the user last logged in, as far as the audit trail remembers.
    pub async fn last_login(&self, user_id: i64) -> StoreResult<Option<DateTime<Utc>>> {
        run!(
            self,
            query_scalar(
                "select occurred_at from audit_events
                  where subject_user_id = $1 and action = 'login' and outcome = 'success'
                  order by event_id desc limit 1",
                user_id
            )
            .fetch_optional
        )
    }
}
