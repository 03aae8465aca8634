//! `webauthn_users` and `passkey_ceremonies`: each user's WebAuthn user handle, and the
//! state kept between the two halves of a passkey ceremony. The passkeys themselves are
//! factors (`factors`, kind 'passkey').

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ChallengeRecord, FactorRecord, Store, StoreResult, factors::factor_columns, run};

/// What a ceremony is for; the column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a passkey for a signed-in user.
    Register,
    /// Answering a login challenge (the second factor).
    Challenge,
    /// Logging in with a passkey alone.
    Login,
}

impl CeremonyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Challenge => "challenge",
            Self::Login => "login",
        }
    }
}

pub struct NewCeremony<'a> {
    pub purpose: CeremonyPurpose,
    /// What the ceremony may only be finished with: a session, a login challenge's hash
    /// (hex), the ceremony id given to the client.
    pub bound_to: &'a str,
    pub user_id: Option<i64>,
    /// webauthn-rs's state, as JSON.
    pub state: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A ceremony taken for its second half.
#[derive(Debug, sqlx::FromRow)]
pub struct CeremonyRecord {
    pub user_id: Option<i64>,
    pub state: String,
}

impl Store {
    /// Keeps a ceremony's state, replacing any other of the same purpose and binding.
    pub async fn put_ceremony(&self, c: &NewCeremony<'_>) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into passkey_ceremonies (purpose, bound_to, user_id, state, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6)
                 on conflict (purpose, bound_to) do update
                   set user_id = excluded.user_id, state = excluded.state, created_at = excluded.created_at,
                       expires_at = excluded.expires_at",
                c.purpose.as_str(),
                c.bound_to,
                c.user_id,
                c.state,
                c.now,
                c.expires_at,
            )
            .execute
        )?;
        Ok(())
    }

    /// Takes the live ceremony of `purpose` bound to `bound_to`: deleted in the same
    /// statement that reads it, so that it serves once, whatever its second half makes of it.
    pub async fn take_ceremony(
        &self,
        purpose: CeremonyPurpose,
        bound_to: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CeremonyRecord>> {
        run!(
            self,
            query_as(
                "delete from passkey_ceremonies where purpose = $1 and bound_to = $2 and expires_at > $3
                 returning user_id, state",
                purpose.as_str(),
                bound_to,
                now,
            )
            .fetch_optional
        )
    }

    /// Deletes the ceremonies that ran out before `before`.
    pub async fn prune_ceremonies(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        run!(self, query("delete from passkey_ceremonies where expires_at < $1", before).execute)
    }

    /// User `user_id`'s WebAuthn user handle: `candidate` if the user had none yet.
    pub async fn user_handle(&self, user_id: i64, candidate: Uuid) -> StoreResult<Uuid> {
        run!(
            self,
            query(
                "insert into webauthn_users (user_id, user_handle) values ($1, $2) on conflict (user_id) do nothing",
                user_id,
                candidate,
            )
            .execute
        )?;
        run!(self, query_scalar("select user_handle from webauthn_users where user_id = $1", user_id).fetch_one)
    }

    /// The active passkey factor with this credential id, whoever's it is.
    pub async fn passkey_by_credential(&self, credential_id: &[u8]) -> StoreResult<Option<FactorRecord>> {
        run!(
            self,
            query_as(
                concat!(
                    "select ",
                    factor_columns!(),
                    " from factors where credential_id = $1 and kind = 'passkey' and activated_at is not null"
                ),
                credential_id
            )
            .fetch_optional
        )
    }

    /// Stores a passkey factor's state after a use (its counter and backup flags, sealed
    /// already), and when it was used.
    pub async fn passkey_used(&self, factor_id: Uuid, secret: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        let updated = run!(
            self,
            query("update factors set secret = $2, last_used_at = $3 where factor_id = $1", factor_id, secret, now)
                .execute
        )?;
        Ok(updated == 1)
    }

    /// A login challenge that is live at `now` (not consumed, not expired, attempts left),
    /// read without counting an answer.
    pub async fn live_challenge(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
        max_attempts: i32,
    ) -> StoreResult<Option<ChallengeRecord>> {
        run!(
            self,
            query_as(
                "select user_id, methods, amr, device_hash, expires_at, attempts, passkey_state, credentials_version from login_challenges
                  where challenge_hash = $1 and consumed_at is null and expires_at > $2 and attempts < $3",
                hash,
                now,
                max_attempts,
            )
            .fetch_optional
        )
    }

    /// The user whose WebAuthn user handle this is.
    pub async fn user_of_handle(&self, user_handle: Uuid) -> StoreResult<Option<i64>> {
        run!(
            self,
            query_scalar("select user_id from webauthn_users where user_handle = $1", user_handle).fetch_optional
        )
    }
}
