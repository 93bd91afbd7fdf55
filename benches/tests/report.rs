//! `bench-report`, run as scripts/bench.sh runs it, on result files in the shapes criterion
//! 0.8 and gungraun 0.20 write: the table, the verdicts and exit codes, the target ratios,
//! the HTML page and the instruction-count gate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_bench-report");

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(args)
        .output()
        .expect("run bench-report");
    (
        status.code().expect("exit code"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn estimate(point: f64, lo: f64, hi: f64) -> serde_json::Value {
    json!({
        "confidence_interval": {"confidence_level": 0.95, "lower_bound": lo, "upper_bound": hi},
        "point_estimate": point,
        "standard_error": (hi - lo) / 4.0,
    })
}

fn write(path: &Path, value: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

/// One bench's results as criterion writes them: `new/benchmark.json`, `new/estimates.json`
/// (time in ns), and with `change` (fractions, e.g. 0.2 = +20%) `change/estimates.json`.
fn bench(criterion: &Path, id: &str, ns: (f64, f64, f64), change: Option<(f64, f64, f64)>) {
    let (group, function) = id.split_once('/').unwrap();
    let dir = criterion.join(group).join(function.replace('/', "_"));
    write(
        &dir.join("new/benchmark.json"),
        &json!({
            "group_id": group, "function_id": function, "value_str": null,
            "throughput": {"Elements": 1}, "full_id": id,
            "directory_name": format!("{group}/{}", function.replace('/', "_")), "title": id,
        }),
    );
    let e = estimate(ns.0, ns.1, ns.2);
    write(
        &dir.join("new/estimates.json"),
        &json!({"mean": e, "median": e, "median_abs_dev": estimate(1.0, 0.5, 1.5),
                "slope": e, "std_dev": estimate(1.0, 0.5, 1.5)}),
    );
    if let Some((p, lo, hi)) = change {
        let c = estimate(p, lo, hi);
        write(
            &dir.join("change/estimates.json"),
            &json!({"mean": c, "median": c}),
        );
    }
}

fn allocs(criterion: &Path, id: &str, per_iter: f64, bytes: f64) {
    let name = linkr_benches::support::allocs_file_name(id);
    write(
        &criterion.join("allocs").join(name),
        &json!({"id": id, "allocs_per_iter": per_iter, "bytes_per_iter": bytes, "iters": 1000}),
    );
}

struct Lab {
    _dir: tempfile::TempDir,
    criterion: PathBuf,
    html: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let criterion = dir.path().join("criterion");
        let html = dir.path().join("reports/bench/index.html");
        Lab {
            _dir: dir,
            criterion,
            html,
        }
    }

    fn table(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "table",
            "--criterion-dir",
            self.criterion.to_str().unwrap(),
            "--html",
            self.html.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn line_of<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{out}"))
}

#[test]
fn a_significant_regression_beyond_the_threshold_fails_the_run_and_is_named() {
    let lab = Lab::new();
    bench(
        &lab.criterion,
        "codes/generate",
        (60.0, 58.0, 62.0),
        Some((0.20, 0.15, 0.25)),
    );
    bench(
        &lab.criterion,
        "codes/parse",
        (30.0, 29.0, 31.0),
        Some((-0.01, -0.03, 0.01)),
    );
    let (code, out, err) = lab.table(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("REGRESSION codes/generate: +20.00% (95% CI +15.00%..+25.00%) > 10%"),
        "{out}"
    );
    assert!(line_of(&out, "codes/generate").contains("regressed"));
    assert!(line_of(&out, "codes/parse").contains("no change"));
    assert!(!out.contains("REGRESSION codes/parse"));

    // The same results pass with a looser threshold, and in report-only mode.
    let (code, out, _) = lab.table(&["--max-regression", "30"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no significant regression beyond 30%"),
        "{out}"
    );
    let (code, _, _) = lab.table(&["--report-only"]);
    assert_eq!(code, 0);
}

#[test]
fn a_large_change_whose_interval_crosses_the_noise_is_not_a_regression() {
    let lab = Lab::new();
    bench(
        &lab.criterion,
        "pool/vec",
        (20.0, 15.0, 25.0),
        Some((0.25, -0.05, 0.55)),
    );
    let (code, out, _) = lab.table(&[]);
    assert_eq!(code, 0, "{out}");
    let row = line_of(&out, "pool/vec");
    assert!(
        row.contains("+25.00%") && row.contains("no change"),
        "{row}"
    );
}

#[test]
fn allocations_are_shown_beside_times_in_the_table_and_the_page() {
    let lab = Lab::new();
    bench(
        &lab.criterion,
        "store/resolve/hit",
        (40.0, 39.0, 41.0),
        None,
    );
    bench(
        &lab.criterion,
        "pool/fresh_bytesmut",
        (26.0, 25.0, 27.0),
        None,
    );
    allocs(&lab.criterion, "store/resolve/hit", 0.0, 0.0);
    allocs(&lab.criterion, "pool/fresh_bytesmut", 2.0, 320.0);
    let (code, out, err) = lab.table(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let cells = |id: &str| -> Vec<String> {
        line_of(&out, id)
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        cells("store/resolve/hit"),
        ["store/resolve/hit", "40.00 ns", "-", "-", "-", "0", "0"]
    );
    assert_eq!(
        cells("pool/fresh_bytesmut"),
        ["pool/fresh_bytesmut", "26.00 ns", "-", "-", "-", "2", "320"]
    );

    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(
        html.contains(
            "<td>pool/fresh_bytesmut</td><td>26.00 ns</td><td class=\"muted\">25.00 ns – 27.00 ns</td>"
        ),
        "{html}"
    );
    assert!(html.contains("<td class=\"\">2</td><td>320</td>"), "{html}");
    assert!(
        html.contains("<td class=\"zero\">0</td><td>0</td>"),
        "{html}"
    );
}

#[test]
fn the_page_links_criterions_own_reports_relative_to_itself() {
    let lab = Lab::new();
    bench(&lab.criterion, "codes/generate", (50.0, 49.0, 51.0), None);
    let report = lab.criterion.join("codes/generate/report/index.html");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    std::fs::write(&report, "<html></html>").unwrap();
    std::fs::create_dir_all(lab.criterion.join("report")).unwrap();
    std::fs::write(lab.criterion.join("report/index.html"), "<html></html>").unwrap();
    let (code, out, _) = lab.table(&[]);
    assert_eq!(code, 0, "{out}");
    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(
        html.contains(
            "<a href=\"../../criterion/codes/generate/report/index.html\">codes/generate</a>"
        ),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"../../criterion/report/index.html\">"),
        "{html}"
    );
}

#[test]
fn target_ratios_use_both_intervals_and_fail_only_when_asked() {
    let lab = Lab::new();
    for (id, ns) in [
        // Zero-copy at 0.5x of to_string + copy: met.
        ("encode/link_json/linkr_zero_copy", (50.0, 49.0, 51.0)),
        ("encode/link_json/to_string_copy", (100.0, 99.0, 101.0)),
        // Uncontended bucket 1.02x of governor, intervals overlapping: a tie, which passes.
        ("token_bucket/uncontended/linkr", (10.2, 9.9, 10.5)),
        ("token_bucket/uncontended/governor", (10.0, 9.8, 10.2)),
        // At a fixed instant 1.5x, wholly above 1x: missed.
        ("token_bucket/no_clock/linkr", (9.0, 8.9, 9.1)),
        ("token_bucket/no_clock/governor", (6.0, 5.9, 6.1)),
    ] {
        bench(&lab.criterion, id, ns, None);
    }
    // The whole redirect allocates more than axum's fixed 302: missed.
    for (id, n) in [
        ("request/redirect/linkr", 14.0),
        ("request/redirect/axum_fixed_302", 13.0),
    ] {
        bench(&lab.criterion, id, (1000.0, 990.0, 1010.0), None);
        allocs(&lab.criterion, id, n, 1000.0);
    }

    let (code, out, _) = lab.table(&[]);
    assert_eq!(code, 0, "targets only fail with --check-targets\n{out}");
    let target = |what: &str| {
        out.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no target {what} in\n{out}"))
            .to_owned()
    };
    let zero_copy = target("zero-copy link JSON");
    assert!(zero_copy.starts_with("  [PASS]"), "{zero_copy}");
    assert!(
        zero_copy.contains("0.500x, 95% CI 0.485..0.515x"),
        "{zero_copy}"
    );
    let tie = target("token bucket check, uncontended");
    assert!(
        tie.starts_with("  [PASS]") && tie.contains("1.020x"),
        "{tie}"
    );
    let slower = target("no clock read");
    assert!(
        slower.starts_with("  [MISS]") && slower.contains("1.500x"),
        "{slower}"
    );
    let redirect = target("whole in-process redirect");
    assert!(
        redirect.starts_with("  [MISS]") && redirect.contains("14 vs 13"),
        "{redirect}"
    );
    assert!(target("2 threads").starts_with("  [----]"));

    let (code, out, _) = lab.table(&["--check-targets"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a target was missed"), "{out}");
    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(html.contains("class=\"miss\">missed</td>"), "{html}");
}

#[test]
fn only_benches_measured_since_the_marker_are_listed() {
    let lab = Lab::new();
    bench(&lab.criterion, "codes/generate", (50.0, 49.0, 51.0), None);
    let marker = lab.criterion.join(".run-start");
    std::fs::write(&marker, "").unwrap();
    bench(&lab.criterion, "codes/parse", (30.0, 29.0, 31.0), None);
    // Mtimes clearly either side of the marker's, whatever the filesystem's resolution.
    let marked = std::fs::metadata(&marker).unwrap().modified().unwrap();
    let set_mtime = |bench_dir: &str, at: std::time::SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(lab.criterion.join(bench_dir).join("new/estimates.json"))
            .unwrap()
            .set_modified(at)
            .unwrap();
    };
    set_mtime("codes/parse", marked + std::time::Duration::from_secs(2));
    set_mtime(
        "codes/generate",
        marked - std::time::Duration::from_secs(60),
    );

    let (code, out, _) = lab.table(&["--since", marker.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("codes/parse"), "{out}");
    assert!(!out.contains("codes/generate"), "{out}");
}

#[test]
fn no_results_and_bad_flags_are_usage_errors() {
    let lab = Lab::new();
    let (code, _, err) = lab.table(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("no criterion results under"), "{err}");
    let (code, _, err) = run(&["table", "--max-regression", "ten"]);
    assert_eq!(code, 2);
    assert!(err.contains("--max-regression: not a number: ten"), "{err}");
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected a command"), "{err}");
}

#[test]
fn without_a_directory_given_results_are_looked_for_in_cargos_target_dir() {
    // A package whose target dir does not exist yet (so has no CACHEDIR.TAG): bench-report, run
    // from it as `cargo run` would, looks where criterion writes, `cargo metadata`'s target dir,
    // not in the target dir its own executable happens to live in.
    let package = tempfile::tempdir().unwrap();
    std::fs::write(
        package.path().join("Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir(package.path().join("src")).unwrap();
    std::fs::write(package.path().join("src/lib.rs"), "").unwrap();
    let output = Command::new(BIN)
        .arg("table")
        .current_dir(package.path())
        .env_remove("CRITERION_HOME")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO", env!("CARGO"))
        .output()
        .unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{err}");
    let expected = package
        .path()
        .canonicalize()
        .unwrap()
        .join("target/criterion");
    assert!(
        err.contains(&format!(
            "no criterion results under {}",
            expected.display()
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------- instruction-count gate

/// A gungraun `summary.json` for one library benchmark with callgrind's total `Ir`.
fn summary(gungraun: &Path, module: &str, id: &str, ir: u64) {
    let metrics = json!({"Ir": {"values": {"new": ir}}, "Dr": {"values": {"new": ir / 3}}});
    write(
        &gungraun
            .join("linkr-benches/instructions")
            .join(module.replace("::", "/"))
            .join(format!("{id}/summary.json")),
        &json!({
            "version": "7", "kind": "LibraryBenchmark", "id": id,
            "module_path": module, "baselines": [null, null],
            "profiles": [{
                "tool": "Callgrind",
                "data": {"parts": [{"metrics": metrics}], "total": {"metrics": metrics, "regressions": []}},
            }],
        }),
    );
}

fn gate(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let gungraun = dir.join("gungraun");
    let baseline = dir.join("baseline/instructions.json");
    let report = dir.join("reports/instructions.json");
    let mut args = vec![
        "gate",
        "--gungraun-dir",
        gungraun.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn the_gate_fails_on_a_rise_beyond_three_percent_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let gungraun = dir.path().join("gungraun");
    summary(
        &gungraun,
        "instructions::encode::link_json",
        "zero_copy",
        1000,
    );
    summary(&gungraun, "instructions::rate_limit::check", "allow", 50);

    let (code, out, err) = gate(dir.path(), &["--update"]);
    assert_eq!(code, 0, "{out}{err}");
    let baseline: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("baseline/instructions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        baseline["instructions"],
        json!({"instructions::encode::link_json.zero_copy": 1000, "instructions::rate_limit::check.allow": 50})
    );

    // +2.9% is within the limit; +4% of another is not.
    summary(
        &gungraun,
        "instructions::encode::link_json",
        "zero_copy",
        1029,
    );
    summary(&gungraun, "instructions::rate_limit::check", "allow", 52);
    let (code, out, _) = gate(dir.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL instructions::rate_limit::check.allow: 50 -> 52 instructions (+4.00%, limit +3%)"
        ),
        "{out}"
    );
    assert!(!out.contains("FAIL instructions::encode"), "{out}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("reports/instructions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["pass"], json!(false));

    // Getting cheaper passes, and a looser limit lets the rise through.
    summary(&gungraun, "instructions::rate_limit::check", "allow", 40);
    let (code, out, _) = gate(dir.path(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-20.00%"), "{out}");
    summary(&gungraun, "instructions::rate_limit::check", "allow", 52);
    let (code, _, _) = gate(dir.path(), &["--max-increase", "5"]);
    assert_eq!(code, 0);
}

#[test]
fn the_gate_without_results_or_baseline_says_how_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = gate(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no gungraun summaries under"), "{err}");
    summary(
        &dir.path().join("gungraun"),
        "instructions::codes",
        "parse",
        300,
    );
    let (code, _, err) = gate(dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("scripts/bench.sh gate --update"), "{err}");
}

#[test]
fn allocation_file_names_are_flat_and_unique() {
    assert_eq!(
        linkr_benches::support::allocs_file_name("encode/link_json/linkr_zero_copy"),
        "encode__link_json__linkr_zero_copy.json"
    );
    assert_ne!(
        linkr_benches::support::allocs_file_name("pool/contended_x2/object_pool"),
        linkr_benches::support::allocs_file_name("pool/contended_x2_object_pool")
    );
}

#[test]
fn a_significant_slowdown_within_the_threshold_is_slower_not_regressed() {
    let lab = Lab::new();
    // +2%, interval +1.5%..+2.5%: significant (beyond the 1% noise) but within the 10% that fails.
    bench(
        &lab.criterion,
        "codes/generate",
        (51.0, 50.5, 51.5),
        Some((0.02, 0.015, 0.025)),
    );
    bench(
        &lab.criterion,
        "codes/parse",
        (30.0, 29.0, 31.0),
        Some((0.20, 0.15, 0.25)),
    );
    let (code, out, _) = lab.table(&["--max-regression", "30"]);
    assert_eq!(code, 0, "{out}");
    assert!(line_of(&out, "codes/generate").contains("slower"), "{out}");
    assert!(line_of(&out, "codes/parse").contains("slower"), "{out}");
    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(html.contains("<td class=\"slower\">slower</td>"), "{html}");
    assert!(!html.contains("<td class=\"regressed\">"), "{html}");

    // Beyond the threshold the same +20% is regressed, in red, and fails the run.
    let (code, out, _) = lab.table(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(line_of(&out, "codes/parse").contains("regressed"), "{out}");
    assert!(line_of(&out, "codes/generate").contains("slower"), "{out}");
    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(
        html.contains("<td class=\"regressed\">regressed</td>"),
        "{html}"
    );
}

#[test]
fn a_criterion_report_left_from_an_earlier_run_is_not_linked() {
    let lab = Lab::new();
    bench(&lab.criterion, "codes/generate", (50.0, 49.0, 51.0), None);
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for report in ["codes/generate/report/index.html", "report/index.html"] {
        let report = lab.criterion.join(report);
        std::fs::create_dir_all(report.parent().unwrap()).unwrap();
        std::fs::write(&report, "<html></html>").unwrap();
        let file = std::fs::File::options().write(true).open(&report).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    }
    let (code, out, _) = lab.table(&[]);
    assert_eq!(code, 0, "{out}");
    let html = std::fs::read_to_string(&lab.html).unwrap();
    assert!(
        !html.contains("<a href=\"../../criterion/report/index.html\">"),
        "{html}"
    );
    assert!(html.contains("left from an earlier run"), "{html}");
    assert!(html.contains("<td>codes/generate</td>"), "{html}");
}
