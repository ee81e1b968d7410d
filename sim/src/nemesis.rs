//! The nemesis: applies a fault schedule to a running simulated cluster, in time order.
//!
//! Through madsim: crash (kill, then restart), pause (freeze, then resume), partition
//! (directional link clogging along the fault's grudge), latency and loss (the network's
//! settings). Through the env seam: clock faults (a node's offset and drift) and disk faults
//! (failing syncs; a crash inside a torn-write window keeps that many bytes of the last
//! write). Every applied action is a trace event and appears in the report.
//!
//! Limits, as the simulator sets them: latency and loss apply to the whole network (madsim has
//! one latency range and one loss rate); while several overlap, the network gets the worst of
//! them. TODO(disk-latency): slow syncs need an asynchronous disk API, so they
//! are recorded as not applied. Clock faults reach only nodes whose clock the harness owns.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_faults::{grudge, DiskFault, Fault, FaultKind, Schedule};
use chat_system::env::clock::NodeClock;
use chat_system::env::disk::SimDisk;
use chat_system::net::runtime_instant;
use madsim::net::NetSim;
use madsim::runtime::Handle;

use crate::recorder::Recorder;

/// The simulator's default link latency, restored when a latency fault heals.
const LATENCY_DEFAULT: Range<Duration> = Duration::from_millis(1)..Duration::from_millis(10);

/// What the nemesis can reach: the runtime, and each node's disk and clock.
pub struct Nemesis<'a> {
    /// The simulation.
    pub handle: &'a Handle,
    /// Disks by node name.
    pub disks: &'a BTreeMap<String, SimDisk>,
    /// Clocks by node name.
    pub clocks: &'a BTreeMap<String, NodeClock>,
    /// Where applied faults are recorded.
    pub recorder: &'a Recorder,
    /// Per node, set when the node stopped itself (a ring node whose disk failed).
    pub stopped: &'a BTreeMap<String, Arc<AtomicBool>>,
    /// The latency and loss faults in force, by schedule index: the network gets the worst
    /// of them, so one healing does not cancel another that overlaps it.
    pub network: std::cell::RefCell<ActiveNetwork>,
    /// The start of the run.
    pub start: Instant,
}

/// Latency (delay, jitter) and loss faults in force, by schedule index.
#[derive(Debug, Default)]
pub struct ActiveNetwork {
    latency: BTreeMap<usize, (u64, u64)>,
    loss: BTreeMap<usize, f64>,
}

impl ActiveNetwork {
    /// Sets the simulated network to the worst of what is in force (the defaults if nothing).
    fn apply(&self) -> String {
        let delay_ms = self.latency.values().map(|(d, _)| *d).max().unwrap_or(0);
        let jitter_ms = self.latency.values().map(|(_, j)| *j).max().unwrap_or(0);
        let rate = self.loss.values().copied().fold(0.0, f64::max);
        let low = LATENCY_DEFAULT.start + Duration::from_millis(delay_ms);
        let high = LATENCY_DEFAULT.end + Duration::from_millis(delay_ms + jitter_ms);
        NetSim::current().update_config(|c| {
            c.send_latency = low..high;
            c.packet_loss_rate = rate;
        });
        format!("network now: latency {low:?}..{high:?}, loss {rate} (on every link)")
    }
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
            let action = match &fault.kind {
                FaultKind::Latency {
                    delay_ms,
                    jitter_ms,
                    ..
                } => {
                    let mut network = self.network.borrow_mut();
                    if start {
                        network.latency.insert(index, (*delay_ms, *jitter_ms));
                    } else {
                        network.latency.remove(&index);
                    }
                    let verb = if start {
                        "latency fault"
                    } else {
                        "latency fault healed"
                    };
                    format!("{verb} {index}; {}", network.apply())
                }
                FaultKind::Loss { rate, .. } => {
                    let mut network = self.network.borrow_mut();
                    if start {
                        network.loss.insert(index, *rate);
                    } else {
                        network.loss.remove(&index);
                    }
                    let verb = if start {
                        "loss fault"
                    } else {
                        "loss fault healed"
                    };
                    format!(
                        "{verb} {index} (TCP stalls and retransmits); {}",
                        network.apply()
                    )
                }
                _ if start => self.begin(schedule, fault),
                _ => self.heal(fault),
            };
            self.recorder.fault(action);
        }
    }

    /// After the schedule: restarts every node that stopped itself (a ring node whose disk
    /// failed), as an operator would, and puts the network back to its defaults.
    pub fn heal_all(&self) {
        for (node, stopped) in self.stopped {
            if stopped.swap(false, Ordering::Relaxed) {
                self.handle.restart(node.as_str());
                self.recorder
                    .fault(format!("restart {node} (it had stopped)"));
            }
        }
        let mut network = self.network.borrow_mut();
        *network = ActiveNetwork::default();
        network.apply();
    }

    fn node_id(&self, name: &str) -> Option<madsim::task::NodeId> {
        self.handle.get_node(name).map(|node| node.id())
    }

    /// Starts `fault`; what was done, for the trace.
    fn begin(&self, schedule: &Schedule, fault: &Fault) -> String {
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
            FaultKind::Latency { .. } | FaultKind::Loss { .. } => String::new(),
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
            FaultKind::Disk { node, disk, .. } => self.disk_fault(node, disk, true),
        }
    }

    /// Ends `fault`; what was done, for the trace.
    fn heal(&self, fault: &Fault) -> String {
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
            FaultKind::Latency { .. } | FaultKind::Loss { .. } => String::new(),
            FaultKind::Clock { node, .. } => match self.clocks.get(node) {
                Some(clock) => {
                    clock.set_drift_ppm(0);
                    clock.step_us(-clock.offset_us());
                    format!("clock {node} back to true time")
                }
                None => format!("not applied: {node} has no clock the harness owns"),
            },
            FaultKind::Disk { node, disk, .. } => self.disk_fault(node, disk, false),
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

    fn disk_fault(&self, node: &str, fault: &DiskFault, begin: bool) -> String {
        let Some(disk) = self.disks.get(node) else {
            return format!("not applied: {node} has no simulated disk");
        };
        match (fault, begin) {
            (DiskFault::FailSync, true) => {
                disk.fail_syncs(u64::MAX);
                format!("disk {node}: every sync fails")
            }
            (DiskFault::FailSync, false) => {
                disk.fail_syncs(0);
                format!("disk {node}: syncs succeed again")
            }
            (DiskFault::SlowSync { .. }, _) => {
                format!("not applied: slow syncs on {node} need an asynchronous disk")
            }
            (DiskFault::LoseUnsynced | DiskFault::TornWrite { .. }, true) => {
                format!("disk {node}: a crash now loses unsynced writes ({fault:?})")
            }
            (DiskFault::LoseUnsynced | DiskFault::TornWrite { .. }, false) => {
                format!("disk {node}: {fault:?} window over")
            }
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
