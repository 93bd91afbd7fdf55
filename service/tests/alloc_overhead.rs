//! Cost of counting, per allocation: `Counting(INNER)` against `INNER` called directly, one
//! alloc+free pair at a time, on one thread and on two threads at once. A measurement, not a
//! check (the criterion bench of the benches crate is the tracked number); run it with
//!
//!     cargo test --release -p linkr --test alloc_overhead -- --ignored --nocapture

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::{Duration, Instant};

use linkr::alloc::{Counting, INNER, INNER_NAME};

const PAIRS: u32 = 2_000_000;
const ROUNDS: usize = 21;

fn pairs<A: GlobalAlloc>(a: &A, layout: Layout) -> Duration {
    let start = Instant::now();
    for _ in 0..PAIRS {
        // SAFETY: non-zero size; the pointer is freed with the same layout.
        unsafe {
            let p = a.alloc(black_box(layout));
            assert!(!p.is_null());
            a.dealloc(black_box(p), layout);
        }
    }
    start.elapsed()
}

/// Fastest ns per alloc+free pair over interleaved rounds, for (plain, counting): on a shared
/// machine the minimum is the least disturbed estimate.
fn measure(layout: Layout) -> (f64, f64) {
    let counting = Counting(INNER);
    let (mut plain, mut counted) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        plain.push(pairs(&INNER, layout).as_nanos() as f64 / f64::from(PAIRS));
        counted.push(pairs(&counting, layout).as_nanos() as f64 / f64::from(PAIRS));
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    (min(&plain), min(&counted))
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn counting_overhead_per_allocation() {
    for size in [16, 256, 4096] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let (plain, counted) = measure(layout);
        println!(
            "{INNER_NAME} {size:>5} B, 1 thread:  plain {plain:6.2} ns/pair, counting {counted:6.2} ns/pair, overhead {:+.2} ns",
            counted - plain
        );
        let both: Vec<(f64, f64)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2).map(|_| s.spawn(|| measure(layout))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (plain, counted)) in both.into_iter().enumerate() {
            println!(
                "{INNER_NAME} {size:>5} B, 2 threads (#{i}): plain {plain:6.2} ns/pair, counting {counted:6.2} ns/pair, overhead {:+.2} ns",
                counted - plain
            );
        }
    }
}
