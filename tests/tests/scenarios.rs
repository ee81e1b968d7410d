//! Scripted scenarios in the simulator, checked from the clients' histories.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};

use chat_faults::{Fault, FaultKind, Schedule};
use chat_reports::checks;
use chat_reports::history::{History, OpKind, Outcome};
use chat_reports::report::{self, Report};
use chat_sim::runner;
use chat_sim::scenario::Scenario;
use chat_system::ring::engine::{EngineConfig, SyncMode};

const RESTART_NS: u64 = 40_000_000_000;

fn acked(history: &History) -> BTreeMap<u64, u64> {
    let mut acked = BTreeMap::new();
    for op in &history.ops {
        if let (OpKind::Send { channel_id, .. }, Outcome::Sent { message_id }) =
            (&op.kind, &op.outcome)
        {
            acked.insert(*message_id, *channel_id);
        }
    }
    acked
}

#[test]
fn smoke_keeps_every_acknowledged_message_through_a_ring_node_crash() {
    for seed in [1, 2, 3] {
        let output = runner::run(seed, &Scenario::smoke());
        let history = &output.history;

        // The crash and the restart both happened, at their scripted times.
        let actions: Vec<(u64, &str)> = history
            .faults
            .iter()
            .map(|f| (f.at_ns / 1_000_000_000, f.action.as_str()))
            .collect();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert_eq!(actions[0].0, 20);
        assert!(actions[0].1.starts_with("crash ring-1"), "{actions:?}");
        assert_eq!(actions[1], (40, "restart ring-1"));

        // Writes went on while ring-1 was down.
        let acked = acked(history);
        let during_crash = history.ops.iter().filter(|op| {
            matches!(op.outcome, Outcome::Sent { .. })
                && (20_000_000_000..40_000_000_000).contains(&op.invoked_ns)
        });
        assert!(
            during_crash.count() > 50,
            "seed {seed}: too few sends acked during the crash"
        );

        // Every acknowledged message is in the history read after the restart, in its channel.
        let mut read_after: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for op in history.ops.iter().filter(|op| op.invoked_ns > RESTART_NS) {
            if let (OpKind::Read { channel_id, .. }, Outcome::Read { message_ids }) =
                (&op.kind, &op.outcome)
            {
                read_after
                    .entry(*channel_id)
                    .or_default()
                    .extend(message_ids);
            }
        }
        for (message_id, channel_id) in &acked {
            let found = read_after
                .get(channel_id)
                .is_some_and(|ids| ids.contains(message_id));
            assert!(
                found,
                "seed {seed}: acked message {message_id} missing after the restart"
            );
        }
        assert_eq!(checks::durability(history).violations, 0, "seed {seed}");
    }
}

#[test]
fn smoke_delivers_every_message_in_order_with_s_rising_by_one() {
    let output = runner::run(11, &Scenario::smoke());
    let history = &output.history;
    let acked = acked(history);
    assert!(history.sessions.len() >= 20, "every user opened a session");

    // Per session: the ids received per channel, and the s sequence.
    let mut received: BTreeMap<usize, BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    let mut s_seen: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for delivery in &history.deliveries {
        s_seen.entry(delivery.session).or_default().push(delivery.s);
        if let (Some(channel), Some(id)) = (delivery.channel_id, delivery.message_id) {
            received
                .entry(delivery.session)
                .or_default()
                .entry(channel)
                .or_default()
                .push(id);
        }
    }

    for (index, session) in history.sessions.iter().enumerate() {
        // s is exactly 1, 2, 3, ...
        let s = &s_seen[&index];
        assert!(
            s.iter().copied().eq(1..=s.len() as u64),
            "session {index}: s = {s:?}"
        );

        // Every message of its channels, acked after it was ready, in increasing id order.
        let ready_ns = session.ready_ns.expect("every session got READY");
        assert!(session.closed_ns.is_none(), "session {index} stayed open");
        for &channel in &session.channel_ids {
            let got = received
                .get(&index)
                .and_then(|c| c.get(&channel))
                .cloned()
                .unwrap_or_default();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "session {index} channel {channel}"
            );
            let expected: Vec<u64> = history
                .ops
                .iter()
                .filter(|op| op.invoked_ns >= ready_ns && op.kind.channel_id() == channel)
                .filter_map(|op| match op.outcome {
                    Outcome::Sent { message_id } => Some(message_id),
                    _ => None,
                })
                .collect();
            let got_set: BTreeSet<u64> = got.iter().copied().collect();
            for id in &expected {
                assert!(got_set.contains(id), "session {index} never got {id}");
                assert!(acked.contains_key(id));
            }
        }
    }
    assert_eq!(checks::ordering(history).violations, 0);
    assert_eq!(checks::sequence(history).violations, 0);
    assert_eq!(
        checks::delivery(history, &checks::CheckConfig::default()).violations,
        0
    );
}

#[test]
fn a_seed_replays_to_the_same_trace_within_one_process() {
    // Two runs on this one test thread: the runner must isolate them.
    let first = runner::run(9, &Scenario::smoke());
    let second = runner::run(9, &Scenario::smoke());
    assert_eq!(
        report::trace_hash(&first.trace),
        report::trace_hash(&second.trace)
    );
    assert_eq!(first.history, second.history);
}

#[test]
fn two_crashed_replicas_fail_quorum_writes_and_the_objective_check_says_so() {
    // ring-1 and ring-2 down together from 20 s to 30 s: no write can reach QUORUM.
    let crash = |node: &str| Fault {
        at_ms: 20_000,
        kind: FaultKind::Crash {
            node: node.into(),
            restart_after_ms: Some(10_000),
        },
    };
    let mut scenario = Scenario::smoke();
    scenario.schedule = Schedule::new(vec![crash("ring-1"), crash("ring-2")]);
    let output = runner::run(4, &scenario);

    let failed_during = output.history.ops.iter().filter(|op| {
        matches!(op.kind, OpKind::Send { .. })
            && matches!(op.outcome, Outcome::Failed { .. })
            && (20_000_000_000..30_000_000_000).contains(&op.invoked_ns)
    });
    assert!(
        failed_during.count() > 10,
        "sends during the double crash must fail"
    );

    let report = output.report(4, &scenario, String::new());
    assert!(report.checks["availability"].violations > 0);
    assert_eq!(
        report.exit_code,
        report::EXIT_OBJECTIVE,
        "{}",
        report.summary()
    );
    assert_eq!(report.verdict, "fail");
    // Failing writes is not a safety problem: nothing acknowledged was lost or reordered.
    for check in [
        "invariants",
        "durability",
        "ordering",
        "sequence",
        "delivery",
    ] {
        assert_eq!(
            report.checks[check].violations,
            0,
            "{check}: {}",
            report.summary()
        );
    }
}

/// smoke with every ring node crashed at 25 s and restarted at 30 s, on `sync`.
fn crash_every_ring_node(seed: u64, sync: SyncMode) -> Report {
    let crash = |node: &str| Fault {
        at_ms: 25_000,
        kind: FaultKind::Crash {
            node: node.into(),
            restart_after_ms: Some(5_000),
        },
    };
    let mut scenario = Scenario::smoke();
    scenario.schedule = Schedule::new(vec![crash("ring-1"), crash("ring-2"), crash("ring-3")]);
    scenario.ring_engine = EngineConfig {
        sync,
        ..EngineConfig::default()
    };
    let output = runner::run(seed, &scenario);
    output.report(seed, &scenario, String::new())
}

#[test]
fn every_ring_node_crashing_in_periodic_mode_loses_acknowledged_messages_and_durability_says_so() {
    let report = crash_every_ring_node(12, SyncMode::Periodic { period_ms: 10_000 });
    let durability = &report.checks["durability"];
    assert!(durability.violations > 0, "{}", report.summary());
    assert!(
        durability.examples[0].contains("missing from read op"),
        "{:?}",
        durability.examples
    );
    // The witness: the acknowledged send, then the later read that lost it.
    let witness = &durability.witnesses[0].witness;
    assert_eq!(witness.len(), 2);
    let ops: Vec<&chat_reports::history::Op> = witness
        .iter()
        .filter_map(|e| match e {
            checks::Evidence::Op { op, .. } => Some(op),
            _ => None,
        })
        .collect();
    assert!(matches!(ops[0].outcome, Outcome::Sent { .. }), "{ops:?}");
    assert!(matches!(ops[1].outcome, Outcome::Read { .. }), "{ops:?}");
    assert!(ops[0].completed_ns < ops[1].invoked_ns);
    assert_eq!(report.exit_code, report::EXIT_SAFETY);
}

#[test]
fn every_ring_node_crashing_in_batch_mode_loses_nothing_acknowledged() {
    let report = crash_every_ring_node(12, SyncMode::Batch);
    assert_eq!(
        report.checks["durability"].violations,
        0,
        "{}",
        report.summary()
    );
}

#[test]
fn a_swarm_seed_gives_the_same_profile_schedule_and_trace_hash() {
    let resolve = |seed| {
        Scenario::by_name("swarm")
            .expect("swarm exists")
            .resolve(seed)
    };
    let (first, second) = (resolve(5), resolve(5));
    assert_eq!(first.profile, second.profile);
    assert_eq!(first.schedule, second.schedule);
    assert!(!first.schedule.faults.is_empty());

    let (a, b) = (runner::run(5, &first), runner::run(5, &second));
    assert_eq!(report::trace_hash(&a.trace), report::trace_hash(&b.trace));
    assert_eq!(
        a.history.faults, b.history.faults,
        "the same faults were applied"
    );
    assert!(a.history.faults.len() >= first.schedule.faults.len());
}

#[test]
fn a_pause_longer_than_the_heartbeat_timeout_closes_sessions_which_come_back() {
    // The client host freezes for 10 s; the gateway's deadline is 1.5 × 5 s.
    let mut scenario = Scenario::smoke();
    let pause = FaultKind::Pause {
        node: "client".into(),
        duration_ms: 10_000,
    };
    scenario.schedule = Schedule::new(vec![Fault {
        at_ms: 20_000,
        kind: pause,
    }]);
    let output = runner::run(31, &scenario);
    let history = &output.history;

    // Sessions were closed by the pause: the gateway gives up on them after 7.5 s without
    // heartbeats (4009), and the frozen clients find them gone when they resume. (The close
    // frame may not reach a client whose connection is already torn down, so the check is on
    // when they ended, not on the code.)
    let (paused_ns, resumed_ns) = (20_000_000_000, 31_000_000_000);
    let timed_out: Vec<_> = history
        .sessions
        .iter()
        .filter(|s| {
            s.closed_ns
                .is_some_and(|t| (paused_ns..resumed_ns).contains(&t))
        })
        .collect();
    assert!(
        timed_out.len() >= 10,
        "{} sessions ended by the pause",
        timed_out.len()
    );

    // Each of those clients came back: it resumed its session (the gateway keeps it for a
    // resume) or identified again, and most resumed.
    let mut resumed = 0;
    for closed in &timed_out {
        let later: Vec<_> = history
            .sessions
            .iter()
            .filter(|s| s.client == closed.client && s.opened_ns > closed.opened_ns)
            .collect();
        let back = later
            .iter()
            .any(|s| s.ready_ns.is_some() || s.resumed_ns.is_some());
        assert!(back, "client {} came back", closed.client);
        resumed += usize::from(later.iter().any(|s| s.resumed_ns.is_some()));
    }
    assert!(
        resumed * 2 >= timed_out.len(),
        "{resumed} of {} clients resumed",
        timed_out.len()
    );
    assert_eq!(
        checks::sessions(history, &checks::CheckConfig::default()).violations,
        0
    );
    assert_eq!(checks::sequence(history).violations, 0);
}

#[test]
fn a_ring_node_stopped_by_its_disk_then_crashed_and_restarted_comes_back_once() {
    // ring-2's syncs fail, so it stops itself; later a crash and restart bring it back, and
    // the harness must not restart that new incarnation again (it would bind twice).
    let mut scenario = Scenario::smoke();
    let fail = FaultKind::Disk {
        node: "ring-2".into(),
        disk: chat_faults::DiskFault::FailSync,
        duration_ms: 1_555,
    };
    let crash = FaultKind::Crash {
        node: "ring-2".into(),
        restart_after_ms: Some(3_049),
    };
    scenario.schedule = Schedule::new(vec![
        Fault {
            at_ms: 6_670,
            kind: fail,
        },
        Fault {
            at_ms: 30_608,
            kind: crash,
        },
    ]);
    let output = runner::run(1, &scenario);
    let restarts = output
        .history
        .faults
        .iter()
        .filter(|f| f.action.starts_with("restart ring-2"));
    assert_eq!(restarts.count(), 1, "{:?}", output.history.faults);
    assert_eq!(
        output.convergence.violations, 0,
        "{:?}",
        output.convergence.examples
    );
    assert_eq!(checks::durability(&output.history).violations, 0);
}

#[test]
fn a_frozen_gateway_drops_sessions_and_they_resume_with_every_missed_dispatch() {
    // The gateway freezes for 12 s: clients see no heartbeat ACK, drop their connections as
    // zombied and reconnect asking to resume. The gateway keeps sessions for minutes, so each
    // resume replays what the session missed and ends with RESUMED.
    let mut scenario = Scenario::smoke();
    scenario.schedule = Schedule::new(vec![Fault {
        at_ms: 20_000,
        kind: FaultKind::Pause {
            node: "gateway".into(),
            duration_ms: 12_000,
        },
    }]);
    let output = runner::run(17, &scenario);
    let history = &output.history;

    // Resume attempts: each names the connection it resumes, of the same client, which was
    // READY; the attempts made after the gateway thawed got RESUMED.
    let attempts: Vec<_> = history
        .sessions
        .iter()
        .filter(|s| s.resumes.is_some())
        .collect();
    assert!(attempts.len() >= 5, "{} resume attempts", attempts.len());
    for attempt in &attempts {
        let resumed = &history.sessions[attempt.resumes.unwrap_or(usize::MAX)];
        assert_eq!(resumed.client, attempt.client);
        assert!(
            resumed.ready_ns.is_some() || resumed.resumed_ns.is_some(),
            "only a live session is resumed"
        );
    }
    let succeeded = attempts.iter().filter(|a| a.resumed_ns.is_some()).count();
    assert!(
        succeeded >= 5,
        "{succeeded} of {} resumes got RESUMED",
        attempts.len()
    );

    // Every resumed session kept its numbering and its order, and missed nothing.
    let config = checks::CheckConfig::default();
    assert_eq!(checks::sessions(history, &config).violations, 0);
    assert_eq!(checks::sequence(history).violations, 0);
    assert_eq!(checks::ordering(history).violations, 0);
    assert_eq!(checks::duplicates(history).violations, 0);
}
