//! Buffers for response bodies: pooled vs fresh.

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::encode::{BUFFER_CAPACITY, BufferPool};
use linkr_benches::support::{self, Group};
use object_pool::Pool;

/// The size of a typical JSON response body.
const BODY: &[u8] = &[b'x'; 200];

fn pool(c: &mut Criterion) {
    let object_pool: Pool<BytesMut> = Pool::new(16, || BytesMut::with_capacity(256));
    let linkr_pool = BufferPool::new(16, BUFFER_CAPACITY);

    let mut g = Group::new(c, "pool");
    g.throughput(Throughput::Bytes(BODY.len() as u64));
    // object-pool as its docs show it: pull, write, clear, back to the pool on drop.
    g.bench("object_pool", || {
        let mut buf = object_pool.pull(|| BytesMut::with_capacity(256));
        buf.clear();
        buf.put_slice(black_box(BODY));
        black_box(&*buf);
    });
    // linkr's pool: the body is split off a pooled buffer and frozen (kept by the caller).
    g.bench("linkr_split_freeze", || {
        let mut buf = linkr_pool.pull();
        buf.put_slice(black_box(BODY));
        buf.split().freeze()
    });
    g.bench("fresh_bytesmut", || {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_slice(black_box(BODY));
        buf.freeze()
    });
    g.bench("vec", || {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(black_box(BODY));
        buf
    });
    g.bench_contended_x2("contended_x2/object_pool", || {
        let mut buf = object_pool.pull(|| BytesMut::with_capacity(256));
        buf.clear();
        buf.put_slice(black_box(BODY));
        black_box(&*buf);
    });
    g.bench_contended_x2("contended_x2/linkr_split_freeze", || {
        let mut buf = linkr_pool.pull();
        buf.put_slice(black_box(BODY));
        buf.split().freeze()
    });
    g.bench_contended_x2("contended_x2/fresh_bytesmut", || {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_slice(black_box(BODY));
        buf.freeze()
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = pool
}
criterion_main!(benches);
