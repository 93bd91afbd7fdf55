//! The `thread-timers` sampler, for where perf events are refused: one POSIX CPU timer per
//! thread (`timer_create` on the thread's CPU clock, `SIGEV_THREAD_ID`, as Go does since 1.18),
//! its first expiry randomised. The kernel checks CPU timers on scheduler ticks, so at rates above
//! the tick one signal stands for several periods: each sample is weighted by the timer's overrun
//! count plus one. The `SIGPROF` handler walks frame pointers ([`super::unwind`]) into a
//! preallocated buffer of slots claimed with atomics: no allocation, no locks. A sample taken in a
//! system call shows the libc wrapper as its leaf (the kernel's part is not visible from here).

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Samples;
use super::unwind::{self, StackRanges};

const MAX_DEPTH: usize = 128;
/// Slots in the buffer: at 1 kHz on 20 busy threads, 200 samples arrive between two drains.
const SLOTS: usize = 2048;
/// Slots a handler tries before it counts its sample as lost.
const PROBES: usize = 16;
const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

struct Slot {
    state: AtomicU8,
    tid: AtomicU32,
    weight: AtomicU32,
    depth: AtomicU32,
    frames: UnsafeCell<[u64; MAX_DEPTH]>,
}

struct Ring {
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// Periods of samples that found no free slot.
    lost: AtomicU64,
}

// SAFETY: a slot's `frames` are written only by the handler that moved its state FREE -> WRITING
// and read only by the drain after it saw READY (acquire/release on `state`).
unsafe impl Sync for Ring {}

/// The buffer of the running capture (null when none runs); handlers write into it.
static RING: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
/// The mappings snapshot the handlers bound their walks with.
static RANGES: AtomicPtr<StackRanges> = AtomicPtr::new(std::ptr::null_mut());
/// Handlers running now: memory behind `RING` and `RANGES` is freed only when this is zero.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct Sampler {
    period_ns: u64,
    ring: *mut Ring,
    ranges: Vec<*mut StackRanges>,
    timers: HashMap<u32, libc::timer_t>,
    seed: u64,
}

// SAFETY: the raw pointers are owned by the sampler (published to handlers through the statics).
unsafe impl Send for Sampler {}

impl Sampler {
    pub(crate) fn open(period_ns: u64) -> io::Result<Self> {
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            return Err(io::Error::other(
                "no frame-pointer walk for this architecture",
            ));
        }
        let slots = (0..SLOTS)
            .map(|_| Slot {
                state: AtomicU8::new(FREE),
                tid: AtomicU32::new(0),
                weight: AtomicU32::new(0),
                depth: AtomicU32::new(0),
                frames: UnsafeCell::new([0; MAX_DEPTH]),
            })
            .collect();
        let ring = Box::into_raw(Box::new(Ring {
            slots,
            next: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
        }));
        let ranges = Box::into_raw(Box::new(StackRanges::snapshot()));
        if RING
            .compare_exchange(
                std::ptr::null_mut(),
                ring,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            // SAFETY: both were just allocated here and never published.
            unsafe { drop((Box::from_raw(ring), Box::from_raw(ranges))) };
            return Err(io::Error::other("another thread-timer capture is running"));
        }
        RANGES.store(ranges, Ordering::SeqCst);
        let mut sampler = Self {
            period_ns,
            ring,
            ranges: vec![ranges],
            timers: HashMap::new(),
            seed: seed(),
        };
        // The handler stays installed after the capture (inert with `RING` null): a signal still
        // queued when the timers are deleted must not meet SIGPROF's default action.
        // SAFETY: installs a handler that is async-signal-safe (see `on_sigprof`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigprof as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) != 0 {
                let e = io::Error::last_os_error();
                sampler.stop();
                return Err(e);
            }
        }
        Ok(sampler)
    }

    /// Arms a CPU timer on thread `tid`.
    pub(crate) fn watch(&mut self, tid: u32) -> io::Result<()> {
        let thread = libc::c_int::try_from(tid).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a zeroed sigevent is valid; the fields the kernel reads are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGPROF;
        event.sigev_notify_thread_id = thread;
        // The handler reads the thread id back from the signal's value.
        event.sigev_value = libc::sigval {
            sival_ptr: tid as usize as *mut libc::c_void,
        };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer id.
        if unsafe { libc::timer_create(super::threads::thread_clock(tid), &mut event, &mut timer) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        // A random first expiry, so threads that start together are not sampled in step.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let first = 1 + self.seed % self.period_ns;
        let spec = libc::itimerspec {
            it_interval: timespec(self.period_ns),
            it_value: timespec(first),
        };
        // SAFETY: `timer` was just created.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: deleting the timer we created.
            unsafe { libc::timer_delete(timer) };
            return Err(e);
        }
        if let Some(old) = self.timers.insert(tid, timer) {
            // SAFETY: the timer of an exited thread whose id was reused.
            unsafe { libc::timer_delete(old) };
        }
        Ok(())
    }

    /// Deletes the timer of exited thread `tid`.
    pub(crate) fn forget(&mut self, tid: u32) {
        if let Some(timer) = self.timers.remove(&tid) {
            // SAFETY: a timer we created.
            unsafe { libc::timer_delete(timer) };
        }
    }

    /// A fresh mappings snapshot for the handlers (new threads' stacks); the old one is freed
    /// when the capture ends.
    pub(crate) fn refresh_stacks(&mut self) {
        let fresh = Box::into_raw(Box::new(StackRanges::snapshot()));
        RANGES.store(fresh, Ordering::SeqCst);
        self.ranges.push(fresh);
    }

    pub(crate) fn drain(&mut self, samples: &mut Samples) {
        // SAFETY: the ring lives until `Drop`.
        let ring = unsafe { &*self.ring };
        for slot in &ring.slots {
            if slot.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let depth = (slot.depth.load(Ordering::Relaxed) as usize).min(MAX_DEPTH);
            // SAFETY: READY: the handler is done with the frames and no other will touch them
            // until the state is FREE again.
            let frames: &[u64; MAX_DEPTH] = unsafe { &*slot.frames.get() };
            let frames = &frames[..depth];
            let weight = u64::from(slot.weight.load(Ordering::Relaxed));
            samples.add(
                slot.tid.load(Ordering::Relaxed),
                frames,
                weight * self.period_ns,
            );
            slot.state.store(FREE, Ordering::Release);
        }
        let lost = ring.lost.swap(0, Ordering::Relaxed);
        samples.add_lost(lost);
    }

    /// Deletes every timer and waits for running handlers; buffered samples stay drainable.
    pub(crate) fn stop(&mut self) {
        for (_, timer) in self.timers.drain() {
            // SAFETY: timers we created.
            unsafe { libc::timer_delete(timer) };
        }
        if RING.load(Ordering::SeqCst) != self.ring {
            return;
        }
        RANGES.store(std::ptr::null_mut(), Ordering::SeqCst);
        RING.store(std::ptr::null_mut(), Ordering::SeqCst);
        // A handler that read `RING` before the store above has already counted itself in.
        let deadline = Instant::now() + Duration::from_secs(1);
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            if Instant::now() > deadline {
                // Never seen: a handler cannot block. Leak rather than free memory in use.
                tracing::error!("SIGPROF handler did not finish; leaking its buffers");
                self.ranges.clear();
                self.ring = Box::into_raw(Box::new(Ring {
                    slots: Box::new([]),
                    next: AtomicUsize::new(0),
                    lost: AtomicU64::new(0),
                }));
                return;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: unpublished by `stop`, with no handler running; each freed once.
        unsafe {
            drop(Box::from_raw(self.ring));
            for r in self.ranges.drain(..) {
                drop(Box::from_raw(r));
            }
        }
    }
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    (nanos ^ 0x9e37_79b9_7f4a_7c15) | 1
}

/// The start of Linux's `siginfo_t` for a POSIX timer signal (`si_code == SI_TIMER`).
#[repr(C)]
struct TimerSigInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    #[cfg(target_pointer_width = "64")]
    _pad: libc::c_int,
    timer_id: libc::c_int,
    overrun: libc::c_int,
    value: usize,
}

extern "C" fn on_sigprof(
    _signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; restored so the interrupted code does not see ours.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let ring = RING.load(Ordering::SeqCst);
    let ranges = RANGES.load(Ordering::SeqCst);
    if !ring.is_null() && !ranges.is_null() {
        // SAFETY: published pointers stay valid while `IN_HANDLER` counts this handler; `info`
        // and `context` are the kernel's for this signal.
        unsafe { record(&*ring, &*ranges, info, context) };
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// # Safety
/// Called from the `SIGPROF` handler with the kernel's `info` and `context`.
unsafe fn record(
    ring: &Ring,
    ranges: &StackRanges,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a full siginfo_t, which the timer view is a prefix of.
    let info = unsafe { &*info.cast::<TimerSigInfo>() };
    let (tid, weight) = if info.code == libc::SI_TIMER {
        (
            info.value as u32,
            u32::try_from(info.overrun).unwrap_or(0).saturating_add(1),
        )
    } else {
        (super::threads::gettid(), 1)
    };
    // SAFETY: `context` is the interrupted thread's ucontext.
    let (pc, fp, sp) = unsafe { registers(context) };
    let start = ring.next.fetch_add(1, Ordering::Relaxed);
    for probe in 0..PROBES {
        let slot = &ring.slots[(start + probe) % ring.slots.len()];
        if slot
            .state
            .compare_exchange(FREE, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // SAFETY: WRITING: this handler owns the slot's frames; the walk reads only memory of
        // the interrupted thread's stack (see `unwind::walk`).
        let depth = unsafe { unwind::walk(pc, fp, sp, ranges, &mut *slot.frames.get()) };
        slot.tid.store(tid, Ordering::Relaxed);
        slot.weight.store(weight, Ordering::Relaxed);
        slot.depth.store(depth as u32, Ordering::Relaxed);
        slot.state.store(READY, Ordering::Release);
        return;
    }
    ring.lost.fetch_add(u64::from(weight), Ordering::Relaxed);
}

/// Program counter, frame pointer and stack pointer of the interrupted code.
///
/// # Safety
/// `context` must point to the `ucontext_t` the kernel passed to a signal handler.
#[cfg(target_arch = "x86_64")]
unsafe fn registers(context: *mut libc::c_void) -> (u64, u64, u64) {
    // SAFETY: see above.
    let regs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    (
        regs[libc::REG_RIP as usize] as u64,
        regs[libc::REG_RBP as usize] as u64,
        regs[libc::REG_RSP as usize] as u64,
    )
}

/// # Safety
/// `context` must point to the `ucontext_t` the kernel passed to a signal handler.
#[cfg(target_arch = "aarch64")]
unsafe fn registers(context: *mut libc::c_void) -> (u64, u64, u64) {
    // SAFETY: see above.
    let m = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext };
    (m.pc, m.regs[29], m.sp)
}

/// # Safety
/// Never called: `Sampler::open` refuses other architectures.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn registers(_context: *mut libc::c_void) -> (u64, u64, u64) {
    (0, 0, 0)
}
