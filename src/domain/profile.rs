use super::text;

/// A display name: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

/// A free-text location: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

/// An optional description: trimmed, at most 1000 characters. Given, it is kept even when
/// empty (the old app stored `""` as `""`); only an absent one is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About(Option<String>);

impl UserName {
    pub fn parse(value: &str) -> Result<Self, String> {
        text(value, 100).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Location {
    pub fn parse(value: &str) -> Result<Self, String> {
        text(value, 100).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl About {
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None => Ok(Self(None)),
            Some(v) if v.chars().count() > 1000 => Err("must be at most 1000 characters".into()),
            // Line breaks are fine in a description; other control characters are not.
            Some(v) if v.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') => {
                Err("must not contain control characters".into())
            }
            Some(v) => Ok(Self(Some(v.to_owned()))),
        }
    }
    pub fn none() -> Self {
        Self(None)
    }
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada Lovelace ").unwrap().as_str(), "Ada Lovelace");
        assert_eq!(Location::parse("London").unwrap().as_str(), "London");
        for bad in ["", "   ", "\t\n", "tab\tinside", "nul\0"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse(&"n".repeat(100)).is_ok());
        assert!(UserName::parse(&"n".repeat(101)).is_err());
        assert!(UserName::parse(&"名".repeat(100)).is_ok());
    }

    #[test]
    fn about_is_optional_and_kept_even_empty() {
        assert_eq!(About::parse(None).unwrap().as_deref(), None);
        assert_eq!(About::parse(Some("")).unwrap().as_deref(), Some(""));
        assert_eq!(About::parse(Some("  ")).unwrap().as_deref(), Some(""));
        assert_eq!(About::parse(Some(" line\nbreak ")).unwrap().as_deref(), Some("line\nbreak"));
        assert!(About::parse(Some(&"a".repeat(1001))).is_err());
        assert!(About::parse(Some("bell\u{7}")).is_err());
    }
}
