//! The service's lifecycle: start-up, serving, and the ordered graceful shutdown.
//!
//! [`run`] takes already-bound listeners and any shutdown future, so tests bind port 0 and
//! stop the service with their own signal.

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use futures_util::future::Either;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::auth::ApiKeys;
use crate::client_ip::TrustedProxies;
use crate::clock::Clock;
use crate::config::{Config, humanize};
use crate::metrics::Metrics;
use crate::ratelimit::{KeyedLimiter, LimiterClock};
use crate::routes::{Api, Health, api, startup_router};
use crate::server::{App, BodyLimit, ServeOptions, Server, ServerMetrics};
use crate::store::{RemoteConfig, Store, StoreConfig, StoreError};

pub use crate::routes::api_router;

/// The two listeners, bound by the caller (main binds the configured addresses, tests port 0).
pub struct Listeners {
    pub main: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `config.addr` and `config.admin_addr`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let main = TcpListener::bind(config.addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr))
        })?;
        let admin = TcpListener::bind(config.admin_addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.admin_addr),
            )
        })?;
        Ok(Self { main, admin })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the store: {0}")]
    StoreOpen(StoreError),
    #[error("closing the store failed: {0}")]
    StoreClose(StoreError),
    #[error("the store loader failed: {0}")]
    Startup(String),
    #[error("graceful shutdown did not finish within {}", humanize(*.0))]
    ShutdownTimeout(Duration),
}

/// Shared state of the API handlers: one `Arc`, so extracting it costs one reference count.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub store: Store,
    pub clock: Clock,
    pub keys: ApiKeys,
    /// Per API key, on `/v1/*`; `None` when rate limiting is off.
    pub key_limiter: Option<KeyedLimiter<usize>>,
    /// Per client IP, on redirects; `None` when rate limiting is off.
    pub ip_limiter: Option<KeyedLimiter<IpAddr>>,
    /// Whose forwarding header names the client (see [`crate::client_ip`]).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Base of `short_url`, no trailing slash.
    pub public_url: String,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    /// State for `config` with fresh metrics and health (what benchmarks and tests use).
    pub fn new(config: &Config, store: Store, clock: Clock) -> Self {
        Self::with_parts(
            config,
            store,
            clock,
            Metrics::new(),
            Arc::new(Health::default()),
            config.public_url_or(config.addr),
        )
    }

    pub fn with_parts(
        config: &Config,
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        public_url: String,
    ) -> Self {
        let enabled = !config.rate_limit.is_disabled();
        if config.api_keys.is_empty() {
            tracing::warn!("no API keys configured: every /v1 request will be refused with 401");
        }
        Self(Arc::new(AppInner {
            store,
            clock,
            keys: ApiKeys::new(&config.api_keys),
            key_limiter: enabled.then(|| KeyedLimiter::new(config.rate_limit)),
            ip_limiter: enabled.then(|| {
                KeyedLimiter::new(config.rate_limit).with_max_keys(config.rate_limit_clients)
            }),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            public_url,
            health,
            metrics,
            access_log: config.access_log,
        }))
    }

    /// This state with its rate limiters reading `clock` (tests pass `LimiterClock::mock()`).
    /// Call it before the state is shared.
    pub fn with_limiter_clock(mut self, clock: LimiterClock) -> Self {
        let inner = Arc::get_mut(&mut self.0).expect("with_limiter_clock on a shared AppState");
        inner.key_limiter =
            (inner.key_limiter.take()).map(|l| KeyedLimiter::with_clock(l.quota(), clock.clone()));
        inner.ip_limiter = (inner.ip_limiter.take()).map(|l| l.reclocked(clock.clone()));
        self
    }
}

/// Serves the starting router until the real app is set, then the real app.
struct Switch<A> {
    starting: Router,
    ready: OnceLock<A>,
}

impl<A> Switch<A> {
    fn new(starting: Router) -> Arc<Self> {
        Arc::new(Self {
            starting,
            ready: OnceLock::new(),
        })
    }

    fn set(&self, app: A) {
        let _ = self.ready.set(app);
    }
}

impl<A: App> App for Switch<A> {
    type Future = Either<A::Future, <Router as App>::Future>;

    fn serve(&self, req: Request<Incoming>, body: BodyLimit) -> Self::Future {
        match self.ready.get() {
            Some(app) => Either::Left(app.serve(req, body)),
            None => Either::Right(self.starting.serve(req, body)),
        }
    }
}

/// Runs linkr until `shutdown` resolves, then shuts down in order within
/// `config.shutdown_timeout`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    run_with_clock(config, listeners, shutdown, Clock::system()).await
}

/// [`run`] with a given wall clock (tests use a manual one to expire links).
pub async fn run_with_clock(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Clock,
) -> Result<(), AppError> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });

    let main_addr = listeners.main.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let public_url = config.public_url_or(main_addr);
    let health = Arc::new(Health::default());
    let metrics = Metrics::new();
    let log_level = Arc::new(crate::telemetry::log_level(&config.log_filter));

    let main_app = Switch::<Api>::new(startup_router(
        health.clone(),
        metrics.clone(),
        config.access_log,
    ));
    let admin_token = config.admin_token.as_ref();
    let admin_app = Switch::<Router>::new(admin::protect(
        admin::router(AdminState {
            metrics: metrics.clone(),
            log_level: log_level.clone(),
            store: None,
        }),
        admin_token,
    ));
    let options = ServeOptions {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        body_timeout: config.body_timeout,
        request_timeout: config.request_timeout,
        max_connections: config.max_connections,
        max_in_flight: config.max_in_flight,
        exempt_paths: PROBES,
        // The peer address: the per-IP limit and the access log's client_ip.
        connect_info: !config.rate_limit.is_disabled() || config.access_log,
    };
    if let Some(max) = config.max_connections {
        warn_if_above_the_open_file_limit(max);
    }
    let mut listener_metrics = ServerMetrics::register(metrics.registry(), &["main", "admin"])
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "listener metrics not registered");
            Vec::new()
        })
        .into_iter();
    let main_server = Server::spawn_with_metrics(
        listeners.main,
        main_app.clone(),
        options,
        listener_metrics.next(),
    )?;
    // CPU profiles hold a request for their whole capture: no request timeout, no shedding.
    let admin_server = Server::spawn_with_metrics(
        listeners.admin,
        admin_app.clone(),
        ServeOptions {
            request_timeout: None,
            max_in_flight: None,
            connect_info: false,
            ..options
        },
        listener_metrics.next(),
    )?;
    tracing::info!(%main_addr, %admin_addr, data_dir = %config.data_dir.display(), "listening; loading the store");

    let store_config = StoreConfig {
        data_dir: config.data_dir.clone(),
        click_flush_interval: config.click_flush_interval,
        purge_interval: config.purge_interval,
    };
    let mut loading = match &config.database_url {
        // Scale-out: links in Postgres (Redis as shared cache); the index fills on misses.
        Some(database_url) => tokio::spawn(Store::open_remote(
            store_config,
            RemoteConfig {
                database_url: database_url.expose().clone(),
                redis_url: config.redis_url.as_ref().map(|u| u.expose().clone()),
            },
            clock.clone(),
        )),
        None => tokio::task::spawn_blocking({
            let clock = clock.clone();
            move || Store::open(store_config, clock)
        }),
    };
    let opened = tokio::select! {
        opened = &mut loading => opened,
        () = stop.cancelled() => {
            tracing::info!("stop signal during start-up");
            health.mark_shutting_down();
            let limit = Some(drain_limit(config.shutdown_timeout));
            main_server.shutdown_within(limit).await;
            admin_server.shutdown_within(limit).await;
            // The loader cannot be interrupted: let it finish (within the deadline), then close.
            return match tokio::time::timeout(config.shutdown_timeout, loading).await {
                Ok(Ok(Ok(store))) => store.close().await.map_err(AppError::StoreClose),
                Ok(Ok(Err(e))) => Err(AppError::StoreOpen(e)),
                Ok(Err(join)) => Err(AppError::Startup(join.to_string())),
                Err(_) => Err(AppError::ShutdownTimeout(config.shutdown_timeout)),
            };
        }
    };
    let opened = match opened {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(AppError::StoreOpen(e)),
        Err(join) => Err(AppError::Startup(join.to_string())),
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            main_server.shutdown().await;
            admin_server.shutdown().await;
            return Err(e);
        }
    };

    let background = CancellationToken::new();
    let maintenance = store.spawn_maintenance(background.clone());
    let state = AppState::with_parts(
        &config,
        store.clone(),
        clock,
        metrics.clone(),
        health.clone(),
        public_url,
    );
    let housekeeping = spawn_limiter_housekeeping(state.clone(), background.clone());
    main_app.set(api(state));
    admin_app.set(admin::protect(
        admin::router(AdminState {
            metrics,
            log_level,
            store: Some(store.clone()),
        }),
        admin_token,
    ));
    health.mark_started();
    tracing::info!(links = store.len(), "ready");

    stop.cancelled().await;
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    health.mark_shutting_down();
    tracing::info!(
        delay = %humanize(config.shutdown_delay),
        timeout = %humanize(config.shutdown_timeout),
        "shutting down: readiness is 503"
    );
    let sequence = async {
        tokio::time::sleep(config.shutdown_delay).await;
        tracing::info!("closing the listener; draining in-flight requests");
        let drain_until = deadline - shutdown_reserve(config.shutdown_timeout);
        let limit = drain_until.saturating_duration_since(tokio::time::Instant::now());
        let cut = main_server.shutdown_within(Some(limit)).await;
        if cut > 0 {
            tracing::warn!(
                connections = cut,
                "drain deadline reached; cut the connections still open"
            );
        }
        tracing::info!("drained; stopping background tasks");
        background.cancel();
        if let Err(e) = maintenance.await {
            tracing::error!(error = %e, "store maintenance task failed");
        }
        let _ = housekeeping.await;
        match store.flush_clicks().await {
            Ok(n) => tracing::info!(clicks = n, "clicks flushed"),
            Err(e) => tracing::error!(error = %e, "final click flush failed"),
        }
        store.close().await
    };
    let result = tokio::time::timeout_at(deadline, sequence).await;
    // The admin listener last (metrics stay scrapeable while draining), cut at the deadline.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    admin_server.shutdown_within(Some(left)).await;
    match result {
        Ok(Ok(())) => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        Ok(Err(e)) => Err(AppError::StoreClose(e)),
        Err(_) => Err(AppError::ShutdownTimeout(config.shutdown_timeout)),
    }
}

/// A connection cap above the process's open-file limit does not protect it: accept fails
/// (EMFILE) before the cap is reached, and the store cannot open files either.
fn warn_if_above_the_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let open_files = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    if open_files < max_connections.saturating_add(64) {
        tracing::warn!(
            max_connections,
            open_files,
            "the connection limit is above the open-file limit (ulimit -n): raise the limit or lower LINKR_MAX_CONNECTIONS"
        );
    }
}

/// Paths the main listener never sheds under load (`max_in_flight`): the probes.
pub const PROBES: &[&str] = &["/healthz", "/readyz", "/startupz"];

/// How long connections may drain within a `shutdown_timeout` before they are cut: all of it
/// but [`shutdown_reserve`].
pub fn drain_limit(shutdown_timeout: Duration) -> Duration {
    shutdown_timeout - shutdown_reserve(shutdown_timeout)
}

/// The end of a `shutdown_timeout` kept for stopping background tasks, the final click flush
/// and the store's close: a fifth of it, at most 5 s.
pub fn shutdown_reserve(shutdown_timeout: Duration) -> Duration {
    (shutdown_timeout / 5).min(Duration::from_secs(5))
}

fn spawn_limiter_housekeeping(
    state: AppState,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if state.key_limiter.is_none() && state.ip_limiter.is_none() {
            return;
        }
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {
                    if let Some(l) = &state.key_limiter {
                        l.retain_recent(l.now());
                    }
                    if let Some(l) = &state.ip_limiter {
                        l.retain_recent(l.now());
                    }
                }
            }
        }
    })
}
