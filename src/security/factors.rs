//! Second factors' cryptography, free of the database: TOTP (RFC 6238) secrets, codes and
//! the judgement of a code against the last step used; recovery codes; login challenge
//! tokens; the QR code of an `otpauth://` URI.
//!
//! - TOTP: 160-bit secrets (RFC 4226's recommendation), HMAC-SHA-1, 6 digits, 30 s steps,
//!   what every authenticator app reads. A code is accepted for the step before, the step
//!   of, or the step after now (±1), and only for a step later than the last one accepted:
//!   RFC 6238 §5.2 asks that a code work once.
//! - Recovery codes: 16 characters of a 32-letter alphabet without look-alikes (80 random
//!   bits), shown in four groups (`ABCD-EFGH-JKLM-NPQR`); case, spaces and dashes do not
//!   matter. Kept as plain SHA-256: 80 random bits leave no dictionary to try and no
//!   brute force within reach (2^80 hashes), so a slow hash would only slow logins.
//! - Challenge tokens: 256 random bits, base64url; kept as SHA-256.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use qrcodegen::{QrCode, QrCodeEcc};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Totp};

/// Bytes of a TOTP secret.
pub const SECRET_BYTES: usize = 20;
/// Digits of a TOTP code.
pub const DIGITS: u8 = 6;
/// Seconds of a TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// Steps accepted either side of now.
pub const SKEW: u64 = 1;
/// The issuer named in `otpauth://` URIs, and so in authenticator apps.
pub const ISSUER: &str = "authd";

/// Recovery codes issued at once.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code, without its dashes.
const RECOVERY_CODE_CHARS: usize = 16;
/// No 0/O, no 1/I: 32 letters, 5 bits each.
const RECOVERY_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Bytes of a challenge token.
const CHALLENGE_BYTES: usize = 32;

/// A new TOTP secret.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::fill(&mut bytes[..]);
    bytes
}

fn totp(secret: &[u8], account: &str) -> anyhow::Result<Totp> {
    let builder = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW as u16)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.to_vec());
    // `:` separates issuer and account in the URI's label: an email has none, but a name
    // could; it becomes a look-alike.
    let builder =
        if account.is_empty() { builder } else { builder.with_account_name(account.replace(':', "\u{2236}")) };
    builder.with_issuer(Some(ISSUER)).build().map_err(|e| anyhow::anyhow!("building a TOTP: {e}"))
}

/// What an enrolment shows: the secret for manual entry, the URI, and its QR code.
pub struct Enrolment {
    pub secret_base32: String,
    pub uri: String,
    pub qr_svg: String,
}

/// The enrolment of `secret` for `account` (the user's email, shown by the app).
pub fn enrolment(secret: &[u8], account: &str) -> anyhow::Result<Enrolment> {
    let totp = totp(secret, account)?;
    let uri = totp.to_url().map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
    Ok(Enrolment { secret_base32: totp.secret().to_base32(), qr_svg: qr_svg(&uri)?, uri })
}

/// How a TOTP code was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    /// Right, for this step (to remember as the last used).
    Accepted(i64),
    /// Right, but for a step already used (or older): a replay.
    Replayed,
    /// Not a code of any step in the window.
    Wrong,
}

/// Judges `code` at `now` (Unix seconds) for `secret`, whose last accepted step is
/// `last_used_step`. Of the steps in the window whose code it is, the latest counts.
pub fn check_code(secret: &[u8], code: &str, now: u64, last_used_step: Option<i64>) -> anyhow::Result<CodeVerdict> {
    let code = normalize_code(code);
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(CodeVerdict::Wrong);
    }
    let totp = totp(secret, "")?;
    let origin = now / STEP_SECONDS;
    let matching = (origin.saturating_sub(SKEW)..=origin + SKEW)
        .rev()
        .find(|step| constant_time_eq(totp.generate(step * STEP_SECONDS).to_string().as_bytes(), code.as_bytes()));
    Ok(match matching.map(|step| i64::try_from(step).unwrap_or(i64::MAX)) {
        None => CodeVerdict::Wrong,
        Some(step) if last_used_step.is_some_and(|last| step <= last) => CodeVerdict::Replayed,
        Some(step) => CodeVerdict::Accepted(step),
    })
}

/// A code as typed, without the spaces some apps show in the middle.
fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A set of new recovery codes, as shown, each with the hash kept of it.
pub fn new_recovery_codes() -> Vec<(String, [u8; 32])> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_CODE_CHARS];
            rand::fill(&mut bytes[..]);
            // 256 is a multiple of 32: each byte gives 5 unbiased bits.
            let chars: String = bytes.iter().map(|b| char::from(RECOVERY_ALPHABET[usize::from(b % 32)])).collect();
            let shown = chars.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>();
            let hash = Sha256::digest(chars.as_bytes()).into();
            (shown.join("-"), hash)
        })
        .collect()
}

/// The hash of a recovery code as typed (any case, with or without dashes and spaces);
/// `None` for anything that cannot be one.
pub fn recovery_code_hash(code: &str) -> Option<[u8; 32]> {
    let chars: String =
        code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    let valid = chars.len() == RECOVERY_CODE_CHARS && chars.bytes().all(|b| RECOVERY_ALPHABET.contains(&b));
    valid.then(|| Sha256::digest(chars.as_bytes()).into())
}

/// A new login challenge token, and the hash it is kept under.
pub fn new_challenge() -> (String, [u8; 32]) {
    let mut bytes = [0u8; CHALLENGE_BYTES];
    rand::fill(&mut bytes[..]);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = Sha256::digest(token.as_bytes()).into();
    (token, hash)
}

/// The hash of a presented challenge token; `None` for anything that cannot be one.
pub fn challenge_hash(token: &str) -> Option<[u8; 32]> {
    let token = token.trim();
    let decoded = URL_SAFE_NO_PAD.decode(token).ok()?;
    (decoded.len() == CHALLENGE_BYTES).then(|| Sha256::digest(token.as_bytes()).into())
}

/// `text` as a QR code: an SVG document of black modules on white, with the quiet zone.
pub fn qr_svg(text: &str) -> anyhow::Result<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|e| anyhow::anyhow!("QR code: {e}"))?;
    let border = 4;
    let size = qr.size() + border * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\
         <path d=\"{path}\" fill=\"#000000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 key.
    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn code_at(t: u64) -> String {
        totp(RFC_KEY, "").unwrap().generate(t).to_string()
    }

    #[test]
    fn codes_are_rfc_6238s() {
        // Appendix B, SHA-1, truncated to 6 digits: 94287082 at 59 s, 07081804 at 1111111109 s.
        assert_eq!(code_at(59), "287082");
        assert_eq!(code_at(1_111_111_109), "081804");
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_no_further() {
        let now = 1_700_000_000;
        let step = (now / STEP_SECONDS) as i64;
        for (offset, expected) in [(-1, Some(step - 1)), (0, Some(step)), (1, Some(step + 1)), (-2, None), (2, None)] {
            let code = code_at((step + offset) as u64 * STEP_SECONDS);
            let verdict = check_code(RFC_KEY, &code, now, None).unwrap();
            let want = expected.map_or(CodeVerdict::Wrong, CodeVerdict::Accepted);
            assert_eq!(verdict, want, "offset {offset}");
        }
    }

    #[test]
    fn a_code_of_a_step_already_used_or_older_is_a_replay() {
        let now = 1_700_000_000;
        let step = (now / STEP_SECONDS) as i64;
        let code = code_at(now);
        assert_eq!(check_code(RFC_KEY, &code, now, Some(step - 1)).unwrap(), CodeVerdict::Accepted(step));
        assert_eq!(check_code(RFC_KEY, &code, now, Some(step)).unwrap(), CodeVerdict::Replayed);
        assert_eq!(check_code(RFC_KEY, &code, now, Some(step + 1)).unwrap(), CodeVerdict::Replayed);
        // The previous step's code, once a later step was used, is refused as well.
        let previous = code_at(now - STEP_SECONDS);
        assert_eq!(check_code(RFC_KEY, &previous, now, Some(step)).unwrap(), CodeVerdict::Replayed);
    }

    #[test]
    fn malformed_codes_are_wrong_and_spaces_do_not_matter() {
        let now = 1_700_000_000;
        let code = code_at(now);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(matches!(check_code(RFC_KEY, &spaced, now, None).unwrap(), CodeVerdict::Accepted(_)));
        for bad in ["", "12345", "1234567", "abcdef", "+12345", "１２３４５６"] {
            assert_eq!(check_code(RFC_KEY, bad, now, None).unwrap(), CodeVerdict::Wrong, "{bad:?}");
        }
    }

    #[test]
    fn recovery_codes_are_ten_distinct_80_bit_codes_read_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        for (code, hash) in &codes {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(code.split('-').count(), 4);
            assert!(code.chars().all(|c| c == '-' || RECOVERY_ALPHABET.contains(&(c as u8))));
            assert_eq!(recovery_code_hash(code), Some(*hash));
            assert_eq!(recovery_code_hash(&code.to_lowercase().replace('-', " ")), Some(*hash));
            assert_eq!(recovery_code_hash(&code.replace('-', "")), Some(*hash));
        }
        for bad in ["", "ABCD-EFGH-JKLM", "ABCD-EFGH-JKLM-NPQRS", "ABCD-EFGH-JKLM-NPQ0", "ABCD-EFGH-JKLM-NPQI"] {
            assert_eq!(recovery_code_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn challenge_tokens_hash_only_when_well_formed() {
        let (token, hash) = new_challenge();
        assert_eq!(challenge_hash(&token), Some(hash));
        assert_eq!(challenge_hash(&format!(" {token} ")), Some(hash));
        assert_eq!(challenge_hash(&token[1..]), None);
        assert_eq!(challenge_hash("not a token"), None);
        assert_ne!(new_challenge().0, token);
    }

    #[test]
    fn enrolment_gives_a_uri_and_an_svg_qr_code() {
        let secret = new_secret();
        let e = enrolment(&secret, "ada@example.com").unwrap();
        assert!(e.uri.starts_with("otpauth://totp/authd:ada%40example.com?"), "{}", e.uri);
        assert!(e.uri.contains(&format!("secret={}", e.secret_base32)));
        assert!(e.uri.contains("issuer=authd"));
        assert!(e.qr_svg.starts_with("<svg") && e.qr_svg.ends_with("</svg>"));
        assert_eq!(e.secret_base32.len(), 32);
    }
}
