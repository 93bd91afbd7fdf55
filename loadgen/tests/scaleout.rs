//! Load beyond one core: segments of one schedule, their exact merge, `--workers N`.
//!
//! The runs use the built `loadgen` (a debug build) as separate processes against an in-test
//! loopback server, at a few hundred to a couple of thousand requests a second for 2 s.

mod knee_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::Router;
use axum::routing::get;
use linkr_loadgen::merge::{self, SegmentFile, TransportCounts};
use linkr_loadgen::schedule::{Arrival, Schedule};
use linkr_loadgen::segment::{Histograms, SegmentInfo, encode, unix_ms_now};
use linkr_loadgen::stats::new_histogram;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env_remove("LINKR_API_KEY")
        .output()
        .unwrap()
}

fn server() -> String {
    let addr = knee_support::serve(
        "scaleout-server",
        Router::new().route("/ok", get(|| async { "ok" })),
    );
    format!("http://{addr}/ok")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn info(index: u64, count: u64, seed: u64) -> SegmentInfo {
    SegmentInfo {
        index,
        count,
        seed,
        start_at_unix_ms: Some(1_700_000_000_000),
        rate: 1000.0,
        duration_s: 2.0,
        arrival: "constant".into(),
        scenario: "get".into(),
        target: "http://127.0.0.1:1/ok".into(),
        schedule_len: 2000,
        slots: 1000,
    }
}

/// A segment's result from its corrected latencies (the other histograms from them too).
fn segment(info: SegmentInfo, values: &[u64]) -> SegmentFile {
    let mut h = new_histogram();
    for &v in values {
        h.record(v).unwrap();
    }
    let e = encode(&h);
    SegmentFile {
        client: "lean".into(),
        engine: "lean-hyper-h1/current-thread x1".into(),
        rate_target: 500.0,
        rate_achieved: values.len() as f64 / 2.0,
        requests: values.len() as u64,
        errors: 0,
        status: [("200".to_string(), values.len() as u64)].into(),
        generator_saturated: false,
        saturation: None,
        transport_errors: TransportCounts {
            timeout: 0,
            connect: 0,
            other: 0,
        },
        users: 32,
        max_in_flight: 3,
        pool_exhausted: false,
        missed: 0,
        generator_cpu: 0.1,
        goose_metrics: false,
        segment: info,
        histograms: Histograms {
            corrected: e.clone(),
            uncorrected: e.clone(),
            send_lag: e.clone(),
            generator_lag: e.clone(),
            runtime_lag: e,
            read_delay: None,
        },
    }
}

#[test]
fn merging_two_halves_gives_the_whole_histogram() {
    // A recorded-like sample: a wide, skewed spread of latencies (µs).
    let sample: Vec<u64> = (0..20_000u64)
        .map(|i| 50 + (i * 7919) % 3000 + if i % 97 == 0 { 250_000 + i } else { 0 })
        .collect();
    let mut whole = new_histogram();
    for &v in &sample {
        whole.record(v).unwrap();
    }
    let a: Vec<u64> = sample.iter().step_by(2).copied().collect();
    let b: Vec<u64> = sample.iter().skip(1).step_by(2).copied().collect();
    let parts = vec![
        ("a".to_string(), segment(info(0, 2, 7), &a)),
        ("b".to_string(), segment(info(1, 2, 7), &b)),
    ];
    let merged = merge::merge(&parts).unwrap();
    assert_eq!(merged.result.corrected, whole);
    assert_eq!(merged.result.requests, 20_000);
    assert_eq!(merged.result.latency_us.p99, whole.value_at_quantile(0.99));
    assert_eq!(merged.result.latency_us.max, whole.max());
    assert_eq!(merged.result.status["200"], 20_000);
    assert_eq!(merged.workers.len(), 2);
    assert_eq!(merged.result.rate_target, 1000.0);
}

/// The read delays (arrival in the socket to the read) merge like the latencies, and only when
/// every segment has them: a segment without them (hyper's or reqwest's connection) makes the
/// merged figure null rather than a part passed off as the whole.
#[test]
fn read_delays_merge_only_when_every_segment_has_them() {
    let delays = |values: &[u64]| {
        let mut h = new_histogram();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    };
    let (a, b) = (delays(&[5, 7, 9, 2_000]), delays(&[6, 8, 40_000]));
    let mut whole = a.clone();
    whole.add(&b).unwrap();
    let with = |index, h: Option<&hdrhistogram::Histogram<u64>>| {
        let mut s = segment(info(index, 2, 7), &[100, 200, 300]);
        s.histograms.read_delay = h.map(encode);
        (format!("s{index}"), s)
    };
    let merged = merge::merge(&[with(0, Some(&a)), with(1, Some(&b))]).unwrap();
    assert_eq!(merged.result.read_delay.as_ref(), Some(&whole));
    assert_eq!(
        merged.result.read_delay_us.map(|d| d.max),
        Some(whole.max())
    );
    let partial = merge::merge(&[with(0, Some(&a)), with(1, None)]).unwrap();
    assert!(partial.result.read_delay_us.is_none());
    assert!(partial.result.read_delay.is_none());
}

fn write_segment(dir: &Path, name: &str, s: &SegmentFile) -> PathBuf {
    // A segment file as `run --segment` writes it: the fields merge reads are enough.
    let h = &s.histograms;
    let v = serde_json::json!({
        "client": s.client, "engine": s.engine, "rate_target": s.rate_target,
        "rate_achieved": s.rate_achieved, "requests": s.requests, "errors": s.errors,
        "status": s.status, "generator_saturated": s.generator_saturated,
        "saturation": s.saturation,
        "transport_errors": {"timeout": 0, "connect": 0, "other": 0},
        "users": s.users, "max_in_flight": s.max_in_flight, "pool_exhausted": s.pool_exhausted,
        "missed": s.missed, "generator_cpu": s.generator_cpu, "goose_metrics": s.goose_metrics,
        "segment": s.segment,
        "histograms": {"corrected": h.corrected, "uncorrected": h.uncorrected,
            "send_lag": h.send_lag, "generator_lag": h.generator_lag,
            "runtime_lag": h.runtime_lag},
    });
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn merge_refuses_segments_that_do_not_belong_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vals = [100u64, 200, 300];
    let s0 = write_segment(d, "s0.json", &segment(info(0, 2, 7), &vals));
    let s1 = write_segment(d, "s1.json", &segment(info(1, 2, 7), &vals));
    let other_seed = write_segment(d, "seed.json", &segment(info(1, 2, 8), &vals));
    let other_rate = write_segment(
        d,
        "rate.json",
        &segment(
            SegmentInfo {
                rate: 2000.0,
                schedule_len: 4000,
                ..info(1, 2, 7)
            },
            &vals,
        ),
    );
    let out = d.join("merged.json");
    let out_s = out.to_str().unwrap();
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();

    let ok = loadgen(&["merge", &p(&s0), &p(&s1), "--json", out_s]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(json(&out)["requests"], 6);

    for (files, expect) in [
        (vec![p(&s0), p(&other_seed)], "seed 7 vs 8"),
        (vec![p(&s0), p(&other_rate)], "rate 1000 vs 2000"),
        (vec![p(&s0)], "segment(s) 1/2 missing"),
        (vec![p(&s0), p(&s0)], "segment 0/2 is doubled"),
        (vec![p(&s0), p(&s1), p(&s1)], "segment 1/2 is doubled"),
    ] {
        let mut args = vec!["merge".to_string()];
        args.extend(files.iter().cloned());
        args.extend([
            "--json".into(),
            d.join("refused.json").display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = loadgen(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{files:?}: {err}");
        assert!(
            err.contains("merge refused") && err.contains(expect),
            "{files:?}: {err}"
        );
        assert!(!d.join("refused.json").exists());
    }
}

#[test]
fn two_workers_send_every_arrival_and_segments_merge_to_the_same_form() {
    let target = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rate, duration) = ("1000", "2s");
    let expected_len =
        Schedule::new(Arrival::Constant, 1000.0, std::time::Duration::from_secs(2)).len();

    // --workers 2, pinned to the CPUs this test may use: every slot of the schedule sent, once.
    let cpus = linkr_loadgen::spawn::allowed_cpus()
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let workers_json = d.join("workers.json");
    let hgrm = d.join("workers.hgrm");
    let r = loadgen(&[
        "run",
        "--target",
        &target,
        "--scenario",
        "get",
        "--rate",
        rate,
        "--duration",
        duration,
        "--workers",
        "2",
        "--cpus",
        &cpus,
        "--json",
        workers_json.to_str().unwrap(),
        "--hgrm",
        hgrm.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let w = json(&workers_json);
    assert_eq!(w["requests"], expected_len, "{w}");
    assert_eq!(w["missed"], 0, "{w}");
    let achieved = w["rate_achieved"].as_f64().unwrap();
    assert!((achieved - 1000.0).abs() <= 10.0, "achieved {achieved}/s");
    let workers = w["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let per_worker: u64 = workers
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_worker, expected_len);
    assert!(stdout.contains("worker  target/s"), "{stdout}");
    assert!(
        std::fs::read_to_string(&hgrm)
            .unwrap()
            .contains("Total count")
    );

    // The same step as two segment processes started by hand, merged.
    let start = (unix_ms_now() + 1500).to_string();
    let segs: Vec<PathBuf> = (0..2).map(|i| d.join(format!("seg-{i}.json"))).collect();
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args([
                    "run",
                    "--target",
                    &target,
                    "--scenario",
                    "get",
                    "--rate",
                    rate,
                    "--duration",
                    duration,
                    "--segment",
                    &format!("{i}/2"),
                    "--start-at",
                    &start,
                    "--schedule-seed",
                    "42",
                    "--json",
                    segs[i].to_str().unwrap(),
                ])
                .env("LOADGEN_NO_PROGRESS", "1")
                .output_async()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seg0 = json(&segs[0]);
    assert!(seg0["histograms"]["corrected"].as_str().unwrap().len() > 10);
    assert_eq!(seg0["segment"]["index"], 0);
    let merged_json = d.join("merged.json");
    let m = loadgen(&[
        "merge",
        segs[0].to_str().unwrap(),
        segs[1].to_str().unwrap(),
        "--json",
        merged_json.to_str().unwrap(),
    ]);
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let merged = json(&merged_json);
    assert_eq!(
        keys(&merged),
        keys(&w),
        "merged segments and --workers 2 differ in form"
    );
    assert_eq!(merged["requests"], w["requests"]);
    assert_eq!(merged["workers"].as_array().unwrap().len(), 2);
    // The single-process form, plus the per-worker table.
    let mut single = keys(&seg0);
    single.remove("segment");
    single.remove("histograms");
    single.insert("workers".into());
    assert_eq!(single, keys(&merged));
}

/// `Command::spawn` with the output captured, for running processes side by side.
trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}
