//! Simulated users: each identifies on the gateway, heartbeats with jitter, sends messages and
//! reads history over REST, reconnects with exponential backoff and jitter, and records every
//! operation and every dispatch in the run's history.
//!
//! The code is runtime-neutral (it uses `tokio` as the workspace names it and madsim's `rand`,
//! which is the `rand` crate outside the simulator), so it can drive a real cluster too.
//!
//! TODO(workload-resume): a dropped session identifies again; Resume comes with the gateway's
//! replay buffer. TODO(workload-shape): heavy-tailed guilds, bursts, churn, trace replay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_reports::history::{Delivery, Op, OpKind, Outcome};
use chat_system::directory::User;
use chat_system::net::{http_request, runtime_instant, FlushIfDirty, HttpError};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use madsim::rand::{thread_rng, Rng};
use serde_json::{json, Value};
use tokio::net::TcpStream;
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
    /// Where everything is recorded.
    pub recorder: Recorder,
    /// The start of the run.
    pub start: Instant,
}

fn exponential_ms(mean_ms: u64) -> u64 {
    let u: f64 = thread_rng().gen_range(1e-9..1.0);
    (-(mean_ms as f64) * u.ln()) as u64
}

fn jitter(ms: u64) -> Duration {
    let factor: f64 = thread_rng().gen_range(0.5..1.5);
    Duration::from_millis((ms as f64 * factor) as u64)
}

impl UserClient {
    fn at(&self, ms: u64) -> tokio::time::Instant {
        runtime_instant(self.start + Duration::from_millis(ms))
    }

    fn authorization(&self) -> String {
        format!("Bot {}", self.user.token)
    }

    /// Runs the user until the run ends: a gateway session, a sender, a reader, a final read.
    pub async fn run(self) {
        tokio::spawn(self.clone().gateway_loop());
        tokio::spawn(self.clone().send_loop());
        tokio::spawn(self.clone().read_loop());
        tokio::time::sleep_until(self.at(self.scenario.final_read_ms)).await;
        for channel_id in self.channel_ids.clone() {
            self.read_all(channel_id).await;
        }
    }

    async fn send_loop(self) {
        let mut sent = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(exponential_ms(
                self.scenario.send_gap_ms_mean,
            )))
            .await;
            if self.recorder.now_ns() >= self.scenario.workload_end_ms * 1_000_000 {
                return;
            }
            sent += 1;
            let channel_id = self.channel_ids[thread_rng().gen_range(0..self.channel_ids.len())];
            let nonce = format!("{}-{sent}", self.user.id % 1_000_000_000);
            self.send(channel_id, nonce).await;
        }
    }

    async fn read_loop(self) {
        loop {
            tokio::time::sleep(Duration::from_millis(exponential_ms(
                self.scenario.read_gap_ms_mean,
            )))
            .await;
            if self.recorder.now_ns() >= self.scenario.workload_end_ms * 1_000_000 {
                return;
            }
            let channel_id = self.channel_ids[thread_rng().gen_range(0..self.channel_ids.len())];
            self.read(channel_id, None, RECENT_PAGE).await;
        }
    }

    async fn request(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
    ) -> Result<Value, Outcome> {
        let timeout = Duration::from_millis(self.scenario.request_timeout_ms);
        let auth = self.authorization();

        // A 429 is the server pacing this user: wait its `retry_after`, as Discord's client
        // libraries do, and try again (a few times, within the request's deadline).
        let mut answer = http_request(
            self.api,
            method.clone(),
            &path,
            Some(&auth),
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
            answer = http_request(
                self.api,
                method.clone(),
                &path,
                Some(&auth),
                body.clone(),
                timeout,
            )
            .await;
        }
        match answer {
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

    async fn send(&self, channel_id: u64, nonce: String) {
        let invoked_ns = self.recorder.now_ns();
        let body = json!({"content": format!("hello from {}", self.user.username), "nonce": nonce});
        let path = format!("/api/v10/channels/{channel_id}/messages");
        let answer = self
            .request(Method::POST, path, Some(body.to_string().into_bytes()))
            .await;
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
        self.recorder.op(Op {
            client: self.user.id,
            kind: OpKind::Send { channel_id, nonce },
            invoked_ns,
            completed_ns: self.recorder.now_ns(),
            outcome,
        });
    }

    /// Reads one page; returns its ids if it succeeded.
    async fn read(&self, channel_id: u64, before: Option<u64>, limit: usize) -> Option<Vec<u64>> {
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
        });
        ids
    }

    /// Pages through a channel's whole history, newest first.
    async fn read_all(&self, channel_id: u64) {
        let mut before = None;
        while let Some(ids) = self.read(channel_id, before, FINAL_PAGE).await {
            match ids.last() {
                Some(&oldest) if ids.len() == FINAL_PAGE => before = Some(oldest),
                _ => return,
            }
        }
    }

    async fn gateway_loop(self) {
        let mut failures: u32 = 0;
        loop {
            match self.session().await {
                Ok(()) => failures = 0,
                Err(reason) => {
                    tracing::debug!(user = self.user.id, reason, "gateway_session_failed");
                    failures = failures.saturating_add(1);
                }
            }
            let backoff = BACKOFF_MS_MIN
                .saturating_mul(1 << failures.min(6))
                .min(BACKOFF_MS_MAX);
            tokio::time::sleep(jitter(backoff)).await;
        }
    }

    /// One gateway session, from connect to close.
    async fn session(&self) -> Result<(), String> {
        let stream = TcpStream::connect(self.gateway)
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("ws://{}/gateway", self.gateway);
        let (mut ws, _) = tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let index = self.recorder.session_opened(self.user.id);
        let code = self.drive(&mut ws, index).await;
        self.recorder.session_closed(index, code);
        Ok(())
    }

    /// Runs an open session; returns the server's close code, if it sent one.
    async fn drive<S>(&self, ws: &mut S, index: usize) -> Option<u16>
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + futures_util::Sink<Message>
            + Unpin,
    {
        let mut state = SessionState::new(self.scenario.heartbeat_interval_ms);
        loop {
            // 1. The next payload, or the heartbeat timer.
            let message = tokio::select! {
                biased;
                message = ws.next() => message,
                () = tokio::time::sleep_until(state.next_heartbeat) => {
                    // No ACK since the last heartbeat: a zombied connection, so reconnect.
                    let beat = state.heartbeat_due()?;
                    ws.send(Message::Text(beat.to_string().into())).await.ok()?;
                    continue;
                }
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            };

            // 2. What it means, and what to answer.
            let payload: Value = serde_json::from_str(&text).ok()?;
            let answer = match payload["op"].as_u64() {
                Some(10) => Some(self.on_hello(&mut state, &payload)),
                Some(11) => {
                    state.awaiting_ack = false;
                    None
                }
                Some(1) => Some(json!({"op": 1, "d": state.last_s})),
                Some(0) => {
                    self.on_dispatch(&mut state, index, &payload);
                    None
                }
                _ => return None,
            };
            if let Some(answer) = answer {
                ws.send(Message::Text(answer.to_string().into()))
                    .await
                    .ok()?;
            }
        }
    }

    /// Hello: schedule the first heartbeat at a random point of the interval; answer Identify.
    fn on_hello(&self, state: &mut SessionState, payload: &Value) -> Value {
        let announced_ms = payload["d"]["heartbeat_interval"].as_u64();
        state.interval_ms = announced_ms.unwrap_or(state.interval_ms).max(1);
        let first_ms = thread_rng().gen_range(0..state.interval_ms);
        state.next_heartbeat = tokio::time::Instant::now() + Duration::from_millis(first_ms);
        json!({"op": 2, "d": {
            "token": self.user.token,
            "intents": 513 | 32768,
            "properties": {"os": "sim", "browser": "chatsim", "device": "chatsim"},
        }})
    }

    /// A dispatch: record it; READY and the GUILD_CREATEs make the session ready.
    fn on_dispatch(&self, state: &mut SessionState, index: usize, payload: &Value) {
        let s = payload["s"].as_u64().unwrap_or(0);
        state.last_s = Some(s);
        let event = payload["t"].as_str().unwrap_or_default().to_string();
        let data = &payload["d"];
        let id = |field: &str| data[field].as_str().and_then(|v| v.parse::<u64>().ok());
        match event.as_str() {
            "READY" => {
                let session_id = data["session_id"].as_str().unwrap_or_default();
                let guild_count = data["guilds"].as_array().map_or(0, Vec::len);
                state.ready = Some((session_id.to_string(), guild_count));
            }
            "GUILD_CREATE" => {
                state.guilds_seen += 1;
                let listed = data["channels"].as_array().cloned().unwrap_or_default();
                let ids = listed
                    .iter()
                    .filter_map(|c| c["id"].as_str()?.parse::<u64>().ok());
                state.channel_ids.extend(ids);
            }
            _ => {}
        }
        let is_message = event.starts_with("MESSAGE_");
        self.recorder.delivery(Delivery {
            session: index,
            s,
            channel_id: if is_message { id("channel_id") } else { None },
            message_id: if is_message { id("id") } else { None },
            event,
            at_ns: self.recorder.now_ns(),
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

/// What a client tracks about its open session.
struct SessionState {
    interval_ms: u64,
    next_heartbeat: tokio::time::Instant,
    awaiting_ack: bool,
    last_s: Option<u64>,
    /// The session id and guild count READY announced.
    ready: Option<(String, usize)>,
    channel_ids: Vec<u64>,
    guilds_seen: usize,
    announced: bool,
}

impl SessionState {
    fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            // Until Hello says otherwise, no heartbeat is due.
            next_heartbeat: tokio::time::Instant::now() + Duration::from_secs(3600),
            awaiting_ack: false,
            last_s: None,
            ready: None,
            channel_ids: Vec::new(),
            guilds_seen: 0,
            announced: false,
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
}
