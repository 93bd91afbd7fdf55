//! The obvious alternatives linkr's hot paths are measured against, and fixtures.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use linkr::ratelimit::Instant;
use linkr::routes::links::LinkCreated;
use serde::Serialize;

/// A link as `POST /v1/links` returns it (the service's own body type), a typical size.
pub fn sample_link() -> LinkCreated<'static> {
    LinkCreated::example()
}

/// Length of [`sample_link`]'s JSON body.
pub fn sample_link_len() -> usize {
    serde_json::to_vec(&sample_link()).map_or(0, |v| v.len())
}

/// `serde_json::to_string`, then the string copied into the body.
pub fn to_string_copy<T: Serialize>(value: &T) -> Bytes {
    let json = serde_json::to_string(value).expect("serialisable");
    Bytes::copy_from_slice(json.as_bytes())
}

/// `serde_json::to_vec`, handed to the body without a copy (one fresh buffer per body).
pub fn to_vec_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("serialisable"))
}

/// A fresh `BytesMut` per body, written and frozen (what `axum::Json` does).
pub fn fresh_bytesmut<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    serde_json::to_writer((&mut buf).writer(), value).expect("serialisable");
    buf.freeze()
}

/// The textbook token bucket: fractional tokens and the last refill time under a mutex.
#[derive(Debug)]
pub struct MutexTokenBucket {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl MutexTokenBucket {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), now)),
        }
    }

    /// `Ok(remaining)` or `Err(retry_after)`.
    pub fn check(&self, now: Instant) -> Result<u32, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = (*last).max(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(*tokens as u32)
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}
