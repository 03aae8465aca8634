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

/// Counts a hit under `$1` at `$2` in a fixed window of `$3` milliseconds: a window begun
/// `$3` or more before `$2` starts over at this hit. Every expression of `set` (and of a
/// `where` that may follow) sees the row as it was, so each is one decision.
macro_rules! count_hit {
    () => {
        "insert into throttle (key, hits, window_start_ms, last_hit_ms) values ($1, 1, $2, $2)
         on conflict (key) do update set
           hits = case when throttle.window_start_ms <= $2 - $3 then 1 else throttle.hits + 1 end,
           window_start_ms = case when throttle.window_start_ms <= $2 - $3 then $2 else throttle.window_start_ms end,
           last_hit_ms = $2"
    };
}

/// One hit to count under `key` at `now_ms`, in a fixed window of `window_ms`, if fewer
/// than `ceiling` were counted in it (for a statement run in a transaction of its own).
#[derive(Debug, Clone)]
pub struct CeilingHit {
    pub key: String,
    pub now_ms: i64,
    pub window_ms: i64,
    pub ceiling: i64,
}

/// [`CeilingHit`]: `$1` key, `$2` now, `$3` window, `$4` ceiling; a row back if counted.
pub(super) const HIT_UNDER_CEILING: &str =
    concat!(count_hit!(), " where throttle.window_start_ms <= $2 - $3 or throttle.hits < $4 returning hits");

/// [`Store::throttle_hit_decaying`]: `$1` key, `$2` now, `$3` drip, `$4` ceiling, `$5`
/// enforce (0 or 1). `forgotten`, the failures forgotten since `window_start_ms`, is written
/// out where it is used: `(case when $2 > throttle.window_start_ms then ($2 -
/// throttle.window_start_ms) / $3 else 0 end)`, never negative (another process's clock may
/// be behind).
const DECAYING_HIT: &str = "insert into throttle (key, hits, window_start_ms, last_hit_ms) values ($1, 1, $2, $2)
 on conflict (key) do update set
   hits = case
     when (case when $2 > throttle.window_start_ms then ($2 - throttle.window_start_ms) / $3 else 0 end) >= throttle.hits
       then 1
     else throttle.hits - (case when $2 > throttle.window_start_ms then ($2 - throttle.window_start_ms) / $3 else 0 end) + 1
   end,
   window_start_ms = case
     when (case when $2 > throttle.window_start_ms then ($2 - throttle.window_start_ms) / $3 else 0 end) >= throttle.hits
       then $2
     else throttle.window_start_ms
          + (case when $2 > throttle.window_start_ms then ($2 - throttle.window_start_ms) / $3 else 0 end) * $3
   end,
   last_hit_ms = $2
 where $5 = 0
    or throttle.hits - (case when $2 > throttle.window_start_ms then ($2 - throttle.window_start_ms) / $3 else 0 end) < $4
 returning hits, window_start_ms, last_hit_ms";

/// How many hits one key takes in its window.
#[derive(Debug, Clone, Copy)]
pub enum Allowance {
    /// At most this many.
    Ceiling(i64),
    /// `free` hits; then each must wait 1 s after the last, doubling with every further
    /// hit, up to `max_wait_ms`.
    Backoff { free: i64, max_wait_ms: i64 },
}

impl Store {
    /// Counts one hit under `key`, atomically, in a fixed window of `window_ms`.
    pub async fn throttle_hit(&self, key: &str, now_ms: i64, window_ms: i64) -> StoreResult<ThrottleCount> {
        run!(
            self,
            query_as(concat!(count_hit!(), " returning hits, window_start_ms, last_hit_ms"), key, now_ms, window_ms)
                .fetch_one
        )
    }

    /// Counts one hit under `key` if the `allowance` lets it in, atomically: of concurrent
    /// callers, no more get a count back than the allowance admits. `None` when refused
    /// (nothing is counted then).
    pub async fn throttle_hit_within(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        allowance: Allowance,
    ) -> StoreResult<Option<ThrottleCount>> {
        let (free, max_wait_ms) = match allowance {
            Allowance::Ceiling(ceiling) => (ceiling, 0),
            Allowance::Backoff { free, max_wait_ms } => (free, max_wait_ms.max(1)),
        };
        // The wait is computed in SQL with a shift (both databases have `<<`), its amount
        // kept within 0..30 by the `case` (which evaluates in order) so that nothing
        // overflows; no wait ($5 = 0) makes the free hits a ceiling.
        run!(
            self,
            query_as(
                concat!(
                    count_hit!(),
                    " where throttle.window_start_ms <= $2 - $3 or throttle.hits < $4
                         or ($5 > 0 and throttle.last_hit_ms <= $2 - case
                              when throttle.hits < $4 then 0
                              when throttle.hits - $4 >= 30 then $5
                              when (cast(1000 as bigint) << cast(throttle.hits - $4 as integer)) > $5 then $5
                              else cast(1000 as bigint) << cast(throttle.hits - $4 as integer)
                            end)
                      returning hits, window_start_ms, last_hit_ms"
                ),
                key,
                now_ms,
                window_ms,
                free,
                max_wait_ms,
            )
            .fetch_optional
        )
    }

    /// Counts one failure under `key` in a count that is not a window's: it forgets one
    /// failure every `drip_ms` (`window_start_ms` is then when it last forgot one, or
    /// began). With `enforce`, a count at `ceiling` or past it refuses the hit (`None`,
    /// nothing counted); atomically, as [`Store::throttle_hit_within`]. Without, the hit is
    /// always counted, past the ceiling too, so that taking it back is always right.
    pub async fn throttle_hit_decaying(
        &self,
        key: &str,
        now_ms: i64,
        drip_ms: i64,
        ceiling: i64,
        enforce: bool,
    ) -> StoreResult<Option<ThrottleCount>> {
        run!(self, query_as(DECAYING_HIT, key, now_ms, drip_ms.max(1), ceiling, i64::from(enforce)).fetch_optional)
    }

    /// The count under `key`, whatever its window.
    pub async fn throttle_get(&self, key: &str) -> StoreResult<Option<ThrottleCount>> {
        run!(
            self,
            query_as("select hits, window_start_ms, last_hit_ms from throttle where key = $1", key).fetch_optional
        )
    }

    /// Takes back one hit counted under `key`, whatever its window.
    pub async fn throttle_take_back(&self, key: &str) -> StoreResult<()> {
        run!(self, query("update throttle set hits = hits - 1 where key = $1 and hits > 0", key).execute)?;
        Ok(())
    }

    /// Takes back one hit counted under `key` in the window begun at `window_start_ms`.
    pub async fn throttle_refund(&self, key: &str, window_start_ms: i64) -> StoreResult<()> {
        run!(
            self,
            query(
                "update throttle set hits = hits - 1 where key = $1 and window_start_ms = $2 and hits > 0",
                key,
                window_start_ms,
            )
            .execute
        )?;
        Ok(())
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

    /// Forgets keys not hit since `before_ms`, but those starting with `long_prefix` only
    /// when not hit since `long_before_ms`; returns how many.
    pub async fn throttle_prune(&self, before_ms: i64, long_prefix: &str, long_before_ms: i64) -> StoreResult<u64> {
        run!(
            self,
            query(
                "delete from throttle where last_hit_ms < $1 and (key not like $2 or last_hit_ms < $3)",
                before_ms,
                format!("{long_prefix}%"),
                long_before_ms,
            )
            .execute
        )
    }
}
