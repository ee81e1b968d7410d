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

/// Sessions: each client's last connection is live at the end, and was back within the bound
/// of the last fault healing.
pub fn sessions(history: &History, config: &CheckConfig) -> CheckResult {
    let mut result = CheckResult::default();
    let mut last: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, session) in history.sessions.iter().enumerate() {
        last.insert(session.client, index);
    }
    let bound_ns = config.session_bound_ms * 1_000_000;
    for (client, index) in last {
        let session = &history.sessions[index];
        let root = history.chain_root(index);
        let live_from = history.sessions[root].live_since();
        let problem = if session.closed_ns.is_some() {
            Some("closed".to_string())
        } else if session.live_since().is_none() {
            Some("never READY".to_string())
        } else {
            match (history.healed_ns, session.live_since(), live_from) {
                (Some(healed_ns), Some(this_live), Some(root_live))
                    if root_live > healed_ns + bound_ns && this_live > healed_ns + bound_ns =>
                {
                    Some(format!(
                        "back only at {root_live} ns, more than {} ms after the heal at \
                         {healed_ns} ns",
                        config.session_bound_ms
                    ))
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            result.violation(|| Violation {
                summary: format!(
                    "client {client} ended the run without a live session in time (last: \
                     {problem})"
                ),
                witness: vec![Evidence::session(history, index)],
            });
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
    fn sessions_requires_each_clients_last_session_to_be_live_in_time() {
        let config = CheckConfig::default();
        let late_ns = 1_000 + config.session_bound_ms * 1_000_000 + 1;
        let mut dropped = session(1, 1, vec![]);
        dropped.closed_ns = Some(5);
        let mut gone = session(2, 1, vec![]);
        gone.closed_ns = Some(5);
        let mut never = session(3, 1, vec![]);
        never.ready_ns = None;
        let history = History {
            sessions: vec![
                dropped,                     // dropped, then back:
                session(1, 9, vec![]),       // fine
                gone,                        // dropped for good
                never,                       // never READY
                session(4, late_ns, vec![]), // back too late after the heal
            ],
            healed_ns: Some(1_000),
            ..History::default()
        };
        let result = sessions(&history, &config);
        assert_eq!(result.violations, 3, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("session", 2)]);
        assert_eq!(result.witnesses[1].keys(), vec![("session", 3)]);
        assert_eq!(result.witnesses[2].keys(), vec![("session", 4)]);
        assert!(result.examples[2].contains("back only at"), "{result:?}");
    }
}
