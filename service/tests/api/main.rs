//! linkr's API tests: one binary, real sockets on port 0, a fresh store per test.

mod client_ip;
mod config;
mod deploy;
mod errors;
mod hardening;
mod helpers;
mod lifecycle;
mod links;
mod logging;
mod metrics;
mod probes;
mod ratelimit;
mod redirect;
mod security;
