//! Latency recording: HdrHistograms in microseconds (3 significant digits), one recorder per
//! worker thread and step, merged at the end (no lock shared between threads on the hot path).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant digits kept by every histogram.
pub const SIGFIG: u8 = 3;
/// Highest value (µs) before a histogram resizes itself: one minute.
const HIGH_US: u64 = 60_000_000;

/// An empty latency histogram: microseconds, 3 significant digits, resizing past one minute.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_max(HIGH_US, SIGFIG).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response; `ok` when its status is the one the operation expects.
    Status {
        code: u16,
        ok: bool,
    },
    Timeout,
    Connect,
    /// Any other transport failure (reset, body read, ...).
    Other,
}

/// What the driver measured for one request, all in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the intended send time to the end of the response (coordinated omission corrected).
    pub corrected_us: u64,
    /// From the actual send to the end of the response.
    pub uncorrected_us: u64,
    /// From the intended send time to the actual send.
    pub send_lag_us: u64,
    /// The part of the send lag that is the generator's: from the later of the intended time and
    /// the moment the request's connection (or user) was free, to the actual send.
    pub generator_lag_us: u64,
    pub outcome: Outcome,
}

/// One thread's counts for one step.
#[derive(Clone)]
pub struct Recorder {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    pub generator_lag: Histogram<u64>,
    /// Responses by status code (index = code, 0..=599).
    pub status: Box<[u64; 600]>,
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub connect_errors: u64,
    pub other_errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            send_lag: new_histogram(),
            generator_lag: new_histogram(),
            status: Box::new([0; 600]),
            requests: 0,
            errors: 0,
            timeouts: 0,
            connect_errors: 0,
            other_errors: 0,
        }
    }
}

impl Recorder {
    pub fn record(&mut self, s: &Sample) {
        self.corrected.saturating_record(s.corrected_us.max(1));
        self.uncorrected.saturating_record(s.uncorrected_us.max(1));
        self.send_lag.saturating_record(s.send_lag_us);
        self.generator_lag.saturating_record(s.generator_lag_us);
        self.requests += 1;
        match s.outcome {
            Outcome::Status { code, ok } => {
                if let Some(n) = self.status.get_mut(code as usize) {
                    *n += 1;
                }
                if !ok {
                    self.errors += 1;
                }
            }
            Outcome::Timeout => {
                self.errors += 1;
                self.timeouts += 1;
            }
            Outcome::Connect => {
                self.errors += 1;
                self.connect_errors += 1;
            }
            Outcome::Other => {
                self.errors += 1;
                self.other_errors += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds and auto-resize on both sides: addition cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        let _ = self.send_lag.add(&other.send_lag);
        let _ = self.generator_lag.add(&other.generator_lag);
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        self.requests += other.requests;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.connect_errors += other.connect_errors;
        self.other_errors += other.other_errors;
    }
}

static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's recorders, by registry id (a few steps at most, newest last).
    static LOCAL: RefCell<Vec<(u64, Arc<Mutex<Recorder>>)>> = const { RefCell::new(Vec::new()) };
}

/// The recorders of one step: each thread records into its own, registered here on first use.
pub struct Registry {
    id: u64,
    recorders: Mutex<Vec<Arc<Mutex<Recorder>>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            recorders: Mutex::new(Vec::new()),
        }
    }
}

impl Registry {
    /// Records into the calling thread's recorder. The mutex is only ever contended by a
    /// progress snapshot, never by another recording thread.
    pub fn record(&self, sample: &Sample) {
        LOCAL.with(|cell| {
            let mut local = cell.borrow_mut();
            let at = match local.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    let r = Arc::new(Mutex::new(Recorder::default()));
                    self.recorders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.clone());
                    if local.len() >= 4 {
                        local.remove(0);
                    }
                    local.push((self.id, r));
                    local.len() - 1
                }
            };
            local[at]
                .1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(sample);
        });
    }

    /// All threads' recorders merged.
    pub fn snapshot(&self) -> Recorder {
        let mut total = Recorder::default();
        let recorders = self
            .recorders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for r in recorders {
            total.merge(&r.lock().unwrap_or_else(|e| e.into_inner()));
        }
        total
    }

    /// Requests recorded so far and the corrected p99 (µs), for progress lines.
    pub fn progress(&self) -> (u64, u64, u64) {
        let recorders = self
            .recorders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut h = new_histogram();
        let (mut n, mut errors) = (0, 0);
        for r in recorders {
            let r = r.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&r.corrected);
            n += r.requests;
            errors += r.errors;
        }
        (
            n,
            errors,
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            },
        )
    }
}

/// Writes `h` (microseconds) as an HdrHistogram percentile distribution (`.hgrm`, the text
/// `outputPercentileDistribution` prints), values in milliseconds as wrk2 writes them; the
/// HdrHistogram plotter reads it.
pub fn write_hgrm(h: &Histogram<u64>, path: &Path) -> io::Result<()> {
    let mut out = String::new();
    out.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / 1000.0;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let sub_buckets = 2u64.pow((2.0 * 10f64.powi(SIGFIG as i32)).log2().ceil() as u32);
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    let mut file = std::fs::File::create(path)?;
    file.write_all(out.as_bytes())?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let reg = Registry::default();
        for v in 1..=1000u64 {
            reg.record(&Sample {
                corrected_us: v,
                uncorrected_us: v / 2,
                send_lag_us: 0,
                generator_lag_us: 0,
                outcome: Outcome::Status {
                    code: 200,
                    ok: true,
                },
            });
        }
        let t = std::thread::scope(|s| {
            s.spawn(|| {
                reg.record(&Sample {
                    corrected_us: 5000,
                    uncorrected_us: 10,
                    send_lag_us: 1,
                    generator_lag_us: 1,
                    outcome: Outcome::Timeout,
                })
            })
            .join()
        });
        t.unwrap();
        let snap = reg.snapshot();
        assert_eq!(snap.requests, 1001);
        assert_eq!(snap.errors, 1);
        assert_eq!(snap.timeouts, 1);
        assert_eq!(snap.status[200], 1000);
        let p = Percentiles::of(&snap.corrected);
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!(p.max >= 4995, "{p:?}");
    }

    #[test]
    fn hgrm_has_the_percentile_table() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hgrm");
        write_hgrm(&h, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     ="));
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"), "{last_row}");
        assert!(text.contains("Total count    =        10000"));
    }
}
