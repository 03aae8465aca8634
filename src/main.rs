use std::process::ExitCode;

use authd::{config::Settings, startup, telemetry};

const USAGE: &str = "usage: authd [serve | migrate | rotate-key]
  serve       (the default) migrate unless MIGRATE_ON_START=false, then serve on LISTEN_ADDR
  migrate     apply pending database migrations, then exit
  rotate-key  sign with a new generated key (RS256, ES256, EdDSA); the old one stays published";

enum Command {
    Serve,
    Migrate,
    RotateKey,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = std::env::args().skip(1).collect::<Vec<_>>();
    let command = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => Command::Serve,
        ["migrate"] => Command::Migrate,
        ["rotate-key"] => Command::RotateKey,
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
    let result = match command {
        Command::Serve => startup::serve(settings).await,
        Command::Migrate => startup::migrate(&settings).await,
        Command::RotateKey => startup::rotate_key(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "authd failed");
            ExitCode::FAILURE
        }
    }
}
