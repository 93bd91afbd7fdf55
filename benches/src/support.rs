//! Bench groups that record allocations per iteration beside criterion's timings.
//!
//! Every bench added through [`Group`] first runs its routine outside criterion's
//! timing, counting allocations with linkr's global counting allocator (the benches
//! link linkr, so its allocator is the process's), and writes the result to
//! `target/criterion/allocs/<id>.json`, which `bench-report` shows beside the times.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput};
use serde::{Deserialize, Serialize};

/// Iterations run before counting: pools fill, lazy statics initialise.
const WARM_UP_ITERS: u64 = 64;
const MIN_ITERS: u64 = 16;
const MAX_ITERS: u64 = 10_000;
/// Time spent counting one bench's allocations: `LINKR_BENCH_ALLOC_BUDGET_MS`, default 300.
fn budget() -> Duration {
    let ms = std::env::var("LINKR_BENCH_ALLOC_BUDGET_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    Duration::from_millis(ms)
}
/// Per-thread iterations when counting a contended routine.
const CONTENDED_ITERS: u64 = 5_000;

/// What `target/criterion/allocs/<id>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocsPerIter {
    pub id: String,
    pub allocs_per_iter: f64,
    pub bytes_per_iter: f64,
    pub iters: u64,
}

/// The directory criterion writes to, found the way criterion finds it
/// (`CRITERION_HOME`, `CARGO_TARGET_DIR`, then `cargo metadata`), so the allocation
/// files land beside criterion's own even when `target` is a symlink or was made by hand.
pub fn criterion_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return PathBuf::from(home);
        }
        cargo_target_dir()
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("criterion")
    })
    .clone()
}

fn cargo_target_dir() -> Option<PathBuf> {
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target));
    }
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    // cargo sets CARGO for `cargo bench` and `cargo run`; criterion asks it the same way.
    let output = std::process::Command::new(std::env::var_os("CARGO")?)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let metadata: Metadata = serde_json::from_slice(&output.stdout).ok()?;
    Some(metadata.target_directory)
}

pub fn allocs_dir() -> PathBuf {
    criterion_dir().join("allocs")
}

/// File name for a bench id (`encode/link_json/linkr_zero_copy` -> `encode__link_json__linkr_zero_copy.json`).
pub fn allocs_file_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| match c {
            '/' => '~',
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') => c,
            _ => '_',
        })
        .collect();
    format!("{}.json", safe.replace('~', "__"))
}

fn allocated() -> (u64, u64) {
    let count = linkr::alloc::total();
    (count.allocs, count.bytes)
}

/// Counts allocations of `routine` per call, outside any timing.
pub fn count_allocs<O>(id: &str, mut routine: impl FnMut() -> O) -> AllocsPerIter {
    for _ in 0..WARM_UP_ITERS {
        black_box(routine());
    }
    let (start, budget) = (Instant::now(), budget());
    let mut iters = 0;
    let (allocs_before, bytes_before) = allocated();
    while iters < MAX_ITERS && (iters < MIN_ITERS || start.elapsed() < budget) {
        black_box(routine());
        iters += 1;
    }
    let (allocs_after, bytes_after) = allocated();
    per_iter(
        id,
        iters,
        allocs_after - allocs_before,
        bytes_after - bytes_before,
    )
}

/// Like [`count_allocs`], with a set-up per call whose allocations are not counted.
pub fn count_allocs_with_setup<I, O>(
    id: &str,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> O,
) -> AllocsPerIter {
    for _ in 0..WARM_UP_ITERS.min(16) {
        let input = setup();
        black_box(routine(input));
    }
    let (start, budget) = (Instant::now(), budget());
    let (mut iters, mut allocs, mut bytes) = (0, 0, 0);
    while iters < MAX_ITERS && (iters < MIN_ITERS || start.elapsed() < budget) {
        let input = setup();
        let (a0, b0) = allocated();
        let output = routine(input);
        let (a1, b1) = allocated();
        drop(black_box(output));
        allocs += a1 - a0;
        bytes += b1 - b0;
        iters += 1;
    }
    per_iter(id, iters, allocs, bytes)
}

/// Allocations per call when two threads run `routine` at once.
pub fn count_allocs_contended_x2<O>(id: &str, routine: impl Fn() -> O + Sync) -> AllocsPerIter {
    run_x2(WARM_UP_ITERS, &routine);
    // Starting the two threads allocates too: measure that alone and take it off.
    let (a0, b0) = allocated();
    run_x2(0, &routine);
    let (a1, b1) = allocated();
    run_x2(CONTENDED_ITERS, &routine);
    let (a2, b2) = allocated();
    let (spawn_allocs, spawn_bytes) = (a1 - a0, b1 - b0);
    per_iter(
        id,
        2 * CONTENDED_ITERS,
        (a2 - a1).saturating_sub(spawn_allocs),
        (b2 - b1).saturating_sub(spawn_bytes),
    )
}

fn per_iter(id: &str, iters: u64, allocs: u64, bytes: u64) -> AllocsPerIter {
    let iters = iters.max(1);
    AllocsPerIter {
        id: id.to_owned(),
        allocs_per_iter: allocs as f64 / iters as f64,
        bytes_per_iter: bytes as f64 / iters as f64,
        iters,
    }
}

/// Writes `target/criterion/allocs/<id>.json`; a failure is reported, not fatal.
pub fn save_allocs(allocs: &AllocsPerIter) {
    let dir = allocs_dir();
    let result = std::fs::create_dir_all(&dir).and_then(|()| {
        let json = serde_json::to_vec_pretty(allocs).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(allocs_file_name(&allocs.id)), json)
    });
    if let Err(err) = result {
        eprintln!(
            "warning: could not record allocations of {}: {err}",
            allocs.id
        );
    }
}

/// Runs `routine` `iters` times on each of two threads started together; returns the
/// longer of the two elapsed times (the time both needed to do `iters` calls each).
pub fn run_x2<O>(iters: u64, routine: &(impl Fn() -> O + Sync)) -> Duration {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        black_box(routine());
                    }
                    t0.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

/// A criterion group whose benches also record allocations per iteration.
pub struct Group<'a> {
    name: String,
    inner: BenchmarkGroup<'a, WallTime>,
}

impl<'a> Group<'a> {
    pub fn new(c: &'a mut Criterion, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner: c.benchmark_group(name),
        }
    }

    pub fn throughput(&mut self, throughput: Throughput) -> &mut Self {
        self.inner.throughput(throughput);
        self
    }

    /// Criterion's group, for settings such as `sample_size`.
    pub fn criterion_group(&mut self) -> &mut BenchmarkGroup<'a, WallTime> {
        &mut self.inner
    }

    fn full_id(&self, id: &str) -> String {
        format!("{}/{id}", self.name)
    }

    /// `group/id`: time and allocations of one call of `routine`.
    pub fn bench<O>(&mut self, id: &str, mut routine: impl FnMut() -> O) {
        let full_id = self.full_id(id);
        let mut counted = false;
        self.inner.bench_function(id, |b| {
            if !counted {
                save_allocs(&count_allocs(&full_id, &mut routine));
                counted = true;
            }
            b.iter(&mut routine);
        });
    }

    /// Like [`Group::bench`], with an untimed, uncounted `setup` for each call.
    pub fn bench_with_setup<I, O>(
        &mut self,
        id: &str,
        mut setup: impl FnMut() -> I,
        mut routine: impl FnMut(I) -> O,
    ) {
        let full_id = self.full_id(id);
        let mut counted = false;
        self.inner.bench_function(id, |b| {
            if !counted {
                save_allocs(&count_allocs_with_setup(&full_id, &mut setup, &mut routine));
                counted = true;
            }
            b.iter_batched(&mut setup, &mut routine, BatchSize::SmallInput);
        });
    }

    /// `group/id` with two threads calling `routine` at once: the time is per call on
    /// each thread (two calls complete in that time).
    pub fn bench_contended_x2<O>(&mut self, id: &str, routine: impl Fn() -> O + Sync) {
        let full_id = self.full_id(id);
        let mut counted = false;
        self.inner.bench_function(id, |b| {
            if !counted {
                save_allocs(&count_allocs_contended_x2(&full_id, &routine));
                counted = true;
            }
            b.iter_custom(|iters| run_x2(iters, &routine));
        });
    }

    pub fn finish(self) {
        self.inner.finish();
    }
}

/// Shared criterion settings (command-line flags still override them).
pub fn criterion() -> Criterion {
    Criterion::default()
}

/// A current-thread tokio runtime for driving async code inside benches.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
