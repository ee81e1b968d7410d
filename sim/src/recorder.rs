//! The run's recorder: the history the checkers read, and the trace whose hash names the run.
//!
//! Every record is appended to the history and, as one JSON line, to the trace, in the order
//! it happened. The trace's hash is a function of the seed only, which is what two runs with
//! one seed are compared by.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chat_reports::history::{AppliedFault, Delivery, History, Op, Outcome, Session};
use serde::Serialize;

#[derive(Default)]
struct State {
    history: History,
    trace: Vec<u8>,
    events: u64,
    /// Per client, the newest message id it has observed (as the causality check counts
    /// observations: dispatches, pages and its own acknowledged sends).
    newest_seen: BTreeMap<u64, u64>,
}

impl State {
    fn saw(&mut self, client: u64, message_id: u64) {
        let newest = self.newest_seen.entry(client).or_default();
        *newest = (*newest).max(message_id);
    }
}

/// A shared handle on the recorder.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    state: Arc<Mutex<State>>,
}

#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum TraceLine<'a> {
    Op(&'a Op),
    SessionOpened {
        index: usize,
        client: u64,
        resumes: Option<usize>,
        at_ns: u64,
    },
    SessionResumed {
        index: usize,
        at_ns: u64,
    },
    SessionInvalidated {
        index: usize,
        at_ns: u64,
    },
    Healed {
        at_ns: u64,
    },
    SessionReady {
        index: usize,
        session_id: &'a str,
        channel_ids: &'a [u64],
        at_ns: u64,
    },
    SessionClosed {
        index: usize,
        code: Option<u16>,
        by_client: bool,
        at_ns: u64,
    },
    Delivery(&'a Delivery),
    Fault(&'a AppliedFault),
}

impl Recorder {
    /// A recorder whose times count from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// ns since the start of the run.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn trace(state: &mut State, line: &TraceLine<'_>) {
        if serde_json::to_writer(&mut state.trace, line).is_ok() {
            state.trace.push(b'\n');
            state.events += 1;
        }
    }

    /// Records a completed operation.
    pub fn op(&self, op: Op) {
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::Op(&op));
        let newest = match &op.outcome {
            Outcome::Sent { message_id } => Some(*message_id),
            Outcome::Read { message_ids } => message_ids.iter().max().copied(),
            _ => None,
        };
        if let Some(message_id) = newest {
            state.saw(op.client, message_id);
        }
        state.history.ops.push(op);
    }

    /// The newest message id `client` has observed so far, if any: what its next send must
    /// be ordered after.
    pub fn newest_seen(&self, client: u64) -> Option<u64> {
        self.lock().newest_seen.get(&client).copied()
    }

    /// Records a new connection, which asks to resume connection `resumes` if given;
    /// returns its index.
    pub fn session_opened(&self, client: u64, resumes: Option<usize>) -> usize {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        let index = state.history.sessions.len();
        Self::trace(
            &mut state,
            &TraceLine::SessionOpened {
                index,
                client,
                resumes,
                at_ns,
            },
        );
        state.history.sessions.push(Session {
            client,
            session_id: None,
            opened_ns: at_ns,
            ready_ns: None,
            channel_ids: Vec::new(),
            closed_ns: None,
            close_code: None,
            resumes,
            resumed_ns: None,
            invalidated_ns: None,
            closed_by_client: false,
        });
        index
    }

    /// Records that connection `index` got RESUMED.
    pub fn session_resumed(&self, index: usize) {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::SessionResumed { index, at_ns });
        state.history.sessions[index].resumed_ns = Some(at_ns);
    }

    /// Records that connection `index` got Invalid Session (op 9).
    pub fn session_invalidated(&self, index: usize) {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::SessionInvalidated { index, at_ns });
        state.history.sessions[index].invalidated_ns = Some(at_ns);
    }

    /// Records that every fault is over and the cluster healed.
    pub fn healed(&self) {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::Healed { at_ns });
        state.history.healed_ns = Some(at_ns);
    }

    /// Records that session `index` got READY and then its guilds' channels.
    pub fn session_ready(&self, index: usize, session_id: String, channel_ids: Vec<u64>) {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        let line = TraceLine::SessionReady {
            index,
            session_id: &session_id,
            channel_ids: &channel_ids,
            at_ns,
        };
        Self::trace(&mut state, &line);
        let session = &mut state.history.sessions[index];
        session.session_id = Some(session_id);
        session.ready_ns = Some(at_ns);
        session.channel_ids = channel_ids;
    }

    /// Records that connection `index` ended, closed by the client (going offline) or not.
    pub fn session_closed(&self, index: usize, code: Option<u16>, by_client: bool) {
        let at_ns = self.now_ns();
        let mut state = self.lock();
        let line = TraceLine::SessionClosed {
            index,
            code,
            by_client,
            at_ns,
        };
        Self::trace(&mut state, &line);
        let session = &mut state.history.sessions[index];
        session.closed_ns = Some(at_ns);
        session.close_code = code;
        session.closed_by_client = by_client;
    }

    /// Records a dispatch received.
    pub fn delivery(&self, delivery: Delivery) {
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::Delivery(&delivery));
        let client = state
            .history
            .sessions
            .get(delivery.session)
            .map(|s| s.client);
        if let (Some(client), Some(message_id)) = (client, delivery.message_id) {
            state.saw(client, message_id);
        }
        state.history.deliveries.push(delivery);
    }

    /// Records a fault the nemesis applied.
    pub fn fault(&self, action: String) {
        let fault = AppliedFault {
            at_ns: self.now_ns(),
            action,
        };
        let mut state = self.lock();
        Self::trace(&mut state, &TraceLine::Fault(&fault));
        state.history.faults.push(fault);
    }

    /// The history, the trace and its event count so far.
    pub fn snapshot(&self) -> (History, Vec<u8>, u64) {
        let state = self.lock();
        (state.history.clone(), state.trace.clone(), state.events)
    }
}
