//! Request bodies in the old app's terms: a JSON object (or, for login, a form), read
//! field by field so that every bad field is reported at once.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use super::error::error_body;
use crate::{core::Error, domain::FieldViolation};

/// A request body whose media type is known.
pub struct RequestBody {
    bytes: Bytes,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
    Other,
}

impl<S: Send + Sync> FromRequest<S> for RequestBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let kind = match content_type.as_deref() {
            // No media type at all: take it as JSON, as the old app's clients may send.
            None | Some("application/json") => Kind::Json,
            Some(t) if t.starts_with("application/") && t.ends_with("+json") => Kind::Json,
            Some("application/x-www-form-urlencoded") => Kind::Form,
            Some(_) => Kind::Other,
        };
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                error_body(status, "Request body too large.").into_response()
            } else {
                Error::invalid("body", "could not be read").into_response()
            }
        })?;
        Ok(Self { bytes, kind })
    }
}

impl RequestBody {
    pub fn is_form(&self) -> bool {
        self.kind == Kind::Form
    }

    /// The body as a JSON object.
    pub fn json(self) -> Result<Fields, Error> {
        if self.kind != Kind::Json {
            return Err(Error::invalid("body", "must be JSON (Content-Type: application/json)"));
        }
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::invalid("body", "field required"));
        }
        match serde_json::from_slice::<Value>(&self.bytes) {
            Ok(Value::Object(object)) => Ok(Fields::new(object, false)),
            Ok(_) => Err(Error::invalid("body", "must be a JSON object")),
            Err(e) if e.is_eof() || e.is_syntax() => Err(Error::invalid("body", &format!("is not valid JSON: {e}"))),
            Err(_) => Err(Error::invalid("body", "is not valid JSON (or not UTF-8)")),
        }
    }

    /// Like [`RequestBody::json`], but an empty body is an empty object.
    pub fn json_or_empty(self) -> Result<Fields, Error> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::new(Map::new(), false));
        }
        self.json()
    }

    /// The body as `application/x-www-form-urlencoded`; a repeated key is refused.
    pub fn form(self) -> Result<Fields, Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&self.bytes)
            .map_err(|_| Error::invalid("body", "is not a valid form (or not UTF-8)"))?;
        let mut object = Map::new();
        for (key, value) in pairs {
            if object.insert(key.clone(), Value::String(value)).is_some() {
                return Err(Error::invalid(&key, "must be given once"));
            }
        }
        Ok(Fields::new(object, true))
    }
}

/// Takes string fields out of an object, noting each one missing or of the wrong type.
pub struct Fields {
    object: Map<String, Value>,
    violations: Vec<FieldViolation>,
    form: bool,
}

impl Fields {
    fn new(object: Map<String, Value>, form: bool) -> Self {
        Self { object, violations: Vec::new(), form }
    }

    pub fn is_form(&self) -> bool {
        self.form
    }

    /// A required string; `""` (and a violation) when missing or not a string.
    pub fn string(&mut self, name: &str) -> String {
        match self.object.remove(name) {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => {
                self.violation(name, "field required");
                String::new()
            }
            Some(_) => {
                self.violation(name, "must be a string");
                String::new()
            }
        }
    }

    /// An optional string: missing and `null` are both `None`.
    pub fn optional_string(&mut self, name: &str) -> Option<String> {
        match self.object.remove(name) {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.violation(name, "must be a string");
                None
            }
        }
    }

    /// An optional string that `null` clears: missing is `None`, `null` is `Some("")`
    /// (which the core reads as "none").
    pub fn clearable_string(&mut self, name: &str) -> Option<String> {
        match self.object.remove(name) {
            Some(Value::Null) => Some(String::new()),
            Some(Value::String(s)) => Some(s),
            None => None,
            Some(_) => {
                self.violation(name, "must be a string or null");
                None
            }
        }
    }

    /// An optional boolean: missing and `null` are both `None`.
    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.object.remove(name) {
            Some(Value::Bool(b)) => Some(b),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.violation(name, "must be true or false");
                None
            }
        }
    }

    pub fn violation(&mut self, field: &str, description: &str) {
        self.violations.push(FieldViolation::new(field, description));
    }

    /// Fails when any field was missing or mistyped, adding what the core's validation
    /// says of the other fields, so that the caller hears of every bad field at once.
    pub fn finish<T>(self, validated: Result<T, Vec<FieldViolation>>) -> Result<(), Error> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let mut violations = self.violations;
        for v in validated.err().unwrap_or_default() {
            if !violations.iter().any(|seen| seen.field == v.field) {
                violations.push(v);
            }
        }
        Err(Error::InvalidInput(violations))
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bodies through the decoders and the field readers: never a panic. Run
    //! longer with `PROPTEST_CASES=100000 cargo test --lib fuzz`.
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{Email, Password, PasswordPolicy};

    fn read_login(mut fields: Fields) {
        let email = fields.string("email");
        let _ = fields.optional_string("about");
        let _ = fields.optional_bool("all_sessions");
        let policy = PasswordPolicy { min_length: 8, max_length: 128 };
        let password = fields.string("password");
        let checked = match (Email::parse(&email), Password::parse_offered(&password, policy)) {
            (Ok(_), Ok(_)) => Ok(()),
            (e, p) => Err([e.err(), p.err()]
                .into_iter()
                .flatten()
                .map(|why| FieldViolation::new("field", &why))
                .collect::<Vec<_>>()),
        };
        let _ = fields.finish(checked);
    }

    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<String>().prop_map(String::into_bytes),
            // Mostly well-formed objects with arbitrary values, to get past the parser.
            (any::<String>(), any::<String>(), any::<bool>()).prop_map(|(email, password, flag)| {
                serde_json::json!({"email": email, "password": password, "all_sessions": flag, "about": null})
                    .to_string()
                    .into_bytes()
            }),
            (any::<String>(), any::<String>()).prop_map(|(user, password)| {
                serde_urlencoded::to_string([("username", user), ("password", password)])
                    .unwrap_or_default()
                    .into_bytes()
            }),
        ]
    }

    proptest! {
        #[test]
        fn no_body_makes_the_decoders_panic(bytes in bodies(), kind in 0..3u8) {
            let kind = [Kind::Json, Kind::Form, Kind::Other][usize::from(kind)];
            let body = || RequestBody { bytes: Bytes::from(bytes.clone()), kind };
            for fields in [body().json(), body().json_or_empty(), body().form()].into_iter().flatten() {
                read_login(fields);
            }
        }
    }
}
