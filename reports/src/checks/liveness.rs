//! The liveness checkers: delivery and sessions (see the parent module for the definitions).

use std::collections::{BTreeMap, BTreeSet};

use super::{CheckConfig, CheckResult, Evidence, Violation};
use crate::history::{History, OpKind, Outcome};

/// A logical session as the liveness checks see it.
struct Chain {
    root: usize,
    last: usize,
    live_from_ns: u64,
    open_at_end: bool,
}

fn chains(history: &History) -> Vec<Chain> {
    history
        .chains()
        .into_iter()
        .filter_map(|(root, members)| {
            let last = *members.last()?;
            let live_from_ns = history.sessions[root].live_since()?;
            let last_session = &history.sessions[last];
            let open_at_end =
                last_session.closed_ns.is_none() && last_session.live_since().is_some();
            Some(Chain {
                root,
                last,
                live_from_ns,
                open_at_end,
            })
        })
        .collect()
}

/// Delivery: every live, subscribed logical session gets every acknowledged message, and
/// within the bound once faults healed.
pub fn delivery(history: &History, config: &CheckConfig) -> CheckResult {
    let mut result = CheckResult::default();

    // 1. Who got what, and when: (root, message) -> first delivery index.
    let mut received: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    for (index, delivery) in history.deliveries.iter().enumerate() {
        if let (Some(id), "MESSAGE_CREATE") = (delivery.message_id, delivery.event.as_str()) {
            let root = history.chain_root(delivery.session);
            received.entry((root, id)).or_insert(index);
        }
    }

    // 2. The sessions that must get each channel's messages.
    let mut by_channel: BTreeMap<u64, Vec<&Chain>> = BTreeMap::new();
    let all = chains(history);
    for chain in all.iter().filter(|c| c.open_at_end) {
        let channels: BTreeSet<u64> = history.sessions[chain.root]
            .channel_ids
            .iter()
            .copied()
            .collect();
        for channel in channels {
            by_channel.entry(channel).or_default().push(chain);
        }
    }

    // 3. Every acknowledged send against them.
    let bound_ns = config.delivery_bound_ms * 1_000_000;
    for (op_index, op) in history.ops.iter().enumerate() {
        let (OpKind::Send { channel_id, .. }, Outcome::Sent { message_id }) =
            (&op.kind, &op.outcome)
        else {
            continue;
        };
        for chain in by_channel.get(channel_id).into_iter().flatten() {
            if chain.live_from_ns > op.invoked_ns {
                continue;
            }
            match received.get(&(chain.root, *message_id)) {
                None => result.violation(|| Violation {
                    summary: format!(
                        "session {} (client {}) never got message {message_id} of channel \
                         {channel_id}",
                        chain.root, history.sessions[chain.root].client
                    ),
                    witness: vec![
                        Evidence::op(history, op_index),
                        Evidence::session(history, chain.root),
                        Evidence::session(history, chain.last),
                    ],
                }),
                Some(&index) => {
                    let Some(healed_ns) = history.healed_ns else {
                        continue;
                    };
                    let due_ns = op.invoked_ns.max(healed_ns) + bound_ns;
                    let at_ns = history.deliveries[index].at_ns;
                    if at_ns > due_ns {
                        result.violation(|| Violation {
                            summary: format!(
                                "session {} got message {message_id} at {at_ns} ns, after it \
                                 was due at {due_ns} ns",
                                chain.root
                            ),
                            witness: vec![
                                Evidence::op(history, op_index),
                                Evidence::delivery(history, index),
                            ],
                        });
                    }
                }
            }
        }
    }
    result
}

/// Sessions: each client's last connection is live at the end, and once faults healed no
/// client goes without a live connection for longer than the bound.
pub fn sessions(history: &History, config: &CheckConfig) -> CheckResult {
    let mut result = CheckResult::default();
    let mut by_client: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, session) in history.sessions.iter().enumerate() {
        by_client.entry(session.client).or_default().push(index);
    }
    let bound_ns = config.session_bound_ms * 1_000_000;
    for (client, connections) in by_client {
        // 1. The end: the last connection is open and was READY (or resumed).
        let Some(&last) = connections.last() else {
            continue;
        };
        let session = &history.sessions[last];
        if session.closed_ns.is_some() || session.live_since().is_none() {
            let state = if session.closed_ns.is_some() {
                "closed"
            } else {
                "never READY"
            };
            result.violation(|| Violation {
                summary: format!(
                    "client {client} ended the run without a live session (last: {state})"
                ),
                witness: vec![Evidence::session(history, last)],
            });
            continue;
        }

        // 2. After the heal: live connections cover the time, with no gap over the bound.
        let Some(healed_ns) = history.healed_ns else {
            continue;
        };
        let mut covered_ns = healed_ns;
        let mut before: Option<usize> = None;
        for &index in &connections {
            let connection = &history.sessions[index];
            let Some(live_ns) = connection.live_since() else {
                continue;
            };
            let until_ns = connection.closed_ns.unwrap_or(u64::MAX);
            if until_ns <= covered_ns {
                before = Some(index);
                continue;
            }
            if live_ns > covered_ns + bound_ns {
                result.violation(|| {
                    let mut witness: Vec<Evidence> = before
                        .map(|b| Evidence::session(history, b))
                        .into_iter()
                        .collect();
                    witness.push(Evidence::session(history, index));
                    Violation {
                        summary: format!(
                            "client {client} had no live session from {covered_ns} ns to \
                             {live_ns} ns, more than {} ms after the heal at {healed_ns} ns",
                            config.session_bound_ms
                        ),
                        witness,
                    }
                });
                break;
            }
            covered_ns = covered_ns.max(until_ns);
            before = Some(index);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::build::{message, resumed, send, session};

    #[test]
    fn delivery_requires_every_live_subscribed_session() {
        let mut closed = session(1, 10, vec![7]);
        closed.closed_ns = Some(55);
        let history = History {
            ops: vec![send(1, 7, 50, 100)],
            sessions: vec![
                session(1, 10, vec![7]), // online: must get it, and did
                session(2, 10, vec![7]), // online: must get it, did not
                session(3, 60, vec![7]), // ready after the send: excused
                closed,                  // closed before the end: excused
                session(5, 10, vec![8]), // other channel: excused
            ],
            deliveries: vec![message(0, 1, 7, 100, 60)],
            ..History::default()
        };
        let result = delivery(&history, &CheckConfig::default());
        assert_eq!(result.violations, 1);
        assert_eq!(
            result.witnesses[0].keys(),
            vec![("op", 0), ("session", 1), ("session", 1)]
        );
    }

    #[test]
    fn delivery_follows_a_resumed_session_and_holds_the_bound_after_healing() {
        let mut dropped = session(1, 10, vec![7]);
        dropped.closed_ns = Some(40);
        let mut history = History {
            ops: vec![send(2, 7, 50, 100)],
            sessions: vec![dropped, resumed(1, 0, 70)],
            // Replayed on the resumed connection: the logical session got it.
            deliveries: vec![message(1, 1, 7, 100, 70)],
            healed_ns: Some(60),
            ..History::default()
        };
        let config = CheckConfig::default();
        assert_eq!(delivery(&history, &config), CheckResult::default());

        // The same delivery, but more than the bound after the heal.
        history.deliveries[0].at_ns = 60 + config.delivery_bound_ms * 1_000_000 + 1;
        let result = delivery(&history, &config);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("delivery", 0)]);
    }

    #[test]
    fn sessions_requires_each_clients_last_session_to_be_live_and_gaps_short() {
        let config = CheckConfig::default();
        let bound_ns = config.session_bound_ms * 1_000_000;
        let healed_ns = 1_000;
        let mut dropped = session(1, 1, vec![]);
        dropped.closed_ns = Some(5);
        let mut gone = session(2, 1, vec![]);
        gone.closed_ns = Some(5);
        let mut never = session(3, 1, vec![]);
        never.ready_ns = None;
        // Client 5 loses its session after the heal and is back within the bound; client 6
        // loses it after the heal and is back only after the bound.
        let mut quick = session(5, 1, vec![]);
        quick.closed_ns = Some(healed_ns + 10);
        let mut slow = session(6, 1, vec![]);
        slow.closed_ns = Some(healed_ns + 10);
        let history = History {
            sessions: vec![
                dropped,                                           // 0: dropped, then back:
                session(1, 9, vec![]),                             // 1: fine
                gone,                                              // 2: dropped for good
                never,                                             // 3: never READY
                session(4, healed_ns + bound_ns + 1, vec![]),      // 4: first back too late
                quick,                                             // 5
                session(5, healed_ns + 10 + bound_ns, vec![]),     // 6: back in time
                slow,                                              // 7
                session(6, healed_ns + 10 + bound_ns + 1, vec![]), // 8: back too late
            ],
            healed_ns: Some(healed_ns),
            ..History::default()
        };
        let result = sessions(&history, &config);
        assert_eq!(result.violations, 4, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("session", 2)]);
        assert_eq!(result.witnesses[1].keys(), vec![("session", 3)]);
        assert_eq!(result.witnesses[2].keys(), vec![("session", 4)]);
        assert!(
            result.examples[2].contains("no live session from 1000 ns"),
            "{result:?}"
        );
        assert_eq!(
            result.witnesses[3].keys(),
            vec![("session", 7), ("session", 8)]
        );
    }
}
