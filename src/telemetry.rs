//! Logging: one line per request, as text or JSON, filtered by `RUST_LOG`. Every event
//! logged while a request is served carries that request's `request_id` (its span);
//! security events have the target `authd::security` (see `core::events`).

use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, fmt, fmt::MakeWriter, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stdout; later calls (as in tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = subscriber(format, filter, std::io::stdout).try_init();
}

/// authd's log format, writing to `writer`; tests capture the log with it.
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_target(false).finish()),
        // The target routes lines in a log pipeline: `authd::security` carries the
        // security events.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}
