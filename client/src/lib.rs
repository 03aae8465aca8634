//! For services behind authd: verify its access tokens locally, with its rules, and refuse
//! those it revoked, learnt from its revocation feed (`AuthService.WatchRevocations`).
//!
//! ```no_run
//! # async fn example() -> Result<(), authd_client::Error> {
//! use authd_client::{Config, Verifier};
//! let channel = tonic::transport::Channel::from_static("http://authd:8000").connect().await?;
//! let config = Config::new("authd", "authd").client_credentials("svc_...", "its secret");
//! let verifier = Verifier::connect(channel, config).await?;
//! // axum or tonic: every request needs a live access token; its claims are in the
//! // request's extensions (`Claims`).
//! let layer = verifier.layer();
//! # let _ = layer; Ok(()) }
//! ```
//!
//! What is checked, as authd checks it: the signature with a key of authd's JWKS chosen by
//! `kid` (an unknown `kid` fetches the keys again, at most once per
//! [`Config::refetch_interval`]), the algorithm against those pinned in [`Config`] (never
//! taken from the token), `typ: at+jwt`, `iss`, `aud`, `exp` and `nbf` (30 s of leeway);
//! then that no revocation names the token's session or user. While the feed has been down
//! longer than [`Config::stale_after`], the service's choice ([`WhenStale`]) applies: ask
//! authd's `ValidateToken` for each token, or refuse them all.

mod follow;
mod keys;
mod layer;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::Deserialize;
use tonic::transport::Channel;

pub use layer::{AuthLayer, AuthService};

/// authd's contract, as clients see it.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("authd.v1");
}

/// Leeway on `exp` and `nbf`, as authd allows.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Clock difference tolerated between authd's processes, as authd keeps its own revocations.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// authd's default access-token lifetime (`TOKEN_EXPIRY_LIMIT`, 15 minutes).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
const TOKEN_TYPE: &str = "at+jwt";

/// What to do while the revocation feed has been down longer than [`Config::stale_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStale {
    /// Ask authd's `ValidateToken` for each token (slower, still exact).
    AskAuthd,
    /// Refuse every token (fail closed).
    Refuse,
}

/// How to verify tokens and follow revocations.
#[derive(Clone)]
pub struct Config {
    pub issuer: String,
    pub audience: String,
    /// The algorithms accepted (authd's `TOKEN_CREATION_ALGORITHM`); a token's own `alg`
    /// is never trusted beyond these.
    pub algorithms: Vec<Algorithm>,
    /// The `authorization` sent with the calls to authd (the revocation feed, and
    /// ValidateToken while the feed is stale): a service client's credentials
    /// ([`Config::client_credentials`]; scopes `revocations`, and `introspect` for
    /// [`WhenStale::AskAuthd`]) or a key of authd's `REVOCATIONS_SERVICE_KEYS`
    /// ([`Config::service_key`]). None when the channel presents a client certificate
    /// mapped to a client.
    pub authorization: Option<String>,
    /// How long the feed may be silent past authd's 5 s heartbeat (counted from the last
    /// message heard) before [`Config::when_stale`] applies. 10 s by default.
    pub stale_after: Duration,
    pub when_stale: WhenStale,
    /// At most one JWKS fetch for unknown `kid`s per this interval.
    pub refetch_interval: Duration,
    /// How long a revocation is kept: authd's access-token lifetime plus [`LEEWAY`] and
    /// [`CLOCK_SKEW`], as authd keeps its own (set by [`Config::token_lifetime`]); a token
    /// older than that is refused on its `exp` anyway. A token whose `exp - iat` exceeds
    /// this less [`Config::revocation_leeway`] is never vouched for from memory (asked
    /// about, or refused, as for a stale feed).
    pub forget_after: Duration,
    /// How long a key authd stopped publishing is still accepted after a fetch found it
    /// gone, for tokens in flight: at most the access-token lifetime (authd unpublishes a
    /// key only once every token it signed has expired). 30 s by default.
    pub unpublished_key_grace: Duration,
    /// Clock difference allowed between authd's processes when a user's revocation is
    /// judged against a token's `iat`: a token issued up to this long after the revocation
    /// (by another process's clock) is asked about rather than trusted. [`CLOCK_SKEW`]
    /// (30 s, what authd allows between its processes) by default.
    pub revocation_leeway: Duration,
    /// The feed counts as dead when no message (authd sends a heartbeat every 5 s) came for
    /// this long: it is then reconnected. 15 s by default.
    pub heartbeat_timeout: Duration,
}

impl Config {
    /// Accepts ES256 and EdDSA tokens of `issuer` for `audience`; the feed may be down 10 s
    /// before tokens are asked about at authd.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            authorization: None,
            stale_after: Duration::from_secs(10),
            when_stale: WhenStale::AskAuthd,
            refetch_interval: Duration::from_secs(10),
            forget_after: TOKEN_LIFETIME + LEEWAY + CLOCK_SKEW,
            unpublished_key_grace: Duration::from_secs(30),
            revocation_leeway: CLOCK_SKEW,
            heartbeat_timeout: Duration::from_secs(15),
        }
    }

    /// authd's access-token lifetime (`TOKEN_EXPIRY_LIMIT`), if not the default 15 minutes:
    /// revocations are kept that long plus leeway, and an unpublished key's grace is cut to it.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.forget_after = lifetime + LEEWAY + CLOCK_SKEW;
        self.unpublished_key_grace = self.unpublished_key_grace.min(lifetime);
        self
    }

    /// Calls authd as the service client `client_id` (HTTP Basic, RFC 6749 §2.3.1).
    pub fn client_credentials(mut self, client_id: &str, client_secret: &str) -> Self {
        use base64::Engine;
        let pair = format!("{client_id}:{client_secret}");
        self.authorization = Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)));
        self
    }

    /// Follows the feed with a key of authd's `REVOCATIONS_SERVICE_KEYS` (which does not
    /// open ValidateToken: with [`WhenStale::AskAuthd`], prefer client credentials).
    pub fn service_key(mut self, key: &str) -> Self {
        self.authorization = Some(format!("Bearer {key}"));
        self
    }

    pub fn algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms.to_vec();
        self
    }

    /// Whether `claims` may outlive the revocations kept ([`Config::forget_after`], less
    /// the leeway): a token longer-lived than authd's lifetime as configured here could
    /// have a revocation already forgotten, so memory cannot vouch for it.
    fn outlived_by(&self, claims: &Claims) -> bool {
        let kept = self.forget_after.saturating_sub(self.revocation_leeway).as_secs() as i64;
        claims.exp.saturating_sub(claims.iat) > kept
    }

    pub fn when_stale(mut self, after: Duration, then: WhenStale) -> Self {
        self.stale_after = after;
        self.when_stale = then;
        self
    }
}

/// The claims of a verified access token, put into request extensions by the layer and
/// the interceptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub email_verified: bool,
}

impl Claims {
    /// The user id (`sub`).
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no bearer token")]
    Missing,
    #[error("not a valid access token")]
    Invalid,
    #[error("the token's session or user was revoked")]
    Revoked,
    /// The feed is down (or the user changed) and the service refuses rather than ask.
    #[error("revocations are not known right now")]
    Stale,
    #[error("authd could not be asked")]
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to authd: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("authd answered: {0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Config(String),
}

/// Verifies authd's access tokens; cheap to clone, one per service.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    channel: Channel,
    keys: RwLock<keys::KeySet>,
    last_fetch: Mutex<Option<Instant>>,
    revocations: RwLock<follow::Revocations>,
    feed: follow::FeedState,
}

/// What memory says of a token, before any question to authd.
enum Local {
    Live(Claims),
    /// Valid, but memory cannot tell whether it is live: the feed is stale, or its user
    /// changed after it was issued.
    Unsure(Claims),
}

impl Verifier {
    /// Fetches authd's keys, starts following its revocations, and waits for the first
    /// snapshot (up to [`Config::stale_after`], at most 10 s).
    pub async fn connect(channel: Channel, config: Config) -> Result<Self, Error> {
        if config.algorithms.is_empty() {
            return Err(Error::Config("at least one algorithm must be accepted".into()));
        }
        if config.forget_after < config.unpublished_key_grace {
            return Err(Error::Config("an unpublished key's grace must not outlast the tokens it signed".into()));
        }
        let verifier = Self {
            inner: Arc::new(Inner {
                config,
                channel,
                keys: RwLock::new(keys::KeySet::default()),
                last_fetch: Mutex::new(None),
                revocations: RwLock::new(follow::Revocations::default()),
                feed: follow::FeedState::default(),
            }),
        };
        verifier.inner.fetch_keys().await?;
        let synced = verifier.inner.feed.subscribe();
        tokio::spawn(follow::follow(Arc::downgrade(&verifier.inner)));
        let wait = verifier.inner.config.stale_after.min(Duration::from_secs(10));
        let _ = tokio::time::timeout(wait, follow::wait_synced(synced)).await;
        Ok(verifier)
    }

    /// Verifies `token` (the bare token, or an `authorization` value), asking authd only
    /// when memory cannot tell and the service chose [`WhenStale::AskAuthd`].
    pub async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let token = bare(token).ok_or(Rejection::Missing)?;
        let local = match self.verify_local_inner(token) {
            Err(Rejection::Invalid) if self.kid_unknown(token) && self.may_refetch() => {
                let _ = self.inner.fetch_keys().await;
                self.verify_local_inner(token)?
            }
            other => other?,
        };
        match local {
            Local::Live(claims) => Ok(claims),
            Local::Unsure(claims) => match self.inner.config.when_stale {
                WhenStale::Refuse => Err(Rejection::Stale),
                WhenStale::AskAuthd => self.ask_authd(token, claims).await,
            },
        }
    }

    /// Verifies `token` from memory alone (no question to authd, no key refetch): what
    /// the tonic interceptor does.
    pub fn verify_local(&self, token: &str) -> Result<Claims, Rejection> {
        match self.verify_local_inner(bare(token).ok_or(Rejection::Missing)?)? {
            Local::Live(claims) => Ok(claims),
            Local::Unsure(_) => Err(Rejection::Stale),
        }
    }

    /// Whether the revocation feed is in step (not down longer than the bound).
    pub fn feed_fresh(&self) -> bool {
        self.inner.feed.fresh(self.inner.config.stale_after)
    }

    /// A tonic interceptor: a live token's [`Claims`] go into the request's extensions;
    /// anything else is UNAUTHENTICATED. From memory only (an interceptor cannot wait), so
    /// fail-closed while the feed is stale: use [`Verifier::layer`] to ask authd instead.
    pub fn interceptor(&self) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
        let verifier = self.clone();
        move |mut request: tonic::Request<()>| {
            let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
            match verifier.verify_local(authorization.unwrap_or_default()) {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    Ok(request)
                }
                Err(rejection) => Err(tonic::Status::unauthenticated(rejection.to_string())),
            }
        }
    }

    /// A tower layer for axum routers and tonic servers alike: see [`AuthLayer`].
    pub fn layer(&self) -> AuthLayer {
        AuthLayer::new(self.clone())
    }

    fn verify_local_inner(&self, token: &str) -> Result<Local, Rejection> {
        let config = &self.inner.config;
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Invalid)?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) || !config.algorithms.contains(&header.alg) {
            return Err(Rejection::Invalid);
        }
        let kid = header.kid.ok_or(Rejection::Invalid)?;
        let claims = {
            let keys = self.inner.keys.read().map_err(|_| Rejection::Invalid)?;
            let (algorithm, key) =
                keys.get(&kid, Instant::now(), config.unpublished_key_grace).ok_or(Rejection::Invalid)?;
            if *algorithm != header.alg {
                return Err(Rejection::Invalid);
            }
            let mut validation = Validation::new(*algorithm);
            validation.leeway = LEEWAY.as_secs();
            validation.validate_nbf = true;
            validation.set_issuer(&[&config.issuer]);
            validation.set_audience(&[&config.audience]);
            validation.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
            jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| Rejection::Invalid)?.claims
        };
        let user_id = claims.user_id().ok_or(Rejection::Invalid)?;
        let revocations = self.inner.revocations.read().map_err(|_| Rejection::Invalid)?;
        let leeway = config.revocation_leeway.as_secs() as i64;
        match revocations.judge(&claims.sid, user_id, claims.iat, leeway) {
            follow::Judgement::Revoked => Err(Rejection::Revoked),
            follow::Judgement::UserChanged => Ok(Local::Unsure(claims)),
            follow::Judgement::NotRevoked if config.outlived_by(&claims) => Ok(Local::Unsure(claims)),
            follow::Judgement::NotRevoked if !self.feed_fresh() => Ok(Local::Unsure(claims)),
            follow::Judgement::NotRevoked => Ok(Local::Live(claims)),
        }
    }

    async fn ask_authd(&self, token: &str, claims: Claims) -> Result<Claims, Rejection> {
        let mut client = pb::auth_service_client::AuthServiceClient::new(self.inner.channel.clone());
        let mut request = tonic::Request::new(pb::ValidateTokenRequest { token: token.into() });
        if let Some(value) = self.inner.config.authorization.as_deref().and_then(|v| v.parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        let answer = client.validate_token(request).await.map_err(|_| Rejection::Unavailable)?.into_inner();
        if answer.active && answer.session_id == claims.sid { Ok(claims) } else { Err(Rejection::Revoked) }
    }

    fn kid_unknown(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return false };
        let Some(kid) = header.kid else { return false };
        !self.inner.knows_key(&kid)
    }

    /// Whether a refetch is allowed now (and if so, counts it).
    fn may_refetch(&self) -> bool {
        let Ok(mut last) = self.inner.last_fetch.lock() else { return false };
        let allowed = last.is_none_or(|at| at.elapsed() >= self.inner.config.refetch_interval);
        if allowed {
            *last = Some(Instant::now());
        }
        allowed
    }
}

impl Inner {
    fn knows_key(&self, kid: &str) -> bool {
        self.keys.read().is_ok_and(|keys| keys.get(kid, Instant::now(), self.config.unpublished_key_grace).is_some())
    }

    /// Whether the keys published, by `kid`, differ from those held as published.
    fn keys_differ(&self, published: &[String]) -> bool {
        self.keys.read().is_ok_and(|keys| keys.published_differ(published))
    }

    /// Fetches authd's public keys (GetJwks) and keeps those of an accepted algorithm.
    async fn fetch_keys(&self) -> Result<(), Error> {
        let mut client = pb::auth_service_client::AuthServiceClient::new(self.channel.clone());
        let jwks = client.get_jwks(pb::GetJwksRequest {}).await?.into_inner();
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            let Some((kid, algorithm, key)) = decoding_key(&jwk) else { continue };
            if self.config.algorithms.contains(&algorithm) {
                keys.insert(kid, (algorithm, key));
            }
        }
        if let Ok(mut known) = self.keys.write() {
            known.replace(keys, Instant::now(), self.config.unpublished_key_grace);
        }
        Ok(())
    }
}

/// The key of a JWKS entry, with its `kid` and algorithm.
fn decoding_key(jwk: &pb::Jwk) -> Option<(String, Algorithm, DecodingKey)> {
    let mut json = serde_json::Map::new();
    for (name, value) in [
        ("kty", &jwk.kty),
        ("kid", &jwk.kid),
        ("use", &jwk.r#use),
        ("alg", &jwk.alg),
        ("n", &jwk.n),
        ("e", &jwk.e),
        ("crv", &jwk.crv),
        ("x", &jwk.x),
        ("y", &jwk.y),
    ] {
        if !value.is_empty() {
            json.insert(name.into(), value.clone().into());
        }
    }
    let parsed: Jwk = serde_json::from_value(json.into()).ok()?;
    let algorithm: Algorithm = jwk.alg.parse().ok()?;
    let key = DecodingKey::from_jwk(&parsed).ok()?;
    Some((jwk.kid.clone(), algorithm, key))
}

/// The token of an `authorization` value (`Bearer <token>`), or the value itself.
fn bare(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        Some(_) => return None,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            iss: "authd".into(),
            aud: "authd".into(),
            sub: "7".into(),
            sid: "s".into(),
            iat,
            nbf: iat,
            exp,
            jti: "j".into(),
            email_verified: false,
        }
    }

    #[test]
    fn a_token_living_longer_than_revocations_are_kept_is_not_vouched_for() {
        let config = Config::new("authd", "authd");
        // Kept 15 min + 60 s; less the 30 s leeway: a token of up to 930 s is judged from memory.
        assert!(!config.outlived_by(&claims(1000, 1000 + 15 * 60)));
        assert!(!config.outlived_by(&claims(1000, 1930)));
        assert!(config.outlived_by(&claims(1000, 1931)));
        assert!(config.outlived_by(&claims(1000, 1000 + 3600)), "an hour-long token: authd's lifetime is longer");
        let config = Config::new("authd", "authd").token_lifetime(Duration::from_secs(3600));
        assert!(!config.outlived_by(&claims(1000, 1000 + 3600)));
    }
}
