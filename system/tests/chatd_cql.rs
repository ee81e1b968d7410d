//! `chatd --store cql://...` end to end on a real Apache Cassandra: the binary as a process,
//! a guild and a channel made over REST, a real WebSocket session, messages sent over REST
//! and read back live and from history (latest, `after`, `around`), an edit and a delete,
//! then a clean stop (SIGTERM) and a restart on the same
//! keyspace that still serves the history and the guild. A cluster file whose `store` names
//! Cassandra runs its data, guild, gateway and API processes without a ring node.
//!
//! Cassandra comes from `support/cassandra.rs`: `CHAT_CQL_NODES` names a running one, or
//! `.ci/cassandra/start` starts one for this test binary. Every run uses a keyspace of its
//! own, so reruns against a long-lived node never meet earlier rows. Without a Cassandra the
//! test fails naming why; it never skips.
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_system::directory::{Directory, User};
use chat_system::net::http_request;
use futures_util::SinkExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/cassandra.rs"]
mod cassandra_node;
#[path = "support/process.rs"]
mod process;
#[path = "support/ws.rs"]
mod ws;

use process::Process;
use ws::{next_json, Ws};

const TIMEOUT: Duration = Duration::from_secs(15);
/// Messages sent through REST.
const SENDS: usize = 10;

/// A running chatd; killed when dropped if it has not stopped.
struct Chatd {
    process: Process,
    /// Its API address, if it runs an API node.
    api: Option<SocketAddr>,
    /// Its gateway address, if it runs the gateway.
    gateway: Option<SocketAddr>,
    /// What it printed up to "chatd ready".
    banner: Vec<String>,
}

impl Chatd {
    /// Starts chatd on `store` with its directory in `data_dir`, and waits until it is ready.
    /// Its heartbeat interval (2 min) outlasts the test, so the session needs no heartbeats.
    fn start(store: &str, data_dir: &Path) -> Chatd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command
            .args(["--store", store, "--port-base", "0", "--users", "3"])
            .args(["--guilds", "1", "--heartbeat-interval-ms", "120000"])
            .arg("--data-dir")
            .arg(data_dir);
        Self::spawn(command, "chatd")
    }

    /// Starts node `name` of the cluster file `file`, and waits until it is ready.
    fn start_node(file: &Path, name: &str) -> Chatd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command.arg("--cluster").arg(file).args(["--node", name]);
        Self::spawn(command, name)
    }

    /// Runs `command` and reads what it prints up to "chatd ready". Opening the keyspace and
    /// its tables takes a few seconds on a fresh node.
    fn spawn(command: Command, name: &str) -> Chatd {
        let process = Process::spawn(command, name, Duration::from_secs(60));
        Chatd {
            api: process.addr("chatd api http://"),
            gateway: process.addr("chatd gateway ws://"),
            banner: process.banner.clone(),
            process,
        }
    }

    /// Stops chatd with SIGTERM, as a service manager does; its exit status and what it
    /// printed from then on.
    fn terminate(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.process.signal("-TERM")
    }
}

/// A REST call as `user`; the status and the JSON answer.
async fn call(
    api: SocketAddr,
    method: Method,
    path: &str,
    user: &User,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let auth = format!("Bot {}", user.token);
    let body = body.map(|b| b.to_string().into_bytes());
    let (status, bytes) = http_request(api, method, path, Some(&auth), body, TIMEOUT)
        .await
        .expect("the API answers");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Posts `content` to `path` as `user`, waiting out a 429 by its `retry_after`; the message.
async fn send(api: SocketAddr, path: &str, user: &User, content: &str) -> Value {
    loop {
        let body = json!({ "content": content });
        let (status, reply) = call(api, Method::POST, path, user, Some(body)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = reply["retry_after"].as_f64().expect("retry_after");
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{reply}");
        return reply;
    }
}

fn snowflake(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a string snowflake, got {value}"))
}

/// The next dispatch (op 0), skipping heartbeat ACKs; `None` if none comes within `wait`.
async fn next_dispatch(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let payload = tokio::time::timeout_at(deadline, next_json(ws))
            .await
            .ok()?;
        if payload["op"] == 0 {
            return Some(payload);
        }
    }
}

/// Connects and identifies as `user`; READY's `s` (1).
async fn identify(gateway: SocketAddr, user: &User) -> Ws {
    let mut ws = ws::connect(gateway, "").await;
    assert_eq!(next_json(&mut ws).await["op"], 10, "Hello first");
    let identify = json!({"op": 2, "d": {
        "token": user.token, "intents": 33281,
        "properties": {"os": "linux", "browser": "test", "device": "test"},
    }});
    ws.send(Message::Text(identify.to_string().into()))
        .await
        .expect("identify sent");
    let ready = next_json(&mut ws).await;
    assert_eq!(
        (ready["t"].clone(), ready["s"].clone()),
        (json!("READY"), json!(1))
    );
    ws
}

/// The channel's history through REST, newest first, as (id, content).
async fn history(api: SocketAddr, channel: u64, user: &User) -> Vec<(u64, String)> {
    let path = format!("/api/v10/channels/{channel}/messages?limit=100");
    let (status, page) = call(api, Method::GET, &path, user, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page = page.as_array().expect("an array").clone();
    page.iter()
        .map(|m| {
            (
                snowflake(&m["id"]),
                m["content"].as_str().expect("content").to_string(),
            )
        })
        .collect()
}

/// The ids of a history page with `query` (`after=...&limit=...`), newest first.
async fn page(api: SocketAddr, channel: u64, user: &User, query: &str) -> Vec<u64> {
    let path = format!("/api/v10/channels/{channel}/messages?{query}");
    let (status, page) = call(api, Method::GET, &path, user, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page = page.as_array().expect("an array").clone();
    page.iter().map(|m| snowflake(&m["id"])).collect()
}

/// A keyspace no earlier run used.
fn fresh_keyspace() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    format!("chat_e2e_{}_{}", std::process::id(), ms % 1_000_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatd_on_cassandra_sends_live_and_keeps_history_across_a_restart() {
    // 1. Cassandra, a keyspace of this run's own, and chatd on it.
    let nodes = cassandra().await;
    let store = format!("cql://{}/{}", nodes.join(","), fresh_keyspace());
    let data = tempfile::tempdir().expect("temp dir");
    let mut chatd = Chatd::start(&store, data.path());
    assert!(
        chatd
            .banner
            .iter()
            .any(|l| l.starts_with("chatd store cql://")),
        "{:?}",
        chatd.banner
    );
    assert!(
        !chatd
            .banner
            .iter()
            .any(|l| l.starts_with("chatd ring node")),
        "no ring node starts on the CQL store: {:?}",
        chatd.banner
    );
    let directory: Directory = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("directory.json")).expect("directory.json"),
    )
    .expect("a directory");
    let owner = directory.users.values().next().expect("a user").clone();
    let api = chatd.api.expect("an API node");
    let gateway = chatd.gateway.expect("a gateway");

    // 2. A live session first: READY (s 1), then the generated guild (s 2).
    let mut ws = identify(gateway, &owner).await;
    let first = next_dispatch(&mut ws, TIMEOUT).await.expect("GUILD_CREATE");
    assert_eq!(
        (first["t"].clone(), first["s"].clone()),
        (json!("GUILD_CREATE"), json!(2))
    );

    // 3. A guild and a second channel through REST; both go to the directory log in CQL.
    let (status, guild) = call(
        api,
        Method::POST,
        "/api/v10/guilds",
        &owner,
        Some(json!({"name": "cassandra guild"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{guild}");
    let guild_id = snowflake(&guild["id"]);
    let path = format!("/api/v10/guilds/{guild_id}/channels");
    let body = json!({"name": "e2e", "type": 0});
    let (status, channel) = call(api, Method::POST, &path, &owner, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let channel_id = snowflake(&channel["id"]);

    // 4. SENDS messages through REST, each acknowledged with its id.
    let messages = format!("/api/v10/channels/{channel_id}/messages");
    let mut sent = Vec::new();
    for n in 0..SENDS {
        let content = format!("cql message {n}");
        let message = send(api, &messages, &owner, &content).await;
        assert_eq!(message["content"], content.as_str());
        sent.push((snowflake(&message["id"]), content));
    }

    // 5. The session got every dispatch with `s` rising by one from 3: the guild's and the
    //    channel's creation, then exactly the SENDS messages in order, and nothing more.
    let mut dispatches = Vec::new();
    while let Some(dispatch) = next_dispatch(&mut ws, Duration::from_secs(2)).await {
        dispatches.push(dispatch);
    }
    let seqs: Vec<u64> = dispatches
        .iter()
        .map(|d| d["s"].as_u64().expect("s"))
        .collect();
    let expected_seqs: Vec<u64> = (3..3 + 2 + SENDS as u64).collect();
    assert_eq!(seqs, expected_seqs);
    let names: Vec<&str> = dispatches
        .iter()
        .map(|d| d["t"].as_str().expect("t"))
        .collect();
    assert_eq!(names[..2], ["GUILD_CREATE", "CHANNEL_CREATE"]);
    let live: Vec<(u64, String)> = dispatches[2..]
        .iter()
        .map(|d| {
            assert_eq!(d["t"], "MESSAGE_CREATE");
            assert_eq!(snowflake(&d["d"]["channel_id"]), channel_id);
            let content = d["d"]["content"].as_str().expect("content").to_string();
            (snowflake(&d["d"]["id"]), content)
        })
        .collect();
    assert_eq!(live, sent);

    // 6. History holds the same ids, newest first; `after` and `around` pages too.
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(history(api, channel_id, &owner).await, newest_first);
    let query = format!("after={}&limit=3", sent[2].0);
    let after = page(api, channel_id, &owner, &query).await;
    assert_eq!(after, [sent[5].0, sent[4].0, sent[3].0]);
    let query = format!("around={}&limit=4", sent[5].0);
    let around = page(api, channel_id, &owner, &query).await;
    assert_eq!(around, [sent[7].0, sent[6].0, sent[5].0, sent[4].0]);

    // 7. An edit and a delete, each read back with its write time from CQL and outdone:
    //    MESSAGE_UPDATE and MESSAGE_DELETE follow with the next `s`, and history shows both.
    let edit_path = format!("{messages}/{}", sent[1].0);
    let body = json!({"content": "edited on cassandra"});
    let (status, edited) = call(api, Method::PATCH, &edit_path, &owner, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert!(edited["edited_timestamp"].is_string(), "{edited}");
    let delete_path = format!("{messages}/{}", sent[0].0);
    let (status, deleted) = call(api, Method::DELETE, &delete_path, &owner, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{deleted}");
    let update = next_dispatch(&mut ws, TIMEOUT)
        .await
        .expect("MESSAGE_UPDATE");
    let next_s = json!(3 + 2 + SENDS as u64);
    assert_eq!(
        (update["t"].clone(), update["s"].clone()),
        (json!("MESSAGE_UPDATE"), next_s)
    );
    assert_eq!(update["d"]["content"], "edited on cassandra");
    let delete = next_dispatch(&mut ws, TIMEOUT)
        .await
        .expect("MESSAGE_DELETE");
    let next_s = json!(3 + 3 + SENDS as u64);
    assert_eq!(
        (delete["t"].clone(), delete["s"].clone()),
        (json!("MESSAGE_DELETE"), next_s)
    );
    assert_eq!(snowflake(&delete["d"]["id"]), sent[0].0);
    newest_first.pop();
    let last = newest_first.len() - 1;
    newest_first[last].1 = "edited on cassandra".into();
    assert_eq!(history(api, channel_id, &owner).await, newest_first);

    // 8. SIGTERM: a clean stop, the session drained.
    let (status, said) = chatd.terminate();
    assert!(status.success(), "{said:?}");
    assert_eq!(said.first().map(String::as_str), Some("chatd stopping"));
    assert_eq!(said.last().map(String::as_str), Some("chatd stopped"));
    drop(ws);

    // 9. Again on the same keyspace and data dir: the guild made over REST is back from the
    //    directory log, and history still holds every message, edited and deleted as left.
    let mut again = Chatd::start(&store, data.path());
    let api = again.api.expect("an API node");
    assert_eq!(history(api, channel_id, &owner).await, newest_first);
    let path = format!("/api/v10/guilds/{guild_id}/channels");
    let (status, channels) = call(api, Method::GET, &path, &owner, None).await;
    assert_eq!(status, StatusCode::OK, "{channels}");
    let names: Vec<&str> = channels
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["general", "e2e"]);
    let (status, _) = again.terminate();
    assert!(status.success());
}

/// The Cassandra contact points, started if need be.
async fn cassandra() -> Vec<String> {
    tokio::task::spawn_blocking(cassandra_node::contact_points)
        .await
        .expect("the start script ran")
        .unwrap_or_else(|e| panic!("no Cassandra for the end-to-end test: {e}"))
}

/// A free loopback address: bound to port 0 and released.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_file_with_a_cql_store_runs_its_roles_without_ring_nodes() {
    // 1. A cluster file: `store` names Cassandra, and there are no ring nodes.
    let nodes = cassandra().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let [data, guild, gateway, dispatch, api, metrics] = [(); 6].map(|()| free_addr());
    let text = format!(
        "data_dir = {data_dir:?}\nstore = \"cql://{nodes}/{keyspace}\"\n\
         heartbeat_interval_ms = 120000\n\n[directory]\nusers = 3\nguilds = 1\nchannels = 1\n\
         created_unix_ms = 1700000000000\n\n\
         [[node]]\nname = \"data-1\"\nrole = \"data\"\naddr = \"{data}\"\n\n\
         [[node]]\nname = \"guild-1\"\nrole = \"guild\"\naddr = \"{guild}\"\n\n\
         [[node]]\nname = \"gateway\"\nrole = \"gateway\"\naddr = \"{gateway}\"\n\
         dispatch = \"{dispatch}\"\n\n\
         [[node]]\nname = \"api-1\"\nrole = \"api\"\naddr = \"{api}\"\nmetrics = \"{metrics}\"\n",
        data_dir = dir.path().join("data").display().to_string(),
        nodes = nodes.join(","),
        keyspace = fresh_keyspace(),
    );
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, text).expect("cluster file written");

    // 2. Every process; the API one last, as it asks the others.
    let mut processes = Vec::new();
    for name in ["data-1", "guild-1", "gateway", "api-1"] {
        processes.push(Chatd::start_node(&file, name));
    }
    let directory: Directory = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/directory.json")).expect("directory"),
    )
    .expect("a directory");
    let guild = directory.guilds.values().next().expect("a guild");
    let channel = guild.channels[0].id;
    let user = directory.users[guild.members.first().expect("a member")].clone();

    // 3. A live session, three sends, their MESSAGE_CREATEs in order and history back.
    let mut ws = identify(gateway, &user).await;
    let created = next_dispatch(&mut ws, TIMEOUT).await.expect("GUILD_CREATE");
    assert_eq!(created["t"], "GUILD_CREATE");
    let path = format!("/api/v10/channels/{channel}/messages");
    let mut sent = Vec::new();
    for n in 0..3 {
        let content = format!("clustered {n}");
        let message = send(api, &path, &user, &content).await;
        sent.push((snowflake(&message["id"]), content));
    }
    for (seq, expected) in (3u64..).zip(&sent) {
        let dispatch = next_dispatch(&mut ws, TIMEOUT)
            .await
            .expect("MESSAGE_CREATE");
        assert_eq!(
            (dispatch["t"].clone(), dispatch["s"].clone()),
            (json!("MESSAGE_CREATE"), json!(seq))
        );
        assert_eq!(snowflake(&dispatch["d"]["id"]), expected.0);
    }
    let mut newest_first = sent.clone();
    newest_first.reverse();
    assert_eq!(history(api, channel, &user).await, newest_first);

    // 4. The API process counted exactly the three sends it acknowledged.
    let (status, bytes) = http_request(metrics, Method::GET, "/metrics", None, None, TIMEOUT)
        .await
        .expect("metrics answer");
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.lines()
            .any(|l| l == "chat_rest_messages_acknowledged_total 3"),
        "{text}"
    );

    // 5. Every process stops cleanly on SIGTERM.
    for mut process in processes.into_iter().rev() {
        let (status, said) = process.terminate();
        assert!(status.success(), "{said:?}");
    }
}

#[test]
fn bad_store_urls_and_an_unreachable_cassandra_exit_1_naming_them() {
    let data = tempfile::tempdir().expect("temp dir");
    let run = |store: &str| {
        let started = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--store", store, "--port-base", "0", "--data-dir"])
            .arg(data.path())
            .output()
            .expect("chatd runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status.code(), stderr, started.elapsed())
    };

    // 1. Bad URLs are usage errors (2) naming the part at fault.
    let (code, err, _) = run("cql://127.0.0.1:9042,127.0.0.1");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CQL node 2") && err.contains("'127.0.0.1'"),
        "{err}"
    );
    let (code, err, _) = run("cql://127.0.0.1:9042/no-dashes");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("keyspace name 'no-dashes'"), "{err}");
    let (code, err, _) = run("postgres://127.0.0.1:5432");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expected 'ring' or 'cql://"), "{err}");

    // 2. Nothing listens on loopback port 1: a prompt failure naming the contact point.
    let (code, err, took) = run("cql://127.0.0.1:1/chat");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot open the CQL store at 127.0.0.1:1 keyspace chat"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
