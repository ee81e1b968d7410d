//! The safety checkers: durability, ordering, sequence, duplicates and causality, each from
//! the history alone (see the parent module for the definitions).

use std::collections::{BTreeMap, BTreeSet};

use super::{CheckResult, Evidence, Violation};
use crate::history::{History, OpKind, Outcome};

/// Per channel, per message id: when it became known and the op that made it known.
type Known = BTreeMap<u64, BTreeMap<u64, (u64, usize)>>;

fn known_messages(history: &History) -> Known {
    let mut known: Known = BTreeMap::new();
    let mut learn = |channel: u64, id: u64, at_ns: u64, op: usize| {
        let since = known
            .entry(channel)
            .or_default()
            .entry(id)
            .or_insert((at_ns, op));
        if at_ns < since.0 {
            *since = (at_ns, op);
        }
    };
    for (index, op) in history.ops.iter().enumerate() {
        match &op.outcome {
            Outcome::Sent { message_id } => {
                learn(op.kind.channel_id(), *message_id, op.completed_ns, index)
            }
            Outcome::Read { message_ids } => {
                for &id in message_ids {
                    learn(op.kind.channel_id(), id, op.completed_ns, index);
                }
            }
            Outcome::Failed { .. } | Outcome::TimedOut | Outcome::Done => {}
        }
    }
    known
}

/// Durability: every later read that reaches back far enough holds every known message.
pub fn durability(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let known = known_messages(history);
    for (index, op) in history.ops.iter().enumerate() {
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
        for (&id, &(since_ns, source)) in channel_known {
            let below = before.is_none_or(|b| id < b);
            let reached = below && (!full || id >= oldest);
            if since_ns < op.invoked_ns && reached && !page.contains(&id) {
                result.violation(|| Violation {
                    summary: format!(
                        "message {id} in channel {channel_id}, known since {since_ns} ns \
                         (op {source}), missing from read op {index} by client {} invoked at \
                         {} ns",
                        op.client, op.invoked_ns
                    ),
                    witness: vec![Evidence::op(history, source), Evidence::op(history, index)],
                });
            }
        }
    }
    result
}

/// The MESSAGE_CREATE dispatches of each (logical session, channel), as delivery indices in
/// arrival order.
fn creates_by_chain(history: &History) -> BTreeMap<(usize, u64), Vec<usize>> {
    let mut by_chain: BTreeMap<(usize, u64), Vec<usize>> = BTreeMap::new();
    for (index, delivery) in history.deliveries.iter().enumerate() {
        if delivery.event != "MESSAGE_CREATE" {
            continue;
        }
        if let Some(channel) = delivery.channel_id {
            let chain = history.chain_root(delivery.session);
            by_chain.entry((chain, channel)).or_default().push(index);
        }
    }
    by_chain
}

/// Ordering: per logical session and channel, ids increase; every page is newest first.
pub fn ordering(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let by_chain = creates_by_chain(history);
    let id_of = |index: usize| history.deliveries[index].message_id.unwrap_or(0);

    // 1. Live order: each dispatch's id exceeds the highest one before it.
    for (&(chain, channel), indices) in &by_chain {
        let mut highest: Option<usize> = None;
        for &index in indices {
            let id = id_of(index);
            match highest {
                Some(top) if id < id_of(top) => {
                    result.violation(|| {
                        let top_id = id_of(top);
                        let mut witness = vec![
                            Evidence::delivery(history, top),
                            Evidence::delivery(history, index),
                        ];
                        // Another session that saw the pair the other way round.
                        let other = by_chain.iter().find_map(|(&(c, ch), others)| {
                            if c == chain || ch != channel {
                                return None;
                            }
                            let low = others.iter().find(|&&i| id_of(i) == id)?;
                            let high = others.iter().find(|&&i| id_of(i) == top_id)?;
                            (low < high).then_some((*low, *high))
                        });
                        if let Some((low, high)) = other {
                            witness.push(Evidence::delivery(history, low));
                            witness.push(Evidence::delivery(history, high));
                        }
                        Violation {
                            summary: format!(
                                "session {chain} got message {id} after {top_id} in channel \
                                 {channel}"
                            ),
                            witness,
                        }
                    });
                }
                Some(top) if id <= id_of(top) => {}
                _ => highest = Some(index),
            }
        }
    }

    // 2. History order: a page lists ids newest first, strictly.
    for (index, op) in history.ops.iter().enumerate() {
        let Outcome::Read { message_ids } = &op.outcome else {
            continue;
        };
        if let Some(pair) = message_ids.windows(2).find(|w| w[0] < w[1]) {
            result.violation(|| Violation {
                summary: format!(
                    "read op {index} of channel {} lists {} before the newer {}",
                    op.kind.channel_id(),
                    pair[0],
                    pair[1]
                ),
                witness: vec![Evidence::op(history, index)],
            });
        }
    }
    result
}

/// Sequence: per logical session, `s` rises by exactly 1 from 1, across resumes.
pub fn sequence(history: &History) -> CheckResult {
    let mut result = CheckResult::default();
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    for (index, delivery) in history.deliveries.iter().enumerate() {
        let chain = history.chain_root(delivery.session);
        let previous = last.get(&chain).copied();
        let expected = previous.map_or(1, |p| history.deliveries[p].s + 1);
        if delivery.s != expected {
            result.violation(|| {
                let across_resume =
                    previous.is_some_and(|p| history.deliveries[p].session != delivery.session);
                let how = if across_resume {
                    " (the resume left a gap)"
                } else {
                    ""
                };
                let mut witness: Vec<Evidence> = previous
                    .map(|p| Evidence::delivery(history, p))
                    .into_iter()
                    .collect();
                witness.push(Evidence::delivery(history, index));
                Violation {
                    summary: format!(
                        "session {chain} got s={} ({}) where s={expected} was due{how}",
                        delivery.s, delivery.event
                    ),
                    witness,
                }
            });
        }
        last.insert(chain, index);
    }
    result
}

/// Duplicates: one nonce, one message; no message twice in a session or a page.
pub fn duplicates(history: &History) -> CheckResult {
    let mut result = CheckResult::default();

    // 1. Acknowledgements: one client's sends with one nonce got one id.
    let mut acked: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let (OpKind::Send { nonce, .. }, Outcome::Sent { message_id }) = (&op.kind, &op.outcome)
        else {
            continue;
        };
        let first = *acked.entry((op.client, nonce.as_str())).or_insert(index);
        let first_id = match history.ops[first].outcome {
            Outcome::Sent { message_id } => message_id,
            _ => *message_id,
        };
        if first_id != *message_id {
            result.violation(|| Violation {
                summary: format!(
                    "client {} nonce {nonce:?} acknowledged as {first_id} and as {message_id}",
                    op.client
                ),
                witness: vec![Evidence::op(history, first), Evidence::op(history, index)],
            });
        }
    }

    // 2. Dispatches: one author's nonce carries one id; a session gets a message once.
    let mut by_nonce: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    let mut flagged: BTreeSet<(u64, &str)> = BTreeSet::new();
    let mut seen: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    for (index, delivery) in history.deliveries.iter().enumerate() {
        let Some(id) = delivery
            .message_id
            .filter(|_| delivery.event == "MESSAGE_CREATE")
        else {
            continue;
        };
        if let (Some(author), Some(nonce)) = (delivery.author_id, delivery.nonce.as_deref()) {
            let first = *by_nonce.entry((author, nonce)).or_insert(index);
            let first_id = history.deliveries[first].message_id.unwrap_or(id);
            if first_id != id && flagged.insert((author, nonce)) {
                result.violation(|| Violation {
                    summary: format!(
                        "author {author} nonce {nonce:?} created messages {first_id} and {id}"
                    ),
                    witness: vec![
                        Evidence::delivery(history, first),
                        Evidence::delivery(history, index),
                    ],
                });
            }
        }
        let chain = history.chain_root(delivery.session);
        if let Some(&first) = seen.get(&(chain, id)) {
            result.violation(|| Violation {
                summary: format!("session {chain} got message {id} twice"),
                witness: vec![
                    Evidence::delivery(history, first),
                    Evidence::delivery(history, index),
                ],
            });
        } else {
            seen.insert((chain, id), index);
        }
    }

    // 3. Pages: no id listed twice.
    for (index, op) in history.ops.iter().enumerate() {
        let Outcome::Read { message_ids } = &op.outcome else {
            continue;
        };
        let distinct: BTreeSet<u64> = message_ids.iter().copied().collect();
        if distinct.len() != message_ids.len() {
            result.violation(|| Violation {
                summary: format!("read op {index} lists a message twice"),
                witness: vec![Evidence::op(history, index)],
            });
        }
    }
    result
}

/// What a client observed: a message id, when, and the evidence.
struct Observation {
    at_ns: u64,
    message_id: u64,
    evidence: (bool, usize),
}

/// Causality: a send invoked after its client observed message X, in any channel, gets an id
/// above X.
///
/// Within a channel, ids come from one guild process at a time and a takeover starts above
/// every stored id. Across guilds, ids come from different guild nodes, ordered only as well
/// as their clocks agree; the client closes that gap by naming the newest id it has seen with
/// each send (`X-Causal-After`), above which the guild node mints. A node whose clock steps
/// back then still orders a later send after what its author saw.
pub fn causality(history: &History) -> CheckResult {
    let mut result = CheckResult::default();

    // 1. Per client: what it observed (dispatches, pages, its own acks), in every channel.
    let mut observed: BTreeMap<u64, Vec<Observation>> = BTreeMap::new();
    for (index, delivery) in history.deliveries.iter().enumerate() {
        let (Some(id), Some(session)) =
            (delivery.message_id, history.sessions.get(delivery.session))
        else {
            continue;
        };
        observed
            .entry(session.client)
            .or_default()
            .push(Observation {
                at_ns: delivery.at_ns,
                message_id: id,
                evidence: (false, index),
            });
    }
    for (index, op) in history.ops.iter().enumerate() {
        let ids: &[u64] = match &op.outcome {
            Outcome::Sent { message_id } => std::slice::from_ref(message_id),
            Outcome::Read { message_ids } => message_ids,
            _ => &[],
        };
        if let Some(&top) = ids.iter().max() {
            observed.entry(op.client).or_default().push(Observation {
                at_ns: op.completed_ns,
                message_id: top,
                evidence: (true, index),
            });
        }
    }

    // 2. Sweep each client's sends in invocation order against the highest id seen before.
    let evidence = |(is_op, index): (bool, usize)| {
        if is_op {
            Evidence::op(history, index)
        } else {
            Evidence::delivery(history, index)
        }
    };
    for (client, mut observations) in observed {
        observations.sort_by_key(|o| (o.at_ns, o.evidence));
        let mut sends: Vec<(u64, usize, u64)> = history
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.client == client)
            .filter_map(|(index, op)| match (&op.outcome, &op.kind) {
                // A retried send asked for its message at its first attempt, whose id
                // the retry is answered with.
                (Outcome::Sent { message_id }, OpKind::Send { .. }) => {
                    Some((op.first_invoked_ns(), index, *message_id))
                }
                _ => None,
            })
            .collect();
        sends.sort();
        let mut next = 0;
        let mut highest: Option<&Observation> = None;
        for (invoked_ns, index, message_id) in sends {
            while next < observations.len() && observations[next].at_ns < invoked_ns {
                let candidate = &observations[next];
                if highest.is_none_or(|h| candidate.message_id > h.message_id) {
                    highest = Some(candidate);
                }
                next += 1;
            }
            if let Some(seen) = highest.filter(|h| message_id <= h.message_id) {
                result.violation(|| Violation {
                    summary: format!(
                        "client {client} saw message {} at {} ns, then sent op {index} at \
                         {invoked_ns} ns which got the lower id {message_id}",
                        seen.message_id, seen.at_ns
                    ),
                    witness: vec![evidence(seen.evidence), Evidence::op(history, index)],
                });
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::build::{event, message, read, resumed, send, session};
    use crate::history::Op;

    #[test]
    fn durability_flags_an_acknowledged_message_missing_from_a_later_read() {
        let history = History {
            ops: vec![
                send(1, 7, 0, 100),
                send(1, 7, 10, 200),
                read(9, 7, 20, 10, &[200]),
            ],
            ..History::default()
        };
        let result = durability(&history);
        assert_eq!(result.violations, 1);
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 2)]);
        assert!(result.examples[0].contains("message 100"), "{result:?}");
    }

    #[test]
    fn durability_passes_reads_that_hold_everything_or_do_not_reach_back() {
        // A full page of one (limit 1) holding only the newest says nothing about 100; a read
        // invoked before the ack is not bound by it; a paged read is bounded by its before.
        let mut paged = read(9, 7, 30, 10, &[100]);
        paged.kind = OpKind::Read {
            channel_id: 7,
            before: Some(150),
            limit: 10,
        };
        let history = History {
            ops: vec![
                read(9, 7, 1, 10, &[]),
                send(1, 7, 0, 100),
                send(1, 7, 10, 200),
                read(9, 7, 20, 1, &[200]),
                paged,
                read(9, 7, 40, 10, &[200, 100]),
            ],
            ..History::default()
        };
        assert_eq!(durability(&history), CheckResult::default());
    }

    #[test]
    fn durability_flags_a_message_that_disappears_after_being_read() {
        // 300 was never acknowledged (its send timed out) but a read returned it.
        let history = History {
            ops: vec![read(9, 7, 0, 10, &[300]), read(9, 7, 20, 10, &[])],
            ..History::default()
        };
        let result = durability(&history);
        assert_eq!(result.violations, 1);
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 1)]);
    }

    #[test]
    fn ordering_passes_increasing_ids_and_newest_first_pages() {
        let history = History {
            ops: vec![read(1, 7, 50, 10, &[30, 20, 10])],
            sessions: vec![session(1, 0, vec![7]), session(2, 0, vec![7])],
            deliveries: vec![
                message(0, 1, 7, 10, 1),
                message(1, 1, 7, 10, 1),
                message(0, 2, 7, 20, 2),
                message(1, 2, 7, 20, 2),
                message(0, 3, 8, 5, 3), // another channel has its own order
            ],
            ..History::default()
        };
        assert_eq!(ordering(&history), CheckResult::default());
    }

    #[test]
    fn ordering_catches_two_sessions_seeing_two_messages_in_opposite_orders() {
        let history = History {
            sessions: vec![session(1, 0, vec![7]), session(2, 0, vec![7])],
            deliveries: vec![
                message(0, 1, 7, 10, 1),
                message(1, 1, 7, 20, 1),
                message(0, 2, 7, 20, 2),
                message(1, 2, 7, 10, 2),
            ],
            ..History::default()
        };
        let result = ordering(&history);
        assert_eq!(result.violations, 1, "{result:?}");
        // Session 1 saw 20 then 10; session 0 saw 10 then 20.
        assert_eq!(
            result.witnesses[0].keys(),
            vec![
                ("delivery", 1),
                ("delivery", 3),
                ("delivery", 0),
                ("delivery", 2)
            ]
        );
    }

    #[test]
    fn ordering_catches_a_page_out_of_history_order() {
        let history = History {
            ops: vec![read(1, 7, 0, 10, &[30, 10, 20])],
            ..History::default()
        };
        let result = ordering(&history);
        assert_eq!(result.violations, 1);
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0)]);
    }

    #[test]
    fn sequence_passes_a_resume_that_replays_the_gap_in_order() {
        let history = History {
            sessions: vec![session(1, 0, vec![7]), resumed(1, 0, 100)],
            deliveries: vec![
                event(0, 1, "READY", 1),
                message(0, 2, 7, 10, 2),
                // The connection drops; the resume replays s=3 and 4, then RESUMED.
                message(1, 3, 7, 20, 100),
                message(1, 4, 7, 30, 100),
                event(1, 5, "RESUMED", 100),
                message(1, 6, 7, 40, 101),
            ],
            ..History::default()
        };
        assert_eq!(sequence(&history), CheckResult::default());
        assert_eq!(ordering(&history), CheckResult::default());
    }

    #[test]
    fn sequence_catches_a_skipped_s_and_a_resume_that_leaves_a_gap() {
        let history = History {
            sessions: vec![session(1, 0, vec![7]), resumed(1, 0, 100)],
            deliveries: vec![
                event(0, 1, "READY", 1),
                message(0, 3, 7, 10, 2),
                message(1, 5, 7, 30, 100),
            ],
            ..History::default()
        };
        let result = sequence(&history);
        assert_eq!(result.violations, 2, "{result:?}");
        assert_eq!(
            result.witnesses[0].keys(),
            vec![("delivery", 0), ("delivery", 1)]
        );
        assert!(result.examples[0].contains("s=3"), "{result:?}");
        assert_eq!(
            result.witnesses[1].keys(),
            vec![("delivery", 1), ("delivery", 2)]
        );
        assert!(
            result.examples[1].contains("resume left a gap"),
            "{result:?}"
        );
    }

    #[test]
    fn sequence_starts_over_after_an_invalidated_session() {
        // The resume was refused (no RESUMED), so the new connection identified afresh.
        let mut refused = resumed(1, 0, 0);
        refused.resumed_ns = None;
        refused.invalidated_ns = Some(100);
        let history = History {
            sessions: vec![session(1, 0, vec![7]), refused, session(1, 200, vec![7])],
            deliveries: vec![
                event(0, 1, "READY", 1),
                message(0, 2, 7, 10, 2),
                event(2, 1, "READY", 200),
            ],
            ..History::default()
        };
        assert_eq!(sequence(&history), CheckResult::default());
    }

    #[test]
    fn duplicates_pass_distinct_nonces_and_a_retry_acked_with_one_id() {
        let mut retry = send(1, 7, 20, 100);
        retry.kind = OpKind::Send {
            channel_id: 7,
            nonce: "n0".into(),
            reply_to: None,
        };
        let history = History {
            ops: vec![send(1, 7, 0, 100), retry, send(1, 7, 30, 200)],
            ..History::default()
        };
        assert_eq!(duplicates(&history), CheckResult::default());
    }

    #[test]
    fn duplicates_catch_a_nonce_that_created_two_messages() {
        let mut timed_out = send(1, 7, 0, 0);
        timed_out.outcome = Outcome::TimedOut;
        let mut retry = send(1, 7, 20, 101);
        retry.kind = OpKind::Send {
            channel_id: 7,
            nonce: "n0".into(),
            reply_to: None,
        };
        let mut first = message(0, 1, 7, 100, 10);
        let mut second = message(0, 2, 7, 101, 30);
        for delivery in [&mut first, &mut second] {
            delivery.author_id = Some(1);
            delivery.nonce = Some("n0".into());
        }
        let history = History {
            ops: vec![timed_out, retry],
            sessions: vec![session(2, 0, vec![7])],
            deliveries: vec![first, second],
            ..History::default()
        };
        let result = duplicates(&history);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(
            result.witnesses[0].keys(),
            vec![("delivery", 0), ("delivery", 1)]
        );
    }

    #[test]
    fn duplicates_catch_two_acks_of_one_nonce_and_a_message_delivered_twice() {
        let mut retry = send(1, 7, 20, 101);
        retry.kind = OpKind::Send {
            channel_id: 7,
            nonce: "n0".into(),
            reply_to: None,
        };
        let history = History {
            ops: vec![send(1, 7, 0, 100), retry, read(1, 7, 40, 10, &[101, 101])],
            sessions: vec![session(2, 0, vec![7]), resumed(2, 0, 50)],
            deliveries: vec![message(0, 1, 7, 100, 10), message(1, 2, 7, 100, 50)],
            ..History::default()
        };
        let result = duplicates(&history);
        assert_eq!(result.violations, 3, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 1)]);
        assert_eq!(
            result.witnesses[1].keys(),
            vec![("delivery", 0), ("delivery", 1)]
        );
        assert_eq!(result.witnesses[2].keys(), vec![("op", 2)]);
    }

    #[test]
    fn causality_passes_sends_after_what_their_author_saw() {
        let history = History {
            ops: vec![send(2, 7, 20, 300), send(1, 8, 0, 50)],
            sessions: vec![session(2, 0, vec![7])],
            deliveries: vec![message(0, 1, 7, 200, 10)],
            ..History::default()
        };
        assert_eq!(causality(&history), CheckResult::default());
    }

    #[test]
    fn causality_catches_a_reply_ordered_before_what_it_answers() {
        // Client 2 saw 200 at 10 ns, then its reply was given 150.
        let history = History {
            ops: vec![read(2, 7, 30, 10, &[250]), send(2, 7, 20, 150)],
            sessions: vec![session(2, 0, vec![7])],
            deliveries: vec![message(0, 1, 7, 200, 10)],
            ..History::default()
        };
        let result = causality(&history);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("delivery", 0), ("op", 1)]);
    }

    #[test]
    fn causality_catches_an_id_below_the_clients_own_earlier_send() {
        let history = History {
            ops: vec![send(1, 7, 0, 500), send(1, 7, 100, 400)],
            ..History::default()
        };
        let result = causality(&history);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 1)]);
    }

    #[test]
    fn edits_reactions_and_replies_are_neither_duplicates_nor_out_of_order() {
        // Client 1 sends 100, client 2 replies with 200; 1 edits 100 and 2 reacts to it. The
        // session sees two creates, then the update of 100 and a reaction to it, which come
        // after 200 in `s` but are not new messages.
        let mut reply = send(2, 7, 10, 200);
        reply.kind = OpKind::Send {
            channel_id: 7,
            nonce: "r".into(),
            reply_to: Some(100),
        };
        let done = |client, at, kind| Op {
            client,
            kind,
            invoked_ns: at,
            completed_ns: at + 5,
            outcome: Outcome::Done,
            verification: false,
            first_invoked_ns: None,
        };
        let edit = done(
            1,
            20,
            OpKind::Edit {
                channel_id: 7,
                message_id: 100,
            },
        );
        let react = OpKind::React {
            channel_id: 7,
            message_id: 100,
            emoji: "🔥".into(),
        };
        let mut update = message(0, 4, 7, 100, 30);
        update.event = "MESSAGE_UPDATE".into();
        let mut reaction = event(0, 5, "MESSAGE_REACTION_ADD", 40);
        reaction.channel_id = Some(7);
        let history = History {
            ops: vec![
                send(1, 7, 0, 100),
                reply,
                edit,
                done(2, 30, react),
                read(3, 7, 50, 10, &[200, 100]),
            ],
            sessions: vec![session(3, 0, vec![7])],
            deliveries: vec![
                event(0, 1, "READY", 0),
                message(0, 2, 7, 100, 6),
                message(0, 3, 7, 200, 16),
                update,
                reaction,
            ],
            ..History::default()
        };
        let config = crate::checks::CheckConfig::default();
        let results = crate::checks::check_all(&history, &config);
        for (name, result) in &results {
            assert_eq!(result.violations, 0, "{name}: {result:?}");
        }
        let stats = crate::checks::availability_stats(&history, &config);
        assert_eq!(
            (stats.ops, stats.ok),
            (5, 5),
            "edits and reactions are operations"
        );
    }

    #[test]
    fn causality_takes_a_retried_send_as_asked_for_at_its_first_attempt() {
        // Client 1's send timed out at 0..10 (its message got id 150), then it saw 200 at
        // 20 ns, then its retry with the same nonce at 30 was answered with 150.
        let mut first = send(1, 7, 0, 150);
        first.outcome = Outcome::TimedOut;
        let mut retry = send(1, 7, 30, 150);
        retry.kind = first.kind.clone();
        retry.first_invoked_ns = Some(0);
        let history = History {
            ops: vec![first, retry.clone()],
            sessions: vec![session(1, 0, vec![7])],
            deliveries: vec![message(0, 2, 7, 200, 20)],
            ..History::default()
        };
        assert_eq!(causality(&history), CheckResult::default());

        // Taken as a send of its own, asked for at 30, it would be flagged.
        let mut alone = history;
        alone.ops[1].first_invoked_ns = None;
        let result = causality(&alone);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("delivery", 0), ("op", 1)]);
    }

    #[test]
    fn causality_catches_a_lower_id_in_another_channel_after_what_the_author_saw() {
        // Client 1 got 500 in channel 7, then its send in channel 8 got 400: the guild node
        // of channel 8 minted below what the author had seen.
        let history = History {
            ops: vec![
                send(1, 7, 0, 500),
                send(1, 8, 100, 400),
                send(1, 9, 200, 600),
            ],
            ..History::default()
        };
        let result = causality(&history);
        assert_eq!(result.violations, 1, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 1)]);
    }
}
