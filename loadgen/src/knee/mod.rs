//! `loadgen knee`: find the highest arrival rate the service sustains inside its latency
//! objective, profile it there, and write the report.
//!
//! - [`search`]: the rate search, pure: ramp by doubling, then bisect to 5%, within a step budget (12 by default);
//! - [`judge`]: a step passes, fails, or is inconclusive when the generator lagged;
//! - [`bound`]: what bound the knee, the service or the generator, and the evidence;
//! - [`recovery`]: after a step that did not pass, the target drains and must be back near its
//!   baseline before the next step, so that no step is judged on the one before;
//! - [`run`]: the orchestration; [`step`], [`profile_window`], [`progress`] and [`output`] its
//!   parts: one step's record, the profile at the knee, the lines on stderr, the report files;
//!   [`findings`] what they hand on (the target, the baseline, the steps, the outcome).
//!
//! The flags are [`crate::cli::KneeArgs`].

pub mod bound;
pub mod findings;
pub mod judge;
mod output;
pub mod profile_window;
mod progress;
pub mod recovery;
pub mod run;
pub mod search;
pub mod step;

pub use bound::{Bound, decide_bound};
pub use findings::{Outcome, Target};
pub use judge::{Criteria, Observation, StepOutcome, Verdict};
pub use run::{run, run_against};
pub use search::{Search, SearchEnd, SearchPlan, TOLERANCE, round_rate};
