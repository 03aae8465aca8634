//! `known_devices`: devices that have logged in to an account, by a keyed hash of their token.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, run};

impl Store {
    /// Whether `token_hash` is a device of `user_id` seen since `seen_since`.
    pub async fn is_known_device(
        &self,
        user_id: i64,
        token_hash: &[u8],
        seen_since: DateTime<Utc>,
    ) -> StoreResult<bool> {
        run!(
            self,
            query_scalar(
                "select exists (select 1 from known_devices
                                 where token_hash = $1 and user_id = $2 and last_seen_at >= $3)",
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

    /// Remembers a new device of `user_id`, forgetting those not seen since `seen_since`
    /// and all but the `keep` most recently seen.
    pub async fn add_device(
        &self,
        user_id: i64,
        token_hash: &[u8],
        now: DateTime<Utc>,
        seen_since: DateTime<Utc>,
        keep: i64,
    ) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into known_devices (token_hash, user_id, created_at, last_seen_at) values ($1, $2, $3, $3)",
                token_hash,
                user_id,
                now,
            )
            .execute
        )?;
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
