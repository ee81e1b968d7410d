//! The REST API against the real roles on loopback: three ring nodes, the guild role, a
//! gateway and one or two API nodes, each on its own 127.0.0.1 port in this process, driven
//! over HTTP/1.1 and WebSocket as a client library drives them. The store is read directly to
//! check what was and was not stored.
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_system::api::ratelimit::{Limit, RateLimits};
use chat_system::api::{self, ApiConfig};
use chat_system::cluster::Topology;
use chat_system::directory::{self, Directory, DirectoryShape, SharedDirectory};
use chat_system::env::clock::NodeClock;
use chat_system::env::disk::{Disk, RealDisk};
use chat_system::gateway;
use chat_system::ids;
use chat_system::model::StoredMessage;
use chat_system::net::{http_request, http_request_with, FlushIfDirty, HttpError};
use chat_system::ring::client::{HistoryQuery, StoreClient};
use chat_system::ring::{self, Consistency};
use chat_system::store::ring::RingStore;
use chat_system::{data, guild};
use futures_util::SinkExt;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/ws.rs"]
mod ws;

use ws::{next_json as next_event, Ws};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    (listener, addr)
}

/// The roles of one small cluster, in this process.
struct Cluster {
    topology: Topology,
    directory: Directory,
    store: StoreClient,
    /// API nodes, each with its own directory copy; all call the first guild node.
    apis: Vec<SocketAddr>,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// 4 users in 2 guilds of 2 channels, made 60 days ago: users 1 and 3 in guild 1, users 2
    /// and 4 in guild 2, user 1 in both.
    async fn start(api_count: usize, rate_limits: RateLimits) -> Cluster {
        let data = tempfile::tempdir().expect("temp dir");
        let shape = DirectoryShape {
            user_count: 4,
            guild_count: 2,
            channels_per_guild: 2,
            created_unix_ms: NodeClock::new().now_ms() - 60 * 24 * 3600 * 1000,
        };
        let directory = Directory::generate(&shape);

        // 1. Bind everything, so every role knows every address.
        let mut ring_listeners = Vec::new();
        for _ in 0..3 {
            ring_listeners.push(listen().await);
        }
        let (guild_listener, guild_addr) = listen().await;
        let (data_listener, data_addr) = listen().await;
        let (gateway_listener, gateway_http) = listen().await;
        let (dispatch_listener, gateway_rpc) = listen().await;
        let mut api_listeners = Vec::new();
        for _ in 0..api_count {
            api_listeners.push(listen().await);
        }
        let topology = Topology {
            ring: ring_listeners.iter().map(|(_, a)| *a).collect(),
            api: api_listeners.iter().map(|(_, a)| *a).collect(),
            guild: vec![guild_addr],
            data: vec![data_addr],
            gateway_http,
            gateway_rpc,
        };

        // 2. Start the roles, every one with its own directory copy.
        for (index, (listener, _)) in ring_listeners.into_iter().enumerate() {
            let dir = data.path().join(format!("ring-{index}"));
            let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(&dir).expect("a data dir"));
            let config = topology.ring_config(index, disk, NodeClock::new());
            tokio::spawn(ring::node::run(listener, config));
        }
        let copy = || SharedDirectory::new(directory.clone());
        let guild_config = topology.guild_config(0, copy(), NodeClock::new());
        tokio::spawn(guild::run(guild_listener, guild_config));
        let data_store = topology.data_store(NodeClock::new());
        tokio::spawn(data::run(data_listener, data_store));
        let gateway_config = topology.gateway_config(copy(), 30_000);
        tokio::spawn(gateway::run(
            gateway_listener,
            dispatch_listener,
            gateway_config,
        ));
        let mut apis = Vec::new();
        for (index, (listener, addr)) in api_listeners.into_iter().enumerate() {
            let config = ApiConfig {
                rate_limits,
                ..topology.api_config(index, copy(), NodeClock::new())
            };
            tokio::spawn(api::run(listener, config));
            apis.push(addr);
        }
        let store = topology.store_client(NodeClock::new());
        Cluster {
            topology,
            directory,
            store,
            apis,
            _data: data,
        }
    }

    /// The token of user `n` (from 1).
    fn token(&self, n: usize) -> String {
        format!("Bot token-{n}")
    }

    fn user_id(&self, n: usize) -> u64 {
        let name = format!("user-{n}");
        let user = self.directory.users.values().find(|u| u.username == name);
        user.expect("a generated user").id
    }

    /// Channel `c` (from 0) of guild `g` (from 0).
    fn channel(&self, g: usize, c: usize) -> u64 {
        let guild = self.directory.guilds.values().nth(g).expect("a guild");
        guild.channels[c].id
    }

    fn guild(&self, g: usize) -> u64 {
        *self.directory.guilds.keys().nth(g).expect("a guild")
    }

    /// The live messages of `channel_id` in the store, newest first.
    async fn stored(&self, channel_id: u64) -> Vec<StoredMessage> {
        let query = HistoryQuery {
            channel_id,
            before: None,
            limit: 100,
        };
        self.store.history(query).await.expect("the store answers")
    }
}

/// One answer: status, headers and the JSON body (`Null` for an empty body).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> String {
        let value = self.headers.get(name).map(|v| v.to_str().expect("ASCII"));
        value.unwrap_or_default().to_string()
    }

    fn id(&self) -> u64 {
        let id = self.body["id"].as_str();
        id.unwrap_or_else(|| panic!("no id in {} {}", self.status, self.body))
            .parse()
            .expect("a snowflake")
    }
}

/// One request on a fresh connection; `body` is sent as JSON as given (it may be malformed).
async fn call(api: SocketAddr, method: Method, path: &str, token: &str, body: &str) -> Answer {
    let stream = TcpStream::connect(api).await.expect("the API accepts");
    let io = TokioIo::new(FlushIfDirty::new(stream));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", api.to_string());
    if !token.is_empty() {
        request = request.header("authorization", token);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request");
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("a body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Limits no test but the rate limit test reaches.
fn roomy() -> RateLimits {
    let roomy = Limit {
        limit: 10_000,
        period: Duration::from_secs(1),
    };
    RateLimits {
        global: roomy,
        message_create: roomy,
        message_edit: roomy,
        ..RateLimits::default()
    }
}

fn messages_path(channel_id: u64) -> String {
    format!("/api/v10/channels/{channel_id}/messages")
}

async fn send(api: SocketAddr, token: &str, channel_id: u64, content: &str) -> Answer {
    let body = json!({ "content": content }).to_string();
    call(api, Method::POST, &messages_path(channel_id), token, &body).await
}

async fn history(api: SocketAddr, token: &str, channel_id: u64, query: String) -> Vec<String> {
    let path = format!("{}?{query}", messages_path(channel_id));
    let answer = call(api, Method::GET, &path, token, "").await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
    let messages = answer.body.as_array().expect("a list").iter();
    messages
        .map(|m| m["content"].as_str().expect("content").to_string())
        .collect()
}

/// A gateway session of `token`, past READY and its GUILD_CREATEs.
async fn session(gateway: SocketAddr, token: &str, guilds: usize) -> Ws {
    session_with(gateway, token, guilds, 33281).await
}

/// [`session`] asking for `intents`, which include GUILDS.
async fn session_with(gateway: SocketAddr, token: &str, guilds: usize, intents: u64) -> Ws {
    let mut ws = ws::connect(gateway, "").await;
    assert_eq!(next_event(&mut ws).await["op"], 10);
    let properties = json!({"os": "linux", "browser": "rest-test", "device": "rest-test"});
    let identify =
        json!({"op": 2, "d": {"token": token, "intents": intents, "properties": properties}});
    ws.send(Message::Text(identify.to_string().into()))
        .await
        .expect("identify");
    assert_eq!(next_event(&mut ws).await["t"], "READY");
    for _ in 0..guilds {
        assert_eq!(next_event(&mut ws).await["t"], "GUILD_CREATE");
    }
    ws
}

/// Forwards requests to `target` but never forwards the answer: the client times out after
/// the server has acted, as a client behind a broken link does.
async fn black_hole_proxy(target: SocketAddr) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut server = TcpStream::connect(target).await.expect("target");
                let (mut from_client, _to_client) = client.split();
                let (mut from_server, mut to_server) = server.split();
                let upstream = tokio::io::copy(&mut from_client, &mut to_server);
                let mut sink = tokio::io::sink();
                let swallow = tokio::io::copy(&mut from_server, &mut sink);
                let _ = tokio::join!(upstream, swallow);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_nonce_makes_one_message_and_answers_the_first() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));
    let path = messages_path(channel);
    let body = json!({"content": "once", "nonce": "retry-7", "enforce_nonce": true});

    // 1. The first try reaches the server, but its answer is lost: the client times out.
    let proxy = black_hole_proxy(api).await;
    let first = http_request(
        proxy,
        Method::POST,
        &path,
        Some(&token),
        Some(body.to_string().into_bytes()),
        Duration::from_millis(1500),
    )
    .await;
    assert!(matches!(first, Err(HttpError::Timeout { .. })), "{first:?}");

    // 2. The retry answers the message the first try made, and no second one exists.
    let retry = call(api, Method::POST, &path, &token, &body.to_string()).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(
        (retry.body["content"].clone(), retry.body["nonce"].clone()),
        (json!("once"), json!("retry-7"))
    );
    let stored = cluster.stored(channel).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].message_id, retry.id());
    let again = call(api, Method::POST, &path, &token, &body.to_string()).await;
    assert_eq!(again.id(), retry.id());

    // 3. An integer nonce is the same nonce as its decimal string.
    let numeric = json!({"content": "n", "nonce": 12345, "enforce_nonce": true}).to_string();
    let a = call(api, Method::POST, &path, &token, &numeric).await;
    let textual = json!({"content": "n", "nonce": "12345", "enforce_nonce": true}).to_string();
    let b = call(api, Method::POST, &path, &token, &textual).await;
    assert_eq!(a.id(), b.id());

    // 4. Without enforce_nonce, or from another author, the nonce does not deduplicate.
    let loose = json!({"content": "twice", "nonce": "loose"}).to_string();
    let c = call(api, Method::POST, &path, &token, &loose).await;
    let d = call(api, Method::POST, &path, &token, &loose).await;
    assert_ne!(c.id(), d.id());
    let other = call(
        api,
        Method::POST,
        &path,
        &cluster.token(3),
        &body.to_string(),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_ne!(other.id(), retry.id());
    assert_eq!(cluster.stored(channel).await.len(), 5);

    // 5. A new guild process (a restart: empty memory) finds the first send in the store.
    let (listener, restarted) = listen().await;
    let mut moved = cluster.topology.clone();
    moved.guild = vec![restarted];
    let config = moved.guild_config(
        0,
        SharedDirectory::new(cluster.directory.clone()),
        NodeClock::new(),
    );
    tokio::spawn(guild::run(listener, config));
    let (listener, api_b) = listen().await;
    let config = moved.api_config(
        1,
        SharedDirectory::new(cluster.directory.clone()),
        NodeClock::new(),
    );
    tokio::spawn(api::run(listener, config));
    let after_restart = call(api_b, Method::POST, &path, &token, &body.to_string()).await;
    assert_eq!(
        after_restart.status,
        StatusCode::OK,
        "{}",
        after_restart.body
    );
    assert_eq!(after_restart.id(), retry.id());
    assert_eq!(cluster.stored(channel).await.len(), 5);
}

/// A send with `X-Causal-After`, as the id the API gives back (or the refusal).
async fn send_after(api: SocketAddr, token: &str, channel_id: u64, after: &str) -> Answer {
    let body = json!({ "content": "after" }).to_string().into_bytes();
    let headers = [("authorization", token), (api::CAUSAL_AFTER_HEADER, after)];
    let path = messages_path(channel_id);
    let (status, bytes) =
        http_request_with(api, Method::POST, &path, &headers, Some(body), TIMEOUT)
            .await
            .expect("an answer");
    Answer {
        status,
        headers: HeaderMap::new(),
        body: serde_json::from_slice(&bytes).expect("a JSON body"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_ordered_after_the_newest_id_its_author_names() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));
    let first = send(api, &token, channel, "first").await.id();

    // 1. The author saw an id 30 s ahead of this guild node's clock (minted by a node whose
    //    clock runs fast): the new id takes the next millisecond after it.
    let now_ms = NodeClock::new().now_ms();
    let seen = ids::from_timestamp_ms(now_ms + 30_000) | 0x3ff;
    let answer = send_after(api, &token, channel, &seen.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let second = answer.id();
    assert!(second > seen && second > first, "{second} after {seen}");
    assert_eq!(ids::timestamp_ms(second), ids::timestamp_ms(seen) + 1);

    // 2. Later sends without the header stay above it: the guild's ids never go back.
    let third = send(api, &token, channel, "third").await.id();
    assert!(third > second, "{third} after {second}");

    // 3. A header that is not a snowflake, or one over an hour ahead, is refused by name and
    //    stores nothing.
    let bad = send_after(api, &token, channel, "soon").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body["errors"]["X-Causal-After"].is_object(),
        "{}",
        bad.body
    );
    let far = ids::from_timestamp_ms(now_ms + 2 * 3_600_000);
    let ahead = send_after(api, &token, channel, &far.to_string()).await;
    assert_eq!(ahead.status, StatusCode::BAD_REQUEST, "{}", ahead.body);
    let detail = ahead.body["errors"]["X-Causal-After"].to_string();
    assert!(detail.contains("ahead of this node's clock"), "{detail}");
    let stored: Vec<u64> = cluster
        .stored(channel)
        .await
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(stored, vec![third, second, first]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_gets_403_and_nothing_is_stored() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    // User 2 is in guild 2 only; the channel is guild 1's.
    let channel = cluster.channel(0, 1);
    let outsider = cluster.token(2);

    let sent = send(api, &outsider, channel, "let me in").await;
    assert_eq!(sent.status, StatusCode::FORBIDDEN);
    assert_eq!(
        sent.body,
        json!({"message": "Missing Access", "code": 50001})
    );
    let path = messages_path(channel);
    let read = call(api, Method::GET, &path, &outsider, "").await;
    assert_eq!(
        (read.status, read.body["code"].clone()),
        (StatusCode::FORBIDDEN, json!(50001))
    );
    assert!(cluster.stored(channel).await.is_empty());

    // No token, a wrong one, a wrong scheme: 401. An unknown channel: 404.
    for token in ["", "Bot nope", "token-1"] {
        let answer = send(api, token, channel, "x").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token}");
        assert_eq!(
            answer.body,
            json!({"message": "401: Unauthorized", "code": 0})
        );
    }
    let unknown = send(api, &cluster.token(1), 12345, "x").await;
    assert_eq!(
        (unknown.status, unknown.body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(10003))
    );
    assert!(cluster.stored(channel).await.is_empty());

    // A member's send is stored.
    let member = send(api, &cluster.token(3), channel, "hello").await;
    assert_eq!(member.status, StatusCode::OK);
    assert_eq!(cluster.stored(channel).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_before_after_and_around() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));

    // 1. Seven messages through the API: m1 oldest, m7 newest.
    let mut ids = Vec::new();
    for n in 1..=7 {
        ids.push(send(api, &token, channel, &format!("m{n}")).await.id());
    }
    let m = |n: usize| ids[n - 1];
    let page = |query: String| history(api, &token, channel, query);
    assert_eq!(page("limit=3".into()).await, ["m7", "m6", "m5"]);
    assert_eq!(page(format!("before={}&limit=2", m(5))).await, ["m4", "m3"]);
    assert_eq!(
        page(format!("after={}&limit=3", m(2))).await,
        ["m5", "m4", "m3"]
    );
    assert_eq!(page(format!("after={}", m(5))).await, ["m7", "m6"]);
    assert_eq!(
        page(format!("around={}&limit=3", m(4))).await,
        ["m5", "m4", "m3"]
    );
    assert_eq!(
        page(format!("around={}&limit=4", m(4))).await,
        ["m6", "m5", "m4", "m3"]
    );
    assert_eq!(
        page(format!("around={}&limit=5", m(1))).await,
        ["m3", "m2", "m1"]
    );
    assert_eq!(page(format!("around={}&limit=1", m(6))).await, ["m6"]);
    assert_eq!(
        page(format!("after={}&limit=2", m(7))).await,
        Vec::<String>::new()
    );
    assert_eq!(page(format!("before={}", m(1))).await, Vec::<String>::new());

    // 2. Old messages written to the store across buckets: 50, 49.5, 45, 30 and 5 days ago,
    // in the other channel. Three more in one hour 30 days ago make a window fill its page.
    let other = cluster.channel(0, 1);
    let now_ms = NodeClock::new().now_ms();
    let day_ms = 24 * 3600 * 1000;
    let at = [
        (now_ms - 50 * day_ms, "d50"),
        (now_ms - 49 * day_ms - day_ms / 2, "d49"),
        (now_ms - 45 * day_ms, "d45"),
        (now_ms - 30 * day_ms, "d30a"),
        (now_ms - 30 * day_ms + 60_000, "d30b"),
        (now_ms - 30 * day_ms + 120_000, "d30c"),
        (now_ms - 30 * day_ms + 180_000, "d30d"),
        (now_ms - 5 * day_ms, "d5"),
    ];
    let mut old_ids = Vec::new();
    for (n, (ms, content)) in at.iter().enumerate() {
        let message = StoredMessage {
            channel_id: other,
            message_id: ids::from_timestamp_ms(*ms) + n as u64,
            guild_id: cluster.guild(0),
            author_id: cluster.user_id(1),
            content: content.to_string(),
            ..Default::default()
        };
        cluster
            .store
            .put(&message, *ms * 1000)
            .await
            .expect("stored");
        old_ids.push(message.message_id);
    }
    let old = |query: String| history(api, &token, other, query);
    assert_eq!(
        old(format!("after={}&limit=2", old_ids[0])).await,
        ["d45", "d49"]
    );
    assert_eq!(
        old(format!("after={}&limit=3", old_ids[2])).await,
        ["d30c", "d30b", "d30a"]
    );
    assert_eq!(
        old(format!("after={}&limit=2", old_ids[3])).await,
        ["d30c", "d30b"]
    );
    assert_eq!(old(format!("after={}", old_ids[6])).await, ["d5"]);
    assert_eq!(
        old(format!("around={}&limit=4", old_ids[2])).await,
        ["d30b", "d30a", "d45", "d49"]
    );
    assert_eq!(
        old(format!("before={}&limit=2", old_ids[3])).await,
        ["d45", "d49"]
    );
    let everything = old("limit=100".into()).await;
    assert_eq!(everything.len(), 8);
    assert_eq!(everything.first().map(String::as_str), Some("d5"));

    // 3. 150 messages a second apart, 20 days ago, in guild 2's channel: an `after` page of
    // 100 takes several full pages of its window; `around` splits 50 / 50.
    let busy = cluster.channel(1, 0);
    let start_ms = now_ms - 20 * day_ms;
    let mut busy_ids = Vec::new();
    for n in 0..150i64 {
        let message = StoredMessage {
            channel_id: busy,
            message_id: ids::from_timestamp_ms(start_ms + n * 1000),
            guild_id: cluster.guild(1),
            author_id: cluster.user_id(2),
            content: format!("b{n}"),
            ..Default::default()
        };
        cluster
            .store
            .put(&message, start_ms * 1000)
            .await
            .expect("stored");
        busy_ids.push(message.message_id);
    }
    let token_2 = cluster.token(2);
    let busy_page = |query: String| history(api, &token_2, busy, query);
    let expect = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.rev().map(|n| format!("b{n}")).collect()
    };
    let page = busy_page(format!("after={}&limit=100", busy_ids[0])).await;
    assert_eq!(page, expect(1..=100));
    let page = busy_page(format!("around={}&limit=100", busy_ids[60])).await;
    assert_eq!(page, expect(11..=110));
    let page = busy_page(format!("before={}&limit=100", busy_ids[120])).await;
    assert_eq!(page, expect(20..=119));
    let page = busy_page(format!("after={}&limit=100", busy_ids[100])).await;
    assert_eq!(page, expect(101..=149));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_reactions_show_in_history_and_as_dispatches() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (asker, replier) = (cluster.token(3), cluster.token(1));
    let (channel, guild_id) = (cluster.channel(0, 0), cluster.guild(0));
    // GUILDS, GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS and MESSAGE_CONTENT.
    let mut ws = session_with(cluster.topology.gateway_http, "token-1", 2, 33281 | 1024).await;

    // 1. A reply: type 19 with its reference, exactly as Discord shapes it.
    let question = send(api, &asker, channel, "why?").await;
    let question_id = question.id();
    let body =
        json!({"content": "because", "message_reference": {"message_id": question_id.to_string()}});
    let reply = call(
        api,
        Method::POST,
        &messages_path(channel),
        &replier,
        &body.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply_id = reply.id();
    let expected = json!({
        "id": reply_id.to_string(),
        "channel_id": channel.to_string(),
        "guild_id": guild_id.to_string(),
        "author": {"id": cluster.user_id(1).to_string(), "username": "user-1"},
        "content": "because",
        "timestamp": chat_system::model::iso8601_ms(ids::timestamp_ms(reply_id)),
        "edited_timestamp": null,
        "type": 19,
        "pinned": false,
        "tts": false,
        "message_reference": {"type": 0, "message_id": question_id.to_string(),
            "channel_id": channel.to_string(), "guild_id": guild_id.to_string()},
    });
    assert_eq!(reply.body, expected);

    // 2. A reference to no message of this channel is refused by its field; nothing stored.
    let unknown_reference = json!({
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {"message_reference": {"_errors": [
            {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]}},
    });
    let other_channel = cluster.channel(0, 1);
    for reference in [
        json!({"message_id": (question_id + 1).to_string()}),
        json!({"message_id": question_id.to_string(), "channel_id": other_channel.to_string()}),
    ] {
        let body = json!({"content": "lost", "message_reference": reference}).to_string();
        let refused = call(api, Method::POST, &messages_path(channel), &replier, &body).await;
        assert_eq!(
            (refused.status, &refused.body),
            (StatusCode::BAD_REQUEST, &unknown_reference)
        );
    }
    let body = json!({"content": "plain", "message_reference":
        {"message_id": "1", "fail_if_not_exists": false}});
    let plain = call(
        api,
        Method::POST,
        &messages_path(channel),
        &replier,
        &body.to_string(),
    )
    .await;
    assert_eq!(
        (plain.status, plain.body["type"].clone()),
        (StatusCode::OK, json!(0))
    );
    assert!(
        plain.body.get("message_reference").is_none(),
        "{}",
        plain.body
    );
    assert_eq!(cluster.stored(channel).await.len(), 3);

    // 3. Reactions: 204 whether or not they change anything; bad emoji and messages refused.
    let reaction = |message_id: u64, emoji: &str| {
        format!(
            "{}/{message_id}/reactions/{emoji}/@me",
            messages_path(channel)
        )
    };
    let fire = "%F0%9F%94%A5";
    for (token, emoji) in [
        (&replier, fire),
        (&replier, fire),
        (&asker, fire),
        (&asker, "blob:123"),
    ] {
        let put = call(api, Method::PUT, &reaction(question_id, emoji), token, "").await;
        assert_eq!(
            (put.status, put.body.clone()),
            (StatusCode::NO_CONTENT, Value::Null)
        );
    }
    let bad = call(api, Method::PUT, &reaction(question_id, "fire"), &asker, "").await;
    assert_eq!(
        (bad.status, bad.body.clone()),
        (
            StatusCode::BAD_REQUEST,
            json!({"code": 10014, "message": "Unknown Emoji"})
        )
    );
    let missing = call(
        api,
        Method::PUT,
        &reaction(question_id + 1, fire),
        &asker,
        "",
    )
    .await;
    assert_eq!(
        (missing.status, missing.body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(10008))
    );

    // 4. History shows each emoji's count, and `me` for the reader.
    let reactions_seen_by = |token: String| async move {
        let page = call(api, Method::GET, &messages_path(channel), &token, "").await;
        let message = page
            .body
            .as_array()
            .expect("a list")
            .iter()
            .find(|m| m["id"].as_str() == Some(question_id.to_string().as_str()))
            .expect("the question")
            .clone();
        message["reactions"].clone()
    };
    assert_eq!(
        reactions_seen_by(replier.clone()).await,
        json!([{"count": 2, "me": true, "emoji": {"id": null, "name": "🔥"}},
               {"count": 1, "me": false, "emoji": {"id": "123", "name": "blob"}}])
    );
    let removed = call(
        api,
        Method::DELETE,
        &reaction(question_id, "blob:123"),
        &asker,
        "",
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reactions_seen_by(asker.clone()).await,
        json!([{"count": 2, "me": true, "emoji": {"id": null, "name": "🔥"}}])
    );

    // 5. The session saw both creates, three adds (the repeated one made none) and a remove.
    let mut events = Vec::new();
    for _ in 0..7 {
        let event = next_event(&mut ws).await;
        events.push((
            event["t"].as_str().expect("a name").to_string(),
            event["d"].clone(),
        ));
    }
    let names: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "MESSAGE_CREATE",
            "MESSAGE_CREATE",
            "MESSAGE_CREATE",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_REMOVE"
        ]
    );
    assert_eq!(events[1].1["type"], 19);
    assert_eq!(
        events[1].1["message_reference"],
        expected["message_reference"]
    );
    assert_eq!(
        events[3].1,
        json!({"user_id": cluster.user_id(1).to_string(), "channel_id": channel.to_string(),
            "message_id": question_id.to_string(), "guild_id": guild_id.to_string(),
            "emoji": {"id": null, "name": "🔥"}, "burst": false, "type": 0,
            "message_author_id": cluster.user_id(3).to_string()})
    );
    assert_eq!(
        events[6].1,
        json!({"user_id": cluster.user_id(3).to_string(), "channel_id": channel.to_string(),
            "message_id": question_id.to_string(), "guild_id": guild_id.to_string(),
            "emoji": {"id": "123", "name": "blob"}, "burst": false, "type": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_and_delete_show_in_history_and_as_dispatches() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (author, other) = (cluster.token(3), cluster.token(1));
    let channel = cluster.channel(0, 0);
    // User 1 is in both guilds: READY then two GUILD_CREATEs.
    let mut ws = session(cluster.topology.gateway_http, "token-1", 2).await;

    // 1. Create, then edit by the author; another member may not.
    let created = send(api, &author, channel, "first draft").await;
    let id = created.id();
    assert_eq!(created.body["edited_timestamp"], Value::Null);
    let path = format!("{}/{id}", messages_path(channel));
    let body = json!({"content": "final"}).to_string();
    let refused = call(api, Method::PATCH, &path, &other, &body).await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (StatusCode::FORBIDDEN, json!(50005))
    );
    let edited = call(api, Method::PATCH, &path, &author, &body).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(
        (edited.id(), edited.body["content"].clone()),
        (id, json!("final"))
    );
    let edited_at = edited.body["edited_timestamp"]
        .as_str()
        .expect("set")
        .to_string();
    assert!(edited_at.as_str() >= created.body["timestamp"].as_str().expect("a timestamp"));
    let blank = call(api, Method::PATCH, &path, &author, r#"{"content": " "}"#).await;
    assert_eq!(blank.body["code"], 50006);

    // 2. History shows the edit.
    let page = call(api, Method::GET, &messages_path(channel), &author, "").await;
    assert_eq!(page.body[0]["content"], "final");
    assert_eq!(page.body[0]["edited_timestamp"], edited_at.as_str());

    // 3. Delete: not by another member; by the author, 204, and gone from history.
    let refused = call(api, Method::DELETE, &path, &other, "").await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (StatusCode::FORBIDDEN, json!(50013))
    );
    let deleted = call(api, Method::DELETE, &path, &author, "").await;
    assert_eq!(
        (deleted.status, deleted.body.clone()),
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let page = call(api, Method::GET, &messages_path(channel), &author, "").await;
    assert_eq!(page.body, json!([]));
    assert!(cluster.stored(channel).await.is_empty());
    let again = call(api, Method::DELETE, &path, &author, "").await;
    assert_eq!(
        (again.status, again.body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(10008))
    );
    let late_edit = call(api, Method::PATCH, &path, &author, &body).await;
    assert_eq!(late_edit.body["code"], 10008);

    // 4. The session saw create, update and delete, in that order, with rising `s`.
    let create = next_event(&mut ws).await;
    let update = next_event(&mut ws).await;
    let delete = next_event(&mut ws).await;
    assert_eq!(
        [&create["t"], &update["t"], &delete["t"]],
        [
            &json!("MESSAGE_CREATE"),
            &json!("MESSAGE_UPDATE"),
            &json!("MESSAGE_DELETE")
        ]
    );
    assert_eq!(
        [&create["s"], &update["s"], &delete["s"]],
        [&json!(4), &json!(5), &json!(6)]
    );
    assert_eq!(update["d"]["content"], "final");
    assert_eq!(update["d"]["edited_timestamp"], edited_at.as_str());
    let expected = json!({
        "id": id.to_string(),
        "channel_id": channel.to_string(),
        "guild_id": cluster.guild(0).to_string(),
    });
    assert_eq!(delete["d"], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_count_down_and_429_carries_retry_after() {
    let limits = RateLimits {
        message_create: Limit {
            limit: 3,
            period: Duration::from_secs(60),
        },
        ..RateLimits::default()
    };
    let cluster = Cluster::start(1, limits).await;
    let api = cluster.apis[0];
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));

    // 1. Three sends count down 2, 1, 0 in one bucket whose window ends within a minute.
    let mut bucket = String::new();
    for remaining in ["2", "1", "0"] {
        let answer = send(api, &token, channel, "hi").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-ratelimit-limit"), "3");
        assert_eq!(answer.header("x-ratelimit-remaining"), remaining);
        let reset_after: f64 = answer
            .header("x-ratelimit-reset-after")
            .parse()
            .expect("seconds");
        assert!(reset_after > 50.0 && reset_after <= 60.0, "{reset_after}");
        let reset: f64 = answer
            .header("x-ratelimit-reset")
            .parse()
            .expect("Unix seconds");
        let now_s = NodeClock::new().now_ms() as f64 / 1000.0;
        assert!((reset - now_s - reset_after).abs() < 5.0, "{reset} {now_s}");
        bucket = answer.header("x-ratelimit-bucket");
    }
    assert_eq!(bucket.len(), 16);

    // 2. The fourth is refused and not stored.
    let refused = send(api, &token, channel, "one too many").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after = refused.body["retry_after"].as_f64().expect("retry_after");
    assert!(retry_after > 50.0 && retry_after <= 60.0, "{retry_after}");
    assert_eq!(refused.body["global"], false);
    assert_eq!(refused.body["message"], "You are being rate limited.");
    assert_eq!(refused.header("x-ratelimit-remaining"), "0");
    assert_eq!(refused.header("x-ratelimit-scope"), "user");
    assert_eq!(refused.header("x-ratelimit-bucket"), bucket);
    let whole: u64 = refused
        .header("retry-after")
        .parse()
        .expect("whole seconds");
    assert!((51..=60).contains(&whole), "{whole}");
    assert_eq!(cluster.stored(channel).await.len(), 3);

    // 3. Another channel, another user and another route have their own windows.
    assert_eq!(
        send(api, &token, cluster.channel(0, 1), "x").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(api, &cluster.token(3), channel, "x").await.status,
        StatusCode::OK
    );
    let read = call(api, Method::GET, &messages_path(channel), &token, "").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.header("x-ratelimit-limit"), "50");
    assert_ne!(read.header("x-ratelimit-bucket"), bucket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_and_the_server_keeps_serving() {
    let cluster = Cluster::start(1, roomy()).await;
    let api = cluster.apis[0];
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));
    let path = messages_path(channel);

    // 1. Malformed JSON: 50109, naming where it broke.
    let answer = call(api, Method::POST, &path, &token, r#"{"content": "hi""#).await;
    assert_eq!(
        (answer.status, answer.body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(50109))
    );
    assert!(answer.body["message"]
        .as_str()
        .expect("text")
        .contains("line 1 column"));

    // 2. A bad snowflake in the path or the query, a limit out of range, an unknown field.
    let form_error = |answer: &Answer, field: &str| {
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.body["code"], 50035);
        assert_eq!(answer.body["message"], "Invalid Form Body");
        let detail = &answer.body["errors"][field]["_errors"][0];
        detail["code"].as_str().expect("a code").to_string()
    };
    let answer = call(
        api,
        Method::GET,
        "/api/v10/channels/abc/messages",
        &token,
        "",
    )
    .await;
    assert_eq!(form_error(&answer, "channel_id"), "NUMBER_TYPE_COERCE");
    let answer = send(api, &token, 0, "x").await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "0 is a snowflake, of no channel"
    );
    let message_path = format!("{path}/12x");
    let answer = call(
        api,
        Method::PATCH,
        &message_path,
        &token,
        r#"{"content": "x"}"#,
    )
    .await;
    assert_eq!(form_error(&answer, "message_id"), "NUMBER_TYPE_COERCE");
    let answer = call(api, Method::GET, "/api/v10/guilds/g1", &token, "").await;
    assert_eq!(form_error(&answer, "guild_id"), "NUMBER_TYPE_COERCE");
    for (query, field, code) in [
        ("limit=0", "limit", "NUMBER_TYPE_MIN"),
        ("limit=101", "limit", "NUMBER_TYPE_MAX"),
        ("before=yesterday", "before", "NUMBER_TYPE_COERCE"),
        ("around=-5", "around", "NUMBER_TYPE_COERCE"),
    ] {
        let answer = call(api, Method::GET, &format!("{path}?{query}"), &token, "").await;
        assert_eq!(form_error(&answer, field), code, "{query}");
    }
    let answer = call(
        api,
        Method::POST,
        &path,
        &token,
        r#"{"content": "x", "colour": 3}"#,
    )
    .await;
    assert_eq!(form_error(&answer, "colour"), "BASE_TYPE_INVALID");
    let answer = call(
        api,
        Method::POST,
        &path,
        &token,
        r#"{"content": "x", "nonce": "#,
    )
    .await;
    assert_eq!(answer.body["code"], 50109);
    let long = json!({"content": "x", "nonce": "n".repeat(26)}).to_string();
    let answer = call(api, Method::POST, &path, &token, &long).await;
    assert_eq!(form_error(&answer, "nonce"), "BASE_TYPE_MAX_LENGTH");
    assert!(cluster.stored(channel).await.is_empty());

    // 3. The server still serves.
    let sent = send(api, &token, channel, "still here").await;
    assert_eq!(sent.status, StatusCode::OK);
    assert_eq!(
        history(api, &token, channel, "limit=100".into()).await,
        ["still here"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guilds_channels_and_members_propagate_through_the_log() {
    let cluster = Cluster::start(2, roomy()).await;
    let (a, b) = (cluster.apis[0], cluster.apis[1]);
    let (owner, joiner) = (cluster.token(3), cluster.token(4));
    let joiner_id = cluster.user_id(4);
    // User 3 is in guild 1, user 4 in guild 2: one GUILD_CREATE each at identify.
    let mut owner_ws = session(cluster.topology.gateway_http, "token-3", 1).await;
    let mut joiner_ws = session(cluster.topology.gateway_http, "token-4", 1).await;

    // 1. A guild made through API node A; node B learns of it on its first miss.
    let made = call(
        a,
        Method::POST,
        "/api/v10/guilds",
        &owner,
        r#"{"name": "new"}"#,
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let guild_id = made.id();
    let channel: u64 = made.body["channels"][0]["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("id");
    assert_eq!(made.body["channels"][0]["name"], "general");
    assert_eq!(made.body["owner_id"], cluster.user_id(3).to_string());
    let event = next_event(&mut owner_ws).await;
    assert_eq!(
        (event["t"].clone(), event["d"]["id"].clone()),
        (json!("GUILD_CREATE"), json!(guild_id.to_string()))
    );
    let seen = call(
        b,
        Method::GET,
        &format!("/api/v10/guilds/{guild_id}"),
        &owner,
        "",
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert_eq!(seen.body["name"], "new");

    // 2. The joiner is refused until added; then B lets them send after catching up.
    assert_eq!(
        send(b, &joiner, channel, "early").await.status,
        StatusCode::FORBIDDEN
    );
    let member_path = format!("/api/v10/guilds/{guild_id}/members/{joiner_id}");
    let added = call(a, Method::PUT, &member_path, &owner, "").await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["user"]["id"], joiner_id.to_string());
    let twice = call(a, Method::PUT, &member_path, &owner, "").await;
    assert_eq!(twice.status, StatusCode::NO_CONTENT);
    let sent = send(b, &joiner, channel, "joined").await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);

    // 3. The joiner's live session was subscribed: the guild, then the message.
    let welcome = next_event(&mut joiner_ws).await;
    assert_eq!(
        (welcome["t"].clone(), welcome["d"]["id"].clone()),
        (json!("GUILD_CREATE"), json!(guild_id.to_string()))
    );
    let member_add = next_event(&mut joiner_ws).await;
    assert_eq!(member_add["t"], "GUILD_MEMBER_ADD");
    let message = next_event(&mut joiner_ws).await;
    assert_eq!(
        (message["t"].clone(), message["d"]["content"].clone()),
        (json!("MESSAGE_CREATE"), json!("joined"))
    );
    assert_eq!(next_event(&mut owner_ws).await["t"], "GUILD_MEMBER_ADD");

    // 4. A channel made by the new member through B; A learns of it when asked to send there.
    let path = format!("/api/v10/guilds/{guild_id}/channels");
    let made = call(
        b,
        Method::POST,
        &path,
        &joiner,
        r#"{"name": "second", "type": 0}"#,
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["guild_id"], guild_id.to_string());
    let second = made.id();
    assert_eq!(send(a, &owner, second, "on a").await.status, StatusCode::OK);
    assert_eq!(next_event(&mut owner_ws).await["t"], "MESSAGE_CREATE");
    assert_eq!(next_event(&mut owner_ws).await["t"], "CHANNEL_CREATE");

    // 5. A third channel through B: A's guild reads read the log, so A lists it at once.
    let made = call(b, Method::POST, &path, &joiner, r#"{"name": "third"}"#).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let listed = call(a, Method::GET, &path, &owner, "").await;
    let names: Vec<&str> = listed
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["general", "second", "third"]);
    let seen = call(
        a,
        Method::GET,
        &format!("/api/v10/guilds/{guild_id}"),
        &owner,
        "",
    )
    .await;
    assert_eq!(seen.body["channels"].as_array().map(Vec::len), Some(3));
    let members = call(
        a,
        Method::GET,
        &format!("/api/v10/guilds/{guild_id}/members?limit=10"),
        &owner,
        "",
    )
    .await;
    assert_eq!(members.body.as_array().map(Vec::len), Some(2));

    // 6. The log holds it all: a fresh copy catches up to the same guild.
    let fresh = SharedDirectory::new(cluster.directory.clone());
    let changed = directory::catch_up(&fresh, &RingStore::new(cluster.store.clone()))
        .await
        .expect("the log reads");
    assert_eq!(changed, 4, "guild, member, two channels");
    let guild = fresh.read().guilds[&guild_id].clone();
    assert_eq!(guild.members.len(), 2);
    assert_eq!(
        guild
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["general", "second", "third"]
    );

    // 7. Unknown guilds and users are 404; a non-member's guild read is 403.
    let unknown = call(a, Method::GET, "/api/v10/guilds/424242", &owner, "").await;
    assert_eq!(
        (unknown.status, unknown.body["code"].clone()),
        (StatusCode::NOT_FOUND, json!(10004))
    );
    let nobody = call(
        a,
        Method::PUT,
        &format!("/api/v10/guilds/{guild_id}/members/99"),
        &owner,
        "",
    )
    .await;
    assert_eq!(nobody.body["code"], 10013);
    let outsider = call(
        a,
        Method::GET,
        &format!("/api/v10/guilds/{guild_id}"),
        &cluster.token(2),
        "",
    )
    .await;
    assert_eq!(
        (outsider.status, outsider.body["code"].clone()),
        (StatusCode::FORBIDDEN, json!(50001))
    );
}

/// Forwards both ways to `target`, but swallows the answers while `mute` is set: the writes
/// arrive, their acknowledgements do not.
async fn muting_proxy(target: SocketAddr, mute: Arc<AtomicBool>) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mute = mute.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.split();
                let (mut from_server, mut to_server) = server.split();
                let upstream = tokio::io::copy(&mut from_client, &mut to_server);
                let downstream = async {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let read = from_server.read(&mut buffer).await.unwrap_or(0);
                        if read == 0 {
                            return;
                        }
                        if mute.load(Ordering::SeqCst) {
                            continue;
                        }
                        if to_client.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                };
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_store_write_timed_out_is_written_again_by_its_retry_not_duplicated() {
    let cluster = Cluster::start(1, roomy()).await;
    let (token, channel) = (cluster.token(1), cluster.channel(0, 0));
    let mut ws = session(cluster.topology.gateway_http, "token-1", 2).await;

    // 1. A guild node whose store acknowledgements can be muted, and an API node using it.
    let mute = Arc::new(AtomicBool::new(false));
    let mut proxies = Vec::new();
    for &ring_node in &cluster.topology.ring {
        proxies.push(muting_proxy(ring_node, mute.clone()).await);
    }
    let (listener, guild_addr) = listen().await;
    let copy = || SharedDirectory::new(cluster.directory.clone());
    let mut muted = cluster.topology.clone();
    muted.guild = vec![guild_addr];
    let config = guild::GuildConfig {
        store: StoreClient::new(proxies, Consistency::Quorum, NodeClock::new()).into(),
        ..muted.guild_config(0, copy(), NodeClock::new())
    };
    tokio::spawn(guild::run(listener, config));
    let (listener, api) = listen().await;
    let config = ApiConfig {
        rate_limits: roomy(),
        ..muted.api_config(1, copy(), NodeClock::new())
    };
    tokio::spawn(api::run(listener, config));

    // 2. A first enforced send in the channel: the new process reads the channel's recent
    // nonces once, while the store still answers.
    let path = messages_path(channel);
    let warm = json!({"content": "warm", "nonce": "n-0", "enforce_nonce": true}).to_string();
    let warm = call(api, Method::POST, &path, &token, &warm).await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.body);
    assert_eq!(next_event(&mut ws).await["d"]["content"], "warm");

    // 3. The write reaches the replicas but no acknowledgement comes back: the send fails
    // (the API gives up on the guild first), and nothing is delivered.
    mute.store(true, Ordering::SeqCst);
    let body = json!({"content": "lost ack", "nonce": "n-1", "enforce_nonce": true}).to_string();
    let first = call(api, Method::POST, &path, &token, &body).await;
    assert_eq!(first.status, StatusCode::GATEWAY_TIMEOUT, "{}", first.body);
    // Every coordinator's deadline passes (3 × 2.5 s) before the guild gives up.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stored = cluster.stored(channel).await;
    assert_eq!(stored.len(), 2, "the write itself arrived: {stored:?}");

    // 4. The retry writes the same row again, delivers it once, and answers it.
    mute.store(false, Ordering::SeqCst);
    let retry = call(api, Method::POST, &path, &token, &body).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(
        (retry.id(), retry.body["content"].clone()),
        (stored[0].message_id, json!("lost ack"))
    );
    assert_eq!(cluster.stored(channel).await.len(), 2);
    let created = next_event(&mut ws).await;
    assert_eq!(created["t"], "MESSAGE_CREATE");
    assert_eq!(created["d"]["id"], retry.id().to_string());
    let again = call(api, Method::POST, &path, &token, &body).await;
    assert_eq!(again.id(), retry.id());

    // 5. Lost again, but this time a newer message is delivered before the retry: the retry
    // answers and stores the first message, which cannot join the live id order. The guild
    // starts a new epoch, so the session is invalidated (op 9) and resyncs from history; a
    // new session then gets the guild's later messages.
    mute.store(true, Ordering::SeqCst);
    let body = json!({"content": "late", "nonce": "n-2", "enforce_nonce": true}).to_string();
    let lost = call(api, Method::POST, &path, &token, &body).await;
    assert_eq!(lost.status, StatusCode::GATEWAY_TIMEOUT, "{}", lost.body);
    tokio::time::sleep(Duration::from_secs(8)).await;
    mute.store(false, Ordering::SeqCst);
    assert_eq!(
        send(api, &token, channel, "newer").await.status,
        StatusCode::OK
    );
    assert_eq!(next_event(&mut ws).await["d"]["content"], "newer");
    let retry = call(api, Method::POST, &path, &token, &body).await;
    assert_eq!(retry.body["content"], "late", "{}", retry.body);
    let invalid = next_event(&mut ws).await;
    assert_eq!(
        (invalid["op"].clone(), invalid["d"].clone()),
        (json!(9), json!(false))
    );
    let mut fresh = session(cluster.topology.gateway_http, "token-1", 2).await;
    assert_eq!(
        send(api, &token, channel, "last").await.status,
        StatusCode::OK
    );
    assert_eq!(next_event(&mut fresh).await["d"]["content"], "last");
    let contents: Vec<String> = cluster
        .stored(channel)
        .await
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents, ["last", "newer", "late", "lost ack", "warm"]);
}

/// Starts `chatd` on `data_dir` with ephemeral ports; its API and gateway addresses once it
/// says it is ready.
fn start_chatd(data_dir: &std::path::Path) -> (std::process::Child, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "--port-base",
            "0",
            "--users",
            "4",
            "--guilds",
            "1",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("chatd starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut api, mut gateway) = (None, None);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("chatd's stdout");
        let address = |prefix: &str| -> Option<SocketAddr> {
            line.strip_prefix(prefix)?.split('/').next()?.parse().ok()
        };
        api = api.or_else(|| address("chatd api http://"));
        gateway = gateway.or_else(|| address("chatd gateway ws://"));
        if line == "chatd ready" {
            break;
        }
    }
    let api = api.expect("the API address is printed");
    (child, api, gateway.expect("the gateway address is printed"))
}

fn stop_chatd(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    assert!(child.wait().expect("chatd exits").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatd_knows_guilds_made_over_rest_after_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let token = "Bot token-1";

    // 1. A guild with a second channel, made over REST.
    let (child, api, _) = start_chatd(data.path());
    let made = call(
        api,
        Method::POST,
        "/api/v10/guilds",
        token,
        r#"{"name": "kept"}"#,
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let guild_id = made.id();
    let path = format!("/api/v10/guilds/{guild_id}/channels");
    let channel = call(api, Method::POST, &path, token, r#"{"name": "later"}"#).await;
    assert_eq!(channel.status, StatusCode::CREATED, "{}", channel.body);
    stop_chatd(child);

    // 2. After a restart on the same data dir it is still there, and usable.
    let (child, api, gateway) = start_chatd(data.path());
    let seen = call(
        api,
        Method::GET,
        &format!("/api/v10/guilds/{guild_id}"),
        token,
        "",
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    let names: Vec<&str> = seen.body["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["general", "later"]);
    let sent = send(api, token, channel.id(), "after the restart").await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let page = history(api, token, channel.id(), "limit=5".into()).await;
    assert_eq!(page, ["after the restart"]);

    // 3. A new session of the owner gets both guilds.
    let mut ws = session(gateway, "token-1", 2).await;
    ws.close(None).await.expect("closes");
    stop_chatd(child);
}
