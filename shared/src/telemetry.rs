//! Logging set-up shared by every binary: `RUST_LOG` filtering, text or JSON
//! lines (`EASYNOTE_LOG_FORMAT`).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{ConfigError, Env};

/// The default filter: our own info logs, and only warnings from the noisy
/// libraries underneath.
const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,tower_http=info,hyper=warn";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Telemetry settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `RUST_LOG` (default `info` with quiet libraries).
    pub filter: String,
    /// `EASYNOTE_LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
}

impl TelemetryConfig {
    /// Reads the telemetry settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let format = match env.string("EASYNOTE_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "EASYNOTE_LOG_FORMAT",
                    format!("{other:?} is neither text nor json"),
                ));
            }
        };
        Ok(Self {
            filter: env.string("RUST_LOG", DEFAULT_FILTER),
            format,
        })
    }
}

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(config: &TelemetryConfig) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|err| ConfigError::invalid("RUST_LOG", err.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
    // Already initialised (several servers in one test binary): keep the first.
    drop(result);
    Ok(())
}
