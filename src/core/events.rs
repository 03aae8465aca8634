//! Security events: one structured log event for each thing an auditor or an alert looks
//! for, under the target `authd::security`, so that they can be routed apart (by
//! `RUST_LOG=authd::security=info`, or by the `target` of the JSON log). Each names who (a
//! user id, or for a failed login a keyed digest of the account), from where (the client
//! address) and how it went (`outcome`: success, failure or refused); never a password, a
//! token or an email. One function per event, so that each call site is one line. Each
//! but the in-process address limit's refusals (a flood guard, which must not turn a flood
//! into database writes) is also recorded in the audit trail (`audit`).

use std::time::Duration;

use uuid::Uuid;

use super::{
    ClientInfo,
    audit::{Actor, Audit, Event},
};

/// Records one event in the audit trail.
fn audit(
    audit: &Audit,
    actor: Actor,
    subject: Option<i64>,
    action: &'static str,
    outcome: &'static str,
    client: &ClientInfo,
    detail: Option<String>,
) {
    audit.record(Event { actor, subject, action, outcome, client, detail });
}

fn ip(client: &ClientInfo) -> &str {
    client.ip.as_deref().unwrap_or("unknown")
}

/// The client certificate's name, for a caller authenticated by mTLS.
fn certificate(client: &ClientInfo) -> Option<&str> {
    client.certificate.as_deref().map(super::ClientCertificate::name)
}

fn outcome(succeeded: bool) -> &'static str {
    if succeeded { "success" } else { "failure" }
}

pub fn login_succeeded(trail: &Audit, user_id: i64, session_id: Uuid, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "login", outcome = "success", user_id, %session_id,
        client_ip = ip(client), client_cert = certificate(client), "login succeeded");
    let detail = Some(format!("session_id={session_id}"));
    audit(trail, Actor::User(user_id), Some(user_id), "login", "success", client, detail);
}

/// A wrong password, or an email with no account (then `user_id` is `None`).
pub fn login_failed(trail: &Audit, account: &str, user_id: Option<i64>, client: &ClientInfo) {
    tracing::warn!(target: "authd::security", event = "login", outcome = "failure", account, user_id,
        client_ip = ip(client), "login failed");
    audit(trail, Actor::Anonymous, user_id, "login", "failure", client, Some(format!("account={account}")));
}

/// A call refused by a rate limit: `limit` names which (`address`, `ip`, `account_ip`,
/// `account`); `account` is the account's digest when the limit is about one. Recorded in
/// the audit trail when `trail` is given (not by the in-process address limit).
pub fn throttled(
    trail: Option<&Audit>,
    action: &str,
    limit: &str,
    client: &ClientInfo,
    account: Option<&str>,
    retry_after: Duration,
) {
    tracing::warn!(target: "authd::security", event = "throttled", outcome = "refused", action, limit, account,
        client_ip = ip(client), retry_after_s = retry_after.as_secs(), "throttled");
    if let Some(trail) = trail {
        let account = account.map(|a| format!(" account={a}")).unwrap_or_default();
        let detail = Some(format!("action={action} limit={limit}{account}"));
        audit(trail, Actor::Anonymous, None, "throttled", "refused", client, detail);
    }
}

/// A rotated refresh token presented again, past the grace window: the session ended.
pub fn refresh_token_reused(trail: &Audit, user_id: i64, session_id: Uuid, client: &ClientInfo) {
    tracing::warn!(target: "authd::security", event = "refresh_token_reuse", outcome = "refused", user_id,
        %session_id, client_ip = ip(client), "refresh token reused: session revoked");
    let detail = Some(format!("session_id={session_id}"));
    audit(trail, Actor::Anonymous, Some(user_id), "refresh_token_reuse", "refused", client, detail);
}

/// Sessions ended before their time: `session_id` for one, `None` for all of the user's
/// (or several); `reason` says why (`logout`, `logout_all`, `revoked`,
/// `refresh_token_reuse`, `session_cap`, `token_revocation`).
pub fn sessions_revoked(
    trail: &Audit,
    user_id: i64,
    session_id: Option<Uuid>,
    ended: u64,
    reason: &str,
    client: &ClientInfo,
) {
    let session_id = session_id.map(|id| id.to_string());
    tracing::info!(target: "authd::security", event = "session_revoked", outcome = "success", user_id,
        session_id, ended, reason, client_ip = ip(client), "sessions revoked");
    // Whoever holds a token may revoke it, or replay it: not necessarily its user.
    let actor = match reason {
        "refresh_token_reuse" | "token_revocation" => Actor::Anonymous,
        _ => Actor::User(user_id),
    };
    let session = session_id.map(|id| format!(" session_id={id}")).unwrap_or_default();
    let detail = Some(format!("reason={reason} ended={ended}{session}"));
    audit(trail, actor, Some(user_id), "session_revoked", "success", client, detail);
}

/// A password change, or one refused for a wrong current password.
pub fn password_changed(trail: &Audit, user_id: i64, changed: bool, sessions_ended: u64, client: &ClientInfo) {
    if changed {
        tracing::info!(target: "authd::security", event = "password_change", outcome = "success", user_id,
            sessions_ended, client_ip = ip(client), "password changed");
    } else {
        tracing::warn!(target: "authd::security", event = "password_change", outcome = outcome(false), user_id,
            client_ip = ip(client), "password change refused: wrong current password");
    }
    let detail = changed.then(|| format!("sessions_ended={sessions_ended}"));
    audit(trail, Actor::User(user_id), Some(user_id), "password_change", outcome(changed), client, detail);
}

/// An account deletion, or one refused for a wrong password.
pub fn account_deleted(trail: &Audit, user_id: i64, deleted: bool, client: &ClientInfo) {
    if deleted {
        tracing::info!(target: "authd::security", event = "account_deletion", outcome = "success", user_id,
            client_ip = ip(client), "account deleted");
    } else {
        tracing::warn!(target: "authd::security", event = "account_deletion", outcome = outcome(false), user_id,
            client_ip = ip(client), "account deletion refused: wrong password");
    }
    audit(trail, Actor::User(user_id), Some(user_id), "account_deletion", outcome(deleted), client, None);
}

/// A right password for an address not verified yet, while verification is required.
pub fn login_unverified(trail: &Audit, user_id: i64, client: &ClientInfo) {
    tracing::warn!(target: "authd::security", event = "login", outcome = "refused", user_id,
        client_ip = ip(client), "login refused: email not verified");
    let detail = Some("email not verified".to_owned());
    audit(trail, Actor::User(user_id), Some(user_id), "login", "refused", client, detail);
}

/// The right password for an account an operator disabled.
pub fn login_disabled(trail: &Audit, user_id: i64, client: &ClientInfo) {
    tracing::warn!(target: "authd::security", event = "login", outcome = "refused", user_id,
        client_ip = ip(client), "login refused: account disabled");
    let detail = Some("account disabled".to_owned());
    audit(trail, Actor::User(user_id), Some(user_id), "login", "refused", client, detail);
}

/// A verification by link or code; a wrong code names the user when the address has one.
pub fn email_verified(trail: &Audit, user_id: Option<i64>, verified: bool, client: &ClientInfo) {
    if verified {
        tracing::info!(target: "authd::security", event = "email_verification", outcome = "success", user_id,
            client_ip = ip(client), "email verified");
    } else {
        tracing::warn!(target: "authd::security", event = "email_verification", outcome = outcome(false), user_id,
            client_ip = ip(client), "email verification refused: wrong code");
    }
    let actor = if verified { user_id.map_or(Actor::Anonymous, Actor::User) } else { Actor::Anonymous };
    audit(trail, actor, user_id, "email_verification", outcome(verified), client, None);
}

/// A password reset asked for `account` (its digest); `user_id` is `None` when the address
/// has no account (then no mail goes out).
pub fn password_reset_requested(trail: &Audit, account: &str, user_id: Option<i64>, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "password_reset_request", outcome = "success", account,
        user_id, client_ip = ip(client), "password reset requested");
    let detail = Some(format!("account={account}"));
    audit(trail, Actor::Anonymous, user_id, "password_reset_request", "success", client, detail);
}

/// A password set by a reset token: every session ended.
pub fn password_reset(trail: &Audit, user_id: i64, sessions_ended: u64, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "password_reset", outcome = "success", user_id,
        sessions_ended, client_ip = ip(client), "password reset");
    let detail = Some(format!("sessions_ended={sessions_ended}"));
    audit(trail, Actor::User(user_id), Some(user_id), "password_reset", "success", client, detail);
}

/// An email change asked for, or refused for a wrong current password.
pub fn email_change_requested(trail: &Audit, user_id: i64, accepted: bool, client: &ClientInfo) {
    if accepted {
        tracing::info!(target: "authd::security", event = "email_change_request", outcome = "success", user_id,
            client_ip = ip(client), "email change requested");
    } else {
        tracing::warn!(target: "authd::security", event = "email_change_request", outcome = outcome(false), user_id,
            client_ip = ip(client), "email change refused");
    }
    audit(trail, Actor::User(user_id), Some(user_id), "email_change_request", outcome(accepted), client, None);
}

/// An email change confirmed from the new address: the other sessions ended.
pub fn email_changed(trail: &Audit, user_id: i64, sessions_ended: u64, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "email_change", outcome = "success", user_id,
        sessions_ended, client_ip = ip(client), "email changed");
    let detail = Some(format!("sessions_ended={sessions_ended}"));
    audit(trail, Actor::User(user_id), Some(user_id), "email_change", "success", client, detail);
}

/// A right password for a user with a second factor: a challenge was issued, answerable
/// by `methods`.
pub fn second_factor_challenged(trail: &Audit, user_id: i64, methods: &str, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "second_factor_challenge", outcome = "success", user_id,
        methods, client_ip = ip(client), "password right: second factor challenged");
    let detail = Some(format!("methods={methods}"));
    audit(trail, Actor::User(user_id), Some(user_id), "second_factor_challenge", "success", client, detail);
}

/// A login's challenge answered with `method` (`totp`, `recovery_code`, ...), right or wrong.
pub fn second_factor_answered(trail: &Audit, user_id: i64, method: &str, right: bool, client: &ClientInfo) {
    if right {
        tracing::info!(target: "authd::security", event = "second_factor", outcome = "success", user_id, method,
            client_ip = ip(client), "second factor accepted");
    } else {
        tracing::warn!(target: "authd::security", event = "second_factor", outcome = "failure", user_id, method,
            client_ip = ip(client), "second factor refused");
    }
    // Whoever holds the challenge answers it: the user, once it is right.
    let actor = if right { Actor::User(user_id) } else { Actor::Anonymous };
    let detail = Some(format!("method={method}"));
    audit(trail, actor, Some(user_id), "second_factor", outcome(right), client, detail);
}

/// A factor enrolled, activated or removed (`action`: `factor_enrolled`,
/// `factor_activated`, `factor_removed`).
pub fn factor_changed(
    trail: &Audit,
    user_id: i64,
    action: &'static str,
    factor_id: Uuid,
    kind: &str,
    client: &ClientInfo,
) {
    tracing::info!(target: "authd::security", event = action, outcome = "success", user_id, %factor_id, kind,
        client_ip = ip(client), "second factor changed");
    let detail = Some(format!("factor_id={factor_id} kind={kind}"));
    audit(trail, Actor::User(user_id), Some(user_id), action, "success", client, detail);
}

/// A change of factors (`action` as for [`factor_changed`], or
/// `recovery_codes_regenerated`) refused: a wrong code or proof.
pub fn factor_changed_failed(trail: &Audit, user_id: i64, action: &'static str, client: &ClientInfo) {
    tracing::warn!(target: "authd::security", event = action, outcome = "failure", user_id,
        client_ip = ip(client), "second factor change refused: no valid proof");
    audit(trail, Actor::User(user_id), Some(user_id), action, "failure", client, None);
}

/// New recovery codes issued (`why`: `activation` or `regenerated`), the old ones void.
pub fn recovery_codes_issued(trail: &Audit, user_id: i64, why: &str, client: &ClientInfo) {
    tracing::info!(target: "authd::security", event = "recovery_codes_regenerated", outcome = "success", user_id,
        why, client_ip = ip(client), "recovery codes issued");
    let detail = Some(format!("reason={why}"));
    audit(trail, Actor::User(user_id), Some(user_id), "recovery_codes_regenerated", "success", client, detail);
}
