//! Simulated users: each identifies on the gateway, heartbeats with jitter, sends messages
//! (Poisson, with bursts, or at the times a script gives) and reads history (recent pages and
//! paged reads) over REST, goes offline and comes back, reconnects with exponential backoff
//! and jitter, and resumes a dropped session; it records every operation and every dispatch.
//!
//! A script (a trace replay) also replies, edits and reacts. Its steps name trace messages by
//! index; the id each got when it was sent is shared between the users ([`ReplayIds`]), and a
//! step about a message waits for that id (up to [`REPLAY_WAIT_MS`]): a reply to a message
//! that was never acknowledged is sent as a plain message, an edit or reaction of one is not
//! made.
//!
//! Resume follows Discord's documented protocol: after a connection is lost without a close
//! code, or with one that allows it, the client opens a new connection, waits for Hello and
//! sends op 6 `{token, session_id, seq}` instead of Identify; the server replays the missed
//! dispatches in order and then sends RESUMED. Invalid Session (op 9) with `d: false`, or a
//! close before RESUMED (a server without Resume closes with 4003), falls back to Identify
//! after a short random wait. Going offline closes with 1000, which ends the session.
//!
//! The code is runtime-neutral (it uses `tokio` as the workspace names it and madsim's `rand`,
//! which is the `rand` crate outside the simulator), so it can drive a real cluster too. Not
//! modelled: `resume_gateway_url` pointing elsewhere (there is one gateway address), zlib
//! transport compression, sharding.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_reports::history::{Delivery, Op, OpKind, Outcome};
use chat_system::api::CAUSAL_AFTER_HEADER;
use chat_system::directory::User;
use chat_system::net::{http_request_with, runtime_instant, FlushIfDirty, HttpError};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use madsim::rand::{thread_rng, Rng};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::recorder::Recorder;
use crate::scenario::Scenario;

/// The page size of the final full-history read.
const FINAL_PAGE: usize = 100;
/// The page size of a recent-history read.
const RECENT_PAGE: usize = 50;
const BACKOFF_MS_MIN: u64 = 500;
/// How many times a request refused with 429 is tried again after its `retry_after`.
const RATE_LIMIT_RETRIES_MAX: usize = 3;
/// Reconnect backoff doubles from the minimum up to this cap (then ±50% jitter), so a client
/// is back within seconds of a gateway returning.
const BACKOFF_MS_MAX: u64 = 5_000;
/// A send's retry waits this long (doubling per attempt, then ±50% jitter).
const RETRY_BACKOFF_MS: u64 = 250;
/// Mean gap between the sends of a burst.
const BURST_GAP_MS_MEAN: u64 = 1_000;
/// How long opening a gateway connection (TCP and the WebSocket handshake) may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a new connection waits for Hello before it is given up as lost.
const HELLO_TIMEOUT_MS: u64 = 10_000;
/// After Invalid Session, Discord asks clients to wait 1 to 5 s before identifying.
const INVALID_WAIT_MS: (u64, u64) = (1_000, 5_000);
/// Close codes after which a session cannot be resumed (Discord's table; 4003 is how a
/// server without Resume answers op 6).
const NOT_RESUMABLE: [u16; 10] = [1000, 1001, 4003, 4004, 4007, 4009, 4010, 4011, 4012, 4013];

/// A step the script fixes: when (ms since the start), where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    /// When, in simulated ms since the start of the run.
    pub at_ms: u64,
    /// The channel.
    pub channel_id: u64,
    /// What to do.
    pub action: ScriptAction,
}

/// What a script step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptAction {
    /// Send a message of `length` characters.
    Send {
        /// The content's length in characters.
        length: usize,
        /// The trace message it replays, whose id the other steps wait for.
        trace_index: Option<usize>,
        /// The trace message it replies to.
        reply_to: Option<usize>,
    },
    /// Edit the trace message this user sent.
    Edit {
        /// The trace message.
        trace_index: usize,
        /// The new content's length in characters.
        length: usize,
    },
    /// React to a trace message.
    React {
        /// The trace message.
        trace_index: usize,
        /// A unicode emoji or `name:id`.
        emoji: String,
    },
}

/// The id each replayed trace message got (by trace index): `None` if its send failed.
pub type ReplayIds = Arc<std::sync::Mutex<BTreeMap<usize, Option<u64>>>>;

/// How long a step waits for the id of the trace message it is about.
pub const REPLAY_WAIT_MS: u64 = 10_000;
const REPLAY_POLL_MS: u64 = 10;

/// One simulated user.
#[derive(Clone)]
pub struct UserClient {
    /// The account.
    pub user: User,
    /// The channels of the user's guilds.
    pub channel_ids: Vec<u64>,
    /// The REST API.
    pub api: SocketAddr,
    /// The gateway's WebSocket address.
    pub gateway: SocketAddr,
    /// The workload's timings.
    pub scenario: Scenario,
    /// Steps at fixed times (a trace, an @everyone burst), besides the Poisson sends.
    pub script: Arc<Vec<ScriptStep>>,
    /// The ids replayed trace messages got, shared by every user.
    pub replayed: ReplayIds,
    /// Where everything is recorded.
    pub recorder: Recorder,
    /// The start of the run.
    pub start: Instant,
    /// Cleared while the user is offline: it then neither sends nor reads.
    pub online: Arc<AtomicBool>,
}

fn exponential_ms(mean_ms: u64) -> u64 {
    let u: f64 = thread_rng().gen_range(1e-9..1.0);
    (-(mean_ms as f64) * u.ln()) as u64
}

fn jitter(ms: u64) -> Duration {
    let factor: f64 = thread_rng().gen_range(0.5..1.5);
    Duration::from_millis((ms as f64 * factor) as u64)
}

/// A session the client may resume: its id, the last `s` seen, and the connection it was on.
#[derive(Debug, Clone)]
struct Resumable {
    session_id: String,
    seq: Option<u64>,
    connection: usize,
    channel_ids: Vec<u64>,
}

/// How a connection ended.
enum SessionEnd {
    /// The client went offline (close 1000): the session is over.
    Offline,
    /// Lost without a close code, by a zombie heartbeat, or with a resumable code.
    Dropped(Option<Resumable>),
    /// Invalid Session, or a close code that forbids resuming: identify afresh.
    Refused,
}

impl UserClient {
    fn at(&self, ms: u64) -> tokio::time::Instant {
        runtime_instant(self.start + Duration::from_millis(ms))
    }

    fn authorization(&self) -> String {
        format!("Bot {}", self.user.token)
    }

    fn workload_over(&self) -> bool {
        self.recorder.now_ns() >= self.scenario.workload_end_ms * 1_000_000
    }

    fn random_channel(&self) -> Option<u64> {
        if self.channel_ids.is_empty() {
            return None;
        }
        Some(self.channel_ids[thread_rng().gen_range(0..self.channel_ids.len())])
    }

    /// Runs the user until the run ends: a gateway session, a sender, a reader, the script,
    /// a final read.
    pub async fn run(self) {
        tokio::spawn(self.clone().gateway_loop());
        if self.scenario.workload.send_gap_ms_mean > 0 {
            tokio::spawn(self.clone().send_loop());
        }
        if self.scenario.workload.read_gap_ms_mean > 0 {
            tokio::spawn(self.clone().read_loop());
        }
        if !self.script.is_empty() {
            tokio::spawn(self.clone().script_loop());
        }
        tokio::time::sleep_until(self.at(self.scenario.final_read_ms)).await;
        for channel_id in self.channel_ids.clone() {
            self.read_all(channel_id).await;
        }
    }

    async fn send_loop(self) {
        let workload = self.scenario.workload.clone();
        let mut sent = 0u64;
        loop {
            let gap = exponential_ms(workload.send_gap_ms_mean);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            if self.workload_over() {
                return;
            }
            let Some(channel_id) = self.random_channel() else {
                return;
            };
            if !self.online.load(Ordering::Relaxed) {
                continue;
            }

            // A send, and perhaps a burst of follow-ups in the same channel.
            let burst = if thread_rng().gen_bool(workload.burst_share) {
                thread_rng().gen_range(1..=workload.burst_size_max.max(1))
            } else {
                0
            };
            for index in 0..=burst {
                if index > 0 {
                    let gap = exponential_ms(BURST_GAP_MS_MEAN);
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                sent += 1;
                let nonce = format!("{}-{sent}", self.user.id % 1_000_000_000);
                self.send(channel_id, nonce, 20, None).await;
            }
        }
    }

    /// Runs the script's steps at their times, one after another (a user does one thing at
    /// a time, so a step due while the last one runs starts late); none starts after the
    /// final read has begun.
    /// TODO(trace-overlap): a trace replayed far faster than its sends are answered falls
    /// behind for its busiest authors; running steps side by side overloaded the cluster
    /// (most sends failed and replicas disagreed after repair at a million-fold speed-up).
    async fn script_loop(self) {
        for (index, step) in self.script.iter().enumerate() {
            tokio::time::sleep_until(self.at(step.at_ms)).await;
            if self.recorder.now_ns() >= self.scenario.final_read_ms * 1_000_000 {
                return;
            }
            self.clone().run_step(index, step.clone()).await;
        }
    }

    async fn run_step(self, index: usize, step: ScriptStep) {
        let channel_id = step.channel_id;
        match step.action {
            ScriptAction::Send {
                length,
                trace_index,
                reply_to,
            } => {
                let reference = match reply_to {
                    Some(target) => self.replayed_id(target).await,
                    None => None,
                };
                let nonce = format!("t{}-{index}", self.user.id % 1_000_000_000);
                let id = self.send(channel_id, nonce, length, reference).await;
                if let Some(trace_index) = trace_index {
                    let mut replayed = self.replayed.lock().unwrap_or_else(|p| p.into_inner());
                    replayed.insert(trace_index, id);
                }
            }
            ScriptAction::Edit {
                trace_index,
                length,
            } => {
                if let Some(message_id) = self.replayed_id(trace_index).await {
                    self.edit(channel_id, message_id, length).await;
                }
            }
            ScriptAction::React { trace_index, emoji } => {
                if let Some(message_id) = self.replayed_id(trace_index).await {
                    self.react(channel_id, message_id, &emoji).await;
                }
            }
        }
    }

    /// The id trace message `trace_index` got, waiting for its send to be answered.
    async fn replayed_id(&self, trace_index: usize) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(REPLAY_WAIT_MS);
        loop {
            let known = {
                let replayed = self.replayed.lock().unwrap_or_else(|p| p.into_inner());
                replayed.get(&trace_index).copied()
            };
            if let Some(id) = known {
                return id;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(REPLAY_POLL_MS)).await;
        }
    }

    /// Replaces a message's content, recording the edit.
    async fn edit(&self, channel_id: u64, message_id: u64, length: usize) {
        let invoked_ns = self.recorder.now_ns();
        let body = json!({"content": "y".repeat(length.clamp(1, 2000))});
        let path = format!("/api/v10/channels/{channel_id}/messages/{message_id}");
        let answer = self
            .request(Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await;
        let kind = OpKind::Edit {
            channel_id,
            message_id,
        };
        self.record_done(kind, invoked_ns, answer.map(|_| ()));
    }

    /// Adds this user's reaction with `emoji`, recording it.
    async fn react(&self, channel_id: u64, message_id: u64, emoji: &str) {
        let invoked_ns = self.recorder.now_ns();
        let path = format!(
            "/api/v10/channels/{channel_id}/messages/{message_id}/reactions/{}/@me",
            percent_encoded(emoji)
        );
        let answer = self.request(Method::PUT, path, None).await;
        let kind = OpKind::React {
            channel_id,
            message_id,
            emoji: emoji.to_string(),
        };
        self.record_done(kind, invoked_ns, answer.map(|_| ()));
    }

    fn record_done(&self, kind: OpKind, invoked_ns: u64, answer: Result<(), Outcome>) {
        self.recorder.op(Op {
            client: self.user.id,
            kind,
            invoked_ns,
            completed_ns: self.recorder.now_ns(),
            outcome: answer.map_or_else(|outcome| outcome, |()| Outcome::Done),
            verification: false,
            first_invoked_ns: None,
        });
    }

    async fn read_loop(self) {
        let workload = self.scenario.workload.clone();
        loop {
            let gap = exponential_ms(workload.read_gap_ms_mean);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            if self.workload_over() {
                return;
            }
            let Some(channel_id) = self.random_channel() else {
                return;
            };
            if !self.online.load(Ordering::Relaxed) {
                continue;
            }
            let page = self.read(channel_id, None, RECENT_PAGE, false).await;
            // A paged read goes back from the oldest message of a full first page.
            let paged = thread_rng().gen_bool(workload.paged_read_share);
            if let Some(ids) = page.filter(|ids| paged && ids.len() == RECENT_PAGE) {
                let before = ids.last().copied();
                self.read(channel_id, before, RECENT_PAGE, false).await;
            }
        }
    }

    async fn request(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Value, Outcome> {
        self.request_with(method, path, body, None).await
    }

    /// [`Self::request`], telling the API the newest message id this user has seen
    /// (`X-Causal-After`) if `after` is given.
    async fn request_with(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        after: Option<u64>,
    ) -> Result<Value, Outcome> {
        let timeout = Duration::from_millis(self.scenario.request_timeout_ms);
        let auth = self.authorization();
        let after = after.map(|id| id.to_string());
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(after) = &after {
            headers.push((CAUSAL_AFTER_HEADER, after.as_str()));
        }

        // A 429 is the server pacing this user: wait its `retry_after`, as Discord's client
        // libraries do, and try again (a few times, within the request's deadline).
        let mut answer = http_request_with(
            self.api,
            method.clone(),
            &path,
            &headers,
            body.clone(),
            timeout,
        )
        .await;
        for _ in 0..RATE_LIMIT_RETRIES_MAX {
            let Ok((StatusCode::TOO_MANY_REQUESTS, bytes)) = &answer else {
                break;
            };
            let limited: Value = serde_json::from_slice(bytes).unwrap_or_default();
            let retry_after_s = limited["retry_after"]
                .as_f64()
                .unwrap_or(1.0)
                .clamp(0.0, 60.0);
            tokio::time::sleep(Duration::from_secs_f64(retry_after_s)).await;
            answer = http_request_with(
                self.api,
                method.clone(),
                &path,
                &headers,
                body.clone(),
                timeout,
            )
            .await;
        }
        match answer {
            Ok((StatusCode::NO_CONTENT, _)) => Ok(Value::Null),
            Ok((status, bytes)) if status.is_success() => {
                serde_json::from_slice(&bytes).map_err(|e| Outcome::Failed {
                    status: status.as_u16(),
                    reason: e.to_string(),
                })
            }
            Ok((status, bytes)) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let reason = body["message"].as_str().unwrap_or("no message").to_string();
                Err(Outcome::Failed {
                    status: status.as_u16(),
                    reason,
                })
            }
            Err(HttpError::Timeout { .. }) => Err(Outcome::TimedOut),
            Err(error) => Err(Outcome::Failed {
                status: 0,
                reason: error.to_string(),
            }),
        }
    }

    /// Sends one message, retrying a timeout or 5xx with the same nonce and
    /// `enforce_nonce` as many times as the workload allows, after a jittered backoff; the
    /// guild answers a retry of a send it already made with that message. Every attempt is
    /// recorded, retries with their first attempt's invocation time. A reply names the
    /// message it answers. Returns the acknowledged id.
    async fn send(
        &self,
        channel_id: u64,
        nonce: String,
        length: usize,
        reply_to: Option<u64>,
    ) -> Option<u64> {
        let retries = self.scenario.workload.send_retries;
        let mut first_invoked_ns = None;
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(jitter(RETRY_BACKOFF_MS << attempt.min(6))).await;
            }
            let invoked_ns = self.recorder.now_ns();
            let mut body = json!({
                "content": "x".repeat(length.clamp(1, 2000)),
                "nonce": nonce,
            });
            if attempt > 0 {
                body["enforce_nonce"] = json!(true);
            }
            if let Some(reply_to) = reply_to {
                body["message_reference"] = json!({"message_id": reply_to.to_string()});
            }
            let path = format!("/api/v10/channels/{channel_id}/messages");
            let after = self.recorder.newest_seen(self.user.id);
            let body = Some(body.to_string().into_bytes());
            let answer = self.request_with(Method::POST, path, body, after).await;
            let outcome = match answer {
                Ok(message) => match message["id"].as_str().and_then(|id| id.parse().ok()) {
                    Some(message_id) => Outcome::Sent { message_id },
                    None => Outcome::Failed {
                        status: 200,
                        reason: "answer has no id".into(),
                    },
                },
                Err(outcome) => outcome,
            };
            let retry = match &outcome {
                Outcome::TimedOut => true,
                Outcome::Failed { status, .. } => *status >= 500 || *status == 0,
                _ => false,
            };
            self.recorder.op(Op {
                client: self.user.id,
                kind: OpKind::Send {
                    channel_id,
                    nonce: nonce.clone(),
                    reply_to,
                },
                invoked_ns,
                completed_ns: self.recorder.now_ns(),
                outcome: outcome.clone(),
                verification: false,
                first_invoked_ns,
            });
            if let Outcome::Sent { message_id } = outcome {
                return Some(message_id);
            }
            if !retry || self.workload_over() {
                return None;
            }
            first_invoked_ns.get_or_insert(invoked_ns);
        }
        None
    }

    /// Reads one page; returns its ids if it succeeded. A `verification` read is the
    /// final full-history one.
    async fn read(
        &self,
        channel_id: u64,
        before: Option<u64>,
        limit: usize,
        verification: bool,
    ) -> Option<Vec<u64>> {
        let invoked_ns = self.recorder.now_ns();
        let mut path = format!("/api/v10/channels/{channel_id}/messages?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let outcome = match self.request(Method::GET, path, None).await {
            Ok(Value::Array(messages)) => {
                let ids = messages
                    .iter()
                    .filter_map(|m| m["id"].as_str()?.parse().ok());
                Outcome::Read {
                    message_ids: ids.collect(),
                }
            }
            Ok(_) => Outcome::Failed {
                status: 200,
                reason: "answer is not an array".into(),
            },
            Err(outcome) => outcome,
        };
        let ids = match &outcome {
            Outcome::Read { message_ids } => Some(message_ids.clone()),
            _ => None,
        };
        self.recorder.op(Op {
            client: self.user.id,
            kind: OpKind::Read {
                channel_id,
                before,
                limit,
            },
            invoked_ns,
            completed_ns: self.recorder.now_ns(),
            outcome,
            verification,
            first_invoked_ns: None,
        });
        ids
    }

    /// Pages through a channel's whole history, newest first.
    async fn read_all(&self, channel_id: u64) {
        let mut before = None;
        while let Some(ids) = self.read(channel_id, before, FINAL_PAGE, true).await {
            match ids.last() {
                Some(&oldest) if ids.len() == FINAL_PAGE => before = Some(oldest),
                _ => return,
            }
        }
    }

    /// When this user next goes offline, if it does before faults end (everyone is back
    /// online for the quiet period), and for how long.
    fn next_offline(&self) -> Option<(tokio::time::Instant, Duration)> {
        let workload = &self.scenario.workload;
        if workload.offline_gap_ms_mean == 0 {
            return None;
        }
        let now_ms = self.recorder.now_ns() / 1_000_000;
        let at_ms = now_ms + exponential_ms(workload.offline_gap_ms_mean);
        let for_ms = exponential_ms(workload.offline_ms_mean).max(1);
        (at_ms + for_ms < self.scenario.faults_end_ms())
            .then(|| (self.at(at_ms), Duration::from_millis(for_ms)))
    }

    async fn gateway_loop(self) {
        let mut failures: u32 = 0;
        let mut resumable: Option<Resumable> = None;
        let mut offline = self.next_offline();
        loop {
            // 1. One connection: a new session, or a resume of the last one. An offline
            //    period that came due while the client had no connection is skipped, so no
            //    one goes offline later than planned (into the quiet period).
            if offline.is_some_and(|(at, _)| at <= tokio::time::Instant::now()) {
                offline = self.next_offline();
            }
            let end = self
                .connection(resumable.take(), offline.map(|(at, _)| at))
                .await;

            // 2. What next: back after being offline, resume, identify afresh, or back off.
            let wait = match end {
                Ok(SessionEnd::Offline) => {
                    let away = offline.map_or(Duration::ZERO, |(_, away)| away);
                    self.online.store(false, Ordering::Relaxed);
                    tokio::time::sleep(away).await;
                    self.online.store(true, Ordering::Relaxed);
                    offline = self.next_offline();
                    failures = 0;
                    continue;
                }
                Ok(SessionEnd::Refused) => {
                    failures = 0;
                    let (low, high) = INVALID_WAIT_MS;
                    Duration::from_millis(thread_rng().gen_range(low..=high))
                }
                Ok(SessionEnd::Dropped(next)) => {
                    // A session that was up resumes at once (with jitter); the backoff
                    // applies to connections that keep failing.
                    let was_up = next.is_some();
                    resumable = next;
                    failures = if was_up {
                        0
                    } else {
                        failures.saturating_add(1)
                    };
                    self.backoff(failures)
                }
                Err(reason) => {
                    tracing::debug!(user = self.user.id, reason, "gateway_connect_failed");
                    failures = failures.saturating_add(1);
                    self.backoff(failures)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let backoff = BACKOFF_MS_MIN
            .saturating_mul(1 << failures.min(6))
            .min(BACKOFF_MS_MAX);
        jitter(backoff)
    }

    /// One gateway connection, from connect to close.
    async fn connection(
        &self,
        resume: Option<Resumable>,
        offline_at: Option<tokio::time::Instant>,
    ) -> Result<SessionEnd, String> {
        // A crashed or partitioned gateway stalls a connect rather than refusing it, so the
        // connect and the WebSocket handshake get a deadline of their own.
        let open = async {
            let stream = TcpStream::connect(self.gateway)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("ws://{}/gateway", self.gateway);
            tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
                .await
                .map_err(|e| e.to_string())
        };
        let (mut ws, _) = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), open)
            .await
            .map_err(|_| format!("no gateway connection within {CONNECT_TIMEOUT_MS} ms"))??;
        let index = self
            .recorder
            .session_opened(self.user.id, resume.as_ref().map(|r| r.connection));
        let mut state = SessionState::new(self.scenario.heartbeat_interval_ms, resume);
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let end = self
            .drive(&mut ws, index, &mut state, offline_at.unwrap_or(far))
            .await;
        let (code, by_client) = match &end {
            Ended::Closed(code) => (*code, false),
            Ended::Offline => (Some(1000), true),
            Ended::Invalid | Ended::Lost => (None, false),
        };
        self.recorder.session_closed(index, code, by_client);

        // What the session can do next.
        Ok(match end {
            Ended::Offline => SessionEnd::Offline,
            Ended::Invalid => SessionEnd::Refused,
            Ended::Closed(Some(code)) if NOT_RESUMABLE.contains(&code) => SessionEnd::Refused,
            Ended::Closed(_) | Ended::Lost => SessionEnd::Dropped(state.resumable(index)),
        })
    }

    /// Runs an open connection until it ends.
    async fn drive<S>(
        &self,
        ws: &mut S,
        index: usize,
        state: &mut SessionState,
        offline_at: tokio::time::Instant,
    ) -> Ended
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + futures_util::Sink<Message>
            + Unpin,
    {
        loop {
            // 1. The next payload, the heartbeat timer, or going offline.
            let message = tokio::select! {
                biased;
                message = ws.next() => message,
                () = tokio::time::sleep_until(state.next_heartbeat) => {
                    // No ACK since the last heartbeat: a zombied connection, so reconnect.
                    let Some(beat) = state.heartbeat_due() else {
                        return Ended::Lost;
                    };
                    if ws.send(Message::Text(beat.to_string().into())).await.is_err() {
                        return Ended::Lost;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(offline_at) => {
                    let frame = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "going offline".into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    return Ended::Offline;
                }
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Close(frame))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Lost,
            };

            // 2. What it means, and what to answer.
            let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                return Ended::Lost;
            };
            let answer = match payload["op"].as_u64() {
                Some(10) => Some(self.on_hello(state, &payload)),
                Some(11) => {
                    state.awaiting_ack = false;
                    None
                }
                Some(1) => Some(json!({"op": 1, "d": state.last_s})),
                Some(0) => {
                    self.on_dispatch(state, index, &payload);
                    None
                }
                Some(9) => {
                    self.recorder.session_invalidated(index);
                    // `d: true` would allow a resume; the next connection tries one then.
                    if payload["d"].as_bool() == Some(true) {
                        return Ended::Lost;
                    }
                    state.ready = None;
                    state.resume = None;
                    return Ended::Invalid;
                }
                Some(7) => return Ended::Lost,
                _ => return Ended::Lost,
            };
            if let Some(answer) = answer {
                if ws
                    .send(Message::Text(answer.to_string().into()))
                    .await
                    .is_err()
                {
                    return Ended::Lost;
                }
            }
        }
    }

    /// Hello: schedule the first heartbeat at a random point of the interval; answer Resume
    /// for a session to resume, Identify otherwise.
    fn on_hello(&self, state: &mut SessionState, payload: &Value) -> Value {
        let announced_ms = payload["d"]["heartbeat_interval"].as_u64();
        state.interval_ms = announced_ms.unwrap_or(state.interval_ms).max(1);
        let first_ms = thread_rng().gen_range(0..state.interval_ms);
        state.next_heartbeat = tokio::time::Instant::now() + Duration::from_millis(first_ms);
        state.awaiting_ack = false;
        if let Some(resume) = &state.resume {
            return json!({"op": 6, "d": {
                "token": self.user.token,
                "session_id": resume.session_id,
                "seq": resume.seq,
            }});
        }
        json!({"op": 2, "d": {
            "token": self.user.token,
            // GUILDS, GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, MESSAGE_CONTENT.
            "intents": 1 | 512 | 1024 | 32768,
            "properties": {"os": "sim", "browser": "chatsim", "device": "chatsim"},
        }})
    }

    /// A dispatch: record it; READY and the GUILD_CREATEs make the session ready; RESUMED
    /// makes a resumed one live again.
    fn on_dispatch(&self, state: &mut SessionState, index: usize, payload: &Value) {
        let s = payload["s"].as_u64().unwrap_or(0);
        state.last_s = Some(s);
        // A replayed dispatch moves a pending resume forward, so a resume retried after this
        // connection drops asks only for what came after it.
        if let Some(resume) = &mut state.resume {
            resume.seq = Some(s);
            resume.connection = index;
        }
        let event = payload["t"].as_str().unwrap_or_default().to_string();
        let data = &payload["d"];
        let id = |value: &Value| value.as_str().and_then(|v| v.parse::<u64>().ok());
        match event.as_str() {
            "READY" => {
                let session_id = data["session_id"].as_str().unwrap_or_default();
                let guild_count = data["guilds"].as_array().map_or(0, Vec::len);
                state.ready = Some((session_id.to_string(), guild_count));
                state.resume = None;
            }
            "GUILD_CREATE" => {
                state.guilds_seen += 1;
                let listed = data["channels"].as_array().cloned().unwrap_or_default();
                state
                    .channel_ids
                    .extend(listed.iter().filter_map(|c| id(&c["id"])));
            }
            "RESUMED" => {
                if let Some(resume) = state.resume.take() {
                    state.ready = Some((resume.session_id, 0));
                    state.channel_ids = resume.channel_ids;
                    state.announced = true;
                    self.recorder.session_resumed(index);
                }
            }
            _ => {}
        }
        let is_message = event.starts_with("MESSAGE_");
        let nonce = match &data["nonce"] {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        };
        self.recorder.delivery(Delivery {
            session: index,
            s,
            channel_id: if is_message {
                id(&data["channel_id"])
            } else {
                None
            },
            message_id: if is_message { id(&data["id"]) } else { None },
            event,
            at_ns: self.recorder.now_ns(),
            author_id: if is_message {
                id(&data["author"]["id"])
            } else {
                None
            },
            nonce: if is_message { nonce } else { None },
        });

        // Ready once every guild READY listed has arrived.
        if let Some((session_id, guild_count)) = &state.ready {
            if !state.announced && state.guilds_seen == *guild_count {
                let channels = state.channel_ids.clone();
                self.recorder
                    .session_ready(index, session_id.clone(), channels);
                state.announced = true;
            }
        }
    }
}

/// `text` with every byte but RFC 3986's unreserved ones percent-encoded, for a URL path.
fn percent_encoded(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How a connection's drive ended.
enum Ended {
    /// The server closed it, with this code if it gave one.
    Closed(Option<u16>),
    /// The client closed it to go offline.
    Offline,
    /// Invalid Session, not resumable.
    Invalid,
    /// The connection was lost, zombied, or asked to reconnect.
    Lost,
}

/// What a client tracks about its open connection.
struct SessionState {
    interval_ms: u64,
    next_heartbeat: tokio::time::Instant,
    awaiting_ack: bool,
    last_s: Option<u64>,
    /// The session id and guild count READY announced (or the resumed session's id).
    ready: Option<(String, usize)>,
    channel_ids: Vec<u64>,
    guilds_seen: usize,
    announced: bool,
    /// The session this connection is resuming, until RESUMED arrives.
    resume: Option<Resumable>,
}

impl SessionState {
    fn new(interval_ms: u64, resume: Option<Resumable>) -> Self {
        Self {
            interval_ms,
            // Until Hello, the heartbeat timer is Hello's deadline: "awaiting" an ACK, it
            // ends the connection as lost when it fires.
            next_heartbeat: tokio::time::Instant::now() + Duration::from_millis(HELLO_TIMEOUT_MS),
            awaiting_ack: true,
            last_s: resume.as_ref().and_then(|r| r.seq),
            ready: None,
            channel_ids: Vec::new(),
            guilds_seen: 0,
            announced: false,
            resume,
        }
    }

    /// The heartbeat to send now, or `None` if the last one was never acknowledged.
    fn heartbeat_due(&mut self) -> Option<Value> {
        if self.awaiting_ack {
            return None;
        }
        self.awaiting_ack = true;
        self.next_heartbeat = tokio::time::Instant::now() + Duration::from_millis(self.interval_ms);
        Some(json!({"op": 1, "d": self.last_s}))
    }

    /// The session to resume after this connection (`index`) ends: the one it was live in,
    /// or, if a resume was still pending, that one again.
    fn resumable(&self, index: usize) -> Option<Resumable> {
        if let Some(pending) = &self.resume {
            return Some(pending.clone());
        }
        let (session_id, _) = self.ready.as_ref().filter(|_| self.announced)?;
        Some(Resumable {
            session_id: session_id.clone(),
            seq: self.last_s,
            connection: index,
            channel_ids: self.channel_ids.clone(),
        })
    }
}
