//! The swarm generator: a profile and then a schedule, both drawn from one seed.
//!
//! A [`Profile`] says which fault kinds are on and how hard they hit (how many faults, how
//! long, how lossy, how far clocks step), and under which [`Budget`]. Different seeds switch
//! different kinds on, so a sweep explores combinations as well as single faults.
//!
//! Independence: fault `i` is drawn from its own sub-seed, `mix(seed, i)`, and from nothing
//! drawn for another fault. Its time comes from a fixed slot: the fault window is cut into
//! lanes and slots, fault `i` lives in lane `i mod lanes`, slot `i div lanes`, and heals
//! before its slot ends. So removing a fault (see [`Schedule::without`]) leaves every other
//! fault exactly as it was, which is what a shrinker needs.
//!
//! Budgets by construction: faults in one lane never overlap, so one-at-a-time uses one lane.
//! Minority-of-replicas uses one lane for the non-replicated nodes and ⌊RF/2⌋ lanes for the
//! replicas, each lane owning its own replicas, and a lane's faults break only its target.
//! Not modelled: faults timed relative to the workload (e.g. a crash mid-write), and swizzled
//! partitions that heal in a random order.
//! TODO(swarm-feedback): profiles are drawn blind; weighting them by past failures is the
//! sweep runner's job.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::budget::{Budget, Roles};
use crate::partition::PartitionShape;
use crate::rng::{mix, SplitMix64};
use crate::{DiskFault, Fault, FaultKind, Schedule};

/// Sub-seed stream of the profile.
const STREAM_PROFILE: u64 = 1;
/// Sub-seed stream of the faults.
const STREAM_FAULT: u64 = 2;

/// The fault kinds, as a profile switches them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`FaultKind::Crash`].
    Crash,
    /// [`FaultKind::Pause`].
    Pause,
    /// [`FaultKind::Partition`].
    Partition,
    /// [`FaultKind::Latency`].
    Latency,
    /// [`FaultKind::Loss`].
    Loss,
    /// [`FaultKind::Clock`].
    Clock,
    /// [`FaultKind::Disk`].
    Disk,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::Crash,
        Kind::Pause,
        Kind::Partition,
        Kind::Latency,
        Kind::Loss,
        Kind::Clock,
        Kind::Disk,
    ];
}

/// Which faults a run gets and how hard they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The kinds switched on (never empty).
    pub kinds: BTreeSet<Kind>,
    /// What may be broken at once.
    pub budget: Budget,
    /// How many faults the schedule has.
    pub fault_count: usize,
    /// Shortest fault, before clamping to its slot.
    pub duration_ms_min: u64,
    /// Longest fault, before clamping to its slot.
    pub duration_ms_max: u64,
    /// Chance that a lane's last crash never restarts.
    pub permanent_crash_chance: f64,
    /// Highest added latency.
    pub delay_ms_max: u64,
    /// Highest jitter.
    pub jitter_ms_max: u64,
    /// Highest drop rate, in `0..=1`.
    pub loss_rate_max: f64,
    /// Largest clock step, either way.
    pub clock_offset_us_max: i64,
    /// Largest clock drift, either way.
    pub clock_drift_ppm_max: i64,
    /// Longest added sync delay.
    pub sync_delay_ms_max: u64,
}

impl Profile {
    /// The profile of `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut rng = SplitMix64::new(mix(seed, STREAM_PROFILE, 0));

        // 1. The kinds: each on with probability 0.6, crash if none is.
        let mut kinds: BTreeSet<Kind> = Kind::ALL.into_iter().filter(|_| rng.chance(0.6)).collect();
        if kinds.is_empty() {
            kinds.insert(Kind::Crash);
        }

        // 2. The budget and the intensity.
        let budgets = [
            Budget::MinorityOfReplicas,
            Budget::OneAtATime,
            Budget::Unlimited,
        ];
        let budget = *rng.pick(&budgets).unwrap_or(&Budget::OneAtATime);
        let duration_ms_min = rng.range(100, 2_000);
        let duration_ms_max = duration_ms_min + rng.range(0, 20_000);
        let permanent_crash_chance = if rng.chance(0.2) { 0.3 } else { 0.0 };
        let loss_rates = [0.01, 0.05, 0.2, 0.5, 1.0];
        Self {
            kinds,
            budget,
            fault_count: rng.range(1, 12) as usize,
            duration_ms_min,
            duration_ms_max,
            permanent_crash_chance,
            delay_ms_max: rng.range(1, 500),
            jitter_ms_max: rng.range(0, 200),
            loss_rate_max: *rng.pick(&loss_rates).unwrap_or(&0.05),
            clock_offset_us_max: rng.range(1_000, 5_000_000) as i64,
            clock_drift_ppm_max: rng.range(1, 500) as i64,
            sync_delay_ms_max: rng.range(1, 1_000),
        }
    }
}

/// A seeded generator of schedules over a fault window `[start_ms, end_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swarm {
    /// The seed every fault's sub-seed comes from.
    pub seed: u64,
    /// What to draw.
    pub profile: Profile,
    /// No fault starts earlier.
    pub start_ms: u64,
    /// Every fault but a permanent crash heals by then.
    pub end_ms: u64,
    /// The nodes by role.
    pub roles: Roles,
}

/// Where a fault may strike: anywhere, or only the given nodes (a budget lane).
enum Targets {
    Anywhere(Vec<String>),
    Only(Vec<String>),
}

impl Swarm {
    /// The swarm of `seed`, its profile drawn from the same seed.
    pub fn new(seed: u64, start_ms: u64, end_ms: u64, roles: Roles) -> Self {
        let profile = Profile::draw(seed);
        Self {
            seed,
            profile,
            start_ms,
            end_ms,
            roles,
        }
    }

    /// The whole schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule::new(
            (0..self.profile.fault_count)
                .map(|i| self.fault(i))
                .collect(),
        )
    }

    /// The schedule of only the faults numbered in `indices` (draw order, not time order).
    pub fn schedule_of(&self, indices: &BTreeSet<usize>) -> Schedule {
        Schedule::new(indices.iter().map(|&i| self.fault(i)).collect())
    }

    /// Fault number `index`, drawn from its own sub-seed only.
    pub fn fault(&self, index: usize) -> Fault {
        let mut rng = SplitMix64::new(mix(self.seed, STREAM_FAULT, index as u64));
        let lanes = self.lanes();
        let (lane, slot) = (index % lanes, index / lanes);
        let last_in_lane = index + lanes >= self.profile.fault_count;

        // 1. The slot, and a start and duration inside it.
        let slots = self.profile.fault_count.div_ceil(lanes).max(1) as u64;
        let slot_ms = (self.end_ms.saturating_sub(self.start_ms) / slots).max(2);
        let slot_start = self.start_ms + slot as u64 * slot_ms;
        let longest = self.profile.duration_ms_max.min(slot_ms - 1).max(1);
        let shortest = self.profile.duration_ms_min.min(longest).max(1);
        let duration_ms = rng.range(shortest, longest);
        let at_ms = slot_start + rng.range(0, slot_ms - duration_ms);

        // 2. The kind and the target.
        let kinds: Vec<Kind> = self.profile.kinds.iter().copied().collect();
        let kind = *rng.pick(&kinds).unwrap_or(&Kind::Crash);
        let kind = match self.targets(lane) {
            Targets::Only(nodes) if nodes.is_empty() => self.latency(&mut rng, vec![], duration_ms),
            targets => self.draw_kind(&mut rng, kind, &targets, duration_ms, last_in_lane),
        };
        Fault { at_ms, kind }
    }

    /// How many faults may be active at once.
    fn lanes(&self) -> usize {
        match self.profile.budget {
            Budget::OneAtATime => 1,
            Budget::MinorityOfReplicas => 1 + self.roles.replicas_down_max(),
            Budget::Unlimited => 3,
        }
    }

    /// The nodes lane `lane` may strike.
    fn targets(&self, lane: usize) -> Targets {
        match self.profile.budget {
            Budget::OneAtATime | Budget::Unlimited => Targets::Anywhere(self.roles.all()),
            Budget::MinorityOfReplicas if lane == 0 => Targets::Only(self.roles.others.clone()),
            Budget::MinorityOfReplicas => {
                let replica_lanes = self.lanes() - 1;
                let owned = self.roles.replicas.iter().enumerate();
                let owned = owned.filter(|(i, _)| i % replica_lanes == lane - 1);
                Targets::Only(owned.map(|(_, r)| r.clone()).collect())
            }
        }
    }

    /// A fault of `kind` against one of `targets`.
    fn draw_kind(
        &self,
        rng: &mut SplitMix64,
        kind: Kind,
        targets: &Targets,
        duration_ms: u64,
        last_in_lane: bool,
    ) -> FaultKind {
        let (Targets::Anywhere(nodes) | Targets::Only(nodes)) = targets;
        let node = rng.pick(nodes).cloned().unwrap_or_default();
        match kind {
            Kind::Crash => {
                let never = last_in_lane && rng.chance(self.profile.permanent_crash_chance);
                let restart_after_ms = (!never).then_some(duration_ms);
                FaultKind::Crash {
                    node,
                    restart_after_ms,
                }
            }
            Kind::Pause => FaultKind::Pause { node, duration_ms },
            Kind::Partition => self.partition(rng, targets, node, duration_ms),
            Kind::Latency => self.latency(rng, vec![node], duration_ms),
            Kind::Loss => FaultKind::Loss {
                nodes: vec![node],
                links: Vec::new(),
                one_way: false,
                every_link: false,
                rate: (rng.unit() * self.profile.loss_rate_max.clamp(0.0, 1.0)).max(0.001),
                duration_ms,
            },
            Kind::Clock => self.clock(rng, node, duration_ms),
            Kind::Disk => self.disk(rng, node, duration_ms),
        }
    }

    /// A partition: in a lane, isolating its target; otherwise any shape.
    fn partition(
        &self,
        rng: &mut SplitMix64,
        targets: &Targets,
        node: String,
        duration_ms: u64,
    ) -> FaultKind {
        let one_way = rng.chance(0.3);
        let all = self.roles.all();
        let (nodes, shape) = match targets {
            Targets::Only(_) => (all, PartitionShape::Isolate { node }),
            Targets::Anywhere(_) => {
                let over = if rng.chance(0.5) {
                    all
                } else {
                    self.roles.replicas.clone()
                };
                // The isolated node must be among the nodes cut.
                let node = if over.contains(&node) {
                    node
                } else {
                    rng.pick(&over).cloned().unwrap_or(node)
                };
                let shapes = [
                    PartitionShape::Halves,
                    PartitionShape::RandomHalves {
                        seed: rng.next_u64(),
                    },
                    PartitionShape::Isolate { node },
                    PartitionShape::MajoritiesRing,
                    PartitionShape::Bridge,
                ];
                let shape = rng.pick(&shapes).cloned().unwrap_or(PartitionShape::Halves);
                (over, shape)
            }
        };
        FaultKind::Partition {
            nodes,
            shape,
            one_way,
            duration_ms,
        }
    }

    /// Added latency on every link of `nodes` (on every link if empty).
    fn latency(&self, rng: &mut SplitMix64, nodes: Vec<String>, duration_ms: u64) -> FaultKind {
        let every_link = nodes.is_empty();
        FaultKind::Latency {
            nodes,
            links: Vec::new(),
            one_way: false,
            every_link,
            delay_ms: rng.range(1, self.profile.delay_ms_max.max(1)),
            jitter_ms: rng.range(0, self.profile.jitter_ms_max),
            duration_ms,
        }
    }

    /// A clock step and drift, either way.
    fn clock(&self, rng: &mut SplitMix64, node: String, duration_ms: u64) -> FaultKind {
        let mut signed = |max: i64| {
            let magnitude = rng.range(0, max.unsigned_abs()) as i64;
            if rng.chance(0.5) {
                -magnitude
            } else {
                magnitude
            }
        };
        FaultKind::Clock {
            node,
            offset_us: signed(self.profile.clock_offset_us_max),
            drift_ppm: signed(self.profile.clock_drift_ppm_max),
            duration_ms: Some(duration_ms),
        }
    }

    /// A disk fault of any mode.
    fn disk(&self, rng: &mut SplitMix64, node: String, duration_ms: u64) -> FaultKind {
        let disk = match rng.range(0, 3) {
            0 => DiskFault::LoseUnsynced,
            1 => DiskFault::TornWrite {
                keep_bytes: rng.range(0, 4_096),
            },
            2 => DiskFault::FailSync,
            _ => DiskFault::SlowSync {
                delay_ms: rng.range(1, self.profile.sync_delay_ms_max.max(1)),
            },
        };
        FaultKind::Disk {
            node,
            disk,
            duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::check_budget;

    fn swarm(seed: u64) -> Swarm {
        Swarm::new(seed, 5_000, 45_000, Roles::simulator())
    }

    #[test]
    fn the_same_seed_draws_the_same_profile_and_schedule() {
        for seed in 0..50 {
            assert_eq!(Profile::draw(seed), Profile::draw(seed));
            assert_eq!(swarm(seed).schedule(), swarm(seed).schedule());
        }
        let distinct: BTreeSet<String> = (0..50)
            .map(|s| format!("{:?}", swarm(s).schedule()))
            .collect();
        assert!(distinct.len() > 45, "{}", distinct.len());
    }

    #[test]
    fn removing_a_fault_leaves_the_others_as_they_were() {
        for seed in 0..200 {
            let swarm = swarm(seed);
            let schedule = swarm.schedule();
            let all: BTreeSet<usize> = (0..swarm.profile.fault_count).collect();
            for i in 0..swarm.profile.fault_count {
                let position = schedule.faults.iter().position(|f| *f == swarm.fault(i));
                let position = position.expect("every drawn fault is in the schedule");
                let mut rest = all.clone();
                rest.remove(&i);
                assert_eq!(
                    swarm.schedule_of(&rest),
                    schedule.without(position),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn shrinking_step_by_step_keeps_the_survivors_unchanged() {
        for seed in 0..100 {
            let swarm = swarm(seed);
            let mut kept: BTreeSet<usize> = (0..swarm.profile.fault_count).collect();
            let mut shrunk = swarm.schedule();
            let mut pick = SplitMix64::new(seed);
            while let Some(&i) = pick.pick(&kept.iter().copied().collect::<Vec<_>>()) {
                let position = shrunk.faults.iter().position(|f| *f == swarm.fault(i));
                shrunk = shrunk.without(position.expect("a kept fault is in the schedule"));
                kept.remove(&i);
                assert_eq!(shrunk, swarm.schedule_of(&kept), "seed {seed}");
            }
            assert!(shrunk.faults.is_empty());
        }
    }

    #[test]
    fn generated_schedules_keep_their_budget() {
        let roles = Roles::simulator();
        for seed in 0..2_000 {
            let swarm = swarm(seed);
            let schedule = swarm.schedule();
            let checked = check_budget(&schedule, swarm.profile.budget, &roles);
            assert_eq!(checked, Ok(()), "seed {seed}: {schedule:?}");
            for budget in [Budget::OneAtATime, Budget::MinorityOfReplicas] {
                let mut forced = swarm.clone();
                forced.profile.budget = budget;
                let schedule = forced.schedule();
                assert_eq!(
                    check_budget(&schedule, budget, &roles),
                    Ok(()),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn generated_faults_stay_in_their_window_and_validate() {
        let roles = Roles::simulator();
        for seed in 0..500 {
            let schedule = swarm(seed).schedule();
            for fault in &schedule.faults {
                assert!(fault.at_ms >= 5_000, "seed {seed}: {fault:?}");
                assert!(
                    fault.heal_ms().is_none_or(|h| h <= 45_000),
                    "seed {seed}: {fault:?}"
                );
            }
            let known = roles.all();
            assert_eq!(
                crate::file::validate(&schedule, Some(&known)),
                Ok(()),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn over_many_seeds_every_kind_and_budget_appears() {
        let schedules: Vec<Schedule> = (0..300).map(|s| swarm(s).schedule()).collect();
        let kinds: BTreeSet<&str> = schedules
            .iter()
            .flat_map(|s| s.faults.iter().map(Fault::kind_name))
            .collect();
        assert_eq!(kinds.len(), 7, "{kinds:?}");
        let budgets: BTreeSet<Budget> = (0..300).map(|s| Profile::draw(s).budget).collect();
        assert_eq!(budgets.len(), 3);
    }
}
