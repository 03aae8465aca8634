//! A real SMTP server for the mail tests: aiosmtpd (Python, from PyPI), run by
//! `fixtures/smtp_sink.py`, which writes each message it receives to a directory as JSON.
//! `.ci/run` installs aiosmtpd; a test needing it fails when it is missing.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde::Deserialize;

use crate::helpers::eventually;

/// One message as the server received it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    /// The token of the first link carrying one.
    pub fn token(&self) -> String {
        let start = self.text.find("token=").unwrap_or_else(|| panic!("no token in {}", self.text)) + "token=".len();
        self.text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
    }

    /// The six-digit code after `code: `.
    pub fn code(&self) -> String {
        let start = self.text.find("code: ").unwrap_or_else(|| panic!("no code in {}", self.text)) + "code: ".len();
        self.text[start..start + 6].to_owned()
    }
}

/// The server, stopped on drop; its messages in a directory of their own.
pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SmtpServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("authd-smtp-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self { port, dir, child: None };
        server.resume();
        server
    }

    /// Starts (again) listening on the same port, keeping the messages received.
    pub fn resume(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/fixtures/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (the mail tests need python3 with aiosmtpd: pip install aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP server did not start: is aiosmtpd installed (pip install aiosmtpd)?"
        );
        self.child = Some(child);
    }

    /// Stops listening; the messages received stay.
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, as for a local relay).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
    }

    /// The messages to `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<Mail> {
        self.messages().into_iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to))).collect()
    }

    /// Waits for the `n`-th message (1-based) to `to` whose subject contains `subject`.
    pub async fn nth_to(&self, n: usize, to: &str, subject: &str) -> Mail {
        let find = || self.messages_to(to).into_iter().filter(|m| m.subject.contains(subject)).nth(n - 1);
        eventually(Duration::from_secs(20), &format!("mail #{n} to {to} about {subject:?}"), || {
            let found = find().is_some();
            async move { found }
        })
        .await;
        find().unwrap()
    }

    /// Waits for the first message to `to` whose subject contains `subject`.
    pub async fn mail_to(&self, to: &str, subject: &str) -> Mail {
        self.nth_to(1, to, subject).await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
