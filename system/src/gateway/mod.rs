//! The gateway role: WebSocket sessions speaking Discord's gateway protocol (v9 and v10, JSON),
//! fed by guilds.
//!
//! A connection opens with Hello (op 10, `heartbeat_interval`). The client sends Identify
//! (op 2) and gets READY (`s` = 1) with `session_id` and `resume_gateway_url`, then one
//! GUILD_CREATE per guild of its shard; from then on every event of those guilds that its
//! intents ask for arrives as a Dispatch (op 0) whose `s` rises by exactly one. Heartbeats
//! (op 1, carrying the last `s` seen) are answered with op 11; a connection that sends none
//! within 1.5 intervals is a zombie and is closed with 4009.
//!
//! A session outlives its connection for a resume window ([`GatewayLimits`]): Resume (op 6)
//! on a new connection replays every dispatch after the client's `seq` from a bounded
//! per-session buffer, with its original `s`, then RESUMED. An unknown or expired session,
//! another user's token, or a `seq` older than the buffer gets Invalid Session (op 9,
//! `d: false`) and may identify afresh on the same connection; a `seq` the session never sent
//! is closed with 4007. [`GatewayHandle::drain`] sends Reconnect (op 7) to every connection
//! and closes it resumably (1012), for a graceful stop.
//!
//! Close codes are Discord's ([`protocol::close`]): 4001 unknown opcode, 4002 undecodable or
//! over 4096 bytes, 4003 not authenticated, 4004 bad token, 4005 already authenticated, 4007
//! invalid seq, 4008 over 120 payloads in 60 s, 4009 timed out, 4010 invalid shard, 4011
//! sharding required, 4012 bad `?v=`, 4013 invalid intents, 4014 disallowed intents, and 4000
//! for a slow consumer whose send queue passed its bound (it may resume from its buffer).
//!
//! Guilds send events over RPC in batches; each event's per-guild (epoch, sequence number)
//! lets the gateway drop a batch it already took when a guild resends it, and a new epoch (a
//! restarted guild process, which may have lost what it had queued) invalidates every
//! session of that guild instead of leaving it with a silent gap. Time is `tokio::time`, so
//! the simulator controls heartbeats, rate windows and resume windows. The one wall-time read,
//! a session id's issue time ([`session_issued_ms`]), comes from the node's own
//! [`NodeClock`], so clock faults reach it.
//!
//! Not modelled: zlib or zstd compression, ETF, presence, voice, member requests, direct
//! messages, `GET /gateway/bot`'s session start limits.

mod connection;
mod directory_events;
mod hub;
pub mod protocol;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::directory::SharedDirectory;
use crate::env::clock::NodeClock;
use crate::rpc::serve_rpc;
pub use connection::guild_create;
pub use hub::session_issued_ms;
use hub::{Hub, HubBounds};
pub use protocol::{close, intents, op, Close};

/// The largest payload a client may send.
pub const CLIENT_PAYLOAD_BYTES_MAX: usize = 4096;
/// Dispatches queued per connection before it counts as a slow consumer.
pub const SESSION_QUEUE_MAX: usize = 1_024;

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
    /// The dispatch name (`t`): MESSAGE_CREATE, MESSAGE_UPDATE, MESSAGE_DELETE, ...
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
    /// The events were taken, but those of these guilds came from a process older than the
    /// newest this gateway follows (guild id, newest epoch): the sender should retire it.
    /// The guilds' sessions were invalidated, so none is left with a silent gap.
    Stale {
        /// Per guild, the newest epoch this gateway has seen.
        guilds: Vec<(u64, u64)>,
    },
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
    /// This node's wall clock: session ids carry the time they were issued at. Timers
    /// (heartbeat deadlines, resume windows, rate windows) use the runtime's monotonic time.
    pub clock: NodeClock,
}

/// The gateway's limits; [`Default`] gives Discord's documented values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// The largest client payload, in bytes (4096).
    pub client_payload_bytes_max: usize,
    /// Client payloads allowed per window (120) ...
    pub client_payloads_max: usize,
    /// ... of this many ms (60 000).
    pub client_payloads_window_ms: u64,
    /// Dispatches queued per connection before it is closed as a slow consumer.
    pub session_queue_max: usize,
    /// Dispatches kept per session for a resume.
    pub replay_max: usize,
    /// How long a session without a connection stays resumable, in ms.
    pub resume_window_ms: u64,
    /// The most guilds one session (one shard) may hold (2500).
    pub guilds_per_shard_max: usize,
    /// The privileged intents this application may ask for.
    pub privileged_intents_allowed: u64,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            client_payload_bytes_max: CLIENT_PAYLOAD_BYTES_MAX,
            client_payloads_max: 120,
            client_payloads_window_ms: 60_000,
            session_queue_max: SESSION_QUEUE_MAX,
            replay_max: 2_048,
            resume_window_ms: 180_000,
            guilds_per_shard_max: 2_500,
            privileged_intents_allowed: intents::PRIVILEGED,
        }
    }
}

struct Gateway {
    config: GatewayConfig,
    limits: GatewayLimits,
    hub: Mutex<Hub>,
    /// Counts WebSocket upgrades and batches of guild events, if whoever started it asked.
    load: Option<crate::load::NodeLoad>,
}

impl Gateway {
    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bounds(&self) -> HubBounds {
        HubBounds {
            queue_max: self.limits.session_queue_max.max(1),
            replay_max: self.limits.replay_max.max(1),
        }
    }
}

/// A gateway: serve it, feed it guild events, drain it.
#[derive(Clone)]
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
}

impl GatewayHandle {
    /// A gateway with `config` and `limits`, serving nothing yet.
    pub fn new(config: GatewayConfig, limits: GatewayLimits) -> Self {
        Self::with_load(config, limits, None)
    }

    /// [`GatewayHandle::new`], counting the requests it serves into `load`.
    pub fn counted(
        config: GatewayConfig,
        limits: GatewayLimits,
        load: crate::load::NodeLoad,
    ) -> Self {
        Self::with_load(config, limits, Some(load))
    }

    fn with_load(
        config: GatewayConfig,
        limits: GatewayLimits,
        load: Option<crate::load::NodeLoad>,
    ) -> Self {
        let gateway = Gateway {
            config,
            limits,
            hub: Mutex::new(Hub::default()),
            load,
        };
        Self {
            gateway: Arc::new(gateway),
        }
    }

    /// Serves WebSocket sessions on `http_listener` at `/gateway` and guild dispatches on
    /// `rpc_listener`, and expires sessions past the resume window.
    pub async fn serve(self, http_listener: TcpListener, rpc_listener: TcpListener) {
        let for_rpc = self.clone();
        tokio::spawn(serve_rpc(rpc_listener, move |request: GatewayRequest| {
            let handle = for_rpc.clone();
            if let Some(load) = &handle.gateway.load {
                load.served("event_batch");
            }
            async move {
                match request {
                    GatewayRequest::Dispatch { events } => handle.dispatch(events),
                }
            }
        }));
        let for_expiry = self.gateway.clone();
        tokio::spawn(async move {
            let window = Duration::from_millis(for_expiry.limits.resume_window_ms);
            let period = (window / 4).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(period).await;
                let now = tokio::time::Instant::now();
                let expired = for_expiry.hub().expire(now, window);
                if expired > 0 {
                    tracing::debug!(expired, "sessions_expired");
                }
            }
        });
        let router = Router::new()
            .route("/gateway", get(upgrade))
            .with_state(self.gateway);
        crate::net::serve_http(http_listener, router).await;
    }

    /// Delivers guild events, in order, to the sessions of their guilds.
    pub fn dispatch(&self, events: Vec<GatewayEvent>) -> GatewayResponse {
        let bounds = self.gateway.bounds();
        let directory = &self.gateway.config.directory;
        let stale = self
            .gateway
            .hub()
            .dispatch_with(events, bounds, |hub, event| {
                directory_events::apply(directory, hub, event, bounds)
            });
        if stale.is_empty() {
            GatewayResponse::Accepted
        } else {
            GatewayResponse::Stale { guilds: stale }
        }
    }

    /// Sends Reconnect (op 7) to every live connection and closes it resumably (1012); new
    /// connections get op 7 at once. Sessions stay resumable for the resume window. Returns
    /// how many connections were told.
    pub fn drain(&self) -> usize {
        let told = self.gateway.hub().drain();
        tracing::info!(connections = told, "gateway_draining");
        told
    }

    /// Sessions held, live or waiting for a resume.
    pub fn session_count(&self) -> usize {
        self.gateway.hub().session_count()
    }

    /// Sessions with a live connection.
    pub fn live_count(&self) -> usize {
        self.gateway.hub().live_count()
    }

    /// Makes every session of `user_id` whose shard takes `guild_id` follow that guild (a
    /// member who joined while connected) and sends it GUILD_CREATE with `guild_create`;
    /// how many sessions now follow it.
    pub fn follow_guild(&self, user_id: u64, guild_id: u64, guild_create: &Value) -> usize {
        let bounds = self.gateway.bounds();
        self.gateway
            .hub()
            .follow(user_id, guild_id, guild_create, bounds)
    }
}

/// [`run`], counting the requests the gateway serves into `load`.
pub async fn run_counted(
    http_listener: TcpListener,
    rpc_listener: TcpListener,
    config: GatewayConfig,
    load: crate::load::NodeLoad,
) {
    GatewayHandle::counted(config, GatewayLimits::default(), load)
        .serve(http_listener, rpc_listener)
        .await;
}

/// Runs a gateway with Discord's limits: WebSocket sessions on `http_listener` at
/// `/gateway`, guild dispatches on `rpc_listener`.
pub async fn run(http_listener: TcpListener, rpc_listener: TcpListener, config: GatewayConfig) {
    GatewayHandle::new(config, GatewayLimits::default())
        .serve(http_listener, rpc_listener)
        .await;
}

/// The query of the upgrade request: the version (`?v=`), or why it is refused.
fn version_of(query: Option<&str>) -> Result<u64, Close> {
    let newest = VERSIONS_NEWEST;
    let Some(query) = query else {
        return Ok(newest);
    };
    let mut version = newest;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "v" => {
                version = value
                    .parse()
                    .ok()
                    .filter(|v| protocol::VERSIONS.contains(v))
                    .ok_or_else(|| {
                        let reason = format!("gateway version v={value} is not 9 or 10");
                        Close::new(close::INVALID_API_VERSION, reason)
                    })?;
            }
            "encoding" if value != "json" => {
                let reason = format!("encoding={value} is not served; use encoding=json");
                return Err(Close::new(close::DECODE_ERROR, reason));
            }
            _ => {}
        }
    }
    Ok(version)
}

const VERSIONS_NEWEST: u64 = 10;

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
    let version = version_of(request.uri().query());
    if let Some(load) = &gateway.load {
        load.served("session_upgrade");
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
        // Frames past four payload limits are cut off by the socket itself (also 4002).
        let mut ws_config = WebSocketConfig::default();
        let frame_max = gateway.limits.client_payload_bytes_max.saturating_mul(4);
        ws_config.max_message_size = Some(frame_max);
        ws_config.max_frame_size = Some(frame_max);
        let io = TokioIo::new(upgraded);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
        connection::run(gateway, ws, version).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_query_and_a_bad_one_is_refused_with_4012() {
        assert_eq!(version_of(None), Ok(10));
        assert_eq!(version_of(Some("v=9&encoding=json")), Ok(9));
        assert_eq!(
            version_of(Some("v=10&encoding=json&compress=zlib-stream")),
            Ok(10)
        );
        assert_eq!(version_of(Some("v=8")).map_err(|c| c.code), Err(4012));
        assert_eq!(version_of(Some("v=ten")).map_err(|c| c.code), Err(4012));
        assert_eq!(
            version_of(Some("encoding=etf")).map_err(|c| c.code),
            Err(4002)
        );
    }
}
