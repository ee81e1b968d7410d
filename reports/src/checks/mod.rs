//! The checkers: each reads a [`History`] and reports violations of one property, each with
//! a minimal witness, the operations, dispatches or sessions that make it a violation.
//!
//! Safety (something wrong happened):
//! - **durability** ([`durability`]): a message is *known* once its send was acknowledged or
//!   a read returned it; every successful read of its channel invoked after that must return
//!   it, if the page reaches back that far. Witness: the operation that made it known and
//!   the read that lost it.
//! - **ordering** ([`ordering`]): per logical session (a connection and the ones that resumed
//!   it) and channel, MESSAGE_CREATE ids increase; every history page is newest first, so
//!   live order equals history order. Witness: the two dispatches out of order (and, when
//!   another session saw the pair, its two dispatches in the other order), or the page.
//! - **sequence** ([`sequence`]): per logical session, `s` is 1, 2, 3, … across resumes, so a
//!   resume either fills every gap in order or is refused (op 9, a new session). Witness:
//!   the dispatch before the gap and the one after it.
//! - **duplicates** ([`duplicates`]): a nonce names one message: sends of one client with one
//!   nonce are acknowledged with one id, dispatches of one author's nonce carry one id, no
//!   session receives a message twice and no page lists one twice.
//! - **causality** ([`causality`]): a message a client sends after it saw message X (a
//!   dispatch, a page, or its own acknowledged send) has an id greater than X's. Witness:
//!   the observation of X and the send.
//!
//! Liveness (something that should have happened did not):
//! - **delivery** ([`delivery`]): every logical session live before a send was invoked and
//!   still open at the end received the message if it was acknowledged and in its channels,
//!   and, once faults healed, within [`CheckConfig::delivery_bound_ms`].
//! - **sessions** ([`sessions`]): every client ends the run with a live session, and once
//!   faults healed no client is without one for longer than
//!   [`CheckConfig::session_bound_ms`] (a session dropped after the heal must be back in time).
//!
//! Objective: **availability** ([`availability`]): operations answered successfully within
//! their kind's deadline, per one-minute window and overall, against the objective.
//!
//! The harness adds `invariants` (error-level events the cluster logged) and `convergence`
//! (replicas compared after repair), which need more than the history. Not modelled here:
//! edits and deletes (the workload makes none), and causality across clients that never
//! observed each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{Delivery, History, Op, Session};

mod availability;
mod liveness;
mod safety;

pub use availability::{availability, availability_stats, AvailabilityStats, Window};
pub use liveness::{delivery, sessions};
pub use safety::{causality, duplicates, durability, ordering, sequence};

/// At most this many violations are described (with their witness) per check.
pub const EXAMPLES_MAX: usize = 10;

/// One piece of a witness: an item of the history, with its index there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// An operation, `ops[index]`.
    Op {
        /// Its index in [`History::ops`].
        index: usize,
        /// The operation.
        op: Op,
    },
    /// A dispatch, `deliveries[index]`.
    Delivery {
        /// Its index in [`History::deliveries`].
        index: usize,
        /// The dispatch.
        delivery: Delivery,
    },
    /// A gateway connection, `sessions[index]`.
    Session {
        /// Its index in [`History::sessions`].
        index: usize,
        /// The connection.
        session: Session,
    },
}

impl Evidence {
    /// `history.ops[index]` as evidence.
    pub fn op(history: &History, index: usize) -> Self {
        Evidence::Op {
            index,
            op: history.ops[index].clone(),
        }
    }

    /// `history.deliveries[index]` as evidence.
    pub fn delivery(history: &History, index: usize) -> Self {
        Evidence::Delivery {
            index,
            delivery: history.deliveries[index].clone(),
        }
    }

    /// `history.sessions[index]` as evidence.
    pub fn session(history: &History, index: usize) -> Self {
        Evidence::Session {
            index,
            session: history.sessions[index].clone(),
        }
    }

    /// `(kind, index)`: what a test compares a witness by.
    pub fn key(&self) -> (&'static str, usize) {
        match self {
            Evidence::Op { index, .. } => ("op", *index),
            Evidence::Delivery { index, .. } => ("delivery", *index),
            Evidence::Session { index, .. } => ("session", *index),
        }
    }
}

/// One violation: what is wrong, and the history items that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// One line a person reads.
    pub summary: String,
    /// The minimal set of history items that makes it a violation.
    pub witness: Vec<Evidence>,
}

impl Violation {
    /// The witness as `(kind, index)` pairs.
    pub fn keys(&self) -> Vec<(&'static str, usize)> {
        self.witness.iter().map(Evidence::key).collect()
    }
}

/// One checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// How many violations were found.
    pub violations: u64,
    /// The first few, one line each (the summaries of `witnesses`).
    pub examples: Vec<String>,
    /// The first few, with their witnesses.
    #[serde(default)]
    pub witnesses: Vec<Violation>,
}

impl CheckResult {
    /// Counts a violation; the first [`EXAMPLES_MAX`] are described (lazily).
    pub fn violation(&mut self, describe: impl FnOnce() -> Violation) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES_MAX {
            let violation = describe();
            self.examples.push(violation.summary.clone());
            self.witnesses.push(violation);
        }
    }

    /// A violation found outside the history (by the harness), without a witness.
    pub fn add_example(&mut self, summary: String) {
        self.violation(|| Violation {
            summary,
            witness: Vec::new(),
        });
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

/// The name and class of every check.
pub const CHECKS: [(&str, CheckClass); 10] = [
    ("invariants", CheckClass::Safety),
    ("convergence", CheckClass::Safety),
    ("durability", CheckClass::Safety),
    ("ordering", CheckClass::Safety),
    ("sequence", CheckClass::Safety),
    ("duplicates", CheckClass::Safety),
    ("causality", CheckClass::Safety),
    ("delivery", CheckClass::Liveness),
    ("sessions", CheckClass::Liveness),
    ("availability", CheckClass::Objective),
];

/// The class of the check called `name`, if it is one.
pub fn class_of(name: &str) -> Option<CheckClass> {
    CHECKS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// What the checks hold a run to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    /// The share of operations that must succeed within their deadline (0.9999 = 99.99%).
    pub availability_objective: f64,
    /// A send answered later than this counts as unavailable.
    pub send_deadline_ms: u64,
    /// A history read answered later than this counts as unavailable.
    pub read_deadline_ms: u64,
    /// Availability is measured per window of this length (by invocation time).
    pub window_ms: u64,
    /// Once faults healed, a dispatch is due within this long of its send (or of the heal).
    pub delivery_bound_ms: u64,
    /// Once faults healed, no client is without a live session for longer than this.
    pub session_bound_ms: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            availability_objective: 0.9999,
            send_deadline_ms: 1_000,
            read_deadline_ms: 1_000,
            window_ms: 60_000,
            delivery_bound_ms: 10_000,
            session_bound_ms: 15_000,
        }
    }
}

/// Runs every history check.
pub fn check_all(history: &History, config: &CheckConfig) -> BTreeMap<String, CheckResult> {
    let mut results = BTreeMap::new();
    results.insert("durability".to_string(), durability(history));
    results.insert("ordering".to_string(), ordering(history));
    results.insert("sequence".to_string(), sequence(history));
    results.insert("duplicates".to_string(), duplicates(history));
    results.insert("causality".to_string(), causality(history));
    results.insert("delivery".to_string(), delivery(history, config));
    results.insert("sessions".to_string(), sessions(history, config));
    results.insert("availability".to_string(), availability(history, config));
    results
}

/// Builders of small hand-made histories for the checkers' tests.
#[cfg(test)]
pub(crate) mod build {
    use crate::history::{Delivery, Op, OpKind, Outcome, Session};

    pub fn send(client: u64, channel_id: u64, at: u64, message_id: u64) -> Op {
        Op {
            client,
            kind: OpKind::Send {
                channel_id,
                nonce: format!("n{at}"),
                reply_to: None,
            },
            invoked_ns: at,
            completed_ns: at + 5,
            outcome: Outcome::Sent { message_id },
            verification: false,
            first_invoked_ns: None,
        }
    }

    pub fn read(client: u64, channel_id: u64, at: u64, limit: usize, ids: &[u64]) -> Op {
        Op {
            client,
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
            verification: false,
            first_invoked_ns: None,
        }
    }

    pub fn session(client: u64, ready_ns: u64, channel_ids: Vec<u64>) -> Session {
        Session {
            client,
            session_id: Some(format!("session-{client}")),
            opened_ns: ready_ns.saturating_sub(1),
            ready_ns: Some(ready_ns),
            channel_ids,
            closed_ns: None,
            close_code: None,
            resumes: None,
            resumed_ns: None,
            invalidated_ns: None,
            closed_by_client: false,
        }
    }

    /// A connection that resumed `previous` at `resumed_ns`.
    pub fn resumed(client: u64, previous: usize, resumed_ns: u64) -> Session {
        Session {
            ready_ns: None,
            resumes: Some(previous),
            resumed_ns: Some(resumed_ns),
            channel_ids: Vec::new(),
            ..session(client, resumed_ns, Vec::new())
        }
    }

    pub fn message(session: usize, s: u64, channel_id: u64, message_id: u64, at: u64) -> Delivery {
        Delivery {
            session,
            s,
            event: "MESSAGE_CREATE".into(),
            channel_id: Some(channel_id),
            message_id: Some(message_id),
            at_ns: at,
            author_id: None,
            nonce: None,
        }
    }

    pub fn event(session: usize, s: u64, name: &str, at: u64) -> Delivery {
        Delivery {
            session,
            s,
            event: name.into(),
            channel_id: None,
            message_id: None,
            at_ns: at,
            author_id: None,
            nonce: None,
        }
    }
}
