//! A real PgBouncer (Debian's package), started by a test in a temporary directory of its
//! own: transaction pooling, one database exposed, trust authentication, a free port.
//! `.ci/run` installs it; a test that needs it fails under `CI=true` when it is missing,
//! and is skipped with a line on stderr elsewhere.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    str::FromStr,
    time::Duration,
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use crate::helpers::eventually;

pub struct PgBouncer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

/// Where Debian puts the binary (`/usr/sbin` is not on every user's PATH).
fn binary() -> Option<PathBuf> {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].into_iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
        let found = Command::new("sh").args(["-c", "command -v pgbouncer"]).output().ok()?;
        let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
        (!path.is_empty()).then(|| PathBuf::from(path))
    })
}

impl PgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL server of `database_url`, exposing only
    /// that URL's database; `None` (after saying why) if PgBouncer is not installed and
    /// this is not CI.
    pub async fn start(database_url: &str) -> Option<Self> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but pgbouncer is not installed (.ci/run installs Debian's package)"
            );
            eprintln!("skipped: pgbouncer is not installed (apt-get install pgbouncer)");
            return None;
        };
        let target = PgConnectOptions::from_str(database_url).unwrap();
        let database = target.get_database().expect("a database in the URL").to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("authd-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // No `ignore_startup_parameters`: with DB_PREPARED_STATEMENTS=false authd sends no
        // `extra_float_digits`, and this shows it.
        let ini = format!(
            "[databases]\n\
             {database} = host={host} port={pg_port} dbname={database}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 10\n\
             max_client_conn = 200\n",
            host = target.get_host(),
            pg_port = target.get_port(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"{}\" \"\"\n", target.get_username())).unwrap();
        let mut command = Command::new(binary);
        // PgBouncer refuses to run as root; `-u` drops to another user after reading its files.
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts");
        let bouncer = Self { port, child, dir };
        // As authd connects with prepared statements off: no `extra_float_digits`.
        let options = PgConnectOptions::from_str(&bouncer.url(database_url)).unwrap().extra_float_digits(None);
        eventually(Duration::from_secs(10), "PgBouncer answers", || {
            let options = options.clone();
            async move { PgConnection::connect_with(&options).await.is_ok() }
        })
        .await;
        Some(bouncer)
    }

    /// `database_url` with PgBouncer's address in place of PostgreSQL's.
    pub fn url(&self, database_url: &str) -> String {
        let options = PgConnectOptions::from_str(database_url).unwrap();
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            options.get_username(),
            self.port,
            options.get_database().unwrap_or_default()
        )
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
