//! The gateway role: WebSocket sessions speaking Discord's gateway protocol, fed by guilds.
//!
//! A session opens with Hello (op 10, `heartbeat_interval`); the client sends Identify (op 2)
//! with its token and gets READY (op 0, `s` = 1) with `session_id` and `resume_gateway_url`,
//! then one GUILD_CREATE per guild. From then on every event of the user's guilds arrives as a
//! Dispatch whose `s` rises by exactly one. Heartbeats (op 1) are answered with op 11; a
//! session that sends none within 1.5 intervals is closed with 4009.
//!
//! Close codes used: 4001 unknown opcode, 4002 undecodable or oversized (over 4096 bytes)
//! payload, 4003 not authenticated, 4004 authentication failed, 4005 already authenticated,
//! 4009 session timed out, 4000 a send queue that overflowed (the client should resume).
//!
//! Guilds send events over RPC in batches; each event's per-guild (epoch, sequence number)
//! lets the gateway drop a batch it has already taken when a guild resends it. An event from a
//! new epoch means the guild's process restarted and may have lost events it had queued: every
//! session of that guild gets Invalid Session (op 9, `d: false`) and is closed, so its client
//! identifies again and resyncs instead of living with a silent gap.
//!
//! TODO(gateway-resume): Resume (op 6), RESUMED, Invalid Session (op 9) and Reconnect (op 7)
//! need the per-session replay buffer; today a dropped session must identify again.
//! TODO(gateway-limits): intents, the 120-events-per-60-s limit and the other close codes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::directory::{Guild, SharedDirectory, User};
use crate::rpc::serve_rpc;

/// The largest payload a client may send.
pub const CLIENT_PAYLOAD_BYTES_MAX: usize = 4096;
/// Events queued per session before it counts as a slow consumer.
pub const SESSION_QUEUE_MAX: usize = 1_024;

/// Gateway op codes.
pub mod op {
    /// An event.
    pub const DISPATCH: u8 = 0;
    /// A heartbeat (either way).
    pub const HEARTBEAT: u8 = 1;
    /// The session is invalid; `d` tells whether it may be resumed.
    pub const INVALID_SESSION: u8 = 9;
    /// Start a session.
    pub const IDENTIFY: u8 = 2;
    /// The first payload, with the heartbeat interval.
    pub const HELLO: u8 = 10;
    /// The answer to a heartbeat.
    pub const HEARTBEAT_ACK: u8 = 11;
}

/// One event of a guild, as guilds send it to gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayEvent {
    /// The guild.
    pub guild_id: u64,
    /// The incarnation of the guild process that ordered it (a number above every earlier
    /// incarnation's): a guild that restarts or moves counts its events from 1 again, in a
    /// higher epoch.
    pub guild_epoch: u64,
    /// The guild's own sequence number for its events in that epoch, from 1.
    pub guild_seq: u64,
    /// The dispatch name (`t`), e.g. MESSAGE_CREATE.
    pub name: String,
    /// The dispatch data (`d`).
    pub data: Value,
}

/// A request to a gateway's dispatch port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GatewayRequest {
    /// Deliver these events, in order, to the sessions of their guilds.
    Dispatch {
        /// The events.
        events: Vec<GatewayEvent>,
    },
}

/// A gateway's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GatewayResponse {
    /// The events were handed to their sessions.
    Accepted,
}

/// The gateway role's configuration.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Who exists.
    pub directory: SharedDirectory,
    /// The interval Hello announces, in ms.
    pub heartbeat_interval_ms: u64,
    /// The URL READY announces for resuming.
    pub resume_gateway_url: String,
    /// Distinguishes this gateway's session ids from other gateways'.
    pub node_index: u64,
}

/// What a session's queue carries.
#[derive(Debug, Clone)]
enum SessionEvent {
    /// An event to dispatch.
    Dispatch(Arc<GatewayEvent>),
    /// The session may have missed events (its guild's process restarted and lost what it
    /// had queued): tell the client its session is invalid, so it identifies again and
    /// resyncs, instead of leaving it with a silent gap.
    Invalidate,
}

#[derive(Default)]
struct Hub {
    /// Per guild: the sessions that receive its events.
    sessions: BTreeMap<u64, BTreeMap<u64, mpsc::Sender<SessionEvent>>>,
    /// Per guild: the last (epoch, sequence number) delivered.
    last_guild_seq: BTreeMap<u64, (u64, u64)>,
    next_session: u64,
}

struct Gateway {
    config: GatewayConfig,
    hub: Mutex<Hub>,
}

impl Gateway {
    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, events: Vec<GatewayEvent>) -> GatewayResponse {
        let mut hub = self.hub();
        let mut cut_off = Vec::new();
        for event in events {
            // A resent batch repeats what was delivered; a restarted guild starts a new epoch.
            let position = (event.guild_epoch, event.guild_seq);
            let last = hub
                .last_guild_seq
                .get(&event.guild_id)
                .copied()
                .unwrap_or((0, 0));
            if position <= last {
                continue;
            }
            hub.last_guild_seq.insert(event.guild_id, position);
            let Some(sessions) = hub.sessions.get(&event.guild_id) else {
                continue;
            };

            // A new epoch after an old one: the old process may have lost queued events, so
            // every session of the guild is invalidated rather than left with a gap.
            let restarted = last.0 != 0 && event.guild_epoch > last.0;
            let item = if restarted {
                tracing::info!(
                    guild_id = event.guild_id,
                    "guild_restarted_sessions_invalidated"
                );
                SessionEvent::Invalidate
            } else {
                SessionEvent::Dispatch(Arc::new(event))
            };
            for (&key, queue) in sessions {
                let sent = queue.try_send(item.clone());
                if sent.is_err() || restarted {
                    cut_off.push(key);
                }
            }
        }

        // A slow consumer is cut off, never buffered beyond its bound, and an invalidated
        // session gets nothing more: dropping its last sender ends it.
        for key in cut_off {
            tracing::debug!(session = key, "session_cut_off");
            for sessions in hub.sessions.values_mut() {
                sessions.remove(&key);
            }
        }
        GatewayResponse::Accepted
    }
}

/// Runs a gateway: WebSocket sessions on `http_listener` at `/gateway`, guild dispatches on
/// `rpc_listener`.
pub async fn run(http_listener: TcpListener, rpc_listener: TcpListener, config: GatewayConfig) {
    let gateway = Arc::new(Gateway {
        config,
        hub: Mutex::new(Hub::default()),
    });
    let for_rpc = gateway.clone();
    tokio::spawn(serve_rpc(rpc_listener, move |request: GatewayRequest| {
        let gateway = for_rpc.clone();
        async move {
            match request {
                GatewayRequest::Dispatch { events } => gateway.dispatch(events),
            }
        }
    }));
    let router = Router::new()
        .route("/gateway", get(upgrade))
        .with_state(gateway);
    crate::net::serve_http(http_listener, router).await;
}

async fn upgrade(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    // 1. Only WebSocket upgrades are served here.
    let headers = request.headers();
    let wants_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    if !wants_ws {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    }

    // 2. Finish the upgrade in a task of ours once hyper hands the connection over.
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "ws_upgrade_failed");
                return;
            }
        };
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(64 * 1024);
        let io = TokioIo::new(upgraded);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
        run_session(gateway, ws).await;
    });

    // 3. Answer 101.
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a session ends, as a close code and reason.
struct Close(u16, &'static str);

async fn send_json(ws: &mut Ws, payload: &Value) -> Result<(), Close> {
    let text = payload.to_string();
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|_| Close(4000, "send failed"))
}

async fn close(ws: &mut Ws, Close(code, reason): Close) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
}

/// What the socket yielded: a message, or why the session ends. A frame past the socket's
/// own size limit is an oversized payload too (4002), not a normal close.
fn received(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Message, Close> {
    use tokio_tungstenite::tungstenite::Error;
    match message {
        Some(Ok(message)) => Ok(message),
        Some(Err(Error::Capacity(_))) => Err(Close(4002, "payload over 4096 bytes")),
        Some(Err(Error::Utf8(_))) => Err(Close(4002, "payload is not UTF-8")),
        Some(Err(Error::Protocol(_))) => Err(Close(1002, "websocket protocol error")),
        Some(Err(_)) | None => Err(Close(1000, "closed")),
    }
}

/// A decoded client payload.
struct ClientPayload {
    op: u8,
    d: Value,
}

fn decode(message: Message) -> Result<Option<ClientPayload>, Close> {
    let text = match message {
        Message::Text(text) => text.to_string(),
        Message::Binary(bytes) => {
            String::from_utf8(bytes.to_vec()).map_err(|_| Close(4002, "payload is not UTF-8"))?
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(None),
        Message::Close(_) => return Err(Close(1000, "client closed")),
    };
    if text.len() > CLIENT_PAYLOAD_BYTES_MAX {
        return Err(Close(4002, "payload over 4096 bytes"));
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|_| Close(4002, "payload is not JSON"))?;
    let op = match value.get("op") {
        None => return Err(Close(4002, "payload has no op")),
        Some(op) => op.as_u64().ok_or(Close(4002, "op is not an integer"))?,
    };
    let op = u8::try_from(op).map_err(|_| Close(4001, "unknown opcode"))?;
    Ok(Some(ClientPayload {
        op,
        d: value.get("d").cloned().unwrap_or(Value::Null),
    }))
}

/// A session id: 32 hex digits, unique per gateway node, derived without randomness.
fn session_id(node_index: u64, counter: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!(
        "{:016x}{:016x}",
        mix(node_index),
        mix(counter ^ (node_index << 48))
    )
}

async fn run_session(gateway: Arc<Gateway>, mut ws: Ws) {
    let interval_ms = gateway.config.heartbeat_interval_ms;
    let hello =
        json!({"op": op::HELLO, "d": {"heartbeat_interval": interval_ms}, "s": null, "t": null});
    if send_json(&mut ws, &hello).await.is_err() {
        return;
    }

    // 1. Wait for Identify.
    let user = match await_identify(&gateway, &mut ws, interval_ms).await {
        Ok(user) => user,
        Err(reason) => return close(&mut ws, reason).await,
    };

    // 2. Register, then READY and one GUILD_CREATE per guild.
    let (tx, mut rx) = mpsc::channel(SESSION_QUEUE_MAX);
    let guild_ids: Vec<u64> = gateway
        .config
        .directory
        .read()
        .guilds_of(user.id)
        .iter()
        .map(|g| g.id)
        .collect();
    let (session_key, session_id) = {
        let mut hub = gateway.hub();
        hub.next_session += 1;
        let key = hub.next_session;
        for &guild_id in &guild_ids {
            hub.sessions
                .entry(guild_id)
                .or_default()
                .insert(key, tx.clone());
        }
        (key, session_id(gateway.config.node_index, key))
    };
    drop(tx);
    tracing::info!(user = user.id, %session_id, "session_ready");
    let ended = serve_session(&gateway, &mut ws, &user, &session_id, &mut rx).await;

    // 3. Unregister, then close.
    {
        let mut hub = gateway.hub();
        for guild_id in &guild_ids {
            if let Some(sessions) = hub.sessions.get_mut(guild_id) {
                sessions.remove(&session_key);
            }
        }
    }
    tracing::info!(user = user.id, %session_id, code = ended.0, reason = ended.1, "session_closed");
    close(&mut ws, ended).await;
}

async fn await_identify(gateway: &Gateway, ws: &mut Ws, interval_ms: u64) -> Result<User, Close> {
    let deadline = tokio::time::sleep(Duration::from_millis(interval_ms));
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            biased;
            message = ws.next() => message,
            () = &mut deadline => return Err(Close(4003, "no identify in time")),
        };
        let message = received(message)?;
        let Some(payload) = decode(message)? else {
            continue;
        };
        match payload.op {
            op::IDENTIFY => {
                let token = payload
                    .d
                    .get("token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let token = token.strip_prefix("Bot ").unwrap_or(token);
                let directory = gateway.config.directory.read();
                return match directory.user_by_token(token) {
                    Some(user) => Ok(user.clone()),
                    None => Err(Close(4004, "authentication failed")),
                };
            }
            op::HEARTBEAT => {
                let ack = json!({"op": op::HEARTBEAT_ACK, "d": null, "s": null, "t": null});
                send_json(ws, &ack).await?;
            }
            _ => return Err(Close(4003, "not authenticated")),
        }
    }
}

async fn serve_session(
    gateway: &Gateway,
    ws: &mut Ws,
    user: &User,
    session_id: &str,
    rx: &mut mpsc::Receiver<SessionEvent>,
) -> Close {
    let interval_ms = gateway.config.heartbeat_interval_ms;
    let mut seq: u64 = 0;
    let mut dispatch = |name: &str, data: Value| {
        seq += 1;
        json!({"op": op::DISPATCH, "t": name, "s": seq, "d": data})
    };

    // 1. READY, then the guilds (copied out of the directory: no lock across an await).
    let guilds: Vec<Guild> = {
        let directory = gateway.config.directory.read();
        directory.guilds_of(user.id).into_iter().cloned().collect()
    };
    let ready = dispatch(
        "READY",
        json!({
            "v": 10,
            "user": {"id": user.id.to_string(), "username": user.username},
            "session_id": session_id,
            "resume_gateway_url": gateway.config.resume_gateway_url,
            "guilds": guilds.iter().map(|g| json!({"id": g.id.to_string(), "unavailable": true}))
                .collect::<Vec<_>>(),
        }),
    );
    let mut opening = vec![ready];
    for guild in &guilds {
        let channels: Vec<Value> = guild
            .channels
            .iter()
            .map(|c| json!({"id": c.id.to_string(), "name": c.name, "type": 0}))
            .collect();
        let data = json!({
            "id": guild.id.to_string(),
            "name": guild.name,
            "channels": channels,
            "member_count": guild.members.len(),
        });
        opening.push(dispatch("GUILD_CREATE", data));
    }
    for payload in &opening {
        if let Err(reason) = send_json(ws, payload).await {
            return reason;
        }
    }

    // 2. Events, heartbeats and the zombie deadline.
    let timeout = Duration::from_millis(interval_ms + interval_ms / 2);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            biased;
            message = ws.next() => {
                let message = match received(message) {
                    Ok(message) => message,
                    Err(reason) => return reason,
                };
                let payload = match decode(message) {
                    Ok(Some(payload)) => payload,
                    Ok(None) => continue,
                    Err(reason) => return reason,
                };
                match payload.op {
                    op::HEARTBEAT => {
                        deadline = tokio::time::Instant::now() + timeout;
                        let ack = json!({"op": op::HEARTBEAT_ACK, "d": null, "s": null, "t": null});
                        if let Err(reason) = send_json(ws, &ack).await {
                            return reason;
                        }
                    }
                    op::IDENTIFY => return Close(4005, "already authenticated"),
                    _ => return Close(4001, "unknown opcode"),
                }
            }
            event = rx.recv() => {
                let event = match event {
                    Some(SessionEvent::Dispatch(event)) => event,
                    Some(SessionEvent::Invalidate) => {
                        let invalid =
                            json!({"op": op::INVALID_SESSION, "d": false, "s": null, "t": null});
                        let _ = send_json(ws, &invalid).await;
                        return Close(4000, "invalid session: its guild restarted");
                    }
                    None => return Close(4000, "send queue overflowed"),
                };
                let payload = dispatch(&event.name, event.data.clone());
                if let Err(reason) = send_json(ws, &payload).await {
                    return reason;
                }
            }
            () = tokio::time::sleep_until(deadline) => return Close(4009, "session timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::SharedDirectory;

    fn event(epoch: u64, seq: u64) -> GatewayEvent {
        GatewayEvent {
            guild_id: 1,
            guild_epoch: epoch,
            guild_seq: seq,
            name: "MESSAGE_CREATE".into(),
            data: json!({"seq": seq}),
        }
    }

    #[test]
    fn a_resent_batch_is_dropped_and_a_restarted_guild_invalidates_its_sessions() {
        let config = GatewayConfig {
            directory: SharedDirectory::default(),
            heartbeat_interval_ms: 1000,
            resume_gateway_url: String::new(),
            node_index: 0,
        };
        let gateway = Gateway {
            config,
            hub: Mutex::new(Hub::default()),
        };
        let (tx, mut rx) = mpsc::channel(16);
        gateway.hub().sessions.entry(1).or_default().insert(7, tx);

        // Epoch 5 sends 1, 2; resends 2; then the guild restarts (epoch 9) and counts from 1.
        gateway.dispatch(vec![event(5, 1), event(5, 2)]);
        gateway.dispatch(vec![event(5, 2)]);
        gateway.dispatch(vec![event(9, 1)]);
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(match item {
                SessionEvent::Dispatch(event) => {
                    format!("{}.{}", event.guild_epoch, event.guild_seq)
                }
                SessionEvent::Invalidate => "invalidate".to_string(),
            });
        }
        // The new epoch is heard (not dropped as a repeat) and invalidates the session, which
        // may have missed what the old process had queued.
        assert_eq!(got, vec!["5.1", "5.2", "invalidate"]);
        assert!(
            gateway.hub().sessions[&1].is_empty(),
            "the session gets nothing more"
        );
    }
}
