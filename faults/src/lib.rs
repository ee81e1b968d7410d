//! Faults as data: what can go wrong, when, and to which node.
//!
//! A [`Schedule`] is a plain value (serde), so a run's faults can be printed, stored in its
//! report, written by hand and replayed; removing one fault leaves the others as they were.
//! Times are simulated ms from the start of the run.
//!
//! Modelled so far: crash of a node, with a restart after a delay or never; a crash drops the
//! node's unsynced disk writes.
//! TODO(faults-vocabulary): pause, partition, latency, loss, clock and disk faults, and the
//! seeded swarm generator with fault budgets.

use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Kill the node (its unsynced disk writes are lost), then restart it after
    /// `restart_after_ms`, or never if that is absent.
    Crash {
        /// The node's name, e.g. `ring-1`.
        node: String,
        /// Delay before the restart; `None` leaves the node down.
        restart_after_ms: Option<u64>,
    },
}

/// One fault at one time. (Unknown fields are refused by [`FaultKind`], which receives every
/// field but `at_ms`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// When it starts, in simulated ms from the start of the run.
    pub at_ms: u64,
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl Fault {
    /// When the fault is over (healed), if it ever is.
    pub fn heal_ms(&self) -> Option<u64> {
        match &self.kind {
            FaultKind::Crash {
                restart_after_ms, ..
            } => restart_after_ms.map(|d| self.at_ms + d),
        }
    }

    /// The node the fault targets.
    pub fn node(&self) -> &str {
        match &self.kind {
            FaultKind::Crash { node, .. } => node,
        }
    }
}

/// A run's faults, in start order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The faults.
    pub faults: Vec<Fault>,
}

impl Schedule {
    /// A schedule of `faults`, sorted by start time (ties keep their given order).
    pub fn new(mut faults: Vec<Fault>) -> Self {
        faults.sort_by_key(|f| f.at_ms);
        Self { faults }
    }

    /// When the last fault heals; `None` if there are no faults or one never heals.
    pub fn all_healed_ms(&self) -> Option<u64> {
        self.faults
            .iter()
            .try_fold(0, |latest, f| f.heal_ms().map(|h| h.max(latest)))
    }

    /// The windows `[start, end)` in which faults are active, end = `run_end_ms` if unhealed.
    pub fn active_windows_ms(&self, run_end_ms: u64) -> Vec<(u64, u64)> {
        self.faults
            .iter()
            .map(|f| (f.at_ms, f.heal_ms().unwrap_or(run_end_ms)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(at_ms: u64, node: &str, restart_after_ms: Option<u64>) -> Fault {
        Fault {
            at_ms,
            kind: FaultKind::Crash {
                node: node.into(),
                restart_after_ms,
            },
        }
    }

    #[test]
    fn a_schedule_round_trips_through_json() {
        let schedule = Schedule::new(vec![crash(20_000, "ring-1", Some(20_000))]);
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(
            json,
            r#"{"faults":[{"at_ms":20000,"kind":"crash","node":"ring-1","restart_after_ms":20000}]}"#
        );
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
    }

    #[test]
    fn unknown_fields_are_named() {
        let json = r#"{"faults":[{"at_ms":1,"kind":"crash","node":"a","restart_after":5}]}"#;
        let error = serde_json::from_str::<Schedule>(json)
            .unwrap_err()
            .to_string();
        assert!(error.contains("restart_after"), "{error}");
    }

    #[test]
    fn healing_time_is_the_latest_restart() {
        let schedule = Schedule::new(vec![crash(30, "b", Some(5)), crash(10, "a", Some(40))]);
        assert_eq!(schedule.faults[0].node(), "a");
        assert_eq!(schedule.all_healed_ms(), Some(50));
        let never = Schedule::new(vec![crash(10, "a", None)]);
        assert_eq!(never.all_healed_ms(), None);
        assert_eq!(never.active_windows_ms(99), vec![(10, 99)]);
    }
}
