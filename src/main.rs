use std::process::ExitCode;

use authd::{config::Settings, startup, telemetry};

const USAGE: &str = "usage: authd [serve | migrate | rotate-key | admin grant|revoke EMAIL ROLE | client ...]
  serve                     (the default) migrate unless MIGRATE_ON_START=false, then serve on LISTEN_ADDR
  migrate                   apply pending database migrations, then exit
  rotate-key                sign with a new generated key (RS256, ES256, EdDSA); the old one stays published
  admin grant EMAIL ROLE    give the user ROLE (`admin` opens the admin API) from their next token on
  admin revoke EMAIL ROLE   take ROLE from the user
  client create NAME --scope S[,S] [--certificate IDENTITY]
                            a service client (scopes: introspect, revocations, admin); prints
                            client_id: and client_secret: (shown this once)
  client list               the clients: id, name, scopes, certificate identity
  client rotate ID [--grace-seconds N]
                            a new secret; the old one works for N more seconds
                            (default CLIENT_SECRET_GRACE_SECONDS)
  client delete ID          the client's secrets and tokens stop working at once";

enum Command {
    Serve,
    Migrate,
    RotateKey,
    Role { email: String, role: String, grant: bool },
    Client(startup::ClientCommand),
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
        ["client", rest @ ..] => match startup::ClientCommand::parse(rest) {
            Ok(command) => Command::Client(command),
            Err(why) => {
                eprintln!("authd: {why}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
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
    let to_stderr = matches!(command, Command::Role { .. } | Command::Client(_));
    let result = match command {
        Command::Serve => startup::serve(settings).await,
        Command::Migrate => startup::migrate(&settings).await,
        Command::RotateKey => startup::rotate_key(&settings).await,
        Command::Role { email, role, grant } => startup::change_role(&settings, &email, &role, grant).await,
        Command::Client(command) => startup::client_command(&settings, command).await,
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
