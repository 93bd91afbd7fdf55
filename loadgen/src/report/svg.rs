//! Hand-drawn inline SVG charts for the knee report (no scripts, no external fetches).

use std::fmt::Write as _;

use super::{escape, fmt_rate, fmt_us};

const WIDTH: f64 = 1060.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 58.0;

pub const CORRECTED: &str = "#1f5fbf";
pub const UNCORRECTED: &str = "#8c96a3";
pub const SLO: &str = "#c0392b";
pub const KNEE: &str = "#1e8449";
pub const FAIL: &str = "#c0392b";
pub const INCONCLUSIVE: &str = "#d68910";

/// One load step as a point of the latency-vs-throughput curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub p99_corrected_us: u64,
    pub p99_uncorrected_us: u64,
    pub pass: bool,
    /// The generator lagged: neither pass nor fail.
    pub inconclusive: bool,
}

/// Corrected and uncorrected latency at one quantile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct QuantilePoint {
    pub quantile: f64,
    pub corrected_us: u64,
    pub uncorrected_us: u64,
}

struct Frame {
    plot_w: f64,
    plot_h: f64,
}

impl Frame {
    fn new() -> Self {
        Self {
            plot_w: WIDTH - LEFT - RIGHT,
            plot_h: HEIGHT - TOP - BOTTOM,
        }
    }
}

fn open_svg(out: &mut String, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}" font-family="system-ui, sans-serif" font-size="12">"#,
        escape(label)
    );
    let _ = write!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#fbfcfd" stroke="#c9d1d9"/>"##,
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    );
}

/// Latency (log scale) against achieved throughput, corrected and uncorrected p99, the SLO line and
/// the knee marked.
pub fn latency_vs_throughput(
    points: &[CurvePoint],
    slo_us: u64,
    knee: Option<&CurvePoint>,
) -> String {
    let frame = Frame::new();
    let mut out = String::with_capacity(8 * 1024);
    open_svg(&mut out, "p99 latency against achieved throughput");
    if points.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no steps</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }

    let x_max = points
        .iter()
        .map(|p| p.rate_achieved.max(p.rate_target))
        .fold(1.0_f64, f64::max)
        * 1.05;
    let x_ticks = nice_ticks(0.0, x_max, 6);
    let x_hi = *x_ticks.last().unwrap_or(&x_max);
    let x_of = |v: f64| LEFT + v / x_hi * frame.plot_w;

    let lat_values = points
        .iter()
        .flat_map(|p| [p.p99_corrected_us, p.p99_uncorrected_us])
        .chain(std::iter::once(slo_us))
        .filter(|v| *v > 0);
    let (lo, hi) = lat_values.fold((u64::MAX, 1_u64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let decade_lo = decade_floor(lo.min(hi));
    let decade_hi = decade_ceil(hi.max(decade_lo * 10));
    let (log_lo, log_hi) = ((decade_lo as f64).log10(), (decade_hi as f64).log10());
    let y_of = |us: u64| {
        let v = (us.max(decade_lo) as f64).log10();
        TOP + frame.plot_h - (v - log_lo) / (log_hi - log_lo) * frame.plot_h
    };

    // grid and axes
    for t in &x_ticks {
        let x = x_of(*t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e6eaee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            TOP + frame.plot_h,
            TOP + frame.plot_h + 16.0,
            escape(&fmt_rate(*t))
        );
    }
    let mut decade = decade_lo;
    while decade <= decade_hi {
        let y = y_of(decade);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e6eaee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT + frame.plot_w,
            LEFT - 6.0,
            y + 4.0,
            escape(&fmt_us(decade))
        );
        decade = decade.saturating_mul(10);
        if decade == u64::MAX {
            break;
        }
    }
    axis_labels(
        &mut out,
        &frame,
        "achieved throughput (requests/s)",
        "p99 latency (log scale)",
    );

    // SLO line
    let y_slo = y_of(slo_us);
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" y1="{y_slo:.1}" x2="{:.1}" y2="{y_slo:.1}" stroke="{SLO}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{SLO}">SLO p99 {}</text>"#,
        LEFT + frame.plot_w,
        LEFT + frame.plot_w - 4.0,
        y_slo - 5.0,
        escape(&fmt_us(slo_us))
    );

    // knee marker (under the curves)
    if let Some(k) = knee {
        let x = x_of(k.rate_achieved);
        let _ = write!(
            out,
            r#"<line class="knee" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="{KNEE}" stroke-width="2" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" fill="{KNEE}" font-weight="bold">knee {} req/s</text>"#,
            TOP + frame.plot_h,
            x + 5.0,
            TOP + 14.0,
            escape(&fmt_rate(k.rate_target))
        );
    }

    let mut sorted: Vec<&CurvePoint> = points.iter().collect();
    sorted.sort_by(|a, b| a.rate_target.total_cmp(&b.rate_target));
    let path = |value: &dyn Fn(&CurvePoint) -> u64| {
        let mut d = String::new();
        for (i, p) in sorted.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x_of(p.rate_achieved),
                y_of(value(p))
            );
        }
        d
    };
    let _ = write!(
        out,
        r#"<path class="uncorrected" d="{}" fill="none" stroke="{UNCORRECTED}" stroke-width="1.5" stroke-dasharray="5 3"/>"#,
        path(&|p| p.p99_uncorrected_us)
    );
    let _ = write!(
        out,
        r#"<path class="corrected" d="{}" fill="none" stroke="{CORRECTED}" stroke-width="2.2"/>"#,
        path(&|p| p.p99_corrected_us)
    );
    for p in &sorted {
        let x = x_of(p.rate_achieved);
        let _ = write!(
            out,
            r##"<circle cx="{x:.1}" cy="{:.1}" r="3" fill="#ffffff" stroke="{UNCORRECTED}" stroke-width="1.5"/>"##,
            y_of(p.p99_uncorrected_us)
        );
        let (fill, outcome) = match (p.pass, p.inconclusive) {
            (true, _) => (CORRECTED, "pass"),
            (false, true) => (INCONCLUSIVE, "inconclusive"),
            (false, false) => (FAIL, "fail"),
        };
        let _ = write!(
            out,
            r#"<circle cx="{x:.1}" cy="{:.1}" r="4.5" fill="{fill}"><title>target {} req/s, achieved {} req/s, p99 {} (uncorrected {}) {}</title></circle>"#,
            y_of(p.p99_corrected_us),
            escape(&fmt_rate(p.rate_target)),
            escape(&fmt_rate(p.rate_achieved)),
            escape(&fmt_us(p.p99_corrected_us)),
            escape(&fmt_us(p.p99_uncorrected_us)),
            outcome
        );
    }
    if let Some(k) = knee {
        let _ = write!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="8" fill="none" stroke="{KNEE}" stroke-width="2.5"/>"##,
            x_of(k.rate_achieved),
            y_of(k.p99_corrected_us)
        );
    }

    legend(
        &mut out,
        &[
            (CORRECTED, false, "p99 corrected (from intended send time)"),
            (UNCORRECTED, true, "p99 uncorrected (from actual send)"),
            (FAIL, false, "failed step"),
            (INCONCLUSIVE, false, "inconclusive (generator lagged)"),
        ],
    );
    out.push_str("</svg>");
    out
}

/// Latency by percentile (x on a "number of nines" scale), corrected and uncorrected.
pub fn percentile_distribution(points: &[QuantilePoint], slo_us: u64) -> String {
    let frame = Frame::new();
    let mut out = String::with_capacity(8 * 1024);
    open_svg(&mut out, "latency distribution at the knee");
    if points.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no samples</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }
    let nines = |q: f64| -(1.0 - q.min(0.999_999)).log10();
    let max_nines = points
        .iter()
        .map(|p| nines(p.quantile))
        .fold(2.0_f64, f64::max)
        .ceil();
    let x_of = |q: f64| LEFT + nines(q) / max_nines * frame.plot_w;
    let y_max_raw = points
        .iter()
        .map(|p| p.corrected_us.max(p.uncorrected_us))
        .max()
        .unwrap_or(1)
        .max(slo_us.min(u64::MAX / 2)) as f64;
    let y_ticks = nice_ticks(0.0, y_max_raw * 1.05, 6);
    let y_hi = *y_ticks.last().unwrap_or(&y_max_raw);
    let y_of = |us: u64| TOP + frame.plot_h - (us as f64 / y_hi) * frame.plot_h;

    for n in 0..=(max_nines as u32) {
        let q = 1.0 - 10f64.powi(-(n as i32));
        let x = x_of(q);
        let label = match n {
            0 => "0%".to_string(),
            _ => format!("{}%", trim_float(q * 100.0, n as usize)),
        };
        let anchor = if n == max_nines as u32 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e6eaee"/><text x="{x:.1}" y="{:.1}" text-anchor="{anchor}" fill="#444">{}</text>"##,
            TOP + frame.plot_h,
            TOP + frame.plot_h + 16.0,
            escape(&label)
        );
    }
    for t in &y_ticks {
        let y = y_of(*t as u64);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e6eaee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT + frame.plot_w,
            LEFT - 6.0,
            y + 4.0,
            escape(&fmt_us(*t as u64))
        );
    }
    axis_labels(&mut out, &frame, "percentile", "latency");

    if (slo_us as f64) <= y_hi {
        let y = y_of(slo_us);
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{SLO}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="{SLO}">SLO p99 {}</text>"#,
            LEFT + frame.plot_w,
            LEFT + 6.0,
            y - 5.0,
            escape(&fmt_us(slo_us))
        );
        let x99 = x_of(0.99);
        let _ = write!(
            out,
            r#"<line x1="{x99:.1}" y1="{TOP}" x2="{x99:.1}" y2="{:.1}" stroke="{SLO}" stroke-width="1" stroke-dasharray="2 4"/>"#,
            TOP + frame.plot_h
        );
    }

    let path = |value: &dyn Fn(&QuantilePoint) -> u64| {
        let mut d = String::new();
        for (i, p) in points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x_of(p.quantile),
                y_of(value(p))
            );
        }
        d
    };
    let _ = write!(
        out,
        r#"<path class="uncorrected" d="{}" fill="none" stroke="{UNCORRECTED}" stroke-width="1.5" stroke-dasharray="5 3"/>"#,
        path(&|p| p.uncorrected_us)
    );
    let _ = write!(
        out,
        r#"<path class="corrected" d="{}" fill="none" stroke="{CORRECTED}" stroke-width="2.2"/>"#,
        path(&|p| p.corrected_us)
    );
    legend(
        &mut out,
        &[
            (CORRECTED, false, "corrected"),
            (UNCORRECTED, true, "uncorrected"),
        ],
    );
    out.push_str("</svg>");
    out
}

fn axis_labels(out: &mut String, frame: &Frame, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#222">{}</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" fill="#222">{}</text>"##,
        LEFT + frame.plot_w / 2.0,
        HEIGHT - 22.0,
        escape(x_label),
        TOP + frame.plot_h / 2.0,
        escape(y_label)
    );
}

fn legend(out: &mut String, entries: &[(&str, bool, &str)]) {
    let mut x = LEFT;
    let y = HEIGHT - 8.0;
    for (colour, dashed, label) in entries {
        let dash = if *dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2.5"{dash}/><text x="{:.1}" y="{y:.1}" fill="#333">{}</text>"##,
            y - 4.0,
            x + 22.0,
            y - 4.0,
            x + 27.0,
            escape(label)
        );
        x += 40.0 + 6.3 * label.chars().count() as f64;
    }
}

/// Round tick positions covering `[lo, hi]` with about `n` intervals (1, 2, 5 × 10^k steps).
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut t = first;
    while t < hi + step * 0.999 && ticks.len() < 50 {
        ticks.push(t);
        if t >= hi {
            break;
        }
        t += step;
    }
    ticks
}

fn decade_floor(v: u64) -> u64 {
    let mut d = 1;
    while d * 10 <= v {
        d *= 10;
    }
    d
}

fn decade_ceil(v: u64) -> u64 {
    let mut d = 1_u64;
    while d < v {
        d = d.saturating_mul(10);
        if d == u64::MAX {
            break;
        }
    }
    d
}

fn trim_float(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.0, 4321.0, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 4321.0);
        assert!(
            t.windows(2).all(|w| (w[1] - w[0] - 1000.0).abs() < 1e-9),
            "{t:?}"
        );
    }

    #[test]
    fn decades() {
        assert_eq!(decade_floor(1), 1);
        assert_eq!(decade_floor(999), 100);
        assert_eq!(decade_ceil(1001), 10_000);
        assert_eq!(decade_ceil(1000), 1000);
    }

    #[test]
    fn charts_are_svg_with_both_series_and_knee() {
        let pts = [
            CurvePoint {
                rate_target: 1000.0,
                rate_achieved: 999.0,
                p99_corrected_us: 900,
                p99_uncorrected_us: 800,
                pass: true,
                inconclusive: false,
            },
            CurvePoint {
                rate_target: 2000.0,
                rate_achieved: 1500.0,
                p99_corrected_us: 900_000,
                p99_uncorrected_us: 5_000,
                pass: false,
                inconclusive: false,
            },
        ];
        let svg = latency_vs_throughput(&pts, 10_000, Some(&pts[0]));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains(r#"class="corrected""#)
                && svg.contains(r#"class="uncorrected""#)
                && svg.contains(r#"class="knee""#)
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");

        let q = [
            QuantilePoint {
                quantile: 0.5,
                corrected_us: 500,
                uncorrected_us: 400,
            },
            QuantilePoint {
                quantile: 0.999,
                corrected_us: 5000,
                uncorrected_us: 900,
            },
        ];
        let svg = percentile_distribution(&q, 10_000);
        assert!(svg.contains("99.9%") && !svg.contains("NaN"), "{svg}");
    }
}
