//! The profile window at the knee: the knee rate held while linkr's admin listener captures
//! folded stacks, then a pprof profile (it serves one capture at a time), with `/metrics` scraped
//! before and after for allocations per request. Writes cpu.folded, cpu.pb.gz, flamegraph.svg
//! and, against a baseline, flamegraph-diff.svg.

use std::path::Path;
use std::time::Duration;

use crate::cli::KneeArgs;
use crate::driver::{StepConfig, StepResult};
use crate::profile::{self, AdminClient};
use crate::report::{AllocationsView, DiffView, ProfileView, fmt_rate};

use super::step::observe;

/// What the window produced.
pub struct ProfileWindow {
    pub profile: ProfileView,
    pub allocations: AllocationsView,
    /// The load held during the window, when it ran.
    pub load: Option<StepResult>,
}

/// How long the window holds the rate: two captures and a second either side.
pub fn window_length(profile_seconds: u64) -> Duration {
    Duration::from_secs(2 * profile_seconds + 2)
}

/// Holds `cfg`'s rate while capturing; never fails (a failure is reported in the view).
pub async fn profile_at_knee(
    admin: &AdminClient,
    cfg: &StepConfig,
    args: &KneeArgs,
    scenario: &str,
    out: &Path,
) -> ProfileWindow {
    let seconds = args.profile_seconds;
    let before = admin.metrics().await;
    let captures = async {
        // Let the users connect before sampling.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let folded = admin
            .capture(seconds, args.profile_frequency, "folded")
            .await;
        let pprof = admin
            .capture(seconds, args.profile_frequency, "pprof")
            .await;
        (folded, pprof)
    };
    let runner = crate::workers::Runner::of_knee(args);
    let (load, (folded, pprof)) = tokio::join!(runner.run_result(cfg), captures);
    let after = admin.metrics().await;
    let allocations = allocations(&before, &after);

    let mut notes = Vec::new();
    let load = match load {
        Ok(r) => {
            let o = observe(&r);
            notes.push(format!(
                "During the window the generator achieved {} of {} req/s.",
                fmt_rate(o.rate_achieved),
                fmt_rate(o.rate_target)
            ));
            Some(r)
        }
        Err(e) => {
            notes.push(format!("The load of the profile window failed: {e}"));
            None
        }
    };
    let pprof_file = write_pprof(pprof, out, &mut notes);
    let profile = match folded {
        Ok(bytes) => {
            notes.extend(bytes.coverage_note());
            let folded = String::from_utf8_lossy(&bytes).into_owned();
            render(&folded, cfg.rate, pprof_file, args, scenario, out, notes)
        }
        Err(e) => ProfileView::Failed {
            reason: format!("folded capture: {e}"),
        },
    };
    ProfileWindow {
        profile,
        allocations,
        load,
    }
}

fn allocations<E: std::fmt::Display>(
    before: &Result<String, E>,
    after: &Result<String, E>,
) -> AllocationsView {
    match (before, after) {
        (Ok(b), Ok(a)) => {
            profile::allocations_delta(&profile::parse_prometheus(b), &profile::parse_prometheus(a))
        }
        (Err(e), _) | (_, Err(e)) => AllocationsView {
            note: Some(format!("could not scrape /metrics: {e}")),
            ..Default::default()
        },
    }
}

fn write_pprof<B: AsRef<[u8]>, E: std::fmt::Display>(
    pprof: Result<B, E>,
    out: &Path,
    notes: &mut Vec<String>,
) -> Option<String> {
    match pprof {
        Ok(bytes) => match std::fs::write(out.join("cpu.pb.gz"), bytes.as_ref()) {
            Ok(()) => Some("cpu.pb.gz".to_string()),
            Err(e) => {
                notes.push(format!("writing cpu.pb.gz: {e}"));
                None
            }
        },
        Err(e) => {
            notes.push(format!("pprof capture failed: {e}"));
            None
        }
    }
}

/// Writes cpu.folded and the flamegraphs of `folded`.
fn render(
    folded: &str,
    rate: f64,
    pprof: Option<String>,
    args: &KneeArgs,
    scenario: &str,
    out: &Path,
    mut notes: Vec<String>,
) -> ProfileView {
    if let Err(e) = std::fs::write(out.join("cpu.folded"), folded) {
        notes.push(format!("writing cpu.folded: {e}"));
    }
    let title = format!(
        "linkr CPU at the knee: {scenario}, {} req/s",
        fmt_rate(rate)
    );
    if let Err(e) = profile::render_flamegraph(folded, &title, &out.join("flamegraph.svg")) {
        return ProfileView::Failed {
            reason: format!("flamegraph: {e}"),
        };
    }
    notes.push(format!(
        "{} samples in the folded capture ({} s at {} Hz).",
        profile::folded_samples(folded),
        args.profile_seconds,
        args.profile_frequency
    ));
    let diff = diff_against_baseline(folded, &args.baseline_dir, scenario, out, &mut notes);
    ProfileView::Captured {
        seconds: args.profile_seconds,
        rate,
        flamegraph: "flamegraph.svg".into(),
        folded: Some("cpu.folded".into()),
        pprof,
        diff,
        notes,
    }
}

fn diff_against_baseline(
    folded: &str,
    baseline_dir: &Path,
    scenario: &str,
    out: &Path,
    notes: &mut Vec<String>,
) -> Option<DiffView> {
    let baseline = baseline_dir.join(format!("{scenario}.folded"));
    if !baseline.is_file() {
        return None;
    }
    let title = format!("linkr CPU at the knee against {}", baseline.display());
    match profile::render_diff_flamegraph(
        &baseline,
        folded,
        &title,
        &out.join("flamegraph-diff.svg"),
    ) {
        Ok(()) => Some(DiffView {
            flamegraph: "flamegraph-diff.svg".into(),
            baseline: baseline.display().to_string(),
        }),
        Err(e) => {
            notes.push(format!(
                "differential flamegraph against {}: {e}",
                baseline.display()
            ));
            None
        }
    }
}
