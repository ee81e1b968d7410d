//! The gateway protocol against the real gateway on loopback, driven by a real WebSocket client
//! (tokio-tungstenite): every op code and close code, resume and its refusals, intents,
//! sharding, and bad input next to a session that keeps receiving. Guild events reach the
//! gateway as guilds send them, over its dispatch RPC port.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chat_system::directory::{Channel, Directory, Guild, SharedDirectory, User};
use chat_system::gateway::{
    intents, GatewayConfig, GatewayEvent, GatewayHandle, GatewayLimits, GatewayRequest,
    GatewayResponse,
};
use chat_system::rpc::RpcClient;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/ws.rs"]
mod ws;

use ws::{next_json, Ws};

const TIMEOUT: Duration = Duration::from_secs(10);
const HEARTBEAT_MS: u64 = 1_000;
/// GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT.
const ALL_INTENTS: u64 = 1 | (1 << 9) | (1 << 15);

/// Guild A is on shard 1 of 2 (`(id >> 22) % 2`), guild B on shard 0.
const GUILD_A: u64 = 3 << 22;
const GUILD_B: u64 = 4 << 22;
const CHANNEL_A: u64 = (3 << 22) + 1;
const CHANNEL_B: u64 = (4 << 22) + 1;
/// Ann is in both guilds, Bob in A, Cat in B.
const ANN: u64 = 11;
const BOB: u64 = 12;
const CAT: u64 = 13;

fn directory() -> Directory {
    let user = |id: u64, name: &str| {
        let user = User {
            id,
            username: name.to_string(),
            token: format!("token-{name}"),
        };
        (id, user)
    };
    let guild = |id: u64, channel: u64, members: &[u64]| {
        let guild = Guild {
            id,
            name: format!("guild-{id}"),
            channels: vec![Channel {
                id: channel,
                name: "general".into(),
            }],
            members: members.iter().copied().collect(),
            owner_id: members[0],
        };
        (id, guild)
    };
    Directory {
        users: BTreeMap::from([user(ANN, "ann"), user(BOB, "bob"), user(CAT, "cat")]),
        guilds: BTreeMap::from([
            guild(GUILD_A, CHANNEL_A, &[ANN, BOB]),
            guild(GUILD_B, CHANNEL_B, &[ANN, CAT]),
        ]),
    }
}

/// A gateway on loopback ports, and a guild's side of its dispatch port.
struct Server {
    handle: GatewayHandle,
    ws: SocketAddr,
    rpc_addr: SocketAddr,
    rpc: RpcClient,
    guild_seq: BTreeMap<u64, u64>,
    epoch: u64,
}

impl Server {
    async fn start(limits: GatewayLimits) -> Server {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (ws, rpc_addr) = (
            http.local_addr().expect("addr"),
            rpc.local_addr().expect("addr"),
        );
        let config = GatewayConfig {
            directory: SharedDirectory::new(directory()),
            heartbeat_interval_ms: HEARTBEAT_MS,
            resume_gateway_url: format!("ws://{ws}/gateway"),
            node_index: 3,
            clock: chat_system::env::clock::NodeClock::new(),
        };
        let handle = GatewayHandle::new(config, limits);
        tokio::spawn(handle.clone().serve(http, rpc));
        Server {
            handle,
            ws,
            rpc_addr,
            rpc: RpcClient::new(),
            guild_seq: BTreeMap::new(),
            epoch: 1,
        }
    }

    /// Sends `events` of `guild_id` as the guild does: one batch, the next sequence numbers.
    async fn guild_sends(&mut self, guild_id: u64, events: Vec<(&str, Value)>) {
        let seq = self.guild_seq.entry(guild_id).or_insert(0);
        let events = events
            .into_iter()
            .map(|(name, data)| {
                *seq += 1;
                GatewayEvent {
                    guild_id,
                    guild_epoch: self.epoch,
                    guild_seq: *seq,
                    name: name.to_string(),
                    data,
                }
            })
            .collect();
        let answer = self
            .rpc
            .call::<_, GatewayResponse>(
                self.rpc_addr,
                &GatewayRequest::Dispatch { events },
                TIMEOUT,
            )
            .await;
        assert!(matches!(answer, Ok(GatewayResponse::Accepted)));
    }

    /// The guild's process restarted: a higher epoch, sequence numbers from 1 again.
    fn guild_restarts(&mut self) {
        self.epoch += 1;
        self.guild_seq.clear();
    }
}

/// A MESSAGE_CREATE / MESSAGE_UPDATE `d` as the guild role sends it.
fn message(id: u64, channel_id: u64, guild_id: u64, author: u64, content: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel_id.to_string(),
        "guild_id": guild_id.to_string(),
        "author": {"id": author.to_string(), "username": format!("user-{author}")},
        "content": content, "type": 0, "tts": false, "pinned": false,
    })
}

fn creates(ids: std::ops::RangeInclusive<u64>) -> Vec<(&'static str, Value)> {
    ids.map(|id| {
        let data = message(id, CHANNEL_A, GUILD_A, BOB, &format!("m{id}"));
        ("MESSAGE_CREATE", data)
    })
    .collect()
}

async fn connect_with(server: &Server, query: &str) -> Ws {
    ws::connect(server.ws, query).await
}

/// Connects with `?v=10&encoding=json` and reads Hello.
async fn connect(server: &Server) -> Ws {
    let mut ws = connect_with(server, "?v=10&encoding=json").await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["op"], 10, "{hello}");
    ws
}

/// Reads until the server's close frame; its code and reason, and the payloads before it.
async fn closed(ws: &mut Ws) -> (u16, String, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string(), before);
            }
            Some(Ok(Message::Text(text))) => {
                before.push(serde_json::from_str(&text).expect("JSON payload"));
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Ws) -> u16 {
    closed(ws).await.0
}

async fn send_json(ws: &mut Ws, payload: Value) {
    ws.send(Message::Text(payload.to_string().into()))
        .await
        .expect("send");
}

fn identify_payload(token: &str, intents: u64) -> Value {
    json!({"op": 2, "d": {
        "token": token, "intents": intents,
        "properties": {"os": "linux", "browser": "gateway-test", "device": "gateway-test"},
    }})
}

/// Identifies on `ws`; READY and the GUILD_CREATEs (as many as the user has guilds).
async fn identify_on(ws: &mut Ws, token: &str, intents: u64, guilds: usize) -> Vec<Value> {
    send_json(ws, identify_payload(token, intents)).await;
    let mut opening = Vec::new();
    for _ in 0..=guilds {
        opening.push(next_json(ws).await);
    }
    opening
}

/// A new connection identified as `token`; its READY.
async fn session(server: &Server, token: &str, guilds: usize) -> (Ws, Value) {
    let mut ws = connect(server).await;
    let opening = identify_on(&mut ws, token, ALL_INTENTS, guilds).await;
    (ws, opening[0].clone())
}

/// (t, s, d.id) of a dispatch.
fn tsid(payload: &Value) -> (String, u64, String) {
    (
        payload["t"].as_str().unwrap_or_default().to_string(),
        payload["s"].as_u64().unwrap_or(0),
        payload["d"]["id"].as_str().unwrap_or_default().to_string(),
    )
}

fn expected(first_s: u64, ids: std::ops::RangeInclusive<u64>) -> Vec<(String, u64, String)> {
    ids.zip(first_s..)
        .map(|(id, s)| ("MESSAGE_CREATE".to_string(), s, id.to_string()))
        .collect()
}

// ---- op codes ----

#[tokio::test]
async fn op10_hello_announces_the_heartbeat_interval() {
    let server = Server::start(GatewayLimits::default()).await;
    let mut ws = connect_with(&server, "").await;
    let hello = next_json(&mut ws).await;
    assert_eq!(
        hello,
        json!({"op": 10, "d": {"heartbeat_interval": 1000}, "s": null, "t": null})
    );
}

#[tokio::test]
async fn op2_identify_gets_ready_then_one_guild_create_per_guild() {
    let server = Server::start(GatewayLimits::default()).await;
    let mut ws = connect(&server).await;
    let opening = identify_on(&mut ws, "Bot token-ann", ALL_INTENTS, 2).await;

    let ready = &opening[0];
    assert_eq!(
        (ready["op"].clone(), ready["s"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(ready["t"], "READY");
    assert_eq!(ready["d"]["v"], 10);
    assert_eq!(ready["d"]["user"]["id"], ANN.to_string());
    assert_eq!(ready["d"]["user"]["username"], "ann");
    let session_id = ready["d"]["session_id"].as_str().expect("a session id");
    assert_eq!(session_id.len(), 32);
    assert!(session_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        ready["d"]["resume_gateway_url"],
        format!("ws://{}/gateway", server.ws)
    );
    assert_eq!(
        ready["d"]["guilds"],
        json!([
            {"id": GUILD_A.to_string(), "unavailable": true},
            {"id": GUILD_B.to_string(), "unavailable": true},
        ])
    );

    let guilds: Vec<(String, u64, String)> = opening[1..].iter().map(tsid).collect();
    assert_eq!(
        guilds,
        vec![
            ("GUILD_CREATE".into(), 2, GUILD_A.to_string()),
            ("GUILD_CREATE".into(), 3, GUILD_B.to_string()),
        ]
    );
    assert_eq!(opening[1]["d"]["channels"][0]["id"], CHANNEL_A.to_string());
    assert_eq!(opening[1]["d"]["member_count"], 2);
    assert_eq!(server.handle.live_count(), 1);
}

#[tokio::test]
async fn op1_heartbeat_is_answered_with_op11_before_and_after_identify() {
    let server = Server::start(GatewayLimits::default()).await;
    let mut ws = connect(&server).await;
    let ack = json!({"op": 11, "d": null, "s": null, "t": null});
    send_json(&mut ws, json!({"op": 1, "d": null})).await;
    assert_eq!(next_json(&mut ws).await, ack);
    identify_on(&mut ws, "token-bob", ALL_INTENTS, 1).await;
    send_json(&mut ws, json!({"op": 1, "d": 2})).await;
    assert_eq!(next_json(&mut ws).await, ack);
}

#[tokio::test]
async fn op0_dispatches_create_update_and_delete_with_rising_s() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let (mut ws, _) = session(&server, "token-bob", 1).await;
    let edited = message(100, CHANNEL_A, GUILD_A, BOB, "edited");
    let deleted = json!({"id": "100", "channel_id": CHANNEL_A.to_string(),
        "guild_id": GUILD_A.to_string()});
    server
        .guild_sends(
            GUILD_A,
            vec![
                (
                    "MESSAGE_CREATE",
                    message(100, CHANNEL_A, GUILD_A, BOB, "hello"),
                ),
                ("MESSAGE_UPDATE", edited.clone()),
                ("MESSAGE_DELETE", deleted.clone()),
            ],
        )
        .await;
    let got = [
        next_json(&mut ws).await,
        next_json(&mut ws).await,
        next_json(&mut ws).await,
    ];
    assert_eq!(got[0]["op"], 0);
    assert_eq!(got[0]["d"]["content"], "hello");
    assert_eq!(
        got.iter().map(tsid).collect::<Vec<_>>(),
        vec![
            ("MESSAGE_CREATE".into(), 3, "100".into()),
            ("MESSAGE_UPDATE".into(), 4, "100".into()),
            ("MESSAGE_DELETE".into(), 5, "100".into()),
        ]
    );
    assert_eq!(got[1]["d"], edited);
    assert_eq!(got[2]["d"], deleted);
}

#[tokio::test]
async fn op6_resume_after_a_dropped_connection_replays_exactly_the_missed_events() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let (mut ws, ready) = session(&server, "token-bob", 1).await;
    let session_id = ready["d"]["session_id"].clone();

    // 1. Seen: s 3..=5 (ids 1..=3). Then the TCP connection drops without a close frame.
    server.guild_sends(GUILD_A, creates(1..=3)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(tsid(&next_json(&mut ws).await));
    }
    assert_eq!(seen, expected(3, 1..=3));
    drop(ws);

    // 2. Missed while away: ids 4..=8 (s 6..=10).
    server.guild_sends(GUILD_A, creates(4..=8)).await;

    // 3. Resume from s 5: exactly the missed five in order with their s, then RESUMED.
    let mut ws = connect(&server).await;
    send_json(
        &mut ws,
        json!({"op": 6, "d": {"token": "token-bob", "session_id": session_id, "seq": 5}}),
    )
    .await;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(tsid(&next_json(&mut ws).await));
    }
    assert_eq!(replayed, expected(6, 4..=8));
    let resumed = next_json(&mut ws).await;
    assert_eq!(
        (resumed["op"].clone(), resumed["t"].clone()),
        (json!(0), json!("RESUMED"))
    );
    assert_eq!(resumed["s"], 11);

    // 4. Live again, continuing the sequence.
    server.guild_sends(GUILD_A, creates(9..=9)).await;
    assert_eq!(tsid(&next_json(&mut ws).await), expected(12, 9..=9)[0]);
}

#[tokio::test]
async fn op9_invalid_session_past_the_buffer_or_for_a_wrong_session_then_identify_works() {
    let limits = GatewayLimits {
        replay_max: 4,
        ..GatewayLimits::default()
    };
    let mut server = Server::start(limits).await;
    let (ws, ready) = session(&server, "token-bob", 1).await;
    let session_id = ready["d"]["session_id"].as_str().expect("id").to_string();
    drop(ws);

    // 1. Six missed events (s 3..=8); the buffer keeps s 5..=8, so s 3 and 4 are lost.
    server.guild_sends(GUILD_A, creates(1..=6)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let invalid = json!({"op": 9, "d": false, "s": null, "t": null});
    let mut ws = connect(&server).await;
    let resume = |token: &str, id: &str, seq: u64| {
        let d = json!({"token": token, "session_id": id, "seq": seq});
        json!({"op": 6, "d": d})
    };

    // 2. Another user's token, an unknown session: op 9, and the session survives both.
    send_json(&mut ws, resume("token-ann", &session_id, 2)).await;
    assert_eq!(next_json(&mut ws).await, invalid);
    send_json(&mut ws, resume("token-bob", "00ff", 2)).await;
    assert_eq!(next_json(&mut ws).await, invalid);
    assert_eq!(server.handle.session_count(), 1);

    // 3. Past the buffer: op 9, and the session is gone.
    send_json(&mut ws, resume("token-bob", &session_id, 2)).await;
    assert_eq!(next_json(&mut ws).await, invalid);
    assert_eq!(server.handle.session_count(), 0);

    // 4. The same connection identifies afresh.
    let opening = identify_on(&mut ws, "token-bob", ALL_INTENTS, 1).await;
    assert_eq!(
        (opening[0]["t"].clone(), opening[0]["s"].clone()),
        (json!("READY"), json!(1))
    );
    assert_ne!(opening[0]["d"]["session_id"], json!(session_id));
}

#[tokio::test]
async fn op9_invalid_session_for_a_session_past_its_resume_window() {
    let limits = GatewayLimits {
        resume_window_ms: 300,
        ..GatewayLimits::default()
    };
    let server = Server::start(limits).await;
    let (ws, ready) = session(&server, "token-bob", 1).await;
    drop(ws);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while server.handle.session_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.handle.session_count(), 0, "expired");
    let mut ws = connect(&server).await;
    let resume = json!({"op": 6, "d": {"token": "token-bob",
        "session_id": ready["d"]["session_id"], "seq": 2}});
    send_json(&mut ws, resume).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"op": 9, "d": false, "s": null, "t": null})
    );
}

#[tokio::test]
async fn op9_invalid_session_when_a_guild_restarts_and_its_process_may_have_lost_events() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let (mut ws, _) = session(&server, "token-bob", 1).await;
    server.guild_sends(GUILD_A, creates(1..=1)).await;
    assert_eq!(tsid(&next_json(&mut ws).await), expected(3, 1..=1)[0]);

    server.guild_restarts();
    server.guild_sends(GUILD_A, creates(2..=2)).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"op": 9, "d": false, "s": null, "t": null})
    );
    let opening = identify_on(&mut ws, "token-bob", ALL_INTENTS, 1).await;
    assert_eq!(opening[0]["t"], "READY");
}

#[tokio::test]
async fn op7_reconnect_on_drain_closes_resumably_and_new_connections_are_told_at_once() {
    let server = Server::start(GatewayLimits::default()).await;
    let (mut ws, _) = session(&server, "token-bob", 1).await;
    let mut opening = connect(&server).await;
    assert_eq!(server.handle.drain(), 1);
    let (code, _, before) = closed(&mut ws).await;
    assert_eq!(
        before,
        vec![json!({"op": 7, "d": null, "s": null, "t": null})]
    );
    assert_eq!(code, 1012);
    assert_eq!(
        (server.handle.session_count(), server.handle.live_count()),
        (1, 0),
        "the session waits for its resume"
    );

    // A connection that had its Hello but had not identified is told when it identifies.
    send_json(&mut opening, identify_payload("token-cat", ALL_INTENTS)).await;
    let (code, _, before) = closed(&mut opening).await;
    assert_eq!(
        before,
        vec![json!({"op": 7, "d": null, "s": null, "t": null})]
    );
    assert_eq!(code, 1012);

    let mut late = connect_with(&server, "?v=10").await;
    let (code, _, before) = closed(&mut late).await;
    assert_eq!(
        before,
        vec![json!({"op": 7, "d": null, "s": null, "t": null})]
    );
    assert_eq!(code, 1012);
}

// ---- intents and sharding ----

#[tokio::test]
async fn intents_choose_the_events_and_message_content_guards_others_messages() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let messages = 1 << 9;
    let mut no_content = connect(&server).await;
    identify_on(&mut no_content, "token-ann", 1 | messages, 2).await;
    let mut guilds_only = connect(&server).await;
    send_json(&mut guilds_only, identify_payload("token-bob", 1)).await;
    assert_eq!(next_json(&mut guilds_only).await["t"], "READY");
    assert_eq!(next_json(&mut guilds_only).await["t"], "GUILD_CREATE");
    let mut messages_only = connect(&server).await;
    send_json(&mut messages_only, identify_payload("token-bob", messages)).await;
    assert_eq!(next_json(&mut messages_only).await["t"], "READY");

    // Bob's message, then Ann's: Ann without MESSAGE_CONTENT sees only her own text.
    server
        .guild_sends(
            GUILD_A,
            vec![
                (
                    "MESSAGE_CREATE",
                    message(1, CHANNEL_A, GUILD_A, BOB, "from bob"),
                ),
                (
                    "MESSAGE_CREATE",
                    message(2, CHANNEL_A, GUILD_A, ANN, "from ann"),
                ),
            ],
        )
        .await;
    let contents = |a: Value, b: Value| (a["d"]["content"].clone(), b["d"]["content"].clone());
    let (first, second) = (
        next_json(&mut no_content).await,
        next_json(&mut no_content).await,
    );
    assert_eq!(contents(first, second), (json!(""), json!("from ann")));
    // Bob without GUILDS: no GUILD_CREATE, the messages come as s 2 and 3; his own in full.
    let (first, second) = (
        next_json(&mut messages_only).await,
        next_json(&mut messages_only).await,
    );
    assert_eq!(
        (first["s"].clone(), second["s"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(contents(first, second), (json!("from bob"), json!("")));

    // Without GUILD_MESSAGES: nothing; its next payload is the heartbeat's ACK.
    send_json(&mut guilds_only, json!({"op": 1, "d": 2})).await;
    assert_eq!(next_json(&mut guilds_only).await["op"], 11);
}

#[tokio::test]
async fn a_shard_gets_only_its_guilds_by_guild_id_shifted_22_modulo_the_count() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let shard = |id: u64| {
        let mut payload = identify_payload("token-ann", ALL_INTENTS);
        payload["d"]["shard"] = json!([id, 2]);
        payload
    };
    let mut shard0 = connect(&server).await;
    send_json(&mut shard0, shard(0)).await;
    let ready = next_json(&mut shard0).await;
    assert_eq!(ready["d"]["shard"], json!([0, 2]));
    assert_eq!(
        ready["d"]["guilds"],
        json!([{"id": GUILD_B.to_string(), "unavailable": true}])
    );
    assert_eq!(tsid(&next_json(&mut shard0).await).2, GUILD_B.to_string());
    let mut shard1 = connect(&server).await;
    send_json(&mut shard1, shard(1)).await;
    assert_eq!(next_json(&mut shard1).await["t"], "READY");
    assert_eq!(tsid(&next_json(&mut shard1).await).2, GUILD_A.to_string());

    server.guild_sends(GUILD_A, creates(1..=1)).await;
    server
        .guild_sends(
            GUILD_B,
            vec![("MESSAGE_CREATE", message(2, CHANNEL_B, GUILD_B, CAT, "b"))],
        )
        .await;
    assert_eq!(tsid(&next_json(&mut shard1).await).2, "1");
    assert_eq!(tsid(&next_json(&mut shard0).await).2, "2");
}

// ---- close codes ----

/// Connects, sends `payload` (after identifying as Bob if `identified`), returns the close.
async fn close_after(server: &Server, identified: bool, payload: &str) -> (u16, String) {
    let mut ws = connect(server).await;
    if identified {
        identify_on(&mut ws, "token-bob", ALL_INTENTS, 1).await;
    }
    ws.send(Message::Text(payload.to_string().into()))
        .await
        .expect("send");
    let (code, reason, _) = closed(&mut ws).await;
    (code, reason)
}

#[tokio::test]
async fn close_4000_a_slow_consumer_past_its_queue_bound_and_its_resume_gets_everything() {
    let limits = GatewayLimits {
        session_queue_max: 4,
        ..GatewayLimits::default()
    };
    let mut server = Server::start(limits).await;
    let (mut ws, ready) = session(&server, "token-bob", 1).await;

    // 20 events in one batch overflow the 4-slot queue: closed with 4000, not buffered.
    server.guild_sends(GUILD_A, creates(1..=20)).await;
    let (code, reason, before) = closed(&mut ws).await;
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    let last_s = before.last().map_or(2, |p| p["s"].as_u64().unwrap_or(0));

    // The session's buffer holds the rest: a resume gets every one after what was seen.
    let mut ws = connect(&server).await;
    let resume = json!({"op": 6, "d": {"token": "token-bob",
        "session_id": ready["d"]["session_id"], "seq": last_s}});
    send_json(&mut ws, resume).await;
    let mut replayed = Vec::new();
    for _ in last_s..22 {
        replayed.push(tsid(&next_json(&mut ws).await));
    }
    assert_eq!(replayed, expected(last_s + 1, (last_s - 1)..=20));
    assert_eq!(next_json(&mut ws).await["t"], "RESUMED");
}

#[tokio::test]
async fn close_4001_unknown_opcode() {
    let server = Server::start(GatewayLimits::default()).await;
    for op in [0, 5, 7, 11, 99] {
        let payload = json!({"op": op, "d": null}).to_string();
        let (code, reason) = close_after(&server, true, &payload).await;
        assert_eq!((code, reason), (4001, format!("unknown opcode {op}")));
    }
}

#[tokio::test]
async fn close_4002_decode_error_for_malformed_json_and_bad_fields() {
    let server = Server::start(GatewayLimits::default()).await;
    let (code, reason) = close_after(&server, true, r#"{"op": 1, "d": "#).await;
    assert_eq!(code, 4002);
    assert!(reason.starts_with("payload is not JSON"), "{reason}");
    let (code, reason) = close_after(&server, false, r#"{"op": 2, "d": {"token": "t"}}"#).await;
    assert_eq!(code, 4002);
    assert_eq!(reason, "identify d.properties is missing or not an object");
    let (code, reason) = close_after(&server, true, r#"{"op": 1, "d": 1, "extra": 1}"#).await;
    assert_eq!(
        (code, reason.as_str()),
        (4002, r#"unknown payload field "extra""#)
    );
}

#[tokio::test]
async fn close_4002_for_payloads_over_4096_bytes_at_any_size() {
    let server = Server::start(GatewayLimits::default()).await;
    for size in [4097, 100_000] {
        let pad = "x".repeat(size);
        let payload = json!({"op": 1, "d": null, "t": pad}).to_string();
        let (code, reason) = close_after(&server, true, &payload).await;
        assert_eq!(code, 4002, "{size}: {reason}");
    }
    let exactly = format!(r#"{{"op":1,"d":null,"t":"{}"}}"#, "x".repeat(4096 - 24));
    assert_eq!(exactly.len(), 4096);
    let mut ws = connect(&server).await;
    ws.send(Message::Text(exactly.into())).await.expect("send");
    assert_eq!(next_json(&mut ws).await["op"], 11, "4096 bytes are allowed");
}

#[tokio::test]
async fn close_4003_a_payload_before_identifying() {
    let server = Server::start(GatewayLimits::default()).await;
    let (code, reason) = close_after(&server, false, r#"{"op": 3, "d": {}}"#).await;
    assert_eq!((code, reason.as_str()), (4003, "op 3 before identifying"));
}

#[tokio::test]
async fn close_4004_authentication_failed() {
    let server = Server::start(GatewayLimits::default()).await;
    let payload = identify_payload("token-nobody", ALL_INTENTS).to_string();
    let (code, _) = close_after(&server, false, &payload).await;
    assert_eq!(code, 4004);
}

#[tokio::test]
async fn close_4005_already_authenticated() {
    let server = Server::start(GatewayLimits::default()).await;
    let payload = identify_payload("token-bob", ALL_INTENTS).to_string();
    let (code, _) = close_after(&server, true, &payload).await;
    assert_eq!(code, 4005);
    assert_eq!(
        server.handle.session_count(),
        1,
        "4005 is resumable: the session stays"
    );
}

#[tokio::test]
async fn close_4007_resume_with_a_seq_never_sent() {
    let server = Server::start(GatewayLimits::default()).await;
    let (ws, ready) = session(&server, "token-bob", 1).await;
    drop(ws);
    let resume = json!({"op": 6, "d": {"token": "token-bob",
        "session_id": ready["d"]["session_id"], "seq": 3}});
    let (code, reason) = close_after(&server, false, &resume.to_string()).await;
    assert_eq!(
        (code, reason.as_str()),
        (4007, "resume seq 3 was never sent")
    );
    assert_eq!(
        server.handle.session_count(),
        0,
        "4007 asks for a new session"
    );
}

#[tokio::test]
async fn close_4008_past_120_payloads_in_60_seconds() {
    let server = Server::start(GatewayLimits::default()).await;
    let mut ws = connect(&server).await;
    for _ in 0..120 {
        send_json(&mut ws, json!({"op": 1, "d": null})).await;
    }
    for _ in 0..120 {
        assert_eq!(next_json(&mut ws).await["op"], 11);
    }
    send_json(&mut ws, json!({"op": 1, "d": null})).await;
    assert_eq!(close_code(&mut ws).await, 4008);
}

#[tokio::test]
async fn close_4009_a_session_without_heartbeats_times_out_and_stays_resumable() {
    let server = Server::start(GatewayLimits::default()).await;
    let (mut ws, ready) = session(&server, "token-bob", 1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(close_code(&mut ws).await, 4009);
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "1.5 intervals"
    );

    let mut ws = connect(&server).await;
    let resume = json!({"op": 6, "d": {"token": "token-bob",
        "session_id": ready["d"]["session_id"], "seq": 2}});
    send_json(&mut ws, resume).await;
    assert_eq!(
        tsid(&next_json(&mut ws).await),
        ("RESUMED".into(), 3, String::new())
    );
}

#[tokio::test]
async fn close_4010_invalid_shard() {
    let server = Server::start(GatewayLimits::default()).await;
    for shard in [json!([2, 2]), json!([0]), json!(["0", 1])] {
        let mut payload = identify_payload("token-ann", ALL_INTENTS);
        payload["d"]["shard"] = shard.clone();
        let (code, _) = close_after(&server, false, &payload.to_string()).await;
        assert_eq!(code, 4010, "{shard}");
    }
}

#[tokio::test]
async fn close_4011_sharding_required_past_the_guilds_per_shard_limit() {
    let limits = GatewayLimits {
        guilds_per_shard_max: 1,
        ..GatewayLimits::default()
    };
    let server = Server::start(limits).await;
    let payload = identify_payload("token-ann", ALL_INTENTS).to_string();
    let (code, reason) = close_after(&server, false, &payload).await;
    assert_eq!(code, 4011, "{reason}");
    // Two shards put one guild in each: allowed.
    let mut sharded = identify_payload("token-ann", ALL_INTENTS);
    sharded["d"]["shard"] = json!([0, 2]);
    let mut ws = connect(&server).await;
    send_json(&mut ws, sharded).await;
    assert_eq!(next_json(&mut ws).await["t"], "READY");
}

#[tokio::test]
async fn close_4012_invalid_api_version() {
    let server = Server::start(GatewayLimits::default()).await;
    for query in ["?v=11", "?v=6&encoding=json", "?v=x"] {
        let mut ws = connect_with(&server, query).await;
        assert_eq!(close_code(&mut ws).await, 4012, "{query}");
    }
    let mut ws = connect_with(&server, "?v=9&encoding=json&compress=zlib-stream").await;
    assert_eq!(next_json(&mut ws).await["op"], 10);
}

#[tokio::test]
async fn close_4013_invalid_intents() {
    let server = Server::start(GatewayLimits::default()).await;
    for intents in [json!(1u64 << 30), json!(-1), json!("513")] {
        let mut payload = identify_payload("token-bob", 0);
        payload["d"]["intents"] = intents.clone();
        let (code, _) = close_after(&server, false, &payload.to_string()).await;
        assert_eq!(code, 4013, "{intents}");
    }
}

#[tokio::test]
async fn close_4014_disallowed_privileged_intents() {
    let limits = GatewayLimits {
        privileged_intents_allowed: intents::GUILD_MEMBERS,
        ..GatewayLimits::default()
    };
    let server = Server::start(limits).await;
    let payload = identify_payload("token-bob", ALL_INTENTS).to_string();
    let (code, reason) = close_after(&server, false, &payload).await;
    assert_eq!(
        (code, reason.as_str()),
        (4014, "intents 32768 are privileged and not allowed")
    );
    let allowed = identify_payload("token-bob", 1 | (1 << 9) | intents::GUILD_MEMBERS);
    let mut ws = connect(&server).await;
    send_json(&mut ws, allowed).await;
    assert_eq!(next_json(&mut ws).await["t"], "READY");
}

#[tokio::test]
async fn a_client_close_with_1000_ends_its_session_and_other_codes_keep_it() {
    let server = Server::start(GatewayLimits::default()).await;
    for (code, kept) in [(1000, 0), (4100, 1)] {
        let (mut ws, _) = session(&server, "token-cat", 1).await;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        ws.close(Some(frame)).await.expect("close sent");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while server.handle.live_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.handle.session_count(), kept, "client close {code}");
    }
}

// ---- bad input beside a healthy session ----

#[tokio::test]
async fn bad_payloads_close_their_own_connection_while_another_session_keeps_receiving() {
    let mut server = Server::start(GatewayLimits::default()).await;
    let (mut healthy, _) = session(&server, "token-bob", 1).await;
    let oversized = json!({"op": 1, "d": null, "t": "x".repeat(5000)}).to_string();
    let bad = [
        (r#"{"op": 1, "#.to_string(), 4002),
        (r#"{"op": 42, "d": null}"#.to_string(), 4001),
        (oversized, 4002),
    ];
    for (next_id, (payload, expected_code)) in (1..).zip(bad) {
        let (code, _) = close_after(&server, true, &payload).await;
        assert_eq!(code, expected_code);
        server
            .guild_sends(GUILD_A, creates(next_id..=next_id))
            .await;
        let got = tsid(&next_json(&mut healthy).await);
        assert_eq!(got, expected(2 + next_id, next_id..=next_id)[0]);
    }
}
