//! Rate limiting: linkr's lock-free bucket vs a mutex bucket vs governor, same quota.
//!
//! Every limiter reads the same TSC clock on each check (`quanta`: linkr and the mutex bucket
//! via `linkr::ratelimit::now()`, governor via its default `QuantaClock`). The allow quota
//! (100M/s, burst 1000) is never exhausted by these loops, so they measure the admit path;
//! `deny/*` measures refusals. `no_clock/*` gives both limiters one fixed instant (and a burst
//! these loops never exhaust), so it compares the algorithms alone. `clock/*` is what one read
//! of each clock costs: why linkr's limiter uses `quanta` rather than `std::time::Instant::now()`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::clock::{Clock, QuantaClock, QuantaInstant};
use governor::{Quota as GovernorQuota, RateLimiter};
use linkr::ratelimit::{self, KeyedLimiter, Quota, TokenBucket};
use linkr_benches::alternatives::MutexTokenBucket;
use linkr_benches::support::{self, Group};

const ALLOW: Quota = Quota {
    per_second: 100_000_000,
    burst: 1000,
};
const DENY: Quota = Quota {
    per_second: 1,
    burst: 1,
};
/// At one fixed instant a bucket admits `burst` requests: more than any run iterates.
const NO_CLOCK: Quota = Quota {
    per_second: 100_000_000,
    burst: u32::MAX,
};
const KEYS: u32 = 1024;

/// A governor clock that always answers the same instant.
#[derive(Clone)]
struct FixedClock(QuantaInstant);

impl Clock for FixedClock {
    type Instant = QuantaInstant;

    fn now(&self) -> QuantaInstant {
        // Opaque to the optimiser, like linkr's `black_box(t0)`: no hoisting out of the loop.
        black_box(self.0)
    }
}

fn governor_quota(q: Quota) -> GovernorQuota {
    let nz = |n: u32| NonZeroU32::new(n).expect("non-zero quota");
    GovernorQuota::per_second(nz(q.per_second)).allow_burst(nz(q.burst))
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn token_bucket(c: &mut Criterion) {
    let linkr = TokenBucket::new(ALLOW);
    let mutex = MutexTokenBucket::new(ALLOW.per_second, ALLOW.burst, ratelimit::now());
    let governor = RateLimiter::direct(governor_quota(ALLOW));

    let mut g = Group::new(c, "token_bucket");
    g.throughput(Throughput::Elements(1));
    g.bench("uncontended/linkr", || linkr.check(ratelimit::now()));
    g.bench("uncontended/mutex", || mutex.check(ratelimit::now()));
    g.bench("uncontended/governor", || governor.check());

    g.bench_contended_x2("contended_x2/linkr", || linkr.check(ratelimit::now()));
    g.bench_contended_x2("contended_x2/mutex", || mutex.check(ratelimit::now()));
    g.bench_contended_x2("contended_x2/governor", || governor.check());

    let t0 = ratelimit::now();
    let linkr_fixed = TokenBucket::with_base(NO_CLOCK, t0);
    let fixed = FixedClock(QuantaClock::default().now());
    let governor_fixed = RateLimiter::direct_with_clock(governor_quota(NO_CLOCK), fixed);
    g.bench("no_clock/linkr", || linkr_fixed.check(black_box(t0)));
    g.bench("no_clock/governor", || governor_fixed.check());

    let linkr_deny = TokenBucket::new(DENY);
    let governor_deny = RateLimiter::direct(governor_quota(DENY));
    g.bench("deny/linkr", || linkr_deny.check(ratelimit::now()));
    g.bench("deny/governor", || governor_deny.check());

    // Per-client buckets, 1024 known clients in rotation: a lookup, no insertion.
    let keyed = KeyedLimiter::new(ALLOW);
    let governor_keyed = RateLimiter::dashmap(governor_quota(ALLOW));
    for i in 0..KEYS {
        keyed.check(&client(i), ratelimit::now());
        let _ = governor_keyed.check_key(&client(i));
    }
    let mut i = 0;
    g.bench("keyed/linkr", || {
        i = (i + 1) % KEYS;
        keyed.check(black_box(&client(i)), ratelimit::now())
    });
    let mut i = 0;
    g.bench("keyed/governor", || {
        i = (i + 1) % KEYS;
        governor_keyed.check_key(black_box(&client(i)))
    });

    g.bench("clock/quanta", ratelimit::now);
    g.bench("clock/std", std::time::Instant::now);
    g.finish();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = token_bucket
}
criterion_main!(benches);
