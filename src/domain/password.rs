use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// The rules for new passwords; from configuration.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    /// Length bounds, counted in characters.
    pub min_length: usize,
    pub max_length: usize,
    /// Refuse passwords people actually guess: common ones, and the owner's own name or email.
    pub refuse_guessable: bool,
}

/// Whose new password it is: it must not contain their name or email.
#[derive(Debug, Clone, Copy)]
pub struct PasswordOwner<'a> {
    pub email: &'a str,
    pub name: &'a str,
}

/// A password exactly as given: never trimmed, truncated or shown.
pub struct Password(SecretString);

impl Password {
    /// The longest password ever checked, in bytes. Login takes any password an adopted
    /// user could have set, whatever the rule for new ones is now; the bound keeps one
    /// request from making us hash megabytes.
    pub const MAX_OFFERED_BYTES: usize = 4096;

    /// A new password for `owner`, held to the policy.
    pub fn parse_new(value: &str, policy: PasswordPolicy, owner: PasswordOwner<'_>) -> Result<Self, String> {
        let length = value.chars().count();
        if length < policy.min_length {
            return Err(format!("must be at least {} characters", policy.min_length));
        }
        if length > policy.max_length {
            return Err(format!("must be at most {} characters", policy.max_length));
        }
        if policy.refuse_guessable {
            if is_common(value) {
                return Err("is one of the most common passwords; choose another".into());
            }
            if contains_personal(value, owner) {
                return Err("must not contain your name or the first part of your email".into());
            }
        }
        Ok(Self(SecretString::from(value)))
    }

    /// A password offered to be checked (at login, or to confirm a change): only bounded
    /// above, so that no rule for new passwords ever locks out an existing account. An
    /// empty one is checked like any other and matches no hash: a wrong password, as the
    /// old app answered, costing what a wrong password costs.
    pub fn parse_offered(value: &str) -> Result<Self, String> {
        if value.len() > Self::MAX_OFFERED_BYTES {
            return Err(format!("must be at most {} bytes", Self::MAX_OFFERED_BYTES));
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

/// The 30,000 most common passwords, most common first: the ranked list of the `zxcvbn`
/// crate 3.1 (MIT, like the Dropbox original), all lower case, one a line.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// The longest entry of [`COMMON_PASSWORDS`] is 20 characters, and each reading of a
/// password (reversed, lower-cased, l33t characters read as letters) keeps its length: a
/// longer password cannot be one, and is not looked up.
pub const LONGEST_COMMON: usize = 20;

/// Of the owner's name and email local part, at most this many characters are looked for
/// in a password: a password is at most a few hundred characters, and an old row may hold
/// a longer name than registration now takes.
const PERSONAL_CHARS: usize = 256;

/// zxcvbn's l33t table: each character that may stand for a letter, and the letters.
const L33T: [(char, &str); 20] = [
    ('4', "a"),
    ('@', "a"),
    ('8', "b"),
    ('(', "c"),
    ('{', "c"),
    ('[', "c"),
    ('<', "c"),
    ('3', "e"),
    ('6', "g"),
    ('9', "g"),
    ('1', "il"),
    ('!', "i"),
    ('|', "il"),
    ('7', "lt"),
    ('0', "o"),
    ('$', "s"),
    ('5', "s"),
    ('+', "t"),
    ('%', "x"),
    ('2', "z"),
];

/// More l33t readings of one password than this, and a password's l33t characters are
/// all read as letters (at most 8 readings, and the password as it is).
const MOST_L33T_READINGS: usize = 256;

/// The ways of reading `password` (lower case) with its l33t characters as letters: each
/// distinct l33t character kept or read as one of its letters, in every occurrence; past
/// [`MOST_L33T_READINGS`], each read as one of its letters, and the password as it is.
fn l33t_readings(password: &str) -> Vec<String> {
    let present: Vec<(char, &str)> = L33T.iter().copied().filter(|(c, _)| password.contains(*c)).collect();
    let with_kept = present
        .iter()
        .try_fold(1usize, |n, (_, letters)| Some(n * (letters.len() + 1)).filter(|&n| n <= MOST_L33T_READINGS));
    let keep = with_kept.is_some();
    let mut readings = vec![password.to_owned()];
    for (l33t, letters) in present {
        let options: Vec<Option<char>> = keep.then_some(None).into_iter().chain(letters.chars().map(Some)).collect();
        readings = readings
            .iter()
            .flat_map(|reading| {
                options.iter().map(move |option| match option {
                    None => reading.clone(),
                    Some(letter) => reading.replace(l33t, &letter.to_string()),
                })
            })
            .collect();
    }
    if !keep {
        readings.push(password.to_owned());
    }
    readings
}

/// Whether `password` is, as a whole, one of [`COMMON_PASSWORDS`], in any case, reversed,
/// or with l33t characters read as letters (`P@ssw0rd`): a lookup of each of at most 512
/// readings of the whole password in a set, so that no input costs more than a few
/// hundred lookups.
fn is_common(password: &str) -> bool {
    static COMMON: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| COMMON_PASSWORDS.lines().filter(|line| !line.is_empty()).collect());
    let length = password.chars().count();
    if length == 0 || length > LONGEST_COMMON {
        return false;
    }
    let lower = password.to_lowercase();
    let reversed: String = lower.chars().rev().collect();
    [lower, reversed].iter().any(|candidate| l33t_readings(candidate).iter().any(|r| COMMON.contains(r.as_str())))
}

/// Whether `password` contains, in any case, the owner's name, email local part, or a
/// word of either, of 3 characters or more.
fn contains_personal(password: &str, owner: PasswordOwner<'_>) -> bool {
    let password = password.to_lowercase();
    let local_part = owner.email.trim().rsplit_once('@').map_or(owner.email.trim(), |(local, _)| local);
    let bounded = |s: &str| s.chars().take(PERSONAL_CHARS).collect::<String>();
    let (local_part, name) = (bounded(local_part), bounded(owner.name.trim()));
    [local_part.as_str(), name.as_str()]
        .into_iter()
        .flat_map(|whole| std::iter::once(whole).chain(whole.split(|c: char| !c.is_alphanumeric())))
        .filter(|part| part.chars().count() >= 3)
        .any(|part| password.contains(&part.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_length: 8, max_length: 128, refuse_guessable: true };
    const ADA: PasswordOwner = PasswordOwner { email: "First.Last+tag@example.com", name: "Ada Lovelace" };

    #[test]
    fn new_passwords_are_held_to_the_length_rule_in_characters() {
        assert!(Password::parse_new("1234567", POLICY, ADA).is_err());
        assert!(Password::parse_new("a2x5c7v9", POLICY, ADA).is_ok());
        assert!(Password::parse_new(&"é".repeat(128), POLICY, ADA).is_ok());
        assert!(Password::parse_new(&"x".repeat(129), POLICY, ADA).is_err());
    }

    #[test]
    fn passwords_are_kept_exactly_and_never_shown() {
        let p = Password::parse_new("  spaced out  ", POLICY, ADA).unwrap();
        assert_eq!(p.expose(), "  spaced out  ");
        assert_eq!(format!("{p:?}"), "Password(..)");
    }

    #[test]
    fn offered_passwords_are_only_bounded_in_bytes() {
        assert!(Password::parse_offered("short").is_ok());
        assert!(Password::parse_offered("").is_ok());
        assert!(Password::parse_offered(&"x".repeat(4096)).is_ok());
        assert!(Password::parse_offered(&"x".repeat(4097)).is_err());
        assert!(Password::parse_offered(&"é".repeat(2049)).is_err());
    }

    #[test]
    fn common_passwords_and_their_disguises_are_refused() {
        for common in [
            "password",
            "Password",
            "PASSWORD",
            "P@ssw0rd",
            "drowssap",
            "iloveyou",
            "12345678",
            "qwertyuiop",
            "trustno1",
            "Tru$tN01",
            "1ONTSURT",
            "p4ssw0rd1",
        ] {
            assert!(is_common(common), "{common}");
            assert_eq!(
                Password::parse_new(common, POLICY, ADA).unwrap_err(),
                "is one of the most common passwords; choose another"
            );
        }
        // A common word inside a longer password is not the whole password.
        for fine in ["password is not enough", "correct horse battery", "iloveyou, and more", "x7#kQ9!vLm2"] {
            assert!(!is_common(fine), "{fine}");
        }
        let off = PasswordPolicy { refuse_guessable: false, ..POLICY };
        assert!(Password::parse_new("password", off, ADA).is_ok());
    }

    /// Every l33t character zxcvbn substitutes, 20 of them: the input that cost zxcvbn the
    /// most (seconds in a debug build), and the most l33t readings here.
    const WORST: &str = "4@8({[<369!|170$5+%2";

    /// Not a timed assertion: the figures are printed (`cargo test --release --lib
    /// strength_check -- --nocapture`). What is asserted: the readings are bounded, the
    /// worst input is accepted (as zxcvbn accepted it), and nothing longer than
    /// [`LONGEST_COMMON`] is looked up.
    #[test]
    fn the_strength_check_is_bounded() {
        assert_eq!(WORST.chars().count(), LONGEST_COMMON);
        assert!(l33t_readings(WORST).len() <= 9);
        assert!(l33t_readings("p@$$w0rd1!").len() <= MOST_L33T_READINGS);
        assert!(COMMON_PASSWORDS.lines().count() >= 10_000);
        assert!(COMMON_PASSWORDS.lines().all(|line| line.chars().count() <= LONGEST_COMMON));
        let _ = is_common("warm up the set");
        assert!(l33t_readings("q1w2e3r4t5y6u7i8o9p0").len() <= 9);
        assert!(is_common("q1w2e3r4t5y6u7i8o9p0"), "the password as it is, past the readings kept");
        assert_eq!(l33t_readings("1|7@$0 and more").len(), 216);
        for password in [WORST, "p@$$w0rd1!|7(3", "q1w2e3r4t5y6u7i8o9", "1|7@$0 and more"] {
            let start = std::time::Instant::now();
            assert!(!is_common(password), "{password}");
            println!("{password:?} ({} readings): {:?}", l33t_readings(password).len(), start.elapsed());
        }
        let long = format!("{WORST}x");
        let start = std::time::Instant::now();
        assert!(!is_common(&long));
        println!("a password one longer, not looked up: {:?}", start.elapsed());
        let owner =
            PasswordOwner { email: &format!("{}@example.com", "a".repeat(100_000)), name: &"b".repeat(100_000) };
        let start = std::time::Instant::now();
        assert!(Password::parse_new(&"x".repeat(128), POLICY, owner).is_ok());
        println!("the personal check against a 100,000-character name and email: {:?}", start.elapsed());
    }

    #[test]
    fn the_owners_name_and_email_are_refused_in_any_case_from_three_characters() {
        for personal in ["lovelace123", "ADA is me!", "first.last+tag", "the LAST word", "tag, you're it"] {
            assert_eq!(
                Password::parse_new(personal, POLICY, ADA).unwrap_err(),
                "must not contain your name or the first part of your email",
                "{personal}"
            );
        }
        let short_parts = PasswordOwner { email: "jo@example.com", name: "Li Wu" };
        assert!(Password::parse_new("jo.li.wu example", POLICY, short_parts).is_ok());
        // The domain is not personal.
        assert!(Password::parse_new("example dot com", POLICY, ADA).is_ok());
    }
}
