//! Response bodies.
//!
//! Measured (benches/benches/encode.rs, `scripts/bench.sh`):
//! - The link bodies (`POST /v1/links`, `GET /v1/links/{code}`) are written by hand
//!   ([`json`]) straight into this thread's `BytesMut` and split off as frozen `Bytes`
//!   ([`write_json_zero_copy`]): no copy, no allocation in steady state.
//! - Other bodies go through serde: serialised into a reused per-thread scratch buffer and
//!   copied into one exact-size body ([`encode_json`], one allocation, no atomics), which
//!   measured as fast as serde into the zero-copy buffer and never pins a shared buffer.
//! - [`BufferPool`] (a bounded `object-pool`) is kept for the comparison benches: its mutex
//!   makes it the slowest choice with mimalloc.
//!
//! Zero-copy buffers: each body is split off the front of a `BytesMut` and frozen (an O(1)
//! reference-count operation); when the buffer runs low, `reserve` reclaims its whole
//! allocation in place once every body cut from it has been dropped. Buffers that held a
//! huge body are dropped rather than kept.

pub mod json;

use std::cell::RefCell;
use std::io;
use std::sync::LazyLock;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use object_pool::Pool;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};

use self::json::{EncodeError, JsonWriter, WriteJson};

/// Capacity of a pooled buffer: many small JSON bodies are cut from one.
pub const BUFFER_CAPACITY: usize = 16 * 1024;
/// Free space ensured before encoding; larger bodies grow the buffer as they are written.
const MIN_FREE: usize = 1024;
/// At most this many idle buffers are kept.
pub const MAX_IDLE_BUFFERS: usize = 64;
/// Initial size of the per-thread scratch buffer.
const SCRATCH_CAPACITY: usize = 4 * 1024;
/// Buffers that grew beyond this (one huge body) are dropped, not pooled.
const MAX_POOLED_CAPACITY: usize = 256 * 1024;

const INTERNAL_ERROR_BODY: &[u8] =
    br#"{"error":"internal","message":"the response could not be encoded"}"#;

static POOL: LazyLock<BufferPool> =
    LazyLock::new(|| BufferPool::new(MAX_IDLE_BUFFERS, BUFFER_CAPACITY));

/// `status` with `value` as an `application/json` body.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    json_or_500(status, encode_json(value))
}

/// `status` with `value` written by its hand-written [`WriteJson`] as the body (zero-copy).
pub fn write_json_response<T: WriteJson>(status: StatusCode, value: &T) -> Response {
    json_or_500(status, write_json_zero_copy(value))
}

fn json_or_500(status: StatusCode, body: Result<Bytes, impl std::fmt::Display>) -> Response {
    match body {
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

/// `value`'s hand-written JSON, cut from this thread's buffer: no copy, no lock, no
/// allocation in steady state.
pub fn write_json_zero_copy<T: WriteJson>(value: &T) -> Result<Bytes, EncodeError> {
    zero_copy(|buf| value.write_json(&mut JsonWriter::new(buf)))
}

/// `value`'s hand-written JSON, written into this thread's buffer and copied into an
/// exact-size body (the comparison for [`write_json_zero_copy`]).
pub fn write_json_copy<T: WriteJson>(value: &T) -> Result<Bytes, EncodeError> {
    with_local_buffer(|buf| {
        buf.clear();
        let result = value.write_json(&mut JsonWriter::new(buf));
        let body = result.map(|()| Bytes::copy_from_slice(buf));
        buf.clear();
        body
    })
}

/// `value` as JSON: serialised into this thread's scratch buffer, copied into an exact-size body.
pub fn encode_json<T: Serialize>(value: &T) -> serde_json::Result<Bytes> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(SCRATCH_CAPACITY));
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            let result = serde_json::to_writer(&mut *scratch, value);
            let body = result.map(|()| Bytes::copy_from_slice(&scratch));
            if scratch.capacity() > MAX_POOLED_CAPACITY {
                *scratch = Vec::with_capacity(SCRATCH_CAPACITY);
            }
            body
        }
        // A `Serialize` impl that itself encodes a response: serialise on its own.
        Err(_) => serde_json::to_vec(value).map(Bytes::from),
    })
}

/// `value` as JSON in a buffer cut from the shared bounded `object-pool` (zero-copy).
pub fn encode_json_pooled<T: Serialize>(value: &T) -> serde_json::Result<Bytes> {
    POOL.encode_json(value)
}

/// `value` as JSON (serde) cut from this thread's own buffer: no lock, no allocation in
/// steady state.
pub fn encode_json_zero_copy<T: Serialize>(value: &T) -> serde_json::Result<Bytes> {
    zero_copy(|buf| serde_json::to_writer(BytesWriter(buf), value))
}

/// Runs `write` at the end of this thread's buffer and splits what it wrote off as frozen
/// `Bytes`. The buffer is left empty (also on error), sharing its allocation with the body.
fn zero_copy<E>(write: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<Bytes, E> {
    with_local_buffer(|buf| {
        let body = write_split(buf, write)?;
        if body.len() > MAX_POOLED_CAPACITY {
            *buf = BytesMut::with_capacity(BUFFER_CAPACITY);
        }
        Ok(body)
    })
}

/// `f` with this thread's `BytesMut`, or with a fresh one when a body is written while
/// another is being written on this thread (a `Serialize` impl that encodes a response).
fn with_local_buffer<R>(f: impl FnOnce(&mut BytesMut) -> R) -> R {
    thread_local! {
        static LOCAL: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(BUFFER_CAPACITY));
    }
    LOCAL.with(|local| match local.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut BytesMut::new()),
    })
}

fn write_split<E>(
    buf: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    buf.clear();
    // Reclaims the whole allocation in place when every earlier body is gone.
    buf.reserve(MIN_FREE);
    match write(buf) {
        Ok(()) => Ok(buf.split().freeze()),
        Err(err) => {
            buf.clear();
            Err(err)
        }
    }
}

/// Serialises `value` at the end of `buf` and splits it off as frozen `Bytes`.
/// `buf` is left empty (also on error), sharing its allocation with the body.
pub fn encode_into<T: Serialize>(buf: &mut BytesMut, value: &T) -> serde_json::Result<Bytes> {
    write_split(buf, |buf| serde_json::to_writer(BytesWriter(buf), value))
}

/// `io::Write` straight into a `BytesMut` (bytes' own `Writer` goes through the generic
/// `BufMut::put`, which costs serde_json's many small writes noticeably more).
struct BytesWriter<'a>(&'a mut BytesMut);

impl io::Write for BytesWriter<'_> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        let body = encode_into(&mut buf, value)?;
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
    fn every_encoder_writes_the_same_json() {
        let link = Link {
            code: "abc",
            url: "https://example.com/a?b=\"c\"",
            clicks: 7,
        };
        let expected = serde_json::to_vec(&link).unwrap();
        assert_eq!(encode_json(&link).unwrap(), expected);
        assert_eq!(encode_json_zero_copy(&link).unwrap(), expected);
        assert_eq!(encode_json_pooled(&link).unwrap(), expected);
    }

    #[test]
    fn the_scratch_encoder_survives_errors_and_huge_bodies() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("boom"))
            }
        }
        assert!(encode_json(&Fails).is_err());
        let big = vec!["x".repeat(1024); 300];
        assert!(encode_json(&big).unwrap().len() > MAX_POOLED_CAPACITY);
        assert_eq!(&encode_json(&1).unwrap()[..], b"1");
        assert_eq!(
            &encode_json_zero_copy(&big).unwrap()[..],
            &serde_json::to_vec(&big).unwrap()[..]
        );
        assert_eq!(&encode_json_zero_copy(&2).unwrap()[..], b"2");
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
