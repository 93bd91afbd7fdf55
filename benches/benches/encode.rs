//! Response encoding: JSON bodies and the redirect `Location` header.

use std::collections::VecDeque;
use std::hint::black_box;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::encode::{
    BUFFER_CAPACITY, BufferPool, MAX_IDLE_BUFFERS, encode_json, encode_json_zero_copy,
    write_json_copy, write_json_response, write_json_zero_copy,
};
use linkr_benches::alternatives::{
    fresh_bytesmut, sample_link, sample_link_len, to_string_copy, to_vec_bytes,
};
use linkr_benches::support::{self, Group};

/// Bodies alive at once in the "in flight" variant (written to sockets later).
const IN_FLIGHT: usize = 64;

fn encode(c: &mut Criterion) {
    let link = sample_link();
    let mut g = Group::new(c, "encode");
    g.throughput(Throughput::Bytes(sample_link_len() as u64));

    // What the service does: hand-written JSON straight into this thread's BytesMut, split
    // off and frozen (zero-copy).
    g.bench("link_json/linkr_zero_copy", || {
        write_json_zero_copy(black_box(&link)).unwrap()
    });
    // The same writer, then one exact-size copy.
    g.bench("link_json/hand_written_copy", || {
        write_json_copy(black_box(&link)).unwrap()
    });
    // serde_json into the same zero-copy buffer, into a scratch buffer plus one copy, and
    // into buffers from a bounded object-pool.
    g.bench("link_json/serde_zero_copy", || {
        encode_json_zero_copy(black_box(&link)).unwrap()
    });
    g.bench("link_json/serde_scratch_copy", || {
        encode_json(black_box(&link)).unwrap()
    });
    let pool = BufferPool::new(MAX_IDLE_BUFFERS, BUFFER_CAPACITY);
    g.bench("link_json/serde_object_pool", || {
        pool.encode_json(black_box(&link)).unwrap()
    });
    // serde_json's floor: serialising into a reused Vec, with no body handed out.
    let mut scratch = Vec::with_capacity(1024);
    g.bench("link_json/serde_serialize_only", || {
        scratch.clear();
        serde_json::to_writer(&mut scratch, black_box(&link)).unwrap();
        scratch.len()
    });
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT + 1);
    g.bench("link_json/linkr_zero_copy_in_flight_64", || {
        in_flight.push_back(write_json_zero_copy(black_box(&link)).unwrap());
        if in_flight.len() > IN_FLIGHT {
            in_flight.pop_front();
        }
    });
    // The obvious ways: a String copied into the body, a Vec handed over, axum::Json's way.
    g.bench("link_json/to_string_copy", || {
        to_string_copy(black_box(&link))
    });
    g.bench("link_json/to_vec", || to_vec_bytes(black_box(&link)));
    g.bench("link_json/fresh_bytesmut", || {
        fresh_bytesmut(black_box(&link))
    });

    g.bench("link_response/linkr_zero_copy", || {
        write_json_response(StatusCode::CREATED, black_box(&link))
    });
    g.bench("link_response/to_string_copy", || {
        let body = to_string_copy(black_box(&link));
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::CREATED;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    });
    g.bench("link_response/axum_json", || {
        (StatusCode::CREATED, axum::Json(black_box(&link))).into_response()
    });

    let url = link.url.to_owned();
    let shared = Bytes::from(url.clone());
    g.throughput(Throughput::Elements(1));

    // What the redirect handler does: the store keeps the validated URL as `Bytes`.
    g.bench("location/from_bytes", || {
        HeaderValue::from_maybe_shared(black_box(&shared).clone()).unwrap()
    });
    g.bench("location/from_string", || {
        HeaderValue::from_str(black_box(&url)).unwrap()
    });
    g.bench("redirect_response/from_bytes", || {
        let location = HeaderValue::from_maybe_shared(black_box(&shared).clone()).unwrap();
        (StatusCode::FOUND, [(LOCATION, location)]).into_response()
    });
    g.bench("redirect_response/from_string", || {
        let location = HeaderValue::from_str(black_box(&url)).unwrap();
        (StatusCode::FOUND, [(LOCATION, location)]).into_response()
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = encode
}
criterion_main!(benches);
