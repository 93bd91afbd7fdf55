//! Short codes: base62 encode/decode, generation, parsing.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkr::domain::ShortCode;
use linkr::domain::code::{decode_base62, encode_base62, generate};
use linkr_benches::support::{self, Group};

fn codes(c: &mut Criterion) {
    let mut g = Group::new(c, "codes");
    g.throughput(Throughput::Elements(1));
    g.bench("encode_base62/u64_max", || {
        let mut out = [0u8; 11];
        encode_base62(black_box(u64::MAX), &mut out).len()
    });
    g.bench("encode_base62/7_chars", || {
        let mut out = [0u8; 11];
        encode_base62(black_box(3_000_000_000_000), &mut out).len()
    });
    g.bench("decode_base62/11_chars", || {
        decode_base62(black_box("LygHa16AHYF"))
    });
    g.bench("decode_base62/7_chars", || {
        decode_base62(black_box("q3Xz9bK"))
    });
    g.bench("generate", generate);
    g.bench("parse/7_chars", || ShortCode::parse(black_box("q3Xz9bK")));
    g.bench("parse/64_chars", || {
        ShortCode::parse(black_box(
            "a-very-long-custom-alias_with-every-allowed_char-0123456789ABCDE",
        ))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = codes
}
criterion_main!(benches);
