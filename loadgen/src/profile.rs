//! What the knee run reads from linkr's admin listener: CPU profiles (`/debug/pprof/profile`),
//! Prometheus metrics (`/metrics`) for allocation deltas, and the allocator name (`/debug/allocs`);
//! and the flamegraphs drawn from folded stacks with inferno.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::path::Path;
use std::time::Duration;

use inferno::flamegraph::{self, color::MultiPalette, color::Palette};

use crate::report::{AllocRow, AllocationsView};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the folded profile holds no samples")]
    Empty,
}

/// Client of one linkr admin listener.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(admin_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            base: admin_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One CPU profile of `seconds` at `frequency` Hz in `format` (`pprof`, `folded` or `svg`),
    /// with the sampler that ran and its coverage from the response headers. The endpoint allows
    /// one capture at a time (409 otherwise).
    pub async fn capture(
        &self,
        seconds: u64,
        frequency: u32,
        format: &str,
    ) -> Result<Capture, ProfileError> {
        let url = format!(
            "{}/debug/pprof/profile?seconds={seconds}&frequency={frequency}&format={format}",
            self.base
        );
        let (body, headers) = self
            .get_with_headers(&url, Duration::from_secs(seconds + 30))
            .await?;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let number = |name: &str| text(name).and_then(|v| v.parse::<f64>().ok());
        Ok(Capture {
            body,
            mode: text("x-profile-mode"),
            samples: text("x-profile-samples").and_then(|v| v.parse().ok()),
            sampled_cpu_seconds: number("x-profile-sampled-cpu-seconds"),
            process_cpu_seconds: number("x-profile-process-cpu-seconds"),
            host_steal_seconds: number("x-profile-host-steal-seconds"),
        })
    }

    /// The Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String, ProfileError> {
        let url = format!("{}/metrics", self.base);
        let body = self.get(&url, Duration::from_secs(10)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The allocator linkr was built with, from `/debug/allocs` (`None` when not exposed).
    pub async fn allocator(&self) -> Option<String> {
        let url = format!("{}/debug/allocs", self.base);
        let body = self.get(&url, Duration::from_secs(5)).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let name = v.get("allocator")?.as_str()?.to_string();
        let counting = v
            .get("counting")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Some(if counting {
            format!("{name} (behind linkr's counting allocator)")
        } else {
            name
        })
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<bytes::Bytes, ProfileError> {
        Ok(self.get_with_headers(url, timeout).await?.0)
    }

    async fn get_with_headers(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<(bytes::Bytes, reqwest::header::HeaderMap), ProfileError> {
        let http = |source| ProfileError::Http {
            url: url.to_string(),
            source,
        };
        let resp = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(http)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(ProfileError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok((body, headers))
    }
}

/// One capture: the body in the format asked for, and what linkr's headers say about it (absent
/// from a linkr older than the `x-profile-mode` header).
#[derive(Debug, Clone)]
pub struct Capture {
    pub body: bytes::Bytes,
    /// The sampler that ran (`perf-events`, `thread-timers`, ...).
    pub mode: Option<String>,
    /// Samples, in sampling periods.
    pub samples: Option<u64>,
    pub sampled_cpu_seconds: Option<f64>,
    pub process_cpu_seconds: Option<f64>,
    /// CPU time the hypervisor took from linkr's machine during the window, all CPUs together.
    /// linkr's CPU time leaves it out and its perf sampler counts what fell on a running thread.
    pub host_steal_seconds: Option<f64>,
}

impl Capture {
    /// The samples' CPU time as a share of what linkr used over the window.
    pub fn coverage(&self) -> Option<f64> {
        let (sampled, used) = (self.sampled_cpu_seconds?, self.process_cpu_seconds?);
        (used > 0.0).then(|| sampled / used)
    }

    /// One sentence for the report: the sampler, and how much of linkr's CPU its samples cover.
    pub fn coverage_note(&self) -> Option<String> {
        let (sampled, used) = (self.sampled_cpu_seconds?, self.process_cpu_seconds?);
        let mode = self.mode.as_deref().unwrap_or("unknown sampler");
        let share = self
            .coverage()
            .map(|c| format!(" ({:.0}%)", c * 100.0))
            .unwrap_or_default();
        // Only perf's clock runs on through steal; the thread timers run on the CPU clocks.
        let steal = match self.host_steal_seconds {
            Some(s) if s > 0.0 => {
                let perf = if mode.starts_with("perf") {
                    ": linkr's CPU time leaves that out, a perf sampler counts what of it fell on \
                     a running thread"
                } else {
                    ""
                };
                format!(" The host took {s:.2} s of the machine's CPUs (steal){perf}.")
            }
            _ => String::new(),
        };
        Some(format!(
            "Sampler {mode}: the samples stand for {sampled:.2} s of the {used:.2} s of CPU \
             linkr used in the window{share}.{steal}"
        ))
    }
}

impl std::ops::Deref for Capture {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.body
    }
}

impl AsRef<[u8]> for Capture {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// Total sample count of folded stacks (`frame;frame;frame count` lines).
pub fn folded_samples(folded: &str) -> u64 {
    folded
        .lines()
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        })
        .sum()
}

fn options(title: &str, subtitle: Option<String>) -> flamegraph::Options<'static> {
    let mut opts = flamegraph::Options::default();
    opts.title = title.to_string();
    opts.subtitle = subtitle;
    opts.count_name = "samples".into();
    opts.colors = Palette::Multi(MultiPalette::Rust);
    opts.image_width = Some(1080);
    opts.deterministic = true;
    opts
}

/// `flamegraph.svg` from folded stacks.
pub fn render_flamegraph(folded: &str, title: &str, out: &Path) -> Result<(), ProfileError> {
    if folded_samples(folded) == 0 {
        return Err(ProfileError::Empty);
    }
    let mut opts = options(title, Some(format!("{} samples", folded_samples(folded))));
    let file = std::fs::File::create(out)?;
    flamegraph::from_lines(&mut opts, folded.lines(), io::BufWriter::new(file))?;
    Ok(())
}

/// Differential flamegraph: this run's shapes, coloured by the change from `baseline` (normalised
/// to the same total so a longer capture does not paint everything red).
pub fn render_diff_flamegraph(
    baseline: &Path,
    folded: &str,
    title: &str,
    out: &Path,
) -> Result<(), ProfileError> {
    let before = BufReader::new(std::fs::File::open(baseline)?);
    let mut diff = Vec::new();
    let opts = inferno::differential::Options {
        normalize: true,
        strip_hex: true,
    };
    inferno::differential::from_readers(opts, before, folded.as_bytes(), &mut diff)?;
    let diff = String::from_utf8_lossy(&diff).into_owned();
    let mut opts = options(
        title,
        Some(format!(
            "red: more samples than {}, blue: fewer",
            baseline.display()
        )),
    );
    let file = std::fs::File::create(out)?;
    flamegraph::from_lines(&mut opts, diff.lines(), io::BufWriter::new(file))?;
    Ok(())
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format (comments skipped, timestamps ignored).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) if line[..open].find(' ').is_none() => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        _ => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    c => c,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(eq + 1 + i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((key, value));
        rest = &rest[end?..];
    }
}

fn by_route(samples: &[Sample], name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if let Some(route) = s.label("route") {
            *out.entry(route.to_string()).or_insert(0.0) += s.value;
        }
    }
    out
}

fn total(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let sum = samples
        .iter()
        .filter(|s| s.name == name)
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(sum)
}

/// Allocations (and bytes) per request per route over a window, from two `/metrics` scrapes:
/// `linkr_request_allocations_{sum,count}` and `linkr_request_allocated_bytes_sum` by route, plus a
/// whole-process row from `linkr_allocations_total` / `linkr_http_requests_total`.
pub fn allocations_delta(before: &[Sample], after: &[Sample]) -> AllocationsView {
    let delta = |name: &str| -> BTreeMap<String, f64> {
        let b = by_route(before, name);
        by_route(after, name)
            .into_iter()
            .map(|(k, v)| (k.clone(), v - b.get(&k).copied().unwrap_or(0.0)))
            .collect()
    };
    let counts = delta("linkr_request_allocations_count");
    let allocs = delta("linkr_request_allocations_sum");
    let bytes = delta("linkr_request_allocated_bytes_sum");
    let mut rows: Vec<AllocRow> = counts
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(route, n)| AllocRow {
            route: route.clone(),
            requests: *n,
            allocs_per_request: allocs.get(route).map(|a| a / n),
            bytes_per_request: bytes.get(route).map(|b| b / n),
        })
        .collect();
    rows.sort_by(|a, b| b.requests.total_cmp(&a.requests));

    let process = (|| {
        let allocs =
            total(after, "linkr_allocations_total")? - total(before, "linkr_allocations_total")?;
        let requests = total(after, "linkr_http_requests_total")?
            - total(before, "linkr_http_requests_total")?;
        let bytes = total(after, "linkr_allocated_bytes_total")
            .zip(total(before, "linkr_allocated_bytes_total"))
            .map(|(a, b)| a - b);
        (requests > 0.0).then(|| AllocRow {
            route: "whole process (incl. background tasks)".into(),
            requests,
            allocs_per_request: Some(allocs / requests),
            bytes_per_request: bytes.map(|b| b / requests),
        })
    })();

    let found_routes = !rows.is_empty();
    rows.extend(process);
    let note = if rows.is_empty() {
        Some("linkr's /metrics exposed no per-route allocation histograms (linkr_request_allocations) in the window.".into())
    } else if !found_routes {
        Some("No per-route allocation histograms: only the whole-process figure.".into())
    } else {
        None
    };
    AllocationsView {
        rows,
        source: "Deltas of linkr's /metrics scraped before and after the profile window at the knee rate: \
                 linkr_request_allocations_sum / _count and linkr_request_allocated_bytes_sum by route \
                 (allocations made while a request's future was polled)."
            .into(),
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP linkr_request_allocations Heap allocations
# TYPE linkr_request_allocations histogram
linkr_request_allocations_bucket{route="/{code}",le="0"} 10
linkr_request_allocations_sum{route="/{code}"} 0
linkr_request_allocations_count{route="/{code}"} 10
linkr_request_allocations_sum{route="/v1/links"} 100
linkr_request_allocations_count{route="/v1/links"} 5
linkr_request_allocated_bytes_sum{route="/v1/links"} 5000
linkr_allocations_total 1000
linkr_allocated_bytes_total 64000
linkr_http_requests_total{route="/{code}",method="GET",status="3xx"} 10
linkr_http_requests_total{route="/v1/links",method="POST",status="2xx"} 5
"#;
    const AFTER: &str = r#"linkr_request_allocations_sum{route="/{code}"} 0
linkr_request_allocations_count{route="/{code}"} 1010
linkr_request_allocations_sum{route="/v1/links"} 340
linkr_request_allocations_count{route="/v1/links"} 25
linkr_request_allocated_bytes_sum{route="/v1/links"} 25000
linkr_allocations_total 3040
linkr_allocated_bytes_total 128000
linkr_http_requests_total{route="/{code}",method="GET",status="3xx"} 1010
linkr_http_requests_total{route="/v1/links",method="POST",status="2xx"} 25
"#;

    #[test]
    fn parses_names_labels_values() {
        let s = parse_prometheus(
            r#"a_total{x="1",y="q\"uote, }"} 12.5 1700000000
b 3
# comment
c{} +Inf"#,
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].label("y"), Some(r#"q"uote, }"#));
        assert_eq!(s[0].value, 12.5);
        assert_eq!(
            s[1],
            Sample {
                name: "b".into(),
                labels: vec![],
                value: 3.0
            }
        );
        assert!(s[2].value.is_infinite());
    }

    #[test]
    fn allocation_deltas_per_route() {
        let v = allocations_delta(&parse_prometheus(BEFORE), &parse_prometheus(AFTER));
        assert_eq!(v.rows.len(), 3, "{v:?}");
        assert_eq!(v.rows[0].route, "/{code}");
        assert_eq!(v.rows[0].requests, 1000.0);
        assert_eq!(v.rows[0].allocs_per_request, Some(0.0));
        assert_eq!(v.rows[1].route, "/v1/links");
        assert_eq!(v.rows[1].allocs_per_request, Some(12.0));
        assert_eq!(v.rows[1].bytes_per_request, Some(1000.0));
        assert_eq!(v.rows[2].allocs_per_request, Some(2.0));
        assert!(v.note.is_none());
    }

    #[test]
    fn capture_reports_mode_and_coverage() {
        let c = Capture {
            body: bytes::Bytes::from_static(b"a;b 3\n"),
            mode: Some("perf-events".into()),
            samples: Some(490),
            sampled_cpu_seconds: Some(4.9),
            process_cpu_seconds: Some(4.94),
            host_steal_seconds: Some(0.0),
        };
        assert_eq!(&*c, b"a;b 3\n");
        assert!((c.coverage().unwrap() - 0.9919).abs() < 1e-3);
        assert_eq!(
            c.coverage_note().unwrap(),
            "Sampler perf-events: the samples stand for 4.90 s of the 4.94 s of CPU linkr used \
             in the window (99%)."
        );
        let stolen = Capture {
            sampled_cpu_seconds: Some(5.3),
            host_steal_seconds: Some(0.41),
            ..c.clone()
        };
        assert_eq!(
            stolen.coverage_note().unwrap(),
            "Sampler perf-events: the samples stand for 5.30 s of the 4.94 s of CPU linkr used \
             in the window (107%). The host took 0.41 s of the machine's CPUs (steal): linkr's \
             CPU time leaves that out, a perf sampler counts what of it fell on a running thread."
        );
        let timers = Capture {
            mode: Some("thread-timers".into()),
            ..stolen
        };
        assert!(
            timers
                .coverage_note()
                .unwrap()
                .ends_with("(107%). The host took 0.41 s of the machine's CPUs (steal).")
        );
        let old_linkr = Capture {
            mode: None,
            sampled_cpu_seconds: None,
            ..c
        };
        assert_eq!(old_linkr.coverage_note(), None);
    }

    #[test]
    fn flamegraphs_from_folded() {
        let dir = tempfile::tempdir().unwrap();
        let folded = "main;serve;resolve 30\nmain;serve;encode 10\nmain;idle 5\n";
        assert_eq!(folded_samples(folded), 45);
        let out = dir.path().join("f.svg");
        render_flamegraph(folded, "test", &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("<svg") && svg.contains("resolve"));
        let base = dir.path().join("base.folded");
        std::fs::write(&base, "main;serve;resolve 10\nmain;serve;encode 30\n").unwrap();
        let diff = dir.path().join("d.svg");
        render_diff_flamegraph(&base, folded, "diff", &diff).unwrap();
        assert!(std::fs::read_to_string(&diff).unwrap().contains("resolve"));
        assert!(matches!(
            render_flamegraph("", "x", &out),
            Err(ProfileError::Empty)
        ));
    }
}
