//! Allocation accounting.
//!
//! The library installs a counting `#[global_allocator]`, so every binary that links `linkr`
//! (the service, its tests and the benches) counts its heap allocations. The counting wrapper
//! delegates to mimalloc (cargo feature `mimalloc`, the default) or to the system allocator
//! (`--no-default-features`). Under the `dhat-heap` feature the global allocator is dhat's
//! instead: the counters then stay at zero and [`start_heap_profiler`] records a heap profile.
//!
//! Counting costs a load of a process-wide switch ([`set_counting`]), one thread-local read and
//! two uncontended relaxed load/store pairs per allocation: each thread claims its own cache-padded slot in a static table on its first
//! allocation and is the only writer of it. Threads that arrive after the table is full share an
//! overflow slot (updated with `fetch_add`) and keep their exact per-thread count in thread-local
//! cells. Allocations, zeroed allocations and reallocations count as one allocation each, for
//! the requested size; frees are not counted.
//!
//! [`track`] charges to a future the allocations made on whichever thread polls it, which is
//! what a request costs even when tokio moves its task between worker threads. Allocations made
//! by other tasks it spawns, or by a blocking thread it waits on, are not charged to it.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

#[cfg(all(feature = "dhat-heap", feature = "mimalloc"))]
compile_error!(
    "feature `dhat-heap` cannot be combined with `mimalloc` (dhat's allocator wraps the system \
     allocator): build with `--no-default-features --features dhat-heap`"
);

/// Allocation calls and requested bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AllocCount {
    pub allocs: u64,
    pub bytes: u64,
}

impl Add for AllocCount {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self {
            allocs: self.allocs.wrapping_add(rhs.allocs),
            bytes: self.bytes.wrapping_add(rhs.bytes),
        }
    }
}

impl AddAssign for AllocCount {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl Sub for AllocCount {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self {
            allocs: self.allocs.wrapping_sub(rhs.allocs),
            bytes: self.bytes.wrapping_sub(rhs.bytes),
        }
    }
}

/// Whether the global allocator counts (false under `dhat-heap`).
pub const COUNTING: bool = cfg!(not(feature = "dhat-heap"));

/// Name of the allocator the counting wrapper delegates to.
pub const INNER_NAME: &str = if cfg!(feature = "dhat-heap") {
    "dhat"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

/// The allocator that the counting wrapper delegates to (for overhead benchmarks).
#[cfg(feature = "mimalloc")]
pub type Inner = mimalloc::MiMalloc;
/// The allocator that the counting wrapper delegates to (for overhead benchmarks).
#[cfg(not(feature = "mimalloc"))]
pub type Inner = std::alloc::System;

/// An instance of [`Inner`].
#[cfg(feature = "mimalloc")]
pub const INNER: Inner = mimalloc::MiMalloc;
/// An instance of [`Inner`].
#[cfg(not(feature = "mimalloc"))]
pub const INNER: Inner = std::alloc::System;

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: Counting<Inner> = Counting(INNER);

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// A global allocator that counts into the per-thread slots, then delegates to `A`.
///
/// Public so benchmarks can compare `Counting(INNER)` with `INNER` call for call; the counts of
/// every `Counting` instance go to the same process-wide table.
pub struct Counting<A>(pub A);

// SAFETY: every method delegates to `A` with the caller's arguments unchanged; counting neither
// allocates nor touches the returned memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Slots in the static table; the last one is the shared overflow slot.
const SLOTS: usize = 512;
const OVERFLOW: usize = SLOTS - 1;
const UNCLAIMED: usize = usize::MAX;

#[repr(align(128))]
struct Slot {
    allocs: AtomicU64,
    bytes: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without `Drop`: no lazy initialisation, no destructor registration,
    // so reading them inside the allocator never allocates and works during thread teardown.
    static MY_SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
    static OVERFLOW_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static OVERFLOW_BYTES: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn my_slot() -> usize {
    let slot = MY_SLOT.get();
    if slot != UNCLAIMED {
        return slot;
    }
    claim_slot()
}

#[cold]
fn claim_slot() -> usize {
    let next = NEXT_SLOT.fetch_add(1, Relaxed);
    let slot = if next < OVERFLOW { next } else { OVERFLOW };
    MY_SLOT.set(slot);
    slot
}

/// Run-time switch for counting (on at start), for A/B overhead measurements in one process.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns counting on or off for the whole process. While off, counters (and so [`track`]) stand
/// still; the allocator itself is unchanged.
pub fn set_counting(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Whether allocations are being counted now.
pub fn counting_enabled() -> bool {
    COUNTING && ENABLED.load(Relaxed)
}

#[inline]
fn record(size: usize) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    let slot = my_slot();
    let s = &TABLE[slot];
    if slot != OVERFLOW {
        // Only this thread writes this slot: a load and a store, no read-modify-write.
        s.allocs
            .store(s.allocs.load(Relaxed).wrapping_add(1), Relaxed);
        s.bytes
            .store(s.bytes.load(Relaxed).wrapping_add(size as u64), Relaxed);
    } else {
        s.allocs.fetch_add(1, Relaxed);
        s.bytes.fetch_add(size as u64, Relaxed);
        OVERFLOW_ALLOCS.set(OVERFLOW_ALLOCS.get().wrapping_add(1));
        OVERFLOW_BYTES.set(OVERFLOW_BYTES.get().wrapping_add(size as u64));
    }
}

/// Allocations made so far by the calling thread.
#[inline]
pub fn thread_count() -> AllocCount {
    let slot = my_slot();
    if slot != OVERFLOW {
        let s = &TABLE[slot];
        AllocCount {
            allocs: s.allocs.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
        }
    } else {
        AllocCount {
            allocs: OVERFLOW_ALLOCS.get(),
            bytes: OVERFLOW_BYTES.get(),
        }
    }
}

/// Allocations made so far by the whole process (sum of all slots; relaxed, so a snapshot taken
/// while other threads allocate may miss their latest few).
pub fn total() -> AllocCount {
    let used = NEXT_SLOT.load(Relaxed).min(OVERFLOW);
    TABLE[..used]
        .iter()
        .chain(std::iter::once(&TABLE[OVERFLOW]))
        .fold(AllocCount::default(), |acc, s| {
            acc + AllocCount {
                allocs: s.allocs.load(Relaxed),
                bytes: s.bytes.load(Relaxed),
            }
        })
}

/// Runs `f` and returns its result with the allocations the calling thread made meanwhile.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, AllocCount) {
    let before = thread_count();
    let out = f();
    (out, thread_count() - before)
}

/// Wraps `f` so that the allocations made while it is polled are charged to it.
pub fn track<F: Future>(f: F) -> Tracked<F> {
    Tracked {
        inner: f,
        count: AllocCount::default(),
    }
}

/// Future returned by [`track`]: resolves to the inner output and the allocations made while
/// the inner future was being polled, on whichever threads polled it.
#[must_use = "futures do nothing unless polled"]
pub struct Tracked<F> {
    inner: F,
    count: AllocCount,
}

impl<F> Tracked<F> {
    /// Allocations charged so far.
    pub fn count(&self) -> AllocCount {
        self.count
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = (F::Output, AllocCount);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is never moved out of `self`; `count` is plain data (not pinned).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `this` came from a pinned reference, so `inner` stays pinned.
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let before = thread_count();
        let polled = inner.poll(cx);
        this.count += thread_count() - before;
        match polled {
            Poll::Ready(out) => Poll::Ready((out, this.count)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Keeps dhat's heap profiler running; dropping it writes the profile (see
/// [`start_heap_profiler`]). Hold it until after graceful shutdown, and do not end the process
/// with `std::process::exit` before it is dropped.
pub struct HeapProfiler {
    #[cfg(feature = "dhat-heap")]
    profiler: Option<dhat::Profiler>,
    #[cfg(feature = "dhat-heap")]
    path: std::path::PathBuf,
}

/// Default output path of the heap profile, relative to the working directory.
pub const HEAP_PROFILE_PATH: &str = "profiles/dhat-heap.json";

/// Starts dhat's heap profiler in a `dhat-heap` build (`None` otherwise). The profile goes to
/// `$LINKR_DHAT_FILE`, default [`HEAP_PROFILE_PATH`], when the returned guard is dropped.
pub fn start_heap_profiler() -> Option<HeapProfiler> {
    #[cfg(feature = "dhat-heap")]
    {
        let path = std::path::PathBuf::from(
            std::env::var_os("LINKR_DHAT_FILE").unwrap_or_else(|| HEAP_PROFILE_PATH.into()),
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create heap profile directory");
        }
        let profiler = dhat::Profiler::builder().file_name(&path).build();
        tracing::info!(path = %path.display(), "dhat heap profiler started");
        Some(HeapProfiler {
            profiler: Some(profiler),
            path,
        })
    }
    #[cfg(not(feature = "dhat-heap"))]
    {
        None
    }
}

impl Drop for HeapProfiler {
    fn drop(&mut self) {
        #[cfg(feature = "dhat-heap")]
        {
            drop(self.profiler.take());
            tracing::info!(path = %self.path.display(), "dhat heap profile written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    #[test]
    fn count_sees_boxes_and_vec_growth() {
        let ((), n) = count(|| {
            let v: Vec<Box<u64>> = black_box(vec![Box::new(1), Box::new(2), Box::new(3)]);
            drop(black_box(v));
        });
        assert_eq!(n.allocs, 4);
        assert_eq!(n.bytes, 3 * 8 + 3 * 8);
    }

    #[test]
    fn realloc_counts_new_size() {
        let mut v: Vec<u8> = black_box(Vec::with_capacity(16));
        let ((), n) = count(|| {
            v.reserve_exact(64);
        });
        assert_eq!(
            n,
            AllocCount {
                allocs: 1,
                bytes: 64
            }
        );
    }

    #[test]
    fn total_is_monotonic_and_includes_this_thread() {
        let before = total();
        let (_, mine) = count(|| black_box(vec![0u8; 100]));
        let after = total();
        assert!(after.allocs >= before.allocs + mine.allocs);
        assert!(after.bytes >= before.bytes + 100);
    }
}
