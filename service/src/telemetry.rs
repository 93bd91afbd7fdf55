//! Tracing setup: JSON lines (or text) on stdout, an `EnvFilter` that can be changed at run time.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::admin::LogLevelControl;
use crate::config::{Config, LogFormat};

/// Target of the per-request access log lines.
pub const ACCESS_TARGET: &str = "linkr::access";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {0:?}: {1}")]
    Filter(String, String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Changes the live log filter. Cheap to clone.
#[derive(Clone)]
pub struct LogLevel(Arc<Inner>);

enum Inner {
    Live(reload::Handle<EnvFilter, Registry>),
    /// No subscriber of ours is installed (tests, embedding): remembers the directives only.
    Detached(Mutex<String>),
}

impl LogLevel {
    /// A handle that changes nothing but remembers what it was set to.
    pub fn detached(directives: &str) -> Self {
        Self(Arc::new(Inner::Detached(Mutex::new(
            directives.to_string(),
        ))))
    }

    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::builder()
            .parse(directives)
            .map_err(|e| format!("invalid log filter {directives:?}: {e}"))?;
        match &*self.0 {
            Inner::Live(handle) => handle.reload(filter).map_err(|e| e.to_string()),
            Inner::Detached(current) => {
                *current.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_string();
                Ok(())
            }
        }
    }

    pub fn current(&self) -> String {
        match &*self.0 {
            Inner::Live(handle) => handle
                .with_current(|f| f.to_string())
                .unwrap_or_else(|_| "unknown".into()),
            Inner::Detached(current) => current.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

impl LogLevelControl for LogLevel {
    fn set(&self, directives: &str) -> Result<(), String> {
        LogLevel::set(self, directives)
    }

    fn current(&self) -> String {
        LogLevel::current(self)
    }
}

static INSTALLED: OnceLock<LogLevel> = OnceLock::new();

/// Installs the global subscriber described by `config` and returns the live filter handle.
pub fn init(config: &Config) -> Result<LogLevel, TelemetryError> {
    let filter = EnvFilter::builder()
        .parse(&config.log_filter)
        .map_err(|e| TelemetryError::Filter(config.log_filter.clone(), e.to_string()))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    let level = LogLevel(Arc::new(Inner::Live(handle)));
    let _ = INSTALLED.set(level.clone());
    Ok(level)
}

/// The handle installed by [`init`], or a detached one when no subscriber of ours is installed.
pub fn log_level(default_directives: &str) -> LogLevel {
    INSTALLED
        .get()
        .cloned()
        .unwrap_or_else(|| LogLevel::detached(default_directives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_handle_validates_and_remembers() {
        let level = LogLevel::detached("info");
        assert_eq!(level.current(), "info");
        level.set("linkr=debug,warn").unwrap();
        assert_eq!(level.current(), "linkr=debug,warn");
        assert!(level.set("linkr=loud").is_err());
        assert_eq!(level.current(), "linkr=debug,warn");
    }
}
