//! Configuration: clap flags with `LINKR_*` environment fallbacks (flags win).
//!
//! Everything is read as raw text first ([`RawConfig`]); [`RawConfig::validate`] then checks
//! every value and returns *all* problems at once, so an operator fixes a broken deployment in
//! one round instead of one error per restart. Nothing is bound before this succeeds.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Serialize, Serializer};

use crate::client_ip::{ForwardedHeader, TrustedProxies};
use crate::ratelimit::Quota;

/// Default of `LINKR_RATE_LIMIT_CLIENTS`: at most about 8-16 MB of buckets (72 bytes each in a
/// hash table that doubles).
pub const DEFAULT_RATE_LIMIT_CLIENTS: usize = 100_000;

/// Exit code for usage and configuration errors (as clap uses for usage errors).
pub const EXIT_USAGE: i32 = 2;

/// A value that must never be printed: `Debug`, `Display` and `Serialize` all redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const REDACTED: &'static str = "[redacted]";

    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }
}

/// One API key: the caller's name (the owner of the links it creates), the key, admin or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub name: String,
    pub key: Secret<String>,
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// The validated, effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Base of `short_url` without a trailing slash; `None`: `http://<bound main address>`.
    pub public_url: Option<String>,
    pub api_keys: Vec<ApiKey>,
    #[serde(serialize_with = "ser_quota")]
    pub rate_limit: Quota,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub access_log: bool,
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_delay: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    /// `None`: connections are never closed for idleness (the header timeout still applies).
    #[serde(serialize_with = "ser_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// `None`: a handler may wait for the next piece of a request body forever.
    #[serde(serialize_with = "ser_opt_duration")]
    pub body_timeout: Option<Duration>,
    /// `None`: no limit on a request's time to its response (main listener only).
    #[serde(serialize_with = "ser_opt_duration")]
    pub request_timeout: Option<Duration>,
    /// `None`: no limit on open connections (per listener).
    pub max_connections: Option<usize>,
    /// `None`: no limit on requests in progress on the main listener.
    pub max_in_flight: Option<usize>,
    #[serde(serialize_with = "ser_duration")]
    pub click_flush_interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub purge_interval: Duration,
    pub database_url: Option<Secret<String>>,
    pub redis_url: Option<Secret<String>>,
    /// Proxies whose forwarding header names the client (per-IP limit, access log); none by default.
    pub trusted_proxies: TrustedProxies,
    /// Most clients the per-IP limiter keeps a bucket for (IPv6 counted by /64).
    pub rate_limit_clients: usize,
    /// Bearer token every admin endpoint requires; `None`: the admin listener is open.
    pub admin_token: Option<Secret<String>>,
    /// Share of new traces sampled (0..=1); an incoming `traceparent`'s decision wins.
    #[cfg(feature = "otel")]
    pub trace_sample_ratio: f64,
}

impl Default for Config {
    /// The documented defaults (what `linkr` runs with when nothing is set).
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            api_keys: Vec::new(),
            rate_limit: Quota::DISABLED,
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            access_log: true,
            shutdown_timeout: Duration::from_secs(25),
            shutdown_delay: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(60)),
            body_timeout: Some(Duration::from_secs(10)),
            request_timeout: Some(Duration::from_secs(30)),
            max_connections: Some(10_000),
            max_in_flight: Some(1024),
            click_flush_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(60),
            database_url: None,
            redis_url: None,
            trusted_proxies: TrustedProxies::default(),
            rate_limit_clients: DEFAULT_RATE_LIMIT_CLIENTS,
            admin_token: None,
            #[cfg(feature = "otel")]
            trace_sample_ratio: 1.0,
        }
    }
}

impl Config {
    /// Parses the process's arguments and environment.
    pub fn load() -> Result<Loaded, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Parses `args` (first item: the program name) and the environment.
    pub fn load_from<I, T>(args: I) -> Result<Loaded, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = RawConfig::command()
            .try_get_matches_from(args)
            .map_err(ConfigError::Usage)?;
        let raw = RawConfig::from_arg_matches(&matches).map_err(ConfigError::Usage)?;
        let print_config = raw.print_config;
        let given = given_as_flags(&matches);
        let config = raw.validate().map_err(|problems| {
            ConfigError::Invalid(problems.iter().map(|p| name_as_given(p, &given)).collect())
        })?;
        Ok(Loaded {
            config,
            print_config,
        })
    }

    /// `public_url`, or `http://<addr>` when unset.
    pub fn public_url_or(&self, addr: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
    }

    /// The effective configuration as pretty JSON, secrets redacted (`--print-config`).
    pub fn to_redacted_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "public_url".into(),
                serde_json::Value::String(self.public_url_or(self.addr)),
            );
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

/// `(LINKR_VAR, --flag)` of every setting given on the command line: problems with those
/// name the flag, the way the user wrote it, not the environment variable behind it.
fn given_as_flags(matches: &clap::ArgMatches) -> Vec<(String, String)> {
    RawConfig::command()
        .get_arguments()
        .filter(|arg| {
            matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
        })
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?.to_owned();
            Some((var, format!("--{}", arg.get_long()?)))
        })
        .collect()
}

/// `problem` with each `LINKR_*` name of a setting given as a flag replaced by the flag.
fn name_as_given(problem: &str, given: &[(String, String)]) -> String {
    let mut out = String::with_capacity(problem.len());
    let mut rest = problem;
    while let Some(start) = rest.find("LINKR_") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let word = &tail[..len];
        match given.iter().find(|(var, _)| var == word) {
            Some((_, flag)) => out.push_str(flag),
            None => out.push_str(word),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// A successful parse: the config and whether `--print-config` was asked for.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub print_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags, `--help`, `--version`: clap prints and picks the exit code.
    #[error(transparent)]
    Usage(clap::Error),
    #[error("{}", render_problems(.0))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Prints the error (to stderr, or stdout for `--help`) and exits: 2 for every real error.
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Usage(e) => e.exit(),
            ConfigError::Invalid(_) => {
                eprintln!("{self}");
                std::process::exit(EXIT_USAGE)
            }
        }
    }
}

fn render_problems(problems: &[String]) -> String {
    let mut out = format!(
        "linkr: invalid configuration ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(p);
    }
    out
}

/// Raw flags and environment, before validation. Every value is text so that one bad value
/// does not hide the others.
#[derive(Debug, Parser)]
#[command(
    name = "linkr",
    version,
    about = "linkr: a URL shortener on an embedded durable store",
    after_help = "Durations accept 500ms, 25s, 1m30s, 2h; a plain number is seconds. \
                  Every *_FILE variable reads the value from a file."
)]
pub struct RawConfig {
    /// Main listener (API and redirects).
    #[arg(long, env = "LINKR_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Admin listener (metrics, profiles, log level); must differ from --addr.
    #[arg(long, env = "LINKR_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: String,
    /// Directory of the embedded store.
    #[arg(long, env = "LINKR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Base URL of short links in responses [default: http://<addr>].
    #[arg(long, env = "LINKR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// API keys: comma-separated `name:key[:admin]`.
    #[arg(long, env = "LINKR_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File with one `name:key[:admin]` per line (`#` comments).
    #[arg(long, env = "LINKR_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Requests per second per API key (API) and per client IP (redirects); 0 disables.
    #[arg(long, env = "LINKR_RATE_LIMIT", default_value = "0")]
    pub rate_limit: String,
    /// Bucket size [default: the rate].
    #[arg(long, env = "LINKR_RATE_BURST")]
    pub rate_burst: Option<String>,
    /// json or text.
    #[arg(long, env = "LINKR_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `linkr=debug,info`.
    #[arg(long = "log", env = "LINKR_LOG", default_value = "info")]
    pub log: String,
    /// One log line per request: on or off.
    #[arg(long, env = "LINKR_ACCESS_LOG", default_value = "on")]
    pub access_log: String,
    /// Upper bound of a graceful shutdown; past it the process exits non-zero.
    #[arg(long, env = "LINKR_SHUTDOWN_TIMEOUT", default_value = "25s")]
    pub shutdown_timeout: String,
    /// After a stop signal, time /readyz answers 503 while requests are still served, so load
    /// balancers stop sending before the listener closes.
    #[arg(long, env = "LINKR_SHUTDOWN_DELAY", default_value = "5s")]
    pub shutdown_delay: String,
    /// Time a connection has to deliver a complete request head (also bounds keep-alive waits).
    #[arg(long, env = "LINKR_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: String,
    /// A connection with no request in flight and no bytes moving for this long is closed; 0 disables.
    #[arg(long, env = "LINKR_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,
    /// A request whose handler waits this long for the next piece of its body is answered 408; 0 disables.
    #[arg(long, env = "LINKR_BODY_TIMEOUT", default_value = "10s")]
    pub body_timeout: String,
    /// A request not answered this long after its head is answered 408 (main listener); 0 disables.
    #[arg(long, env = "LINKR_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,
    /// Most open connections per listener; more are answered 503 and closed at once; 0 disables.
    #[arg(long, env = "LINKR_MAX_CONNECTIONS", default_value = "10000")]
    pub max_connections: String,
    /// Most requests in progress on the main listener; more are shed with 503 and Retry-After; 0 disables.
    #[arg(long, env = "LINKR_MAX_IN_FLIGHT", default_value = "1024")]
    pub max_in_flight: String,
    /// How often aggregated click counts are written to the store (at most 1s).
    #[arg(long, env = "LINKR_CLICK_FLUSH_INTERVAL", default_value = "1s")]
    pub click_flush_interval: String,
    /// How often expired links are purged.
    #[arg(long, env = "LINKR_PURGE_INTERVAL", default_value = "60s")]
    pub purge_interval: String,
    /// Postgres URL: the scale-out backend (several instances serve the same links).
    #[arg(long, env = "LINKR_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[arg(long, env = "LINKR_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Redis URL: shared cache and invalidations between instances (needs the database URL).
    #[arg(long, env = "LINKR_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    #[arg(long, env = "LINKR_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// Proxies (comma-separated addresses or CIDRs) whose forwarding header names the client,
    /// for the per-IP rate limit and the access log; empty: the TCP peer is the client.
    #[arg(long, env = "LINKR_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// The header the trusted proxies write: x-forwarded-for or forwarded (RFC 7239).
    #[arg(
        long,
        env = "LINKR_CLIENT_IP_HEADER",
        default_value = "x-forwarded-for"
    )]
    pub client_ip_header: String,
    /// Most clients (IPv4 addresses, IPv6 /64s) the per-IP limiter tracks at once; the least
    /// recently limited are forgotten first.
    #[arg(long, env = "LINKR_RATE_LIMIT_CLIENTS", default_value = "100000")]
    pub rate_limit_clients: String,
    /// Bearer token required on every admin endpoint (at least 16 visible characters).
    #[arg(long, env = "LINKR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[arg(long, env = "LINKR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Share of new traces sampled, 0 to 1 (an incoming traceparent's decision wins).
    #[cfg(feature = "otel")]
    #[arg(long, env = "LINKR_TRACE_SAMPLE_RATIO", default_value = "1.0")]
    pub trace_sample_ratio: String,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl RawConfig {
    /// Checks every value; on failure returns every problem found.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut p = Problems::default();

        let addr = p.check("LINKR_ADDR", parse_addr(&self.addr));
        let admin_addr = p.check("LINKR_ADMIN_ADDR", parse_addr(&self.admin_addr));
        if let (Some(a), Some(b)) = (addr, admin_addr)
            && a == b
            && a.port() != 0
        {
            p.push(
                "LINKR_ADMIN_ADDR",
                format!("must differ from LINKR_ADDR (both are {a})"),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            p.push("LINKR_DATA_DIR", "must not be empty");
        } else if self.data_dir.exists() && !self.data_dir.is_dir() {
            p.push(
                "LINKR_DATA_DIR",
                format!("{} exists and is not a directory", self.data_dir.display()),
            );
        }
        let public_url = match &self.public_url {
            None => None,
            Some(u) => p.check("LINKR_PUBLIC_URL", parse_public_url(u)),
        };

        let api_keys = match (&self.api_keys, &self.api_keys_file) {
            (Some(_), Some(_)) => {
                p.push(
                    "LINKR_API_KEYS",
                    "set LINKR_API_KEYS or LINKR_API_KEYS_FILE, not both",
                );
                Vec::new()
            }
            (Some(list), None) => parse_api_keys(list.split(','), "LINKR_API_KEYS", &mut p),
            (None, Some(path)) => match read_secret_file(path) {
                Ok(text) => parse_api_keys(text.lines(), "LINKR_API_KEYS_FILE", &mut p),
                Err(e) => {
                    p.push("LINKR_API_KEYS_FILE", e);
                    Vec::new()
                }
            },
            (None, None) => Vec::new(),
        };

        let per_second = p.check("LINKR_RATE_LIMIT", parse_u32(&self.rate_limit));
        let burst = match &self.rate_burst {
            None => per_second,
            Some(b) => p.check("LINKR_RATE_BURST", parse_u32(b)),
        };
        if let (Some(r), Some(0)) = (per_second, burst)
            && r > 0
        {
            p.push(
                "LINKR_RATE_BURST",
                "must be at least 1 when LINKR_RATE_LIMIT is set",
            );
        }

        let log_format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "json" => Some(LogFormat::Json),
            "text" => Some(LogFormat::Text),
            other => {
                p.push(
                    "LINKR_LOG_FORMAT",
                    format!("expected json or text, got {other:?}"),
                );
                None
            }
        };
        if let Err(e) = crate::telemetry::parse_filter(&self.log) {
            p.push("LINKR_LOG", format!("invalid filter {:?}: {e}", self.log));
        }
        let access_log = p.check("LINKR_ACCESS_LOG", parse_switch(&self.access_log));

        let positive = |d: Duration| {
            if d.is_zero() {
                Err("must be greater than 0".to_string())
            } else {
                Ok(d)
            }
        };
        let shutdown_timeout = p.check(
            "LINKR_SHUTDOWN_TIMEOUT",
            parse_duration(&self.shutdown_timeout).and_then(positive),
        );
        let shutdown_delay = p.check("LINKR_SHUTDOWN_DELAY", parse_duration(&self.shutdown_delay));
        if let (Some(t), Some(d)) = (shutdown_timeout, shutdown_delay)
            && d >= t
        {
            p.push(
                "LINKR_SHUTDOWN_DELAY",
                format!(
                    "({}) must be shorter than LINKR_SHUTDOWN_TIMEOUT ({}), which bounds the whole shutdown",
                    humanize(d),
                    humanize(t)
                ),
            );
        }
        let header_timeout = p.check(
            "LINKR_HEADER_TIMEOUT",
            parse_duration(&self.header_timeout).and_then(positive),
        );
        let idle_timeout = p.check("LINKR_IDLE_TIMEOUT", parse_duration(&self.idle_timeout));
        let body_timeout = p.check("LINKR_BODY_TIMEOUT", parse_duration(&self.body_timeout));
        let request_timeout = p.check(
            "LINKR_REQUEST_TIMEOUT",
            parse_duration(&self.request_timeout),
        );
        let max_connections = p.check("LINKR_MAX_CONNECTIONS", parse_u32(&self.max_connections));
        let max_in_flight = p.check("LINKR_MAX_IN_FLIGHT", parse_u32(&self.max_in_flight));
        let click_flush_interval = p.check(
            "LINKR_CLICK_FLUSH_INTERVAL",
            parse_duration(&self.click_flush_interval)
                .and_then(positive)
                .and_then(|d| {
                    if d > Duration::from_secs(1) {
                        Err("must be at most 1s (clicks are flushed at least every second)".into())
                    } else {
                        Ok(d)
                    }
                }),
        );
        let purge_interval = p.check(
            "LINKR_PURGE_INTERVAL",
            parse_duration(&self.purge_interval).and_then(positive),
        );

        let database_given = self.database_url.is_some() || self.database_url_file.is_some();
        let database_url = secret_with_file(
            "LINKR_DATABASE_URL",
            self.database_url,
            self.database_url_file,
            &["postgres", "postgresql"],
            "the Postgres backend",
            &mut p,
        );
        let redis_url = secret_with_file(
            "LINKR_REDIS_URL",
            self.redis_url,
            self.redis_url_file,
            &["redis"],
            "the Redis cache",
            &mut p,
        );
        if redis_url.is_some() && !database_given {
            p.push(
                "LINKR_REDIS_URL",
                "the Redis cache needs LINKR_DATABASE_URL (Postgres) as well".to_string(),
            );
        }

        let trusted_proxies = TrustedProxies {
            networks: p
                .check(
                    "LINKR_TRUSTED_PROXIES",
                    TrustedProxies::parse_networks(&self.trusted_proxies),
                )
                .unwrap_or_default(),
            header: p
                .check(
                    "LINKR_CLIENT_IP_HEADER",
                    ForwardedHeader::parse(&self.client_ip_header),
                )
                .unwrap_or_default(),
        };
        let rate_limit_clients = p
            .check(
                "LINKR_RATE_LIMIT_CLIENTS",
                parse_u32(&self.rate_limit_clients).and_then(|n| match n {
                    0 => Err("must be at least 1".into()),
                    n => Ok(n as usize),
                }),
            )
            .unwrap_or(DEFAULT_RATE_LIMIT_CLIENTS);
        let admin_token = admin_token(self.admin_token, self.admin_token_file, &mut p);

        #[cfg(feature = "otel")]
        let trace_sample_ratio = p.check(
            "LINKR_TRACE_SAMPLE_RATIO",
            parse_ratio(&self.trace_sample_ratio),
        );

        if !p.0.is_empty() {
            return Err(p.0);
        }
        let (
            Some(addr),
            Some(admin_addr),
            Some(per_second),
            Some(burst),
            Some(log_format),
            Some(access_log),
            Some(shutdown_timeout),
            Some(shutdown_delay),
            Some(header_timeout),
            Some(idle_timeout),
            Some(click_flush_interval),
            Some(purge_interval),
        ) = (
            addr,
            admin_addr,
            per_second,
            burst,
            log_format,
            access_log,
            shutdown_timeout,
            shutdown_delay,
            header_timeout,
            idle_timeout,
            click_flush_interval,
            purge_interval,
        )
        else {
            unreachable!("every missing value recorded a problem");
        };
        Ok(Config {
            addr,
            admin_addr,
            data_dir: self.data_dir,
            public_url,
            api_keys,
            rate_limit: Quota { per_second, burst },
            log_format,
            log_filter: self.log,
            access_log,
            shutdown_timeout,
            shutdown_delay,
            header_timeout,
            idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
            // Each is `Some` here (a `None` recorded a problem); zero disables.
            body_timeout: body_timeout.filter(|d| !d.is_zero()),
            request_timeout: request_timeout.filter(|d| !d.is_zero()),
            max_connections: max_connections.filter(|&n| n > 0).map(|n| n as usize),
            max_in_flight: max_in_flight.filter(|&n| n > 0).map(|n| n as usize),
            click_flush_interval,
            purge_interval,
            database_url,
            redis_url,
            trusted_proxies,
            rate_limit_clients,
            admin_token,
            #[cfg(feature = "otel")]
            trace_sample_ratio: trace_sample_ratio.unwrap_or(1.0),
        })
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, var: &str, msg: impl fmt::Display) {
        self.0.push(format!("{var}: {msg}"));
    }

    fn check<T>(&mut self, var: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.push(var, e)).ok()
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:8080 or [::]:8080, got {s:?}"))
}

fn parse_public_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("{s:?} must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected a whole number from 0 to {}, got {s:?}", u32::MAX))
}

#[cfg(feature = "otel")]
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// `500ms`, `25s`, `1m30s`, `2h`, `250us`; a plain number (possibly fractional) is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("expected a duration such as 500ms, 25s or 1m30s, got {s:?}");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        rest = tail.trim_start();
    }
    Ok(total)
}

/// Short human form used in messages: `1.5s`, `250ms`.
pub fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn parse_api_keys<'a>(
    entries: impl Iterator<Item = &'a str>,
    var: &str,
    p: &mut Problems,
) -> Vec<ApiKey> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for (i, entry) in entries.enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let mut parts = entry.split(':');
        let (name, key, flag) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            p.push(
                var,
                format!("entry {n}: expected name:key[:admin], found more fields"),
            );
            continue;
        }
        let (Some(name), Some(key)) = (name.map(str::trim), key.map(str::trim)) else {
            p.push(var, format!("entry {n}: expected name:key[:admin]"));
            continue;
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            p.push(
                var,
                format!("entry {n}: name {name:?} must be 1-64 of A-Z a-z 0-9 _ - ."),
            );
            continue;
        }
        if key.len() < 8 || key.bytes().any(|b| !b.is_ascii_graphic()) {
            p.push(
                var,
                format!("entry {n} ({name}): the key must be at least 8 visible ASCII characters"),
            );
            continue;
        }
        let admin = match flag.map(str::trim) {
            None => false,
            Some("admin") => true,
            Some(other) => {
                p.push(
                    var,
                    format!("entry {n} ({name}): third field must be \"admin\", got {other:?}"),
                );
                continue;
            }
        };
        if keys.iter().any(|k| k.key.expose() == key) {
            p.push(var, format!("entry {n} ({name}): duplicate key"));
            continue;
        }
        keys.push(ApiKey {
            name: name.to_string(),
            key: Secret::new(key.to_string()),
            admin,
        });
    }
    keys
}

/// `LINKR_ADMIN_TOKEN` or `LINKR_ADMIN_TOKEN_FILE` (not both): at least 16 visible ASCII
/// characters, never echoed.
fn admin_token(
    value: Option<String>,
    file: Option<PathBuf>,
    p: &mut Problems,
) -> Option<Secret<String>> {
    const VAR: &str = "LINKR_ADMIN_TOKEN";
    let (token, var) = match (value, file) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            p.push(
                VAR,
                "set LINKR_ADMIN_TOKEN or LINKR_ADMIN_TOKEN_FILE, not both",
            );
            return None;
        }
        (Some(v), None) => (v, VAR),
        (None, Some(path)) => match read_secret_file(&path) {
            Ok(v) => (v, "LINKR_ADMIN_TOKEN_FILE"),
            Err(e) => {
                p.push("LINKR_ADMIN_TOKEN_FILE", e);
                return None;
            }
        },
    };
    let token = token.trim();
    if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
        p.push(
            var,
            "the admin token must be at least 16 visible ASCII characters",
        );
        return None;
    }
    Some(Secret::new(token.to_string()))
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `VAR` or `VAR_FILE` (not both), checked as a URL of one of `schemes` (`what` names it).
fn secret_with_file(
    var: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    schemes: &[&str],
    what: &str,
    p: &mut Problems,
) -> Option<Secret<String>> {
    let value = match (value, file) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            p.push(var, format!("set {var} or {var}_FILE, not both"));
            return None;
        }
        (Some(v), None) => v,
        (None, Some(path)) => match read_secret_file(&path) {
            Ok(v) => v.trim().to_string(),
            Err(e) => {
                p.push(&format!("{var}_FILE"), e);
                return None;
            }
        },
    };
    let value = value.trim().to_string();
    match url::Url::parse(&value) {
        Ok(u) if schemes.contains(&u.scheme()) => {}
        // The value is a secret: never echo it.
        Ok(u) => p.push(
            var,
            format!(
                "{what} expects a {} URL, got scheme {:?}",
                schemes[0],
                u.scheme()
            ),
        ),
        Err(e) => p.push(var, format!("not a valid URL ({e})")),
    }
    Some(Secret::new(value))
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humanize(*d))
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humanize(*d)),
        None => s.serialize_str("off"),
    }
}

fn ser_quota<S: Serializer>(q: &Quota, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("RateLimit", 2)?;
    st.serialize_field("per_second", &q.per_second)?;
    st.serialize_field("burst", &q.burst)?;
    st.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(args: &[&str]) -> RawConfig {
        let mut all = vec!["linkr"];
        all.extend_from_slice(args);
        RawConfig::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn durations_accept_humane_forms() {
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "10 parsecs", "-1s", "1.2.3s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = raw(&[]).validate().expect("defaults validate");
        assert_eq!(c.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.shutdown_timeout, Duration::from_secs(25));
        assert!(c.rate_limit.is_disabled());
    }

    #[test]
    fn all_problems_are_reported_together() {
        let problems = raw(&[
            "--addr",
            "nope",
            "--rate-limit=-3",
            "--log-format",
            "xml",
            "--shutdown-timeout",
            "soon",
            "--api-keys",
            "alice",
        ])
        .validate()
        .unwrap_err();
        let text = problems.join("\n");
        for var in [
            "LINKR_ADDR",
            "LINKR_RATE_LIMIT",
            "LINKR_LOG_FORMAT",
            "LINKR_SHUTDOWN_TIMEOUT",
            "LINKR_API_KEYS",
        ] {
            assert!(text.contains(var), "{var} missing from:\n{text}");
        }
    }

    #[test]
    fn a_log_filter_word_that_is_no_level_or_target_is_a_problem() {
        for bad in ["deubg", "verbose", "warning", "linkr=debug,deubg"] {
            let problems = raw(&["--log", bad, "--addr", "nope"])
                .validate()
                .unwrap_err();
            let text = problems.join("\n");
            assert!(text.contains("LINKR_LOG"), "{bad}: {text}");
            assert!(text.contains("LINKR_ADDR"), "reported together: {text}");
        }
        for good in ["debug", "linkr=debug,tower_http=info,warn"] {
            let c = raw(&["--log", good]).validate().unwrap();
            assert_eq!(c.log_filter, good);
        }
    }

    #[test]
    fn api_keys_parse_with_admin_flag() {
        let c = raw(&["--api-keys", "alice:alice-key-1,root:root-key-1:admin"])
            .validate()
            .unwrap();
        assert_eq!(c.api_keys.len(), 2);
        assert!(!c.api_keys[0].admin);
        assert!(c.api_keys[1].admin);
        assert_eq!(c.api_keys[1].key.expose(), "root-key-1");
    }

    #[test]
    fn secrets_never_print() {
        let c = raw(&["--api-keys", "alice:super-secret-key"])
            .validate()
            .unwrap();
        assert!(!format!("{c:?}").contains("super-secret-key"));
        assert!(!c.to_redacted_json().contains("super-secret-key"));
        assert!(c.to_redacted_json().contains(Secret::<()>::REDACTED));
    }

    #[test]
    fn scale_out_backends_are_validated_without_echoing_the_secret() {
        let c = raw(&[
            "--database-url",
            "postgres://u:hunter2@db/linkr",
            "--redis-url",
            "redis://cache:6379",
        ])
        .validate()
        .unwrap();
        assert_eq!(
            c.database_url.as_ref().unwrap().expose(),
            "postgres://u:hunter2@db/linkr"
        );
        assert!(!c.to_redacted_json().contains("hunter2"));
        assert!(!c.to_redacted_json().contains("cache:6379"));

        let problems = raw(&[
            "--database-url",
            "mysql://u:hunter2@db/linkr",
            "--redis-url",
            "http://cache:6379",
        ])
        .validate()
        .unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("LINKR_DATABASE_URL"));
        assert!(text.contains("LINKR_REDIS_URL"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn redis_needs_the_database() {
        let problems = raw(&["--redis-url", "redis://cache:6379"])
            .validate()
            .unwrap_err();
        assert!(problems.join("\n").contains("needs LINKR_DATABASE_URL"));
    }

    #[cfg(feature = "otel")]
    #[test]
    fn trace_sample_ratio_is_validated() {
        assert_eq!(raw(&[]).validate().unwrap().trace_sample_ratio, 1.0);
        let c = raw(&["--trace-sample-ratio", "0.25"]).validate().unwrap();
        assert_eq!(c.trace_sample_ratio, 0.25);
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            let flag = format!("--trace-sample-ratio={bad}");
            let problems = raw(&[&flag, "--addr", "nope"]).validate().unwrap_err();
            let text = problems.join("\n");
            assert!(text.contains("LINKR_TRACE_SAMPLE_RATIO"), "{bad}: {text}");
            assert!(text.contains("LINKR_ADDR"), "{text}");
        }
    }

    #[test]
    fn problems_name_settings_given_as_flags_word_by_word() {
        let given = vec![("LINKR_API_KEYS".to_string(), "--api-keys".to_string())];
        assert_eq!(
            name_as_given(
                "LINKR_API_KEYS: set LINKR_API_KEYS or LINKR_API_KEYS_FILE, not both",
                &given
            ),
            "--api-keys: set --api-keys or LINKR_API_KEYS_FILE, not both"
        );
        assert_eq!(name_as_given("LINKR_ADDR: bad", &given), "LINKR_ADDR: bad");
    }

    #[test]
    fn admin_addr_must_differ() {
        let problems = raw(&["--addr", "127.0.0.1:7000", "--admin-addr", "127.0.0.1:7000"])
            .validate()
            .unwrap_err();
        assert!(problems[0].contains("must differ"));
    }
}
