//! Input parsed into types that are valid by construction; past this boundary nothing re-checks.

mod email;
mod password;
mod profile;
mod role;

pub use email::Email;
pub use password::{Password, PasswordOwner, PasswordPolicy};
pub use profile::{About, Location, UserName};
pub use role::Role;

/// One reason one input field was refused; the field carries the wire name callers sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Collects violations while several fields are parsed, so a caller learns of every bad
/// field at once rather than one per attempt.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the parsed value, or records why `field` was refused.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|why| self.0.push(FieldViolation::new(field, why))).ok()
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// `Ok(value)` when nothing was recorded, else every violation.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldViolation>> {
        match (self.0.is_empty(), value()) {
            (true, Some(v)) => Ok(v),
            (_, _) => Err(self.0),
        }
    }
}

/// Shared rule for short free-text fields: trimmed, not empty, at most `max` characters,
/// no control characters.
fn text(value: &str, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary text through every parser: an answer, never a panic. Run longer with
    //! `PROPTEST_CASES=100000 cargo test --lib fuzz`.
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn no_input_makes_a_parser_panic(
            text in any::<String>(), owner in any::<String>(), min in 0..200usize, max in 0..200usize,
        ) {
            let policy = PasswordPolicy { min_length: min, max_length: max, refuse_guessable: true };
            let _ = Email::parse(&text);
            let _ = UserName::parse(&text);
            let _ = Location::parse(&text);
            let _ = About::parse(Some(&text));
            let _ = Password::parse_new(&text, policy, PasswordOwner { email: &owner, name: &owner });
            let _ = Password::parse_offered(&text);
            let _ = Role::parse(&text);
        }
    }
}
