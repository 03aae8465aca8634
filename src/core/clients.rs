//! Service clients: the services that call authd (ValidateToken, the admin API, the
//! revocation feed) with an identity of their own. Made, listed, rotated and deleted by the
//! operator (`authd client ...`); authenticated by HTTP Basic (RFC 6749 §2.3.1), by a
//! short-lived service token from the client credentials grant (`POST /oauth/token`, RFC
//! 6749 §4.4) as a bearer token, or by a client certificate mapped to the client.

use std::{sync::Arc, time::Duration};

use chrono::Utc;

use super::{
    Authd, ClientInfo, Error, Result,
    audit::{Actor, Audit, Event},
    bearer_token,
    cache::ClientLookup,
    throttle::Action,
};
use crate::{
    metrics,
    security::client_secrets,
    store::{ClientRecord, NewClient, SessionChange, Store},
};

/// The scopes a client may hold: `introspect` (ValidateToken), `revocations` (the
/// revocation feed), `admin` (the admin API).
pub const SCOPES: [&str; 3] = ["introspect", "revocations", "admin"];

/// What a call that needs a service client says without one.
pub const CLIENT_REQUIRED: &str = "This call needs a service client: authorization: Basic <client_id:client_secret>, \
     or Bearer <service token from POST /oauth/token>.";

/// A client that proved who it is, with the scopes it may use on this call.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub client_id: String,
    pub scopes: Vec<String>,
}

impl ServiceCaller {
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A new client, or a new secret: the secret is shown this once.
#[derive(Debug)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// A service access token from the client credentials grant.
pub struct ServiceToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scopes: Vec<String>,
}

/// Scopes as given (comma- or space-separated, or one per item): each known, at least one.
pub fn parse_scopes<'a>(given: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut scopes = Vec::new();
    for scope in given.into_iter().flat_map(|s| s.split([',', ' '])).map(str::trim).filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&scope) {
            return Err(Error::invalid("scope", &format!("{scope:?} is not one of {}", SCOPES.join(", "))));
        }
        scopes.push(scope.to_owned());
    }
    if scopes.is_empty() {
        return Err(Error::invalid("scope", &format!("name at least one of {}", SCOPES.join(", "))));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

fn client_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must be 1 to 100 characters, without control characters"));
    }
    Ok(name.to_owned())
}

/// `authd client create NAME --scope S[,S] [--certificate IDENTITY]`.
pub async fn create_client(
    store: Arc<Store>,
    actor: Actor,
    name: &str,
    scopes: &[String],
    certificate: Option<&str>,
    client: &ClientInfo,
) -> Result<ClientCredentials> {
    let name = client_name(name)?;
    let scopes = parse_scopes(scopes.iter().map(String::as_str))?;
    let certificate = certificate.map(str::trim).filter(|c| !c.is_empty());
    let client_id = client_secrets::new_client_id();
    let (client_secret, hash) = client_secrets::new_secret();
    let new = NewClient {
        client_id: &client_id,
        name: &name,
        scopes: &scopes.join(" "),
        secret_hash: &hash,
        certificate_name: certificate,
        now: Utc::now(),
    };
    store.insert_client(&new).await?;
    let detail = Some(format!("client_id={client_id} scopes={}", scopes.join(",")));
    let event = Event { actor, subject: None, action: "client_create", outcome: "success", client, detail };
    Audit::new(store).write(event).await?;
    Ok(ClientCredentials { client_id, client_secret })
}

pub async fn list_clients(store: &Store) -> Result<Vec<ClientRecord>> {
    Ok(store.list_clients().await?)
}

/// The longest a rotated-out secret may keep working: a leaked secret is rotated out for
/// good within a month at most.
pub const MAX_SECRET_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A new secret for the client; the old one works for `grace` more (at most
/// [`MAX_SECRET_GRACE`]).
pub async fn rotate_client_secret(
    store: Arc<Store>,
    actor: Actor,
    client_id: &str,
    grace: Duration,
    client: &ClientInfo,
) -> Result<ClientCredentials> {
    if grace > MAX_SECRET_GRACE {
        return Err(Error::invalid("grace_seconds", "must be at most 2592000 (30 days)"));
    }
    let (client_secret, hash) = client_secrets::new_secret();
    let now = Utc::now();
    if !store.rotate_client_secret(client_id, &hash, now + grace, now).await? {
        return Err(Error::ClientNotFound);
    }
    let detail = Some(format!("client_id={client_id} grace_seconds={}", grace.as_secs()));
    let event = Event { actor, subject: None, action: "client_rotate_secret", outcome: "success", client, detail };
    Audit::new(store).write(event).await?;
    Ok(ClientCredentials { client_id: client_id.to_owned(), client_secret })
}

/// Deletes the client: its secrets and its service tokens stop working at once.
pub async fn delete_client(store: Arc<Store>, actor: Actor, client_id: &str, client: &ClientInfo) -> Result<()> {
    if !store.delete_client(client_id).await? {
        return Err(Error::ClientNotFound);
    }
    let detail = Some(format!("client_id={client_id}"));
    let event = Event { actor, subject: None, action: "client_delete", outcome: "success", client, detail };
    Audit::new(store).write(event).await
}

impl Authd {
    /// The service client of a call: its `authorization` value (Basic with the client's
    /// id and secret, or Bearer with a service token), else the client certificate of
    /// the connection, if one is mapped to a client. A deleted client, a wrong secret, a
    /// previous secret past its grace, or a token that is not a live service token:
    /// [`Error::InvalidClient`]; nothing at all: [`Error::ClientRequired`].
    pub async fn authenticate_client(&self, authorization: Option<&str>, client: &ClientInfo) -> Result<ServiceCaller> {
        let Some(header) = authorization else {
            let Some(certificate) = &client.certificate else { return Err(Error::ClientRequired) };
            let record = self.client_record(ClientLookup::Certificate(certificate.name().to_owned())).await?;
            return record.map(|r| caller_of(&r)).ok_or(Error::ClientRequired);
        };
        if let Some(token) = bearer_token(header) {
            let Some(service) = self.access.verify_service(token) else {
                return Err(self.client_refused(None, "not a service token", client));
            };
            let Some(record) = self.client_record(ClientLookup::Id(service.client_id.clone())).await? else {
                return Err(self.client_refused(Some(&service.client_id), "unknown or deleted client", client));
            };
            // What the token was granted, as far as the client still holds it.
            let held = caller_of(&record);
            let scopes = service.scopes.into_iter().filter(|s| held.has(s)).collect();
            return Ok(ServiceCaller { client_id: record.client_id.clone(), scopes });
        }
        self.client_by_secret(header, client).await
    }

    /// The client of an `Authorization: Basic` value; only a secret will do (no service
    /// token), as at the token endpoint.
    pub async fn client_by_secret(&self, header: &str, client: &ClientInfo) -> Result<ServiceCaller> {
        let Some((client_id, secret)) = client_secrets::basic_credentials(header) else {
            return Err(self.client_refused(None, "not Basic credentials", client));
        };
        self.client_with_secret(&client_id, &secret, client).await
    }

    /// The client `client_id` if `secret` is its secret, or its previous one within the
    /// rotation's grace.
    pub async fn client_with_secret(
        &self,
        client_id: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<ServiceCaller> {
        let lookup = ClientLookup::Id(client_id.to_owned());
        // A secret that the cached record does not take may be one that a rotation made
        // elsewhere just issued: only the store may refuse it.
        if let Some(record) = self.cache.client(&lookup)
            && takes_secret(&record, secret)
        {
            metrics::client_checked(true);
            return Ok(caller_of(&record));
        }
        let Some(record) = self.stored_client_record(lookup).await? else {
            return Err(self.client_refused(None, "unknown or deleted client", client));
        };
        if !takes_secret(&record, secret) {
            return Err(self.client_refused(Some(client_id), "wrong or expired secret", client));
        }
        Ok(caller_of(&record))
    }

    /// A service client's record: from memory while every change to clients is heard (see
    /// [`super::cache::SessionCache::client`]), else from the store.
    async fn client_record(&self, lookup: ClientLookup) -> Result<Option<Arc<ClientRecord>>> {
        if let Some(record) = self.cache.client(&lookup) {
            metrics::client_checked(true);
            return Ok(Some(record));
        }
        self.stored_client_record(lookup).await
    }

    /// A service client's record as the store has it now, kept in memory if it may be.
    async fn stored_client_record(&self, lookup: ClientLookup) -> Result<Option<Arc<ClientRecord>>> {
        metrics::client_checked(false);
        let asked = self.cache.ask();
        let record = match &lookup {
            ClientLookup::Id(client_id) => self.store.client(client_id).await?,
            ClientLookup::Certificate(name) => self.store.client_by_certificate(name).await?,
        };
        let record = record.map(Arc::new);
        if let Some(record) = &record {
            self.cache.put_client(lookup, Arc::clone(record), asked);
        }
        Ok(record)
    }

    /// Forgets the cached record of a client this process just changed (other processes
    /// hear of it through the change feed).
    pub(super) fn client_changed(&self, client_id: &str) {
        self.cache.apply(SessionChange::client(client_id));
    }

    /// A failed client authentication, logged and audited.
    fn client_refused(&self, client_id: Option<&str>, why: &'static str, client: &ClientInfo) -> Error {
        // Refused credentials count against the address's allowance
        // (UNAUTHENTICATED_IP_LIMIT): past it, wrong guesses are answered 429 and leave no
        // audit row, so that a flood cannot fill the audit queue.
        if let Err(refused) = self.addresses.check(Action::ClientAuth, client) {
            return refused;
        }
        tracing::warn!(target: "authd::security", event = "client_auth", outcome = "failure", client_id, reason = why,
            client_ip = client.ip.as_deref().unwrap_or("unknown"), "client authentication failed");
        let actor = client_id.map_or(Actor::Anonymous, |id| Actor::Client(id.to_owned()));
        let detail = Some(format!("reason={why}"));
        self.audit.record(Event { actor, subject: None, action: "client_auth", outcome: "failure", client, detail });
        Error::InvalidClient
    }

    /// The client credentials grant (RFC 6749 §4.4): a service token for `caller` (who
    /// authenticated with a secret), for the scopes asked for (space-separated; all of the
    /// client's when none), each of which it must hold.
    pub fn issue_service_token(&self, caller: &ServiceCaller, requested: Option<&str>) -> Result<ServiceToken> {
        let scopes = match requested.map(str::trim).filter(|s| !s.is_empty()) {
            None => caller.scopes.clone(),
            Some(asked) => {
                let asked = parse_scopes([asked])?;
                if let Some(missing) = asked.iter().find(|s| !caller.has(s)) {
                    return Err(Error::invalid("scope", &format!("{missing:?} is not granted to this client")));
                }
                asked
            }
        };
        let lifetime = self.token_settings.service_token_lifetime;
        let access_token = self.access.issue_service(&caller.client_id, &scopes, Utc::now().timestamp(), lifetime)?;
        Ok(ServiceToken { access_token, expires_in: lifetime.as_secs(), scopes })
    }

    /// How long a rotated secret keeps working, by default (`CLIENT_SECRET_GRACE_SECONDS`).
    pub fn client_secret_grace(&self) -> Duration {
        self.token_settings.client_secret_grace
    }
}

/// Whether `secret` is the client's secret, or its previous one within the rotation's grace
/// (judged now: a cached record's grace ends on time).
fn takes_secret(record: &ClientRecord, secret: &str) -> bool {
    let current = client_secrets::matches(secret, &record.secret_hash);
    let previous = record.previous_secret_hash.as_deref().is_some_and(|hash| client_secrets::matches(secret, hash))
        && record.previous_valid_until.is_some_and(|until| until > Utc::now());
    current || previous
}

fn caller_of(record: &ClientRecord) -> ServiceCaller {
    ServiceCaller {
        client_id: record.client_id.clone(),
        scopes: record.scopes.split_whitespace().map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_scopes;

    #[test]
    fn scopes_are_the_known_ones_listed_once() {
        assert_eq!(parse_scopes(["admin,introspect", " admin "]).unwrap(), ["admin", "introspect"]);
        assert!(parse_scopes(["everything"]).is_err());
        assert!(parse_scopes([" , "]).is_err());
    }
}
