//! `outbox`: mail to send, written by requests and sent by the background sender.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, run};

pub struct NewMail<'a> {
    pub recipient: &'a str,
    pub subject: &'a str,
    /// Sealed (or not) by the caller.
    pub text_body: &'a str,
    pub html_body: &'a str,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailRecord {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    /// Attempts made, this one included once claimed.
    pub attempts: i32,
}

impl Store {
    pub async fn enqueue_mail(&self, mail: &NewMail<'_>) -> StoreResult<()> {
        run!(
            self,
            query(
                "insert into outbox (recipient, subject, text_body, html_body, created_at, next_attempt_at)
                 values ($1, $2, $3, $4, $5, $5)",
                mail.recipient,
                mail.subject,
                mail.text_body,
                mail.html_body,
                mail.now,
            )
            .execute
        )?;
        Ok(())
    }

    /// The ids of up to `limit` mails due at `now`, the longest waiting first.
    pub async fn due_mail(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<i64>> {
        run!(
            self,
            query_scalar(
                "select id from outbox where sent_at is null and failed_at is null and next_attempt_at <= $1
                  order by next_attempt_at limit $2",
                now,
                limit,
            )
            .fetch_all
        )
    }

    /// When the next mail waiting (due or not) falls due, if any.
    pub async fn next_mail_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        run!(
            self,
            query_scalar(
                "select next_attempt_at from outbox where sent_at is null and failed_at is null
                  order by next_attempt_at limit 1"
            )
            .fetch_optional
        )
    }

    /// Takes a due mail for one attempt, atomically (of concurrent senders, one gets it):
    /// counts the attempt, and holds the mail until `lease_until` in case this process
    /// dies before it reports.
    pub async fn claim_mail(
        &self,
        id: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<MailRecord>> {
        run!(
            self,
            query_as(
                "update outbox set attempts = attempts + 1, next_attempt_at = $3
                  where id = $1 and sent_at is null and failed_at is null and next_attempt_at <= $2
                 returning id, recipient, subject, text_body, html_body, attempts",
                id,
                now,
                lease_until,
            )
            .fetch_optional
        )
    }

    /// The mail went out: its bodies (which may hold a token) are dropped.
    pub async fn mail_sent(&self, id: i64, now: DateTime<Utc>) -> StoreResult<()> {
        run!(
            self,
            query(
                "update outbox set sent_at = $2, text_body = '', html_body = '', last_error = null where id = $1",
                id,
                now,
            )
            .execute
        )?;
        Ok(())
    }

    /// An attempt failed: try again at `retry_at`, or, with `None`, give the mail up (its
    /// bodies dropped).
    pub async fn mail_failed(
        &self,
        id: i64,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
        error: &str,
    ) -> StoreResult<()> {
        match retry_at {
            Some(at) => run!(
                self,
                query("update outbox set next_attempt_at = $2, last_error = $3 where id = $1", id, at, error).execute
            )?,
            None => run!(
                self,
                query(
                    "update outbox set failed_at = $2, last_error = $3, text_body = '', html_body = '' where id = $1",
                    id,
                    now,
                    error,
                )
                .execute
            )?,
        };
        Ok(())
    }

    /// Deletes mail sent or given up before `before`; returns how many.
    pub async fn prune_outbox(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        run!(self, query("delete from outbox where sent_at < $1 or failed_at < $1", before).execute)
    }
}
