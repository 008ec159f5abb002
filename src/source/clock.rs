//! The clock: the one place the watch loop and the collection thread learn the time.
//! Tests give a [`FakeClock`] that moves only when told, so nothing sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic and wall time.
pub trait Clock: Send + Sync {
    /// Seconds since this clock's zero (monotonic).
    fn elapsed(&self) -> Duration;
    /// Seconds since the Unix epoch (wall time, for timestamps only).
    fn unix_seconds(&self) -> f64;
}

/// The system's clocks; zero is when it was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            started: Instant::now(),
        }
    }

    /// The instant this clock counts from.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn unix_seconds(&self) -> f64 {
        unix_now()
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A clock for tests: it starts at `unix_start` and moves only by [`FakeClock::advance`].
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
    unix_start: f64,
}

impl FakeClock {
    pub fn new(unix_start: f64) -> Self {
        FakeClock {
            nanos: Arc::new(AtomicU64::new(0)),
            unix_start,
        }
    }

    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Moves the clock to `at` since its zero (never backwards).
    pub fn set(&self, at: Duration) {
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(nanos, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn unix_seconds(&self) -> f64 {
        self.unix_start + self.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told_and_clones_share_it() {
        let clock = FakeClock::new(1000.0);
        let other = clock.clone();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        assert!((clock.unix_seconds() - 1001.5).abs() < 1e-9);
        clock.set(Duration::from_secs(1));
        assert_eq!(
            clock.elapsed(),
            Duration::from_millis(1500),
            "never backwards"
        );
    }
}
