//! `known_devices`: devices that have logged in to an account, by a keyed hash of their
//! token, each bound to the credentials version it logged in with.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, run};

/// Remembers a device (`$1` its hash) of user `$2` seen at `$3`, for the credentials
/// version `$4`: a device of any other version is not known.
pub(super) const INSERT_DEVICE: &str =
    "insert into known_devices (token_hash, user_id, created_at, last_seen_at, credentials_version)
     values ($1, $2, $3, $3, $4)";

impl Store {
    /// Whether `token_hash` is a device of `user_id` seen since `seen_since`, that logged
    /// in with the user's credentials as they are now.
    pub async fn is_known_device(
        &self,
        user_id: i64,
        token_hash: &[u8],
        seen_since: DateTime<Utc>,
    ) -> StoreResult<bool> {
        run!(
            self,
            query_scalar(
                "select exists (select 1 from known_devices d join users u on u.user_id = d.user_id
                                 where d.token_hash = $1 and d.user_id = $2 and d.last_seen_at >= $3
                                   and d.credentials_version = u.credentials_version)",
                token_hash,
                user_id,
                seen_since,
            )
            .fetch_one
        )
    }

    /// Notes that the device of `token_hash` has just logged in to `user_id`.
    pub async fn touch_device(&self, user_id: i64, token_hash: &[u8], now: DateTime<Utc>) -> StoreResult<()> {
        run!(
            self,
            query(
                "update known_devices set last_seen_at = $3 where token_hash = $1 and user_id = $2",
                token_hash,
                user_id,
                now,
            )
            .execute
        )?;
        Ok(())
    }

    /// Remembers a new device of `user_id`, which logged in with `credentials_version`,
    /// forgetting those not seen since `seen_since` and all but the `keep` most recently seen.
    pub async fn add_device(
        &self,
        user_id: i64,
        token_hash: &[u8],
        credentials_version: i64,
        now: DateTime<Utc>,
        seen_since: DateTime<Utc>,
        keep: i64,
    ) -> StoreResult<()> {
        run!(self, query(INSERT_DEVICE, token_hash, user_id, now, credentials_version).execute)?;
        run!(
            self,
            query(
                "delete from known_devices
                  where user_id = $1
                    and (last_seen_at < $2
                         or token_hash not in (select token_hash from known_devices where user_id = $1
                                                order by last_seen_at desc limit $3))",
                user_id,
                seen_since,
                keep,
            )
            .execute
        )?;
        Ok(())
    }
}
