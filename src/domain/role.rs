//! A role name, as granted to users and carried in the `roles` claim.

/// Lowercase ASCII letters, digits, `-`, `_`, `.` and `:`, starting with a letter; 1 to
/// [`Role::MAX_LENGTH`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

impl Role {
    pub const MAX_LENGTH: usize = 64;
    /// The role that opens the admin API.
    pub const ADMIN: &'static str = "admin";

    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > Self::MAX_LENGTH {
            return Err(format!("must be at most {} characters", Self::MAX_LENGTH));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | ':');
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) || !value.chars().all(allowed) {
            return Err("must start with a lowercase letter and hold only a-z, 0-9, '-', '_', '.' and ':'".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn role_names_are_short_lowercase_words() {
        for good in ["admin", "billing:read", "ops-team", "a", " support "] {
            assert!(Role::parse(good).is_ok(), "{good}");
        }
        assert_eq!(Role::parse(" support ").unwrap().as_str(), "support");
        for bad in ["", "  ", "Admin", "1admin", "ad min", "ad\tmin", "rôle", &"a".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }
}
