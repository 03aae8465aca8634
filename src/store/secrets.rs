//! `secrets`: keys that authd generates when the configuration names none.

use chrono::Utc;

use super::{Store, StoreResult, run};

impl Store {
    /// The secret kept under `name`, storing `candidate` first if there is none; every
    /// replica gets the same answer.
    pub async fn secret(&self, name: &str, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        run!(
            self,
            query(
                "insert into secrets (name, value, created_at) values ($1, $2, $3) on conflict (name) do nothing",
                name,
                candidate,
                Utc::now(),
            )
            .execute
        )?;
        run!(self, query_scalar("select value from secrets where name = $1", name).fetch_one)
    }
}
