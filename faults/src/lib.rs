//! Faults as data: what can go wrong, when, and to which node.
//!
//! A [`Schedule`] is a plain value (serde), so a run's faults can be printed, stored in its
//! report, written by hand ([`file`]), drawn from a seed ([`swarm`]) and replayed; removing one
//! fault leaves the others as they were. Times are simulated ms from the start of the run.
//!
//! Modelled: crash (with a restart or none), pause (a whole-node freeze, like a GC stop),
//! partitions of several shapes ([`partition`]), added latency and jitter and segment loss on
//! the links of some nodes, on listed links (one way or both) or on every link
//! ([`LinkTarget`]), a node's clock step and drift, and disk faults (lost unsynced writes, a
//! torn last write, failing or slow syncs). [`budget`] bounds how much may be broken at once.
//!
//! Not modelled: message duplication, reordering and corruption, full disks, bit flips, and
//! membership changes. This crate only describes faults; applying them is the simulator's
//! nemesis.
//! TODO(faults-duplication): duplicated and reordered messages need a simulator that can make
//! them; madsim's TCP cannot.

pub mod budget;
pub mod file;
pub mod partition;
pub mod rng;
pub mod swarm;

use serde::{Deserialize, Serialize};

pub use budget::{check_budget, Budget, BudgetViolation, Roles};
pub use file::{parse_json, parse_toml, FileError};
pub use partition::{grudge, Grudge, PartitionShape};
pub use swarm::{Profile, Swarm};

/// What a fault does. Every kind names its target and, except a crash without restart and a
/// clock fault without an end, how long it lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Freeze the node for `duration_ms`: it keeps its memory and sockets but runs nothing,
    /// then resumes where it stopped (a GC stop, a SIGSTOP, a VM migration).
    Pause {
        /// The node.
        node: String,
        /// How long it stays frozen.
        duration_ms: u64,
    },
    /// Cut links between `nodes` in the given shape for `duration_ms`; see [`grudge`].
    Partition {
        /// The nodes the shape is laid over, in order (the order matters to every shape).
        nodes: Vec<String>,
        /// Which links are cut.
        shape: PartitionShape,
        /// Cut only one direction of each link (see [`partition`] for which one).
        #[serde(default)]
        one_way: bool,
        /// How long the cut lasts.
        duration_ms: u64,
    },
    /// Add `delay_ms` plus up to `jitter_ms` to the bytes crossing some links: every link of
    /// `nodes` (both ways), the `links` listed, or `every_link`; exactly one of the three.
    Latency {
        /// Every link to or from these nodes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<String>,
        /// These links, each `[from, to]`; both ways unless `one_way`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<[String; 2]>,
        /// Only from the first node of each of `links` to the second.
        #[serde(default, skip_serializing_if = "is_false")]
        one_way: bool,
        /// Every link of the network.
        #[serde(default, skip_serializing_if = "is_false")]
        every_link: bool,
        /// Added delay.
        delay_ms: u64,
        /// Added random delay on top, uniformly in `0..=jitter_ms`.
        jitter_ms: u64,
        /// How long it lasts.
        duration_ms: u64,
    },
    /// Drop segments crossing some links (chosen as for [`FaultKind::Latency`]) with
    /// probability `rate` (in `0..=1`).
    ///
    /// The simulated links are TCP: a dropped segment is retransmitted, so the application
    /// sees a stall and a retransmit delay rather than a lost message.
    Loss {
        /// Every link to or from these nodes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<String>,
        /// These links, each `[from, to]`; both ways unless `one_way`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<[String; 2]>,
        /// Only from the first node of each of `links` to the second.
        #[serde(default, skip_serializing_if = "is_false")]
        one_way: bool,
        /// Every link of the network.
        #[serde(default, skip_serializing_if = "is_false")]
        every_link: bool,
        /// Drop probability per message.
        rate: f64,
        /// How long it lasts.
        duration_ms: u64,
    },
    /// Step the node's clock by `offset_us` and let it drift by `drift_ppm` from then on; the
    /// clock returns to true time after `duration_ms`, or never if that is absent.
    Clock {
        /// The node.
        node: String,
        /// The step, in µs; negative steps go back in time.
        offset_us: i64,
        /// The drift, in parts per million; negative drift runs slow.
        drift_ppm: i64,
        /// When the clock is corrected; `None` leaves it wrong.
        duration_ms: Option<u64>,
    },
    /// Make the node's disk misbehave for `duration_ms`.
    Disk {
        /// The node.
        node: String,
        /// How it misbehaves.
        disk: DiskFault,
        /// How long it lasts.
        duration_ms: u64,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Which links a latency or loss fault reaches, as its fields name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTarget<'a> {
    /// Every link to or from one of these nodes, both ways.
    Nodes(&'a [String]),
    /// These links, `[from, to]`: both ways, or only from `from` to `to` if `one_way`.
    Links {
        /// The links.
        links: &'a [[String; 2]],
        /// Only the first node's direction.
        one_way: bool,
    },
    /// Every link of the network.
    Every,
}

impl<'a> LinkTarget<'a> {
    /// The target a fault's fields name: `every_link` first, then `links`, then `nodes`
    /// (a checked schedule names exactly one of them).
    pub fn of(
        nodes: &'a [String],
        links: &'a [[String; 2]],
        one_way: bool,
        every_link: bool,
    ) -> Self {
        if every_link {
            LinkTarget::Every
        } else if !links.is_empty() {
            LinkTarget::Links { links, one_way }
        } else {
            LinkTarget::Nodes(nodes)
        }
    }

    /// The directed links `(from, to)` this target reaches among `all` nodes, in order and
    /// without repeats.
    pub fn directed(&self, all: &[String]) -> Vec<(String, String)> {
        let mut out = std::collections::BTreeSet::new();
        let touches = |a: &String, b: &String| match self {
            LinkTarget::Every => true,
            LinkTarget::Nodes(nodes) => nodes.contains(a) || nodes.contains(b),
            LinkTarget::Links { links, one_way } => links
                .iter()
                .any(|[from, to]| (from == a && to == b) || (!one_way && from == b && to == a)),
        };
        for a in all {
            for b in all {
                if a != b && touches(a, b) {
                    out.insert((a.clone(), b.clone()));
                }
            }
        }
        out.into_iter().collect()
    }

    /// How the target reads in a trace line, e.g. `ring-2's links` or `api-1 -> ring-2`.
    pub fn describe(&self) -> String {
        match self {
            LinkTarget::Every => "every link".to_string(),
            LinkTarget::Nodes(nodes) => format!("every link of {}", nodes.join(", ")),
            LinkTarget::Links { links, one_way } => {
                let arrow = if *one_way { "->" } else { "<->" };
                let named: Vec<String> = links
                    .iter()
                    .map(|[from, to]| format!("{from} {arrow} {to}"))
                    .collect();
                named.join(", ")
            }
        }
    }
}

/// How a disk misbehaves while a [`FaultKind::Disk`] lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiskFault {
    /// A crash in the window loses every unsynced write (a crash always does; this marks the
    /// window in which a nemesis should crash the node to exercise it).
    LoseUnsynced,
    /// A crash in the window tears the last unsynced write, keeping its first `keep_bytes`.
    TornWrite {
        /// Bytes of the last write that reach the platter.
        keep_bytes: u64,
    },
    /// Every sync fails with an I/O error.
    FailSync,
    /// Every sync takes `delay_ms` longer.
    SlowSync {
        /// Added time per sync.
        delay_ms: u64,
    },
}

/// One fault at one time. (Unknown fields are refused by [`FaultKind`], which receives every
/// field but `at_ms`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When it starts, in simulated ms from the start of the run.
    pub at_ms: u64,
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl Fault {
    /// How long the fault lasts; `None` if it never heals.
    pub fn duration_ms(&self) -> Option<u64> {
        match &self.kind {
            FaultKind::Crash {
                restart_after_ms, ..
            } => *restart_after_ms,
            FaultKind::Clock { duration_ms, .. } => *duration_ms,
            FaultKind::Pause { duration_ms, .. }
            | FaultKind::Partition { duration_ms, .. }
            | FaultKind::Latency { duration_ms, .. }
            | FaultKind::Loss { duration_ms, .. }
            | FaultKind::Disk { duration_ms, .. } => Some(*duration_ms),
        }
    }

    /// When the fault is over (healed), if it ever is.
    pub fn heal_ms(&self) -> Option<u64> {
        self.duration_ms().map(|d| self.at_ms.saturating_add(d))
    }

    /// Whether the fault is active at `t_ms` (start inclusive, heal exclusive).
    pub fn active_at(&self, t_ms: u64) -> bool {
        self.at_ms <= t_ms && self.heal_ms().is_none_or(|heal| t_ms < heal)
    }

    /// The node the fault targets; for faults over several nodes, the first of them.
    pub fn node(&self) -> &str {
        self.nodes().first().copied().unwrap_or_default()
    }

    /// Every node the fault names (for a fault on every link, none).
    pub fn nodes(&self) -> Vec<&str> {
        match &self.kind {
            FaultKind::Crash { node, .. }
            | FaultKind::Pause { node, .. }
            | FaultKind::Clock { node, .. }
            | FaultKind::Disk { node, .. } => vec![node.as_str()],
            FaultKind::Partition { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            FaultKind::Latency { nodes, links, .. } | FaultKind::Loss { nodes, links, .. } => {
                let mut named: Vec<&str> = nodes.iter().map(String::as_str).collect();
                for name in links.iter().flatten() {
                    if !named.contains(&name.as_str()) {
                        named.push(name);
                    }
                }
                named
            }
        }
    }

    /// The links a latency or loss fault reaches; `None` for other kinds.
    pub fn link_target(&self) -> Option<LinkTarget<'_>> {
        match &self.kind {
            FaultKind::Latency {
                nodes,
                links,
                one_way,
                every_link,
                ..
            }
            | FaultKind::Loss {
                nodes,
                links,
                one_way,
                every_link,
                ..
            } => Some(LinkTarget::of(nodes, links, *one_way, *every_link)),
            _ => None,
        }
    }

    /// The kind's name as written in a schedule file, e.g. `crash`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            FaultKind::Crash { .. } => "crash",
            FaultKind::Pause { .. } => "pause",
            FaultKind::Partition { .. } => "partition",
            FaultKind::Latency { .. } => "latency",
            FaultKind::Loss { .. } => "loss",
            FaultKind::Clock { .. } => "clock",
            FaultKind::Disk { .. } => "disk",
        }
    }
}

/// A run's faults, in start order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

    /// The same schedule without its `index`th fault (unchanged if there is none): the step
    /// a shrinker takes. The other faults stay exactly as they were.
    pub fn without(&self, index: usize) -> Self {
        let faults = self
            .faults
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, f)| f.clone())
            .collect();
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
            concat!(
                r#"{"faults":[{"at_ms":20000,"kind":"crash","node":"ring-1","#,
                r#""restart_after_ms":20000}]}"#
            )
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

    #[test]
    fn without_drops_one_fault_and_keeps_the_rest() {
        let schedule = Schedule::new(vec![
            crash(10, "a", Some(1)),
            crash(20, "b", Some(1)),
            crash(30, "c", None),
        ]);
        let shrunk = schedule.without(1);
        assert_eq!(
            shrunk.faults,
            vec![crash(10, "a", Some(1)), crash(30, "c", None)]
        );
        assert_eq!(schedule.without(7), schedule);
    }

    #[test]
    fn an_old_latency_fault_on_nodes_reads_and_writes_as_before() {
        let json = concat!(
            r#"{"at_ms":1,"kind":"latency","nodes":["ring-2"],"#,
            r#""delay_ms":50,"jitter_ms":0,"duration_ms":9}"#
        );
        let fault: Fault = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&fault).unwrap(), json);
        let all: Vec<String> = ["ring-1", "ring-2", "ring-3"].map(String::from).to_vec();
        let target = fault.link_target().unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            target.directed(&all),
            vec![
                pair("ring-1", "ring-2"),
                pair("ring-2", "ring-1"),
                pair("ring-2", "ring-3"),
                pair("ring-3", "ring-2"),
            ]
        );
    }

    #[test]
    fn a_one_way_link_fault_reaches_one_direction_only() {
        let links = [["api-1".to_string(), "ring-2".to_string()]];
        let all: Vec<String> = ["api-1", "ring-2", "ring-3"].map(String::from).to_vec();
        let one_way = LinkTarget::of(&[], &links, true, false);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(one_way.directed(&all), vec![pair("api-1", "ring-2")]);
        let both = LinkTarget::of(&[], &links, false, false);
        assert_eq!(
            both.directed(&all),
            vec![pair("api-1", "ring-2"), pair("ring-2", "api-1")]
        );
        assert_eq!(
            LinkTarget::of(&[], &[], false, true).directed(&all).len(),
            6
        );
        assert_eq!(one_way.describe(), "api-1 -> ring-2");
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let nodes = vec!["ring-1".to_string(), "ring-2".to_string()];
        let kinds = vec![
            FaultKind::Pause {
                node: "api".into(),
                duration_ms: 5,
            },
            FaultKind::Partition {
                nodes: nodes.clone(),
                shape: PartitionShape::RandomHalves { seed: 9 },
                one_way: true,
                duration_ms: 5,
            },
            FaultKind::Latency {
                nodes: nodes.clone(),
                links: Vec::new(),
                one_way: false,
                every_link: false,
                delay_ms: 50,
                jitter_ms: 10,
                duration_ms: 5,
            },
            FaultKind::Loss {
                nodes: Vec::new(),
                links: vec![["api-1".into(), "ring-2".into()]],
                one_way: true,
                every_link: false,
                rate: 0.25,
                duration_ms: 5,
            },
            FaultKind::Latency {
                nodes: Vec::new(),
                links: Vec::new(),
                one_way: false,
                every_link: true,
                delay_ms: 5,
                jitter_ms: 0,
                duration_ms: 5,
            },
            FaultKind::Clock {
                node: "ring-3".into(),
                offset_us: -1_500,
                drift_ppm: 200,
                duration_ms: None,
            },
            FaultKind::Disk {
                node: "ring-1".into(),
                disk: DiskFault::TornWrite { keep_bytes: 3 },
                duration_ms: 5,
            },
        ];
        let faults: Vec<Fault> = kinds
            .into_iter()
            .map(|kind| Fault { at_ms: 1, kind })
            .collect();
        let schedule = Schedule::new(faults);
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
    }
}
