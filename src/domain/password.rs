use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The length rule for new passwords (counted in characters); from configuration.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
}

/// A password exactly as given: never trimmed, truncated or shown.
pub struct Password(SecretString);

impl Password {
    /// A new password, held to the policy.
    pub fn parse_new(value: &str, policy: PasswordPolicy) -> Result<Self, String> {
        let length = value.chars().count();
        if length < policy.min_length {
            return Err(format!("must be at least {} characters", policy.min_length));
        }
        if length > policy.max_length {
            return Err(format!("must be at most {} characters", policy.max_length));
        }
        Ok(Self(SecretString::from(value)))
    }

    /// A password offered to be checked (at login, or to confirm a change): only bounded
    /// above, so that a policy change never locks out an existing account and an attacker
    /// cannot make us hash megabytes. An empty one is checked like any other and matches no
    /// hash: a wrong password, as the old app answered, costing what a wrong password costs.
    pub fn parse_offered(value: &str, policy: PasswordPolicy) -> Result<Self, String> {
        if value.chars().count() > policy.max_length {
            return Err(format!("must be at most {} characters", policy.max_length));
        }
        Ok(Self(SecretString::from(value)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_length: 8, max_length: 128 };

    #[test]
    fn new_passwords_are_held_to_the_length_rule_in_characters() {
        assert!(Password::parse_new("1234567", POLICY).is_err());
        assert!(Password::parse_new("12345678", POLICY).is_ok());
        assert!(Password::parse_new(&"é".repeat(128), POLICY).is_ok());
        assert!(Password::parse_new(&"x".repeat(129), POLICY).is_err());
    }

    #[test]
    fn passwords_are_kept_exactly_and_never_shown() {
        let p = Password::parse_new("  spaced out  ", POLICY).unwrap();
        assert_eq!(p.expose(), "  spaced out  ");
        assert_eq!(format!("{p:?}"), "Password(..)");
    }

    #[test]
    fn offered_passwords_are_only_bounded() {
        assert!(Password::parse_offered("short", POLICY).is_ok());
        assert!(Password::parse_offered("", POLICY).is_ok());
        assert!(Password::parse_offered(&"x".repeat(129), POLICY).is_err());
    }
}
