//! Logging: `tracing` to standard error, filtered by `RUST_LOG`, JSON with `LOG_FORMAT=json`.
//! Each HTTP request logs one `INFO` line at its response (`http::track`): method, path,
//! status, latency and request id.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Only the binary reads the environment, here.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only for a terminal: a log file or collector gets plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests in one process) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
