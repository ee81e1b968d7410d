//! What the clients saw: the history every checker reads.
//!
//! A history holds only what a client could observe: operations it invoked with their outcome,
//! gateway sessions with the payloads they received, and (from the nemesis) when faults were
//! applied. Times are simulated ns since the start of the run.

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
            OpKind::Send { channel_id, .. } | OpKind::Read { channel_id, .. } => *channel_id,
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
}
