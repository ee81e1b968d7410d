//! Fault budgets: how much of the system may be broken at once.
//!
//! A budget is checked at every fault's start (what is broken only grows then). What counts
//! as broken at an instant:
//! - a node crashed or paused, a node under a disk fault, a node whose messages are being
//!   dropped (a loss fault names it);
//! - a replica that cannot exchange messages both ways with a majority of the replicas that
//!   are up (itself included), under the union of the active partitions' grudges;
//! - a non-replicated node cut (either way) from a majority of the replicas or from a
//!   majority of the other non-replicated nodes.
//!
//! Latency and clock faults break nothing here: they slow or mislead a node, and the checks
//! are meant to catch what that does.
//! TODO(budget-replica-sets): the majority is taken over all ring nodes, which equals the
//! replica set only while the ring has RF nodes; with more, a per-range count is needed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::partition::{grudge, Grudge};
use crate::{FaultKind, Schedule};

/// How much may be broken at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// No limit.
    Unlimited,
    /// At most one fault active at any instant, of any kind.
    OneAtATime,
    /// At most ⌊RF/2⌋ replicas and at most one non-replicated node broken at once.
    MinorityOfReplicas,
}

/// The nodes of a run by role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// The ring's replicas, e.g. `ring-1..3`.
    pub replicas: Vec<String>,
    /// Copies of each datum on the ring.
    pub replication_factor: usize,
    /// Nodes of roles that do not hold replicas, e.g. `api-1`, `guild-1`, `gateway`, `client`.
    pub others: Vec<String>,
}

impl Roles {
    /// The simulator's cluster: `ring-1..3` at RF 3, and `api-1..2`, `guild-1..3`,
    /// `data-1..2`, `gateway`, `client`.
    pub fn simulator() -> Self {
        let others = [
            "api-1", "api-2", "guild-1", "guild-2", "guild-3", "data-1", "data-2",
        ];
        Self {
            replicas: (1..=3).map(|i| format!("ring-{i}")).collect(),
            replication_factor: 3,
            others: others
                .into_iter()
                .chain(["gateway", "client"])
                .map(String::from)
                .collect(),
        }
    }

    /// Every node, replicas first.
    pub fn all(&self) -> Vec<String> {
        self.replicas.iter().chain(&self.others).cloned().collect()
    }

    /// How many replicas may be broken at once: ⌊RF/2⌋.
    pub fn replicas_down_max(&self) -> usize {
        self.replication_factor / 2
    }
}

/// A moment at which a schedule breaks more than its budget allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetViolation {
    /// When, in simulated ms.
    pub at_ms: u64,
    /// The nodes over budget (for one-at-a-time, every node the active faults target).
    pub nodes: BTreeSet<String>,
    /// Indices of the faults active then.
    pub faults: Vec<usize>,
    /// Which limit was passed.
    pub reason: String,
}

impl fmt::Display for BudgetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<&str> = self.nodes.iter().map(String::as_str).collect();
        write!(
            f,
            "at {} ms: {} (nodes {}; faults {:?})",
            self.at_ms,
            self.reason,
            nodes.join(", "),
            self.faults
        )
    }
}

impl std::error::Error for BudgetViolation {}

/// Checks that `schedule` never breaks more than `budget` allows over `roles`.
pub fn check_budget(
    schedule: &Schedule,
    budget: Budget,
    roles: &Roles,
) -> Result<(), BudgetViolation> {
    for fault in &schedule.faults {
        let at_ms = fault.at_ms;
        let active: Vec<usize> = (0..schedule.faults.len())
            .filter(|&i| schedule.faults[i].active_at(at_ms))
            .collect();
        let violation = |nodes: BTreeSet<String>, reason: String| BudgetViolation {
            at_ms,
            nodes,
            faults: active.clone(),
            reason,
        };
        match budget {
            Budget::Unlimited => {}
            Budget::OneAtATime if active.len() > 1 => {
                let nodes = active
                    .iter()
                    .flat_map(|&i| schedule.faults[i].nodes())
                    .map(String::from)
                    .collect();
                let reason = format!("{} faults active at once", active.len());
                return Err(violation(nodes, reason));
            }
            Budget::OneAtATime => {}
            Budget::MinorityOfReplicas => {
                let (replicas, others) = broken(schedule, &active, roles);
                if replicas.len() > roles.replicas_down_max() {
                    let reason = format!(
                        "{} replicas broken, at most {} allowed",
                        replicas.len(),
                        roles.replicas_down_max()
                    );
                    return Err(violation(replicas, reason));
                }
                if others.len() > 1 {
                    let reason = format!("{} non-replicated nodes broken", others.len());
                    return Err(violation(others, reason));
                }
            }
        }
    }
    Ok(())
}

/// The replicas and the non-replicated nodes broken by the `active` faults.
fn broken(
    schedule: &Schedule,
    active: &[usize],
    roles: &Roles,
) -> (BTreeSet<String>, BTreeSet<String>) {
    // 1. Nodes broken outright, and the union of the partitions' grudges.
    let mut down = BTreeSet::new();
    let mut faulty = BTreeSet::new();
    let mut cut = Grudge::new();
    for &i in active {
        match &schedule.faults[i].kind {
            FaultKind::Crash { node, .. } | FaultKind::Pause { node, .. } => {
                down.insert(node.clone());
            }
            FaultKind::Disk { node, .. } => {
                faulty.insert(node.clone());
            }
            FaultKind::Loss {
                nodes,
                links,
                every_link,
                ..
            } => {
                if *every_link {
                    faulty.extend(roles.all());
                }
                faulty.extend(nodes.iter().chain(links.iter().flatten()).cloned());
            }
            FaultKind::Partition {
                nodes,
                shape,
                one_way,
                ..
            } => {
                for (node, from) in grudge(shape, *one_way, nodes) {
                    cut.entry(node).or_default().extend(from);
                }
            }
            FaultKind::Latency { .. } | FaultKind::Clock { .. } => {}
        }
    }
    let linked = |a: &String, b: &String| {
        let hears = |x: &String, y: &String| cut.get(x).is_none_or(|from| !from.contains(y));
        hears(a, b) && hears(b, a)
    };
    let majority = |n: usize| n / 2 + 1;

    // 2. Replicas: broken, or without a two-way majority among the replicas that are up.
    let up: Vec<&String> = roles
        .replicas
        .iter()
        .filter(|r| !down.contains(*r))
        .collect();
    let replicas = roles
        .replicas
        .iter()
        .filter(|r| {
            let reach = up.iter().filter(|s| linked(r, s)).count();
            down.contains(*r) || faulty.contains(*r) || reach < majority(roles.replicas.len())
        })
        .cloned()
        .collect();

    // 3. Others: broken, or cut from a majority of the replicas or of the other others.
    let others = roles
        .others
        .iter()
        .filter(|o| {
            let cut_replicas = roles.replicas.iter().filter(|r| !linked(o, r)).count();
            let peers: Vec<&String> = roles.others.iter().filter(|p| p != o).collect();
            let cut_peers = peers.iter().filter(|p| !linked(o, p)).count();
            down.contains(*o)
                || faulty.contains(*o)
                || cut_replicas >= majority(roles.replicas.len())
                || (!peers.is_empty() && cut_peers >= majority(peers.len()))
        })
        .cloned()
        .collect();
    (replicas, others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, PartitionShape};

    fn crash(at_ms: u64, node: &str, restart_after_ms: u64) -> Fault {
        Fault {
            at_ms,
            kind: FaultKind::Crash {
                node: node.into(),
                restart_after_ms: Some(restart_after_ms),
            },
        }
    }

    fn isolate(at_ms: u64, node: &str, duration_ms: u64) -> Fault {
        Fault {
            at_ms,
            kind: FaultKind::Partition {
                nodes: Roles::simulator().all(),
                shape: PartitionShape::Isolate { node: node.into() },
                one_way: false,
                duration_ms,
            },
        }
    }

    #[test]
    fn two_overlapping_replica_faults_break_the_minority_budget() {
        let roles = Roles::simulator();
        let schedule = Schedule::new(vec![
            crash(1_000, "ring-1", 5_000),
            isolate(3_000, "ring-2", 10),
        ]);
        let violation = check_budget(&schedule, Budget::MinorityOfReplicas, &roles).unwrap_err();
        assert_eq!(violation.at_ms, 3_000);
        // ring-3 is up and linked, but alone it is no majority.
        let want: BTreeSet<String> = ["ring-1", "ring-2", "ring-3"].map(String::from).into();
        assert_eq!(violation.nodes, want);
        assert_eq!(violation.faults, vec![0, 1]);
        assert!(violation.to_string().contains("at 3000 ms"), "{violation}");
    }

    #[test]
    fn a_replica_and_a_front_node_fit_the_minority_budget_but_not_one_at_a_time() {
        let roles = Roles::simulator();
        let schedule = Schedule::new(vec![
            crash(1_000, "ring-1", 5_000),
            isolate(2_000, "api-1", 10),
        ]);
        assert_eq!(
            check_budget(&schedule, Budget::MinorityOfReplicas, &roles),
            Ok(())
        );
        let violation = check_budget(&schedule, Budget::OneAtATime, &roles).unwrap_err();
        assert_eq!(violation.at_ms, 2_000);
        assert!(violation.nodes.contains("api-1") && violation.nodes.contains("ring-1"));
    }

    #[test]
    fn two_front_nodes_break_the_minority_budget() {
        let roles = Roles::simulator();
        let schedule = Schedule::new(vec![crash(0, "guild-1", 50), crash(40, "gateway", 50)]);
        let violation = check_budget(&schedule, Budget::MinorityOfReplicas, &roles).unwrap_err();
        assert_eq!(violation.at_ms, 40);
        let want: BTreeSet<String> = ["gateway", "guild-1"].map(String::from).into();
        assert_eq!(violation.nodes, want);
    }

    #[test]
    fn halves_over_the_ring_break_one_replica_and_faults_in_sequence_are_fine() {
        let roles = Roles::simulator();
        let halves = Fault {
            at_ms: 100,
            kind: FaultKind::Partition {
                nodes: roles.replicas.clone(),
                shape: PartitionShape::Halves,
                one_way: false,
                duration_ms: 100,
            },
        };
        let schedule = Schedule::new(vec![crash(0, "ring-1", 100), halves, crash(200, "api", 1)]);
        assert_eq!(
            check_budget(&schedule, Budget::MinorityOfReplicas, &roles),
            Ok(())
        );
        assert_eq!(check_budget(&schedule, Budget::OneAtATime, &roles), Ok(()));
    }
}
