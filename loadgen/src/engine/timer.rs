//! A precise timer for one current-thread runtime: deadlines in a heap, one `timerfd` armed for
//! the earliest.
//!
//! tokio's timer wheel ticks every millisecond (and its runtime parks in `epoll_wait` with a
//! millisecond timeout), so a request sent on a tokio timer leaves up to 1 ms late: at 5k req/s
//! against a 60 µs server that was most of the measured latency (wrk2 has the same floor). Here
//! every sleeping connection registers its deadline; one driver task arms a `timerfd` (nanosecond
//! resolution, no timer slack) for the earliest, wakes the sleepers whose time has come, and
//! re-arms. An idle thread takes some 10–30 µs to wake up (more on a busy VM), so the `timerfd`
//! is armed a little ahead of the deadline and the driver spins the rest of the way (a busy wait
//! of at most the spin window; the polling rounds in which no request left and no response came
//! in are counted in [`Timer::spun`], so the CPU they burn can be told from work). The window
//! is a fraction of the mean gap between requests ([`spin_for_rate`]): at high
//! rates, where deadlines are microseconds apart and the thread is rarely idle, it shrinks to
//! almost nothing.

use std::collections::BinaryHeap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// Longest spin window at low rates.
pub const MAX_SPIN: Duration = Duration::from_micros(40);
/// The spin window as a fraction of the mean gap between requests at low rates: the spin's CPU
/// stays below this fraction of the thread.
pub const SPIN_SHARE: f64 = 0.15;
/// Below this mean gap (above ~33k req/s) the thread never sleeps between requests: a sleep and
/// wake-up cost more CPU (measured: ~7 µs of kernel time per request on the 2-core VM at 60k
/// req/s) than polling through the gap.
pub const NO_SLEEP_GAP: Duration = Duration::from_micros(30);
/// While a request sent less than this long ago is in flight, the thread polls for its response
/// instead of going to sleep: an idle CPU of a VM halts, and waking it up again takes tens of
/// µs, which a closed loop (always busy) does not pay. `LOADGEN_POLL_IN_FLIGHT_US` overrides it
/// (0: never).
pub const POLL_IN_FLIGHT: Duration = Duration::from_micros(300);

/// Above ~33k req/s ([`NO_SLEEP_GAP`]), a spinning thread lets the runtime poll for I/O at most
/// this often: each poll is an `epoll_wait` (with tokio's time driver around it), and polling
/// on every round made one per request, where a closed loop makes one per 30 (each finds a
/// batch of responses). Responses wait in their sockets up to this long longer; their latency
/// ends at the kernel's arrival timestamp, not at the read, and the wait is the result's
/// `read_delay_us`. `LOADGEN_IO_EVERY_US` overrides it (0: every round).
pub const IO_EVERY: Duration = Duration::from_micros(20);

/// How often a spinning thread polls for I/O at `rate` requests/s (see [`IO_EVERY`]).
pub fn io_every_for_rate(rate: f64) -> Duration {
    env_micros("LOADGEN_IO_EVERY_US").unwrap_or(if mean_gap(rate) <= NO_SLEEP_GAP {
        IO_EVERY
    } else {
        Duration::ZERO
    })
}

/// A duration in µs from the environment variable `name`, if set and a number.
fn env_micros(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
}

/// The mean gap between requests at `rate` requests/s (1 s at 0).
fn mean_gap(rate: f64) -> Duration {
    Duration::from_secs_f64(if rate > 0.0 { 1.0 / rate } else { 1.0 })
}

fn poll_in_flight() -> Duration {
    static P: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *P.get_or_init(|| env_micros("LOADGEN_POLL_IN_FLIGHT_US").unwrap_or(POLL_IN_FLIGHT))
}

/// The spin window for `rate` requests/s (`LOADGEN_TIMER_SPIN_US` overrides it).
pub fn spin_for_rate(rate: f64) -> Duration {
    if let Some(spin) = env_micros("LOADGEN_TIMER_SPIN_US") {
        return spin;
    }
    let gap = mean_gap(rate);
    if gap <= NO_SLEEP_GAP {
        NO_SLEEP_GAP
    } else {
        gap.mul_f64(SPIN_SHARE).min(MAX_SPIN)
    }
}

struct Entry {
    deadline: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Entry>,
    seq: u64,
    /// When the `timerfd` is set to fire (None: disarmed).
    armed: Option<Instant>,
    driver: Option<Waker>,
    /// A deadline earlier than the armed one was registered: the driver re-plans.
    kicked: bool,
}

/// The timer of one runtime. Create it inside the runtime (it registers a `timerfd` with the
/// runtime's reactor) and spawn [`Timer::drive`] on the same runtime.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    inner: Mutex<Inner>,
    aborted: AtomicBool,
    spin: Duration,
    spun_ns: AtomicU64,
    base: Instant,
    in_flight: AtomicU64,
    /// Requests sent plus responses in: a spin round in which this did not change found nothing
    /// to do, and counts as idle in [`Timer::spun`].
    events: AtomicU64,
    /// Last send, in ns since `base`.
    last_send_ns: AtomicU64,
    poll_in_flight: Duration,
    /// While spinning, the runtime polls for I/O at most this often (zero: every round).
    io_every: Duration,
}

impl Timer {
    /// The timer for a step at `rate` requests/s: [`spin_for_rate`], [`io_every_for_rate`].
    pub fn for_rate(rate: f64) -> std::io::Result<Arc<Self>> {
        Self::with(spin_for_rate(rate), io_every_for_rate(rate))
    }

    /// A timer that spins the last `spin` before a deadline.
    pub fn new(spin: Duration) -> std::io::Result<Arc<Self>> {
        Self::with(spin, Duration::ZERO)
    }

    fn with(spin: Duration, io_every: Duration) -> std::io::Result<Arc<Self>> {
        // SAFETY: timerfd_create returns a new descriptor we own, or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd is moved into the AsyncFd and stays open for as long as it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Arc::new(Self {
            fd,
            inner: Mutex::new(Inner::default()),
            aborted: AtomicBool::new(false),
            spin,
            spun_ns: AtomicU64::new(0),
            base: Instant::now(),
            in_flight: AtomicU64::new(0),
            events: AtomicU64::new(0),
            last_send_ns: AtomicU64::new(0),
            poll_in_flight: poll_in_flight(),
            io_every,
        }))
    }

    /// A future that completes at `deadline` (at once if it has passed or the timer was aborted).
    pub fn sleep_until(self: &Arc<Self>, deadline: Instant) -> Sleep {
        Sleep {
            timer: self.clone(),
            deadline,
            registered: false,
        }
    }

    /// Wakes `waker` at `deadline` (at once if it has passed or the timer was aborted): a sleep
    /// registered for another task.
    pub fn wake_at(&self, deadline: Instant, waker: Waker) {
        if Instant::now() >= deadline || !self.register(deadline, &waker) {
            waker.wake();
        }
    }

    /// Wakes every sleeper now, and every later sleep completes at once.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        let mut inner = self.lock();
        while let Some(e) = inner.heap.pop() {
            e.waker.wake();
        }
        if let Some(d) = &inner.driver {
            d.wake_by_ref();
        }
    }

    /// A request leaves at `now`: the thread polls for its response for a while.
    pub fn request_sent(&self, now: Instant) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        self.last_send_ns
            .store((now - self.base).as_nanos() as u64, Ordering::Relaxed);
    }

    /// A request's response (or failure) is in.
    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    fn awaiting_response(&self, now: Instant) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
            && (now - self.base).as_nanos() as u64
                <= self.last_send_ns.load(Ordering::Relaxed) + self.poll_in_flight.as_nanos() as u64
    }

    /// Time spent spinning so far: the polling rounds (yield, poll for I/O, back) in which no
    /// request left and no response came in.
    pub fn spun(&self) -> Duration {
        Duration::from_nanos(self.spun_ns.load(Ordering::Relaxed))
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a sleeper; false when the timer was aborted (the sleep is over).
    fn register(&self, deadline: Instant, waker: &Waker) -> bool {
        if self.is_aborted() {
            return false;
        }
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.heap.push(Entry {
            deadline,
            seq,
            waker: waker.clone(),
        });
        let earlier = match inner.armed {
            Some(at) => deadline.checked_sub(self.spin).unwrap_or(deadline) < at,
            None => true,
        };
        if earlier {
            inner.kicked = true;
            if let Some(d) = &inner.driver {
                d.wake_by_ref();
            }
        }
        true
    }

    /// Runs the timer until the runtime drops it (abort the task at the end of the step).
    pub async fn drive(self: Arc<Self>) {
        let mut last_round: Option<(Instant, u64)> = None;
        let mut last_io = Instant::now();
        loop {
            let now = Instant::now();
            let next = self.fire(now);
            if next.is_some_and(|d| d <= now + self.spin) || self.awaiting_response(now) {
                // Close enough (or a response due any moment): poll through the rest of the gap
                // (other tasks and I/O run in between) rather than sleep and wake up late.
                let events = self.events.load(Ordering::Relaxed);
                if let Some((prev, before)) = last_round
                    && events == before
                {
                    self.spun_ns
                        .fetch_add((now - prev).as_nanos() as u64, Ordering::Relaxed);
                }
                last_round = Some((now, events));
                if now < last_io + self.io_every {
                    // Back in the run queue at once, without an I/O poll (the runtime still
                    // polls every so many tasks run).
                    requeue().await;
                } else {
                    last_io = now;
                    tokio::task::yield_now().await;
                }
            } else {
                last_round = None;
                std::future::poll_fn(|cx| self.poll_wait(cx, next)).await;
            }
        }
    }

    /// Wakes the sleepers due at `now`; the next deadline.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        while inner.heap.peek().is_some_and(|e| e.deadline <= now) {
            if let Some(e) = inner.heap.pop() {
                e.waker.wake();
            }
        }
        inner.heap.peek().map(|e| e.deadline)
    }

    /// Arms the `timerfd` a spin window ahead of `next` and waits for it (or for an earlier
    /// deadline to be registered).
    fn poll_wait(&self, cx: &mut Context<'_>, next: Option<Instant>) -> Poll<()> {
        {
            let mut inner = self.lock();
            if std::mem::take(&mut inner.kicked) {
                return Poll::Ready(());
            }
            if !inner
                .driver
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.driver = Some(cx.waker().clone());
            }
            let at = next.map(|d| d.checked_sub(self.spin).unwrap_or(d));
            if inner.armed != at {
                arm(
                    &self.fd,
                    at.map(|at| at.saturating_duration_since(Instant::now())),
                );
                inner.armed = at;
            }
        }
        loop {
            match self.fd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Pending,
                Poll::Ready(Ok(mut guard)) => {
                    let read = guard.try_io(|fd| {
                        let mut buf = [0u8; 8];
                        // SAFETY: reads at most 8 bytes into our buffer from our descriptor.
                        let n = unsafe {
                            libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                        };
                        if n < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(())
                        }
                    });
                    if let Ok(Ok(())) = read {
                        self.lock().armed = None;
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// Puts the task back at the end of the run queue: unlike `yield_now`, the runtime need not
/// poll for I/O before it runs again.
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut queued, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Sets the `timerfd` to fire in `after` (None disarms it).
fn arm(fd: &AsyncFd<OwnedFd>, after: Option<Duration>) {
    let value = match after {
        // Zero would disarm it: fire in a nanosecond instead.
        Some(d) => {
            let d = d.max(Duration::from_nanos(1));
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        }
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    // SAFETY: timerfd_settime reads the itimerspec we own; the old value is not asked for.
    unsafe {
        libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
    }
}

/// See [`Timer::sleep_until`].
pub struct Sleep {
    timer: Arc<Timer>,
    deadline: Instant,
    registered: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline || self.timer.is_aborted() {
            return Poll::Ready(());
        }
        if !self.registered {
            if !self.timer.register(self.deadline, cx.waker()) {
                return Poll::Ready(());
            }
            self.registered = true;
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn io_is_polled_on_every_round_at_low_rates_and_every_20_us_at_high_ones() {
        if std::env::var_os("LOADGEN_IO_EVERY_US").is_some() {
            return;
        }
        assert_eq!(io_every_for_rate(5_000.0), Duration::ZERO);
        assert_eq!(io_every_for_rate(0.0), Duration::ZERO);
        assert_eq!(io_every_for_rate(120_000.0), IO_EVERY);
    }

    #[test]
    fn sleepers_wake_in_order_and_not_early() {
        runtime().block_on(async {
            let timer = Timer::new(Duration::from_micros(20)).unwrap();
            let driver = tokio::spawn(timer.clone().drive());
            let t0 = Instant::now();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for (i, us) in [3000u64, 200, 1500, 50, 800].into_iter().enumerate() {
                let (timer, order) = (timer.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let deadline = t0 + Duration::from_micros(us);
                    timer.sleep_until(deadline).await;
                    assert!(Instant::now() >= deadline);
                    order.lock().unwrap().push(i);
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![3, 1, 4, 2, 0]);
            driver.abort();
        });
    }

    #[test]
    fn a_sleep_ends_within_a_fraction_of_a_millisecond_of_its_deadline() {
        // tokio's own timer would be up to 1 ms late; this one should not be (on an idle machine
        // tens of µs; the bound leaves room for a busy one).
        runtime().block_on(async {
            let timer = Timer::new(Duration::from_micros(20)).unwrap();
            let driver = tokio::spawn(timer.clone().drive());
            let mut late = Vec::new();
            for i in 0..50u64 {
                let deadline = Instant::now() + Duration::from_micros(300 + 37 * i);
                timer.sleep_until(deadline).await;
                late.push(Instant::now() - deadline);
            }
            late.sort();
            assert!(
                late[25] < Duration::from_micros(400),
                "median late {:?}",
                late[25]
            );
            driver.abort();
        });
    }

    #[test]
    fn polling_rounds_count_as_spun_only_while_nothing_is_sent_or_received() {
        runtime().block_on(async {
            let timer = Timer::new(Duration::from_micros(20)).unwrap();
            let driver = tokio::spawn(timer.clone().drive());
            // A request in flight: the driver polls for its response (rounds of this task and
            // the driver, far shorter than POLL_IN_FLIGHT) instead of sleeping.
            timer.request_sent(Instant::now());
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            assert!(
                timer.spun() > Duration::ZERO,
                "idle rounds were not counted"
            );
            // Every round now has a response in and a request out: none of it is idle.
            let before = timer.spun();
            for _ in 0..50 {
                timer.request_done();
                timer.request_sent(Instant::now());
                tokio::task::yield_now().await;
            }
            assert_eq!(timer.spun(), before, "busy rounds were counted as idle");
            driver.abort();
        });
    }

    #[test]
    fn abort_wakes_every_sleeper() {
        runtime().block_on(async {
            let timer = Timer::new(Duration::from_micros(20)).unwrap();
            let driver = tokio::spawn(timer.clone().drive());
            let far = Instant::now() + Duration::from_secs(3600);
            let sleeper = tokio::spawn({
                let timer = timer.clone();
                async move { timer.sleep_until(far).await }
            });
            tokio::task::yield_now().await;
            timer.abort();
            tokio::time::timeout(Duration::from_secs(5), sleeper)
                .await
                .expect("woken")
                .unwrap();
            driver.abort();
        });
    }
}
