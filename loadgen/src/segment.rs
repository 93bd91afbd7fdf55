//! Segments of one step's schedule: worker `I` of `N` sends the slots `k` with `k % N == I` of
//! one schedule (drawn from a shared seed), from a wall-clock start agreed in advance. Each
//! worker measures every request from its own intended time on its own clock: a clock skew
//! between machines shifts when a segment starts, not what it measures.
//!
//! A segment's result (`run --segment I/N --json FILE`) is the usual `run --json` object plus
//! `segment` (what identifies the schedule) and `histograms`: each histogram serialized as
//! HdrHistogram V2 + deflate, base64, so that [`crate::merge`] adds them exactly.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::driver::StepResult;
use crate::error::LoadgenError;
use crate::schedule::{Arrival, Schedule};

/// One segment of a step's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// This worker's index, `0..count`.
    pub index: u64,
    /// Workers sharing the schedule.
    pub count: u64,
    /// Seed of the schedule (Poisson offsets); every segment of a step has the same.
    pub seed: u64,
    /// Agreed start of the schedule (Unix milliseconds); `None`: when this worker is ready.
    pub start_at_unix_ms: Option<u64>,
}

/// Parses `I/N` (`0 <= I < N`).
pub fn parse_segment(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("invalid segment {s:?}: I/N with 0 <= I < N, e.g. 0/2");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n || n > 4096 {
        return Err(bad());
    }
    Ok((i, n))
}

/// Now, in Unix milliseconds.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How late after the agreed start a worker may still start (later: it starts at once and says
/// so on stderr; its requests still count from its own intended times).
pub const START_LATE_WARN: Duration = Duration::from_millis(10);

impl Segment {
    /// Slots of this segment in a schedule of `len` slots.
    pub fn slots(&self, len: u64) -> u64 {
        if len > self.index {
            (len - self.index).div_ceil(self.count)
        } else {
            0
        }
    }

    /// This segment's fraction of the schedule's slots.
    pub fn share(&self, arrival: Arrival, rate: f64, duration: Duration) -> f64 {
        let len = Schedule::seeded(arrival, rate, duration, self.seed).len();
        if len == 0 {
            1.0 / self.count as f64
        } else {
            self.slots(len) as f64 / len as f64
        }
    }

    /// The agreed start on this process's monotonic clock.
    pub fn start_instant(&self) -> Result<Option<Instant>, LoadgenError> {
        let Some(at) = self.start_at_unix_ms else {
            return Ok(None);
        };
        let (now_i, now_ms) = (Instant::now(), unix_ms_now());
        if at >= now_ms {
            return Ok(Some(now_i + Duration::from_millis(at - now_ms)));
        }
        let late = Duration::from_millis(now_ms - at);
        if late > Duration::from_secs(60) {
            return Err(LoadgenError::Usage(format!(
                "--start-at {at} is {:.1} s in the past",
                late.as_secs_f64()
            )));
        }
        if late > START_LATE_WARN {
            eprintln!(
                "loadgen: segment {}/{} starts {} ms after the agreed time (its requests count from its own intended times)",
                self.index,
                self.count,
                late.as_millis()
            );
        }
        Ok(Some(now_i))
    }
}

/// What identifies the schedule a segment belongs to (merge checks every field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub index: u64,
    pub count: u64,
    pub seed: u64,
    pub start_at_unix_ms: Option<u64>,
    /// The whole schedule's rate (requests/s) and length (slots).
    pub rate: f64,
    pub duration_s: f64,
    pub arrival: String,
    pub scenario: String,
    pub target: String,
    pub schedule_len: u64,
    /// This segment's slots.
    pub slots: u64,
}

/// A step's histograms, V2 + deflate, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histograms {
    pub corrected: String,
    pub uncorrected: String,
    pub send_lag: String,
    pub generator_lag: String,
    pub runtime_lag: String,
    /// Absent when the segment's client had no receive timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_delay: Option<String>,
}

/// A segment's result as written by `run --segment ... --json FILE`.
#[derive(Serialize)]
pub struct SegmentResult<'a> {
    #[serde(flatten)]
    pub result: &'a StepResult,
    pub segment: SegmentInfo,
    pub histograms: Histograms,
}

/// Serializes `h` as HdrHistogram V2 + deflate, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into memory");
    STANDARD.encode(buf)
}

/// The histogram [`encode`] wrote.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("histogram does not decode (V2 + deflate): {e:?}"))
}

impl Histograms {
    pub fn of(r: &StepResult) -> Self {
        Self {
            corrected: encode(&r.corrected),
            uncorrected: encode(&r.uncorrected),
            send_lag: encode(&r.send_lag),
            generator_lag: encode(&r.generator_lag),
            runtime_lag: encode(&r.runtime_lag),
            read_delay: r.read_delay.as_ref().map(encode),
        }
    }
}

impl SegmentInfo {
    /// The identity of `seg` in a step of `rate` for `duration`.
    pub fn new(
        seg: &Segment,
        r: &StepResult,
        rate: f64,
        duration: Duration,
        schedule_len: u64,
    ) -> Self {
        Self {
            index: seg.index,
            count: seg.count,
            seed: seg.seed,
            start_at_unix_ms: seg.start_at_unix_ms,
            rate,
            duration_s: duration.as_secs_f64(),
            arrival: r.arrival.to_string(),
            scenario: r.scenario.to_string(),
            target: r.target.clone(),
            schedule_len,
            slots: seg.slots(schedule_len),
        }
    }
}

/// The JSON of a segment's result.
pub fn to_json(seg: &Segment, r: &StepResult, rate: f64, duration: Duration) -> String {
    let len = Schedule::seeded(r.arrival, rate, duration, seg.seed).len();
    let out = SegmentResult {
        result: r,
        segment: SegmentInfo::new(seg, r, rate, duration, len),
        histograms: Histograms::of(r),
    };
    serde_json::to_string_pretty(&out).expect("a segment result serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_every_slot_once() {
        for len in [0u64, 1, 7, 10, 1001] {
            for n in 1..5u64 {
                let total: u64 = (0..n)
                    .map(|i| {
                        Segment {
                            index: i,
                            count: n,
                            seed: 1,
                            start_at_unix_ms: None,
                        }
                        .slots(len)
                    })
                    .sum();
                assert_eq!(total, len, "len {len} n {n}");
            }
        }
        assert_eq!(parse_segment("1/3"), Ok((1, 3)));
        assert!(parse_segment("3/3").is_err());
        assert!(parse_segment("0/0").is_err());
        assert!(parse_segment("x").is_err());
    }

    #[test]
    fn histograms_round_trip() {
        let mut h = crate::stats::new_histogram();
        for v in [1u64, 5, 900, 12_345, 3_000_000] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
    }
}
