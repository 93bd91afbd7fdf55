//! Instrumentation over HTTP: the admin router (metrics, allocation counters, CPU profiles, log
//! level) in-process, next to a small app that uses `track_request` the way linkr's API does.

mod admin;
mod metrics;
mod profile;
mod support;
