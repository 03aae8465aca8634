//! `user_roles`: the roles of each user, read into every access token issued to them.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, run};

impl Store {
    /// The user's roles, in name order.
    pub async fn user_roles(&self, user_id: i64) -> StoreResult<Vec<String>> {
        run!(self, query_scalar("select role from user_roles where user_id = $1 order by role", user_id).fetch_all)
    }

    /// Gives `role` to the user; `false` if they had it already (or there is no such user).
    pub async fn grant_role(&self, user_id: i64, role: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let granted = run!(
            self,
            query(
                "insert into user_roles (user_id, role, granted_at)
                 select $1, $2, $3 where exists (select 1 from users where user_id = $1)
                 on conflict (user_id, role) do nothing",
                user_id,
                role,
                now,
            )
            .execute
        )?;
        Ok(granted == 1)
    }

    /// Takes `role` from the user; `false` if they did not have it.
    pub async fn revoke_role(&self, user_id: i64, role: &str) -> StoreResult<bool> {
        let revoked =
            run!(self, query("delete from user_roles where user_id = $1 and role = $2", user_id, role).execute)?;
        Ok(revoked == 1)
    }

    /// Replaces the user's roles by `roles` (each given once), in one transaction.
    pub async fn set_roles(&self, user_id: i64, roles: &[String], now: DateTime<Utc>) -> StoreResult<()> {
        let prepared = self.prepared_statements;
        super::on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query("delete from user_roles where user_id = $1")
                .bind(user_id)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            for role in roles {
                sqlx::query("insert into user_roles (user_id, role, granted_at) values ($1, $2, $3)")
                    .bind(user_id)
                    .bind(role)
                    .bind(now)
                    .persistent(prepared)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(super::classify)
    }
}
