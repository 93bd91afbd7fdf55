//! Tracing setup: JSON lines (or text) on stdout, an `EnvFilter` that can be changed at run time.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::filter::LevelFilter;
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
    #[cfg(feature = "otel")]
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Otel(String),
}

/// Levels a filter may name (case-insensitive; tracing also reads `0` (off) to `5` (trace)).
pub const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Crates linked into linkr whose events a filter can select: a directive's target must start
/// with one of them (`linkr`, `linkr::access`, `tower_http::trace`). `EnvFilter` reads a bare
/// word that is not a level as a target, so without this check `deubg` would enable an unknown
/// target and silence everything else.
pub const KNOWN_TARGETS: &[&str] = &[
    "linkr",
    "axum",
    "axum_core",
    "tower",
    "tower_http",
    "hyper",
    "hyper_util",
    "h2",
    "tokio",
    "tokio_util",
    "redb",
    "tokio_postgres",
    "deadpool_postgres",
    "redis",
    "pprof",
    "inferno",
];

/// [`KNOWN_TARGETS`] of the `otel` feature.
#[cfg(feature = "otel")]
const OTEL_TARGETS: &[&str] = &[
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "tracing_opentelemetry",
    "reqwest",
];
#[cfg(not(feature = "otel"))]
const OTEL_TARGETS: &[&str] = &[];

fn is_known_target(target: &str) -> bool {
    let root = target.split("::").next().unwrap_or_default();
    KNOWN_TARGETS.iter().chain(OTEL_TARGETS).any(|t| *t == root)
}

fn known_targets() -> String {
    KNOWN_TARGETS
        .iter()
        .chain(OTEL_TARGETS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `directives` (`EnvFilter` syntax, e.g. `info` or `linkr=debug,warn`) after checking
/// each comma-separated directive's level and target; `Err` says what is wrong, naming the word.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, String> {
    if directives.trim().is_empty() {
        return Err(format!(
            "the filter is empty; give a level ({}) or target=level",
            LEVELS.join(", ")
        ));
    }
    for directive in directives.split(',').map(str::trim) {
        if !directive.is_empty() {
            check_directive(directive)?;
        }
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| e.to_string())
}

/// `level`, `target`, `target=level`, `target[span{field=value}]=level`.
fn check_directive(directive: &str) -> Result<(), String> {
    let (head, level) = match directive.rfind(']') {
        Some(close) => (
            &directive[..=close],
            directive[close + 1..].strip_prefix('='),
        ),
        None => match directive.split_once('=') {
            Some((head, level)) => (head, Some(level)),
            None => (directive, None),
        },
    };
    let levels = LEVELS.join(", ");
    let target = head.split('[').next().unwrap_or_default().trim();
    match level.map(str::trim) {
        Some(level) if level.is_empty() || level.parse::<LevelFilter>().is_err() => {
            return Err(format!(
                "{level:?} in {directive:?} is not a log level; levels are {levels}"
            ));
        }
        Some(_) => {}
        None if head.contains('[') => {}
        None if target.parse::<LevelFilter>().is_ok() => return Ok(()),
        None if !is_known_target(target) => {
            return Err(format!(
                "{target:?} is neither a log level ({levels}) nor a known log target ({})",
                known_targets()
            ));
        }
        None => {}
    }
    if !target.is_empty() && !is_known_target(target) {
        return Err(format!(
            "{target:?} in {directive:?} is not a known log target ({}); levels are {levels}",
            known_targets()
        ));
    }
    Ok(())
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
        let filter = parse_filter(directives)
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
    let filter = parse_filter(&config.log_filter)
        .map_err(|e| TelemetryError::Filter(config.log_filter.clone(), e))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(feature = "otel")]
    let registry = registry.with(otel::layer(config.trace_sample_ratio)?);
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

/// OpenTelemetry (cargo feature `otel`): a `tracing-opentelemetry` layer over an SDK tracer
/// provider, exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
#[cfg(feature = "otel")]
pub mod otel {
    use std::sync::OnceLock;

    use axum::http::HeaderMap;
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
    use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
    use tracing_subscriber::registry::LookupSpan;

    use super::TelemetryError;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    /// `OTEL_SERVICE_NAME`, or `linkr`.
    fn service_name() -> String {
        std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "linkr".into())
    }

    /// The layer for the global subscriber. Sampling: `ParentBased(TraceIdRatioBased(ratio))`.
    /// Without `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) spans are made (so logs carry trace ids) but
    /// not exported. Call outside a tokio runtime (the exporter's blocking HTTP client).
    pub fn layer<S>(ratio: f64) -> Result<OpenTelemetryLayer<S, SdkTracer>, TelemetryError>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name())
                    .build(),
            );
        let configured = |var: &str| std::env::var(var).is_ok_and(|e| !e.trim().is_empty());
        if configured("OTEL_EXPORTER_OTLP_ENDPOINT")
            || configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| TelemetryError::Otel(e.to_string()))?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let tracer = provider.tracer("linkr");
        let _ = PROVIDER.set(provider);
        Ok(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// Exports what is still buffered and stops the exporter (graceful shutdown; idempotent).
    pub fn shutdown() {
        if let Some(provider) = PROVIDER.get()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("linkr: flushing traces failed: {e}");
        }
    }

    struct Headers<'a>(&'a HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    /// Makes the W3C `traceparent` of `headers` (if any, and valid) the parent of `span`, and
    /// records the span's trace id in its `trace_id` field, which it returns.
    pub fn attach(span: &tracing::Span, headers: &HeaderMap) -> Option<TraceId> {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let remote = parent.span().span_context().trace_id();
        let _ = span.set_parent(parent);
        // With our layer installed the span's own context (a fresh trace when there was no
        // parent); without it (embedded, tests) the incoming trace id.
        let own = span.context().span().span_context().trace_id();
        let trace_id = [own, remote]
            .into_iter()
            .find(|id| *id != TraceId::INVALID)?;
        span.record("trace_id", tracing::field::display(trace_id));
        Some(trace_id)
    }
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

    #[test]
    fn levels_targets_and_their_combinations_parse() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "3",
            "linkr",
            "linkr::access=off,info",
            "linkr=debug,tower_http=trace,warn",
            "hyper_util::client=warn",
            "linkr[request]=debug",
            "[request{route=/v1/links}]=trace",
            "info,",
        ] {
            parse_filter(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn a_misspelt_level_is_not_taken_for_a_target() {
        for (bad, word) in [
            ("deubg", "deubg"),
            ("verbose", "verbose"),
            ("warning", "warning"),
            ("linkr=debug,deubg", "deubg"),
            ("linkr=loud", "loud"),
            ("linkr=", "\"\""),
            ("lnkr=debug", "lnkr"),
            ("tower-http=debug", "tower-http"),
            ("", "empty"),
            (" ", "empty"),
        ] {
            let e = parse_filter(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(e.contains(word), "{bad:?}: {e}");
            assert!(
                e.contains("trace, debug, info, warn, error, off"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn known_targets_name_crates_linkr_depends_on() {
        let lock = include_str!("../../Cargo.lock");
        for target in KNOWN_TARGETS.iter().chain(OTEL_TARGETS) {
            let name = target.replace('_', "-");
            assert!(
                lock.contains(&format!("name = \"{name}\"\n"))
                    || lock.contains(&format!("name = \"{target}\"\n")),
                "{target} is not a crate in Cargo.lock"
            );
        }
    }
}
