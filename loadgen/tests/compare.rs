//! `loadgen compare`: run results and knee summaries, exit codes 0, 1 and 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

fn write(dir: &Path, name: &str, v: serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

fn run_json(rate: f64, p99: u64) -> serde_json::Value {
    json!({"scenario":"mixed","target":"http://x","rate_target":rate,"rate_achieved":rate,"duration_s":10.0,
           "requests":10,"errors":0,"status":{"302":10},
           "latency_us":{"p50":10,"p90":20,"p99":p99,"p999":p99,"max":p99,"mean":12.0},
           "latency_uncorrected_us":{"p50":10,"p90":20,"p99":p99,"p999":p99,"max":p99,"mean":12.0},
           "generator_saturated":false})
}

fn knee_json(rate: f64, p99: u64) -> serde_json::Value {
    json!({"knee":{"rate":rate,"p99_us":p99},"slo_p99_us":10000,"steps":[run_json(rate, p99)],"bound":"service"})
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn knee_summaries_compare_rate_and_p99() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "base.json", knee_json(10_000.0, 4_000));
    let same = write(dir.path(), "same.json", knee_json(9_800.0, 4_200));
    let slower = write(dir.path(), "slower.json", knee_json(8_000.0, 4_000));

    let o = loadgen(&["compare", s(&base), s(&same)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("knee rate") && out.contains("p99"), "{out}");
    assert!(
        out.contains("10000.0/s") && out.contains("9800.0/s"),
        "{out}"
    );

    let o = loadgen(&["compare", s(&base), s(&slower)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("REGRESSION"));
    // A looser threshold accepts it.
    let o = loadgen(&["compare", s(&base), s(&slower), "--max-regression", "25"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn run_results_compare_and_p99_growth_is_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "a.json", run_json(1000.0, 2_000));
    let worse = write(dir.path(), "b.json", run_json(1000.0, 2_600));
    assert_eq!(
        loadgen(&["compare", s(&base), s(&base)]).status.code(),
        Some(0)
    );
    let o = loadgen(&["compare", s(&base), s(&worse), "--max-regression", "20"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("+30.0%"));
}

#[test]
fn a_better_knee_is_not_flagged_for_its_p99_at_a_higher_rate() {
    // the case: knee 30,600 -> 47,300 req/s; p99 at the knees 4.0 -> 8.8 ms, but at the
    // base's knee the new run's p99 (between its steps at 16,000 and 32,000) is lower
    let dir = tempfile::tempdir().unwrap();
    let with_steps = |rate: f64, p99: u64, steps: Vec<serde_json::Value>| json!({"knee":{"rate":rate,"p99_us":p99},"slo_p99_us":10000,"steps":steps,"bound":"generator"});
    let base = write(
        dir.path(),
        "base.json",
        with_steps(
            30_600.0,
            4_000,
            vec![
                run_json(16_000.0, 900),
                run_json(30_600.0, 4_000),
                run_json(32_000.0, 25_000),
            ],
        ),
    );
    let new = write(
        dir.path(),
        "new.json",
        with_steps(
            47_300.0,
            8_800,
            vec![
                run_json(16_000.0, 700),
                run_json(32_000.0, 1_900),
                run_json(47_300.0, 8_800),
            ],
        ),
    );
    let o = loadgen(&["compare", s(&base), s(&new)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("REGRESSION"), "{out}");
    assert!(out.contains("p99 at 30600.0/s"), "{out}");
    assert!(out.contains("4.000 ms (at 30600.0/s)"), "{out}");
    assert!(out.contains("interp. 16000-32000"), "{out}");
    // the reverse is a regression of the knee rate
    let o = loadgen(&["compare", s(&new), s(&base)]);
    assert_eq!(o.status.code(), Some(1));

    // a negative threshold demands an improvement: this one has it, a run against itself not
    let o = loadgen(&["compare", s(&base), s(&new), "--max-regression", "-5"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = loadgen(&["compare", s(&base), s(&base), "--max-regression", "-5"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bad_inputs_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = write(dir.path(), "run.json", run_json(1.0, 1));
    let knee = write(dir.path(), "knee.json", knee_json(1.0, 1));
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "not json").unwrap();
    // the files: one line naming the problem
    for args in [
        vec!["compare", s(&run), s(&knee)],
        vec!["compare", s(&run), s(&junk)],
        vec!["compare", s(&run), "/nonexistent.json"],
    ] {
        let o = loadgen(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
    }
    // the command line: clap's message with the usage
    for (args, says) in [
        (vec!["compare", s(&run)], "<NEW.json>"),
        (
            vec!["compare", s(&run), s(&run), "--max-regression", "lots"],
            "invalid percentage",
        ),
    ] {
        let o = loadgen(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says) && err.contains("--help"), "{err}");
    }
}
