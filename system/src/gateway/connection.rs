//! One WebSocket connection of the gateway: Hello, then Identify or Resume, then dispatches,
//! heartbeats and the zombie deadline until the connection ends.
//!
//! The connection owns the socket and nothing else: the session it serves lives in the hub,
//! which queues its dispatches and may take the connection off it (slow consumer, restarted
//! guild, drain, a resume elsewhere). When the connection ends with a code that allows a
//! resume, the session stays in the hub for the resume window; a client's own close with 1000
//! or 1001 ends the session, as Discord documents. Guarantees: every client payload counts
//! against the rate limit; no payload is read before Hello is sent; dispatches go out in `s`
//! order. Not modelled: compression.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::hub::{Attached, Frame, Kick, NewSession, ResumeRefused};
use super::protocol::{self, close, control, intents, op, Close, Command, Identify};
use super::Gateway;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Dispatches written before one flush.
const SEND_BATCH_MAX: usize = 64;

/// The client payloads of the last window.
struct RateWindow {
    stamps: VecDeque<Instant>,
    max: usize,
    window: Duration,
}

impl RateWindow {
    /// Counts a payload at `now`; false when it is one too many.
    fn admit(&mut self, now: Instant) -> bool {
        while self
            .stamps
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.window)
        {
            self.stamps.pop_front();
        }
        if self.stamps.len() >= self.max {
            return false;
        }
        self.stamps.push_back(now);
        true
    }
}

struct Conn {
    gateway: Arc<Gateway>,
    ws: Ws,
    version: u64,
    rate: RateWindow,
    /// A heartbeat must arrive before this.
    deadline: Instant,
    timeout: Duration,
}

/// How serving an attached session ended.
enum Served {
    /// The connection ends.
    Closed(Close),
    /// The session was invalidated; the connection may identify again.
    Invalidated,
}

/// Runs one connection to its end.
pub(super) async fn run(gateway: Arc<Gateway>, ws: Ws, version: Result<u64, Close>) {
    let interval_ms = gateway.config.heartbeat_interval_ms;
    let timeout = Duration::from_millis(interval_ms + interval_ms / 2);
    let rate = RateWindow {
        stamps: VecDeque::new(),
        max: gateway.limits.client_payloads_max,
        window: Duration::from_millis(gateway.limits.client_payloads_window_ms),
    };
    let mut conn = Conn {
        gateway,
        ws,
        version: 0,
        rate,
        deadline: Instant::now() + timeout,
        timeout,
    };

    // 1. A bad `?v=` or a draining gateway end the connection before Hello.
    conn.version = match version {
        Ok(version) => version,
        Err(reason) => return conn.close(reason).await,
    };
    if conn.gateway.hub().draining {
        let _ = conn.send(control(op::RECONNECT, &Value::Null)).await;
        return conn.close(restart()).await;
    }
    let hello = control(op::HELLO, &json!({"heartbeat_interval": interval_ms}));
    if conn.send(hello).await.is_err() {
        return;
    }

    // 2. Identify or Resume, then serve; an invalidated session may identify again.
    let ended = loop {
        let attached = match conn.handshake().await {
            Ok(attached) => attached,
            Err(reason) => break reason,
        };
        let (session_id, conn_id) = (attached.session_id.clone(), attached.conn);
        match conn.serve(attached).await {
            Served::Invalidated => continue,
            Served::Closed(reason) => {
                let keep = keeps_session(reason.code);
                conn.gateway.hub().detach(&session_id, conn_id, keep);
                tracing::info!(%session_id, code = reason.code, keep, "session_detached");
                break reason;
            }
        }
    };
    conn.close(ended).await;
}

fn restart() -> Close {
    Close::new(
        close::SERVICE_RESTART,
        "gateway restarting: reconnect and resume",
    )
}

/// Whether a connection that ended with `code` leaves its session resumable: not after the
/// client's own normal close (1000, 1001), nor after a non-resumable gateway code.
fn keeps_session(code: u16) -> bool {
    match code {
        1000 | 1001 => false,
        4000..=4014 => close::resumable(code),
        _ => true,
    }
}

impl Conn {
    async fn send(&mut self, text: String) -> Result<(), Close> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|error| Close::new(1006, format!("send failed: {error}")))
    }

    async fn close(mut self, reason: Close) {
        tracing::debug!(code = reason.code, reason = %reason.reason, "connection_closed");
        let frame = CloseFrame {
            code: CloseCode::from(reason.code),
            reason: reason.reason.into(),
        };
        let closing = self.ws.close(Some(frame));
        let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
    }

    /// The next client command, or why the connection ends. Counts against the rate limit.
    async fn command(
        &mut self,
        message: Option<Result<Message, WsError>>,
    ) -> Result<Option<Command>, Close> {
        let text = match message {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => String::from_utf8(bytes.to_vec())
                .map_err(|_| Close::new(close::DECODE_ERROR, "binary payload is not UTF-8"))?,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                return Err(Close::new(code, "client closed"));
            }
            Some(Ok(_)) => return Ok(None),
            Some(Err(WsError::Capacity(error))) => {
                let reason = format!("payload over 4096 bytes: {error}");
                return Err(Close::new(close::DECODE_ERROR, reason));
            }
            Some(Err(WsError::Utf8(_))) => {
                return Err(Close::new(close::DECODE_ERROR, "payload is not UTF-8"));
            }
            Some(Err(WsError::Protocol(error))) => {
                return Err(Close::new(
                    1002,
                    format!("websocket protocol error: {error}"),
                ));
            }
            Some(Err(error)) => return Err(Close::new(1006, format!("connection lost: {error}"))),
            None => return Err(Close::new(1006, "connection lost")),
        };
        if !self.rate.admit(Instant::now()) {
            let limits = &self.gateway.limits;
            let reason = format!(
                "rate limited: over {} payloads in {} ms",
                limits.client_payloads_max, limits.client_payloads_window_ms
            );
            return Err(Close::new(close::RATE_LIMITED, reason));
        }
        protocol::decode(&text, self.gateway.limits.client_payload_bytes_max).map(Some)
    }

    async fn heartbeat(&mut self) -> Result<(), Close> {
        self.deadline = Instant::now() + self.timeout;
        self.send(control(op::HEARTBEAT_ACK, &Value::Null)).await
    }

    /// Waits for Identify or Resume, answering heartbeats; a refused resume gets op 9 and the
    /// client may try again.
    async fn handshake(&mut self) -> Result<Attached, Close> {
        loop {
            let message = tokio::select! {
                biased;
                message = self.ws.next() => message,
                () = tokio::time::sleep_until(self.deadline) => {
                    return Err(Close::new(close::SESSION_TIMED_OUT, "no heartbeat in time"));
                }
            };
            match self.command(message).await? {
                None => {}
                Some(Command::Ignored(op)) => {
                    let reason = format!("op {op} before identifying");
                    return Err(Close::new(close::NOT_AUTHENTICATED, reason));
                }
                Some(Command::Heartbeat(_)) => self.heartbeat().await?,
                Some(Command::Identify(_) | Command::Resume(_)) if self.gateway.hub().draining => {
                    // A drain began while this connection was opening: go elsewhere or later.
                    let _ = self.send(control(op::RECONNECT, &Value::Null)).await;
                    return Err(restart());
                }
                Some(Command::Identify(identify)) => {
                    let attached = self.identify(identify)?;
                    return Ok(attached);
                }
                Some(Command::Resume(resume)) => {
                    let bounds = self.gateway.bounds();
                    let resumed = self.gateway.hub().resume(
                        &resume.token,
                        &resume.session_id,
                        resume.seq,
                        bounds,
                    );
                    match resumed {
                        Ok(resumed) => {
                            tracing::info!(session_id = %resume.session_id, seq = resume.seq,
                                replayed = resumed.replay.len(), "session_resumed");
                            self.send_frames(&resumed.replay).await?;
                            return Ok(resumed.attached);
                        }
                        Err(ResumeRefused::InvalidSeq) => {
                            let reason = format!("resume seq {} was never sent", resume.seq);
                            return Err(Close::new(close::INVALID_SEQ, reason));
                        }
                        Err(ResumeRefused::Invalid) => {
                            let invalid = control(op::INVALID_SESSION, &Value::Bool(false));
                            self.send(invalid).await?;
                        }
                    }
                }
            }
        }
    }

    /// Checks Identify against the directory and the limits, and opens the session.
    fn identify(&mut self, identify: Identify) -> Result<Attached, Close> {
        // 1. The token, the intents this application may ask for.
        let limits = self.gateway.limits;
        let disallowed =
            identify.intents & intents::PRIVILEGED & !limits.privileged_intents_allowed;
        let new = {
            let directory = self.gateway.config.directory.read();
            let Some(user) = directory.user_by_token(&identify.token).cloned() else {
                return Err(Close::new(
                    close::AUTHENTICATION_FAILED,
                    "authentication failed",
                ));
            };
            if disallowed != 0 {
                let reason = format!("intents {disallowed} are privileged and not allowed");
                return Err(Close::new(close::DISALLOWED_INTENTS, reason));
            }

            // 2. The guilds of its shard, within the per-shard limit.
            let guilds: Vec<_> = directory
                .guilds_of(user.id)
                .into_iter()
                .filter(|g| match identify.shard {
                    Some((id, count)) => protocol::shard_of(g.id, count) == id,
                    None => true,
                })
                .cloned()
                .collect();
            if guilds.len() > limits.guilds_per_shard_max {
                let reason = format!(
                    "{} guilds in one session, over {}: identify with more shards",
                    guilds.len(),
                    limits.guilds_per_shard_max
                );
                return Err(Close::new(close::SHARDING_REQUIRED, reason));
            }

            // 3. READY's and GUILD_CREATE's data.
            let mut ready = json!({
                "v": self.version,
                "user": {
                    "id": user.id.to_string(), "username": user.username,
                    "discriminator": "0", "global_name": null, "avatar": null, "bot": true,
                },
                "guilds": guilds.iter()
                    .map(|g| json!({"id": g.id.to_string(), "unavailable": true}))
                    .collect::<Vec<_>>(),
                "session_id": "",
                "resume_gateway_url": self.gateway.config.resume_gateway_url,
                "private_channels": [],
                "application": {"id": user.id.to_string(), "flags": 0},
            });
            if let Some((id, count)) = identify.shard {
                ready["shard"] = json!([id, count]);
            }
            let guild_creates = guilds.iter().map(guild_create).collect();
            NewSession {
                user_id: user.id,
                token: identify.token,
                intents: identify.intents,
                shard: identify.shard,
                guilds: guilds.iter().map(|g| g.id).collect::<BTreeSet<u64>>(),
                ready,
                guild_creates,
            }
        };
        let (node_index, bounds) = (self.gateway.config.node_index, self.gateway.bounds());
        let issued_ms = self.gateway.config.clock.now_ms();
        let user_id = new.user_id;
        let attached = self.gateway.hub().open(new, node_index, issued_ms, bounds);
        tracing::info!(user = user_id, session_id = %attached.session_id, "session_ready");
        Ok(attached)
    }

    /// Writes `frames` and flushes once.
    async fn send_frames(&mut self, frames: &[Frame]) -> Result<(), Close> {
        for frame in frames {
            self.ws
                .feed(Message::Text(frame.text().into()))
                .await
                .map_err(|error| Close::new(1006, format!("send failed: {error}")))?;
        }
        self.ws
            .flush()
            .await
            .map_err(|error| Close::new(1006, format!("send failed: {error}")))
    }

    /// Serves an attached session until the connection or the session ends.
    async fn serve(&mut self, mut attached: Attached) -> Served {
        loop {
            tokio::select! {
                biased;
                kick = &mut attached.kick => {
                    return self.kicked(kick.unwrap_or(Kick::Replaced)).await;
                }
                message = self.ws.next() => {
                    let command = match self.command(message).await {
                        Ok(command) => command,
                        Err(reason) => return Served::Closed(reason),
                    };
                    let answered = match command {
                        None | Some(Command::Ignored(_)) => Ok(()),
                        Some(Command::Heartbeat(_)) => self.heartbeat().await,
                        Some(Command::Identify(_) | Command::Resume(_)) => Err(Close::new(
                            close::ALREADY_AUTHENTICATED,
                            "already authenticated",
                        )),
                    };
                    if let Err(reason) = answered {
                        return Served::Closed(reason);
                    }
                }
                frame = attached.queue.recv() => {
                    let Some(first) = frame else {
                        return self.kicked(Kick::Replaced).await;
                    };
                    let mut frames = vec![first];
                    while frames.len() < SEND_BATCH_MAX {
                        match attached.queue.try_recv() {
                            Ok(frame) => frames.push(frame),
                            Err(_) => break,
                        }
                    }
                    // A socket the client does not read blocks here; the hub's kick still
                    // ends the wait when the queue overflows meanwhile.
                    let sent = tokio::select! {
                        biased;
                        kick = &mut attached.kick => {
                            return self.kicked(kick.unwrap_or(Kick::Replaced)).await;
                        }
                        sent = self.send_frames(&frames) => sent,
                    };
                    if let Err(reason) = sent {
                        return Served::Closed(reason);
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    let timed_out = Close::new(close::SESSION_TIMED_OUT, "no heartbeat in time");
                    return Served::Closed(timed_out);
                }
            }
        }
    }

    async fn kicked(&mut self, kick: Kick) -> Served {
        match kick {
            Kick::Overflow => Served::Closed(Close::new(
                close::UNKNOWN_ERROR,
                "send queue overflowed (slow consumer): resume",
            )),
            Kick::Replaced => Served::Closed(Close::new(
                close::UNKNOWN_ERROR,
                "session resumed on another connection",
            )),
            Kick::Reconnect => {
                let _ = self.send(control(op::RECONNECT, &Value::Null)).await;
                Served::Closed(restart())
            }
            Kick::Invalidated => {
                let invalid = control(op::INVALID_SESSION, &Value::Bool(false));
                match self.send(invalid).await {
                    Ok(()) => Served::Invalidated,
                    Err(reason) => Served::Closed(reason),
                }
            }
        }
    }
}

/// GUILD_CREATE's `d` for `guild`, as Identify and a newly followed guild send it.
pub fn guild_create(guild: &crate::directory::Guild) -> Value {
    let channels: Vec<Value> = guild
        .channels
        .iter()
        .enumerate()
        .map(|(position, c)| {
            json!({
                "id": c.id.to_string(), "name": c.name, "type": 0, "position": position,
                "guild_id": guild.id.to_string(),
            })
        })
        .collect();
    json!({
        "id": guild.id.to_string(),
        "name": guild.name,
        "channels": channels,
        "member_count": guild.members.len(),
        "unavailable": false,
        "large": false,
        "roles": [],
        "emojis": [],
    })
}
