//! The binary itself with nothing configured: it starts on an embedded SQLite file under
//! the data directory, and `authd migrate` applies migrations and exits.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::StatusCode;

/// The binary with an empty environment but for `HOME` (and what is given), run in `dir`.
fn authd(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command.args(args).env_clear().env("HOME", home).env("NO_COLOR", "1").current_dir(home);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Log lines from stdout (ANSI colours removed), as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|c| c.is_ascii_alphabetic());
                } else {
                    plain.push(c);
                }
            }
            if send.send(plain).is_err() {
                break;
            }
        }
    });
    receive
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn with_nothing_configured_authd_runs_on_sqlite_in_the_data_directory() {
    let home = std::env::temp_dir().join(format!("authd-home-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let database = home.join(".local/share/authd/authd.db");

    let mut child = authd(&home, &[], &[("LISTEN_ADDR", "127.0.0.1:0")]).stdout(Stdio::piped()).spawn().unwrap();
    let logged = lines(&mut child);
    let child = Killed(child);
    let mut seen = Vec::new();
    let addr = loop {
        let line = logged.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no start: {seen:#?}"));
        if let Some(at) = line.find("authd listening").and(line.find("addr=")) {
            break line[at + 5..].split_whitespace().next().unwrap().to_owned();
        }
        seen.push(line);
    };
    let database_line = seen.iter().find(|l| l.contains("database")).expect("a line naming the database");
    assert!(database_line.contains("SQLite"), "{database_line}");
    assert!(database_line.contains(&database.display().to_string()), "{database_line}");
    assert!(database.exists(), "{} was not created", database.display());

    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let created =
        http.post(format!("http://{addr}/api/v1/register-user")).json(&crate::helpers::ada()).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    drop(child);

    // `authd migrate` on the same (already current) database, then on a new one.
    let status = authd(&home, &["migrate"], &[]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    let other = home.join("other");
    let other_url = authd::config::sqlite_url(&other.join("x.db"));
    let status = authd(&home, &["migrate"], &[("DATABASE_URL", &other_url)]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    assert!(other.join("x.db").exists());

    let status = authd(&home, &["frobnicate"], &[]).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(2));
    let status = authd(&home, &[], &[("MIGRATE_ON_START", "perhaps")]).stderr(Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(2));

    std::fs::remove_dir_all(&home).unwrap();
}
