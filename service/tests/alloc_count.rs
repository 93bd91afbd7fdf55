//! Exact allocation counts from linkr's counting global allocator.
//!
//! Counters are per thread, so allocations the test runner makes on its own threads do not show
//! up here; nothing in a measured region prints (output capture allocates on the test thread).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use linkr::alloc::{self, AllocCount};

#[inline(never)]
#[allow(
    clippy::vec_box,
    reason = "the boxes are the allocations being counted"
)]
fn three_boxes() -> Vec<Box<u64>> {
    black_box(vec![Box::new(1), Box::new(2), Box::new(3)])
}

#[test]
fn known_function_allocates_exactly_four_times() {
    // One allocation for the vector's buffer, one per box.
    let (v, n) = alloc::count(three_boxes);
    assert_eq!(
        n,
        AllocCount {
            allocs: 4,
            bytes: 3 * 8 + 3 * 8
        }
    );
    let ((), freed) = alloc::count(|| drop(v));
    assert_eq!(freed.allocs, 0, "frees are not allocations");
}

#[test]
fn zeroed_and_realloc_count_as_allocations() {
    let (mut v, n) = alloc::count(|| black_box(vec![0u8; 1000]));
    assert_eq!(
        n,
        AllocCount {
            allocs: 1,
            bytes: 1000
        }
    );
    let ((), n) = alloc::count(|| v.reserve_exact(3000));
    assert_eq!(
        n,
        AllocCount {
            allocs: 1,
            bytes: 4000
        }
    );
    let ((), n) = alloc::count(|| {
        black_box(&mut v).truncate(10);
        v.shrink_to_fit();
    });
    assert_eq!(
        n,
        AllocCount {
            allocs: 1,
            bytes: 10
        }
    );
}

#[test]
fn totals_include_other_threads() {
    let before = alloc::total();
    let (_, other) = std::thread::spawn(|| alloc::count(|| black_box(vec![0u8; 4096])))
        .join()
        .unwrap();
    let after = alloc::total();
    assert_eq!(
        other,
        AllocCount {
            allocs: 1,
            bytes: 4096
        }
    );
    assert!(after.allocs > before.allocs);
    assert!(after.bytes >= before.bytes + 4096);
}

#[test]
fn many_threads_each_count_exactly() {
    // More threads than slots in the counter table: the late ones share the overflow slot and
    // must still see exact per-thread counts.
    for _ in 0..3 {
        let handles: Vec<_> = (0..200u64)
            .map(|i| {
                std::thread::spawn(move || {
                    alloc::count(|| {
                        for _ in 0..=i % 7 {
                            black_box(Box::new(i));
                        }
                    })
                    .1
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let n = h.join().unwrap();
            let expect = (i % 7 + 1) as u64;
            assert_eq!(
                n,
                AllocCount {
                    allocs: expect,
                    bytes: 8 * expect
                }
            );
        }
    }
}

/// Pending once, then ready: lets a test move a half-polled future to another thread.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn track_charges_polls_on_every_thread_the_future_visits() {
    const STEPS: u64 = 6;
    let mut fut = Box::pin(alloc::track(async {
        for step in 0..STEPS {
            black_box(Box::new([step; 4]));
            YieldOnce(false).await;
        }
        "done"
    }));
    let mut polls = 0;
    let result = loop {
        // Each poll runs on a fresh thread: the future moves between threads between polls.
        let polled = std::thread::scope(|s| {
            s.spawn(|| fut.as_mut().poll(&mut Context::from_waker(Waker::noop())))
                .join()
                .unwrap()
        });
        polls += 1;
        if let Poll::Ready(r) = polled {
            break r;
        }
    };
    assert_eq!(polls, STEPS + 1);
    assert_eq!(result.0, "done");
    assert_eq!(
        result.1,
        AllocCount {
            allocs: STEPS,
            bytes: STEPS * 32
        }
    );
}

#[test]
fn track_is_exact_on_a_multi_thread_runtime() {
    const STEPS: u64 = 200;
    // The vec per step (24 bytes) is the only allocation the tracked future makes: `threads`
    // is pre-sized, and `seen.lock()` does not allocate.
    let expected = AllocCount {
        allocs: STEPS + 1,
        bytes: STEPS * 24 + STEPS * 8,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm-up: every worker grows its deferred-wakeup list once (yield_now pushes to it).
        let warm: Vec<_> = (0..32)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..32 {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for w in warm {
            w.await.unwrap();
        }
        // tokio itself may, rarely, grow a worker's internal list *while polling the tracked
        // task*; that allocation is rightly charged to the task, so one run can read one more.
        // Never fewer: every run must count at least the known allocations, and one of three
        // runs must count exactly them.
        let mut runs = Vec::new();
        for _ in 0..3 {
            let (n, threads) = hopping_task(STEPS).await;
            assert!(
                n.allocs >= expected.allocs && n.bytes >= expected.bytes,
                "undercount: {n:?} < {expected:?}"
            );
            runs.push((n, distinct(&threads)));
            if n == expected {
                return;
            }
        }
        panic!("no run counted exactly {expected:?}: (count, threads visited) = {runs:?}");
    });
}

/// A tracked task that allocates one `vec![step; 3]` per step and yields between steps, while
/// another task keeps the second worker busy so the tracked one hops threads now and then.
async fn hopping_task(steps: u64) -> (AllocCount, Vec<usize>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::with_capacity(steps as usize)));
    let seen_in = Arc::clone(&seen);
    let task = tokio::spawn(alloc::track(async move {
        let mut threads = Vec::with_capacity(steps as usize);
        for step in 0..steps {
            black_box(vec![step; 3]);
            threads.push(worker_id());
            tokio::task::yield_now().await;
        }
        seen_in.lock().unwrap().extend(threads);
    }));
    let noise = tokio::spawn(async {
        for _ in 0..2000 {
            tokio::task::yield_now().await;
        }
    });
    let ((), n) = task.await.unwrap();
    noise.await.unwrap();
    let threads = std::mem::take(&mut *seen.lock().unwrap());
    (n, threads)
}

fn worker_id() -> usize {
    thread_local!(static MARK: u8 = const { 0 });
    MARK.with(|m| m as *const u8 as usize)
}

fn distinct(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

#[test]
fn link_bodies_are_written_without_allocating() {
    use linkr::encode::{write_json_copy, write_json_zero_copy};
    use linkr::routes::links::LinkCreated;

    let created = LinkCreated::example();
    // Warm this thread's buffer; bodies are dropped as a server drops them once written.
    drop(write_json_zero_copy(&created).unwrap());
    for _ in 0..1000 {
        let (body, n) = alloc::count(|| write_json_zero_copy(black_box(&created)).unwrap());
        assert_eq!(n.allocs, 0, "zero-copy body allocated");
        assert_eq!(body, serde_json::to_vec(&created).unwrap());
    }
    let (body, n) = alloc::count(|| write_json_copy(black_box(&created)).unwrap());
    assert_eq!(n.allocs, 1, "the copying variant makes exactly the body");
    assert_eq!(body, serde_json::to_vec(&created).unwrap());
}
