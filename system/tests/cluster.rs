//! `chatd` as a cluster of processes from one cluster file: three ring-node processes and one
//! process each for the API, guild, data-service and gateway roles, on loopback. A ring
//! process is killed with SIGKILL mid-run; no acknowledged message may be lost, sends keep
//! succeeding at QUORUM with one ring node down, and the killed node restarts from its data
//! dir and serves again. The API and guild processes serve `/metrics` on ports the file
//! gives them, and their counters show exactly the sends a test made.
#![cfg(not(madsim))]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chat_system::directory::{Directory, User};
use chat_system::net::http_request;
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/process.rs"]
mod process;
#[allow(
    dead_code,
    reason = "this binary reads frames with their close codes instead"
)]
#[path = "support/ws.rs"]
mod ws;

use process::Process;
use ws::Ws;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The roles in start order: the ring first, the API (which needs all others) last.
const NODES: [(&str, &str); 7] = [
    ("ring-1", "ring"),
    ("ring-2", "ring"),
    ("ring-3", "ring"),
    ("data-1", "data"),
    ("guild-1", "guild"),
    ("gateway", "gateway"),
    ("api-1", "api"),
];

/// Ten free loopback ports: each bound to port 0 and released.
fn free_addrs() -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..10)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect()
}

/// A cluster file for `NODES` at `addrs`: then the gateway's dispatch port, and the metrics
/// ports of api-1 and guild-1.
fn cluster_file(data_dir: &Path, addrs: &[SocketAddr]) -> String {
    let mut text = format!(
        "data_dir = {:?}\nheartbeat_interval_ms = 1000\n\n[directory]\nusers = 6\nguilds = 1\n\
         channels = 1\ncreated_unix_ms = 1700000000000\n",
        data_dir.display().to_string()
    );
    for ((name, role), addr) in NODES.iter().zip(addrs) {
        text.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nrole = \"{role}\"\naddr = \"{addr}\"\n"
        ));
        if *role == "gateway" {
            text.push_str(&format!("dispatch = \"{}\"\n", addrs[7]));
        }
        let metrics = match *name {
            "api-1" => Some(addrs[8]),
            "guild-1" => Some(addrs[9]),
            _ => None,
        };
        if let Some(metrics) = metrics {
            text.push_str(&format!("metrics = \"{metrics}\"\n"));
        }
    }
    text
}

/// Every node process; all of them are killed when this is dropped, also on a panic.
struct Cluster {
    file: PathBuf,
    /// Every process started, by node name, in start order (a restart adds another).
    children: Vec<(String, Process)>,
}

impl Cluster {
    /// Starts node `name` and waits for its "chatd ready"; what it printed up to then.
    fn start(&mut self, name: &str) -> Vec<String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command
            .arg("--cluster")
            .arg(&self.file)
            .args(["--node", name]);
        let process = Process::spawn(command, name, TIMEOUT);
        let banner = process.banner.clone();
        self.children.push((name.to_string(), process));
        banner
    }

    /// Sends `signal` to node `name`'s newest process and waits for it to exit; what it
    /// printed since ready.
    fn signal(&mut self, name: &str, signal: &str) -> (std::process::ExitStatus, Vec<String>) {
        let (_, process) = self
            .children
            .iter_mut()
            .rev()
            .find(|(n, _)| n == name)
            .expect("a started node");
        process.signal(signal)
    }
}

/// Posts `content` as `user`, waiting out a 429; the acknowledged message's id.
async fn send(api: SocketAddr, channel: u64, user: &User, content: &str) -> String {
    let auth = format!("Bot {}", user.token);
    let path = format!("/api/v10/channels/{channel}/messages");
    loop {
        let body = json!({ "content": content }).to_string().into_bytes();
        let (status, bytes) =
            http_request(api, Method::POST, &path, Some(&auth), Some(body), TIMEOUT)
                .await
                .expect("the API answers");
        let reply: Value = serde_json::from_slice(&bytes).expect("a JSON reply");
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = reply["retry_after"].as_f64().expect("retry_after");
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{content}: {reply}");
        assert_eq!(reply["content"], content);
        return reply["id"]
            .as_str()
            .expect("a string snowflake")
            .to_string();
    }
}

/// The channel's whole history (at most 100 messages), newest first, as (id, content).
async fn history(api: SocketAddr, channel: u64, user: &User) -> Vec<(String, String)> {
    let auth = format!("Bot {}", user.token);
    let path = format!("/api/v10/channels/{channel}/messages?limit=100");
    let (status, bytes) = http_request(api, Method::GET, &path, Some(&auth), None, TIMEOUT)
        .await
        .expect("the API answers");
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let messages: Vec<Value> = serde_json::from_slice(&bytes).expect("an array");
    messages
        .iter()
        .map(|m| {
            let field = |name: &str| m[name].as_str().expect("a string field").to_string();
            (field("id"), field("content"))
        })
        .collect()
}

/// Sends `count` messages named `label-N`, each user in turn; what was acknowledged.
async fn send_batch(
    api: SocketAddr,
    channel: u64,
    users: &[User],
    label: &str,
    count: usize,
) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for n in 0..count {
        let content = format!("{label}-{n}");
        let id = send(api, channel, &users[n % users.len()], &content).await;
        acked.push((id, content));
    }
    acked
}

fn rows(lines: &[String], verb: &str) -> usize {
    let line = lines
        .iter()
        .find(|line| line.contains(verb))
        .unwrap_or_else(|| panic!("no {verb:?} line in {lines:?}"));
    let after = line.split(verb).nth(1).expect("text after the verb");
    let count = after.split_whitespace().next().expect("a count");
    count.parse().expect("a row count")
}

/// Reads until a JSON payload or a close frame: the payload, or the close code.
async fn next_frame(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("no ws error");
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text).expect("JSON")),
            Message::Close(Some(frame)) => return Err(u16::from(frame.code)),
            _ => continue,
        }
    }
}

/// A cluster file with every node on a free loopback port, and every node started; the
/// temp dir holding the file and the data, the node addresses in `NODES` order (then the
/// gateway's dispatch port) and the directory the nodes published.
fn start_cluster() -> (tempfile::TempDir, Cluster, Vec<SocketAddr>, Directory) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let addrs = free_addrs();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, cluster_file(&data_dir, &addrs)).expect("cluster file written");
    let mut cluster = Cluster {
        file,
        children: Vec::new(),
    };
    for (name, _) in NODES {
        cluster.start(name);
    }
    let directory = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("directory.json")).expect("directory.json"),
    )
    .expect("a directory");
    (dir, cluster, addrs, directory)
}

/// Connects to `gateway` and identifies with `token`, checking Hello and READY.
async fn identify(gateway: SocketAddr, token: &str) -> Ws {
    let mut ws = ws::connect(gateway, "").await;
    let hello = next_frame(&mut ws).await.expect("Hello");
    assert_eq!(
        (
            hello["op"].clone(),
            hello["d"]["heartbeat_interval"].clone()
        ),
        (json!(10), json!(1000))
    );
    let identify = json!({"op": 2, "d": {
        "token": token, "intents": 33281,
        "properties": {"os": "linux", "browser": "test", "device": "test"},
    }});
    ws.send(Message::Text(identify.to_string().into()))
        .await
        .expect("identify sent");
    let ready = next_frame(&mut ws).await.expect("READY");
    assert_eq!(ready["t"], "READY");
    ws
}

/// The ops of the payloads read until the server's close frame, and its code.
async fn ops_until_close(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut ops = Vec::new();
    loop {
        match next_frame(ws).await {
            Ok(payload) => ops.push(payload["op"].clone()),
            Err(code) => return (ops, code),
        }
    }
}

#[tokio::test]
async fn a_sigkilled_ring_process_loses_no_acknowledged_message_and_restarts_serving() {
    // 1. Every process of a cluster, and the first guild's channel and members.
    let (_dir, mut cluster, addrs, directory) = start_cluster();
    let (api, gateway) = (addrs[6], addrs[5]);
    let guild = directory.guilds.values().next().expect("a guild");
    let channel = guild.channels[0].id;
    let users: Vec<User> = guild
        .members
        .iter()
        .map(|id| directory.users[id].clone())
        .collect();
    assert_eq!(users.len(), 6);

    // 2. Eight acknowledged sends with every ring node up, then ring-2 is SIGKILLed.
    let mut acked = send_batch(api, channel, &users, "before", 8).await;
    let (status, _) = cluster.signal("ring-2", "-KILL");
    assert!(
        !status.success(),
        "SIGKILL ends the node without a clean exit"
    );

    // 3. With one ring node of three down, QUORUM sends keep being acknowledged.
    acked.extend(send_batch(api, channel, &users, "degraded", 8).await);

    // 4. The whole history holds every acknowledged message, each once.
    let mut expected = acked.clone();
    expected.reverse();
    assert_eq!(history(api, channel, &users[0]).await, expected);

    // 5. ring-2 restarts from its data dir, replaying the rows its commit log kept: it had
    //    taken every write of step 2 (each is sent to all three replicas).
    let banner = cluster.start("ring-2");
    assert!(rows(&banner, " replayed ") >= 1, "{banner:?}");

    // 6. It serves again: with ring-3 down instead, QUORUM needs ring-1 and ring-2.
    let (status, _) = cluster.signal("ring-3", "-KILL");
    assert!(!status.success());
    acked.extend(send_batch(api, channel, &users, "after", 4).await);
    let mut expected = acked.clone();
    expected.reverse();
    assert_eq!(history(api, channel, &users[0]).await, expected);

    // 7. A clean stop of the gateway tells a live session to reconnect (op 7, close 1012).
    let mut ws = identify(gateway, &users[0].token).await;
    let (status, said) = cluster.signal("gateway", "-INT");
    assert!(status.success(), "{said:?}");
    assert_eq!(
        said,
        [
            "chatd stopping",
            "chatd gateway drained 1 connections",
            "chatd stopped"
        ]
    );
    let (ops, code) = ops_until_close(&mut ws).await;
    assert!(ops.contains(&json!(7)), "{ops:?}");
    assert_eq!(code, 1012);

    // 8. A clean stop of ring-1 (SIGTERM, as a service manager sends) flushes every row it
    //    holds: all twenty messages.
    let (status, said) = cluster.signal("ring-1", "-TERM");
    assert!(status.success(), "{said:?}");
    assert_eq!(rows(&said, " flushed "), 20, "{said:?}");
}

#[test]
fn bad_cluster_files_unknown_nodes_and_taken_addresses_exit_1_naming_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addrs = free_addrs();
    let good = cluster_file(&dir.path().join("data"), &addrs);
    let run = |text: &str, node: &str| {
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text).expect("cluster file written");
        let output = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--cluster")
            .arg(&file)
            .args(["--node", node])
            .output()
            .expect("chatd runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };

    // 1. An unknown field, named with its line.
    let (code, err) = run(
        &good.replace("heartbeat_interval_ms", "heartbeat"),
        "ring-1",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("heartbeat") && err.contains("line 2"), "{err}");

    // 2. A node the file does not have.
    let (code, err) = run(&good, "ring-9");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no node \"ring-9\""), "{err}");

    // 3. A node whose address is taken.
    let taken = TcpListener::bind(addrs[4]).expect("the guild node's port");
    let (code, err) = run(&good, "guild-1");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("node guild-1 cannot listen on") && err.contains(&addrs[4].to_string()),
        "{err}"
    );
    drop(taken);

    // 4. A data dir whose directory.json another shape made (the failed start above wrote
    //    this shape's before binding).
    let (code, err) = run(&good.replace("users = 6", "users = 7"), "ring-1");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds another directory"), "{err}");
}

#[tokio::test]
async fn a_guild_made_over_rest_on_one_process_takes_messages_through_the_others() {
    // 1. The API process asks the guild process to make a guild; its channel id comes back.
    let (_dir, _cluster, addrs, directory) = start_cluster();
    let api = addrs[6];
    let user = directory.users.values().next().expect("a user").clone();
    let auth = format!("Bot {}", user.token);
    let body = json!({"name": "made over rest"}).to_string().into_bytes();
    let (status, bytes) = http_request(
        api,
        Method::POST,
        "/api/v10/guilds",
        Some(&auth),
        Some(body),
        TIMEOUT,
    )
    .await
    .expect("the API answers");
    let guild: Value = serde_json::from_slice(&bytes).expect("a guild object");
    assert_eq!(status, StatusCode::CREATED, "{guild}");
    assert_eq!(guild["name"], "made over rest");
    let channel: u64 = guild["channels"][0]["id"]
        .as_str()
        .expect("a string snowflake")
        .parse()
        .expect("a snowflake");

    // 2. Sends there go through the guild process to the ring processes, and the data
    //    process reads them back.
    let mut acked = Vec::new();
    for n in 0..3 {
        let content = format!("message {n} in a new guild");
        acked.push((send(api, channel, &user, &content).await, content));
    }
    acked.reverse();
    assert_eq!(history(api, channel, &user).await, acked);

    // 3. The API process acknowledged exactly those three sends and the guild process (the
    //    only one) created exactly those three messages, as their `/metrics` say.
    let api_metrics = metrics(addrs[8]).await;
    assert_eq!(
        sample(&api_metrics, "chat_rest_messages_acknowledged_total"),
        Some(3.0),
        "{api_metrics}"
    );
    let guild_metrics = metrics(addrs[9]).await;
    assert_eq!(
        sample(&guild_metrics, "chat_messages_created_total"),
        Some(3.0),
        "{guild_metrics}"
    );
    // Each create was timed once.
    assert_eq!(
        sample(&guild_metrics, "chat_message_create_seconds_count"),
        Some(3.0),
        "{guild_metrics}"
    );
}

/// The text a node's `/metrics` answers (200 asserted).
async fn metrics(addr: SocketAddr) -> String {
    let (status, bytes) = http_request(addr, Method::GET, "/metrics", None, None, TIMEOUT)
        .await
        .expect("metrics answer");
    assert_eq!(status, StatusCode::OK);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The value of the unlabelled sample `name` in a Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn all_in_one_chatd_drains_gateway_sessions_on_a_clean_stop() {
    // 1. An all-in-one chatd and one identified session.
    let data = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command
        .args(["--port-base", "0", "--users", "2", "--guilds", "1"])
        .args(["--heartbeat-interval-ms", "1000", "--data-dir"])
        .arg(data.path());
    let process = Process::spawn(command, "chatd", TIMEOUT);
    let gateway = process
        .addr("chatd gateway ws://")
        .expect("gateway address printed");
    let mut cluster = Cluster {
        file: PathBuf::new(),
        children: vec![("chatd".to_string(), process)],
    };
    let directory: Directory = serde_json::from_str(
        &std::fs::read_to_string(data.path().join("directory.json")).expect("directory.json"),
    )
    .expect("a directory");
    let user = directory.users.values().next().expect("a user");
    let mut ws = identify(gateway, &user.token).await;

    // 2. Ctrl-C: the session is told to reconnect (op 7) and closed resumably (1012), and
    //    chatd still stops cleanly with its usual lines.
    let (status, said) = cluster.signal("chatd", "-INT");
    assert!(status.success(), "{said:?}");
    assert_eq!(said.first().map(String::as_str), Some("chatd stopping"));
    assert_eq!(said.last().map(String::as_str), Some("chatd stopped"));
    let (ops, code) = ops_until_close(&mut ws).await;
    assert!(ops.contains(&json!(7)), "{ops:?}");
    assert_eq!(code, 1012);
}
