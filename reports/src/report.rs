//! The run report: a versioned JSON document for scripts and CI, and a text summary for people.
//!
//! Schema (version 2), top level: `schema_version`, `seed`, `scenario`, `trace_hash` (16 hex
//! digits), `sim_seconds`, `wall_seconds`, `time_compression`, `events`, `events_per_second`,
//! `verdict` (`"pass"` / `"fail"`), `exit_code`, `replay_command`, `checks` (one object per
//! checker with an integer `violations` and `examples`), `operations` (message sends:
//! `sent`, `acked`, `failed`, `timed_out`), `reads` (the same for history reads),
//! `deliveries`, `availability` (share of operations answered successfully within their
//! kind's deadline) with `availability_objective`, `latency_ms` (`p50`, `p99`, `max`
//! send-to-deliver, or null with no deliveries), `schedule` (the fault schedule), `profile`
//! (the swarm profile it was drawn from, or null) and `faults` (faults as applied).
//!
//! Version 2 added, keeping every version 1 field: per check `witnesses` (each violation with
//! the history items that make it one), the checks `duplicates` and `causality`,
//! `availability_within_100ms`, `availability_windows` (per one-minute window: `start_s`,
//! `ops`, `ok`, `fast`, `availability`) and `check_config` (objective, deadline per operation
//! kind, window, liveness bounds). `availability` now also counts an answer later than its
//! deadline as a failure.
//!
//! Version 3 added, keeping every version 2 field: `node_load`, per node name (`ring-1`,
//! `api-2`, `gateway`, ...), the requests that node served: `total`, `by_kind` (what it
//! counts as a request, see the simulator's node load) and `per_second` (requests served in
//! each second of simulated time, index 0 the first); `edits` and `reactions`, counted as
//! `operations` and `reads` are (a trace replay makes them). `operations` counts every
//! attempt of a retried send. A report of an older version reads with none of these.

use std::collections::BTreeMap;

use chat_faults::{Profile, Schedule};
use serde::{Deserialize, Serialize};

use crate::checks::{
    availability_stats, check_all, CheckClass, CheckConfig, CheckResult, Window, CHECKS,
};
use crate::history::{AppliedFault, History, Outcome};

/// The report schema's version; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 3;

/// Exit status of a run that passed.
pub const EXIT_PASS: i32 = 0;
/// Exit status for bad arguments or input.
pub const EXIT_USAGE: i32 = 2;
/// Exit status when a safety check found a violation.
pub const EXIT_SAFETY: i32 = 3;
/// Exit status when a liveness check found a violation (and no safety check did).
pub const EXIT_LIVENESS: i32 = 4;
/// Exit status when only the availability objective was missed.
pub const EXIT_OBJECTIVE: i32 = 5;
/// Exit status when the simulation itself crashed (a panic in a node or the harness).
pub const EXIT_CRASH: i32 = 6;

/// Counts of one kind of operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Invoked.
    pub sent: u64,
    /// Succeeded.
    pub acked: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Not answered in time.
    pub timed_out: u64,
}

/// Send-to-deliver latency percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Worst.
    pub max: f64,
}

/// What one node served, as its own counter saw it (not as clients saw it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Every request it served.
    pub total: u64,
    /// Requests by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Requests served in each second of simulated time; index 0 is the run's first.
    pub per_second: Vec<u64>,
}

/// What the harness knows about a run beyond its history.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: String,
    /// The trace hash, 16 hex digits.
    pub trace_hash: String,
    /// Trace events hashed.
    pub events: u64,
    /// Simulated duration.
    pub sim_seconds: f64,
    /// Wall-clock duration.
    pub wall_seconds: f64,
    /// The fault schedule.
    pub schedule: Schedule,
    /// The swarm profile the schedule was drawn from, if it was drawn.
    pub profile: Option<Profile>,
    /// What the checks hold the run to.
    pub check_config: CheckConfig,
    /// The command that replays this run.
    pub replay_command: String,
    /// Checks the harness made itself rather than from the history: `invariants` (error-level
    /// events the cluster logged) and `convergence` (replicas' Merkle roots after repair).
    pub harness_checks: BTreeMap<String, CheckResult>,
    /// What each node served, by node name.
    pub node_load: BTreeMap<String, NodeLoad>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// See [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: String,
    /// The trace hash.
    pub trace_hash: String,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Simulated seconds per wall second.
    pub time_compression: f64,
    /// Trace events.
    pub events: u64,
    /// Trace events per wall second.
    pub events_per_second: f64,
    /// `"pass"` or `"fail"`.
    pub verdict: String,
    /// The process's exit status.
    pub exit_code: i32,
    /// How to replay.
    pub replay_command: String,
    /// One entry per checker.
    pub checks: BTreeMap<String, CheckResult>,
    /// Message sends.
    pub operations: OpCounts,
    /// History reads.
    pub reads: OpCounts,
    /// MESSAGE_CREATE dispatches received.
    pub deliveries: u64,
    /// Share of all operations that succeeded.
    pub availability: f64,
    /// The objective it was held to.
    pub availability_objective: f64,
    /// Share of all operations answered successfully within 100 ms.
    pub availability_within_100ms: f64,
    /// Availability per window.
    pub availability_windows: Vec<Window>,
    /// What the checks held the run to.
    pub check_config: CheckConfig,
    /// Send-to-deliver latency.
    pub latency_ms: Option<LatencyMs>,
    /// The schedule.
    pub schedule: Schedule,
    /// The swarm profile, if the schedule was drawn from one.
    pub profile: Option<Profile>,
    /// Faults as applied.
    pub faults: Vec<AppliedFault>,
    /// What each node served, by node name (schema 3; empty in older reports).
    #[serde(default)]
    pub node_load: BTreeMap<String, NodeLoad>,
    /// Message edits (schema 3).
    #[serde(default)]
    pub edits: OpCounts,
    /// Reactions added (schema 3).
    #[serde(default)]
    pub reactions: OpCounts,
}

/// The counts of the operations of one kind (see [`OpKind::name`]).
fn count(history: &History, kind: &str) -> OpCounts {
    let mut counts = OpCounts::default();
    let ops = history.ops.iter().filter(|op| op.kind.name() == kind);
    for op in ops {
        counts.sent += 1;
        match op.outcome {
            Outcome::Sent { .. } | Outcome::Read { .. } | Outcome::Done => counts.acked += 1,
            Outcome::Failed { .. } => counts.failed += 1,
            Outcome::TimedOut => counts.timed_out += 1,
        }
    }
    counts
}

fn latency(history: &History) -> Option<LatencyMs> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    for op in &history.ops {
        if let Outcome::Sent { message_id } = op.outcome {
            invoked.insert(message_id, op.invoked_ns);
        }
    }
    // Bounded, so saturating_record clamps at an hour instead of at the initial size.
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for delivery in &history.deliveries {
        let Some(sent_ns) = delivery.message_id.and_then(|id| invoked.get(&id)) else {
            continue;
        };
        let micros = delivery.at_ns.saturating_sub(*sent_ns) / 1_000;
        histogram.saturating_record(micros.max(1));
    }
    if histogram.is_empty() {
        return None;
    }
    let ms = |micros: u64| micros as f64 / 1_000.0;
    Some(LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    })
}

/// The exit status for these check results: the most serious class with a violation wins.
pub fn exit_code(checks: &BTreeMap<String, CheckResult>) -> i32 {
    let failing = |class: CheckClass| {
        CHECKS
            .iter()
            .any(|(name, c)| *c == class && checks.get(*name).is_some_and(|r| r.violations > 0))
    };
    if failing(CheckClass::Safety) {
        EXIT_SAFETY
    } else if failing(CheckClass::Liveness) {
        EXIT_LIVENESS
    } else if failing(CheckClass::Objective) {
        EXIT_OBJECTIVE
    } else {
        EXIT_PASS
    }
}

impl Report {
    /// Checks `history` and builds the report.
    pub fn build(info: RunInfo, history: &History) -> Self {
        let mut checks = check_all(history, &info.check_config);
        checks.extend(info.harness_checks.clone());
        let exit_code = exit_code(&checks);
        let operations = count(history, "send");
        let reads = count(history, "read");
        let stats = availability_stats(history, &info.check_config);
        let deliveries = history
            .deliveries
            .iter()
            .filter(|d| d.event == "MESSAGE_CREATE")
            .count() as u64;
        let wall = info.wall_seconds.max(1e-9);
        Self {
            schema_version: SCHEMA_VERSION,
            seed: info.seed,
            scenario: info.scenario,
            trace_hash: info.trace_hash,
            sim_seconds: info.sim_seconds,
            wall_seconds: info.wall_seconds,
            time_compression: info.sim_seconds / wall,
            events: info.events,
            events_per_second: info.events as f64 / wall,
            verdict: if exit_code == EXIT_PASS {
                "pass"
            } else {
                "fail"
            }
            .to_string(),
            exit_code,
            replay_command: info.replay_command,
            checks,
            operations,
            reads,
            deliveries,
            availability: stats.availability,
            availability_objective: info.check_config.availability_objective,
            availability_within_100ms: stats.within_100ms,
            availability_windows: stats.windows,
            check_config: info.check_config,
            latency_ms: latency(history),
            schedule: info.schedule,
            profile: info.profile,
            faults: history.faults.clone(),
            node_load: info.node_load,
            edits: count(history, "edit"),
            reactions: count(history, "react"),
        }
    }

    /// The summary a person reads at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!(
            "scenario {}  seed {}  trace {}",
            self.scenario, self.seed, self.trace_hash
        ));
        line(format!(
            "simulated {:.1} s in {:.2} s wall ({:.0}x), {} events ({:.0}/s)",
            self.sim_seconds,
            self.wall_seconds,
            self.time_compression,
            self.events,
            self.events_per_second
        ));
        for fault in &self.faults {
            line(format!(
                "fault   {:>9.3} s  {}",
                fault.at_ns as f64 / 1e9,
                fault.action
            ));
        }
        let ops = &self.operations;
        line(format!(
            "sends   {} sent, {} acked, {} failed, {} timed out",
            ops.sent, ops.acked, ops.failed, ops.timed_out
        ));
        let reads = &self.reads;
        line(format!(
            "reads   {} sent, {} ok, {} failed, {} timed out",
            reads.sent, reads.acked, reads.failed, reads.timed_out
        ));
        for (name, counts) in [("edits", &self.edits), ("reacts", &self.reactions)] {
            if counts.sent > 0 {
                line(format!(
                    "{name:<7} {} sent, {} ok, {} failed, {} timed out",
                    counts.sent, counts.acked, counts.failed, counts.timed_out
                ));
            }
        }
        let latency = match &self.latency_ms {
            Some(l) => format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p99, l.max
            ),
            None => "no deliveries".to_string(),
        };
        line(format!(
            "deliver {} MESSAGE_CREATE received; send-to-deliver {latency}",
            self.deliveries
        ));
        line(format!(
            "avail   {:.4}% in time (objective {:.2}%), {:.2}% within 100 ms",
            self.availability * 100.0,
            self.availability_objective * 100.0,
            self.availability_within_100ms * 100.0
        ));
        for (name, result) in &self.checks {
            let mark = if result.violations == 0 {
                "ok  "
            } else {
                "FAIL"
            };
            line(format!(
                "check   {mark} {name:<12} {} violations",
                result.violations
            ));
            for example in &result.examples {
                line(format!("          - {example}"));
            }
        }
        line(format!(
            "verdict {} (exit {})",
            self.verdict, self.exit_code
        ));
        if self.verdict != "pass" {
            line(format!("replay  {}", self.replay_command));
        }
        out
    }
}

/// A 16-hex-digit hash of a trace's bytes (xxh3, stable across platforms and versions).
pub fn trace_hash(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Delivery, Op, OpKind};

    fn info() -> RunInfo {
        RunInfo {
            seed: 7,
            scenario: "smoke".into(),
            trace_hash: trace_hash(b"x"),
            events: 10,
            sim_seconds: 60.0,
            wall_seconds: 2.0,
            schedule: Schedule::default(),
            profile: None,
            check_config: CheckConfig::default(),
            replay_command: "cargo chatsim run --seed 7".into(),
            harness_checks: BTreeMap::new(),
            node_load: BTreeMap::new(),
        }
    }

    #[test]
    fn report_counts_checks_and_latency() {
        let history = History {
            ops: vec![
                Op {
                    client: 1,
                    kind: OpKind::Send {
                        channel_id: 5,
                        nonce: "a".into(),
                        reply_to: None,
                    },
                    invoked_ns: 1_000_000,
                    completed_ns: 2_000_000,
                    outcome: Outcome::Sent { message_id: 42 },
                    verification: false,
                    first_invoked_ns: None,
                },
                Op {
                    client: 1,
                    kind: OpKind::Read {
                        channel_id: 5,
                        before: None,
                        limit: 50,
                    },
                    invoked_ns: 3_000_000,
                    completed_ns: 4_000_000,
                    outcome: Outcome::Read {
                        message_ids: vec![42],
                    },
                    verification: false,
                    first_invoked_ns: None,
                },
            ],
            deliveries: vec![Delivery {
                session: 0,
                s: 1,
                event: "MESSAGE_CREATE".into(),
                channel_id: Some(5),
                message_id: Some(42),
                at_ns: 11_000_000,
                author_id: None,
                nonce: None,
            }],
            ..History::default()
        };
        let report = Report::build(info(), &history);
        assert_eq!(report.verdict, "pass");
        assert_eq!(
            report.operations,
            OpCounts {
                sent: 1,
                acked: 1,
                failed: 0,
                timed_out: 0
            }
        );
        assert_eq!(report.reads.acked, 1);
        assert_eq!(report.deliveries, 1);
        let latency = report.latency_ms.clone().unwrap();
        assert!((latency.p50 - 10.0).abs() < 0.02, "{latency:?}");
        assert_eq!(report.time_compression, 30.0);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema_version"], 3);
        assert_eq!(json["availability_windows"][0]["ops"], 2);
        assert_eq!(json["checks"]["durability"]["violations"], 0);
        assert_eq!(json["trace_hash"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn a_logged_invariant_error_fails_the_run_as_a_safety_violation() {
        let mut info = info();
        let mut error = CheckResult::default();
        error.add_example("chat_system::guild: fanout_queue_closed".into());
        info.harness_checks.insert("invariants".into(), error);
        let report = Report::build(info, &History::default());
        assert_eq!(report.checks["invariants"].violations, 1);
        assert_eq!(report.exit_code, EXIT_SAFETY);
        assert!(report.summary().contains("fanout_queue_closed"));
    }

    #[test]
    fn the_most_serious_failing_class_decides_the_exit_code() {
        let mut checks = BTreeMap::new();
        let mut bad = CheckResult::default();
        bad.add_example("x".into());
        checks.insert("availability".to_string(), bad.clone());
        assert_eq!(exit_code(&checks), EXIT_OBJECTIVE);
        checks.insert("delivery".to_string(), bad.clone());
        assert_eq!(exit_code(&checks), EXIT_LIVENESS);
        checks.insert("ordering".to_string(), bad);
        assert_eq!(exit_code(&checks), EXIT_SAFETY);
    }

    #[test]
    fn trace_hash_is_xxh3_in_16_hex_digits() {
        // xxh3-64 of the empty input is a published constant.
        assert_eq!(trace_hash(b""), "2d06800538d394c2");
    }
}
