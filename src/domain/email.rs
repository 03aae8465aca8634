use email_address::{EmailAddress, Options};

/// A syntactically valid address: trimmed, ASCII, `local@domain.tld`, at most 254 characters.
/// Case is kept as given; uniqueness and look-ups compare it case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path, less its angle brackets.
    pub const MAX_LEN: usize = 254;

    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        // ASCII only: case-insensitive comparison is then the same in every database.
        if !value.is_ascii() {
            return Err("must contain only ASCII characters".into());
        }
        let options = Options::default().with_required_tld().without_domain_literal().without_display_text();
        let parsed =
            EmailAddress::parse_with_options(value, options).map_err(|_| "is not a valid email address".to_owned())?;
        if parsed.local_part().starts_with('"') {
            return Err("is not a valid email address".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn accepts_ordinary_addresses_and_trims() {
        for ok in ["a@example.com", "  First.Last+tag@sub.example.co.uk ", "x_y-z@a-b.io"] {
            let email = Email::parse(ok).unwrap();
            assert_eq!(email.as_str(), ok.trim());
        }
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@@example.com",
            "a@[127.0.0.1]",
            "\"quoted\"@example.com",
            "Name <a@example.com>",
            "ü@example.com",
            "a@exa mple.com",
            long.as_str(),
            "a@example.com\0",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
