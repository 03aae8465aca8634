//! `email_tokens`: one-time tokens sent by mail, kept as hashes, and what redeeming each does.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    CeilingHit, SessionChange, Store, StoreError, StoreResult, classify, on_pool,
    revocations::{RevocationKind, RevocationLog},
    run,
    throttle::HIT_UNDER_CEILING,
    users::is_email_taken,
    users::replace_password,
};

/// What a token is for; the column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The address in `email` is the user's.
    Verify,
    /// A new password.
    Reset,
    /// The user's address becomes `email`.
    Change,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
            Self::Change => "change",
        }
    }
}

pub struct NewEmailToken<'a> {
    pub token_hash: &'a [u8],
    pub user_id: i64,
    pub purpose: Purpose,
    pub email: &'a str,
    pub code_hash: Option<&'a str>,
    pub session_id: Option<Uuid>,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A token that may still be used.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailTokenRecord {
    pub user_id: i64,
    pub email: String,
    pub session_id: Option<Uuid>,
}

/// A confirmed email change.
#[derive(Debug, Clone)]
pub struct EmailChanged {
    pub user_id: i64,
    pub old_email: String,
    pub new_email: String,
    pub sessions_ended: u64,
}

/// Wrong codes a verification token takes before its code is void (its link still works).
pub const CODE_ATTEMPTS: i64 = 5;

/// Voids every unused token of user `$1` at `$2`: run with each change of credentials (a
/// password reset or change, logging out everywhere), so that nothing mailed before
/// outlives them, a pending email change least of all.
pub(super) const VOID_USER_TOKENS: &str = "update email_tokens set used_at = $2 where user_id = $1 and used_at is null";

/// Uses the live token `$1` of purpose `$2` at `$3`: for `verify` and `reset`, if the
/// user's address is still the one it was mailed to; for an email change, if the session
/// that asked for it is still live (a password change, a reset or logging out everywhere
/// ends it, and with it the change).
const USE_TOKEN: &str = "update email_tokens set used_at = $3
  where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3
    and case when $2 = 'change'
          then exists (select 1 from sessions s
                        where s.session_id = email_tokens.session_id and s.user_id = email_tokens.user_id
                          and s.revoked_at is null and s.expires_at > $3)
          else exists (select 1 from users u
                        where u.user_id = email_tokens.user_id and lower(u.email) = lower(email_tokens.email))
        end
 returning user_id, email, session_id";

/// Marks user `$1`'s address verified at `$3` if it is still `$2`.
const MARK_VERIFIED: &str = "update users set email_verified_at = $3
  where user_id = $1 and lower(email) = lower($2) and email_verified_at is null";

/// Counts a guess `$2` at `$3` against user `$1`'s live verification tokens whose wrong
/// codes are fewer than `$4`, and uses the one whose code it is (if the address is still
/// the one it was mailed to): the check and the count are one statement, so each guess
/// takes a slot before it is compared.
const CHECK_CODE: &str = "update email_tokens set attempts = attempts + 1,
    used_at = case when code_hash = $2
                     and exists (select 1 from users u
                                  where u.user_id = email_tokens.user_id and lower(u.email) = lower(email_tokens.email))
                   then $3 end
  where user_id = $1 and purpose = 'verify' and used_at is null and expires_at > $3 and attempts < $4
 returning user_id, email, used_at";

/// A verification token a code was checked against.
#[derive(Debug, sqlx::FromRow)]
struct CodeChecked {
    user_id: i64,
    email: String,
    used_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Stores a token, voiding the user's earlier unused ones of the same purpose (only the
    /// latest mail works).
    pub async fn insert_email_token(&self, t: &NewEmailToken<'_>) -> StoreResult<()> {
        let prepared = self.prepared_statements;
        on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query("update email_tokens set used_at = $3 where user_id = $1 and purpose = $2 and used_at is null")
                .bind(t.user_id)
                .bind(t.purpose.as_str())
                .bind(t.now)
                .persistent(prepared).execute(&mut *tx)
                .await?;
            sqlx::query(
                "insert into email_tokens (token_hash, user_id, purpose, email, code_hash, session_id, created_at, expires_at)
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(t.token_hash)
            .bind(t.user_id)
            .bind(t.purpose.as_str())
            .bind(t.email)
            .bind(t.code_hash)
            .bind(t.session_id)
            .bind(t.now)
            .bind(t.expires_at)
            .persistent(prepared).execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await)
        .map_err(classify)
    }

    /// The live token of `purpose` with this hash, if any (nothing is used up).
    pub async fn email_token(
        &self,
        token_hash: &[u8],
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EmailTokenRecord>> {
        run!(
            self,
            query_as(
                "select user_id, email, session_id from email_tokens
                  where token_hash = $1 and purpose = $2 and used_at is null and expires_at > $3",
                token_hash,
                purpose.as_str(),
                now,
            )
            .fetch_optional
        )
    }

    /// Uses a verification token and marks the address it was mailed to verified, if it
    /// is still the user's. The user's id, or `None` for a token that is not live.
    pub async fn verify_email_with_token(&self, token_hash: &[u8], now: DateTime<Utc>) -> StoreResult<Option<i64>> {
        let used: Option<EmailTokenRecord> =
            run!(self, query_as(USE_TOKEN, token_hash, Purpose::Verify.as_str(), now).fetch_optional)?;
        let Some(used) = used else { return Ok(None) };
        self.mark_verified(used.user_id, &used.email, now).await?;
        Ok(Some(used.user_id))
    }

    /// Checks a code in one transaction: counts the guess under the address's `guesses`
    /// (refused past its ceiling, so that a resent code starts no new budget), then, in one
    /// statement that checks and counts at once (concurrent guesses cannot all pass the
    /// cap), counts it against the user's live verification token and uses the token if the
    /// code is its own, the cap not reached and the address still the user's; then marks
    /// the address verified. An unknown address (`user_id` -1) takes the same statements.
    /// Whether the address is now verified.
    pub async fn verify_email_with_code(
        &self,
        guesses: &CeilingHit,
        user_id: i64,
        code_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let prepared = self.prepared_statements;
        let verified = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let counted: Option<i64> = sqlx::query_scalar(HIT_UNDER_CEILING)
                .bind(&guesses.key)
                .bind(guesses.now_ms)
                .bind(guesses.window_ms)
                .bind(guesses.ceiling)
                .persistent(prepared)
                .fetch_optional(&mut *tx)
                .await?;
            if counted.is_none() {
                tx.commit().await?;
                return Ok(None);
            }
            let checked: Vec<CodeChecked> = sqlx::query_as(CHECK_CODE)
                .bind(user_id)
                .bind(code_hash)
                .bind(now)
                .bind(CODE_ATTEMPTS)
                .persistent(prepared)
                .fetch_all(&mut *tx)
                .await?;
            let Some(used) = checked.into_iter().find(|c| c.used_at.is_some()) else {
                tx.commit().await?;
                return Ok(None);
            };
            sqlx::query(MARK_VERIFIED)
                .bind(used.user_id)
                .bind(&used.email)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(used.user_id))
        }
        .await)
        .map_err(classify)?;
        match verified {
            Some(user_id) => {
                self.announce_profile(user_id).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn mark_verified(&self, user_id: i64, email: &str, now: DateTime<Utc>) -> StoreResult<()> {
        run!(self, query(MARK_VERIFIED, user_id, email, now).execute)?;
        self.announce_profile(user_id).await
    }

    /// In one transaction: uses the reset token, replaces the password (if it is still
    /// `current_hash`) as a password change does, ending every session and forgetting the
    /// devices, and marks the address verified (the mail reached it). How many sessions
    /// ended, or `None` if the token is not live or the password changed meanwhile.
    pub async fn reset_password(
        &self,
        token_hash: &[u8],
        user_id: i64,
        current_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<u64>> {
        let prepared = self.prepared_statements;
        let ended = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let used: Option<EmailTokenRecord> = sqlx::query_as(USE_TOKEN)
                .bind(token_hash)
                .bind(Purpose::Reset.as_str())
                .bind(now)
                .persistent(prepared)
                .fetch_optional(&mut *tx)
                .await?;
            if used.is_none_or(|used| used.user_id != user_id) {
                return Ok(None);
            }
            let Some((_, ended, _)) =
                replace_password!(&mut tx, user_id, current_hash, new_hash, now, None::<&Uuid>, now, prepared)
            else {
                return Ok(None);
            };
            sqlx::query("update users set email_verified_at = coalesce(email_verified_at, $2) where user_id = $1")
                .bind(user_id)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(user_id)).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(ended))
        }
        .await)
        .map_err(classify)?;
        Ok(ended)
    }

    /// In one transaction: uses the email-change token, makes its address the user's
    /// (verified), voids the user's other unused tokens, and ends every session but the
    /// one that asked for the change. `None` for a token that is not live;
    /// [`StoreError::EmailTaken`] if another account took the address meanwhile (then
    /// nothing changes, and the token stays unused).
    pub async fn confirm_email_change(
        &self,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EmailChanged>> {
        let prepared = self.prepared_statements;
        let changed = on_pool!(self, |pool| async {
            let mut tx = pool.begin().await?;
            let used: Option<EmailTokenRecord> = sqlx::query_as(USE_TOKEN)
                .bind(token_hash)
                .bind(Purpose::Change.as_str())
                .bind(now)
                .persistent(prepared)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(used) = used else { return Ok(None) };
            let old_email: String = sqlx::query_scalar("select email from users where user_id = $1")
                .bind(used.user_id)
                .persistent(prepared)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("update users set email = $2, email_verified_at = $3, updated_at = $3 where user_id = $1")
                .bind(used.user_id)
                .bind(&used.email)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            sqlx::query("update email_tokens set used_at = $2 where user_id = $1 and used_at is null")
                .bind(used.user_id)
                .bind(now)
                .persistent(prepared)
                .execute(&mut *tx)
                .await?;
            let ended = sqlx::query(
                "update sessions set revoked_at = $2
                  where user_id = $1 and revoked_at is null and ($3 is null or session_id <> $3)",
            )
            .bind(used.user_id)
            .bind(now)
            .bind(used.session_id)
            .persistent(prepared)
            .execute(&mut *tx)
            .await?;
            tx.log_revocation(prepared, RevocationKind::User, SessionChange::User(used.user_id)).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(EmailChanged {
                user_id: used.user_id,
                old_email,
                new_email: used.email,
                sessions_ended: ended.rows_affected(),
            }))
        }
        .await);
        let changed = changed.map_err(|e| if is_email_taken(&e) { StoreError::EmailTaken } else { classify(e) })?;
        Ok(changed)
    }

    /// Deletes tokens that expired before `before`; returns how many.
    pub async fn prune_email_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        run!(self, query("delete from email_tokens where expires_at < $1", before).execute)
    }
}
