//! The nemesis: applies a fault schedule to a running simulated cluster, in time order.
//!
//! Through madsim: crash (kill, then restart), pause (freeze, then resume), partition
//! (directional link clogging along the fault's grudge). Through the env seam: latency and
//! loss on links (a rule per fault in the link fault table, `chat_system::env::link`, over the
//! links the fault names: every link of some nodes, listed links, or every link), clock
//! faults (a node's offset and drift), and disk faults (failing or slow syncs; a crash inside
//! a torn-write window keeps that many bytes of the last write). Every applied action is a
//! trace event and appears in the report.
//!
//! Faults of one kind on one target overlap independently: link rules add up on a link they
//! share and each heal lifts only its own rule; a disk gets the worst of the disk faults in
//! force on it. Not applied (and said so in the trace): a fault on a node the harness does not
//! know, a clock fault on a node whose clock it does not own, a disk fault on a node without a
//! simulated disk. Two clock faults overlapping on one node add their steps, and the first to
//! heal puts the clock back to true time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_faults::{grudge, DiskFault, Fault, FaultKind, LinkTarget, Schedule};
use chat_system::env::clock::NodeClock;
use chat_system::env::disk::SimDisk;
use chat_system::env::link::{self, LinkFault, LinkScope};
use chat_system::net::runtime_instant;
use madsim::net::NetSim;
use madsim::runtime::Handle;

use crate::recorder::Recorder;

/// What the nemesis can reach: the runtime, and each node's address, disk and clock.
pub struct Nemesis<'a> {
    /// The simulation.
    pub handle: &'a Handle,
    /// Every node's address by name: link faults are kept by address.
    pub ips: &'a BTreeMap<String, IpAddr>,
    /// Disks by node name.
    pub disks: &'a BTreeMap<String, SimDisk>,
    /// Clocks by node name.
    pub clocks: &'a BTreeMap<String, NodeClock>,
    /// Where applied faults are recorded.
    pub recorder: &'a Recorder,
    /// Per node, set when the node stopped itself (a ring node whose disk failed).
    pub stopped: &'a BTreeMap<String, Arc<AtomicBool>>,
    /// The start of the run.
    pub start: Instant,
}

impl Nemesis<'_> {
    /// Applies `schedule`: each fault's start, and its heal if it has one, in time order (ties
    /// keep the schedule's order, starts before heals).
    pub async fn run(&self, schedule: &Schedule) {
        let mut actions: Vec<(u64, bool, usize)> = Vec::new();
        for (index, fault) in schedule.faults.iter().enumerate() {
            actions.push((fault.at_ms, true, index));
            if let Some(heal_ms) = fault.heal_ms() {
                actions.push((heal_ms, false, index));
            }
        }
        actions.sort_by_key(|&(at_ms, start, index)| (at_ms, !start, index));

        for (at_ms, start, index) in actions {
            let at = runtime_instant(self.start + Duration::from_millis(at_ms));
            tokio::time::sleep_until(at).await;
            let fault = &schedule.faults[index];
            let action = if start {
                self.begin(schedule, index, fault)
            } else {
                self.heal(schedule, index, fault)
            };
            self.recorder.fault(action);
        }
    }

    /// After the schedule: restarts every node that stopped itself (a ring node whose disk
    /// failed), as an operator would, and lifts every link fault.
    pub fn heal_all(&self) {
        for (node, stopped) in self.stopped {
            if stopped.swap(false, Ordering::Relaxed) {
                self.handle.restart(node.as_str());
                self.recorder
                    .fault(format!("restart {node} (it had stopped)"));
            }
        }
        link::reset();
    }

    fn node_id(&self, name: &str) -> Option<madsim::task::NodeId> {
        self.handle.get_node(name).map(|node| node.id())
    }

    /// Starts `fault`, number `index` of the schedule; what was done, for the trace.
    fn begin(&self, schedule: &Schedule, index: usize, fault: &Fault) -> String {
        match &fault.kind {
            FaultKind::Crash { node, .. } => self.crash(schedule, fault.at_ms, node),
            FaultKind::Pause { node, duration_ms } => {
                self.handle.pause(node.as_str());
                format!("pause {node} for {duration_ms} ms")
            }
            FaultKind::Partition {
                nodes,
                shape,
                one_way,
                ..
            } => {
                let cut = self.links(&grudge(shape, *one_way, nodes), true);
                format!("partition {shape:?} one_way={one_way}: {cut} links cut")
            }
            FaultKind::Latency {
                delay_ms,
                jitter_ms,
                ..
            } => {
                let fault_on_link = LinkFault {
                    delay: Duration::from_millis(*delay_ms),
                    jitter: Duration::from_millis(*jitter_ms),
                    loss_rate: 0.0,
                };
                let what = format!("+{delay_ms} ms, jitter up to {jitter_ms} ms");
                self.link_fault(index, fault, fault_on_link, "latency", &what)
            }
            FaultKind::Loss { rate, .. } => {
                let fault_on_link = LinkFault {
                    loss_rate: *rate,
                    ..LinkFault::default()
                };
                let percent = rate * 100.0;
                let what = format!("{percent:.1}% of segments lost (TCP stalls and retransmits)");
                self.link_fault(index, fault, fault_on_link, "loss", &what)
            }
            FaultKind::Clock {
                node,
                offset_us,
                drift_ppm,
                ..
            } => match self.clocks.get(node) {
                Some(clock) => {
                    clock.step_us(*offset_us);
                    clock.set_drift_ppm(*drift_ppm);
                    format!("clock {node} stepped {offset_us} µs, drifting {drift_ppm} ppm")
                }
                None => format!("not applied: {node} has no clock the harness owns"),
            },
            FaultKind::Disk { node, disk, .. } => {
                self.disk_fault(schedule, index, node, disk, true)
            }
        }
    }

    /// Ends `fault`, number `index` of the schedule; what was done, for the trace.
    fn heal(&self, schedule: &Schedule, index: usize, fault: &Fault) -> String {
        match &fault.kind {
            FaultKind::Crash { node, .. } => {
                self.handle.restart(node.as_str());
                format!("restart {node}")
            }
            FaultKind::Pause { node, .. } => {
                self.handle.resume(node.as_str());
                format!("resume {node}")
            }
            FaultKind::Partition {
                nodes,
                shape,
                one_way,
                ..
            } => {
                let mended = self.links(&grudge(shape, *one_way, nodes), false);
                format!("heal partition {shape:?}: {mended} links restored")
            }
            FaultKind::Latency { .. } | FaultKind::Loss { .. } => {
                let verb = if link::clear(index as u64) {
                    "healed"
                } else {
                    "was not applied"
                };
                format!("{} fault {index} {verb}", fault.kind_name())
            }
            FaultKind::Clock { node, .. } => match self.clocks.get(node) {
                Some(clock) => {
                    clock.set_drift_ppm(0);
                    clock.step_us(-clock.offset_us());
                    format!("clock {node} back to true time")
                }
                None => format!("not applied: {node} has no clock the harness owns"),
            },
            FaultKind::Disk { node, disk, .. } => {
                self.disk_fault(schedule, index, node, disk, false)
            }
        }
    }

    /// Kills `node` and drops its disk's unsynced writes, tearing the last one if a torn-write
    /// fault covers this moment.
    fn crash(&self, schedule: &Schedule, at_ms: u64, node: &str) -> String {
        self.handle.kill(node);
        let tear = schedule.faults.iter().find_map(|f| match &f.kind {
            FaultKind::Disk {
                node: n,
                disk: DiskFault::TornWrite { keep_bytes },
                ..
            } if n == node && f.active_at(at_ms) => usize::try_from(*keep_bytes).ok(),
            _ => None,
        });
        let loss = self
            .disks
            .get(node)
            .map(|disk| disk.crash(tear))
            .unwrap_or_default();
        format!(
            "crash {node} (unsynced writes lost: {}, bytes: {}{})",
            loss.writes_dropped,
            loss.bytes_dropped,
            if loss.torn { ", last write torn" } else { "" }
        )
    }

    /// Starts or ends disk fault `index` on `node`; the disk gets the worst of the faults
    /// in force on it then, so one fault's end does not cancel another that overlaps it.
    fn disk_fault(
        &self,
        schedule: &Schedule,
        index: usize,
        node: &str,
        fault: &DiskFault,
        begin: bool,
    ) -> String {
        let Some(disk) = self.disks.get(node) else {
            return format!("not applied: {node} has no simulated disk");
        };

        // The other disk faults on this node in force at this moment.
        let now_ms = schedule.faults[index]
            .heal_ms()
            .filter(|_| !begin)
            .unwrap_or(schedule.faults[index].at_ms);
        let others: Vec<&DiskFault> = (schedule.faults.iter().enumerate())
            .filter(|(i, f)| *i != index && f.active_at(now_ms))
            .filter_map(|(_, f)| match &f.kind {
                FaultKind::Disk { node: n, disk, .. } if n == node => Some(disk),
                _ => None,
            })
            .collect();
        let other_delay_ms = others.iter().filter_map(|d| match d {
            DiskFault::SlowSync { delay_ms } => Some(*delay_ms),
            _ => None,
        });
        let other_delay_ms = other_delay_ms.max().unwrap_or(0);
        let other_fails = others.iter().any(|d| matches!(d, DiskFault::FailSync));

        match (fault, begin) {
            (DiskFault::FailSync, true) => {
                disk.fail_syncs(u64::MAX);
                format!("disk {node}: every sync fails")
            }
            (DiskFault::FailSync, false) if other_fails => {
                format!("disk {node}: syncs still fail (another fault)")
            }
            (DiskFault::FailSync, false) => {
                disk.fail_syncs(0);
                format!("disk {node}: syncs succeed again")
            }
            (DiskFault::SlowSync { delay_ms }, true) => {
                let worst_ms = other_delay_ms.max(*delay_ms);
                disk.set_sync_delay(Duration::from_millis(worst_ms));
                format!("disk {node}: every sync takes {worst_ms} ms longer")
            }
            (DiskFault::SlowSync { .. }, false) => {
                disk.set_sync_delay(Duration::from_millis(other_delay_ms));
                match other_delay_ms {
                    0 => format!("disk {node}: syncs at full speed again"),
                    ms => format!("disk {node}: every sync takes {ms} ms longer (another fault)"),
                }
            }
            (DiskFault::LoseUnsynced | DiskFault::TornWrite { .. }, true) => {
                format!("disk {node}: a crash now loses unsynced writes ({fault:?})")
            }
            (DiskFault::LoseUnsynced | DiskFault::TornWrite { .. }, false) => {
                format!("disk {node}: {fault:?} window over")
            }
        }
    }

    /// Puts fault `index`'s rule on the links it names in the link fault table; what was
    /// done, for the trace.
    fn link_fault(
        &self,
        index: usize,
        fault: &Fault,
        on_link: LinkFault,
        kind: &str,
        what: &str,
    ) -> String {
        let Some(target) = fault.link_target() else {
            return format!("not applied: {kind} fault {index} names no links");
        };
        let ip = |name: &String| self.ips.get(name).copied().ok_or(name.clone());
        let scope = match target {
            LinkTarget::Every => Ok(LinkScope::Every),
            LinkTarget::Nodes(nodes) => nodes
                .iter()
                .map(ip)
                .collect::<Result<BTreeSet<IpAddr>, String>>()
                .map(LinkScope::Nodes),
            LinkTarget::Links { links, one_way } => {
                let mut directed = BTreeSet::new();
                let mut unknown = None;
                for [from, to] in links {
                    match (ip(from), ip(to)) {
                        (Ok(a), Ok(b)) => {
                            directed.insert((a, b));
                            if !one_way {
                                directed.insert((b, a));
                            }
                        }
                        (Err(name), _) | (_, Err(name)) => unknown = Some(name),
                    }
                }
                unknown.map_or(Ok(LinkScope::Links(directed)), Err)
            }
        };
        match scope {
            Ok(scope) => {
                link::set(index as u64, scope, on_link);
                format!("{kind} fault {index} on {}: {what}", target.describe())
            }
            Err(name) => format!("not applied: {kind} fault {index} names unknown node {name}"),
        }
    }

    /// Clogs (or unclogs) every link a grudge names; how many.
    fn links(&self, grudge: &chat_faults::Grudge, cut: bool) -> usize {
        let net = NetSim::current();
        let mut count = 0;
        for (receiver, senders) in grudge {
            for sender in senders {
                let (Some(src), Some(dst)) = (self.node_id(sender), self.node_id(receiver)) else {
                    continue;
                };
                if cut {
                    net.clog_link(src, dst);
                } else {
                    net.unclog_link(src, dst);
                }
                count += 1;
            }
        }
        count
    }
}
