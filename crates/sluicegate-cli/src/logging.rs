//! Where the command's logs go, and in what shape: human-readable lines by default, one JSON
//! object per line with `--log-format json` (or `SLUICEGATE_LOG_FORMAT=json`). Always on
//! stderr, so stdout keeps only the command's output.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The shape of log lines.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` picks what is logged; without it,
/// `default_filter` does.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
