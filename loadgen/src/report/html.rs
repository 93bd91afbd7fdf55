//! `index.html` of the knee report. Every interpolated value goes through `escape`.

use std::fmt::Write as _;

use super::svg::{self, CurvePoint};
use super::{Percentiles, ProfileView, Report, StepView, escape, fmt_rate, fmt_us, fmt_utc};

const CSS: &str = r#"
:root { --fg:#1d2329; --muted:#5b6670; --line:#d8dee4; --bg:#f5f7f9; --pass:#1e8449; --fail:#c0392b; --accent:#1f5fbf; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
header { background:#17202a; color:#fff; padding:18px 28px; }
header h1 { margin:0; font-size:22px; font-weight:600; }
header p { margin:4px 0 0; color:#c5ced8; }
main { max-width:1180px; margin:0 auto; padding:18px 24px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:16px 0; }
h2 { margin:0 0 10px; font-size:17px; }
p.note, .muted { color:var(--muted); }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { flex:1 1 160px; border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfcfd; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:22px; font-weight:600; margin-top:2px; }
.pass { color:var(--pass); font-weight:600; }
.fail { color:var(--fail); font-weight:600; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.badge.pass { background:var(--pass); color:#fff; } .badge.fail { background:var(--fail); color:#fff; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:12.5px; }
th, td { border-bottom:1px solid var(--line); padding:4px 6px; text-align:right; white-space:nowrap; }
th { background:#f0f3f6; font-weight:600; }
td.l, th.l { text-align:left; white-space:normal; }
table.outcome td.l:last-child { min-width:260px; }
td.files, td.status { white-space:nowrap; }
h2 + .scroll { margin-bottom:4px; }
.scroll + h2 { margin-top:22px; }
tr.knee td { background:#eaf6ee; }
th.grp { text-align:center; border-left:2px solid var(--line); }
td.gs, th.gs { border-left:2px solid var(--line); }
svg.chart { max-width:100%; height:auto; display:block; }
.flame { overflow-x:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
ul.links { margin:6px 0; padding-left:20px; }
code { background:#f0f3f6; padding:1px 4px; border-radius:4px; }
"#;

pub fn render(
    r: &Report,
    flamegraph_size: Option<(f64, f64)>,
    diff_size: Option<(f64, f64)>,
) -> String {
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(
        h,
        "<title>linkr knee report: {}</title>",
        escape(&r.scenario)
    );
    let _ = write!(h, "<style>{CSS}</style></head><body>");
    let _ = write!(
        h,
        "<header><h1>linkr knee report</h1><p>scenario <b>{}</b> against <b>{}</b> &middot; {} &middot; {} steps in {:.0} s</p></header><main>",
        escape(&r.scenario),
        escape(&r.target),
        escape(&fmt_utc(r.generated_unix)),
        r.steps.len(),
        r.duration_s
    );
    summary(&mut h, r);
    curve(&mut h, r);
    distribution(&mut h, r);
    profile(&mut h, r, flamegraph_size, diff_size);
    steps_table(&mut h, r);
    bound(&mut h, r);
    allocations(&mut h, r);
    environment(&mut h, r);
    links(&mut h, r);
    h.push_str("</main></body></html>\n");
    h
}

fn summary(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="summary"><h2>Result</h2><div class="cards">"#);
    let (knee_rate, knee_p99) = match &r.knee {
        Some(k) => (format!("{} req/s", fmt_rate(k.rate)), fmt_us(k.p99_us)),
        None => ("none".to_string(), "-".to_string()),
    };
    card(h, "knee (highest passing rate)", &knee_rate);
    card(h, "p99 at the knee (corrected)", &knee_p99);
    card(h, "SLO p99", &fmt_us(r.slo_p99_us));
    card(h, "bound by", &r.bound);
    h.push_str("</div>");
    let _ = write!(
        h,
        r#"<p class="note">A step passes when the achieved rate is at least {}% of the target, the corrected p99 (measured from each request's intended send time) is within the SLO, and at most {}% of requests fail.</p>"#,
        trim_pct(r.min_achieved_ratio * 100.0),
        trim_pct(r.max_error_ratio * 100.0)
    );
    if r.knee.is_none() {
        h.push_str(r#"<p class="fail">No step passed: the knee lies below the first rate tried (lower --start-rate) or the target is unhealthy.</p>"#);
    }
    for n in &r.search_notes {
        let _ = write!(h, r#"<p class="note">{}</p>"#, escape(n));
    }
    h.push_str("</section>");
}

fn card(h: &mut String, k: &str, v: &str) {
    let _ = write!(
        h,
        r#"<div class="card"><div class="k">{}</div><div class="v">{}</div></div>"#,
        escape(k),
        escape(v)
    );
}

fn curve_points(r: &Report) -> Vec<CurvePoint> {
    r.steps
        .iter()
        .map(|s| CurvePoint {
            rate_target: s.rate_target,
            rate_achieved: s.rate_achieved,
            p99_corrected_us: s.corrected.p99,
            p99_uncorrected_us: s.uncorrected.p99,
            pass: s.pass,
        })
        .collect()
}

fn curve(h: &mut String, r: &Report) {
    let points = curve_points(r);
    let knee = r
        .knee
        .as_ref()
        .and_then(|k| points.get(k.step_index.wrapping_sub(1)).copied());
    h.push_str(r#"<section id="curve"><h2>Latency against throughput</h2>"#);
    h.push_str(&svg::latency_vs_throughput(
        &points,
        r.slo_p99_us,
        knee.as_ref(),
    ));
    h.push_str(r#"<p class="note">Each point is one step at a fixed arrival rate (x: rate achieved). Past the knee the corrected p99 climbs steeply while the uncorrected figure, which only sees requests once they are sent, understates it.</p></section>"#);
}

fn distribution(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="distribution"><h2>Latency distribution at the knee</h2>"#);
    match &r.knee {
        Some(k) => {
            let _ = write!(
                h,
                r#"<p class="muted">Step {} at {} req/s (achieved {}): p99 {} corrected, {} uncorrected.</p>"#,
                k.step_index,
                escape(&fmt_rate(k.rate)),
                escape(&fmt_rate(k.rate_achieved)),
                escape(&fmt_us(k.p99_us)),
                escape(&fmt_us(k.p99_uncorrected_us))
            );
            h.push_str(&svg::percentile_distribution(&k.distribution, r.slo_p99_us));
        }
        None => h.push_str(r#"<p class="note">No knee: no distribution to show.</p>"#),
    }
    h.push_str("</section>");
}

fn profile(h: &mut String, r: &Report, size: Option<(f64, f64)>, diff_size: Option<(f64, f64)>) {
    h.push_str(r#"<section id="profile"><h2>CPU profile at the knee</h2>"#);
    match &r.profile {
        ProfileView::Captured {
            seconds,
            rate,
            flamegraph,
            folded,
            pprof,
            diff,
            notes,
        } => {
            let _ = write!(
                h,
                r#"<p class="muted">Captured from linkr's admin endpoint over {} s while the generator held {} req/s. Hover a frame for its share; click to zoom (open <a href="{}">the SVG</a> on its own for search).</p>"#,
                seconds,
                escape(&fmt_rate(*rate)),
                escape(flamegraph)
            );
            embed_svg(h, flamegraph, size, "flamegraph");
            h.push_str(r#"<ul class="links">"#);
            if let Some(p) = pprof {
                let _ = write!(
                    h,
                    r#"<li><a href="{0}">{0}</a>: gzipped pprof protobuf (<code>go tool pprof -http=: {0}</code>)</li>"#,
                    escape(p)
                );
            }
            if let Some(f) = folded {
                let _ = write!(
                    h,
                    r#"<li><a href="{0}">{0}</a>: folded stacks</li>"#,
                    escape(f)
                );
            }
            h.push_str("</ul>");
            for n in notes {
                let _ = write!(h, r#"<p class="note">{}</p>"#, escape(n));
            }
            match diff {
                Some(d) => {
                    let _ = write!(
                        h,
                        r#"<h2>Against the baseline</h2><p class="muted">Differential flamegraph: shapes are this run, colour is the change from <code>{}</code> (red grew, blue shrank).</p>"#,
                        escape(&d.baseline)
                    );
                    embed_svg(h, &d.flamegraph, diff_size, "flamegraph-diff");
                }
                None => h.push_str(
                    r#"<p class="note">No baseline profile (profiles/baseline/&lt;scenario&gt;.folded): no differential flamegraph.</p>"#,
                ),
            }
        }
        ProfileView::Skipped { reason } => {
            let _ = write!(
                h,
                r#"<p class="note">Profile skipped: {}</p>"#,
                escape(reason)
            );
        }
        ProfileView::Failed { reason } => {
            let _ = write!(
                h,
                r#"<p class="fail">Profile capture failed: {}</p>"#,
                escape(reason)
            );
        }
    }
    h.push_str("</section>");
}

fn embed_svg(h: &mut String, file: &str, size: Option<(f64, f64)>, class: &str) {
    let (w, ht) = size.unwrap_or((1100.0, 600.0));
    let _ = write!(
        h,
        r#"<div class="flame"><object class="{}" data="{}" type="image/svg+xml" width="{:.0}" height="{:.0}"><img src="{}" alt="flamegraph" width="{:.0}"></object></div>"#,
        escape(class),
        escape(file),
        w,
        ht,
        escape(file),
        w
    );
}

fn steps_table(h: &mut String, r: &Report) {
    let knee_index = r.knee.as_ref().map(|k| k.step_index);
    h.push_str(r#"<section id="steps"><h2>Steps</h2><div class="scroll"><table class="outcome">"#);
    h.push_str(r#"<thead><tr><th>#</th><th>target req/s</th><th>achieved req/s</th><th>requests</th><th>errors</th><th class="l">responses by status</th><th>result</th><th class="l">why</th></tr></thead><tbody>"#);
    for s in &r.steps {
        outcome_row(h, s, knee_index == Some(s.index));
    }
    h.push_str("</tbody></table></div>");
    h.push_str(r#"<h2 id="percentiles">Latency percentiles per step</h2><div class="scroll"><table class="latency">"#);
    h.push_str(r#"<thead><tr><th colspan="2"></th><th class="grp" colspan="6">corrected (from intended send time)</th><th class="grp" colspan="6">uncorrected (from actual send)</th><th class="grp"></th></tr>"#);
    h.push_str("<tr><th>#</th><th>target req/s</th>");
    for _ in 0..2 {
        for (i, name) in ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
            .iter()
            .enumerate()
        {
            let cls = if i == 0 { " class=\"gs\"" } else { "" };
            let _ = write!(h, "<th{cls}>{name}</th>");
        }
    }
    h.push_str(r#"<th class="l gs">files</th></tr></thead><tbody>"#);
    for s in &r.steps {
        latency_row(h, s, knee_index == Some(s.index), r.slo_p99_us);
    }
    h.push_str("</tbody></table></div>");
    h.push_str(r#"<p class="note">Histograms are HdrHistogram percentile files (<code>.hgrm</code>, values in milliseconds) for any HdrHistogram plotter. A p99 in red is over the SLO.</p></section>"#);
}

fn row_open(h: &mut String, s: &StepView, is_knee: bool) {
    let _ = write!(
        h,
        r#"<tr{}><td>{}{}</td><td>{}</td>"#,
        if is_knee { r#" class="knee""# } else { "" },
        s.index,
        if is_knee { " (knee)" } else { "" },
        escape(&fmt_rate(s.rate_target)),
    );
}

fn outcome_row(h: &mut String, s: &StepView, is_knee: bool) {
    row_open(h, s, is_knee);
    let status = s
        .status
        .iter()
        .map(|(k, v)| format!("{k}: {}", fmt_rate(*v as f64)))
        .collect::<Vec<_>>()
        .join(" \u{b7} ");
    let verdict = if s.pass {
        r#"<span class="badge pass">pass</span>"#
    } else {
        r#"<span class="badge fail">fail</span>"#
    };
    let mut why = s.reasons.join("; ");
    if s.generator_saturated {
        if !why.is_empty() {
            why.push_str("; ");
        }
        why.push_str("generator saturated (could not keep the schedule)");
    }
    let _ = write!(
        h,
        r#"<td>{}</td><td>{}</td><td>{}</td><td class="l status">{}</td><td>{verdict}</td><td class="l">{}</td></tr>"#,
        escape(&fmt_rate(s.rate_achieved)),
        escape(&fmt_rate(s.requests as f64)),
        s.errors,
        escape(&status),
        escape(&why)
    );
}

fn latency_row(h: &mut String, s: &StepView, is_knee: bool, slo_us: u64) {
    row_open(h, s, is_knee);
    percentile_cells(h, &s.corrected, Some(slo_us));
    percentile_cells(h, &s.uncorrected, None);
    let mut files = format!(
        r#"<a href="{0}" title="corrected latency histogram">hgrm</a> &middot; <a href="{1}" title="uncorrected latency histogram">unc.</a>"#,
        escape(&s.hgrm),
        escape(&s.hgrm_uncorrected)
    );
    if let Some(g) = &s.goose_report {
        let _ = write!(
            files,
            r#" &middot; <a href="{}" title="goose's report of this step">goose</a>"#,
            escape(g)
        );
    }
    let _ = write!(h, r#"<td class="l gs files">{files}</td></tr>"#);
}

fn percentile_cells(h: &mut String, p: &Percentiles, slo_us: Option<u64>) {
    let values = [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max];
    for (i, v) in values.iter().enumerate() {
        let mut cls = if i == 0 {
            "gs".to_string()
        } else {
            String::new()
        };
        if i == 2 && slo_us.is_some_and(|slo| *v > slo) {
            cls.push_str(" fail");
        }
        let _ = write!(
            h,
            r#"<td class="{}">{}</td>"#,
            cls.trim(),
            escape(&fmt_us(*v))
        );
    }
}

fn bound(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        r#"<section id="bound"><h2>What bound the knee: {}</h2><ul>"#,
        escape(&r.bound)
    );
    for e in &r.bound_evidence {
        let _ = write!(h, "<li>{}</li>", escape(e));
    }
    h.push_str("</ul></section>");
}

fn allocations(h: &mut String, r: &Report) {
    let a = &r.allocations;
    h.push_str(r#"<section id="allocations"><h2>Allocations per request, by route</h2>"#);
    if a.rows.is_empty() {
        let _ = write!(
            h,
            r#"<p class="note">{}</p>"#,
            escape(
                a.note
                    .as_deref()
                    .unwrap_or("No allocation metrics were read.")
            )
        );
    } else {
        h.push_str(r#"<table><thead><tr><th class="l">route</th><th>requests in window</th><th>allocations / request</th><th>bytes / request</th></tr></thead><tbody>"#);
        for row in &a.rows {
            let _ = write!(
                h,
                r#"<tr><td class="l"><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                escape(&row.route),
                escape(&fmt_rate(row.requests)),
                escape(
                    &row.allocs_per_request
                        .map_or("-".into(), |v| format!("{v:.2}"))
                ),
                escape(
                    &row.bytes_per_request
                        .map_or("-".into(), |v| format!("{v:.0}"))
                )
            );
        }
        h.push_str("</tbody></table>");
        let _ = write!(h, r#"<p class="note">{}</p>"#, escape(&a.source));
        if let Some(n) = &a.note {
            let _ = write!(h, r#"<p class="note">{}</p>"#, escape(n));
        }
    }
    h.push_str("</section>");
}

fn environment(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="environment"><h2>Environment</h2><table><tbody>"#);
    for (k, v) in &r.environment {
        let _ = write!(
            h,
            r#"<tr><th class="l">{}</th><td class="l">{}</td></tr>"#,
            escape(k),
            escape(v)
        );
    }
    h.push_str("</tbody></table></section>");
}

fn links(h: &mut String, r: &Report) {
    h.push_str(r#"<section id="links"><h2>Files and other reports</h2><ul class="links">"#);
    h.push_str(r#"<li><a href="summary.json">summary.json</a>: the knee, the SLO and every step's numbers</li>"#);
    match &r.bench_report {
        Some(href) => {
            let _ = write!(h, r#"<li><a href="{}">latest benchmark report</a></li>"#, escape(href));
        }
        None => h.push_str(r#"<li class="muted">no benchmark report found beside this one (scripts/bench.sh writes it)</li>"#),
    }
    if r.goose_reports.is_empty() {
        h.push_str(r#"<li class="muted">goose per-step reports were not written for this run (<code>loadgen knee --goose-reports</code> writes them; goose's own metrics cost generator CPU)</li>"#);
    } else {
        h.push_str("<li>goose per-step reports: ");
        let parts: Vec<String> = r
            .goose_reports
            .iter()
            .map(|l| format!(r#"<a href="{}">{}</a>"#, escape(&l.href), escape(&l.label)))
            .collect();
        h.push_str(&parts.join(" &middot; "));
        h.push_str("</li>");
    }
    h.push_str("</ul></section>");
}

fn trim_pct(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
