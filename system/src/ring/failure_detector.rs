//! A phi-accrual failure detector, the way Cassandra runs one for every peer it gossips with.
//!
//! Modelled: per endpoint, a bounded window (1000 samples) of heartbeat inter-arrival times
//! in ms. The first heartbeat seeds the window with a generous guess (twice the gossip
//! interval) so a newly heard node is not convicted while the window is still empty of real
//! samples; a later interval longer than a cap (also twice the gossip interval) is dropped
//! rather than recorded, so a long partition does not teach the detector that silence is
//! normal. Phi treats arrivals as an exponential distribution with the window's mean `m`:
//! the chance that a heartbeat is still to come after `t` ms of silence is `e^(-t/m)`, and
//! `phi = -log10(e^(-t/m)) = t / (m * ln 10)`. An endpoint is convicted while
//! `phi > PHI_CONVICT_THRESHOLD` (8), which with a steady 1 s mean is after about 18.4 s.
//!
//! Guarantees: no clock is read here; every call takes `now_ms` from the caller (the
//! runtime's monotonic clock, in ms from any fixed origin), so the detector is a pure
//! function of the reports and query times it is given. A never-heard endpoint has infinite
//! phi and is not alive. The conviction is local: nothing here is gossiped.
//!
//! Not modelled:
//! TODO(ring-membership): Cassandra's local-pause guard (no convictions right after this node
//! itself stalled for 5 s, e.g. a GC pause or a simulated pause/resume); a resumed node here
//! convicts its peers until their next heartbeats arrive.
//! TODO(ring-membership): conviction listeners; callers poll [`FailureDetector::is_alive`].

use std::collections::{BTreeMap, VecDeque};
use std::f64::consts::LN_10;
use std::net::SocketAddr;

/// Phi above which an endpoint is considered down (Cassandra's `phi_convict_threshold`).
pub const PHI_CONVICT_THRESHOLD: f64 = 8.0;
/// Inter-arrival samples kept per endpoint (Cassandra's window size).
pub const SAMPLE_COUNT_MAX: usize = 1000;
/// The gossip interval the default configuration assumes.
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 1000;

/// How a detector judges its endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Phi above which an endpoint is down.
    pub phi_convict_threshold: f64,
    /// Samples kept per endpoint; the oldest is dropped first.
    pub sample_count_max: usize,
    /// The sample the window starts with at an endpoint's first heartbeat.
    pub interval_ms_initial: u64,
    /// Intervals longer than this are not recorded.
    pub interval_ms_max: u64,
}

impl DetectorConfig {
    /// Cassandra's defaults for heartbeats every `gossip_interval_ms`: the first sample and
    /// the interval cap are both twice the gossip interval.
    pub fn for_gossip_interval(gossip_interval_ms: u64) -> Self {
        assert!(gossip_interval_ms > 0, "a gossip interval is positive");
        Self {
            phi_convict_threshold: PHI_CONVICT_THRESHOLD,
            sample_count_max: SAMPLE_COUNT_MAX,
            interval_ms_initial: 2 * gossip_interval_ms,
            interval_ms_max: 2 * gossip_interval_ms,
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self::for_gossip_interval(GOSSIP_INTERVAL_MS_DEFAULT)
    }
}

/// The heartbeat history of one endpoint.
#[derive(Debug, Clone)]
struct ArrivalWindow {
    /// When the last heartbeat was reported.
    last_ms: u64,
    /// Recorded inter-arrival times, oldest first.
    intervals_ms: VecDeque<u64>,
    /// The sum of `intervals_ms`, kept so the mean costs nothing.
    intervals_ms_sum: u64,
}

impl ArrivalWindow {
    fn new(now_ms: u64, config: &DetectorConfig) -> Self {
        let mut window = Self {
            last_ms: now_ms,
            intervals_ms: VecDeque::with_capacity(config.sample_count_max.min(64)),
            intervals_ms_sum: 0,
        };
        window.record(config.interval_ms_initial, config);
        window
    }

    fn record(&mut self, interval_ms: u64, config: &DetectorConfig) {
        if self.intervals_ms.len() == config.sample_count_max {
            let oldest_ms = self.intervals_ms.pop_front().unwrap_or(0);
            self.intervals_ms_sum -= oldest_ms;
        }
        self.intervals_ms.push_back(interval_ms);
        self.intervals_ms_sum += interval_ms;
        assert!(self.intervals_ms.len() <= config.sample_count_max);
    }

    fn heartbeat(&mut self, now_ms: u64, config: &DetectorConfig) {
        let interval_ms = now_ms.saturating_sub(self.last_ms);
        if interval_ms <= config.interval_ms_max {
            self.record(interval_ms, config);
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn mean_ms(&self) -> f64 {
        // The window is never empty: it starts with the initial sample.
        assert!(
            !self.intervals_ms.is_empty(),
            "a window holds at least one sample"
        );
        self.intervals_ms_sum as f64 / self.intervals_ms.len() as f64
    }

    fn phi(&self, now_ms: u64) -> f64 {
        let silence_ms = now_ms.saturating_sub(self.last_ms) as f64;
        // A window of zero-length intervals would divide by zero; 1 ms is the clock's grain.
        let mean_ms = self.mean_ms().max(1.0);
        silence_ms / (mean_ms * LN_10)
    }
}

/// Phi-accrual suspicion for every endpoint that has reported a heartbeat.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    config: DetectorConfig,
    windows: BTreeMap<SocketAddr, ArrivalWindow>,
}

impl Default for FailureDetector {
    fn default() -> Self {
        Self::new(DetectorConfig::default())
    }
}

impl FailureDetector {
    /// A detector that has heard from nobody.
    pub fn new(config: DetectorConfig) -> Self {
        assert!(
            config.sample_count_max > 0,
            "a window keeps at least one sample"
        );
        assert!(
            config.phi_convict_threshold > 0.0,
            "a convict threshold is positive"
        );
        Self {
            config,
            windows: BTreeMap::new(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Records a heartbeat from `endpoint` observed at `now_ms`.
    pub fn report(&mut self, endpoint: SocketAddr, now_ms: u64) {
        let config = self.config;
        match self.windows.get_mut(&endpoint) {
            Some(window) => window.heartbeat(now_ms, &config),
            None => {
                self.windows
                    .insert(endpoint, ArrivalWindow::new(now_ms, &config));
            }
        }
    }

    /// Suspicion that `endpoint` is down at `now_ms`: 0 right after a heartbeat, rising
    /// linearly with silence; infinite for an endpoint never heard from.
    pub fn phi(&self, endpoint: SocketAddr, now_ms: u64) -> f64 {
        match self.windows.get(&endpoint) {
            Some(window) => window.phi(now_ms),
            None => f64::INFINITY,
        }
    }

    /// Whether `endpoint`'s phi is at or below the convict threshold at `now_ms`.
    pub fn is_alive(&self, endpoint: SocketAddr, now_ms: u64) -> bool {
        self.phi(endpoint, now_ms) <= self.config.phi_convict_threshold
    }

    /// The mean recorded inter-arrival time for `endpoint`, if it was ever heard from.
    pub fn interval_ms_mean(&self, endpoint: SocketAddr) -> Option<f64> {
        self.windows.get(&endpoint).map(ArrivalWindow::mean_ms)
    }

    /// How many samples `endpoint`'s window holds (0 if never heard from).
    pub fn sample_count(&self, endpoint: SocketAddr) -> usize {
        self.windows
            .get(&endpoint)
            .map_or(0, |window| window.intervals_ms.len())
    }

    /// Forgets `endpoint` (it left the cluster); it is not alive until it reports again.
    pub fn remove(&mut self, endpoint: SocketAddr) {
        self.windows.remove(&endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.2:7000".parse().unwrap()
    }

    /// A detector that heard from `peer()` at 0, 1000, ..., `(count - 1) * 1000` ms.
    fn steady_heartbeats(count: u64) -> FailureDetector {
        let mut detector = FailureDetector::default();
        for beat in 0..count {
            detector.report(peer(), beat * 1000);
        }
        detector
    }

    #[test]
    fn a_node_never_heard_from_is_not_alive() {
        let detector = FailureDetector::default();
        assert_eq!(detector.phi(peer(), 0), f64::INFINITY);
        assert!(!detector.is_alive(peer(), 0));
        assert_eq!(detector.interval_ms_mean(peer()), None);
    }

    #[test]
    fn phi_is_zero_at_a_heartbeat_and_grows_with_silence() {
        let detector = steady_heartbeats(20);
        let last_ms = 19_000;
        assert_eq!(detector.phi(peer(), last_ms), 0.0);
        let mut previous = 0.0;
        for silence_ms in [100, 1_000, 5_000, 10_000, 30_000] {
            let phi = detector.phi(peer(), last_ms + silence_ms);
            assert!(phi > previous, "phi {phi} after {silence_ms} ms of silence");
            previous = phi;
        }
    }

    /// 1001 heartbeats 1 s apart fill the 1000-sample window with 1000 ms intervals (the
    /// initial 2000 ms sample has been pushed out), so the mean is exactly 1000 ms and
    /// phi = t / (1000 * ln 10) = t / 2302.585. Phi reaches 8 at t = 8 * 2302.585 = 18420.68 ms.
    #[test]
    fn with_steady_one_second_heartbeats_phi_crosses_8_after_18_42_s() {
        let detector = steady_heartbeats(1001);
        let last_ms = 1_000_000;
        assert_eq!(detector.sample_count(peer()), SAMPLE_COUNT_MAX);
        assert_eq!(detector.interval_ms_mean(peer()), Some(1000.0));

        // One missed beat is phi 1000 / 2302.585 = 1 / ln 10 = log10(e) = 0.434.
        let one_second = detector.phi(peer(), last_ms + 1_000);
        assert!(
            (one_second - std::f64::consts::LOG10_E).abs() < 1e-12,
            "{one_second}"
        );

        // 18 s: 18000 / 2302.585 = 7.817, alive; 18.421 s: 8.0002, down.
        assert!(detector.is_alive(peer(), last_ms + 18_000));
        assert!(detector.is_alive(peer(), last_ms + 18_420));
        assert!(!detector.is_alive(peer(), last_ms + 18_421));
        assert!(!detector.is_alive(peer(), last_ms + 60_000));
    }

    /// Ten heartbeats 1 s apart leave the initial 2000 ms sample and nine 1000 ms samples:
    /// mean (2000 + 9 * 1000) / 10 = 1100 ms, so phi reaches 8 at 8 * 1100 * ln 10 =
    /// 20262.7 ms: a short history is a little more patient.
    #[test]
    fn with_a_short_history_the_initial_sample_delays_conviction() {
        let detector = steady_heartbeats(10);
        let last_ms = 9_000;
        assert_eq!(detector.interval_ms_mean(peer()), Some(1100.0));
        assert!(detector.is_alive(peer(), last_ms + 20_262));
        assert!(!detector.is_alive(peer(), last_ms + 20_263));
    }

    #[test]
    fn a_single_heartbeat_is_alive_until_its_generous_initial_mean_runs_out() {
        let mut detector = FailureDetector::default();
        detector.report(peer(), 5_000);
        // Mean 2000 ms: phi reaches 8 at 8 * 2000 * ln 10 = 36841.4 ms.
        assert!(detector.is_alive(peer(), 5_000 + 36_841));
        assert!(!detector.is_alive(peer(), 5_000 + 36_842));
    }

    #[test]
    fn heartbeats_resuming_after_a_silence_bring_a_node_back_without_skewing_the_mean() {
        let mut detector = steady_heartbeats(1001);
        let last_ms = 1_000_000;
        assert!(!detector.is_alive(peer(), last_ms + 60_000));

        // The 60 s gap is over the 2 s cap, so it is not recorded: the mean stays 1000 ms.
        detector.report(peer(), last_ms + 60_000);
        assert!(detector.is_alive(peer(), last_ms + 60_000));
        assert_eq!(detector.phi(peer(), last_ms + 60_000), 0.0);
        assert_eq!(detector.interval_ms_mean(peer()), Some(1000.0));
        assert!(!detector.is_alive(peer(), last_ms + 60_000 + 18_421));
    }

    #[test]
    fn the_window_keeps_at_most_1000_samples() {
        let detector = steady_heartbeats(5_000);
        assert_eq!(detector.sample_count(peer()), SAMPLE_COUNT_MAX);
    }

    #[test]
    fn a_query_time_before_the_last_heartbeat_reads_as_no_silence() {
        let detector = steady_heartbeats(3);
        assert_eq!(detector.phi(peer(), 500), 0.0);
    }

    #[test]
    fn a_removed_endpoint_is_not_alive() {
        let mut detector = steady_heartbeats(3);
        detector.remove(peer());
        assert!(!detector.is_alive(peer(), 2_000));
    }

    #[test]
    fn the_thresholds_scale_with_the_gossip_interval() {
        let mut detector = FailureDetector::new(DetectorConfig::for_gossip_interval(10));
        for beat in 0..2_000 {
            detector.report(peer(), beat * 10);
        }
        let last_ms = 19_990;
        // Mean 10 ms: down after 8 * 10 * ln 10 = 184.2 ms.
        assert!(detector.is_alive(peer(), last_ms + 184));
        assert!(!detector.is_alive(peer(), last_ms + 185));
    }
}
