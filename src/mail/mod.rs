//! Sending mail: lettre over SMTP (`SMTP_URL`), or, with none configured, a log line and a
//! file in the data directory. What to send and when is the core's (`core::mail`), kept in
//! the outbox; this only delivers one message.

pub mod templates;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use secrecy::ExposeSecret;

use crate::config::MailSettings;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// One message to deliver.
pub struct Outgoing<'a> {
    pub id: i64,
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: &'a str,
}

#[derive(Clone)]
pub enum Transport {
    Smtp {
        smtp: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// No SMTP server: the mail is written to a file here (if anywhere) and logged.
    Fallback {
        dir: Option<PathBuf>,
        from: Mailbox,
    },
}

impl Transport {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings.from.parse().context("MAIL_FROM")?;
        match &settings.smtp_url {
            Some(url) => {
                if let Some(why) = crate::config::credentials_in_clear(url.expose_secret()) {
                    tracing::warn!("SMTP_URL carries credentials without TLS: {why}; use smtps:// or tls=required");
                }
                let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret().trim())
                    .context("SMTP_URL")?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Ok(Self::Smtp { smtp, from })
            }
            None => {
                tracing::warn!(
                    dir = settings.fallback_dir.as_ref().map(|d| d.display().to_string()),
                    "SMTP_URL is not set: mail will NOT be sent, only logged and written to files in this directory"
                );
                Ok(Self::Fallback { dir: settings.fallback_dir.clone(), from })
            }
        }
    }

    /// Delivers one message; an error is worth a retry.
    pub async fn send(&self, mail: &Outgoing<'_>) -> anyhow::Result<()> {
        let (Self::Smtp { from, .. } | Self::Fallback { from, .. }) = self;
        let message = Message::builder()
            .from(from.clone())
            .to(mail.to.parse().context("recipient")?)
            .subject(mail.subject)
            .multipart(MultiPart::alternative_plain_html(mail.text.to_owned(), mail.html.to_owned()))
            .context("building the message")?;
        match self {
            Self::Smtp { smtp, .. } => {
                smtp.send(message).await.context("SMTP")?;
                Ok(())
            }
            Self::Fallback { dir, .. } => {
                let file = match dir {
                    Some(dir) => Some(write_private(dir, mail.id, &message.formatted())?),
                    None => None,
                };
                tracing::warn!(
                    to = mail.to,
                    subject = mail.subject,
                    file = file.as_ref().map(|f| f.display().to_string()),
                    "mail NOT sent (no SMTP_URL): written to the file named here"
                );
                Ok(())
            }
        }
    }
}

/// Writes a mail to `<dir>/<id>.eml`, readable by its owner only (it may hold a token).
fn write_private(dir: &Path, id: i64, content: &[u8]) -> anyhow::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{id:08}.eml"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, content).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
