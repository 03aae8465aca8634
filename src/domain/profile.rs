//! The profile's free-text fields. The old app's columns are unbounded, so their bounds
//! are generous: well past any real name, place or description (the longest personal
//! names on record run to a few hundred characters), yet a registration at the bounds still
//! fits the 64 KiB request limit even in four-byte characters. Adoption lists the old rows
//! that break them; those users still log in and read them (the rules apply to new input).

use super::text;

/// A short free-text field: trimmed, 1 to `MAX_CHARS` characters, no control characters.
macro_rules! short_text {
    ($(#[doc = $doc:literal])* $name:ident, $max:expr) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(value: &str) -> Result<Self, String> {
                text(value, Self::MAX_CHARS).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

short_text!(
    /// A display name.
    UserName,
    1000
);
short_text!(
    /// A free-text location.
    Location,
    1000
);

/// An optional description: trimmed, at most [`About::MAX_CHARS`] characters. Given, it is
/// kept even when empty (the old app stored `""` as `""`); only an absent one is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About(Option<String>);

impl About {
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None => Ok(Self(None)),
            Some(v) if v.chars().count() > Self::MAX_CHARS => {
                Err(format!("must be at most {} characters", Self::MAX_CHARS))
            }
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
        assert!(UserName::parse(&"n".repeat(1000)).is_ok());
        assert!(UserName::parse(&"n".repeat(1001)).is_err());
        assert!(UserName::parse(&"名".repeat(1000)).is_ok());
        assert!(Location::parse(&"l".repeat(1000)).is_ok());
        assert!(Location::parse(&"l".repeat(1001)).is_err());
    }

    #[test]
    fn about_is_optional_and_kept_even_empty() {
        assert_eq!(About::parse(None).unwrap().as_deref(), None);
        assert_eq!(About::parse(Some("")).unwrap().as_deref(), Some(""));
        assert_eq!(About::parse(Some("  ")).unwrap().as_deref(), Some(""));
        assert_eq!(About::parse(Some(" line\nbreak ")).unwrap().as_deref(), Some("line\nbreak"));
        assert!(About::parse(Some(&"a".repeat(10_000))).is_ok());
        assert!(About::parse(Some(&"a".repeat(10_001))).is_err());
        assert!(About::parse(Some("bell\u{7}")).is_err());
    }
}
