//! `factors`, `recovery_codes` and `login_challenges`: a user's second factors, the codes
//! that stand in for them, and logins waiting for one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    NewSession, PRUNE_BATCH, SessionChange, Store, StoreResult, classify, in_batches, on_pool,
    revocations::{RevocationKind, RevocationLog},
    run,
    sessions::insert_session,
};

/// The columns a `FactorRecord` is read from.
macro_rules! factor_columns {
    () => {
        "factor_id, user_id, kind, name, secret, credential_id, created_at, activated_at, last_used_at, last_used_step"
    };
}
pub(super) use factor_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FactorRecord {
    pub factor_id: Uuid,
    pub user_id: i64,
    /// `totp` or `passkey`.
    pub kind: String,
    pub name: String,
    /// As stored: sealed when a key-encryption key is configured.
    pub secret: Vec<u8>,
    pub credential_id: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// TOTP: the last time step accepted.
    pub last_used_step: Option<i64>,
}

pub struct NewFactor<'a> {
    pub factor_id: Uuid,
    pub user_id: i64,
    pub kind: &'a str,
    pub name: &'a str,
    /// Sealed already.
    pub secret: &'a [u8],
    pub credential_id: Option<&'a [u8]>,
    pub now: DateTime<Utc>,
}

/// A factor's activation, which also ends every session of the user and starts the
/// caller's new one.
pub struct FactorActivation<'a> {
    pub factor_id: Uuid,
    pub user_id: i64,
    /// TOTP: the step of the code that activated it (so that it cannot be used again).
    pub step: Option<i64>,
    /// New recovery codes' hashes, replacing any the user had.
    pub recovery_codes: &'a [[u8; 32]],
    /// The caller's session, ended with the others.
    pub current_session: Uuid,
    /// The caller's new session; its `credentials_version` is set here.
    pub new_session: NewSession<'a>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeRecord {
    pub user_id: i64,
    /// What may answer it, space-separated: `totp`, `recovery_code`, `passkey`.
    pub methods: String,
    /// What the login proved so far (space-separated `amr` values).
    pub amr: String,
    /// The known device the login came from, if any.
    pub device_hash: Option<Vec<u8>>,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
    pub passkey_state: Option<String>,
    /// The user's `credentials_version` when the password was proved.
    pub credentials_version: i64,
}

pub struct NewChallenge<'a> {
    pub challenge_hash: &'a [u8],
    pub user_id: i64,
    pub methods: &'a str,
    pub amr: &'a str,
    pub device_hash: Option<&'a [u8]>,
    pub credentials_version: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Replaces the user's recovery codes (`$hashes`, each `[u8; 32]`) inside the transaction
/// `$tx`, for either backend.
macro_rules! replace_codes {
    ($tx:expr, $user_id:expr, $hashes:expr, $now:expr, $prepared:expr) => {
        async {
            let tx = $tx;
            sqlx::query("delete from recovery_codes where user_id = $1")
                .bind($user_id)
                .persistent($prepared)
                .execute(&mut **tx)
                .await?;
            for hash in $hashes {
                sqlx::query("insert into recovery_codes (user_id, code_hash, created_at) values ($1, $2, $3)")
                    .bind($user_id)
                    .bind(&hash[..])
                    .bind($now)
                    .persistent($prepared)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await
    };
}

impl Store {
    /// Adds a factor, unless the user has `max` already; drops first the user's enrolments
    /// of the same kind that were never activated. Returns whether it was added.
    pub async fn insert_factor(&self, f: &NewFactor<'_>, max: i64) -> StoreResult<bool> {
        run!(
            self,
            query("delete from factors where user_id = $1 and kind = $2 and activated_at is null", f.user_id, f.kind)
                .execute
        )?;
        let added = run!(
            self,
            query(
                "insert into factors (factor_id, user_id, kind, name, secret, credential_id, created_at)
                 select $1, $2, $3, $4, $5, $6, $7
                  where (select count(*) from factors where user_id = $2) < $8",
                f.factor_id,
                f.user_id,
                f.kind,
                f.name,
                f.secret,
                f.credential_id,
                f.now,
                max,
            )
            .execute
        )?;
        Ok(added == 1)
    }

    /// The user's factors, oldest first.
    pub async fn user_factors(&self, user_id: i64) -> StoreResult<Vec<FactorRecord>> {
        run!(
            self,
            query_as(
                concat!(
                    "select ",
                    factor_columns!(),
                    " from factors where user_id = $1 order by created_at, factor_id"
                ),
                user_id
            )
            .fetch_all
        )
    }

    /// One of the user's factors.
    pub async fn user_factor(&self, user_id: i64, factor_id: Uuid) -> StoreResult<Option<FactorRecord>> {
        run!(
            self,
            query_as(
                concat!("select ", factor_columns!(), " from factors where factor_id = $1 and user_id = $2"),
                factor_id,
                user_id
            )
            .fetch_optional
        )
    }

    /// Every factor's id and stored secret (for sealing them when a key-encryption key is
    /// first set).
    pub async fn factor_secrets(&self) -> StoreResult<Vec<(Uuid, Vec<u8>)>> {
        run!(self, query_as("select factor_id, secret from factors").fetch_all)
    }

    /// Replaces a factor's stored secret, if it is still `current`; returns whether it did.
    pub async fn replace_factor_secret(&self, factor_id: Uuid, current: &[u8], new: &[u8]) -> StoreResult<bool> {
        let replaced = run!(
            self,
            query("update factors set secret = $3 where factor_id = $1 and secret = $2", factor_id, current, new)
                .execute
        )?;
        Ok(replaced == 1)
    }

    /// Whether the user has an active factor.
    pub async fn has_active_factor(&self, user_id: i64) -> StoreResult<bool> {
        run!(
            self,
            query_scalar(
                "select exists (select 1 from factors where user_id = $1 and activated_at is not null)",
                user_id
            )
            .fetch_one
        )
    }

    /// Remembers that the factor accepted a TOTP code of `step` at `now`, if no code of
    /// that step or a later one was accepted before: of two uses of one code, one only
    /// gets `true`. Only for an active factor.
    pub async fn use_totp_step(&self, factor_id: Uuid, step: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        let used = run!(
            self,
            query(
                "update factors set last_used_step = $2, last_used_at = $3
                  where factor_id = $1 and activated_at is not null
                    and (last_used_step is null or last_used_step < $2)",
                factor_id,
                step,
                now,
            )
            .execute
        )?;
        Ok(used == 1)
    }

    /// Activates a factor (not active yet, and not past `step`), replaces the user's
    /// recovery codes when new ones are given, and ends every session of the user (the
    /// credentials version moves on, the known devices stay known) but starts the
    /// caller's new one, in one transaction. Returns how many other sessions ended, or
    /// `None` when the factor could not be activated (gone, active already, or its step
    /// used).
    pub async fn activate_factor(&self, a: &FactorActivation<'_>) -> StoreResult<Option<u64>> {
        let prepared = self.prepared_statements;
        let now = a.new_session.now;
        let ended = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let activated = sqlx::query(
                "update factors set activated_at = $3, last_used_at = $3, last_used_step = $4
                  where factor_id = $1 and user_id = $2 and activated_at is null
                    and (last_used_step is null or $4 is null or last_used_step < $4)",
            )
            .bind(a.factor_id)
            .bind(a.user_id)
            .bind(now)
            .bind(a.step)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?;
            if activated.rows_affected() != 1 {
                return Ok::<_, sqlx::Error>(None);
            }
            if !a.recovery_codes.is_empty() {
                replace_codes!(&mut tx, a.user_id, a.recovery_codes, now, prepared)?;
            }
            let version: Option<i64> = sqlx::query_scalar(
                "update users set credentials_version = credentials_version + 1 where user_id = $1
                 returning credentials_version",
            )
            .bind(a.user_id)
            .persistent(prepared)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(version) = version else { return Ok(None) };
            sqlx::query(
                "update known_devices set credentials_version = $2 where user_id = $1 and credentials_version = $2 - 1",
            )
            .bind(a.user_id)
            .bind(version)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?;
            sqlx::query("update sessions set revoked_at = $2 where session_id = $1 and revoked_at is null")
                .bind(a.current_session)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            let others = sqlx::query(super::sessions::REVOKE_USER_SESSIONS)
                .bind(a.user_id)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let new_session = NewSession { credentials_version: version, ..a.new_session };
            insert_session!(new_session).persistent(prepared).execute(&mut *tx).await?;
            tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(a.user_id)).await?;
            tx.commit().await?;
            Ok(Some(others))
        }
        .await)
        .map_err(classify)?;
        Ok(ended)
    }

    /// Removes one of the user's factors; when no active one is left, the recovery codes
    /// go too. Returns how many active factors are left, or `None` if there was no such
    /// factor.
    pub async fn remove_factor(&self, user_id: i64, factor_id: Uuid) -> StoreResult<Option<i64>> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query("delete from factors where factor_id = $1 and user_id = $2")
                .bind(factor_id)
                .bind(user_id)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            if removed.rows_affected() != 1 {
                return Ok::<_, sqlx::Error>(None);
            }
            let left: i64 =
                sqlx::query_scalar("select count(*) from factors where user_id = $1 and activated_at is not null")
                    .bind(user_id)
                    .persistent(prepared)
                    .fetch_one(&mut *tx)
                    .await?;
            // A login that waits for a second factor may not go on with one removed.
            sqlx::query("delete from login_challenges where user_id = $1")
                .bind(user_id)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            if left == 0 {
                sqlx::query("delete from recovery_codes where user_id = $1")
                    .bind(user_id)
                    .persistent(prepared)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Some(left))
        }
        .await)
        .map_err(classify)
    }

    /// Replaces the user's recovery codes with these (their hashes).
    pub async fn replace_recovery_codes(
        &self,
        user_id: i64,
        hashes: &[[u8; 32]],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            replace_codes!(&mut tx, user_id, hashes, now, prepared)?;
            tx.commit().await
        }
        .await)
        .map_err(classify)
    }

    /// Uses one of the user's recovery codes, if it is theirs and unused: of two uses of one
    /// code, one only gets `true`.
    pub async fn use_recovery_code(&self, user_id: i64, hash: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        let used = run!(
            self,
            query(
                "update recovery_codes set used_at = $3 where user_id = $1 and code_hash = $2 and used_at is null",
                user_id,
                hash,
                now,
            )
            .execute
        )?;
        Ok(used == 1)
    }

    /// How many unused recovery codes the user has.
    pub async fn recovery_codes_left(&self, user_id: i64) -> StoreResult<i64> {
        run!(
            self,
            query_scalar("select count(*) from recovery_codes where user_id = $1 and used_at is null", user_id)
                .fetch_one
        )
    }

    pub async fn insert_challenge(&self, c: &NewChallenge<'_>) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into login_challenges
                   (challenge_hash, user_id, methods, amr, device_hash, created_at, expires_at, credentials_version)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
                c.challenge_hash,
                c.user_id,
                c.methods,
                c.amr,
                c.device_hash,
                c.now,
                c.expires_at,
                c.credentials_version,
            )
            .execute
        )?;
        Ok(())
    }

    /// Counts an answer to a challenge that is live at `now` (not consumed, not expired)
    /// and has been answered fewer than `max_attempts` times; `None` otherwise.
    pub async fn count_challenge_answer(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
        max_attempts: i32,
    ) -> StoreResult<Option<ChallengeRecord>> {
        run!(
            self,
            query_as(
                "update login_challenges set attempts = attempts + 1
                  where challenge_hash = $1 and consumed_at is null and expires_at > $2 and attempts < $3
                 returning user_id, methods, amr, device_hash, expires_at, attempts, passkey_state, credentials_version",
                hash,
                now,
                max_attempts,
            )
            .fetch_optional
        )
    }

    /// Uses up a challenge, if it is still live: of two answers, one only gets `true`.
    pub async fn consume_challenge(&self, hash: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        let consumed = run!(
            self,
            query(
                "update login_challenges set consumed_at = $2
                  where challenge_hash = $1 and consumed_at is null and expires_at > $2",
                hash,
                now,
            )
            .execute
        )?;
        Ok(consumed == 1)
    }

    /// Keeps a WebAuthn ceremony's state on a live challenge; `false` if it is not live.
    pub async fn set_challenge_passkey_state(&self, hash: &[u8], state: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let set = run!(
            self,
            query(
                "update login_challenges set passkey_state = $2
                  where challenge_hash = $1 and consumed_at is null and expires_at > $3",
                hash,
                state,
                now,
            )
            .execute
        )?;
        Ok(set == 1)
    }

    /// Deletes challenges that expired before `before`; returns how many.
    pub async fn delete_expired_challenges(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        in_batches(|| async {
            run!(
                self,
                query(
                    "delete from login_challenges where challenge_hash in (
                       select challenge_hash from login_challenges where expires_at < $1 limit $2)",
                    before,
                    PRUNE_BATCH,
                )
                .execute
            )
        })
        .await
    }
}
