//! Wall-clock time in unix seconds, replaceable by a manual clock in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Source of "now" for link creation and expiry.
///
/// `Clock::system()` reads the real wall clock; `Clock::manual(start)` only moves when
/// [`Clock::advance`] is called, so expiry can be tested without waiting.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn system() -> Self {
        Self(Source::System)
    }

    pub fn manual(start_unix: i64) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(start_unix))))
    }

    pub fn now_unix(&self) -> i64 {
        match &self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Source::Manual(now) => now.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward (or back, with a negative `secs`); clones share the time.
    ///
    /// # Panics
    /// On the system clock, which cannot be moved.
    pub fn advance(&self, secs: i64) {
        match &self.0 {
            Source::System => panic!("Clock::advance called on the system clock"),
            Source::Manual(now) => {
                now.fetch_add(secs, Ordering::AcqRel);
            }
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2024() {
        assert!(Clock::system().now_unix() > 1_704_067_200);
    }

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_unix(), 1_000);
        other.advance(30);
        assert_eq!(clock.now_unix(), 1_030);
        assert!(clock.is_manual());
    }

    #[test]
    #[should_panic(expected = "system clock")]
    fn advancing_the_system_clock_panics() {
        Clock::system().advance(1);
    }
}
