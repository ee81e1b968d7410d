//! A node's wall clock: runtime time plus a per-node offset and drift.
//!
//! Models: a step offset (NTP correction or a bad clock) and a constant drift rate in parts per
//! million, both settable while the node runs. Does not model: leap seconds, monotonic-clock
//! faults (timers and timeouts use the runtime's monotonic time, which stays true), or clocks
//! that run backwards continuously.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A cloneable handle on one node's wall clock.
#[derive(Clone, Debug, Default)]
pub struct NodeClock {
    inner: Arc<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    offset_us: AtomicI64,
    drift_ppm: AtomicI64,
    /// Runtime time (µs since the Unix epoch) at which the drift started to accumulate.
    drift_origin_us: AtomicI64,
}

impl NodeClock {
    /// A clock with no offset and no drift.
    pub fn new() -> Self {
        Self::default()
    }

    /// The runtime's own wall time in µs since the Unix epoch (virtual under madsim).
    fn runtime_now_us() -> i64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
    }

    /// This node's wall time in µs since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        let runtime_us = Self::runtime_now_us();
        let offset_us = self.inner.offset_us.load(Ordering::Relaxed);
        let drift_ppm = self.inner.drift_ppm.load(Ordering::Relaxed);
        let origin_us = self.inner.drift_origin_us.load(Ordering::Relaxed);
        let drift_us = (runtime_us - origin_us).saturating_mul(drift_ppm) / 1_000_000;
        runtime_us + offset_us + drift_us
    }

    /// This node's wall time in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.now_us().div_euclid(1000)
    }

    /// Steps the clock by `delta_us` (negative steps it back).
    pub fn step_us(&self, delta_us: i64) {
        self.inner.offset_us.fetch_add(delta_us, Ordering::Relaxed);
    }

    /// Sets a drift rate, accumulating from now on; 0 stops drifting (what drifted stays).
    pub fn set_drift_ppm(&self, drift_ppm: i64) {
        let now_us = Self::runtime_now_us();
        let origin_us = self.inner.drift_origin_us.load(Ordering::Relaxed);
        let old_ppm = self.inner.drift_ppm.load(Ordering::Relaxed);
        let accumulated_us = (now_us - origin_us).saturating_mul(old_ppm) / 1_000_000;

        self.inner
            .offset_us
            .fetch_add(accumulated_us, Ordering::Relaxed);
        self.inner.drift_origin_us.store(now_us, Ordering::Relaxed);
        self.inner.drift_ppm.store(drift_ppm, Ordering::Relaxed);
    }

    /// The current step offset in µs (drift excluded).
    pub fn offset_us(&self) -> i64 {
        self.inner.offset_us.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_moves_the_clock_by_exactly_the_step() {
        let clock = NodeClock::new();
        clock.step_us(-5_000_000);
        let skewed = clock.now_us();
        let true_us = NodeClock::runtime_now_us();

        // The runtime clock may tick between the two reads, never by seconds.
        let diff = true_us - skewed;
        assert!((5_000_000..5_100_000).contains(&diff), "diff {diff}");
        assert_eq!(clock.offset_us(), -5_000_000);
    }

    #[test]
    fn stopping_drift_keeps_what_accumulated() {
        let clock = NodeClock::new();
        clock.set_drift_ppm(0);
        assert_eq!(clock.offset_us(), 0);
        clock.set_drift_ppm(1_000);
        clock.set_drift_ppm(0);
        assert!(clock.offset_us() >= 0);
    }
}
