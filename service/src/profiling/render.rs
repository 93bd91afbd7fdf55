//! A [`Profile`] as gzipped pprof protobuf (the `pprof` crate's message types), folded stacks, or
//! an inferno flamegraph; an SVG of its own when there are no samples.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;

use pprof::protos::{self, Message as _};

use super::{Mode, Profile, ProfileError};

impl Profile {
    /// CPU the samples stand for as a share of the CPU the process used (`None` when it used
    /// none).
    pub fn coverage(&self) -> Option<f64> {
        let cpu = self.cpu_time().as_secs_f64();
        (cpu > 0.0).then(|| self.sampled_time().as_secs_f64() / cpu)
    }

    /// One line saying how much of the process's CPU the samples stand for, and which sampler
    /// took them.
    pub fn coverage_line(&self) -> String {
        let mut line = format!(
            "{}: samples stand for {:.3} s of the {:.3} s of CPU the process used",
            self.mode().as_str(),
            self.sampled_time().as_secs_f64(),
            self.cpu_time().as_secs_f64()
        );
        if let Some(c) = self.coverage() {
            let _ = write!(line, " ({:.0}%)", c * 100.0);
        }
        line.push_str(match self.mode() {
            Mode::PerfEvents => "; kernel frames end in _[k]",
            Mode::PerfEventsUserOnly => "; samples in the kernel (system calls) are not seen",
            Mode::ThreadTimers => "; system calls end at their libc wrapper",
            Mode::Itimer => "; samples in libc (system calls) are dropped",
        });
        if self.lost() > 0 {
            let _ = write!(line, "; {} samples lost (buffer full)", self.lost());
        }
        if let Some(steal) = self.host_steal().filter(|s| !s.is_zero()) {
            let _ = write!(
                line,
                "; the host took {:.2} s of this machine's CPUs (steal){}",
                steal.as_secs_f64(),
                match self.mode() {
                    Mode::PerfEvents | Mode::PerfEventsUserOnly =>
                        ", which perf's clock counts as the threads' own",
                    _ => "",
                }
            );
        }
        line
    }

    /// Folded stacks, the thread name as the root frame; sorted, one stack a line.
    pub fn folded(&self) -> String {
        let mut lines: BTreeMap<String, u64> = BTreeMap::new();
        for stack in self.stacks() {
            let mut line = String::with_capacity(64 * stack.frames.len());
            line.push_str(&stack.thread);
            for frame in &stack.frames {
                line.push(';');
                line.push_str(frame);
            }
            *lines.entry(line).or_default() += stack.samples;
        }
        let mut out = String::new();
        for (line, count) in lines {
            let _ = writeln!(out, "{line} {count}");
        }
        out
    }

    /// The pprof message: `samples/count` and `cpu/nanoseconds` per stack, labelled with the
    /// thread name; one location per function.
    pub fn pprof(&self) -> protos::Profile {
        let mut strings = Strings::default();
        let value_type = |strings: &mut Strings, ty: &str, unit: &str| protos::ValueType {
            ty: strings.id(ty),
            unit: strings.id(unit),
        };
        let sample_type = vec![
            value_type(&mut strings, "samples", "count"),
            value_type(&mut strings, "cpu", "nanoseconds"),
        ];
        let period_type = Some(value_type(&mut strings, "cpu", "nanoseconds"));
        let thread_key = strings.id("thread");
        let mut functions: Vec<protos::Function> = Vec::new();
        let mut locations: Vec<protos::Location> = Vec::new();
        let mut location_of: HashMap<&str, u64> = HashMap::new();
        let period_ns = self.period().as_nanos() as i64;
        let mut samples = Vec::with_capacity(self.stacks().len());
        for stack in self.stacks() {
            let location_id = stack
                .frames
                .iter()
                .rev()
                .map(|frame| {
                    *location_of.entry(frame).or_insert_with(|| {
                        let id = locations.len() as u64 + 1;
                        let name = strings.id(frame);
                        functions.push(protos::Function {
                            id,
                            name,
                            system_name: name,
                            ..Default::default()
                        });
                        locations.push(protos::Location {
                            id,
                            line: vec![protos::Line {
                                function_id: id,
                                line: 0,
                            }],
                            ..Default::default()
                        });
                        id
                    })
                })
                .collect();
            let n = i64::try_from(stack.samples).unwrap_or(i64::MAX);
            samples.push(protos::Sample {
                location_id,
                value: vec![n, n.saturating_mul(period_ns)],
                label: vec![protos::Label {
                    key: thread_key,
                    str: strings.id(&stack.thread),
                    ..Default::default()
                }],
            });
        }
        let comment = vec![strings.id(&self.coverage_line())];
        let time_nanos = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        protos::Profile {
            sample_type,
            sample: samples,
            location: locations,
            function: functions,
            string_table: strings.table,
            time_nanos,
            duration_nanos: self.duration().as_nanos() as i64,
            period_type,
            period: period_ns,
            comment,
            ..Default::default()
        }
    }

    /// Gzipped pprof protobuf.
    pub fn pprof_gz(&self) -> Result<Vec<u8>, ProfileError> {
        let raw = self.pprof().encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 3 + 64),
            flate2::Compression::default(),
        );
        gz.write_all(&raw)
            .and_then(|()| gz.finish())
            .map_err(|e| ProfileError::Failed(e.to_string()))
    }

    fn title(&self) -> String {
        format!(
            "linkr CPU profile: {:.1} s at {} Hz, {} samples",
            self.duration().as_secs_f64(),
            self.frequency(),
            self.samples()
        )
    }

    /// Inferno flamegraph of [`Profile::folded`]; with no samples, an SVG that says so and how
    /// much CPU the process used.
    pub fn svg(&self) -> Result<Vec<u8>, ProfileError> {
        let folded = self.folded();
        if folded.is_empty() {
            return Ok(self.empty_svg().into_bytes());
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = self.title();
        opts.subtitle = Some(self.coverage_line());
        opts.count_name = "samples".into();
        let mut out = Vec::with_capacity(64 * 1024);
        inferno::flamegraph::from_lines(&mut opts, folded.lines(), &mut out)
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        Ok(out)
    }

    fn empty_svg(&self) -> String {
        let lines = [
            self.title(),
            format!(
                "no samples: the process used {:.3} s of CPU in this {:.1} s window ({})",
                self.cpu_time().as_secs_f64(),
                self.duration().as_secs_f64(),
                self.mode().as_str()
            ),
            format!(
                "one sample per {:.1} ms of a thread's CPU time: raise the frequency or the \
                 duration, or add load",
                self.period().as_secs_f64() * 1e3
            ),
        ];
        let mut svg = String::from(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" \
             height=\"110\" xmlns=\"http://www.w3.org/2000/svg\">\n<rect width=\"100%\" \
             height=\"100%\" fill=\"#eeeeee\"/>\n",
        );
        for (i, line) in lines.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"600\" y=\"{}\" text-anchor=\"middle\" font-family=\"Verdana\" \
                 font-size=\"{}\">{}</text>",
                30 + 28 * i,
                if i == 0 { 17 } else { 13 },
                escape(line)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The pprof string table: index 0 is the empty string.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Self {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn profile(mode: Mode, host_steal: Option<Duration>) -> Profile {
        Profile {
            mode,
            frequency: 100,
            period: Duration::from_millis(10),
            started: std::time::SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(1),
            cpu_time: Duration::from_millis(500),
            host_steal,
            stacks: Vec::new(),
            threads: Vec::new(),
            lost: 0,
        }
    }

    #[test]
    fn the_host_s_steal_is_in_the_coverage_line_and_what_it_does_to_perf() {
        let stolen = Some(Duration::from_millis(120));
        let line = profile(Mode::PerfEvents, stolen).coverage_line();
        assert!(
            line.ends_with(
                "; the host took 0.12 s of this machine's CPUs (steal), which perf's clock \
                 counts as the threads' own"
            ),
            "{line}"
        );
        let line = profile(Mode::ThreadTimers, stolen).coverage_line();
        assert!(
            line.ends_with("; the host took 0.12 s of this machine's CPUs (steal)"),
            "{line}"
        );
        for none in [None, Some(Duration::ZERO)] {
            let line = profile(Mode::PerfEvents, none).coverage_line();
            assert!(!line.contains("steal"), "{line}");
        }
    }
}
