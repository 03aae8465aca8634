//! Passkeys (WebAuthn, with webauthn-rs): the relying party, and the two halves of each
//! ceremony. The options sent to the browser and the credential it answers with are
//! webauthn-rs JSON, passed through as strings (what `PublicKeyCredential.parseCreationOptionsFromJSON`
//! and `parseRequestOptionsFromJSON` take, and what `credential.toJSON()` gives). The state
//! between a ceremony's halves is JSON too, kept by the core in the database; nothing here
//! stores anything.

use anyhow::Context;
pub use webauthn_rs::prelude::{AuthenticationResult, Passkey, PublicKeyCredential, RegisterPublicKeyCredential, Uuid};
use webauthn_rs::prelude::{
    CredentialID, DiscoverableAuthentication, DiscoverableKey, PasskeyAuthentication, PasskeyRegistration, Url,
    Webauthn, WebauthnBuilder,
};

use crate::config::WebauthnSettings;

/// How long a browser (and its user) has between the two halves of a ceremony: the timeout
/// the options ask of the authenticator, and how long the core keeps a ceremony's state.
pub const CEREMONY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// A credential longer than this is refused unread.
const MAX_CREDENTIAL_JSON: usize = 16 * 1024;

/// Why a ceremony's second half failed.
#[derive(Debug, thiserror::Error)]
pub enum CeremonyError {
    /// Not a credential at all: not JSON, or not of the shape WebAuthn gives. The message
    /// says what was wrong and is safe to show.
    #[error("{0}")]
    Malformed(String),
    /// A well-formed credential the ceremony refuses: another challenge or origin, a bad
    /// signature, no user verification, a credential not allowed, a counter gone back.
    #[error("refused: {0}")]
    Refused(webauthn_rs::prelude::WebauthnError),
    /// The stored state could not be read back (never the caller's doing).
    #[error(transparent)]
    State(anyhow::Error),
}

/// The relying party: starts and finishes registration and authentication ceremonies.
#[derive(Clone)]
pub struct Passkeys {
    webauthn: std::sync::Arc<Webauthn>,
    origin: Url,
    passkey_login: bool,
}

/// The first half of a ceremony: the options for the browser, and the state to keep for
/// the second half.
pub struct Started {
    pub options_json: String,
    pub state_json: String,
}

impl Passkeys {
    pub fn new(settings: &WebauthnSettings) -> anyhow::Result<Self> {
        let webauthn = WebauthnBuilder::new(&settings.rp_id, &settings.origin)
            .context("WEBAUTHN_RP_ID is not the origin's host or a parent domain of it")?
            .rp_name(&settings.rp_name)
            .timeout(CEREMONY_LIFETIME)
            .build()
            .context("building the WebAuthn relying party")?;
        Ok(Self {
            webauthn: std::sync::Arc::new(webauthn),
            origin: settings.origin.clone(),
            passkey_login: settings.passkey_login,
        })
    }

    /// Whether a passkey alone may log in (`PASSKEY_LOGIN`).
    pub fn passkey_login(&self) -> bool {
        self.passkey_login
    }

    /// The origin ceremonies are run from (`WEBAUTHN_ORIGIN`).
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// Registration for the user with WebAuthn handle `user_handle`, shown to the user as
    /// `name` (`display_name` beside it); `exclude` lists the user's passkeys already
    /// registered, which the authenticator must not register again.
    pub fn start_registration(
        &self,
        user_handle: Uuid,
        name: &str,
        display_name: &str,
        exclude: Vec<CredentialID>,
    ) -> anyhow::Result<Started> {
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_handle, name, display_name, exclude)
            .context("starting a passkey registration")?;
        let mut options = serde_json::to_value(&options).context("encoding WebAuthn options")?;
        // A resident (discoverable) credential, so that the passkey can log in without a
        // name first: browsers treat `preferred` as `required` where the authenticator can.
        // The registration's checks do not depend on it.
        if let Some(selection) =
            options.pointer_mut("/publicKey/authenticatorSelection").and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "preferred".into());
        }
        started(&options, &state)
    }

    /// The passkey a registration created, if `credential_json` answers the ceremony of
    /// `state_json`.
    pub fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        state_json: &str,
    ) -> Result<Passkey, CeremonyError> {
        let state: PasskeyRegistration = read_state(state_json)?;
        self.webauthn.finish_passkey_registration(credential, &state).map_err(CeremonyError::Refused)
    }

    /// Authentication with one of `passkeys` (a user's, known beforehand).
    pub fn start_authentication(&self, passkeys: &[Passkey]) -> anyhow::Result<Started> {
        let (options, state) =
            self.webauthn.start_passkey_authentication(passkeys).context("starting a passkey authentication")?;
        started(&options, &state)
    }

    /// Finishes the authentication of `state_json`: the result names the credential used,
    /// one of those the ceremony allowed.
    pub fn finish_authentication(
        &self,
        credential: &PublicKeyCredential,
        state_json: &str,
    ) -> Result<AuthenticationResult, CeremonyError> {
        let state: PasskeyAuthentication = read_state(state_json)?;
        self.webauthn.finish_passkey_authentication(credential, &state).map_err(CeremonyError::Refused)
    }

    /// Authentication with a discoverable credential, of a user not known beforehand.
    pub fn start_discoverable(&self) -> anyhow::Result<Started> {
        let (mut options, state) =
            self.webauthn.start_discoverable_authentication().context("starting a passkey login")?;
        // webauthn-rs asks for conditional mediation (autofill); the page decides how it
        // asks, and a button is the plainer way.
        options.mediation = None;
        started(&options, &state)
    }

    /// The user handle and credential id a discoverable credential claims (unverified).
    pub fn identify<'a>(&self, credential: &'a PublicKeyCredential) -> Result<(Uuid, &'a [u8]), CeremonyError> {
        self.webauthn.identify_discoverable_authentication(credential).map_err(CeremonyError::Refused)
    }

    /// Finishes a discoverable authentication with `passkey`, the one `identify` named.
    pub fn finish_discoverable(
        &self,
        credential: &PublicKeyCredential,
        state_json: &str,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, CeremonyError> {
        let state: DiscoverableAuthentication = read_state(state_json)?;
        let keys = [DiscoverableKey::from(passkey)];
        self.webauthn.finish_discoverable_authentication(credential, state, &keys).map_err(CeremonyError::Refused)
    }
}

fn started(options: &impl serde::Serialize, state: &impl serde::Serialize) -> anyhow::Result<Started> {
    Ok(Started {
        options_json: serde_json::to_string(options).context("encoding WebAuthn options")?,
        state_json: serde_json::to_string(state).context("encoding WebAuthn state")?,
    })
}

fn read_state<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, CeremonyError> {
    serde_json::from_str(json).context("reading a stored WebAuthn ceremony").map_err(CeremonyError::State)
}

/// A credential as the browser's `credential.toJSON()` gives it: a registration's
/// (`RegisterPublicKeyCredential`) or an authentication's (`PublicKeyCredential`).
pub fn parse_credential<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, CeremonyError> {
    if json.trim().is_empty() {
        return Err(CeremonyError::Malformed("must not be empty".into()));
    }
    if json.len() > MAX_CREDENTIAL_JSON {
        return Err(CeremonyError::Malformed(format!("must be at most {MAX_CREDENTIAL_JSON} bytes")));
    }
    serde_json::from_str(json).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "is not JSON",
            _ => "is not a WebAuthn credential (the JSON of the browser's credential.toJSON())",
        };
        // serde's message names the member that was missing or wrong, never a secret.
        CeremonyError::Malformed(format!("{why}: {e}"))
    })
}

/// A stored passkey, as JSON.
pub fn encode_passkey(passkey: &Passkey) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(passkey).context("encoding a passkey")
}

/// A passkey stored with [`encode_passkey`].
pub fn decode_passkey(bytes: &[u8]) -> anyhow::Result<Passkey> {
    serde_json::from_slice(bytes).context("reading a stored passkey")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passkeys() -> Passkeys {
        Passkeys::new(&WebauthnSettings::new(None, "https://login.example.com").unwrap()).unwrap()
    }

    #[test]
    fn options_are_browser_json_and_prefer_a_resident_key() {
        let started = passkeys().start_registration(Uuid::new_v4(), "ada@example.com", "Ada", vec![]).unwrap();
        let options: serde_json::Value = serde_json::from_str(&started.options_json).unwrap();
        let public_key = &options["publicKey"];
        assert_eq!(public_key["rp"]["id"], "login.example.com");
        assert_eq!(public_key["rp"]["name"], "authd");
        assert_eq!(public_key["authenticatorSelection"]["residentKey"], "preferred");
        assert_eq!(public_key["authenticatorSelection"]["userVerification"], "required");
        assert!(public_key["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{public_key}");
        let login = passkeys().start_discoverable().unwrap();
        let options: serde_json::Value = serde_json::from_str(&login.options_json).unwrap();
        assert!(options.get("mediation").is_none(), "{options}");
        assert_eq!(options["publicKey"]["rpId"], "login.example.com");
    }

    #[test]
    fn bad_credentials_are_told_apart_and_never_panic() {
        for (json, says) in [
            ("", "must not be empty"),
            ("{", "is not JSON"),
            ("[]", "is not a WebAuthn credential"),
            (r#"{"id": "x"}"#, "is not a WebAuthn credential"),
            (&"x".repeat(MAX_CREDENTIAL_JSON + 1), "at most"),
        ] {
            match parse_credential::<RegisterPublicKeyCredential>(json) {
                Err(CeremonyError::Malformed(why)) => assert!(why.contains(says), "{json:.40}: {why}"),
                other => panic!("{json:.40}: {other:?}"),
            }
        }
    }
}
