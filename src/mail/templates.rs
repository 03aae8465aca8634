//! The mails authd sends: a subject, a text body and an HTML body each, built in, and each
//! overridable by files in `MAIL_TEMPLATE_DIR` (`<name>.subject`, `<name>.txt`,
//! `<name>.html`; a file left out keeps the built-in part). `{{variable}}` is replaced by
//! its value, HTML-escaped in the HTML body; an unknown variable is left as it is.

use std::{collections::HashMap, path::Path};

use anyhow::Context;

/// Every mail, by its template name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// To a new account's address: a link and a code. `{{name}} {{link}} {{code}} {{hours}}`
    VerifyEmail,
    /// To an address that already has an account, when someone registers it again (with
    /// verification required). `{{name}} {{reset_link}}`
    RegisteredAgain,
    /// A password reset link. `{{name}} {{link}} {{minutes}}`
    ResetPassword,
    /// To the new address of an email change. `{{name}} {{link}} {{new_email}} {{hours}}`
    ConfirmEmailChange,
    /// To the old address when a change is asked for. `{{name}} {{new_email}}`
    EmailChangeRequested,
    /// To an address that already has an account, when another account asks to make it
    /// its own (in place of the confirmation link). `{{name}}` (the address's own account)
    EmailChangeTaken,
    /// To a user an admin created without a password: a link to choose one.
    /// `{{name}} {{link}} {{hours}}`
    Invitation,
}

impl Template {
    pub const ALL: [Self; 7] = [
        Self::VerifyEmail,
        Self::RegisteredAgain,
        Self::ResetPassword,
        Self::ConfirmEmailChange,
        Self::EmailChangeRequested,
        Self::EmailChangeTaken,
        Self::Invitation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::RegisteredAgain => "registered_again",
            Self::ResetPassword => "reset_password",
            Self::ConfirmEmailChange => "confirm_email_change",
            Self::EmailChangeRequested => "email_change_requested",
            Self::EmailChangeTaken => "email_change_taken",
            Self::Invitation => "invitation",
        }
    }

    fn built_in(self) -> Parts {
        let (subject, text, html) = match self {
            Self::VerifyEmail => (
                "Verify your email address",
                "Hello {{name}},\n\nTo verify your email address, open this link:\n\n{{link}}\n\n\
                 or enter this code: {{code}}\n\nThe link and the code work for {{hours}} hours. \
                 If you did not create an account, ignore this mail.\n",
                "<p>Hello {{name}},</p><p>To verify your email address, open this link:</p>\
                 <p><a href=\"{{link}}\">{{link}}</a></p><p>or enter this code: <b>{{code}}</b></p>\
                 <p>The link and the code work for {{hours}} hours. If you did not create an account, \
                 ignore this mail.</p>",
            ),
            Self::RegisteredAgain => (
                "Someone tried to register with your email address",
                "Hello {{name}},\n\nSomeone tried to create an account with this email address, which \
                 already has one. If it was you, log in instead; if you forgot your password, reset it \
                 here:\n\n{{reset_link}}\n\nIf it was not you, ignore this mail: nothing has changed.\n",
                "<p>Hello {{name}},</p><p>Someone tried to create an account with this email address, \
                 which already has one. If it was you, log in instead; if you forgot your password, \
                 <a href=\"{{reset_link}}\">reset it</a>.</p><p>If it was not you, ignore this mail: \
                 nothing has changed.</p>",
            ),
            Self::ResetPassword => (
                "Reset your password",
                "Hello {{name}},\n\nTo choose a new password, open this link:\n\n{{link}}\n\n\
                 It works once, for {{minutes}} minutes. Resetting ends every session of your account. \
                 If you did not ask for this, ignore this mail.\n",
                "<p>Hello {{name}},</p><p>To choose a new password, open this link:</p>\
                 <p><a href=\"{{link}}\">{{link}}</a></p><p>It works once, for {{minutes}} minutes. \
                 Resetting ends every session of your account. If you did not ask for this, ignore \
                 this mail.</p>",
            ),
            Self::ConfirmEmailChange => (
                "Confirm your new email address",
                "Hello {{name}},\n\nTo make {{new_email}} the address of your account, open this \
                 link:\n\n{{link}}\n\nIt works for {{hours}} hours. If you did not ask for this, ignore \
                 this mail.\n",
                "<p>Hello {{name}},</p><p>To make {{new_email}} the address of your account, open this \
                 link:</p><p><a href=\"{{link}}\">{{link}}</a></p><p>It works for {{hours}} hours. If \
                 you did not ask for this, ignore this mail.</p>",
            ),
            Self::EmailChangeRequested => (
                "A change of your email address was asked for",
                "Hello {{name}},\n\nSomeone signed in to your account asked to change its email address \
                 to {{new_email}}. Nothing changes unless that address confirms it. If it was not you, \
                 change your password now.\n",
                "<p>Hello {{name}},</p><p>Someone signed in to your account asked to change its email \
                 address to {{new_email}}. Nothing changes unless that address confirms it. If it was \
                 not you, change your password now.</p>",
            ),
            Self::EmailChangeTaken => (
                "Someone tried to use your email address",
                "Hello {{name}},\n\nSomeone asked to make this email address, which already has an \
                 account, the address of another account. Nothing has changed, and nothing will: \
                 ignore this mail.\n",
                "<p>Hello {{name}},</p><p>Someone asked to make this email address, which already has \
                 an account, the address of another account. Nothing has changed, and nothing will: \
                 ignore this mail.</p>",
            ),
            Self::Invitation => (
                "You have an account: choose your password",
                "Hello {{name}},\n\nAn account was made for you with this email address. To choose \
                 its password, open this link:\n\n{{link}}\n\nIt works once, for {{hours}} hours. If \
                 you did not expect this, ignore this mail.\n",
                "<p>Hello {{name}},</p><p>An account was made for you with this email address. To \
                 choose its password, open this link:</p><p><a href=\"{{link}}\">{{link}}</a></p>\
                 <p>It works once, for {{hours}} hours. If you did not expect this, ignore this \
                 mail.</p>",
            ),
        };
        Parts { subject: subject.into(), text: text.into(), html: html.into() }
    }
}

#[derive(Debug, Clone)]
struct Parts {
    subject: String,
    text: String,
    html: String,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone)]
pub struct Templates {
    parts: HashMap<Template, Parts>,
}

impl Templates {
    /// The built-in templates, with the parts found in `dir` in their place.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut parts = HashMap::new();
        for template in Template::ALL {
            let mut p = template.built_in();
            if let Some(dir) = dir {
                for (extension, part) in [("subject", &mut p.subject), ("txt", &mut p.text), ("html", &mut p.html)] {
                    let path = dir.join(format!("{}.{extension}", template.name()));
                    match std::fs::read_to_string(&path) {
                        Ok(text) => *part = if extension == "subject" { text.trim().to_owned() } else { text },
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("MAIL_TEMPLATE_DIR: {}", path.display())),
                    }
                }
            }
            parts.insert(template, p);
        }
        Ok(Self { parts })
    }

    pub fn render(&self, template: Template, vars: &[(&str, &str)]) -> Rendered {
        let parts = self.parts.get(&template).cloned().unwrap_or_else(|| template.built_in());
        // A subject is one line, whatever a value holds.
        let subject = fill(&parts.subject, vars, false).replace(['\r', '\n'], " ");
        Rendered { subject, text: fill(&parts.text, vars, false), html: fill(&parts.html, vars, true) }
    }
}

/// Replaces each `{{variable}}` of `text` by its value in one pass over the template, so
/// that a value is never read as a template (a name such as `{{link}}` stays as it is); an
/// unknown variable is left as it is.
fn fill(text: &str, vars: &[(&str, &str)], escape: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after.find("}}").and_then(|end| {
            let key = &after[..end];
            vars.iter().find(|(k, _)| *k == key).map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(&if escape { html_escape(value) } else { value.to_owned() });
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn html_escape(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_never_read_as_a_template() {
        let t = Templates::load(None).unwrap();
        let vars = [
            ("name", "{{link}} {{code}}"),
            ("link", "https://app.example/verify-email?token=T"),
            ("code", "123456"),
            ("hours", "48"),
        ];
        let mail = t.render(Template::VerifyEmail, &vars);
        assert!(mail.text.starts_with("Hello {{link}} {{code}},"), "{}", mail.text);
        assert_eq!(mail.text.matches("token=T").count(), 1, "{}", mail.text);
        assert_eq!(mail.text.matches("123456").count(), 1, "{}", mail.text);
        assert!(mail.html.contains("Hello {{link}} {{code}},"), "{}", mail.html);
        assert_eq!(
            fill("{{a}}{{b}} {{unknown}} {{ {{a}}", &[("a", "{{b}}"), ("b", "B")], false),
            "{{b}}B {{unknown}} {{ {{b}}"
        );
    }

    #[test]
    fn values_fill_the_built_in_templates_escaped_in_html() {
        let t = Templates::load(None).unwrap();
        let mail = t
            .render(Template::VerifyEmail, &[("name", "Ada <b>"), ("link", "http://x/?token=a&b"), ("code", "123456")]);
        assert_eq!(mail.subject, "Verify your email address");
        assert!(mail.text.contains("Hello Ada <b>,") && mail.text.contains("http://x/?token=a&b"), "{}", mail.text);
        assert!(mail.html.contains("Ada &lt;b&gt;") && mail.html.contains("token=a&amp;b"), "{}", mail.html);
        assert!(mail.text.contains("123456"));
    }

    #[test]
    fn files_in_the_template_directory_replace_the_parts_they_name() {
        let dir = std::env::temp_dir().join(format!("authd-templates-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("reset_password.subject"), "Nouveau mot de passe\n").unwrap();
        std::fs::write(dir.join("reset_password.txt"), "Bonjour {{name}}: {{link}}").unwrap();
        let t = Templates::load(Some(&dir)).unwrap();
        let mail = t.render(Template::ResetPassword, &[("name", "Ada"), ("link", "L")]);
        assert_eq!((mail.subject.as_str(), mail.text.as_str()), ("Nouveau mot de passe", "Bonjour Ada: L"));
        assert!(mail.html.contains("To choose a new password"), "the built-in HTML stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
