//! `throttle`: rate-limit counters, shared by every process on the database.

use super::{Store, StoreResult, run};

/// Hits counted under one throttle key in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ThrottleCount {
    pub hits: i64,
    /// When the window began, in Unix milliseconds.
    pub window_start_ms: i64,
    /// The latest hit, in Unix milliseconds.
    pub last_hit_ms: i64,
}

impl Store {
    /// Counts one hit under `key`, atomically, in a fixed window of `window_ms`: a window
    /// begun `window_ms` or more before `now_ms` starts over at this hit.
    pub async fn throttle_hit(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<ThrottleCount> {
        // Every expression of `set` sees the row as it was, so the reset is one decision.
        run!(
            self,
            query_as(
                "insert into throttle (key, hits, window_start_ms, last_hit_ms) values ($1, 1, $2, $2)
                 on conflict (key) do update set
                   hits = case when throttle.window_start_ms <= $2 - $3 then 1 else throttle.hits + 1 end,
                   window_start_ms = case when throttle.window_start_ms <= $2 - $3 then $2 else throttle.window_start_ms end,
                   last_hit_ms = $2
                 returning hits, window_start_ms, last_hit_ms",
                key,
                now_ms,
                window_ms,
            )
            .fetch_one
        )
    }

    /// The hits under `key` in a window still open at `now_ms`, if any.
    pub async fn throttle_count(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<Option<ThrottleCount>> {
        run!(
            self,
            query_as(
                "select hits, window_start_ms, last_hit_ms from throttle where key = $1 and window_start_ms > $2 - $3",
                key,
                now_ms,
                window_ms,
            )
            .fetch_optional
        )
    }

    pub async fn throttle_clear(&self, key: &str) -> StoreResult<()> {
        run!(self, query("delete from throttle where key = $1", key).execute)?;
        Ok(())
    }

    /// Forgets keys not hit since `before_ms`; returns how many.
    pub async fn throttle_prune(&self, before_ms: i64) -> StoreResult<u64> {
        run!(self, query("delete from throttle where last_hit_ms < $1", before_ms).execute)
    }
}
