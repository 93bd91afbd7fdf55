//! What a knee run found, as the report reads it: the target, the warm-up's baseline, the steps
//! of the search, and the outcome.

use std::path::PathBuf;

use serde_json::Value;

use super::bound::Bound;
use super::recovery::{Probe, Recovery};
use super::search::{Search, SearchEnd};
use super::step::StepRecord;
use crate::environment::ServiceFacts;

/// Where the load goes and what we know about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub base_url: String,
    pub admin_url: Option<String>,
    pub api_key: Option<String>,
    pub service: ServiceFacts,
}

/// What a finished knee run found (also what `summary.json` holds).
pub struct Outcome {
    pub summary: Value,
    pub knee_rate: Option<f64>,
    pub knee_p99_us: Option<u64>,
    pub bound: Bound,
    pub end: SearchEnd,
    pub out: PathBuf,
}

/// What the warm-up did: its baseline probes and whether Ctrl-C cut it short.
pub struct WarmUp {
    /// The lower p99 of the probes before and after the warm-up traffic.
    pub baseline_p99_us: Option<u64>,
    pub probes: Vec<Probe>,
    /// Probes after the warm-up when the second baseline probe was not back under the limit.
    pub recovery: Option<Recovery>,
    pub interrupted: bool,
}

/// The search's steps and state.
pub struct Searched {
    pub steps: Vec<StepRecord>,
    pub search: Search,
    pub interrupted: bool,
}

impl Searched {
    /// The step of the knee: the highest passing rate (its last step, if tried twice).
    pub fn knee(&self) -> Option<&StepRecord> {
        let rate = self.search.highest_pass()?;
        self.steps
            .iter()
            .rfind(|s| s.verdict.passed() && s.observation.rate_target == rate)
    }
}
