//! The serve loop: hyper-util's auto (HTTP/1.1 + h2c) connection builder on already-bound
//! listeners, with timeouts that keep slow or silent clients from holding connections, and a
//! graceful shutdown that stops accepting and then drains every connection.
//!
//! Timeouts, enforced by a watchdog task per connection that ticks every quarter of the shorter
//! one and aborts the connection's task (checked by tests):
//! - `header_timeout`: an HTTP/1 connection must complete a request head within it whenever it
//!   waits for one — on a new connection and again after each response on a keep-alive
//!   connection — so it bounds both a slowloris head and keep-alive idleness (what hyper's
//!   `header_read_timeout` did; hyper re-arms that timer with a fresh boxed sleep for every
//!   request, which cost each redirect an allocation, a timer registration and a clock read).
//!   The same bound applies to a connection that sends no byte at all (hyper-util's protocol
//!   sniffing would otherwise wait for the first bytes forever).
//! - `idle_timeout`: a connection with no request in flight and no byte read or written for this
//!   long is closed: stalled request bodies, clients that stop reading responses.
//!
//! The watchdog runs beside the connection rather than in a `select!` with it, so requests do
//! not poll its timer: a busy connection costs it nothing per request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// What a listener serves: called once per request, from any connection.
pub trait App: Send + Sync + 'static {
    type Future: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static;

    fn serve(&self, req: Request<Incoming>) -> Self::Future;
}

impl App for Router {
    type Future = <Router as tower::Service<Request<Incoming>>>::Future;

    fn serve(&self, req: Request<Incoming>) -> Self::Future {
        tower::Service::call(&mut self.clone(), req)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// Insert `ConnectInfo<SocketAddr>` into every request (costs an allocation per request,
    /// so only on when something reads it: the per-IP rate limit).
    pub connect_info: bool,
}

/// A running listener. Dropping it leaves it running; call [`Server::shutdown`].
pub struct Server {
    local_addr: SocketAddr,
    stop: CancellationToken,
    accept: JoinHandle<GracefulShutdown>,
}

impl Server {
    pub fn spawn<A: App>(
        listener: TcpListener,
        app: Arc<A>,
        opts: ServeOptions,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, app, opts, stop.clone()));
        Ok(Self {
            local_addr,
            stop,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting (the listener is closed), asks every connection to finish its in-flight
    /// requests and close, and waits until all have.
    pub async fn shutdown(self) {
        self.stop.cancel();
        match self.accept.await {
            Ok(graceful) => graceful.shutdown().await,
            Err(e) => tracing::error!(error = %e, "accept loop failed"),
        }
    }
}

async fn accept_loop<A: App>(
    listener: TcpListener,
    app: Arc<A>,
    opts: ServeOptions,
    stop: CancellationToken,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head timeout is the watchdog's (see the module documentation).
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());

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
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let activity = Arc::new(Activity::default());
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
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                // The watchdog ends with its connection (else at its next tick).
                if let Some(watchdog) = activity.watchdog.get() {
                    watchdog.abort();
                }
            }
        });
        let watchdog = tokio::spawn(watchdog(task.abort_handle(), activity.clone(), opts));
        let _ = activity.watchdog.set(watchdog.abort_handle());
    }
    drop(listener);
    graceful
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Watches one connection, closing it (by aborting its task) when it breaks the time limits;
/// returns when the connection has ended.
async fn watchdog(conn: AbortHandle, activity: Arc<Activity>, opts: ServeOptions) {
    let accepted = Instant::now();
    let window = opts
        .idle_timeout
        .map_or(opts.header_timeout, |idle| idle.min(opts.header_timeout));
    let tick = (window / 4).max(Duration::from_millis(5));
    let mut ticks = tokio::time::interval_at(accepted + tick, tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = 0;
    let mut quiet_since = accepted;
    // HTTP/1 head timeout: since when the connection has been waiting for a request head (no
    // request started, none in flight, nothing written).
    let (mut seen_requests, mut seen_written, mut waiting_since) = (0, 0, accepted);
    loop {
        let now = ticks.tick().await;
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
        if progress != seen || in_flight {
            seen = progress;
            quiet_since = now;
        } else if let Some(idle) = opts.idle_timeout
            && now.duration_since(quiet_since) >= idle
        {
            tracing::debug!("connection idle; closing");
            return conn.abort();
        }
        if !activity.h2.load(Ordering::Relaxed) {
            let requests = activity.requests.load(Ordering::Relaxed);
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
#[derive(Default)]
struct Activity {
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
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        bump(&self.activity.requests);
        if req.version() == Version::HTTP_2 {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightFuture {
            inner: self.app.serve(req),
            _guard: InFlightGuard(self.activity.clone()),
        }
    }
}

struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    pub struct InFlightFuture<F> {
        #[pin]
        inner: F,
        _guard: InFlightGuard,
    }
}

impl<F: Future> Future for InFlightFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
