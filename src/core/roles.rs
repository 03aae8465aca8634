//! Roles: granted to users by the operator (`authd admin grant|revoke`) or through the
//! admin API, carried in the `roles` claim of the user's next access token (a refresh
//! picks a change up).

use std::sync::Arc;

use chrono::Utc;

use super::{
    ClientInfo, Error, Result,
    audit::{Actor, Audit, Event},
};
use crate::{
    domain::{Email, Role},
    store::Store,
};

/// What a grant or revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Done,
    /// The user had the role already (grant), or did not have it (revoke).
    Unchanged,
}

/// `authd admin grant EMAIL ROLE` (`grant`) or `authd admin revoke EMAIL ROLE`: run by the
/// operator on the store directly, recorded in the audit trail.
pub async fn change_role_as_operator(store: Arc<Store>, email: &str, role: &str, grant: bool) -> Result<RoleChange> {
    let email = Email::parse(email).map_err(|why| Error::invalid("email", &why))?;
    let role = Role::parse(role).map_err(|why| Error::invalid("role", &why))?;
    let user = store.user_by_email(email.as_str()).await?.ok_or(Error::UserNotFound)?;
    let changed = if grant {
        store.grant_role(user.user_id, role.as_str(), Utc::now()).await?
    } else {
        store.revoke_role(user.user_id, role.as_str()).await?
    };
    let event = Event {
        actor: Actor::Operator,
        subject: Some(user.user_id),
        action: if grant { "role_grant" } else { "role_revoke" },
        outcome: "success",
        client: &ClientInfo::default(),
        detail: Some(format!("role={} changed={changed}", role.as_str())),
    };
    Audit::new(store).write(event).await?;
    Ok(if changed { RoleChange::Done } else { RoleChange::Unchanged })
}
