//! Sends retried with their nonce: `smoke`'s users with two retries and a 2 s request
//! timeout, while every guild node is paused for 6 s. Sends in the pause time out (or fail
//! with a 5xx) and are retried with the same nonce and `enforce_nonce`; each nonce makes at
//! most one message, every acknowledgement of one nonce carries one id, and the checkers
//! take the attempts as one send (no duplicate, no causality violation, nothing lost).
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};

use chat_faults::{Fault, FaultKind, Schedule};
use chat_reports::history::{OpKind, Outcome};
use chat_sim::scenario::Scenario;

#[test]
fn sends_timed_out_in_a_pause_are_retried_with_their_nonce_and_make_one_message_each() {
    let mut scenario = Scenario::load("smoke").expect("smoke").resolve(11);
    scenario.workload.send_retries = 2;
    scenario.request_timeout_ms = 2_000;
    let pause = |node: &str| Fault {
        at_ms: 20_000,
        kind: FaultKind::Pause {
            node: node.to_string(),
            duration_ms: 6_000,
        },
    };
    scenario.schedule = Schedule::new(vec![pause("guild-1"), pause("guild-2"), pause("guild-3")]);
    let output = chat_sim::runner::run(11, &scenario);
    let history = &output.history;

    // 1. The attempts of each send: its nonce, in order.
    let mut attempts: BTreeMap<(u64, String), Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        if let OpKind::Send { nonce, .. } = &op.kind {
            attempts
                .entry((op.client, nonce.clone()))
                .or_default()
                .push(index);
        }
    }
    let retried: Vec<&Vec<usize>> = attempts.values().filter(|a| a.len() > 1).collect();
    assert!(retried.len() >= 5, "{} sends retried", retried.len());

    // 2. At most three attempts; retries carry the first's invocation; one id per nonce.
    let mut acked_after_retry = 0;
    for indices in attempts.values() {
        assert!(indices.len() <= 3, "{indices:?}");
        let first = &history.ops[indices[0]];
        assert_eq!(first.first_invoked_ns, None);
        for &later in &indices[1..] {
            assert_eq!(history.ops[later].first_invoked_ns, Some(first.invoked_ns));
        }
        let ids: BTreeSet<u64> = indices
            .iter()
            .filter_map(|&i| match history.ops[i].outcome {
                Outcome::Sent { message_id } => Some(message_id),
                _ => None,
            })
            .collect();
        assert!(ids.len() <= 1, "one nonce acknowledged as {ids:?}");
        if indices.len() > 1 && !ids.is_empty() {
            acked_after_retry += 1;
        }
    }
    assert!(
        acked_after_retry >= 5,
        "{acked_after_retry} retried sends acknowledged"
    );

    // 3. The final full reads hold at most one message per nonce, and every acknowledged one.
    let stored: BTreeSet<u64> = history
        .ops
        .iter()
        .filter(|op| op.verification)
        .flat_map(|op| match &op.outcome {
            Outcome::Read { message_ids } => message_ids.clone(),
            _ => Vec::new(),
        })
        .collect();
    let acked: BTreeSet<u64> = history
        .ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Sent { message_id } => Some(message_id),
            _ => None,
        })
        .collect();
    assert!(acked.is_subset(&stored));
    assert!(
        stored.len() <= attempts.len(),
        "{} messages from {} nonces",
        stored.len(),
        attempts.len()
    );

    // 4. The checkers agree.
    let report = output.report(11, &scenario, "replay".into());
    for check in [
        "duplicates",
        "causality",
        "durability",
        "ordering",
        "sequence",
    ] {
        assert_eq!(
            report.checks[check].violations, 0,
            "{check}: {:?}",
            report.checks[check]
        );
    }
}

/// Known wrong: `small` seed 0 with two retries per send. A send's first attempt is held by
/// a guild node cut off by a partition; its retries reach the node that took the guild over,
/// which makes the message; the held attempt then makes a second one with the same nonce
/// (a safety violation). A retry answered with the message its timed-out first write stored
/// now starts a new epoch, which invalidates the guild's sessions; that took the delivery
/// violations from 1,372 to 11, two messages that some sessions still never get.
#[test]
#[ignore = "TODO(guild-fencing), TODO(nonce-order): retries across a guild takeover duplicate \
            or go undelivered"]
fn retries_through_a_guild_takeover_make_one_delivered_message_per_nonce() {
    let mut scenario = Scenario::load("small").expect("small").resolve(0);
    scenario.workload.send_retries = 2;
    let output = chat_sim::runner::run(0, &scenario);
    let report = output.report(0, &scenario, "replay".into());
    for check in ["duplicates", "delivery"] {
        assert_eq!(
            report.checks[check].violations, 0,
            "{check}: {:?}",
            report.checks[check]
        );
    }
}
