use std::process::ExitCode;

use authd::{config::Settings, startup, telemetry};

const USAGE: &str = "usage: authd [serve | migrate | rotate-key | admin grant|revoke EMAIL ROLE]
  serve                     (the default) migrate unless MIGRATE_ON_START=false, then serve on LISTEN_ADDR
  migrate                   apply pending database migrations, then exit
  rotate-key                sign with a new generated key (RS256, ES256, EdDSA); the old one stays published
  admin grant EMAIL ROLE    give the user ROLE (`admin` opens the admin API) from their next token on
  admin revoke EMAIL ROLE   take ROLE from the user";

enum Command {
    Serve,
    Migrate,
    RotateKey,
    Role { email: String, role: String, grant: bool },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = std::env::args().skip(1).collect::<Vec<_>>();
    let command = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => Command::Serve,
        ["migrate"] => Command::Migrate,
        ["rotate-key"] => Command::RotateKey,
        ["admin", verb @ ("grant" | "revoke"), email, role] => {
            Command::Role { email: (*email).to_owned(), role: (*role).to_owned(), grant: *verb == "grant" }
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("authd: unexpected arguments {args:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("authd: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    // An operator's command says what went wrong on stderr too, beside the log.
    let to_stderr = matches!(command, Command::Role { .. });
    let result = match command {
        Command::Serve => startup::serve(settings).await,
        Command::Migrate => startup::migrate(&settings).await,
        Command::RotateKey => startup::rotate_key(&settings).await,
        Command::Role { email, role, grant } => startup::change_role(&settings, &email, &role, grant).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if to_stderr {
                eprintln!("authd: {e:#}");
            }
            tracing::error!(error = format!("{e:#}"), "authd failed");
            ExitCode::FAILURE
        }
    }
}
