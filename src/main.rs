use authd::{config::Settings, startup::Application, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("authd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    match Application::build(settings).await {
        Ok(app) => match app.run_until(authd::startup::shutdown_signal()).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "server failed");
                std::process::ExitCode::FAILURE
            }
        },
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "start-up failed");
            std::process::ExitCode::FAILURE
        }
    }
}
