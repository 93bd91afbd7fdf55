//! The lean per-request path: each goose user owns one HTTP/1.1 connection (the lean client's
//! own, [`super::h1`], or hyper's with `LOADGEN_H1=hyper`; `TCP_NODELAY`, driven by the user's
//! own task) and sends slots of the shared schedule. Which user sends the next slot is decided
//! by a [`Dispatch`]: the users that are free form a stack, the one on top (the most recently
//! freed: its connection and buffers are warm) waits on the [precise timer](super::timer) for
//! the next slot's intended time and, when it leaves, hands the slot after it to the next free
//! user. So a slot waits only when every connection is busy (no head-of-line blocking behind a
//! slow response on one connection), and the connections in use are as many as the requests in
//! flight. `LOADGEN_DISPATCH=stride` selects wrk2's fixed slots instead (user `j` of `C` sends
//! slots `j`, `j + C`, ...; see [`DispatchKind`]).
//! If a slot's time has passed, it is sent at once; latency still counts from the intended time.
//! Requests are written from bytes prepared before the step: no URL parsing, no pool lookup, no
//! allocation per request (but a create's body). Latencies go into the engine thread's recorder
//! (one per thread, merged at the end).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use goose::goose::{GooseUser, TransactionResult};
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;

use super::h1::{Failure, RawConn};
use super::timer::Timer;
use crate::error::LoadgenError;
use crate::host_steal::CpuSteal;
use crate::scenarios::{Op, Plan};
use crate::schedule::Schedule;
use crate::service_cpu::ServiceCpu;
use crate::stats::{Outcome, Registry, Sample};

/// Latency the connections absorb before every one is busy: `rate × allowance` connections
/// are opened (at least [`MIN_CONNECTIONS`]). A slower server then holds every connection and
/// later slots wait for one (counted from their intended time); the result says
/// `pool_exhausted`. The [`Dispatch`] keeps the connections in use as few as the requests in
/// flight, so the pool's size matters only when the server falls behind: then every open
/// connection fills, and each one in use costs both sides cache misses per request (measured
/// on the 2-core VM against a fixed-302 server: 6.5 µs of generator CPU per request over 32
/// connections, 10.6 µs over 2,500). In four runs on the busy VM (other builds on both cores,
/// every run short of CPU) at 0.7-0.8x wrk's closed-loop rate, a 10 ms pool (273-395
/// connections) cost the server 8.7-9.9 µs per request against 6.7-8.1 µs with 2 ms (55-79),
/// and achieved 88-100% of the rate (two runs under 99%) against 99.9-100%.
pub const LATENCY_ALLOWANCE: Duration = Duration::from_millis(2);
pub const MIN_CONNECTIONS: u64 = 32;
pub const MAX_CONNECTIONS: u64 = 4_000;
/// A slot may still leave this long after the step's end (a timer wake-up a little late for the
/// last slot); later, it is missed.
const END_GRACE: Duration = Duration::from_millis(5);
/// How often the runtime probe wakes.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// The latency the pool absorbs: [`LATENCY_ALLOWANCE`]; `LOADGEN_ALLOWANCE_MS` overrides it.
pub fn allowance() -> Duration {
    std::env::var("LOADGEN_ALLOWANCE_MS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map_or(LATENCY_ALLOWANCE, |ms| Duration::from_secs_f64(ms / 1e3))
}

/// Connections needed for `rate` so that the pool runs dry only when requests are in flight for
/// longer than the [`allowance`] on average: `rate × allowance`, at least [`MIN_CONNECTIONS`].
pub fn needed_connections(rate: f64) -> u64 {
    ((rate * allowance().as_secs_f64()).ceil() as u64).max(MIN_CONNECTIONS)
}

/// Connections (goose users) for `rate`: [`needed_connections`], at most [`MAX_CONNECTIONS`].
/// `LOADGEN_CONNECTIONS=N` fixes the number (`scripts/gen-ceiling.sh` measures the cost per
/// request with wrk's 32). A pool smaller than needed that runs dry is the generator's limit,
/// not the service's (see `driver::saturation_reason`).
pub fn connections(rate: f64) -> u64 {
    if let Some(n) = std::env::var("LOADGEN_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return n.clamp(1, MAX_CONNECTIONS);
    }
    needed_connections(rate).min(MAX_CONNECTIONS)
}

/// Which user sends the next slot. `Stack` (the default) is the [`Dispatch`]: the most recently
/// freed user sends next. `Stride` is wrk2's: user `j` of `C` sends slots `j`, `j + C`, ..., each
/// on its own connection, and waits for it (`LOADGEN_DISPATCH=stride`). With hyper's client
/// connection the stack fell behind its own schedule against linkr from about 70k req/s, and the
/// stride was the default; with the lean client's own connection, in four full runs of
/// `scripts/gen-ceiling.sh`, the stack's knee search against linkr ended bound by the service in
/// three (118-128k req/s, 0.72-0.79x wrk), the stride's in one (its steps from 133k on had the
/// generator at 93-97% CPU, every one of its 2 ms of connections in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchKind {
    Stride,
    Stack,
}

/// 0: from `LOADGEN_DISPATCH`; 1: stride; 2: stack (set by [`set_dispatch`], for tests).
static DISPATCH_OVERRIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Overrides `LOADGEN_DISPATCH` for the steps run after it in this process (`None`: the
/// variable decides again).
pub fn set_dispatch(kind: Option<DispatchKind>) {
    let v = match kind {
        None => 0,
        Some(DispatchKind::Stride) => 1,
        Some(DispatchKind::Stack) => 2,
    };
    DISPATCH_OVERRIDE.store(v, Ordering::Relaxed);
}

/// Whether the step uses wrk2's fixed slots (see [`DispatchKind`]).
pub fn stride_dispatch() -> bool {
    match DISPATCH_OVERRIDE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => std::env::var("LOADGEN_DISPATCH").is_ok_and(|v| v == "stride"),
    }
}

/// Where the connections go, resolved once per step.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    host: HeaderValue,
}

impl Endpoint {
    /// `http://host[:port]` (https is not spoken by the lean client).
    pub fn resolve(target: &str) -> Result<Self, LoadgenError> {
        let url = reqwest013::Url::parse(target)
            .map_err(|e| LoadgenError::Usage(format!("invalid target URL {target:?}: {e}")))?;
        if url.scheme() != "http" {
            return Err(LoadgenError::Usage(format!(
                "the lean client speaks plain HTTP only ({target}): use --client reqwest for https"
            )));
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| LoadgenError::Usage(format!("cannot resolve {host}:{port}: {e}")))?
            .next()
            .ok_or_else(|| LoadgenError::Usage(format!("{host}:{port} resolves to nothing")))?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&host_header)
                .map_err(|_| LoadgenError::Usage(format!("invalid host in {target:?}")))?,
        })
    }
}

/// Whether the lean client uses hyper's client connection instead of its own
/// ([`super::h1`]): `LOADGEN_H1=hyper`, to compare the two.
pub fn hyper_connections() -> bool {
    std::env::var("LOADGEN_H1").is_ok_and(|v| v == "hyper")
}

/// The requests of a step, from parts built once: whole requests as bytes for the lean
/// connection ([`super::h1`]), and URIs and headers for hyper's.
pub struct Requests {
    host: HeaderValue,
    redirect: Vec<Uri>,
    stats: Vec<Uri>,
    get: Uri,
    create: Uri,
    auth: Option<HeaderValue>,
    json: HeaderValue,
    raw_redirect: Vec<Bytes>,
    raw_stats: Vec<Bytes>,
    raw_get: Bytes,
    /// A create's request line and headers, up to its `content-length` value.
    raw_create_head: Bytes,
}

impl Requests {
    pub fn new(plan: &Plan, endpoint: &Endpoint) -> Result<Self, LoadgenError> {
        let uri = |p: &str| {
            Uri::try_from(p).map_err(|_| LoadgenError::Usage(format!("invalid request path {p:?}")))
        };
        let host = endpoint.host.to_str().unwrap_or_default();
        let auth = plan
            .auth()
            .and_then(|a| a.to_str().ok())
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        let raw_get = |path: &str, auth: &str| {
            Bytes::from(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}\r\n"))
        };
        Ok(Self {
            host: endpoint.host.clone(),
            redirect: plan
                .redirect_paths()
                .iter()
                .map(|p| uri(p))
                .collect::<Result<_, _>>()?,
            stats: plan
                .stats_paths()
                .iter()
                .map(|p| uri(p))
                .collect::<Result<_, _>>()?,
            get: uri(plan.get_path())?,
            create: Uri::from_static("/v1/links"),
            auth: plan.auth().cloned(),
            json: HeaderValue::from_static("application/json"),
            raw_redirect: plan
                .redirect_paths()
                .iter()
                .map(|p| raw_get(p, ""))
                .collect(),
            raw_stats: plan
                .stats_paths()
                .iter()
                .map(|p| raw_get(p, &auth))
                .collect(),
            raw_get: raw_get(plan.get_path(), ""),
            raw_create_head: Bytes::from(format!(
                "POST /v1/links HTTP/1.1\r\nhost: {host}\r\n{auth}content-type: application/json\r\ncontent-length: "
            )),
        })
    }

    /// A create's JSON body: a URL unique to the slot.
    fn create_body(slot: u64, rng: &mut SmallRng) -> String {
        format!(
            r#"{{"url":"https://example.com/loadgen/{slot}/{:08x}"}}"#,
            rng.random::<u32>()
        )
    }

    /// The request for `op` as bytes: prebuilt, or (a create) written into `scratch`.
    fn raw<'a>(
        &'a self,
        op: Op,
        slot: u64,
        rng: &mut SmallRng,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        match op {
            Op::Redirect(k) => &self.raw_redirect[k],
            Op::Stats(k) => &self.raw_stats[k],
            Op::Get => &self.raw_get,
            Op::Create => {
                use std::io::Write;
                let body = Self::create_body(slot, rng);
                scratch.clear();
                scratch.extend_from_slice(&self.raw_create_head);
                let _ = write!(scratch, "{}\r\n\r\n{body}", body.len());
                scratch
            }
        }
    }

    fn build(&self, op: Op, slot: u64, rng: &mut SmallRng) -> Request<Full<Bytes>> {
        let (method, uri, body) = match op {
            Op::Redirect(k) => (Method::GET, &self.redirect[k], Bytes::new()),
            Op::Stats(k) => (Method::GET, &self.stats[k], Bytes::new()),
            Op::Get => (Method::GET, &self.get, Bytes::new()),
            Op::Create => (
                Method::POST,
                &self.create,
                Bytes::from(Self::create_body(slot, rng)),
            ),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        if matches!(op, Op::Stats(_) | Op::Create)
            && let Some(auth) = &self.auth
        {
            h.insert(AUTHORIZATION, auth.clone());
        }
        if op == Op::Create {
            h.insert(CONTENT_TYPE, self.json.clone());
        }
        req
    }
}

/// One HTTP/1.1 connection of a user: the lean client's own, or hyper's ([`hyper_connections`]).
pub enum Conn {
    Raw(RawConn),
    Hyper(Box<HyperConn>),
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, Outcome> {
        if hyper_connections() {
            HyperConn::open(addr)
                .await
                .map(|c| Conn::Hyper(Box::new(c)))
        } else {
            RawConn::open(addr)
                .await
                .map(Conn::Raw)
                .map_err(|_| Outcome::Connect)
        }
    }

    /// Whether the connection is still open (a server that closed it is seen).
    async fn alive(&mut self) -> bool {
        match self {
            Conn::Raw(c) => c.alive(),
            Conn::Hyper(c) => c.alive().await,
        }
    }

    /// When the last response's last byte arrived in the socket, by the kernel's clock (None for
    /// hyper's connection, which reads for itself).
    fn arrived(&self) -> Option<Instant> {
        match self {
            Conn::Raw(c) => c.arrived(),
            Conn::Hyper(_) => None,
        }
    }

    /// Whether the connection may carry the next request (the server did not announce a close).
    fn reusable(&self) -> bool {
        match self {
            Conn::Raw(c) => c.reusable(),
            Conn::Hyper(_) => true,
        }
    }

    /// Sends the request for `op` and reads the whole response; the status code.
    async fn exchange(
        &mut self,
        requests: &Requests,
        op: Op,
        slot: u64,
        rng: &mut SmallRng,
        scratch: &mut Vec<u8>,
    ) -> Result<u16, Failure> {
        match self {
            Conn::Raw(c) => {
                c.exchange(requests.raw(op, slot, rng, scratch), false)
                    .await
            }
            Conn::Hyper(c) => c.exchange(requests.build(op, slot, rng)).await,
        }
    }
}

/// hyper's HTTP/1.1 client connection, driven by the task that uses it.
pub struct HyperConn {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
}

impl HyperConn {
    async fn open(addr: SocketAddr) -> Result<Self, Outcome> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| Outcome::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Outcome::Connect)?;
        Ok(Self { sender, conn })
    }

    /// Whether the connection is still open (polls it once: a server that closed it is seen).
    async fn alive(&mut self) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut self.conn).poll(cx).is_pending())).await
    }

    /// Sends `req` and reads the whole response; the status code.
    async fn exchange(&mut self, req: Request<Full<Bytes>>) -> Result<u16, Failure> {
        let Self { sender, conn } = self;
        let sent = AtomicBool::new(false);
        let exchange = async {
            std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
            sent.store(true, Ordering::Relaxed);
            let resp = sender.send_request(req).await?;
            let code = resp.status().as_u16();
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<u16, hyper::Error>(code)
        };
        let mut exchange = pin!(exchange);
        let failure = || {
            if sent.load(Ordering::Relaxed) {
                Failure::Failed(Outcome::Other)
            } else {
                Failure::NotSent
            }
        };
        // The connection is polled in this task, beside the exchange: no task of its own, no
        // wake-up between tasks per response.
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(|_| failure()));
            }
            let ended = Pin::new(&mut *conn).poll(cx).is_ready();
            match exchange.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(|_| failure())),
                // The connection ended without an answer.
                Poll::Pending if ended => Poll::Ready(Err(failure())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Connections kept between steps, by address: a knee search opens them once (and does not
/// leave thousands in TIME_WAIT between steps). They belong to the engine's runtime.
fn pool() -> &'static Mutex<HashMap<SocketAddr, Vec<Conn>>> {
    static POOL: OnceLock<Mutex<HashMap<SocketAddr, Vec<Conn>>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

fn take_pooled(addr: SocketAddr) -> Option<Conn> {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&addr)
        .and_then(Vec::pop)
}

fn put_back(addr: SocketAddr, conn: Conn) {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    let conns = pool.entry(addr).or_default();
    if (conns.len() as u64) < MAX_CONNECTIONS {
        conns.push(conn);
    }
}

/// Who sends the next slot: the free users on a stack (the most recently freed on top), one of
/// them *armed* (it holds the next slot and waits for its time). When the armed user leaves, it
/// arms the one on top of the stack with the slot after; if the stack is empty (every other
/// connection busy), the next user to come free is armed at once. Slots already due when the
/// armed user leaves (the generator fell behind) go to the users below it on the stack
/// together, each woken at once, and the first slot not due yet arms the next: handing them
/// one per leaving user caught up after a stall at one slot per pass of the runtime's queue.
/// One lock per request on a thread of its own: never contended.
pub struct Dispatch {
    state: Mutex<DispatchState>,
}

struct DispatchState {
    /// The next slot to hand out, counted within this process's segment (its index in the
    /// whole schedule is `segment.0 + next * segment.1`).
    next: u64,
    /// A user holds the next slot.
    armed: bool,
    /// Free users, the most recently freed on top.
    idle: Vec<u32>,
    /// Per user: the slot it was handed while on the stack, and whether it is armed with it
    /// (false: a slot already due, sent at once without handing on).
    handed: Box<[Option<(u64, bool)>]>,
    /// Per user on the stack: its task, woken by the timer at its slot's time (or at the end).
    wakers: Box<[Option<Waker>]>,
    over: bool,
}

impl DispatchState {
    /// The armed user leaves: hands every slot due by `now` to the next user on the stack,
    /// then arms the next one with the first slot not due yet (or past the schedule's end:
    /// `due(k)` is None). An empty stack disarms: the next user to come free takes the slot.
    fn hand_out(&mut self, now: Instant, due: impl Fn(u64) -> Option<Instant>) -> Vec<Handed> {
        let mut handed = Vec::new();
        while let Some(u) = self.idle.pop() {
            let k = self.next;
            self.next += 1;
            let waker = self.wakers[u as usize].take();
            match due(k) {
                Some(at) if at <= now => {
                    self.handed[u as usize] = Some((k, false));
                    handed.push(Handed {
                        waker,
                        at: None,
                        armed: false,
                    });
                }
                at => {
                    self.handed[u as usize] = Some((k, true));
                    handed.push(Handed {
                        waker,
                        at,
                        armed: true,
                    });
                    return handed;
                }
            }
        }
        self.armed = false;
        handed
    }
}

/// A user handed a slot by [`DispatchState::hand_out`]: its task, when to wake it (None: at
/// once), and whether it is armed with the next slot.
struct Handed {
    waker: Option<Waker>,
    at: Option<Instant>,
    armed: bool,
}

/// How a user came to hold a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Handed the slot by the user that sent the one before: a free connection was waiting for
    /// it, so any lateness is the generator's. `armed`: this user hands on the next slot when
    /// it leaves (false: the slot was already due when handed, and the armed user is another).
    Handed { slot: u64, armed: bool },
    /// No user was free when the one before left (or first at the start): this user took it as
    /// soon as its own response was in (the slot waited for a connection if that was after its
    /// intended time).
    Freed(u64),
    /// The schedule is over.
    Over,
}

impl Dispatch {
    pub fn new(users: u64) -> Self {
        Self {
            state: Mutex::new(DispatchState {
                next: 0,
                armed: false,
                idle: Vec::with_capacity(users as usize),
                handed: vec![None; users as usize].into(),
                wakers: vec![None; users as usize].into(),
                over: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// User `j` is free: it takes the next slot at once if no one holds it, else waits on the
    /// stack until it is handed one (woken at that slot's time) or the schedule ends.
    pub fn next_turn(&self, j: u32) -> NextTurn<'_> {
        NextTurn {
            dispatch: self,
            j: j as usize,
            waiting: false,
        }
    }

    /// The armed user leaves with its slot: the users on top of the stack are handed the next
    /// slots ([`DispatchState::hand_out`]), and `timer` wakes the armed one at its slot's time
    /// (`due(k)`: the intended time of slot `k`, None past the schedule's end: woken at once).
    /// Returns how many slots already due were handed out (their connections are busy from
    /// now: they count as in flight).
    pub fn hand_on(&self, timer: &Timer, due: impl Fn(u64) -> Option<Instant>) -> u64 {
        let handed = self.lock().hand_out(Instant::now(), due);
        let mut already_due = 0;
        for Handed { waker, at, armed } in handed {
            already_due += u64::from(!armed);
            match (waker, at) {
                (Some(w), Some(at)) => timer.wake_at(at, w),
                (Some(w), None) => w.wake(),
                (None, _) => {}
            }
        }
        already_due
    }

    /// No slot is left to send (or the step was stopped): every waiting user is released.
    pub fn end(&self) {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            s.over = true;
            let idle = std::mem::take(&mut s.idle);
            idle.into_iter()
                .filter_map(|u| s.wakers[u as usize].take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// See [`Dispatch::next_turn`].
pub struct NextTurn<'a> {
    dispatch: &'a Dispatch,
    j: usize,
    waiting: bool,
}

impl Future for NextTurn<'_> {
    type Output = Turn;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Turn> {
        let (dispatch, j) = (self.dispatch, self.j);
        let mut s = dispatch.lock();
        if let Some((slot, armed)) = s.handed[j].take() {
            return Poll::Ready(Turn::Handed { slot, armed });
        }
        if s.over {
            return Poll::Ready(Turn::Over);
        }
        if !self.waiting {
            if !s.armed {
                s.armed = true;
                let k = s.next;
                s.next += 1;
                return Poll::Ready(Turn::Freed(k));
            }
            s.idle.push(j as u32);
            self.waiting = true;
        }
        match &mut s.wakers[j] {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// What the users of one lean step share.
pub struct LeanStep {
    pub endpoint: Endpoint,
    pub schedule: Schedule,
    pub plan: Plan,
    pub requests: Requests,
    pub registry: Arc<Registry>,
    pub users: u64,
    pub duration: Duration,
    pub goose_metrics: bool,
    pub timer: Arc<Timer>,
    /// The schedule's start, set once every user is connected.
    pub start: Arc<OnceLock<Instant>>,
    pub started: tokio::sync::watch::Sender<Option<Instant>>,
    pub all_ready: tokio::sync::Notify,
    pub next_user: AtomicU64,
    pub ready: AtomicU64,
    pub ended: AtomicBool,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Slots that found every connection busy at their intended time.
    pub behind: AtomicU64,
    /// Responses without the kernel's arrival time (hyper's connection; a kernel that gave
    /// none, a failed exchange).
    pub unstamped: AtomicU64,
    /// How long each response waited in its socket before the generator had read it (µs): from
    /// the kernel's receive timestamp of its last byte to the end of the read.
    pub read_delay: Mutex<Histogram<u64>>,
    pub dispatch: Dispatch,
    /// wrk2's fixed slots per connection instead of the [`Dispatch`] ([`stride_dispatch`]).
    pub stride: bool,
    pub sent: AtomicU64,
    pub probe: Mutex<Histogram<u64>>,
    pub cpu_start_us: AtomicU64,
    pub cpu_end_us: AtomicU64,
    /// The service's process, and its CPU time at the schedule's start and end.
    pub service: Option<ServiceCpu>,
    pub service_start: OnceLock<Duration>,
    pub service_end: OnceLock<Duration>,
    /// The host's steal on each CPU at the schedule's start and end ([`CpuSteal`]).
    pub steal_start: OnceLock<CpuSteal>,
    pub steal_end: OnceLock<CpuSteal>,
    /// This process's segment of the schedule: it sends the slots `k` with
    /// `k % segment.1 == segment.0` (`(0, 1)`: all of them).
    pub segment: (u64, u64),
    /// When the schedule starts (an agreed wall-clock time turned into this process's clock);
    /// `None`: as soon as every user is connected.
    pub start_at: Option<Instant>,
}

impl LeanStep {
    /// Reads the service's CPU time into `at` (the schedule's start or end).
    fn note_service_cpu(&self, at: &OnceLock<Duration>) {
        if let Some(used) = self.service.as_ref().and_then(ServiceCpu::used) {
            let _ = at.set(used);
        }
    }

    /// Reads the host's steal into `at` (the schedule's start or end).
    fn note_steal(at: &OnceLock<CpuSteal>) {
        if let Some(steal) = CpuSteal::read() {
            let _ = at.set(steal);
        }
    }

    /// The largest share of one CPU that the host took over the schedule (None when a reading
    /// failed).
    pub fn host_steal(&self) -> Option<f64> {
        let (start, end) = (self.steal_start.get()?, self.steal_end.get()?);
        start.largest_share(end, self.duration)
    }

    /// The service's CPU over the schedule, as a fraction of its CPUs (None without its process,
    /// or when a reading failed).
    pub fn service_share(&self) -> Option<f64> {
        let (start, end) = (*self.service_start.get()?, *self.service_end.get()?);
        Some(self.service.as_ref()?.share(start, end, self.duration))
    }

    fn mark_ready(&self) {
        if self.ready.fetch_add(1, Ordering::AcqRel) + 1 == self.users {
            self.all_ready.notify_one();
        }
    }
}

/// One turn of a user: the slot it sends, and how it came by it.
struct Turned {
    /// The slot's number within this process's segment.
    k: u64,
    /// Every connection was busy when the slot fell due: it waited for this one.
    waited_for_connection: bool,
    /// This user hands the next slots on once it sends.
    armed: bool,
    /// Handed a slot already due: counted in flight by the user that handed it.
    counted: bool,
}

impl Turned {
    /// The turn the [`Dispatch`] gave (None: the schedule is over).
    fn of(turn: Turn) -> Option<Self> {
        let (k, waited_for_connection, armed) = match turn {
            Turn::Over => return None,
            Turn::Handed { slot, armed } => (slot, false, armed),
            Turn::Freed(k) => (k, true, true),
        };
        Some(Turned {
            k,
            waited_for_connection,
            armed,
            counted: !waited_for_connection && !armed,
        })
    }
}

impl LeanStep {
    /// User `j`'s `own`th turn under wrk2's dispatch: user `j` of `C` sends slots `j`, `j + C`,
    /// ... on its connection.
    fn stride_turn(&self, j: u64, own: &mut u64) -> Turned {
        *own += 1;
        Turned {
            k: j + (*own - 1) * self.users,
            waited_for_connection: true,
            armed: false,
            counted: false,
        }
    }

    /// When the schedule's slot `slot` is due (None: past its end).
    fn due(&self, t0: Instant, slot: u64) -> Option<Instant> {
        (slot < self.schedule.len()).then(|| t0 + self.schedule.offset(slot))
    }

    /// Counts a request leaving at `sent`: an armed user first hands the next slots on.
    #[inline]
    fn count_sent(&self, turn: &Turned, t0: Instant, sent: Instant) {
        if turn.armed {
            let (index, count) = self.segment;
            let already_due = self
                .dispatch
                .hand_on(&self.timer, |k| self.due(t0, index + k * count));
            // Their connections are busy from now, though their users have not run yet.
            self.in_flight.fetch_add(already_due, Ordering::Relaxed);
        }
        self.timer.request_sent(sent);
        let in_flight = if turn.counted {
            self.in_flight.load(Ordering::Relaxed)
        } else {
            self.in_flight.fetch_add(1, Ordering::Relaxed) + 1
        };
        self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request done (read at `done`; its last byte arrived in the socket at `arrived`,
    /// by the kernel's clock, if known).
    #[inline]
    fn count_done(&self, done: Instant, arrived: Option<Instant>) {
        match arrived {
            Some(at) => self
                .read_delay
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(micros(done.saturating_duration_since(at))),
            None => {
                self.unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.timer.request_done();
    }
}

/// A pooled connection that is still open, or a new one (None: it could not connect; the first
/// request tries again).
async fn first_connection(addr: SocketAddr) -> Option<Conn> {
    while let Some(mut c) = take_pooled(addr) {
        if c.alive().await {
            return Some(c);
        }
    }
    Conn::open(addr).await.ok()
}

/// Sends `op`'s request for `slot` on `conn` (opened first if there is none) and reads its
/// response: the status code. A connection the server closed since its last response is not
/// this request's failure: it is replaced once.
async fn exchange(
    step: &LeanStep,
    conn: &mut Option<Conn>,
    (op, slot): (Op, u64),
    rng: &mut SmallRng,
    scratch: &mut Vec<u8>,
    mut give_up: Pin<&mut tokio::time::Sleep>,
) -> Result<u16, Outcome> {
    let mut retried = false;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(Conn::open(step.endpoint.addr).await?),
        };
        let r = tokio::select! {
            biased;
            r = c.exchange(&step.requests, op, slot, rng, scratch) => r,
            _ = give_up.as_mut() => Err(Failure::Failed(Outcome::Timeout)),
        };
        match r {
            Ok(code) => return Ok(code),
            Err(Failure::NotSent) if !retried => {
                *conn = None;
                retried = true;
            }
            Err(Failure::NotSent) => return Err(Outcome::Connect),
            Err(Failure::Failed(o)) => return Err(o),
        }
    }
}

/// Gives goose the request's latency from its intended time, for its own report.
async fn tell_goose(user: &mut GooseUser, op: Op, outcome: Outcome, latency: Duration) {
    let (code, ok) = match outcome {
        Outcome::Status { code, ok } => (Some(code), ok),
        _ => (None, false),
    };
    let _ = user
        .record_custom_request_duration(op.method(), op.name(), latency, ok, code, None)
        .await;
}

/// One goose user: connect, wait for the start, send its slots, record them.
pub async fn drive_user(step: Arc<LeanStep>, user: &mut GooseUser) -> TransactionResult {
    let j = step.next_user.fetch_add(1, Ordering::AcqRel);
    if j >= step.users {
        return Ok(());
    }
    let mut conn = first_connection(step.endpoint.addr).await;
    let mut started = step.started.subscribe();
    step.mark_ready();
    let t0 = match started.wait_for(Option::is_some).await {
        Ok(t0) => t0.unwrap_or_else(Instant::now),
        Err(_) => return Ok(()),
    };
    let t_end = t0 + step.duration;
    let give_up = tokio::time::sleep_until((t_end + crate::scenarios::REQUEST_TIMEOUT).into());
    let mut give_up = pin!(give_up);
    let mut rng = SmallRng::seed_from_u64(j ^ 0x9E37_79B9_7F4A_7C15);
    // When this user's connection was last free: its previous response read, and the end of
    // that response (when it arrived in the socket, or `free_at` without a timestamp).
    let (mut free_at, mut answered_at) = (t0, t0);
    let mut own = 0;
    // A create's request is written here (the others are prebuilt).
    let mut scratch = Vec::new();
    loop {
        let turn = if step.stride {
            step.stride_turn(j, &mut own)
        } else {
            match Turned::of(step.dispatch.next_turn(j as u32).await) {
                Some(turn) => turn,
                None => break,
            }
        };
        let slot = step.segment.0 + turn.k * step.segment.1;
        let intended = step.due(t0, slot);
        if let Some(intended) = intended {
            step.timer.sleep_until(intended).await;
        }
        let sent = Instant::now();
        let Some(intended) =
            intended.filter(|_| !step.timer.is_aborted() && sent <= t_end + END_GRACE)
        else {
            if turn.counted {
                step.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            step.dispatch.end();
            break;
        };
        step.count_sent(&turn, t0, sent);
        if turn.waited_for_connection && free_at > intended {
            step.behind.fetch_add(1, Ordering::Relaxed);
        }
        let available = available(intended, turn.waited_for_connection, answered_at);
        let op = step.plan.pick(&mut rng, slot);
        let result = exchange(
            &step,
            &mut conn,
            (op, slot),
            &mut rng,
            &mut scratch,
            give_up.as_mut(),
        )
        .await;
        let done = Instant::now();
        let arrived = match (&result, conn.as_ref().and_then(Conn::arrived)) {
            (Ok(_), Some(at)) => Some(at.max(sent)),
            _ => None,
        };
        step.count_done(done, arrived);
        // The response's latency ends when its last byte arrived (the kernel's timestamp), not
        // when the generator read it: the wait in the socket is the generator's, kept apart.
        let end = response_end(done, arrived);
        let outcome = match result {
            Ok(code) => Outcome::Status {
                code,
                ok: crate::scenarios::expected(op, code),
            },
            Err(e) => e,
        };
        // Reconnect for the next slot after a failure, or when the server closes this one.
        if result.is_err() || conn.as_ref().is_some_and(|c| !c.reusable()) {
            conn = None;
        }
        step.registry.record(&Sample {
            corrected_us: micros(end - intended),
            uncorrected_us: micros(end - sent),
            send_lag_us: micros(sent.saturating_duration_since(intended)),
            generator_lag_us: micros(sent.saturating_duration_since(available)),
            outcome,
        });
        if step.goose_metrics {
            tell_goose(user, op, outcome, end - intended).await;
        }
        (free_at, answered_at) = (done, end);
        if matches!(outcome, Outcome::Timeout) {
            break;
        }
    }
    if let Some(mut c) = conn
        && !step.timer.is_aborted()
        && c.alive().await
    {
        put_back(step.endpoint.addr, c);
    }
    Ok(())
}

/// When slot's request could have left, for the generator's own lag (`sent - available`): its
/// intended time, or, when it waited for a connection (every one was busy), the moment this
/// connection's previous response had arrived in its socket if that was later. Lateness before
/// that is the pool's (the service held every connection); after it, the generator's: reading
/// a response late holds its connection, and that must not pass for the service's.
fn available(intended: Instant, waited_for_connection: bool, answered_at: Instant) -> Instant {
    if waited_for_connection {
        intended.max(answered_at)
    } else {
        intended
    }
}

/// When a response ended, for its latency: when its last byte arrived in the socket (the
/// kernel's receive timestamp, no earlier than the send), or when it was read (`done`) without
/// a timestamp.
fn response_end(done: Instant, arrived: Option<Instant>) -> Instant {
    arrived.map_or(done, |at| at.min(done))
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Starts the schedule once every user is connected (or gives up after `ready_timeout`), records
/// the engine thread's CPU time over the schedule, and ends it.
pub async fn supervise(step: Arc<LeanStep>, ready_timeout: Duration, stop: fn() -> bool) -> bool {
    if step.ready.load(Ordering::Acquire) < step.users
        && tokio::time::timeout(ready_timeout, step.all_ready.notified())
            .await
            .is_err()
        && step.ready.load(Ordering::Acquire) < step.users
    {
        step.timer.abort();
        step.started.send_replace(Some(Instant::now()));
        return false;
    }
    let soon = Instant::now() + Duration::from_millis(1);
    let t0 = step.start_at.map_or(soon, |at| at.max(soon));
    let _ = step.start.set(t0);
    step.started.send_replace(Some(t0));
    step.timer.sleep_until(t0).await;
    // The engine thread's CPU time, less its idle polling (rounds in which nothing was sent or
    // received).
    let cpu = || super::thread_cpu_us().saturating_sub(step.timer.spun().as_micros() as u64);
    step.cpu_start_us.store(cpu(), Ordering::Relaxed);
    step.note_service_cpu(&step.service_start);
    LeanStep::note_steal(&step.steal_start);
    let t_end = t0 + step.duration;
    loop {
        let now = Instant::now();
        if now >= t_end {
            break;
        }
        step.timer
            .sleep_until(t_end.min(now + Duration::from_millis(50)))
            .await;
        if stop() {
            step.timer.abort();
            break;
        }
    }
    step.cpu_end_us.store(cpu(), Ordering::Relaxed);
    step.note_service_cpu(&step.service_end);
    LeanStep::note_steal(&step.steal_end);
    step.ended.store(true, Ordering::Release);
    true
}

/// Wakes every [`PROBE_EVERY`] during the schedule on the precise timer and records how late it
/// ran (µs): the delay a ready task waits for the engine thread.
pub async fn probe(step: Arc<LeanStep>) {
    let mut started = step.started.subscribe();
    let Ok(t0) = started
        .wait_for(Option::is_some)
        .await
        .map(|t| t.unwrap_or_else(Instant::now))
    else {
        return;
    };
    let mut next = t0;
    loop {
        next += PROBE_EVERY;
        step.timer.sleep_until(next).await;
        if step.ended.load(Ordering::Relaxed) || step.timer.is_aborted() {
            return;
        }
        let late = Instant::now().saturating_duration_since(next);
        step.probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(late.as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_already_due_are_handed_out_together_and_only_the_next_one_is_armed() {
        let d = Dispatch::new(4);
        let mut s = d.lock();
        s.idle = vec![0, 1, 2, 3];
        s.armed = true;
        let t0 = Instant::now();
        // Slots 0 and 1 are due, slot 2 in 1 ms, slot 3 later.
        let due = |k: u64| Some(t0 + Duration::from_millis(k.saturating_sub(1)));
        let handed = s.hand_out(t0, due);
        let at: Vec<(Option<Instant>, bool)> = handed.iter().map(|h| (h.at, h.armed)).collect();
        let in_1ms = Some(t0 + Duration::from_millis(1));
        assert_eq!(at, vec![(None, false), (None, false), (in_1ms, true)]);
        // The top of the stack first, one slot each; only the last holds the armed slot, and
        // one user is left on the stack.
        assert_eq!(s.handed[3], Some((0, false)));
        assert_eq!(s.handed[2], Some((1, false)));
        assert_eq!(s.handed[1], Some((2, true)));
        assert_eq!(s.handed[0], None);
        assert_eq!(s.idle, vec![0]);
        assert!(s.armed);
        // Past the schedule's end: armed, woken at once; an empty stack disarms.
        let handed = s.hand_out(t0, |_| None);
        assert_eq!(handed.len(), 1);
        assert!(handed[0].at.is_none() && handed[0].armed);
        assert_eq!(s.handed[0], Some((3, true)));
        assert!(s.idle.is_empty());
        assert!(s.hand_out(t0, due).is_empty());
        assert!(!s.armed);
    }

    #[test]
    fn a_response_ends_when_it_arrived_not_when_it_was_read() {
        let done = Instant::now();
        let arrived = done - Duration::from_micros(700);
        assert_eq!(response_end(done, Some(arrived)), arrived);
        assert_eq!(response_end(done, None), done);
        // A timestamp is never taken past the read.
        assert_eq!(
            response_end(done, Some(done + Duration::from_micros(5))),
            done
        );
    }

    #[test]
    fn a_slot_that_waited_for_a_connection_is_late_by_the_generator_from_the_answer_on() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Its connection's answer arrived 2 ms after the slot's time: the wait until then was
        // the pool's, and what came after (the read, the send) the generator's.
        assert_eq!(available(t, true, t + ms(2)), t + ms(2));
        // The answer was in before the slot's time: all of the lateness is the generator's.
        assert_eq!(available(t + ms(3), true, t + ms(2)), t + ms(3));
        // Handed a free connection: late from the intended time.
        assert_eq!(available(t, false, t + ms(2)), t);
    }

    #[test]
    fn a_slot_not_due_yet_arms_only_the_user_on_top() {
        let d = Dispatch::new(3);
        let mut s = d.lock();
        s.idle = vec![0, 1, 2];
        s.armed = true;
        let t0 = Instant::now();
        let handed = s.hand_out(t0, |k| Some(t0 + Duration::from_millis(k + 1)));
        assert_eq!(handed.len(), 1);
        assert_eq!(s.handed[2], Some((0, true)));
        assert_eq!(s.idle, vec![0, 1]);
    }
}
