//! linkr.
pub mod admin;
pub mod alloc;
pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod domain;
pub mod encode;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod profiling;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use app::{AppState, Listeners, api_router, run};
pub use config::Config;
pub use error::ApiError;
