//! JSON responses serialised straight into pooled buffers and handed to the body without a copy.
//!
//! Buffers come from a bounded `object-pool`. Each response is split off the front
//! of a pooled `BytesMut` and frozen into the body (an O(1) reference-count
//! operation); the rest of the buffer goes back to the pool. When a buffer runs
//! low, `reserve` reclaims its whole allocation in place once every body cut from it
//! has been written and dropped, so a steady stream of responses allocates no body
//! buffers at all. Oversized buffers are dropped instead of pooled.

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use object_pool::Pool;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Capacity of a pooled buffer: many small JSON bodies are cut from one.
pub const BUFFER_CAPACITY: usize = 16 * 1024;
/// Free space ensured before encoding; larger bodies grow the buffer as they are written.
const MIN_FREE: usize = 1024;
/// At most this many idle buffers are kept.
pub const MAX_IDLE_BUFFERS: usize = 64;
/// Buffers that grew beyond this (one huge body) are dropped, not pooled.
const MAX_POOLED_CAPACITY: usize = 256 * 1024;

const INTERNAL_ERROR_BODY: &[u8] =
    br#"{"error":"internal","message":"the response could not be encoded"}"#;

static POOL: LazyLock<BufferPool> =
    LazyLock::new(|| BufferPool::new(MAX_IDLE_BUFFERS, BUFFER_CAPACITY));

/// `status` with `value` as an `application/json` body.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match encode_json(value) {
        Ok(body) => bytes_response(status, body),
        Err(err) => {
            tracing::error!(error = %err, "failed to encode a JSON response");
            bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(INTERNAL_ERROR_BODY),
            )
        }
    }
}

/// `value` as JSON in a buffer cut from the shared pool.
pub fn encode_json<T: Serialize>(value: &T) -> serde_json::Result<Bytes> {
    POOL.encode_json(value)
}

fn bytes_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A bounded pool of `BytesMut` buffers from which response bodies are cut.
pub struct BufferPool {
    pool: Pool<BytesMut>,
    idle: AtomicUsize,
    max_idle: usize,
    capacity: usize,
}

impl BufferPool {
    pub fn new(max_idle: usize, capacity: usize) -> Self {
        Self {
            pool: Pool::new(0, BytesMut::new),
            idle: AtomicUsize::new(0),
            max_idle,
            capacity,
        }
    }

    /// A buffer, empty and with at least some free capacity, back in the pool on drop.
    pub fn pull(&self) -> PooledBuf<'_> {
        let buf = match self.pool.try_pull() {
            Some(buf) => {
                self.idle.fetch_sub(1, Ordering::Relaxed);
                buf.detach().1
            }
            None => BytesMut::with_capacity(self.capacity),
        };
        PooledBuf {
            pool: self,
            buf,
            discard: false,
        }
    }

    pub fn encode_json<T: Serialize>(&self, value: &T) -> serde_json::Result<Bytes> {
        let mut buf = self.pull();
        buf.reserve(MIN_FREE);
        serde_json::to_writer((&mut *buf).writer(), value)?;
        let body = buf.split().freeze();
        // The rest of the buffer shares the body's allocation: don't pin a huge one.
        buf.discard |= body.len() > MAX_POOLED_CAPACITY;
        Ok(body)
    }

    /// Idle buffers currently held.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    fn give_back(&self, mut buf: BytesMut) {
        let reserved = self
            .idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_idle).then_some(n + 1)
            });
        if reserved.is_ok() {
            buf.clear();
            self.pool.attach(buf);
        }
    }
}

/// A pooled buffer; returned (cleared) to its pool when dropped, unless the pool is full.
pub struct PooledBuf<'a> {
    pool: &'a BufferPool,
    buf: BytesMut,
    discard: bool,
}

impl PooledBuf<'_> {
    /// Drop this buffer instead of returning it to the pool.
    pub fn discard(&mut self) {
        self.discard = true;
    }
}

impl std::ops::Deref for PooledBuf<'_> {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        if self.discard {
            return;
        }
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Link<'a> {
        code: &'a str,
        url: &'a str,
        clicks: u64,
    }

    #[tokio::test]
    async fn json_response_has_status_content_type_and_body() {
        let response = json_response(
            StatusCode::CREATED,
            &Link {
                code: "abc",
                url: "https://example.com/",
                clicks: 3,
            },
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"code":"abc","url":"https://example.com/","clicks":3}"#
        );
    }

    #[test]
    fn bodies_cut_from_one_buffer_stay_independent() {
        let pool = BufferPool::new(4, 256);
        let a = pool.encode_json(&"first").unwrap();
        let b = pool.encode_json(&"second").unwrap();
        assert_eq!(&a[..], br#""first""#);
        assert_eq!(&b[..], br#""second""#);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_clean() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error, SerializeSeq};
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element("partial")?;
                Err(S::Error::custom("boom"))
            }
        }
        let pool = BufferPool::new(4, 256);
        assert!(pool.encode_json(&Fails).is_err());
        assert_eq!(&pool.encode_json(&1).unwrap()[..], b"1");
    }

    #[test]
    fn the_pool_keeps_at_most_max_idle_buffers() {
        let pool = BufferPool::new(2, 64);
        let held: Vec<_> = (0..5).map(|_| pool.pull()).collect();
        drop(held);
        assert_eq!(pool.idle(), 2);
        assert_eq!(pool.pool.len(), 2);
    }

    #[test]
    fn oversized_buffers_are_not_pooled() {
        let pool = BufferPool::new(2, 64);
        let big = vec!["x".repeat(1024); 300];
        let body = pool.encode_json(&big).unwrap();
        assert!(body.len() > MAX_POOLED_CAPACITY);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_buffer_is_reclaimed_once_its_bodies_are_dropped() {
        let pool = BufferPool::new(1, 4096);
        let first = pool.encode_json(&"x").unwrap();
        let start = first.as_ptr();
        drop(first);
        for _ in 0..1000 {
            drop(pool.encode_json(&"some body of moderate size").unwrap());
        }
        let again = pool.encode_json(&"x").unwrap();
        let reused = (start as usize..start as usize + 4096).contains(&(again.as_ptr() as usize));
        assert!(reused, "the pooled allocation should be reused in place");
    }
}
