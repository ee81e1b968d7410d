//! Gateway fan-out in the simulator: the system's roles on their own hosts (three ring nodes,
//! guild, gateway, API), 1,000 WebSocket sessions of one guild on a client host, and senders
//! posting over REST. Every session must get every acknowledged message exactly once, in id
//! order, with `s` rising by one.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chat_sim::ringsim::{simulate, RingCluster, RingShape};
use chat_system::cluster::Topology;
use chat_system::directory::{Directory, DirectoryShape, SharedDirectory};
use chat_system::env::clock::NodeClock;
use chat_system::net::{http_request, FlushIfDirty};
use chat_system::{api, data, gateway, guild};
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use madsim::runtime::Handle;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 1_000;
const SENDERS: usize = 4;
const MESSAGES_PER_SENDER: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(30);

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
}

async fn listen(addr: SocketAddr) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => panic!("bind {addr}: {error}"),
    }
}

/// Starts guild, gateway and API hosts beside `ring`; the topology.
fn start_roles(ring: &RingCluster, directory: &Directory) -> Topology {
    let topology = Topology {
        ring: ring.addrs.clone(),
        api: vec![SocketAddr::new(ip(2, 1), 8080)],
        guild: vec![SocketAddr::new(ip(3, 1), 7100)],
        data: vec![SocketAddr::new(ip(5, 1), 7300)],
        gateway_http: SocketAddr::new(ip(4, 1), 8081),
        gateway_rpc: SocketAddr::new(ip(4, 1), 7200),
    };
    let handle = Handle::current();
    let (t, d) = (topology.clone(), directory.clone());
    handle
        .create_node()
        .name("guild")
        .ip(topology.guild[0].ip())
        .init(move || {
            let config = t.guild_config(0, SharedDirectory::new(d.clone()), NodeClock::new());
            let addr = t.guild[0];
            async move { guild::run(listen(addr).await, config).await }
        })
        .build();
    let (t, d) = (topology.clone(), directory.clone());
    handle
        .create_node()
        .name("gateway")
        .ip(topology.gateway_http.ip())
        .init(move || {
            // Heartbeats every 60 s: the run is shorter, so the clients need not send them.
            let config = t.gateway_config(SharedDirectory::new(d.clone()), 60_000);
            let (http, rpc) = (t.gateway_http, t.gateway_rpc);
            async move { gateway::run(listen(http).await, listen(rpc).await, config).await }
        })
        .build();
    let t = topology.clone();
    handle
        .create_node()
        .name("data")
        .ip(topology.data[0].ip())
        .init(move || {
            let (store, addr) = (t.data_store(NodeClock::new()), t.data[0]);
            async move { data::run(listen(addr).await, store).await }
        })
        .build();
    let (t, d) = (topology.clone(), directory.clone());
    handle
        .create_node()
        .name("api")
        .ip(topology.api[0].ip())
        .init(move || {
            let config = t.api_config(0, SharedDirectory::new(d.clone()), NodeClock::new());
            let addr = t.api[0];
            async move { api::run(listen(addr).await, config).await }
        })
        .build();
    topology
}

type Ws = tokio_tungstenite::WebSocketStream<FlushIfDirty<TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next()).await;
        match message {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text).expect("JSON payload");
            }
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no payload: {other:?}"),
        }
    }
}

async fn open(gateway: SocketAddr) -> Ws {
    let stream = TcpStream::connect(gateway).await.expect("gateway accepts");
    let url = format!("ws://{gateway}/gateway?v=10&encoding=json");
    let (mut ws, _) = tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
        .await
        .expect("websocket handshake");
    assert_eq!(next_json(&mut ws).await["op"], 10);
    ws
}

async fn send(ws: &mut Ws, payload: Value) {
    ws.send(Message::Text(payload.to_string().into()))
        .await
        .expect("payload sent");
}

/// What one session saw: MESSAGE_CREATE (id, s) pairs in arrival order, and every dispatch's
/// `s` after GUILD_CREATE (RESUMED included).
#[derive(Debug, Default)]
struct Seen {
    creates: Vec<(u64, u64)>,
    s: Vec<u64>,
    /// RESUMED's `s`, and how many MESSAGE_CREATEs the resume replayed before it.
    resumed: Option<(u64, usize)>,
}

/// One session: identify, report ready, then read `expected` MESSAGE_CREATEs. With
/// `drop_after = Some(k)` it drops its connection after the k-th, waits, and resumes on a new
/// connection from the last `s` it saw.
async fn session(
    gateway: SocketAddr,
    token: String,
    ready: mpsc::Sender<()>,
    expected: usize,
    drop_after: Option<usize>,
) -> Seen {
    // 1. Connect, Hello, Identify, READY, GUILD_CREATE.
    let mut ws = open(gateway).await;
    let identify = json!({"op": 2, "d": {
        "token": token, "intents": 513 | 32768,
        "properties": {"os": "sim", "browser": "fanout", "device": "fanout"},
    }});
    send(&mut ws, identify).await;
    let ready_payload = next_json(&mut ws).await;
    assert_eq!(ready_payload["t"], "READY");
    assert_eq!(
        ready_payload["d"]["resume_gateway_url"],
        format!("ws://{gateway}/gateway")
    );
    let session_id = ready_payload["d"]["session_id"].clone();
    assert_eq!(next_json(&mut ws).await["t"], "GUILD_CREATE");
    ready.send(()).await.expect("the test waits");

    // 2. The messages, exactly as many as were sent, across one resume if asked.
    let mut seen = Seen::default();
    let (mut last_s, mut resumed, mut saw_resumed) = (2, false, false);
    while seen.creates.len() < expected || (resumed && !saw_resumed) {
        if drop_after == Some(seen.creates.len()) && !resumed {
            resumed = true;
            drop(ws);
            tokio::time::sleep(Duration::from_millis(50)).await;
            ws = open(gateway).await;
            let resume = json!({"op": 6, "d": {
                "token": token, "session_id": session_id, "seq": last_s,
            }});
            send(&mut ws, resume).await;
            // A marker: the resume happened here.
            seen.s.push(0);
        }
        let payload = next_json(&mut ws).await;
        let s = payload["s"].as_u64().expect("a dispatch has s");
        seen.s.push(s);
        last_s = s;
        if payload["t"] == "RESUMED" {
            saw_resumed = true;
            let marker = seen.s.iter().position(|&s| s == 0).unwrap_or(0);
            let replayed = seen.s.len() - marker - 2;
            seen.resumed = Some((s, replayed));
            continue;
        }
        assert_eq!(payload["t"], "MESSAGE_CREATE", "{payload}");
        let id = payload["d"]["id"].as_str().and_then(|id| id.parse().ok());
        seen.creates.push((id.expect("a snowflake id"), s));
    }

    // 3. Nothing more arrives: one extra would be a duplicate.
    let extra = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(extra.is_err(), "an extra payload: {extra:?}");
    seen
}

/// Posts `count` messages as `token` to `channel`, 20 ms apart; the acknowledged ids.
async fn sender(api: SocketAddr, token: String, channel: u64, count: usize) -> Vec<u64> {
    let mut acked = Vec::new();
    for n in 0..count {
        let body = json!({"content": format!("{token} {n}")})
            .to_string()
            .into_bytes();
        let auth = format!("Bot {token}");
        let path = format!("/api/v10/channels/{channel}/messages");
        let answer = http_request(api, Method::POST, &path, Some(&auth), Some(body), TIMEOUT).await;
        let (status, bytes) = answer.expect("the API answers");
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let message: Value = serde_json::from_slice(&bytes).expect("a message object");
        let id = message["id"].as_str().and_then(|id| id.parse().ok());
        acked.push(id.expect("a snowflake id"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

/// Runs the cluster with `SESSIONS` sessions of one guild; `drop_after(i)` tells whether
/// session `i` drops and resumes. Returns the acknowledged ids (sorted) and what each saw.
fn fan_out(seed: u64, drop_after: fn(usize) -> Option<usize>) -> (Vec<u64>, Vec<Seen>) {
    let (tx, rx) = std::sync::mpsc::channel();
    simulate(seed, move || async move {
        // 1. The cluster: 1,000 users, all in one guild with one channel.
        let day_ago_ms = NodeClock::new().now_ms() - 24 * 60 * 60 * 1000;
        let directory = Directory::generate(&DirectoryShape {
            user_count: SESSIONS,
            guild_count: 1,
            channels_per_guild: 1,
            created_unix_ms: day_ago_ms,
        });
        let guild = directory.guilds.values().next().expect("a guild").clone();
        assert_eq!(guild.members.len(), SESSIONS);
        let channel = guild.channels[0].id;
        let tokens: Vec<String> = directory.users.values().map(|u| u.token.clone()).collect();
        let ring = RingCluster::start(&RingShape::default());
        let topology = start_roles(&ring, &directory);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // 2. Every session identifies, then the senders post concurrently.
        let expected = SENDERS * MESSAGES_PER_SENDER;
        let (gateway, api) = (topology.gateway_http, topology.api[0]);
        let (mut acked, seen) = ring
            .on_client(async move {
                let (ready_tx, mut ready_rx) = mpsc::channel(SESSIONS);
                let mut sessions = Vec::new();
                for (index, token) in tokens.iter().enumerate() {
                    let ready = ready_tx.clone();
                    let task = session(gateway, token.clone(), ready, expected, drop_after(index));
                    sessions.push(tokio::spawn(task));
                }
                for _ in 0..SESSIONS {
                    ready_rx.recv().await.expect("every session gets ready");
                }
                let senders: Vec<_> = tokens[..SENDERS]
                    .iter()
                    .map(|token| {
                        let task = sender(api, token.clone(), channel, MESSAGES_PER_SENDER);
                        tokio::spawn(task)
                    })
                    .collect();
                let mut acked = Vec::new();
                for sender in senders {
                    acked.extend(sender.await.expect("sender finished"));
                }
                let mut seen = Vec::new();
                for session in sessions {
                    seen.push(session.await.expect("session finished"));
                }
                (acked, seen)
            })
            .await;
        acked.sort_unstable();
        assert_eq!(acked.len(), expected);
        tx.send((acked, seen)).expect("the test waits");
    });
    rx.recv().expect("the simulation reports")
}

/// Checks that every session got each acknowledged id once, in id order, and `s` rose by
/// one from 3 (READY 1, GUILD_CREATE 2), RESUMED included.
fn assert_exactly_once_in_order(acked: &[u64], seen: &[Seen]) {
    assert_eq!(seen.len(), SESSIONS);
    let mut deliveries: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, got) in seen.iter().enumerate() {
        let ids: Vec<u64> = got.creates.iter().map(|&(id, _)| id).collect();
        assert_eq!(
            ids, acked,
            "session {index}: each message once, in id order"
        );
        let s: Vec<u64> = got.s.iter().copied().filter(|&s| s != 0).collect();
        let rising: Vec<u64> = (3..).take(s.len()).collect();
        assert_eq!(s, rising, "session {index}: s rises by one");
        for id in ids {
            *deliveries.entry(id).or_default() += 1;
        }
    }
    assert!(deliveries.values().all(|&count| count == SESSIONS));
    assert_eq!(deliveries.len(), acked.len());
}

#[test]
fn fanout_to_1000_sessions_of_one_guild_delivers_each_message_once_in_id_order() {
    let (acked, seen) = fan_out(7, |_| None);
    assert_exactly_once_in_order(&acked, &seen);
    assert!(
        seen.iter().all(|got| !got.s.contains(&0)),
        "no session resumed"
    );
}

#[test]
fn sessions_that_drop_mid_stream_and_resume_still_get_each_message_once_in_order() {
    // Every third session drops after its 1st to 7th message and resumes 50 ms later.
    let (acked, seen) = fan_out(11, |index| (index % 3 == 0).then_some(1 + index % 7));
    assert_exactly_once_in_order(&acked, &seen);
    let resumed = seen.iter().filter(|got| got.s.contains(&0)).count();
    assert_eq!(resumed, SESSIONS.div_ceil(3));
    // A resumed session saw RESUMED: one more `s` than messages after GUILD_CREATE; and
    // resumes replayed what their sessions missed while away.
    let mut replayed = 0;
    for got in seen.iter().filter(|got| got.s.contains(&0)) {
        assert_eq!(got.s.iter().filter(|&&s| s != 0).count(), acked.len() + 1);
        replayed += got.resumed.map_or(0, |(_, count)| count);
    }
    assert!(replayed > 0, "no resume replayed anything");
}
