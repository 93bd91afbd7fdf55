//! Tabulates criterion results with allocation counts, writes `reports/bench/index.html`,
//! checks the lab's target ratios, and gates instruction counts against committed baselines.
//!
//! ```text
//! bench-report table [--max-regression PCT] [--html FILE] [--check-targets]
//! bench-report gate  [--baseline FILE] [--max-increase PCT] [--update]
//! ```
//! Exit codes: 0 pass, 1 a regression (or a missed target with --check-targets), 2 usage/setup error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use linkr_benches::support::{AllocsPerIter, allocs_file_name, criterion_dir};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const USAGE: &str = "\
usage:
  bench-report table [--criterion-dir DIR] [--html FILE] [--max-regression PCT]
                     [--noise PCT] [--check-targets] [--report-only] [--since FILE]
                     [--title TEXT]
  bench-report gate  [--gungraun-dir DIR] [--baseline FILE] [--max-increase PCT]
                     [--update] [--json FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("table") => Args::parse(&args[1..]).and_then(|a| table(&a)),
        Some("gate") => Args::parse(&args[1..]).and_then(|a| gate(&a)),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(format!("expected a command\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("bench-report: {err}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Default)]
struct Args {
    criterion_dir: Option<PathBuf>,
    html: Option<PathBuf>,
    max_regression: Option<f64>,
    noise: Option<f64>,
    check_targets: bool,
    report_only: bool,
    since: Option<PathBuf>,
    title: Option<String>,
    gungraun_dir: Option<PathBuf>,
    baseline: Option<PathBuf>,
    max_increase: Option<f64>,
    update: bool,
    json: Option<PathBuf>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let pct = |v: String| {
                v.trim_end_matches('%')
                    .parse::<f64>()
                    .map_err(|_| format!("{flag}: not a number: {v}"))
            };
            match flag.as_str() {
                "--criterion-dir" => out.criterion_dir = Some(value()?.into()),
                "--html" => out.html = Some(value()?.into()),
                "--max-regression" => out.max_regression = Some(pct(value()?)?),
                "--noise" => out.noise = Some(pct(value()?)?),
                "--check-targets" => out.check_targets = true,
                "--report-only" => out.report_only = true,
                "--since" => out.since = Some(value()?.into()),
                "--title" => out.title = Some(value()?),
                "--gungraun-dir" => out.gungraun_dir = Some(value()?.into()),
                "--baseline" => out.baseline = Some(value()?.into()),
                "--max-increase" => out.max_increase = Some(pct(value()?)?),
                "--update" => out.update = true,
                "--json" => out.json = Some(value()?.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- criterion table

#[derive(Deserialize)]
struct BenchmarkJson {
    full_id: String,
    #[serde(default)]
    throughput: Option<BTreeMap<String, u64>>,
}

#[derive(Deserialize, Clone, Copy)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize, Clone, Copy)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    #[serde(default)]
    slope: Option<Estimate>,
}

#[derive(Deserialize)]
struct ChangeEstimates {
    mean: Estimate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Verdict {
    Regressed,
    Improved,
    NoChange,
}

#[derive(Serialize)]
struct Change {
    pct: f64,
    lo_pct: f64,
    hi_pct: f64,
    verdict: Verdict,
}

#[derive(Serialize)]
struct Row {
    id: String,
    report: PathBuf,
    time_ns: f64,
    lo_ns: f64,
    hi_ns: f64,
    throughput: Option<(String, u64)>,
    change: Option<Change>,
    allocs: Option<AllocsPerIter>,
}

impl Row {
    /// The estimates file of this run's results (`<bench>/new/estimates.json`).
    fn results(&self) -> PathBuf {
        let bench_dir = self.report.parent().and_then(Path::parent);
        bench_dir.map_or_else(PathBuf::new, |d| d.join("new/estimates.json"))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn find_bench_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if name == "report" || name == "allocs" {
            continue;
        }
        if name == "new" && path.join("benchmark.json").is_file() {
            out.push(dir.to_path_buf());
        } else {
            find_bench_dirs(&path, out);
        }
    }
}

/// Rows of the benches under `criterion`; with `since`, only those measured after it.
fn collect_rows(
    criterion: &Path,
    noise: f64,
    since: Option<SystemTime>,
) -> Result<Vec<Row>, String> {
    let mut dirs = Vec::new();
    find_bench_dirs(criterion, &mut dirs);
    let mut rows = Vec::new();
    for dir in dirs {
        if let Some(since) = since
            && modified(&dir.join("new/estimates.json")).is_none_or(|m| m < since)
        {
            continue;
        }
        let bench: BenchmarkJson = read_json(&dir.join("new/benchmark.json"))?;
        let estimates: Estimates = read_json(&dir.join("new/estimates.json"))?;
        let typical = estimates.slope.unwrap_or(estimates.mean);
        let change_file = dir.join("change/estimates.json");
        // A change file older than this run's estimates belongs to an earlier comparison.
        let fresh = match (
            modified(&change_file),
            modified(&dir.join("new/estimates.json")),
        ) {
            (Some(change), Some(new)) => change + std::time::Duration::from_secs(5) >= new,
            _ => false,
        };
        let change = if fresh {
            let c: ChangeEstimates = read_json(&change_file)?;
            let (pct, lo, hi) = (
                c.mean.point_estimate * 100.0,
                c.mean.confidence_interval.lower_bound * 100.0,
                c.mean.confidence_interval.upper_bound * 100.0,
            );
            let verdict = if lo > noise {
                Verdict::Regressed
            } else if hi < -noise {
                Verdict::Improved
            } else {
                Verdict::NoChange
            };
            Some(Change {
                pct,
                lo_pct: lo,
                hi_pct: hi,
                verdict,
            })
        } else {
            None
        };
        let allocs_file = criterion
            .join("allocs")
            .join(allocs_file_name(&bench.full_id));
        let allocs = read_json::<AllocsPerIter>(&allocs_file).ok();
        rows.push(Row {
            id: bench.full_id,
            report: dir.join("report/index.html"),
            time_ns: typical.point_estimate,
            lo_ns: typical.confidence_interval.lower_bound,
            hi_ns: typical.confidence_interval.upper_bound,
            throughput: bench.throughput.and_then(|t| t.into_iter().next()),
            change,
            allocs,
        });
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.2} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_allocs(a: &Option<AllocsPerIter>) -> (String, String) {
    match a {
        Some(a) => (
            trim_float(a.allocs_per_iter),
            format!("{:.0}", a.bytes_per_iter),
        ),
        None => ("-".into(), "-".into()),
    }
}

fn trim_float(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Whether a change fails the run: significantly slower and beyond `max_regression` percent.
fn fails(c: &Change, max_regression: f64) -> bool {
    c.verdict == Verdict::Regressed && c.pct > max_regression
}

/// Change, its interval and the verdict: `regressed` only for a change that fails the run; a
/// significant slowdown within the threshold is `slower`.
fn fmt_change(c: &Option<Change>, max_regression: f64) -> (String, String, String) {
    match c {
        Some(c) => (
            format!("{:+.2}%", c.pct),
            format!("[{:+.2}%, {:+.2}%]", c.lo_pct, c.hi_pct),
            match c.verdict {
                Verdict::Regressed if fails(c, max_regression) => "regressed".into(),
                Verdict::Regressed => "slower".into(),
                Verdict::Improved => "improved".into(),
                Verdict::NoChange => "no change".into(),
            },
        ),
        None => ("-".into(), "-".into(), "-".into()),
    }
}

/// A ratio the lab promises, checked on one run's numbers.
#[derive(Serialize)]
struct TargetCheck {
    what: String,
    measured: String,
    target: String,
    pass: Option<bool>,
}

fn targets(rows: &[Row]) -> Vec<TargetCheck> {
    let by_id: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let allocs = |id: &str| {
        by_id
            .get(id)
            .and_then(|r| r.allocs.as_ref())
            .map(|a| a.allocs_per_iter)
    };
    // A ratio passes unless it is significantly above `max`: its interval (from the two
    // benches' 95% confidence intervals) lies wholly above. A tie within noise passes, and
    // the interval is printed so the reader sees how close it was.
    let ratio = |what: &str, a: &str, b: &str, max: f64| {
        let value = by_id
            .get(a)
            .zip(by_id.get(b))
            .map(|(a, b)| (a.time_ns / b.time_ns, a.lo_ns / b.hi_ns, a.hi_ns / b.lo_ns));
        TargetCheck {
            what: what.into(),
            measured: value.map_or("not run".into(), |(v, lo, hi)| {
                format!("{v:.3}x, 95% CI {lo:.3}..{hi:.3}x ({a} / {b})")
            }),
            target: format!("<= {max}x"),
            pass: value.map(|(_, lo, _)| lo <= max),
        }
    };
    let zero = |what: &str, ids: &[&str]| {
        let values: Option<Vec<f64>> = ids.iter().map(|id| allocs(id)).collect();
        TargetCheck {
            what: what.into(),
            measured: values.as_ref().map_or("not run".into(), |v| {
                ids.iter()
                    .zip(v)
                    .map(|(id, n)| format!("{id}: {}", trim_float(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            target: "0 allocations".into(),
            pass: values.map(|v| v.iter().all(|n| *n == 0.0)),
        }
    };
    let redirect = allocs("request/redirect/linkr").zip(allocs("request/redirect/axum_fixed_302"));
    let same_stack = allocs("request/redirect/linkr")
        .zip(allocs("request/redirect/axum_fixed_302_linkr_middleware"));
    vec![
        ratio(
            "token bucket check, uncontended, vs governor",
            "token_bucket/uncontended/linkr",
            "token_bucket/uncontended/governor",
            1.0,
        ),
        ratio(
            "token bucket check at a fixed instant (no clock read) vs governor",
            "token_bucket/no_clock/linkr",
            "token_bucket/no_clock/governor",
            1.0,
        ),
        ratio(
            "token bucket check, 2 threads, vs governor",
            "token_bucket/contended_x2/linkr",
            "token_bucket/contended_x2/governor",
            2.0,
        ),
        zero(
            "redirect path in linkr's code (resolve + Location from Bytes)",
            &["store/resolve/hit", "encode/location/from_bytes"],
        ),
        TargetCheck {
            what: "redirect handler allocates no more than a fixed 302 behind the same middleware"
                .into(),
            measured: same_stack.map_or("not run".into(), |(l, a)| {
                format!("{} vs {} allocs/request", trim_float(l), trim_float(a))
            }),
            target: "linkr <= fixed 302".into(),
            pass: same_stack.map(|(l, a)| l <= a),
        },
        TargetCheck {
            what: "in-process redirect as served (fast path, middleware on) allocates at most 6"
                .into(),
            measured: allocs("request/redirect/linkr").map_or("not run".into(), |l| {
                format!("request/redirect/linkr: {} allocs/request", trim_float(l))
            }),
            target: "<= 6".into(),
            pass: allocs("request/redirect/linkr").map(|l| l <= 6.0),
        },
        TargetCheck {
            what: "whole in-process redirect allocates no more than axum's fixed 302".into(),
            measured: redirect.map_or("not run".into(), |(l, a)| {
                format!("{} vs {} allocs/request", trim_float(l), trim_float(a))
            }),
            target: "linkr <= axum".into(),
            pass: redirect.map(|(l, a)| l <= a),
        },
        ratio(
            "zero-copy link JSON vs serde_json::to_string + copy",
            "encode/link_json/linkr_zero_copy",
            "encode/link_json/to_string_copy",
            0.7,
        ),
    ]
}

fn table(args: &Args) -> Result<bool, String> {
    let criterion = args.criterion_dir.clone().unwrap_or_else(criterion_dir);
    let noise = args.noise.unwrap_or(1.0);
    let max_regression = args.max_regression.unwrap_or(10.0);
    let since = match &args.since {
        Some(marker) => Some(
            modified(marker)
                .ok_or_else(|| format!("{}: cannot read its time", marker.display()))?,
        ),
        None => None,
    };
    let rows = collect_rows(&criterion, noise, since)?;
    if rows.is_empty() {
        return Err(format!(
            "no criterion results under {} (run the benches first)",
            criterion.display()
        ));
    }

    let header = [
        "bench",
        "time",
        "change",
        "95% CI",
        "verdict",
        "allocs/iter",
        "bytes/iter",
    ];
    let mut lines = vec![header.map(String::from).to_vec()];
    for r in &rows {
        let (change, ci, verdict) = fmt_change(&r.change, max_regression);
        let (allocs, bytes) = fmt_allocs(&r.allocs);
        lines.push(vec![
            r.id.clone(),
            fmt_time(r.time_ns),
            change,
            ci,
            verdict,
            allocs,
            bytes,
        ]);
    }
    print!("{}", text_table(&lines));

    let checks = targets(&rows);
    println!("\ntargets (ratios from this run):");
    for t in &checks {
        let mark = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "----",
        };
        println!(
            "  [{mark}] {} — {} (target {})",
            t.what, t.measured, t.target
        );
    }

    let regressions: Vec<&Row> = rows
        .iter()
        .filter(|r| r.change.as_ref().is_some_and(|c| fails(c, max_regression)))
        .collect();
    println!();
    if regressions.is_empty() {
        println!("no significant regression beyond {max_regression}%");
    }
    for r in &regressions {
        let c = r.change.as_ref().expect("filtered on change");
        println!(
            "REGRESSION {}: {:+.2}% (95% CI {:+.2}%..{:+.2}%) > {max_regression}%",
            r.id, c.pct, c.lo_pct, c.hi_pct
        );
    }

    let html = args
        .html
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports/bench/index.html"));
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| "linkr lab: microbenchmarks".into());
    write_html(&html, &title, &criterion, &rows, &checks, max_regression)?;
    println!("wrote {}", html.display());

    let missed = args.check_targets && checks.iter().any(|t| t.pass == Some(false));
    if missed {
        println!("a target was missed (--check-targets)");
    }
    if args.report_only {
        return Ok(true);
    }
    Ok(regressions.is_empty() && !missed)
}

fn text_table(lines: &[Vec<String>]) -> String {
    let cols = lines[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        for (c, cell) in line.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(out, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (cols - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `target` relative to the directory `from`, for links that work when the tree moves.
fn relative(from: &Path, target: &Path) -> String {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let (from, target) = (abs(from), abs(target));
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(target[common..].iter().cloned());
    parts.join("/")
}

fn write_html(
    path: &Path,
    title: &str,
    criterion: &Path,
    rows: &[Row],
    checks: &[TargetCheck],
    max_regression: f64,
) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
body{{max-width:1400px}}
.wide{{overflow-x:auto}}
table{{border-collapse:collapse;margin:1em 0;font-size:.9em}}
th,td{{padding:.3em .5em;border-bottom:1px solid #ddd;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}
td.what,td.muted,th{{white-space:normal}}
th:first-child,td:first-child{{text-align:left}}
td:first-child{{white-space:normal;overflow-wrap:anywhere;min-width:14em;max-width:24em}}
td:last-child{{white-space:nowrap}}
th{{background:#f4f4f4}}
.regressed{{color:#b00;font-weight:bold}} .slower{{color:#a60}} .improved{{color:#070}} .pass{{color:#070}} .miss{{color:#b00;font-weight:bold}}
.zero{{color:#070}} .muted{{color:#888}} code{{background:#f4f4f4;padding:0 .2em}}
</style></head><body>
<h1>{title}</h1>
<p>Generated {generated} by <code>scripts/bench.sh</code>. Times are criterion's estimates
(slope or mean) with their 95% confidence interval; <em>change</em> is against the baseline of
the last comparison run; a change is <em>significant</em> when its whole 95% interval lies beyond
the noise threshold. Allocations per iteration are counted with linkr's counting allocator
outside the timed loop. The run fails on a significant regression beyond {max_regression}%:
such a change is <span class="regressed">regressed</span>; a significant slowdown within it is
<span class="slower">slower</span> and does not fail the run.</p>
{criterion_report}
"#,
        title = escape(title),
        generated = humantime_now(),
        criterion_report = criterion_report_link(dir, criterion, rows),
    );

    h.push_str("<h2>Targets</h2>\n<table><tr><th>what</th><th>measured</th><th>target</th><th></th></tr>\n");
    for t in checks {
        let (class, mark) = match t.pass {
            Some(true) => ("pass", "pass"),
            Some(false) => ("miss", "missed"),
            None => ("muted", "not run"),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"what\">{}</td><td class=\"what\">{}</td><td>{}</td><td class=\"{class}\">{mark}</td></tr>",
            escape(&t.what),
            escape(&t.measured),
            escape(&t.target)
        );
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Benchmarks</h2>\n<div class=\"wide\"><table><tr><th>bench</th><th>time</th><th>95% CI</th><th>throughput</th>\
         <th>change</th><th>change 95% CI</th><th>verdict</th><th>allocs/iter</th><th>bytes/iter</th></tr>\n",
    );
    for r in rows {
        let (change, ci, verdict) = fmt_change(&r.change, max_regression);
        let (allocs, bytes) = fmt_allocs(&r.allocs);
        let verdict_class = match r.change.as_ref() {
            Some(c) if fails(c, max_regression) => "regressed",
            Some(c) if c.verdict == Verdict::Regressed => "slower",
            Some(c) if c.verdict == Verdict::Improved => "improved",
            _ => "muted",
        };
        let alloc_class = if allocs == "0" { "zero" } else { "" };
        let throughput = r
            .throughput
            .as_ref()
            .map(|(kind, n)| {
                let per_sec = *n as f64 / (r.time_ns / 1e9);
                match kind.as_str() {
                    "Bytes" | "BytesDecimal" => format!("{:.1} MiB/s", per_sec / 1048576.0),
                    _ if per_sec >= 1e6 => format!("{:.2} M/s", per_sec / 1e6),
                    _ if per_sec >= 1e3 => format!("{:.1} K/s", per_sec / 1e3),
                    _ => format!("{per_sec:.0} /s"),
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{id}</td><td>{time}</td><td class=\"muted\">{lo} – {hi}</td>\
             <td>{throughput}</td><td>{change}</td><td class=\"muted\">{ci}</td><td class=\"{verdict_class}\">{verdict}</td>\
             <td class=\"{alloc_class}\">{allocs}</td><td>{bytes}</td></tr>",
            id = if is_fresh(&r.report, &r.results()) {
                format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&relative(dir, &r.report)),
                    escape(&r.id)
                )
            } else {
                escape(&r.id)
            },
            time = fmt_time(r.time_ns),
            lo = fmt_time(r.lo_ns),
            hi = fmt_time(r.hi_ns),
        );
    }
    h.push_str("</table></div>\n");

    let gate_file = dir.join("instructions.json");
    if let Ok(gate) = read_json::<GateReport>(&gate_file) {
        let _ = writeln!(
            h,
            "<h2>Instruction counts (valgrind, CI gate)</h2>\n<p>Exact instruction counts of one call \
             of each hot function (gungraun/callgrind), against <code>{}</code>; the gate fails when one \
             rises more than {}%. {}</p>",
            escape(&gate.baseline),
            gate.max_increase,
            if gate.pass {
                "<span class=\"pass\">Gate passed.</span>"
            } else {
                "<span class=\"miss\">Gate failed.</span>"
            }
        );
        h.push_str("<table><tr><th>bench</th><th>baseline Ir</th><th>Ir</th><th>change</th><th></th></tr>\n");
        for e in &gate.entries {
            let class = match e.status.as_str() {
                "fail" => "miss",
                "ok" => "pass",
                _ => "muted",
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
                escape(&e.id),
                e.baseline.map_or("-".into(), |v| v.to_string()),
                e.current.map_or("-".into(), |v| v.to_string()),
                e.change_pct.map_or("-".into(), |v| format!("{v:+.2}%")),
                escape(&e.status)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    std::fs::write(path, h).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `report` exists and was written with or after `results` (criterion writes a bench's
/// report right after its estimates; quick runs with `--noplot` write none and leave an earlier
/// run's report in place).
fn is_fresh(report: &Path, results: &Path) -> bool {
    match (modified(report), modified(results)) {
        (Some(report), Some(results)) => report + std::time::Duration::from_secs(5) >= results,
        _ => false,
    }
}

fn criterion_report_link(dir: &Path, criterion: &Path, rows: &[Row]) -> String {
    let report = criterion.join("report/index.html");
    let link = escape(&relative(dir, &report));
    // Criterion writes its summary after the last bench of the run: fresh when it is not older
    // than the newest results on this page.
    let newest = rows.iter().map(Row::results).max_by_key(|p| modified(p));
    let fresh = newest.is_some_and(|results| is_fresh(&report, &results));
    if fresh {
        format!(
            "<p>Criterion's full report (plots, distributions): <a href=\"{link}\">{link}</a></p>"
        )
    } else if report.is_file() {
        format!(
            "<p>Criterion's plots were not generated by this run (quick mode runs with <code>--noplot</code>); \
             <code>{link}</code> is left from an earlier run and is not linked. \
             <code>scripts/bench.sh run</code> rewrites it.</p>"
        )
    } else {
        format!(
            "<p>Criterion's plots were not generated by this run (quick mode runs with <code>--noplot</code>); \
             <code>scripts/bench.sh run</code> writes them to <code>{link}</code>.</p>"
        )
    }
}

fn humantime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

// ---------------------------------------------------------------- instruction-count gate

#[derive(Serialize, Deserialize)]
struct Baseline {
    #[serde(default)]
    note: String,
    /// Benchmark id -> instructions executed (callgrind `Ir`).
    instructions: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct GateEntry {
    id: String,
    baseline: Option<u64>,
    current: Option<u64>,
    change_pct: Option<f64>,
    status: String,
}

#[derive(Serialize, Deserialize)]
struct GateReport {
    baseline: String,
    max_increase: f64,
    pass: bool,
    entries: Vec<GateEntry>,
}

fn find_files(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_files(&path, name, out);
        } else if entry.file_name() == name {
            out.push(path);
        }
    }
}

/// `Ir` of the callgrind total in a gungraun `summary.json`, with the benchmark's id.
fn instructions_from_summary(summary: &Value) -> Option<(String, u64)> {
    let module = summary.get("module_path")?.as_str()?;
    let id = summary.get("id").and_then(Value::as_str);
    let name = match id {
        Some(id) => format!("{module}.{id}"),
        None => module.to_owned(),
    };
    let profiles = summary.get("profiles")?.as_array()?;
    for profile in profiles {
        if profile.get("tool").and_then(Value::as_str) != Some("Callgrind") {
            continue;
        }
        let ir = profile.pointer("/data/total/metrics/Ir/values/new")?;
        return first_number(ir).map(|ir| (name, ir));
    }
    None
}

/// The new value of an `EitherOrBoth`-style metric (`{"Left": n}`, `{"Both": [n, old]}`, `n`).
fn first_number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::Array(items) => items.first().and_then(first_number),
        Value::Object(map) => map
            .get("Left")
            .or_else(|| map.get("Both"))
            .or_else(|| map.get("Int"))
            .or_else(|| map.values().next())
            .and_then(first_number),
        _ => None,
    }
}

fn gate(args: &Args) -> Result<bool, String> {
    let gungraun = args.gungraun_dir.clone().unwrap_or_else(|| {
        criterion_dir()
            .parent()
            .map(|t| t.join("gungraun"))
            .unwrap_or_else(|| PathBuf::from("target/gungraun"))
    });
    let baseline_path = args
        .baseline
        .clone()
        .unwrap_or_else(|| PathBuf::from("profiles/baseline/instructions.json"));
    let max_increase = args.max_increase.unwrap_or(3.0);

    let mut files = Vec::new();
    find_files(&gungraun, "summary.json", &mut files);
    let mut current = BTreeMap::new();
    for file in &files {
        let summary: Value = read_json(file)?;
        match instructions_from_summary(&summary) {
            Some((id, ir)) => {
                current.insert(id, ir);
            }
            None => eprintln!("warning: no callgrind Ir in {}", file.display()),
        }
    }
    if current.is_empty() {
        return Err(format!(
            "no gungraun summaries under {} (run `cargo bench --bench instructions -- --save-summary=json`)",
            gungraun.display()
        ));
    }

    if args.update {
        let baseline = Baseline {
            note: "Instructions (callgrind Ir) per call of linkr's hot functions; \
                   rewrite with `scripts/bench.sh gate --update`."
                .into(),
            instructions: current.clone(),
        };
        if let Some(dir) = baseline_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(&baseline).map_err(|e| e.to_string())?;
        std::fs::write(&baseline_path, json + "\n")
            .map_err(|e| format!("{}: {e}", baseline_path.display()))?;
        println!(
            "wrote {} ({} benches)",
            baseline_path.display(),
            current.len()
        );
    }

    let baseline: Baseline = read_json(&baseline_path)
        .map_err(|e| format!("{e}\n(create it with `scripts/bench.sh gate --update`)"))?;
    let mut entries = Vec::new();
    let mut ids: Vec<&String> = baseline.instructions.keys().chain(current.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let base = baseline.instructions.get(id).copied();
        let now = current.get(id).copied();
        let change_pct = base
            .zip(now)
            .map(|(b, n)| (n as f64 - b as f64) / (b.max(1) as f64) * 100.0);
        let status = match (base, now, change_pct) {
            (Some(_), Some(_), Some(pct)) if pct > max_increase => "fail",
            (Some(_), Some(_), _) => "ok",
            (None, Some(_), _) => "new (not in baseline)",
            (Some(_), None, _) => "not run",
            (None, None, _) => unreachable!("id came from one of the maps"),
        };
        entries.push(GateEntry {
            id: id.clone(),
            baseline: base,
            current: now,
            change_pct,
            status: status.into(),
        });
    }

    let mut lines = vec![
        ["bench", "baseline Ir", "Ir", "change", "status"]
            .map(String::from)
            .to_vec(),
    ];
    for e in &entries {
        lines.push(vec![
            e.id.clone(),
            e.baseline.map_or("-".into(), |v| v.to_string()),
            e.current.map_or("-".into(), |v| v.to_string()),
            e.change_pct.map_or("-".into(), |v| format!("{v:+.2}%")),
            e.status.clone(),
        ]);
    }
    print!("{}", text_table(&lines));
    let failures: Vec<&GateEntry> = entries.iter().filter(|e| e.status == "fail").collect();
    for e in &failures {
        println!(
            "FAIL {}: {} -> {} instructions ({:+.2}%, limit +{max_increase}%)",
            e.id,
            e.baseline.unwrap_or(0),
            e.current.unwrap_or(0),
            e.change_pct.unwrap_or(0.0)
        );
    }
    let pass = failures.is_empty();
    if pass {
        println!(
            "instruction-count gate passed ({} benches, limit +{max_increase}%)",
            entries.len()
        );
    }

    let report = GateReport {
        baseline: baseline_path.display().to_string(),
        max_increase,
        pass,
        entries,
    };
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports/bench/instructions.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    Ok(pass)
}
