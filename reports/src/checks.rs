//! The checkers: each reads a [`History`] and counts violations of one property.
//!
//! - **durability**: a message is *known* from the moment its send was acknowledged or a read
//!   returned it. Every successful read of its channel invoked after that moment must return
//!   it, if the page reaches back that far (the page is not full, or holds an older id).
//! - **ordering**: per session and channel, MESSAGE_CREATE ids strictly increase (which also
//!   rules out a message delivered twice).
//! - **sequence**: per session, `s` is 1, 2, 3, … in arrival order.
//! - **delivery**: every session that was READY before a send was invoked, and stayed open to
//!   the end of the run, received that message if it was acknowledged and in its channels.
//! - **sessions**: every client that opened a gateway session ends the run with one open and
//!   READY (sessions dropped by faults came back).
//! - **availability**: operations that failed or timed out, beyond what the objective allows.
//!
//! Not checked yet: causality, convergence of replicas, nonce dedup, resume gap filling.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{History, OpKind, Outcome};

/// At most this many violations are described per check.
const EXAMPLES_MAX: usize = 10;

/// One checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// How many violations were found.
    pub violations: u64,
    /// What the first few were.
    pub examples: Vec<String>,
}

impl CheckResult {
    fn violation(&mut self, describe: impl FnOnce() -> String) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(describe());
        }
    }
}

/// The class of property a check guards, which decides the run's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckClass {
    /// Something wrong happened.
    Safety,
    /// Something that should have happened did not.
    Liveness,
    /// A service-level objective was missed.
    Objective,
}

/// The name and class of every check. The harness makes `invariants` (error-level events the
/// cluster logged) and `convergence` (replicas' Merkle roots after heal and repair); the others
/// read the history.
pub const CHECKS: [(&str, CheckClass); 8] = [
    ("invariants", CheckClass::Safety),
    ("convergence", CheckClass::Safety),
    ("durability", CheckClass::Safety),
    ("ordering", CheckClass::Safety),
    ("sequence", CheckClass::Safety),
    ("delivery", CheckClass::Liveness),
    ("sessions", CheckClass::Liveness),
    ("availability", CheckClass::Objective),
];

/// Runs every check; the share of operations that must succeed is `availability_objective`.
pub fn check_all(history: &History, availability_objective: f64) -> BTreeMap<String, CheckResult> {
    let mut results = BTreeMap::new();
    results.insert("durability".to_string(), durability(history));
    results.insert("ordering".to_string(), ordering(history));
    results.insert("sequence".to_string(), sequence(history));
    results.insert("delivery".to_string(), delivery(history));
    results.insert("sessions".to_string(), sessions(history));
    results.insert(
        "availability".to_string(),
        availability(history, availability_objective),
    );
    results
}

/// See the module docs.
pub fn durability(history: &History) -> CheckResult {
    let mut result = CheckResult::default();

    // 1. When each message became known: BTreeMap<channel, BTreeMap<id, since_ns>>.
    let mut known: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut learn = |channel: u64, id: u64, at_ns: u64| {
        let since = known.entry(channel).or_default().entry(id).or_insert(at_ns);
        *since = (*since).min(at_ns);
    };
    for op in &history.ops {
        match &op.outcome {
            Outcome::Sent { message_id } => {
                learn(op.kind.channel_id(), *message_id, op.completed_ns)
            }
            Outcome::Read { message_ids } => {
                for &id in message_ids {
                    learn(op.kind.channel_id(), id, op.completed_ns);
                }
            }
            Outcome::Failed { .. } | Outcome::TimedOut => {}
        }
    }

    // 2. Every later read that reaches back far enough must hold every known message.
    for op in &history.ops {
        let (
            OpKind::Read {
                channel_id,
                before,
                limit,
            },
            Outcome::Read { message_ids },
        ) = (&op.kind, &op.outcome)
        else {
            continue;
        };
        let Some(channel_known) = known.get(channel_id) else {
            continue;
        };
        let page: BTreeSet<u64> = message_ids.iter().copied().collect();
        let oldest = page.first().copied().unwrap_or(0);
        let full = message_ids.len() >= *limit;
        for (&id, &since_ns) in channel_known {
            let below = before.is_none_or(|b| id < b);
            let reached = below && (!full || id >= oldest);
            if since_ns < op.invoked_ns && reached && !page.contains(&id) {
                result.violation(|| {
                    format!(
                        "message {id} in channel {channel_id}, known since {since_ns} ns, \
                         missing from a read by client {} invoked at {} ns",
                        op.client, op.invoked_ns
                    )
                });
            }
        }
    }
    result
}

/// See the module docs.
pub fn ordering(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let mut last: BTreeMap<(usize, u64), u64> = BTreeMap::new();
    for delivery in history
        .deliveries
        .iter()
        .filter(|d| d.event == "MESSAGE_CREATE")
    {
        let (Some(channel), Some(id)) = (delivery.channel_id, delivery.message_id) else {
            result.violation(|| format!("MESSAGE_CREATE s={} without ids", delivery.s));
            continue;
        };
        if let Some(&previous) = last.get(&(delivery.session, channel)) {
            if id <= previous {
                result.violation(|| {
                    format!(
                        "session {} got message {id} after {previous} in channel {channel}",
                        delivery.session
                    )
                });
            }
        }
        last.insert((delivery.session, channel), id);
    }
    result
}

/// See the module docs.
pub fn sequence(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let mut last: BTreeMap<usize, u64> = BTreeMap::new();
    for delivery in &history.deliveries {
        let expected = last.get(&delivery.session).map_or(1, |s| s + 1);
        if delivery.s != expected {
            result.violation(|| {
                format!(
                    "session {} got s={} ({}) where s={expected} was due",
                    delivery.session, delivery.s, delivery.event
                )
            });
        }
        last.insert(delivery.session, delivery.s);
    }
    result
}

/// See the module docs.
pub fn delivery(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let mut received: BTreeSet<(usize, u64)> = BTreeSet::new();
    for delivery in &history.deliveries {
        if let (Some(id), "MESSAGE_CREATE") = (delivery.message_id, delivery.event.as_str()) {
            received.insert((delivery.session, id));
        }
    }

    for op in &history.ops {
        let (OpKind::Send { channel_id, .. }, Outcome::Sent { message_id }) =
            (&op.kind, &op.outcome)
        else {
            continue;
        };
        for (index, session) in history.sessions.iter().enumerate() {
            let online = session.ready_ns.is_some_and(|ready| ready <= op.invoked_ns)
                && session.closed_ns.is_none();
            let subscribed = session.channel_ids.contains(channel_id);
            if online && subscribed && !received.contains(&(index, *message_id)) {
                result.violation(|| {
                    format!(
                        "session {index} (client {}) never got message {message_id} of \
                         channel {channel_id}",
                        session.client
                    )
                });
            }
        }
    }
    result
}

/// See the module docs.
pub fn sessions(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let mut last: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, session) in history.sessions.iter().enumerate() {
        last.insert(session.client, index);
    }
    for (client, index) in last {
        let session = &history.sessions[index];
        if session.closed_ns.is_some() || session.ready_ns.is_none() {
            result.violation(|| {
                let state = if session.closed_ns.is_some() {
                    "closed"
                } else {
                    "never READY"
                };
                format!("client {client} ended the run without a live session (last: {state})")
            });
        }
    }
    result
}

/// See the module docs.
pub fn availability(history: &History, objective: f64) -> CheckResult {
    let mut result = CheckResult::default();
    let total = history.ops.len() as u64;
    let failed: Vec<_> = history
        .ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Failed { .. } | Outcome::TimedOut))
        .collect();

    // The objective allows floor(total × (1 − objective)) failures; the epsilon keeps binary
    // rounding (1 − 0.9999 is a hair under 1e-4) from costing a whole failure.
    let allowed = ((total as f64) * (1.0 - objective) + 1e-6).floor() as u64;
    let excess = (failed.len() as u64).saturating_sub(allowed);
    for op in failed
        .iter()
        .take(usize::try_from(excess).unwrap_or(usize::MAX))
    {
        result.violation(|| {
            format!(
                "{:?} by client {} ended {:?}",
                op.kind, op.client, op.outcome
            )
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Delivery, Op, Session};

    fn send(client: u64, channel_id: u64, at: u64, message_id: u64) -> Op {
        Op {
            client,
            kind: OpKind::Send {
                channel_id,
                nonce: format!("n{at}"),
            },
            invoked_ns: at,
            completed_ns: at + 5,
            outcome: Outcome::Sent { message_id },
        }
    }

    fn read(channel_id: u64, at: u64, limit: usize, ids: &[u64]) -> Op {
        Op {
            client: 9,
            kind: OpKind::Read {
                channel_id,
                before: None,
                limit,
            },
            invoked_ns: at,
            completed_ns: at + 5,
            outcome: Outcome::Read {
                message_ids: ids.to_vec(),
            },
        }
    }

    fn deliver(session: usize, s: u64, message_id: Option<u64>) -> Delivery {
        let event = if message_id.is_some() {
            "MESSAGE_CREATE"
        } else {
            "READY"
        };
        Delivery {
            session,
            s,
            event: event.into(),
            channel_id: message_id.map(|_| 7),
            message_id,
            at_ns: s * 10,
        }
    }

    #[test]
    fn durability_flags_an_acknowledged_message_missing_from_a_later_read() {
        let history = History {
            ops: vec![
                send(1, 7, 0, 100),
                send(1, 7, 10, 200),
                read(7, 20, 10, &[200]),
            ],
            ..History::default()
        };
        let result = durability(&history);
        assert_eq!(result.violations, 1);
        assert!(
            result.examples[0].contains("message 100"),
            "{:?}",
            result.examples
        );
    }

    #[test]
    fn durability_ignores_reads_that_do_not_reach_back() {
        // A full page of one (limit 1) holding only the newest says nothing about 100; a read
        // invoked before the ack is not bound by it either.
        let history = History {
            ops: vec![
                read(7, 1, 10, &[]),
                send(1, 7, 0, 100),
                send(1, 7, 10, 200),
                read(7, 20, 1, &[200]),
            ],
            ..History::default()
        };
        assert_eq!(durability(&history).violations, 0);
    }

    #[test]
    fn durability_bounds_a_paged_read_by_its_before() {
        let mut paged = read(7, 20, 10, &[100]);
        paged.kind = OpKind::Read {
            channel_id: 7,
            before: Some(150),
            limit: 10,
        };
        let history = History {
            ops: vec![send(1, 7, 0, 100), send(1, 7, 10, 200), paged],
            ..History::default()
        };
        assert_eq!(durability(&history).violations, 0);
    }

    #[test]
    fn durability_flags_a_message_that_disappears_after_being_read() {
        // 300 was never acknowledged (its send timed out) but a read returned it.
        let history = History {
            ops: vec![read(7, 0, 10, &[300]), read(7, 20, 10, &[])],
            ..History::default()
        };
        assert_eq!(durability(&history).violations, 1);
    }

    #[test]
    fn ordering_and_sequence_catch_reordering_and_gaps() {
        let history = History {
            deliveries: vec![
                deliver(0, 1, None),
                deliver(0, 2, Some(20)),
                deliver(0, 4, Some(10)),
                deliver(1, 1, None),
                deliver(1, 2, Some(10)),
            ],
            ..History::default()
        };
        assert_eq!(ordering(&history).violations, 1);
        let sequence = sequence(&history);
        assert_eq!(sequence.violations, 1);
        assert!(
            sequence.examples[0].contains("s=4"),
            "{:?}",
            sequence.examples
        );
    }

    #[test]
    fn delivery_requires_every_online_subscribed_session() {
        let session = |ready_ns, closed_ns, channel_ids: Vec<u64>| Session {
            client: 1,
            session_id: Some("s".into()),
            opened_ns: 0,
            ready_ns: Some(ready_ns),
            channel_ids,
            closed_ns,
            close_code: None,
        };
        let history = History {
            ops: vec![send(1, 7, 50, 100)],
            sessions: vec![
                session(10, None, vec![7]),     // online: must get it, and did
                session(10, None, vec![7]),     // online: must get it, did not
                session(60, None, vec![7]),     // ready after the send: excused
                session(10, Some(55), vec![7]), // closed before the end: excused
                session(10, None, vec![8]),     // other channel: excused
            ],
            deliveries: vec![deliver(0, 1, Some(100))],
            ..History::default()
        };
        let result = delivery(&history);
        assert_eq!(result.violations, 1);
        assert!(
            result.examples[0].starts_with("session 1 "),
            "{:?}",
            result.examples
        );
    }

    #[test]
    fn sessions_requires_each_clients_last_session_to_be_live() {
        let session = |client, ready_ns: Option<u64>, closed_ns| Session {
            client,
            session_id: None,
            opened_ns: 0,
            ready_ns,
            channel_ids: vec![],
            closed_ns,
            close_code: None,
        };
        let history = History {
            sessions: vec![
                session(1, Some(1), Some(5)), // dropped, then back:
                session(1, Some(9), None),
                session(2, Some(1), Some(5)), // dropped for good
                session(3, None, None),       // never READY
            ],
            ..History::default()
        };
        let result = sessions(&history);
        assert_eq!(result.violations, 2);
        assert!(
            result.examples[0].starts_with("client 2 "),
            "{:?}",
            result.examples
        );
    }

    #[test]
    fn availability_allows_the_objectives_budget() {
        let mut ops: Vec<Op> = (0..20_000).map(|i| send(1, 7, i, i)).collect();
        ops[0].outcome = Outcome::TimedOut;
        ops[1].outcome = Outcome::Failed {
            status: 503,
            reason: "down".into(),
        };
        assert_eq!(
            availability(
                &History {
                    ops: ops.clone(),
                    ..History::default()
                },
                0.9999
            )
            .violations,
            0
        );
        ops[2].outcome = Outcome::TimedOut;
        assert_eq!(
            availability(
                &History {
                    ops,
                    ..History::default()
                },
                0.9999
            )
            .violations,
            1
        );
    }
}
