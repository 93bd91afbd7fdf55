//! Cost of counting allocations: linkr's counting allocator vs the allocator it wraps, one
//! `alloc` + `dealloc` pair per iteration, called directly (a `Box` would always go through
//! the counting global allocator). The difference is the per-allocation overhead (target <= 2 ns).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::alloc::{Counting, INNER};
use linkr_benches::support::{self, Group};

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a non-zero-size layout; the block is freed with the allocator and layout that
    // made it.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        a.dealloc(black_box(p), layout);
    }
}

fn counting_vs_plain(c: &mut Criterion) {
    let counting = Counting(INNER);
    let mut g = Group::new(c, "alloc");
    g.throughput(Throughput::Elements(1));
    for size in [16usize, 256, 4096] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.bench(&format!("counting_vs_plain/counting/{size}"), || {
            pair(&counting, black_box(layout))
        });
        g.bench(&format!("counting_vs_plain/plain/{size}"), || {
            pair(&INNER, black_box(layout))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = counting_vs_plain
}
criterion_main!(benches);
