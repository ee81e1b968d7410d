//! What the clients saw: the history every checker reads.
//!
//! A history holds only what a client could observe: operations it invoked with their outcome,
//! gateway sessions with the payloads they received, and (from the nemesis) when faults were
//! applied. Times are simulated ns since the start of the run.
//!
//! A gateway *connection* is one [`Session`] record. A connection that resumed an earlier
//! one (Resume, answered by RESUMED) continues that logical session: its dispatches go on
//! with the same `s` numbering, and the checkers treat the chain of connections as one
//! session. Fields added after the first schema default to empty, so older histories load.

use serde::{Deserialize, Serialize};

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /channels/{channel_id}/messages`.
    Send {
        /// The channel.
        channel_id: u64,
        /// The nonce the client attached.
        nonce: String,
        /// For a reply: the message it answers (`message_reference`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// `PATCH /channels/{channel_id}/messages/{message_id}`: a new content.
    Edit {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
    },
    /// `PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me`.
    React {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
        /// The emoji.
        emoji: String,
    },
    /// `GET /channels/{channel_id}/messages?limit=…[&before=…]`.
    Read {
        /// The channel.
        channel_id: u64,
        /// Only messages older than this id were asked for.
        before: Option<u64>,
        /// The page size asked for.
        limit: usize,
    },
}

impl OpKind {
    /// The channel the operation is about.
    pub fn channel_id(&self) -> u64 {
        match self {
            OpKind::Send { channel_id, .. }
            | OpKind::Read { channel_id, .. }
            | OpKind::Edit { channel_id, .. }
            | OpKind::React { channel_id, .. } => *channel_id,
        }
    }

    /// The kind's name, as reports count operations: `send`, `read`, `edit` or `react`.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Send { .. } => "send",
            OpKind::Read { .. } => "read",
            OpKind::Edit { .. } => "edit",
            OpKind::React { .. } => "react",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A send was acknowledged with this id.
    Sent {
        /// The id the server assigned.
        message_id: u64,
    },
    /// A read returned these ids, in the order returned (newest first).
    Read {
        /// The ids.
        message_ids: Vec<u64>,
    },
    /// The server answered with an error: the operation did not happen (or, for a 5xx after a
    /// store timeout, may have).
    Failed {
        /// HTTP status, or 0 if none came back.
        status: u16,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the client's deadline; the outcome is unknown.
    TimedOut,
    /// An edit or a reaction was answered with success.
    Done,
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (user id) that invoked it.
    pub client: u64,
    /// What it asked for.
    pub kind: OpKind,
    /// When it was invoked.
    pub invoked_ns: u64,
    /// When it completed (or was given up on).
    pub completed_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// A read the run makes to verify durability after the workload (the final full-history
    /// read), not workload traffic: availability leaves it out.
    #[serde(default)]
    pub verification: bool,
    /// For a send retried with the same nonce: when its first attempt was invoked. The
    /// attempts are one send to the checkers that reason about when a message was asked for
    /// (causality); each attempt is still an operation the server had to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_invoked_ns: Option<u64>,
}

impl Op {
    /// When the operation was first asked for: its first attempt's invocation.
    pub fn first_invoked_ns(&self) -> u64 {
        self.first_invoked_ns.unwrap_or(self.invoked_ns)
    }
}

/// One gateway session of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The client (user id).
    pub client: u64,
    /// The session id READY announced, if it came.
    pub session_id: Option<String>,
    /// When the connection was opened.
    pub opened_ns: u64,
    /// When READY arrived.
    pub ready_ns: Option<u64>,
    /// The channels GUILD_CREATE announced.
    pub channel_ids: Vec<u64>,
    /// When the session ended, if it did before the run ended.
    pub closed_ns: Option<u64>,
    /// The close code, if the server sent one.
    pub close_code: Option<u16>,
    /// The connection whose session this one asked to resume (op 6), if it did.
    #[serde(default)]
    pub resumes: Option<usize>,
    /// When RESUMED arrived: from then on this connection continues [`Session::resumes`].
    #[serde(default)]
    pub resumed_ns: Option<u64>,
    /// When the server answered Invalid Session (op 9), ending the session for good.
    #[serde(default)]
    pub invalidated_ns: Option<u64>,
    /// The client closed it on purpose (going offline), not a fault.
    #[serde(default)]
    pub closed_by_client: bool,
}

impl Session {
    /// Whether the session was usable (READY, or resumed) at `at_ns`, ignoring its close.
    pub fn live_since(&self) -> Option<u64> {
        self.ready_ns.or(self.resumed_ns)
    }
}

/// One dispatch a session received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Index of the session in [`History::sessions`].
    pub session: usize,
    /// The payload's `s`.
    pub s: u64,
    /// The payload's `t`.
    pub event: String,
    /// For message events: the channel.
    pub channel_id: Option<u64>,
    /// For message events: the message.
    pub message_id: Option<u64>,
    /// When it arrived.
    pub at_ns: u64,
    /// For message events: the author.
    #[serde(default)]
    pub author_id: Option<u64>,
    /// For message events: the nonce the sender attached, if any.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A fault as the nemesis applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFault {
    /// When.
    pub at_ns: u64,
    /// What, e.g. `crash ring-1` or `restart ring-1`.
    pub action: String,
}

/// Everything the clients saw in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Operations, in completion order.
    pub ops: Vec<Op>,
    /// Sessions, in opening order.
    pub sessions: Vec<Session>,
    /// Deliveries, in arrival order.
    pub deliveries: Vec<Delivery>,
    /// Faults, in application order.
    pub faults: Vec<AppliedFault>,
    /// When the last fault was healed (the quiet period began), if the run says.
    #[serde(default)]
    pub healed_ns: Option<u64>,
}

impl History {
    /// The first connection of the logical session connection `index` belongs to: follows
    /// [`Session::resumes`] back through every resume attempt the server did not refuse with
    /// Invalid Session. An attempt closed before RESUMED ends the logical session there (it
    /// is closed), unless a later attempt resumes from it.
    pub fn chain_root(&self, index: usize) -> usize {
        let mut at = index;
        // Each step goes to a lower index, so the walk ends.
        while let Some(session) = self.sessions.get(at) {
            match (session.resumes, session.invalidated_ns) {
                (Some(previous), None) if previous < at => at = previous,
                _ => break,
            }
        }
        at
    }

    /// The connections of each logical session, by root, in opening order.
    pub fn chains(&self) -> std::collections::BTreeMap<usize, Vec<usize>> {
        let mut chains: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for index in 0..self.sessions.len() {
            chains
                .entry(self.chain_root(index))
                .or_default()
                .push(index);
        }
        chains
    }
}
