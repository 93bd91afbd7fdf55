//! linkr-loadgen: an open-model load generator on goose (fixed arrival schedule, latency from
//! the intended send time), the knee search, profiles and reports around it.

pub mod cli;
pub mod compare;
pub mod driver;
pub mod engine;
pub mod environment;
pub mod error;
pub mod host_steal;
pub mod knee;
pub mod merge;
pub mod profile;
pub mod report;
pub mod scenarios;
pub mod schedule;
pub mod seed;
pub mod segment;
pub mod service_cpu;
pub mod spawn;
pub mod stats;
pub mod worker;
pub mod workers;

pub use driver::{ClientKind, StepConfig, StepResult, run_step, run_step_with};
pub use error::LoadgenError;
pub use scenarios::{Scenario, Seeds};
pub use schedule::Arrival;
pub use seed::seed_links;
pub use spawn::{Spawned, spawn_linkr};
pub use stats::{Percentiles, write_hgrm};
