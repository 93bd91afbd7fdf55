//! What a knee run leaves in `--out`: summary.json (the contract of the design) and index.html,
//! beside the histograms and profiles written as the run went.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::bound::decide_bound;
use super::findings::{Outcome, Searched, Target, WarmUp};
use super::judge::{Criteria, StepOutcome};
use super::search::{MILDER_FAILURE_FACTOR, SearchEnd};
use super::step::{StepRecord, observe, run_object};
use crate::cli::KneeArgs;
use crate::driver::StepResult;
use crate::environment::{self, ServiceFacts};
use crate::error::LoadgenError;
use crate::report::{
    self, AllocationsView, KneeView, Link, Percentiles, ProfileView, Report, fmt_rate, fmt_us,
};

/// The profile window's results.
pub struct ProfileOutcome {
    pub profile: ProfileView,
    pub allocations: AllocationsView,
    pub load: Option<StepResult>,
}

/// Everything a finished run hands to the report.
pub struct Finished<'a> {
    pub args: &'a KneeArgs,
    pub target: &'a Target,
    pub criteria: Criteria,
    pub allocator: Option<String>,
    pub warm_up: WarmUp,
    pub searched: &'a Searched,
    pub profile: ProfileOutcome,
    pub started: Instant,
}

/// Writes summary.json and index.html.
pub fn write(f: &Finished<'_>) -> Result<Outcome, LoadgenError> {
    let out = &f.args.out;
    let end = f.searched.search.end();
    let (bound, bound_evidence) = decide_bound(&f.searched.steps, end, f.args.max_rate);
    let environment = environment::collect(&ServiceFacts {
        allocator: f.allocator.clone(),
        ..f.target.service.clone()
    });
    let notes = search_notes(f, end);
    let knee = f.searched.knee();
    let report = Report {
        scenario: f.args.scenario.name().to_string(),
        target: f.target.base_url.clone(),
        generator: generator(&f.searched.steps),
        generated_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        slo_p99_us: f.criteria.slo_p99_us,
        min_achieved_ratio: f.criteria.min_achieved_ratio,
        max_error_ratio: f.criteria.max_error_ratio,
        steps: f.searched.steps.iter().map(StepRecord::view).collect(),
        knee: knee.map(knee_view),
        bound: bound.as_str().to_string(),
        bound_evidence,
        search_notes: notes,
        profile: f.profile.profile.clone(),
        allocations: f.profile.allocations.clone(),
        environment,
        goose_reports: goose_links(&f.searched.steps, out),
        bench_report: bench_report(out),
        duration_s: f.started.elapsed().as_secs_f64(),
    };
    let summary = summary(f, &report, end);
    write_json(&out.join("summary.json"), &summary)?;
    report::write_html(out, &report).map_err(|e| LoadgenError::file(out.join("index.html"), e))?;
    Ok(Outcome {
        summary,
        knee_rate: knee.map(|k| k.observation.rate_target),
        knee_p99_us: knee.map(|k| k.observation.p99_us),
        bound,
        end,
        out: out.clone(),
    })
}

/// "client C, engine E" from the steps' run objects, when the driver records them.
fn generator(steps: &[StepRecord]) -> Option<String> {
    let run = &steps.first()?.run;
    let field = |k: &str| run.get(k).and_then(Value::as_str).map(str::to_owned);
    match (field("client"), field("engine")) {
        (None, None) => None,
        (c, e) => Some(format!(
            "client {}, engine {}",
            c.as_deref().unwrap_or("?"),
            e.as_deref().unwrap_or("?")
        )),
    }
}

fn knee_view(k: &StepRecord) -> KneeView {
    KneeView {
        step_index: k.index,
        rate: k.observation.rate_target,
        rate_achieved: k.observation.rate_achieved,
        p99_us: k.observation.p99_us,
        p99_uncorrected_us: Percentiles::of(&k.uncorrected).p99,
        distribution: report::quantile_points(&k.corrected, &k.uncorrected),
    }
}

fn search_notes(f: &Finished<'_>, end: SearchEnd) -> Vec<String> {
    let (args, search) = (f.args, &f.searched.search);
    let mut notes = Vec::new();
    if f.searched.interrupted {
        notes.push(
            "Interrupted (Ctrl-C): the search did not finish; this is a partial report.".into(),
        );
    }
    notes.push(match end {
        SearchEnd::Converged => format!(
            "Converged: the lowest rate above the knee that did not pass is within {:.1}% of it (target 5%).",
            search.resolution().unwrap_or(0.0) * 100.0
        ),
        SearchEnd::MaxRatePassed => format!(
            "Every rate up to --max-rate {} req/s passed: the knee is at least that.",
            fmt_rate(args.max_rate)
        ),
        SearchEnd::StepBudget => format!(
            "The step budget ({} steps) ran out before the 5% resolution{}.",
            args.max_steps,
            search
                .resolution()
                .map(|r| format!(": the knee lies within {:.1}% above the value shown", r * 100.0))
                .unwrap_or_default()
        ),
        SearchEnd::NothingPassed => "No step passed.".into(),
    });
    let inconclusive = f
        .searched
        .steps
        .iter()
        .filter(|s| s.verdict.outcome == StepOutcome::Inconclusive)
        .map(|s| {
            format!(
                "{} ({} req/s)",
                s.index,
                fmt_rate(s.observation.rate_target)
            )
        })
        .collect::<Vec<_>>();
    if !inconclusive.is_empty() {
        notes.push(format!(
            "Inconclusive (the generator could not keep its schedule, so neither pass nor fail, and never the knee): step {}.",
            inconclusive.join(", step ")
        ));
    }
    for &rate in search.retried() {
        let first = f
            .searched
            .steps
            .iter()
            .find(|s| s.observation.rate_target == rate)
            .map(|s| s.verdict.outcome);
        let why = if search.retried_below_a_milder_failure(rate) {
            format!(
                "failed with a p99 at least {MILDER_FAILURE_FACTOR}x that of a failed step at a higher rate"
            )
        } else if search.retried_after_host_stalls(rate) {
            "failed while the host took a notable share of a CPU (steal in /proc/stat), so the miss may have \
             been the host's"
                .into()
        } else if first == Some(StepOutcome::Fail) {
            "failed below a rate whose step met the objective though the generator lagged".into()
        } else {
            "was inconclusive".into()
        };
        notes.push(format!(
            "Measured {} req/s twice: the first step there {why} and was the top of the bracket, so the \
             search took the rate again; the later step stands.",
            fmt_rate(rate)
        ));
    }
    if !args.warm_up.is_zero() {
        notes.push(format!(
            "Step 1 followed {:.1} s of unmeasured warm-up traffic at {} req/s (--warm-up).",
            args.warm_up.as_secs_f64(),
            fmt_rate(args.start_rate)
        ));
    }
    notes.push(recovery_note(f));
    notes
}

fn recovery_note(f: &Finished<'_>) -> String {
    let limit = super::recovery::limit_us(f.warm_up.baseline_p99_us, f.criteria.slo_p99_us);
    let baseline = match (f.warm_up.baseline_p99_us, f.warm_up.probes.first()) {
        (Some(b), Some(p)) => format!(
            "the baseline p99 is {} (the lower of 1 s probes at {} req/s before and after the warm-up), so",
            fmt_us(b),
            fmt_rate(p.rate)
        ),
        _ => "no baseline was taken (--warm-up 0), so".into(),
    };
    let unrecovered: Vec<String> = f
        .searched
        .steps
        .iter()
        .filter(|s| s.recovery.as_ref().is_some_and(|r| !r.recovered))
        .map(|s| s.index.to_string())
        .collect();
    let mut note = format!(
        "After a step that did not pass, the next waited until the target drained and recovered: {baseline} a 1 s probe \
         at a low rate had to show a p99 of at most {} (twice the baseline, or a quarter of the SLO if larger, never above \
         the SLO; a lower probe later lowers the baseline).",
        fmt_us(limit)
    );
    if !unrecovered.is_empty() {
        note.push_str(&format!(
            " The target was NOT back after step {}: the step after it may carry that step's load.",
            unrecovered.join(", step ")
        ));
    }
    note
}

fn goose_links(steps: &[StepRecord], out: &Path) -> Vec<Link> {
    steps
        .iter()
        .filter_map(|s| {
            s.goose_report
                .as_ref()
                .filter(|g| out.join(g).exists())
                .map(|g| Link {
                    label: format!("step {}", s.index),
                    href: g.clone(),
                })
        })
        .collect()
}

fn summary(f: &Finished<'_>, report: &Report, end: SearchEnd) -> Value {
    let args = f.args;
    let search = &f.searched.search;
    let knee = f.searched.knee();
    let client = |k: &str| {
        f.searched
            .steps
            .first()
            .and_then(|s| s.run.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({
        "knee": {
            "rate": knee.map_or(0.0, |k| k.observation.rate_target),
            "p99_us": knee.map_or(0, |k| k.observation.p99_us),
            "rate_achieved": knee.map(|k| k.observation.rate_achieved),
            "p99_uncorrected_us": report.knee.as_ref().map(|k| k.p99_uncorrected_us),
            "step": knee.map(|k| k.index),
            "found": knee.is_some(),
        },
        "slo_p99_us": f.criteria.slo_p99_us,
        "steps": f.searched.steps.iter().map(|s| s.run.clone()).collect::<Vec<_>>(),
        "bound": report.bound,
        "bound_evidence": report.bound_evidence,
        "scenario": report.scenario,
        "target": report.target,
        "client": client("client"),
        "engine": client("engine"),
        "criteria": {
            "slo_p99_us": f.criteria.slo_p99_us,
            "min_achieved_ratio": f.criteria.min_achieved_ratio,
            "max_error_ratio": f.criteria.max_error_ratio,
        },
        "search": {
            "end": end,
            "resolution": search.resolution(),
            "retried": search.retried(),
            "start_rate": args.start_rate,
            "max_rate": args.max_rate,
            "max_steps": args.max_steps,
            "step_s": args.step.as_secs_f64(),
            "warm_up_s": args.warm_up.as_secs_f64(),
            "arrival": format!("{:?}", args.arrival).to_lowercase(),
            "notes": report.search_notes,
        },
        "baseline": {
            "p99_us": f.warm_up.baseline_p99_us,
            "probes": f.warm_up.probes,
            "recovery_limit_us": super::recovery::limit_us(f.warm_up.baseline_p99_us, f.criteria.slo_p99_us),
            "recovery_after_warm_up": f.warm_up.recovery,
        },
        "profile": report.profile,
        "profile_window": profile_window(f),
        "allocations": report.allocations,
        "environment": report.environment.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<String, Value>>(),
        "interrupted": f.searched.interrupted,
        "generated_unix": report.generated_unix,
        "duration_s": report.duration_s,
    })
}

/// The load of the profile window as a run object, judged like a step.
fn profile_window(f: &Finished<'_>) -> Value {
    let Some(r) = &f.profile.load else {
        return Value::Null;
    };
    let mut load = run_object(r);
    let verdict = f.criteria.judge(&observe(r));
    if let Value::Object(m) = &mut load {
        m.insert("pass".into(), json!(verdict.passed()));
        m.insert("outcome".into(), json!(verdict.outcome));
        m.insert("reasons".into(), json!(verdict.reasons));
    }
    load
}

/// Creates `out` and removes the files an earlier knee run left there (only ours).
pub fn prepare_out_dir(out: &Path) -> Result<(), LoadgenError> {
    std::fs::create_dir_all(out).map_err(|e| LoadgenError::file(out, e))?;
    let ours = |name: &str| {
        (name.starts_with("step-") && name.ends_with(".hgrm"))
            || matches!(
                name,
                "summary.json"
                    | "index.html"
                    | "cpu.pb.gz"
                    | "cpu.folded"
                    | "flamegraph.svg"
                    | "flamegraph-diff.svg"
            )
    };
    for entry in std::fs::read_dir(out)
        .map_err(|e| LoadgenError::file(out, e))?
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ours(&name) {
            let _ = std::fs::remove_file(entry.path());
        } else if name == "goose" && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn bench_report(out: &Path) -> Option<String> {
    let candidate = out.parent()?.join("bench").join("index.html");
    candidate
        .is_file()
        .then(|| "../bench/index.html".to_string())
}

fn write_json(path: &Path, v: &Value) -> Result<(), LoadgenError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    std::fs::write(path, text + "\n").map_err(|e| LoadgenError::file(path, e))
}
