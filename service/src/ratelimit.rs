//! Lock-free token bucket (GCRA) and a keyed limiter built from it.
//!
//! A bucket is one `AtomicU64` holding the *theoretical arrival time* (TAT) in
//! nanoseconds since a base instant. A request at time `t` is admitted when
//! `max(TAT, t) + T - t <= burst * T`, where `T` is the emission interval
//! (`1s / per_second`); admitting moves the TAT on by `T`. This is exactly a
//! token bucket of `burst` tokens refilled at `per_second`, updated with one
//! compare-and-swap. Time is passed in, so callers (and tests) own the clock.
//!
//! The clock is `quanta` (governor's default too): it reads the TSC, less than half the cost of
//! `Instant::now()` on this VM (`token_bucket/clock/*` in `benches/benches/token_bucket.rs`),
//! and falls back to the OS clock where the TSC is not invariant. A [`KeyedLimiter`] owns its
//! clock ([`KeyedLimiter::check_now`]), so tests can give it `quanta::Clock::mock()`. The
//! first read calibrates the clock (up to 200 ms), so limiters read it when they are built.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
pub use quanta::{Clock as LimiterClock, Instant, Mock as MockClock};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Largest offset from the base kept exactly; leaves headroom for adding intervals.
const MAX_NANOS: u64 = u64::MAX / 2;

static CLOCK: LazyLock<LimiterClock> = LazyLock::new(LimiterClock::new);

/// The limiters' default clock (one TSC read, scaled to nanoseconds). `quanta::Instant::now()`
/// reads the same clock but first checks for a thread-local mock, which costs a few ns more.
pub fn clock() -> LimiterClock {
    CLOCK.clone()
}

/// Now, on the limiters' default clock.
#[inline]
pub fn now() -> Instant {
    CLOCK.now()
}

/// Requests per second and burst size. `per_second == 0` disables limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_second: u32,
    pub burst: u32,
}

impl Quota {
    pub const DISABLED: Quota = Quota {
        per_second: 0,
        burst: 0,
    };

    pub fn is_disabled(&self) -> bool {
        self.per_second == 0
    }

    /// The bucket size actually used: a zero burst still admits one request.
    pub fn effective_burst(&self) -> u32 {
        self.burst.max(1)
    }

    /// Rounded up, so that no window admits more than `burst + per_second * t` (rounded down, a
    /// rate such as 24/s admitted one request too many over windows of whole intervals).
    fn emission_interval_nanos(&self) -> u64 {
        NANOS_PER_SECOND.div_ceil(u64::from(self.per_second))
    }
}

/// Outcome of one check, with what the HTTP layer needs for `RateLimit-*` and `Retry-After`.
///
/// The check only records where the bucket stands; the header values are derived on demand,
/// so a caller that only asks "allowed?" pays for nothing else. Sixteen bytes: returned in
/// two registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Nanoseconds until the bucket would be full again with this request admitted
    /// (admitted exactly when that fits in the bucket: `ahead <= interval * limit`).
    ahead: u64,
    /// Emission interval in nanoseconds (at most 1s); 0 when unlimited.
    interval: u32,
    /// Bucket size in requests; 0 when unlimited.
    limit: u32,
}

impl Decision {
    /// What a disabled limiter answers.
    pub const UNLIMITED: Decision = Decision {
        ahead: 0,
        interval: 0,
        limit: 0,
    };

    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.ahead <= self.capacity()
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whole tokens left after this request (0 on a denial).
    pub fn remaining(&self) -> u32 {
        match (self.capacity() - self.ahead.min(self.capacity())).checked_div(self.interval.into())
        {
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => 0,
        }
    }

    /// Time until the bucket is full again.
    pub fn reset(&self) -> Duration {
        if self.is_allowed() {
            Duration::from_nanos(self.ahead)
        } else {
            Duration::from_nanos(self.ahead - u64::from(self.interval))
        }
    }

    /// On a denial, the earliest time from now at which a request would be admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        (!self.is_allowed()).then(|| Duration::from_nanos(self.ahead - self.capacity()))
    }

    #[inline]
    fn capacity(&self) -> u64 {
        u64::from(self.interval) * u64::from(self.limit)
    }

    /// `Retry-After` in whole seconds, rounded up (at least 1 for a denial).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after().map(|d| ceil_secs(d).max(1))
    }

    /// `RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset())
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A single lock-free token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    quota: Quota,
    limit: u32,
    interval: u64,
    capacity: u64,
    base: Instant,
    tat: AtomicU64,
}

impl TokenBucket {
    pub fn new(quota: Quota) -> Self {
        Self::with_base(quota, now())
    }

    /// A bucket whose clock starts at `base` (full at `base`); instants before it count as `base`.
    pub fn with_base(quota: Quota, base: Instant) -> Self {
        let (interval, capacity) = if quota.is_disabled() {
            (0, 0)
        } else {
            let interval = quota.emission_interval_nanos();
            (interval, interval * u64::from(quota.effective_burst()))
        };
        Self {
            quota,
            limit: quota.effective_burst(),
            interval,
            capacity,
            base,
            tat: AtomicU64::new(0),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    pub fn check(&self, now: Instant) -> Decision {
        if self.interval == 0 {
            return Decision::UNLIMITED;
        }
        let now = self.nanos_since_base(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            let ahead = next - now;
            if ahead > self.capacity {
                return self.decision(ahead);
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return self.decision(ahead),
                Err(current) => tat = current,
            }
        }
    }

    #[inline]
    fn decision(&self, ahead: u64) -> Decision {
        Decision {
            ahead,
            // At most 1s in nanoseconds (`per_second >= 1`).
            interval: self.interval as u32,
            limit: self.limit,
        }
    }

    /// True when the bucket has been full for at least `idle` at `now`.
    fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        let now = self.nanos_since_base(now);
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        self.tat.load(Ordering::Relaxed).saturating_add(idle) <= now
    }

    #[inline]
    fn nanos_since_base(&self, now: Instant) -> u64 {
        if now <= self.base {
            return 0;
        }
        // Capped at about 292 years, far beyond any process.
        u64::try_from((now - self.base).as_nanos()).map_or(MAX_NANOS, |n| n.min(MAX_NANOS))
    }
}

/// One bucket per key (API key, client IP). A known key is checked without allocating or
/// locking anything but its map shard.
///
/// The map is bounded ([`Self::with_max_keys`]): a new key that finds it full first evicts the
/// buckets nearest to full (an eighth of the map in one pass, so the scan is paid once per
/// many new keys). Evicting a full bucket changes no decision; evicting a nearly full one
/// forgives that key what it had used. Many source addresses can therefore neither grow memory
/// past the bound nor make each new one cost a scan.
///
/// `S` hashes the keys (std's randomly keyed SipHash by default; the instruction-count bench
/// gives a fixed one, so that its count does not change with the process's random keys).
#[derive(Debug)]
pub struct KeyedLimiter<K: Hash + Eq, S: BuildHasher + Clone = RandomState> {
    quota: Quota,
    clock: LimiterClock,
    base: Instant,
    buckets: DashMap<K, TokenBucket, S>,
    max_keys: usize,
    /// Held while inserting a new key, so that the bound holds exactly.
    inserting: Mutex<()>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, clock())
    }

    /// A limiter reading `clock` in [`Self::check_now`].
    pub fn with_clock(quota: Quota, clock: LimiterClock) -> Self {
        Self::with_clock_and_hasher(quota, clock, RandomState::new())
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Clone> KeyedLimiter<K, S> {
    /// How long a bucket stays after it is full again (avoids re-inserting busy keys).
    pub const IDLE_GRACE: Duration = Duration::from_secs(1);

    /// A limiter whose map hashes its keys with `hasher`.
    pub fn with_hasher(quota: Quota, hasher: S) -> Self {
        Self::with_clock_and_hasher(quota, clock(), hasher)
    }

    fn with_clock_and_hasher(quota: Quota, clock: LimiterClock, hasher: S) -> Self {
        Self {
            quota,
            base: clock.now(),
            clock,
            buckets: DashMap::with_hasher(hasher),
            max_keys: usize::MAX,
            inserting: Mutex::new(()),
        }
    }

    /// This limiter holding at most `max_keys` buckets (at least 1).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// A fresh limiter with this one's quota and bound, reading `clock`.
    pub fn reclocked(&self, clock: LimiterClock) -> Self {
        Self::with_clock_and_hasher(self.quota, clock, self.buckets.hasher().clone())
            .with_max_keys(self.max_keys)
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Now, on this limiter's clock.
    #[inline]
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// [`Self::check`] at [`Self::now`].
    #[inline]
    pub fn check_now(&self, key: &K) -> Decision {
        self.check(key, self.now())
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    pub fn check(&self, key: &K, now: Instant) -> Decision {
        if self.quota.is_disabled() {
            return Decision::UNLIMITED;
        }
        if let Some(bucket) = self.buckets.get(key) {
            return bucket.check(now);
        }
        self.check_new(key, now)
    }

    /// A key without a bucket: makes room if the map is full, then inserts it. Never inlined:
    /// the known-key path keeps its small frame.
    #[cold]
    #[inline(never)]
    fn check_new(&self, key: &K, now: Instant) -> Decision {
        let _inserting = self
            .inserting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            self.evict(now);
        }
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::with_base(self.quota, self.base))
            .check(now)
    }

    /// Drops idle buckets, then, if that was not enough, the eighth of the map nearest to full.
    fn evict(&self, now: Instant) {
        self.retain_recent(now);
        if self.buckets.len() < self.max_keys {
            return;
        }
        let mut tats: Vec<u64> = self
            .buckets
            .iter()
            .map(|e| e.value().tat.load(Ordering::Relaxed))
            .collect();
        if tats.is_empty() {
            return;
        }
        let mut budget = (tats.len() / 8).max(1);
        let (_, &mut threshold, _) = tats.select_nth_unstable(budget - 1);
        self.buckets.retain(|_, bucket| {
            if budget > 0 && bucket.tat.load(Ordering::Relaxed) <= threshold {
                budget -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Drops buckets that have been full again for [`Self::IDLE_GRACE`]: a full bucket
    /// behaves exactly like a new one, so forgetting it changes no decision.
    pub fn retain_recent(&self, now: Instant) {
        if self.quota.is_disabled() {
            self.buckets.clear();
            return;
        }
        self.buckets
            .retain(|_, bucket| !bucket.is_idle(now, Self::IDLE_GRACE));
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The per-client limiter's key for `ip`: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
/// One IPv6 host usually holds a whole /64, so a per-address key would let it rotate through
/// 2^64 fresh buckets.
#[inline]
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn quota(per_second: u32, burst: u32) -> Quota {
        Quota { per_second, burst }
    }

    fn admitted(bucket: &TokenBucket, now: Instant, tries: usize) -> usize {
        (0..tries)
            .filter(|_| bucket.check(now).is_allowed())
            .count()
    }

    #[test]
    fn admits_the_burst_then_denies() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(10, 5), t0);
        for expected_remaining in (0..5).rev() {
            let decision = bucket.check(t0);
            assert!(decision.is_allowed(), "expected allow, got {decision:?}");
            assert_eq!(decision.limit(), 5);
            assert_eq!(decision.remaining(), expected_remaining);
            assert_eq!(decision.retry_after(), None);
        }
        let denied = bucket.check(t0);
        assert!(!denied.is_allowed());
        assert_eq!(denied.limit(), 5);
        assert_eq!(denied.remaining(), 0);
    }

    #[test]
    fn refills_at_the_configured_rate() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(10, 5), t0);
        assert_eq!(admitted(&bucket, t0, 100), 5);

        let t1 = t0 + Duration::from_millis(99);
        assert_eq!(admitted(&bucket, t1, 100), 0, "a token takes 100ms");
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(admitted(&bucket, t2, 100), 1);
        let t3 = t0 + Duration::from_millis(350);
        assert_eq!(admitted(&bucket, t3, 100), 2);
        let t4 = t0 + Duration::from_secs(60);
        assert_eq!(admitted(&bucket, t4, 100), 5, "never more than the burst");
    }

    #[test]
    fn retry_after_is_the_time_until_the_next_token() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(2, 1), t0);
        assert!(bucket.check(t0).is_allowed());

        let at = t0 + Duration::from_millis(100);
        let denied = bucket.check(at);
        assert!(!denied.is_allowed());
        let retry_after = denied.retry_after().expect("a denial has a retry-after");
        assert_eq!(retry_after, Duration::from_millis(400));
        assert_eq!(denied.reset(), Duration::from_millis(400));
        assert_eq!(bucket.check(at).retry_after_secs(), Some(1));

        assert!(
            !bucket
                .check(at + retry_after - Duration::from_nanos(1))
                .is_allowed()
        );
        assert!(bucket.check(at + retry_after).is_allowed());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(1, 3), t0);
        assert_eq!(admitted(&bucket, t0, 3), 3);
        let denied = bucket.check(t0 + Duration::from_millis(250));
        assert_eq!(denied.retry_after_secs(), Some(1));
        assert_eq!(denied.reset(), Duration::from_millis(2750));
        assert_eq!(denied.reset_secs(), 3);
    }

    #[test]
    fn reset_counts_down_to_a_full_bucket() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(4, 4), t0);
        let first = bucket.check(t0);
        assert_eq!(first.reset(), Duration::from_millis(250));
        let second = bucket.check(t0);
        assert_eq!(second.reset(), Duration::from_millis(500));
        assert_eq!(second.remaining(), 2);
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let t0 = now();
        let bucket = TokenBucket::with_base(Quota::DISABLED, t0);
        assert_eq!(admitted(&bucket, t0, 10_000), 10_000);
        assert_eq!(bucket.check(t0), Decision::UNLIMITED);

        let keyed = KeyedLimiter::new(quota(0, 10));
        assert!((0..1000).all(|_| keyed.check(&"key", t0).is_allowed()));
        assert!(keyed.is_empty(), "a disabled limiter keeps no state");
    }

    #[test]
    fn remaining_counts_whole_tokens_left() {
        for (per_second, burst) in [(1, 1), (3, 7), (1000, 50), (100_000_000, 1000)] {
            let t0 = now();
            let bucket = TokenBucket::with_base(quota(per_second, burst), t0);
            for expected in (0..burst).rev() {
                assert_eq!(bucket.check(t0).remaining(), expected);
            }
            // Half an interval later a partial token is not counted.
            let half = Duration::from_nanos(bucket.interval / 2);
            assert!(!bucket.check(t0 + half).is_allowed());
            let later = t0 + Duration::from_nanos(bucket.interval) + half;
            assert_eq!(
                bucket.check(later).remaining(),
                0,
                "quota {per_second}/{burst}"
            );
        }
    }

    #[test]
    fn zero_burst_still_admits_one() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(1, 0), t0);
        assert_eq!(admitted(&bucket, t0, 10), 1);
    }

    #[test]
    fn instants_before_the_base_count_as_the_base() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(1, 2), t0 + Duration::from_secs(5));
        assert_eq!(admitted(&bucket, t0, 10), 2);
    }

    #[test]
    fn keys_have_separate_buckets() {
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(1, 2));
        assert!(limiter.check(&"a", t0).is_allowed());
        assert!(limiter.check(&"a", t0).is_allowed());
        assert!(!limiter.check(&"a", t0).is_allowed());
        assert!(limiter.check(&"b", t0).is_allowed());
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn retain_recent_evicts_only_idle_full_buckets() {
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(1, 2));
        limiter.check(&"old", t0);
        limiter.check(&"old", t0);
        let later = t0 + Duration::from_secs(2);
        limiter.check(&"busy", later);
        limiter.check(&"busy", later);

        limiter.retain_recent(later + Duration::from_millis(1500));
        assert_eq!(
            limiter.len(),
            1,
            "old was full again and idle; busy is not full"
        );
        assert!(!limiter.check(&"busy", later).is_allowed());

        limiter.retain_recent(later + Duration::from_secs(10));
        assert!(limiter.is_empty());
    }

    #[test]
    fn eviction_changes_no_decision() {
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(1, 3));
        limiter.check(&"k", t0);
        let later = t0 + Duration::from_secs(5);
        limiter.retain_recent(later);
        assert!(limiter.is_empty());
        assert_eq!(
            (0..10)
                .filter(|_| limiter.check(&"k", later).is_allowed())
                .count(),
            3
        );
    }

    #[test]
    fn many_keys_never_grow_the_map_past_its_bound() {
        const MAX: usize = 1000;
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(1, 5)).with_max_keys(MAX);
        for i in 0..50_000u32 {
            let key = IpAddr::from(i.to_be_bytes());
            assert!(
                limiter.check(&key, t0).is_allowed(),
                "a new key gets a bucket"
            );
            assert!(
                limiter.len() <= MAX,
                "{} buckets after {i} keys",
                limiter.len()
            );
        }
        assert!(limiter.len() > MAX / 2, "eviction drops a part, not all");
    }

    #[test]
    fn eviction_drops_the_buckets_nearest_to_full_first() {
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(1, 100)).with_max_keys(8);
        // "hot" has used its whole burst; the others one request each.
        for _ in 0..100 {
            limiter.check(&"hot", t0);
        }
        for key in ["a", "b", "c", "d", "e", "f", "g"] {
            limiter.check(&key, t0);
        }
        assert_eq!(limiter.len(), 8);
        limiter.check(&"new", t0);
        assert_eq!(limiter.len(), 8);
        assert!(
            !limiter.check(&"hot", t0).is_allowed(),
            "the exhausted bucket was kept"
        );
    }

    #[test]
    fn concurrent_new_keys_respect_the_bound() {
        const MAX: usize = 256;
        let t0 = now();
        let limiter = KeyedLimiter::new(quota(10, 10)).with_max_keys(MAX);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let limiter = &limiter;
                s.spawn(move || {
                    for i in 0..5_000u32 {
                        limiter.check(&(t * 1_000_000 + i), t0);
                    }
                });
            }
        });
        // (`len` read during inserts sums shards at different moments: checked at rest.)
        assert!(limiter.len() <= MAX, "{}", limiter.len());
        assert!(limiter.len() > MAX / 2);
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_and_ipv6_slash_64() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_key(v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            v6("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(v6("2001:db8:1:2::1")),
            client_key(v6("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(v6("192.0.2.7")), v6("192.0.2.7"));
        assert_eq!(client_key(v6("::ffff:192.0.2.7")), v6("192.0.2.7"));
        assert_ne!(client_key(v6("192.0.2.7")), client_key(v6("192.0.2.8")));
    }

    #[test]
    fn two_threads_at_one_instant_share_exactly_one_burst() {
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(1, 1000), t0);
        let start = Barrier::new(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    start.wait();
                    let n = admitted(&bucket, t0, 5_000);
                    total.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
        assert_eq!(total.into_inner(), 1000);
    }

    #[test]
    fn two_threads_never_admit_more_than_burst_plus_rate_times_elapsed() {
        const PER_SECOND: u32 = 1000;
        const BURST: u32 = 50;
        const STEPS: u64 = 200_000;
        let t0 = now();
        let bucket = TokenBucket::with_base(quota(PER_SECOND, BURST), t0);
        let clock = AtomicU64::new(0);
        let start = Barrier::new(2);
        let total = AtomicUsize::new(0);
        // A shared synthetic clock: each check moves time on by 10µs, so the two
        // threads see interleaved, sometimes out-of-order instants.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    start.wait();
                    let mut admitted = 0;
                    loop {
                        let step = clock.fetch_add(1, Ordering::Relaxed);
                        if step >= STEPS {
                            break;
                        }
                        let now = t0 + Duration::from_micros(10 * step);
                        admitted += usize::from(bucket.check(now).is_allowed());
                    }
                    total.fetch_add(admitted, Ordering::Relaxed);
                });
            }
        });
        let elapsed = Duration::from_micros(10 * STEPS);
        let bound = u64::from(BURST) + u64::from(PER_SECOND) * elapsed.as_secs();
        let total = total.into_inner() as u64;
        assert!(total <= bound, "admitted {total} > bound {bound}");
        assert!(
            total + 10 >= bound,
            "admitted {total}, expected about {bound}"
        );
    }
}
