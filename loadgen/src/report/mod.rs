//! The knee report: `index.html` (offline: inline CSS and SVG, no scripts of its own) from the
//! results of a knee run.

mod html;
pub mod svg;

use std::fs;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use svg::{CurvePoint, QuantilePoint};

pub use crate::stats::Percentiles;

/// Points of the percentile plot: from p0 to the last quantile the sample count resolves.
pub fn quantile_points(
    corrected: &Histogram<u64>,
    uncorrected: &Histogram<u64>,
) -> Vec<QuantilePoint> {
    let count = corrected.len().max(1) as f64;
    let max_nines = count.log10().floor().clamp(1.0, 6.0);
    let mut points = Vec::new();
    let mut nines = 0.0_f64;
    while nines <= max_nines + 1e-9 {
        let q = 1.0 - 10f64.powf(-nines);
        points.push(QuantilePoint {
            quantile: q,
            corrected_us: corrected.value_at_quantile(q),
            uncorrected_us: uncorrected.value_at_quantile(q),
        });
        nines += 0.05;
    }
    points
}

/// One step of the search as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub index: usize,
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub requests: u64,
    pub errors: u64,
    pub status: Vec<(String, u64)>,
    pub corrected: Percentiles,
    pub uncorrected: Percentiles,
    pub generator_saturated: bool,
    /// CPU over the step as a share of the CPUs each may run on: the generator's, and the
    /// service's when its process was known.
    pub generator_cpu: Option<f64>,
    pub service_cpu: Option<f64>,
    pub pass: bool,
    /// The generator lagged: neither pass nor fail.
    pub inconclusive: bool,
    pub reasons: Vec<String>,
    pub hgrm: String,
    pub hgrm_uncorrected: String,
    pub goose_report: Option<String>,
    /// The drain and probes after this step, before the next load.
    pub recovery: Option<RecoveryView>,
    /// Each worker's share of the step (`--workers`, `--workers-at`); empty for one process.
    pub workers: Vec<crate::merge::WorkerRow>,
}

/// The recovery probes after a step that did not pass.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryView {
    pub limit_us: u64,
    pub recovered: bool,
    pub probes: Vec<ProbeView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeView {
    pub rate: f64,
    /// The quiet period before the probe.
    pub quiet_s: f64,
    pub p99_us: u64,
    pub errors: u64,
    pub requests: u64,
    pub recovered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KneeView {
    pub step_index: usize,
    pub rate: f64,
    pub rate_achieved: f64,
    pub p99_us: u64,
    pub p99_uncorrected_us: u64,
    pub distribution: Vec<QuantilePoint>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProfileView {
    Captured {
        seconds: u64,
        rate: f64,
        flamegraph: String,
        folded: Option<String>,
        pprof: Option<String>,
        diff: Option<DiffView>,
        notes: Vec<String>,
    },
    Skipped {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffView {
    pub flamegraph: String,
    pub baseline: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AllocationsView {
    pub rows: Vec<AllocRow>,
    pub source: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllocRow {
    pub route: String,
    pub requests: f64,
    pub allocs_per_request: Option<f64>,
    pub bytes_per_request: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub label: String,
    pub href: String,
}

/// Everything `index.html` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    /// Which client and engine generated the load (`client C, engine E`), when recorded.
    pub generator: Option<String>,
    pub generated_unix: u64,
    pub slo_p99_us: u64,
    pub min_achieved_ratio: f64,
    pub max_error_ratio: f64,
    pub steps: Vec<StepView>,
    pub knee: Option<KneeView>,
    pub bound: String,
    pub bound_evidence: Vec<String>,
    pub search_notes: Vec<String>,
    pub profile: ProfileView,
    pub allocations: AllocationsView,
    pub environment: Vec<(String, String)>,
    pub goose_reports: Vec<Link>,
    pub bench_report: Option<String>,
    pub duration_s: f64,
}

/// Writes `dir/index.html`.
pub fn write_html(dir: &Path, report: &Report) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let flamegraph_size = match &report.profile {
        ProfileView::Captured { flamegraph, .. } => svg_size(&dir.join(flamegraph)),
        _ => None,
    };
    let diff_size = match &report.profile {
        ProfileView::Captured { diff: Some(d), .. } => svg_size(&dir.join(&d.flamegraph)),
        _ => None,
    };
    let html = html::render(report, flamegraph_size, diff_size);
    let tmp = dir.join(".index.html.tmp");
    fs::write(&tmp, html)?;
    fs::rename(tmp, dir.join("index.html"))
}

/// Width and height of an SVG file's root element (for sizing its `<object>`).
fn svg_size(path: &Path) -> Option<(f64, f64)> {
    let text = fs::read_to_string(path).ok()?;
    let start = text.find("<svg")?;
    let end = start + text[start..].find('>')?;
    let root = &text[start..end];
    let attr = |name: &str| -> Option<f64> {
        let key = format!(" {name}=\"");
        let i = root.find(&key)? + key.len();
        let j = i + root[i..].find('"')?;
        root[i..j].trim_end_matches("px").parse().ok()
    };
    Some((attr("width")?, attr("height")?))
}

/// Minimal HTML escaping for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Microseconds as a short human duration: `850 µs`, `1.25 ms`, `3.2 s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!(
            "{} ms",
            trim(us as f64 / 1e3, if us < 10_000 { 2 } else { 1 })
        )
    } else {
        format!("{} s", trim(us as f64 / 1e6, 2))
    }
}

/// A rate in requests per second: `12,500`, `950`, `12.5`.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    if r.abs() >= 100.0 {
        group_thousands(r.round() as i64)
    } else {
        trim(r, 1)
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from unix seconds (civil-from-days, no time zone database needed).
pub fn fmt_utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_us(850), "850 µs");
        assert_eq!(fmt_us(1_250), "1.25 ms");
        assert_eq!(fmt_us(10_000), "10 ms");
        assert_eq!(fmt_us(3_200_000), "3.2 s");
        assert_eq!(fmt_rate(12_500.4), "12,500");
        assert_eq!(fmt_rate(950.0), "950");
        assert_eq!(fmt_rate(12.5), "12.5");
        assert_eq!(fmt_rate(1_234_567.0), "1,234,567");
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=10_000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!((p.p50 as i64 - 5_000).abs() < 10, "{p:?}");
        assert!((p.p99 as i64 - 9_900).abs() < 10, "{p:?}");
        assert!(p.p9999 >= p.p999 && p.max >= p.p9999);
        let pts = quantile_points(&h, &h);
        assert!(pts.len() > 50 && pts.windows(2).all(|w| w[0].quantile < w[1].quantile));
        assert!(pts.last().unwrap().quantile >= 0.9999 - 1e-9);
    }
}
