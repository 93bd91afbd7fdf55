//! A synthetic knee run rendered into a directory: shared by the report and browser tests.

use std::path::Path;

use hdrhistogram::Histogram;
use linkr_loadgen::environment::{self, ServiceFacts};
use linkr_loadgen::profile;
use linkr_loadgen::report::{
    self, AllocRow, AllocationsView, DiffView, KneeView, Link, Percentiles, ProbeView, ProfileView,
    RecoveryView, Report, StepView,
};

pub const FOLDED: &str = "\
linkr;tokio::runtime::worker::run;hyper::proto::h1::dispatch::poll;linkr::routes::redirect::resolve;linkr::store::Store::resolve 420
linkr;tokio::runtime::worker::run;hyper::proto::h1::dispatch::poll;linkr::routes::redirect::resolve;http::header::HeaderMap::insert 130
linkr;tokio::runtime::worker::run;hyper::proto::h1::dispatch::poll;hyper::proto::h1::role::encode 260
linkr;tokio::runtime::worker::run;hyper::proto::h1::io::Buffered::poll_read;std::sys::net::recv 310
linkr;tokio::runtime::worker::run;linkr::metrics::track_request;prometheus::histogram::observe 90
linkr;tokio::runtime::worker::run;linkr::routes::links::create;linkr::store::Store::create;redb::commit 150
linkr;tokio::runtime::scheduler::park;epoll_wait 200
";

/// Latencies of a step at `rate` against a service of capacity `capacity`: a base service time,
/// with queueing growing as the rate approaches capacity (corrected) or hidden (uncorrected).
pub fn histograms(rate: f64, capacity: f64) -> (Histogram<u64>, Histogram<u64>) {
    let mut c = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let mut u = c.clone();
    let rho = rate / capacity;
    let queue = if rho < 0.99 {
        0.2 * rho / (1.0 - rho)
    } else {
        20.0 + 400.0 * (rho - 0.99)
    };
    let n = 20_000u64;
    for i in 0..n {
        let q = (i as f64 + 0.5) / n as f64;
        let tail = -(1.0 - q).ln();
        let service = 100.0 + 60.0 * tail;
        let corrected = service * (1.0 + queue * tail);
        let uncorrected = service * (1.0 + queue.min(3.0) * tail * 0.5);
        c.record(corrected as u64).unwrap();
        u.record(uncorrected as u64).unwrap();
    }
    (c, u)
}

/// Probes after a step that did not pass: back at the second probe, or (after step 5) never.
pub fn recovery(i: usize) -> RecoveryView {
    let probe = |quiet_s: f64, p99_us: u64| ProbeView {
        rate: 100.0,
        quiet_s,
        p99_us,
        errors: 0,
        requests: 100,
        recovered: p99_us <= 2_500,
    };
    let recovered = i != 4;
    RecoveryView {
        limit_us: 2_500,
        recovered,
        probes: if recovered {
            vec![probe(0.25, 31_000), probe(0.5, 1_200)]
        } else {
            vec![probe(0.25, 31_000), probe(0.5, 9_000), probe(1.0, 4_000)]
        },
    }
}

/// Writes a complete synthetic report (index.html, flamegraphs, folded stacks) into `dir`.
pub fn write_synthetic_report(dir: &Path) -> Report {
    std::fs::create_dir_all(dir).unwrap();
    let capacity = 21_000.0;
    let slo = 10_000u64;
    let rates = [
        2_000.0, 4_000.0, 8_000.0, 16_000.0, 32_000.0, 22_600.0, 19_000.0, 20_700.0, 21_700.0,
    ];
    let mut steps = Vec::new();
    let mut knee: Option<(usize, f64, Histogram<u64>, Histogram<u64>)> = None;
    for (i, rate) in rates.iter().enumerate() {
        let (c, u) = histograms(*rate, capacity);
        let pc = Percentiles::of(&c);
        // the step at 32,000 req/s is the generator's: inconclusive
        let inconclusive = *rate == 32_000.0;
        let pass = pc.p99 <= slo && !inconclusive;
        let achieved = if *rate > capacity {
            capacity * 0.97
        } else {
            rate * 0.9995
        };
        if pass && knee.as_ref().is_none_or(|k| *rate > k.1) {
            knee = Some((i + 1, *rate, c.clone(), u.clone()));
        }
        steps.push(StepView {
            index: i + 1,
            rate_target: *rate,
            rate_achieved: achieved,
            requests: (achieved * 8.0) as u64,
            errors: if *rate > capacity { 12 } else { 0 },
            status: vec![
                ("201".into(), (achieved * 0.4) as u64),
                ("302".into(), (achieved * 7.2) as u64),
            ],
            corrected: pc,
            uncorrected: Percentiles::of(&u),
            generator_saturated: inconclusive,
            generator_cpu: Some(0.4 + 0.5 * (*rate / rates.last().unwrap()).min(1.0)),
            service_cpu: Some((*rate / capacity).min(0.99)),
            pass,
            inconclusive,
            reasons: if pass {
                vec![format!("p99 {} <= 10 ms", report::fmt_us(pc.p99))]
            } else {
                vec![format!(
                    "p99 {} > SLO 10 ms <script>alert(1)</script>",
                    report::fmt_us(pc.p99)
                )]
            },
            hgrm: format!("step-{:02}-{}.hgrm", i + 1, *rate as u64),
            hgrm_uncorrected: format!("step-{:02}-{}.uncorrected.hgrm", i + 1, *rate as u64),
            goose_report: Some(format!("goose/step-{:02}-{}.html", i + 1, *rate as u64)),
            recovery: (!pass).then(|| recovery(i)),
            workers: Vec::new(),
        });
    }
    let (knee_index, knee_rate, kc, ku) = knee.expect("a synthetic step passes");

    profile::render_flamegraph(
        FOLDED,
        "linkr CPU at the knee: mixed",
        &dir.join("flamegraph.svg"),
    )
    .unwrap();
    std::fs::write(dir.join("cpu.folded"), FOLDED).unwrap();
    let baseline = dir.join("baseline.folded");
    std::fs::write(
        &baseline,
        FOLDED.replace(" 420", " 300").replace(" 260", " 330"),
    )
    .unwrap();
    profile::render_diff_flamegraph(
        &baseline,
        FOLDED,
        "against baseline",
        &dir.join("flamegraph-diff.svg"),
    )
    .unwrap();

    let report = Report {
        scenario: "mixed".into(),
        target: "http://127.0.0.1:8080/?q=<b>&x=\"y\"".into(),
        generator: Some("client lean, engine hyper-per-core".into()),
        generated_unix: 1_763_800_000,
        slo_p99_us: slo,
        min_achieved_ratio: 0.99,
        max_error_ratio: 0.001,
        knee: Some(KneeView {
            step_index: knee_index,
            rate: knee_rate,
            rate_achieved: knee_rate * 0.9995,
            p99_us: Percentiles::of(&kc).p99,
            p99_uncorrected_us: Percentiles::of(&ku).p99,
            distribution: report::quantile_points(&kc, &ku),
        }),
        steps,
        bound: "service".into(),
        bound_evidence: vec![
            "The lowest failing step was step 9 at 21,700 req/s: p99 14 ms > SLO 10 ms.".into(),
            "The generator kept its schedule (not flagged saturated).".into(),
        ],
        search_notes: vec![
            "Converged: the lowest failing rate is within 4.8% of the knee (target 5%).".into(),
        ],
        profile: ProfileView::Captured {
            seconds: 5,
            rate: knee_rate,
            flamegraph: "flamegraph.svg".into(),
            folded: Some("cpu.folded".into()),
            pprof: Some("cpu.pb.gz".into()),
            diff: Some(DiffView {
                flamegraph: "flamegraph-diff.svg".into(),
                baseline: "profiles/baseline/mixed.folded".into(),
            }),
            notes: vec!["1560 samples in the folded capture.".into()],
        },
        allocations: AllocationsView {
            rows: vec![
                AllocRow {
                    route: "/{code}".into(),
                    requests: 180_000.0,
                    allocs_per_request: Some(0.0),
                    bytes_per_request: Some(0.0),
                },
                AllocRow {
                    route: "/v1/links".into(),
                    requests: 10_000.0,
                    allocs_per_request: Some(14.2),
                    bytes_per_request: Some(2210.0),
                },
            ],
            source: "synthetic".into(),
            note: None,
        },
        environment: environment::collect(&ServiceFacts::default()),
        goose_reports: vec![Link {
            label: "step 1".into(),
            href: "goose/step-01-2000.html".into(),
        }],
        bench_report: Some("../bench/index.html".into()),
        duration_s: 118.0,
    };
    report::write_html(dir, &report).unwrap();
    report
}
