//! Request bodies in the old app's terms: a JSON object (or, for login, a form), decoded
//! into the route's body type field by field, so that every bad field is reported at once
//! where serde alone would stop at the first.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{
    Deserialize,
    de::{self, DeserializeSeed, Deserializer, Expected, MapAccess, Visitor, value::BorrowedStrDeserializer},
    forward_to_deserialize_any,
};
use serde_json::{Map, Value};

use super::error::{BadRequest, BadRequestBody, CrossSite, ErrorBody, TooLarge};
use crate::{core::Error, domain::FieldViolation};

/// The origins whose pages may call from browsers (`CORS_ALLOWED_ORIGINS`): the only other
/// sites whose pages may post the login form.
#[derive(Clone)]
pub struct AllowedOrigins(Arc<[String]>);

impl AllowedOrigins {
    pub fn new(origins: &[String]) -> Self {
        Self(origins.into())
    }
}

/// A request body whose media type is known.
pub struct Body {
    bytes: Bytes,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
    Other,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        // A body without a media type is not JSON: a page of any site can post one without
        // the browser asking authd first (CORS preflight), as it can a form or text/plain.
        let kind = match content_type.as_deref() {
            Some("application/json") => Kind::Json,
            Some(t) if t.starts_with("application/") && t.ends_with("+json") => Kind::Json,
            Some("application/x-www-form-urlencoded") => Kind::Form,
            _ => Kind::Other,
        };
        let allowed = req.extensions().get::<AllowedOrigins>().map(|a| a.0.clone()).unwrap_or_default();
        // HTTP/2 names the host in the URI (`:authority`), HTTP/1.1 in `Host`.
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        let host = host.or(req.uri().authority().map(|a| a.as_str()));
        if kind == Kind::Form && from_another_site(req.headers(), host, &allowed) {
            return Err(CrossSite(ErrorBody::new("Cross-site login refused.")).into_response());
        }
        let mut bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                TooLarge::body().into_response()
            } else {
                Error::invalid("body", "could not be read").into_response()
            }
        })?;
        if kind == Kind::Json {
            // As the old app's JSON reader: a UTF-8 byte order mark is skipped, and a body
            // that is not UTF-8 is a 400 in FastAPI's words rather than a field error.
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes = bytes.slice(3..);
            }
            if std::str::from_utf8(&bytes).is_err() {
                return Err(BadRequest(BadRequestBody::unparsable()).into_response());
            }
        }
        Ok(Self { bytes, kind })
    }
}

/// Whether the browser says a page of another site sent this, one not in `allowed`:
/// `Sec-Fetch-Site` (set by the browser, out of the page's reach) when present, else
/// `Origin` against the `Host` asked for. A request with neither is not from a browser page
/// (curl, a script, a service): such a caller could set any header it liked anyway.
fn from_another_site(headers: &HeaderMap, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|origin| allowed.iter().any(|a| a == origin)) {
        return false;
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"same-origin" | b"none") => false,
        Some(_) => true,
        // "null" is the opaque origin of a sandboxed frame or a local file: another site.
        None => origin.is_some_and(|origin| {
            origin
                .split_once("://")
                .is_none_or(|(_, authority)| host.is_none_or(|h| !h.eq_ignore_ascii_case(authority)))
        }),
    }
}

impl Body {
    pub fn is_form(&self) -> bool {
        self.kind == Kind::Form
    }

    /// The body as a JSON object, decoded into `T`.
    pub fn json<T: for<'de> Deserialize<'de>>(self) -> Result<(T, BadFields), Error> {
        if self.kind != Kind::Json {
            return Err(Error::invalid("body", "must be JSON (Content-Type: application/json)"));
        }
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::invalid("body", "field required"));
        }
        match serde_json::from_slice::<Value>(&self.bytes) {
            Ok(Value::Object(object)) => decode(object),
            Ok(_) => Err(Error::invalid("body", "must be a JSON object")),
            Err(e) => Err(Error::invalid("body", &format!("is not valid JSON: {e}"))),
        }
    }

    /// Like [`Body::json`], but an empty body is an empty object.
    pub fn json_or_empty<T: for<'de> Deserialize<'de>>(self) -> Result<(T, BadFields), Error> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return decode(Map::new());
        }
        self.json()
    }

    /// The body as `application/x-www-form-urlencoded`, decoded into `T`; a repeated key
    /// is refused.
    pub fn form<T: for<'de> Deserialize<'de>>(self) -> Result<(T, BadFields), Error> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&self.bytes)
            .map_err(|_| Error::invalid("body", "is not a valid form (or not UTF-8)"))?;
        let mut object = Map::new();
        for (key, value) in pairs {
            if object.insert(key.clone(), Value::String(value)).is_some() {
                return Err(Error::invalid(&key, "must be given once"));
            }
        }
        decode(object)
    }
}

/// The fields that were missing or of the wrong type while a body was decoded.
#[must_use]
pub struct BadFields(Vec<FieldViolation>);

impl BadFields {
    /// Fails when any field was missing or mistyped, adding what the core's validation
    /// says of the other fields, so that the caller hears of every bad field at once.
    pub fn finish<T>(self, validated: Result<T, Vec<FieldViolation>>) -> Result<(), Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut violations = self.0;
        for v in validated.err().unwrap_or_default() {
            if !violations.iter().any(|seen| seen.field == v.field) {
                violations.push(v);
            }
        }
        Err(Error::InvalidInput(violations))
    }
}

impl BadFields {
    /// [`BadFields::finish`] for a core check that may refuse the call before it looks at
    /// the fields (a rate limit): it runs only when a field is already bad, and its
    /// refusal wins.
    pub fn finish_screened<T>(self, screen: impl FnOnce() -> crate::core::Result<T>) -> Result<(), Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        match screen() {
            Err(Error::InvalidInput(violations)) => self.finish(Err::<T, _>(violations)),
            Err(refused) => Err(refused),
            Ok(_) => self.finish(Ok(())),
        }
    }
}

/// Decodes `T` (a struct) from `object`: a field missing or of the wrong type is noted and
/// read as empty, and decoding goes on. Keys `T` does not name are ignored.
fn decode<T: for<'de> Deserialize<'de>>(object: Map<String, Value>) -> Result<(T, BadFields), Error> {
    let mut fields = Fields { object, names: [].iter(), next: None, violations: Vec::new() };
    let value = T::deserialize(&mut fields).map_err(|e| anyhow::anyhow!("decoding a request body: {e}"))?;
    Ok((value, BadFields(fields.violations)))
}

type DecodeError = de::value::Error;

/// Every field the struct names, present or not, so that each one missing is noted.
struct Fields {
    object: Map<String, Value>,
    names: std::slice::Iter<'static, &'static str>,
    next: Option<(&'static str, Option<Value>)>,
    violations: Vec<FieldViolation>,
}

impl<'de> Deserializer<'de> for &mut Fields {
    type Error = DecodeError;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.names = names.iter();
        visitor.visit_map(self)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DecodeError> {
        Err(de::Error::custom("request bodies decode into structs only"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DecodeError> {
        let Some(&name) = self.names.next() else { return Ok(None) };
        self.next = Some((name, self.object.remove(name)));
        seed.deserialize(BorrowedStrDeserializer::new(name)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DecodeError> {
        let (name, value) = self.next.take().ok_or_else(|| de::Error::custom("a value before its key"))?;
        seed.deserialize(Field { name, value, violations: &mut self.violations })
    }
}

/// One field's value (`None` when the field is missing), read leniently.
struct Field<'a> {
    name: &'static str,
    value: Option<Value>,
    violations: &'a mut Vec<FieldViolation>,
}

impl Field<'_> {
    fn note(&mut self, why: impl Into<String>) {
        self.violations.push(FieldViolation::new(self.name, why));
    }
}

impl<'de> Deserializer<'de> for Field<'_> {
    type Error = DecodeError;

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            None | Some(Value::Null) => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value.take() {
            Some(Value::String(s)) => return visitor.visit_string(s),
            None | Some(Value::Null) => self.note("field required"),
            Some(_) => self.note("must be a string"),
        }
        visitor.visit_string(String::new())
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value.take() {
            Some(Value::Bool(b)) => return visitor.visit_bool(b),
            None | Some(Value::Null) => self.note("field required"),
            Some(_) => self.note("must be true or false"),
        }
        visitor.visit_bool(false)
    }

    /// Tells a missing field (`visit_none`) from `null` (`visit_unit`), for [`Patch`].
    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value.take() {
            None => visitor.visit_none(),
            Some(Value::Null) => visitor.visit_unit(),
            Some(Value::String(s)) => visitor.visit_string(s),
            Some(_) => {
                self.note(format!("must be {}", &visitor as &dyn Expected));
                visitor.visit_unit()
            }
        }
    }

    /// A list of strings (roles).
    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DecodeError> {
        let items = match self.value.take() {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            None | Some(Value::Null) => {
                self.note("field required");
                Vec::new()
            }
            Some(_) => {
                self.note("must be a list of strings");
                Vec::new()
            }
        };
        visitor.visit_seq(de::value::SeqDeserializer::<_, DecodeError>::new(items.into_iter()))
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A field of a partial update: left out (keep it), `null` (clear it), or a value.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Patch {
    #[default]
    Keep,
    Clear,
    Set(String),
}

impl<'de> Deserialize<'de> for Patch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatchVisitor;
        impl<'de> Visitor<'de> for PatchVisitor {
            type Value = Patch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_none<E>(self) -> Result<Patch, E> {
                Ok(Patch::Keep)
            }
            fn visit_unit<E>(self) -> Result<Patch, E> {
                Ok(Patch::Clear)
            }
            fn visit_str<E>(self, s: &str) -> Result<Patch, E> {
                Ok(Patch::Set(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Patch, E> {
                Ok(Patch::Set(s))
            }
        }
        deserializer.deserialize_any(PatchVisitor)
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bodies through the decoders: never a panic, and a struct always comes out
    //! of an object. Run longer with `PROPTEST_CASES=100000 cargo test --lib fuzz`.
    use proptest::prelude::*;

    use super::*;
    use crate::rest::wire::{LoginForm, LogoutBody, RegisterUserBody, UpdateMeBody};

    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            any::<String>().prop_map(String::into_bytes),
            // Mostly well-formed objects with arbitrary values, to get past the parser.
            (any::<String>(), any::<String>(), any::<bool>(), values()).prop_map(|(name, password, flag, about)| {
                serde_json::json!({"name": name, "password": password, "all_sessions": flag, "about": about})
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

    fn values() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn no_body_makes_the_decoders_panic(bytes in bodies(), kind in 0..3u8) {
            let kind = [Kind::Json, Kind::Form, Kind::Other][usize::from(kind)];
            let body = || Body { bytes: Bytes::from(bytes.clone()), kind };
            let decoded = [
                body().json::<RegisterUserBody>().map(|_| ()),
                body().json::<UpdateMeBody>().map(|_| ()),
                body().json_or_empty::<LogoutBody>().map(|_| ()),
                body().form::<LoginForm>().map(|_| ()),
            ];
            for result in decoded {
                prop_assert!(!matches!(result, Err(Error::Unexpected(_))), "a body no decoder could take");
            }
        }
    }
}
