//! Structured logs for `run`: text for people, JSON for log pipelines, level from a flag or env
//! (an `EnvFilter` directive such as `info` or `sessionstore_operator=debug,kube=warn`).

use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Fails on a malformed level directive.
pub fn init(format: LogFormat, level: &str) -> Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| Error::Startup(format!("--log-level {level:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| Error::Startup(format!("installing the log subscriber: {e}")))
}
