//! The serve loop: hyper-util's auto (HTTP/1.1 + h2c) connection builder on already-bound
//! listeners, with timeouts that keep slow or silent clients from holding connections, limits
//! that shed excess load fast instead of queueing it, and a graceful shutdown that stops
//! accepting, drains every connection and cuts the ones still open at its deadline.
//!
//! Connection time limits, enforced by a watchdog task per connection that ticks every quarter
//! of the shorter one and aborts the connection's task (checked by tests):
//! - `header_timeout`: an HTTP/1 connection must complete a request head within it whenever it
//!   waits for one — on a new connection and again after each response on a keep-alive
//!   connection — so it bounds both a slowloris head and keep-alive idleness (what hyper's
//!   `header_read_timeout` did; hyper re-arms that timer with a fresh boxed sleep for every
//!   request, which cost each redirect an allocation, a timer registration and a clock read).
//!   The same bound applies to a connection that sends no byte at all (hyper-util's protocol
//!   sniffing would otherwise wait for the first bytes forever).
//! - `idle_timeout`: an HTTP/1 connection with no request in flight and no byte read or written
//!   for this long is closed (clients that stop reading responses). An HTTP/2 connection is
//!   idle when no request is in flight and none started for this long, whatever else moves:
//!   PINGs and SETTINGS alone do not keep it open.
//!
//! Request time limits, answered `408` with a JSON error body (and `connection: close` on
//! HTTP/1), armed only for a request that does not complete on its first poll:
//! - `body_timeout`: a handler waiting for the next piece of the request body gets none for
//!   this long (a client that sends a head and part of its body, then nothing);
//! - `request_timeout`: the response has not started this long after the request's first poll.
//!
//! Load limits:
//! - `max_connections`: a connection accepted beyond it is answered a static HTTP/1 `503` (when
//!   the socket takes it at once) and closed, without reading from it;
//! - `max_in_flight`: while this many requests are in progress on the listener, a new one is
//!   answered `503` with `Retry-After: 1` before any routing. A request counts as in progress
//!   once its first poll returns pending (it waits for the store, its body, ...); one that
//!   completes on its first poll (a redirect served from memory) is never counted, so the hot
//!   path pays one relaxed load. Paths in `exempt_paths` (the probes) are never shed.
//!
//! The watchdog runs beside the connection rather than in a `select!` with it, so requests do
//! not poll its timer: a busy connection costs it nothing per request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{CONNECTION, RETRY_AFTER};
use axum::http::{HeaderValue, Request, Response, StatusCode, Version};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_util::sync::CancellationToken;

use crate::error::error_response;

/// What a listener serves: called once per request, from any connection.
pub trait App: Send + Sync + 'static {
    type Future: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static;

    /// Serves `req`. Whatever reads its body reads it through `body` ([`BodyLimit::wrap`]),
    /// which holds it to the body timeout.
    fn serve(&self, req: Request<Incoming>, body: BodyLimit) -> Self::Future;
}

impl App for Router {
    type Future = <Router as tower::Service<Request<RequestBody>>>::Future;

    fn serve(&self, req: Request<Incoming>, body: BodyLimit) -> Self::Future {
        tower::Service::call(&mut self.clone(), req.map(|b| body.wrap(b)))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// Longest wait for the next piece of a request body; `None`: unbounded.
    pub body_timeout: Option<Duration>,
    /// Longest time from a request's first poll to its response; `None`: unbounded.
    pub request_timeout: Option<Duration>,
    /// Most connections open at once; `None`: unbounded.
    pub max_connections: Option<usize>,
    /// Most requests in progress at once; `None`: unbounded.
    pub max_in_flight: Option<usize>,
    /// Paths never shed by `max_in_flight` (the probes).
    pub exempt_paths: &'static [&'static str],
    /// Insert `ConnectInfo<SocketAddr>` into every request (costs an allocation per request,
    /// so only on when something reads it: the per-IP rate limit).
    pub connect_info: bool,
}

impl Default for ServeOptions {
    /// A 10 s head timeout and no other limit.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: None,
            body_timeout: None,
            request_timeout: None,
            max_connections: None,
            max_in_flight: None,
            exempt_paths: &[],
            connect_info: false,
        }
    }
}

/// State shared by a listener's accept loop, connections and requests.
struct Shared {
    opts: ServeOptions,
    /// Connections open (accepted and not yet ended).
    connections: AtomicUsize,
    /// Requests in progress (see the module documentation).
    in_flight: AtomicUsize,
    /// Cancelled at the shutdown deadline: every watchdog aborts its connection.
    cut: CancellationToken,
    metrics: Option<ServerMetrics>,
}

impl Shared {
    fn record(&self, counter: impl FnOnce(&ServerMetrics) -> &IntCounter, n: u64) {
        if let Some(m) = &self.metrics {
            counter(m).inc_by(n);
        }
    }
}

/// Prometheus series of one listener's limits (label `listener`).
#[derive(Clone)]
pub struct ServerMetrics {
    open: IntGauge,
    refused: IntCounter,
    shed: IntCounter,
    timed_out: IntCounter,
    cut: IntCounter,
}

impl ServerMetrics {
    /// Registers the families in `registry`; returns the series of each of `listeners`.
    pub fn register(
        registry: &Registry,
        listeners: &[&str],
    ) -> prometheus::Result<Vec<ServerMetrics>> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let family = IntGaugeVec::new(Opts::new(name, help), &["listener"])?;
            registry.register(Box::new(family.clone()))?;
            Ok(family)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let family = IntCounterVec::new(Opts::new(name, help), &["listener"])?;
            registry.register(Box::new(family.clone()))?;
            Ok(family)
        };
        let open = gauge("linkr_connections_open", "Connections open.")?;
        let refused = counter(
            "linkr_connections_refused_total",
            "Connections closed when accepted: the connection limit was reached.",
        )?;
        let shed = counter(
            "linkr_requests_shed_total",
            "Requests answered 503 before routing: the in-flight limit was reached.",
        )?;
        let timed_out = counter(
            "linkr_requests_timed_out_total",
            "Requests answered 408: body or request timeout.",
        )?;
        let cut = counter(
            "linkr_connections_cut_total",
            "Connections still open at the shutdown deadline, cut.",
        )?;
        Ok(listeners
            .iter()
            .map(|l| ServerMetrics {
                open: open.with_label_values(&[l]),
                refused: refused.with_label_values(&[l]),
                shed: shed.with_label_values(&[l]),
                timed_out: timed_out.with_label_values(&[l]),
                cut: cut.with_label_values(&[l]),
            })
            .collect())
    }
}

/// A running listener. Dropping it leaves it running; call [`Server::shutdown`].
pub struct Server {
    local_addr: SocketAddr,
    stop: CancellationToken,
    shared: Arc<Shared>,
    accept: JoinHandle<GracefulShutdown>,
}

impl Server {
    pub fn spawn<A: App>(
        listener: TcpListener,
        app: Arc<A>,
        opts: ServeOptions,
    ) -> io::Result<Self> {
        Self::start(listener, app, opts, None)
    }

    /// [`Server::spawn`], recording open connections and what its limits refuse in `metrics`.
    pub fn spawn_with_metrics<A: App>(
        listener: TcpListener,
        app: Arc<A>,
        opts: ServeOptions,
        metrics: Option<ServerMetrics>,
    ) -> io::Result<Self> {
        Self::start(listener, app, opts, metrics)
    }

    fn start<A: App>(
        listener: TcpListener,
        app: Arc<A>,
        opts: ServeOptions,
        metrics: Option<ServerMetrics>,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            opts,
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            cut: CancellationToken::new(),
            metrics,
        });
        let accept = tokio::spawn(accept_loop(listener, app, shared.clone(), stop.clone()));
        Ok(Self {
            local_addr,
            stop,
            shared,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting (the listener is closed), asks every connection to finish its in-flight
    /// requests and close, and waits until all have.
    pub async fn shutdown(self) {
        self.shutdown_within(None).await;
    }

    /// [`Server::shutdown`], but connections still open after `limit` are cut (their tasks
    /// aborted, in-flight requests dropped). Returns how many were cut.
    pub async fn shutdown_within(self, limit: Option<Duration>) -> usize {
        self.stop.cancel();
        let graceful = match self.accept.await {
            Ok(graceful) => graceful,
            Err(e) => {
                tracing::error!(error = %e, "accept loop failed");
                return 0;
            }
        };
        let drained = graceful.shutdown();
        let Some(limit) = limit else {
            drained.await;
            return 0;
        };
        tokio::pin!(drained);
        tokio::select! {
            () = &mut drained => 0,
            () = tokio::time::sleep(limit) => {
                let cut = self.shared.connections.load(Ordering::Relaxed);
                self.shared.cut.cancel();
                self.shared.record(|m| &m.cut, cut as u64);
                drained.await;
                cut
            }
        }
    }
}

async fn accept_loop<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> GracefulShutdown {
    let opts = shared.opts;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head timeout is the watchdog's (see the module documentation).
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let mut at_cap = false;

    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if let Some(max) = opts.max_connections {
            let open = shared.connections.load(Ordering::Relaxed);
            if open >= max {
                if !at_cap {
                    tracing::warn!(
                        max_connections = max,
                        "connection limit reached; refusing new connections"
                    );
                    at_cap = true;
                }
                refuse(stream);
                shared.record(|m| &m.refused, 1);
                continue;
            }
            if at_cap && open < max.saturating_sub(max / 10).max(1) {
                tracing::info!(open, "below the connection limit again");
                at_cap = false;
            }
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let open = ConnectionGuard::new(shared.clone());
        let activity = Arc::new(Activity::new(shared.clone()));
        let service = ConnService {
            app: app.clone(),
            peer: opts.connect_info.then_some(peer),
            activity: activity.clone(),
        };
        let io = TokioIo::new(ActivityIo {
            io: stream,
            activity: activity.clone(),
        });
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        let task = tokio::spawn({
            let activity = activity.clone();
            async move {
                let _open = open;
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                // The watchdog ends with its connection (else at its next tick).
                if let Some(watchdog) = activity.watchdog.get() {
                    watchdog.abort();
                }
            }
        });
        let watchdog = tokio::spawn(watchdog(
            task.abort_handle(),
            activity.clone(),
            opts,
            shared.cut.clone(),
        ));
        let _ = activity.watchdog.set(watchdog.abort_handle());
    }
    drop(listener);
    graceful
}

/// What a connection beyond `max_connections` is sent before it is closed.
static REFUSED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"overloaded","message":"too many open connections; retry later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Answers a connection over the limit without waiting for it: a 503 if the socket takes it at
/// once (a fresh socket's send buffer is empty), then closed.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(&REFUSED);
    drop(stream);
}

/// Counts one open connection while it lives (dropped when its task ends or is aborted).
struct ConnectionGuard(Arc<Shared>);

impl ConnectionGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &shared.metrics {
            m.open.inc();
        }
        Self(shared)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.0.metrics {
            m.open.dec();
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Watches one connection, closing it (by aborting its task) when it breaks the time limits or
/// the shutdown deadline passes; returns when the connection has ended.
async fn watchdog(
    conn: AbortHandle,
    activity: Arc<Activity>,
    opts: ServeOptions,
    cut: CancellationToken,
) {
    let accepted = Instant::now();
    let window = opts
        .idle_timeout
        .map_or(opts.header_timeout, |idle| idle.min(opts.header_timeout));
    let tick = (window / 4).max(Duration::from_millis(5));
    let mut ticks = tokio::time::interval_at(accepted + tick, tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let cut = cut.cancelled_owned();
    tokio::pin!(cut);
    let mut seen = 0;
    let mut quiet_since = accepted;
    // HTTP/1 head timeout: since when the connection has been waiting for a request head (no
    // request started, none in flight, nothing written).
    let (mut seen_requests, mut seen_written, mut waiting_since) = (0, 0, accepted);
    loop {
        let now = tokio::select! {
            biased;
            () = &mut cut => {
                tracing::debug!("shutdown deadline; cutting the connection");
                return conn.abort();
            }
            now = ticks.tick() => now,
        };
        if conn.is_finished() {
            return;
        }
        let progress = activity.progress.load(Ordering::Relaxed);
        let in_flight = activity.in_flight.load(Ordering::Relaxed) > 0;
        if progress == 0 {
            if now.duration_since(accepted) >= opts.header_timeout {
                tracing::debug!("no request within the header timeout; closing");
                return conn.abort();
            }
            continue;
        }
        let h2 = activity.h2.load(Ordering::Relaxed);
        let requests = activity.requests.load(Ordering::Relaxed);
        // HTTP/2 frames that are not requests (PING, SETTINGS, WINDOW_UPDATE) are not activity.
        let moved = if h2 { requests } else { progress };
        if moved != seen || in_flight {
            seen = moved;
            quiet_since = now;
        } else if let Some(idle) = opts.idle_timeout
            && now.duration_since(quiet_since) >= idle
        {
            tracing::debug!("connection idle; closing");
            return conn.abort();
        }
        if !h2 {
            let written = activity.written.load(Ordering::Relaxed);
            if requests != seen_requests || written != seen_written || in_flight {
                (seen_requests, seen_written, waiting_since) = (requests, written, now);
            } else if now.duration_since(waiting_since) >= opts.header_timeout {
                tracing::debug!("no request head within the header timeout; closing");
                return conn.abort();
            }
        }
    }
}

/// Per-connection progress (bytes moved), requests started and in flight, read by
/// [`watchdog`]. Written only by the connection's task.
struct Activity {
    /// The listener's state (requests reach it through their connection's `Arc`: no shared
    /// reference count touched per request).
    shared: Arc<Shared>,
    /// Bumped on every read or write that moved bytes.
    progress: AtomicU64,
    /// Bumped on every write that moved bytes.
    written: AtomicU64,
    /// Requests whose head was read.
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// The connection speaks HTTP/2 (its first bytes were the HTTP/2 preface).
    h2: AtomicBool,
    /// The connection's watchdog task, stopped by the connection's task when it ends.
    watchdog: OnceLock<AbortHandle>,
}

/// A plain load and store: only the connection's task writes these counters.
fn bump(counter: &AtomicU64) {
    let v = counter.load(Ordering::Relaxed);
    counter.store(v.wrapping_add(1).max(1), Ordering::Relaxed);
}

impl Activity {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            progress: AtomicU64::new(0),
            written: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            h2: AtomicBool::new(false),
            watchdog: OnceLock::new(),
        }
    }

    fn touch(&self) {
        bump(&self.progress);
    }

    fn touch_written(&self) {
        bump(&self.progress);
        bump(&self.written);
    }
}

struct ActivityIo {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if self.activity.progress.load(Ordering::Relaxed) == 0
                && buf.filled()[before..].starts_with(b"PRI * HTTP/2.0")
            {
                self.activity.h2.store(true, Ordering::Relaxed);
            }
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch_written();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct ConnService<A> {
    app: Arc<A>,
    peer: Option<SocketAddr>,
    activity: Arc<Activity>,
}

impl<A: App> hyper::service::Service<Request<Incoming>> for ConnService<A> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = InFlightFuture<A::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        bump(&self.activity.requests);
        let h2 = req.version() == Version::HTTP_2;
        if h2 {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        let shared = &self.activity.shared;
        let opts = &shared.opts;
        if let Some(max) = opts.max_in_flight
            && shared.in_flight.load(Ordering::Relaxed) >= max
            && !opts.exempt_paths.contains(&req.uri().path())
        {
            shared.record(|m| &m.shed, 1);
            return InFlightFuture::shed();
        }
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let body_timed_out = opts
            .body_timeout
            .filter(|_| !req.body().is_end_stream())
            .map(|_| Arc::new(AtomicBool::new(false)));
        let body = BodyLimit {
            stall: opts.body_timeout.zip(body_timed_out.clone()),
        };
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightFuture {
            inner: Some(self.app.serve(req, body)),
            guard: Some(InFlightGuard {
                activity: self.activity.clone(),
                counted: false,
            }),
            limits: RequestLimits {
                request_timeout: opts.request_timeout,
                timer: None,
                body_timed_out,
                close: !h2,
            },
        }
    }
}

struct InFlightGuard {
    activity: Arc<Activity>,
    /// Counted in the listener's in-progress requests (its first poll was pending).
    counted: bool,
}

impl InFlightGuard {
    fn count(&mut self) {
        if !self.counted {
            self.counted = true;
            self.activity
                .shared
                .in_flight
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.counted {
            self.activity
                .shared
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request's time limits, armed on its first pending poll.
struct RequestLimits {
    request_timeout: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Set by the request's body when it stalled past the body timeout.
    body_timed_out: Option<Arc<AtomicBool>>,
    /// Ask the client to close the connection with a 408 (HTTP/1).
    close: bool,
}

impl RequestLimits {
    fn body_timed_out(&self) -> bool {
        (self.body_timed_out.as_ref()).is_some_and(|t| t.load(Ordering::Relaxed))
    }

    fn timed_out(&self, what: &str, guard: Option<&InFlightGuard>) -> Response<Body> {
        if let Some(guard) = guard {
            guard.activity.shared.record(|m| &m.timed_out, 1);
        }
        let mut response = error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!("the {what} was not received or answered in time"),
        );
        if self.close {
            (response.headers_mut()).insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn overloaded() -> Response<Body> {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests in progress; retry later",
    );
    (response.headers_mut()).insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pin_project_lite::pin_project! {
    /// A request's response future: the app's, with the request time limits around it, or a
    /// shed request's 503.
    pub struct InFlightFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<InFlightGuard>,
        limits: RequestLimits,
    }
}

impl<F> InFlightFuture<F> {
    fn shed() -> Self {
        Self {
            inner: None,
            guard: None,
            limits: RequestLimits {
                request_timeout: None,
                timer: None,
                body_timed_out: None,
                close: false,
            },
        }
    }
}

impl<F> Future for InFlightFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(overloaded()));
        };
        let limits = this.limits;
        match inner.poll(cx) {
            Poll::Ready(Ok(response)) if limits.body_timed_out() => {
                drop(response);
                Poll::Ready(Ok(limits.timed_out("request body", this.guard.as_ref())))
            }
            Poll::Ready(done) => Poll::Ready(done),
            Poll::Pending => {
                if let Some(guard) = this.guard {
                    guard.count();
                }
                if limits.body_timed_out() {
                    return Poll::Ready(Ok(limits.timed_out("request body", this.guard.as_ref())));
                }
                if let Some(limit) = limits.request_timeout {
                    let timer =
                        (limits.timer).get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(limits.timed_out("request", this.guard.as_ref())));
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// A stalled body's timer and what it tells the request's response future.
struct Stall {
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs from the start of the current wait.
    waiting: bool,
    timed_out: Arc<AtomicBool>,
}

/// A request body's time limit, applied by [`BodyLimit::wrap`].
pub struct BodyLimit {
    /// The body timeout and the flag that tells the request's response future it passed.
    stall: Option<(Duration, Arc<AtomicBool>)>,
}

impl BodyLimit {
    /// No limit (what an [`App`] called outside a [`Server`] may pass).
    pub fn none() -> Self {
        Self { stall: None }
    }

    /// `body` held to this limit.
    pub fn wrap(self, body: Incoming) -> RequestBody {
        RequestBody {
            inner: body,
            stall: self.stall.map(|(timeout, timed_out)| Stall {
                timeout,
                timer: None,
                waiting: false,
                timed_out,
            }),
        }
    }
}

/// The body timeout's error (a handler that reads the body sees it; the client gets a 408).
#[derive(Debug, thiserror::Error)]
#[error("no request body data within the body timeout")]
pub struct BodyTimeout;

pin_project_lite::pin_project! {
    /// A request body as the app gets it: hyper's, with the body timeout (see the module
    /// documentation).
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        stall: Option<Stall>,
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(stall) = this.stall {
                    stall.waiting = false;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(stall) = this.stall else {
                    return Poll::Pending;
                };
                let timeout = stall.timeout;
                let timer =
                    (stall.timer).get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !stall.waiting {
                    stall.waiting = true;
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    stall.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
