//! `webauthn_users` and `passkey_ceremonies`: each user's WebAuthn user handle, and the
//! state kept between the two halves of a passkey ceremony. The passkeys themselves are
//! factors (`factors`, kind 'passkey').

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreResult, run};

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
    pub ceremony_id: Uuid,
    pub purpose: CeremonyPurpose,
    pub user_id: Option<i64>,
    /// What the ceremony may only be finished with: a session, a login challenge.
    pub bound_to: Option<&'a str>,
    /// webauthn-rs's state, as JSON.
    pub state: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A ceremony taken for its second half.
#[derive(Debug, sqlx::FromRow)]
pub struct CeremonyRecord {
    pub user_id: Option<i64>,
    pub bound_to: Option<String>,
    pub state: String,
}

impl Store {
    pub async fn insert_ceremony(&self, c: &NewCeremony<'_>) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into passkey_ceremonies (ceremony_id, purpose, user_id, bound_to, state, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6, $7)",
                c.ceremony_id,
                c.purpose.as_str(),
                c.user_id,
                c.bound_to,
                c.state,
                c.now,
                c.expires_at,
            )
            .execute
        )?;
        Ok(())
    }

    /// Takes the live ceremony `ceremony_id` of `purpose`: deleted in the same statement
    /// that reads it, so that it serves once, whatever its second half makes of it.
    pub async fn take_ceremony(
        &self,
        ceremony_id: Uuid,
        purpose: CeremonyPurpose,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CeremonyRecord>> {
        run!(
            self,
            query_as(
                "delete from passkey_ceremonies where ceremony_id = $1 and purpose = $2 and expires_at > $3
                 returning user_id, bound_to, state",
                ceremony_id,
                purpose.as_str(),
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

    /// The user whose WebAuthn user handle this is.
    pub async fn user_of_handle(&self, user_handle: Uuid) -> StoreResult<Option<i64>> {
        run!(
            self,
            query_scalar("select user_id from webauthn_users where user_handle = $1", user_handle).fetch_optional
        )
    }
}
