//! `chatd` on real tokio, driven as a user drives it: the binary on loopback ports, real
//! WebSocket clients (tokio-tungstenite) and HTTP requests.
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use chat_system::directory::Directory;
use chat_system::net::http_request;
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/process.rs"]
mod process;
#[path = "support/ws.rs"]
mod ws;

use process::Process;
use ws::{next_json, Ws};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A running chatd, killed when dropped if it still runs.
struct Chatd {
    process: Process,
    api: SocketAddr,
    gateway: SocketAddr,
    directory: Directory,
    _data: tempfile::TempDir,
}

impl Chatd {
    /// The first channel of the first guild.
    fn first_channel(&self) -> u64 {
        let guild = self.directory.guilds.values().next().expect("a guild");
        guild.channels[0].id
    }

    fn start() -> Chatd {
        Self::start_in(tempfile::tempdir().expect("temp dir"))
    }

    /// What chatd printed up to "chatd ready".
    fn banner(&self) -> &[String] {
        &self.process.banner
    }

    /// The text its `/metrics` answers (200 asserted).
    async fn metrics(&self) -> String {
        let addr = self
            .process
            .addr("chatd metrics http://")
            .expect("metrics address printed");
        let (status, bytes) = http_request(addr, Method::GET, "/metrics", None, None, TIMEOUT)
            .await
            .expect("metrics answer");
        assert_eq!(status, StatusCode::OK);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A chatd on `data`, which may hold an earlier chatd's data.
    fn start_in(data: tempfile::TempDir) -> Chatd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command
            .args(["--port-base", "0", "--users", "4", "--guilds", "1"])
            .args(["--heartbeat-interval-ms", "1000", "--data-dir"])
            .arg(data.path());
        let process = Process::spawn(command, "chatd", TIMEOUT);
        let data_dir = process
            .banner
            .iter()
            .find_map(|line| line.strip_prefix("chatd data_dir="));
        assert!(
            data_dir.is_some_and(|dir| !dir.is_empty()),
            "{:?}",
            process.banner
        );
        let api = process
            .addr("chatd api http://")
            .expect("api address printed");
        let gateway = process
            .addr("chatd gateway ws://")
            .expect("gateway address printed");
        let directory = std::fs::read_to_string(data.path().join("directory.json"))
            .expect("chatd keeps its directory in the data dir");
        let directory = serde_json::from_str(&directory).expect("a directory");
        Chatd {
            process,
            api,
            gateway,
            directory,
            _data: data,
        }
    }

    /// Stops chatd with Ctrl-C; its exit status and what it printed from then on.
    fn stop(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let (status, said) = self.process.signal("-INT");
        assert_eq!(said.first().map(String::as_str), Some("chatd stopping"));
        assert_eq!(said.last().map(String::as_str), Some("chatd stopped"));
        (status, said)
    }
}

/// Reads until the server's close frame; its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send_json(ws: &mut Ws, payload: Value) {
    ws.send(Message::Text(payload.to_string().into()))
        .await
        .expect("send");
}

/// Connects, identifies with `token`, and reads Hello, READY and the GUILD_CREATEs.
async fn identify(gateway: SocketAddr, token: &str) -> (Ws, Value) {
    let mut ws = ws::connect(gateway, "").await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 1000);
    send_json(
        &mut ws,
        json!({"op": 2, "d": {
            "token": token, "intents": 33281,
            "properties": {"os": "linux", "browser": "test", "device": "test"},
        }}),
    )
    .await;
    let ready = next_json(&mut ws).await;
    assert_eq!(
        (ready["op"].clone(), ready["t"].clone(), ready["s"].clone()),
        (json!(0), json!("READY"), json!(1))
    );
    assert_eq!(ready["d"]["session_id"].as_str().map(str::len), Some(32));
    assert_eq!(
        ready["d"]["resume_gateway_url"],
        format!("ws://{gateway}/gateway")
    );
    let guild = next_json(&mut ws).await;
    assert_eq!(
        (guild["t"].clone(), guild["s"].clone()),
        (json!("GUILD_CREATE"), json!(2))
    );
    (ws, ready)
}

#[tokio::test]
async fn two_sessions_receive_a_message_sent_over_http_and_history_returns_it() {
    let mut chatd = Chatd::start();
    let guild = chatd
        .directory
        .guilds
        .values()
        .next()
        .expect("a guild")
        .clone();
    let channel = guild.channels[0].id;
    let mut members = guild
        .members
        .iter()
        .map(|id| chatd.directory.users[id].clone());
    let (alice, bob) = (
        members.next().expect("member"),
        members.next().expect("member"),
    );

    // 1. Two real WebSocket sessions.
    let (mut ws_a, _) = identify(chatd.gateway, &alice.token).await;
    let (mut ws_b, _) = identify(chatd.gateway, &bob.token).await;

    // 2. Alice sends over HTTP.
    let body = json!({"content": "hello, loopback", "nonce": "n-1"})
        .to_string()
        .into_bytes();
    let auth = format!("Bot {}", alice.token);
    let path = format!("/api/v10/channels/{channel}/messages");
    let (status, bytes) = http_request(
        chatd.api,
        Method::POST,
        &path,
        Some(&auth),
        Some(body),
        TIMEOUT,
    )
    .await
    .expect("the API answers");
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let sent: Value = serde_json::from_slice(&bytes).expect("a message object");
    let id = sent["id"].as_str().expect("a string snowflake").to_string();
    assert_eq!(sent["content"], "hello, loopback");
    assert_eq!(sent["author"]["username"], alice.username);

    // 3. Both sessions get MESSAGE_CREATE with that id, as s = 3.
    for ws in [&mut ws_a, &mut ws_b] {
        let event = next_json(ws).await;
        assert_eq!(event["t"], "MESSAGE_CREATE");
        assert_eq!(event["s"], 3);
        assert_eq!(event["d"]["id"], id.as_str());
        assert_eq!(event["d"]["channel_id"], channel.to_string());
    }

    // 4. History (as Bob, Bearer this time) returns it.
    let auth = format!("Bearer {}", bob.token);
    let path = format!("/api/v10/channels/{channel}/messages?limit=10");
    let (status, bytes) = http_request(chatd.api, Method::GET, &path, Some(&auth), None, TIMEOUT)
        .await
        .expect("the API answers");
    assert_eq!(status, StatusCode::OK);
    let history: Vec<Value> = serde_json::from_slice(&bytes).expect("an array");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["id"], id.as_str());

    // 5. A clean stop on Ctrl-C.
    assert!(chatd.stop().0.success());
}

#[tokio::test]
async fn heartbeats_are_acknowledged_and_a_silent_session_is_closed_with_4009() {
    let chatd = Chatd::start();
    let user = chatd
        .directory
        .users
        .values()
        .next()
        .expect("a user")
        .clone();
    let (mut ws, _) = identify(chatd.gateway, &user.token).await;

    send_json(&mut ws, json!({"op": 1, "d": 2})).await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["op"], 11);

    // No more heartbeats: closed after 1.5 intervals with "session timed out".
    let started = std::time::Instant::now();
    let close = close_code(&mut ws).await;
    assert_eq!(close, 4009);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not before the deadline"
    );
}

#[tokio::test]
async fn a_bad_token_is_closed_with_4004_and_rest_errors_are_discord_shaped() {
    let chatd = Chatd::start();
    let mut ws = ws::connect(chatd.gateway, "").await;
    assert_eq!(next_json(&mut ws).await["op"], 10);
    send_json(
        &mut ws,
        json!({"op": 2, "d": {
            "token": "not-a-token", "intents": 513,
            "properties": {"os": "linux", "browser": "test", "device": "test"},
        }}),
    )
    .await;
    match tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("an answer in time")
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4004),
        other => panic!("expected close 4004, got {other:?}"),
    }

    // REST: no token is 401; a channel of a guild the user is not in is 403; both are JSON.
    let channel = chatd.first_channel();
    let path = format!("/api/v10/channels/{channel}/messages");
    let (status, body) = http_request(chatd.api, Method::GET, &path, None, None, TIMEOUT)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body: Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(body["code"], 0);
    let (status, body) = http_request(
        chatd.api,
        Method::GET,
        "/api/v10/channels/123/messages",
        Some("Bot token-1"),
        None,
        TIMEOUT,
    )
    .await
    .expect("answer");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON")["code"],
        10003
    );
}

#[tokio::test]
async fn oversized_payloads_are_closed_with_4002_at_any_size() {
    let chatd = Chatd::start();
    for size in [4097, 100_000] {
        let mut ws = ws::connect(chatd.gateway, "").await;
        assert_eq!(next_json(&mut ws).await["op"], 10);
        let padding = "x".repeat(size);
        let payload = json!({"op": 1, "d": null, "pad": padding}).to_string();
        ws.send(Message::Text(payload.into())).await.expect("send");
        assert_eq!(close_code(&mut ws).await, 4002, "{size} bytes");
    }
}

#[tokio::test]
async fn rest_refusals_are_discord_shaped_json() {
    let chatd = Chatd::start();
    let channel = chatd.first_channel();
    let path = format!("/api/v10/channels/{channel}/messages");
    let auth = Some("Bot token-1");
    let cases: [(Method, Option<Vec<u8>>, StatusCode); 3] = [
        (Method::DELETE, None, StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::POST,
            Some(vec![b' '; 3 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            Some(br#"{"content": " "}"#.to_vec()),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, body, expected) in cases {
        let (status, bytes) = http_request(chatd.api, method.clone(), &path, auth, body, TIMEOUT)
            .await
            .expect("answer");
        assert_eq!(status, expected, "{method}");
        let body: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
        assert!(
            body["message"].is_string() && body["code"].is_number(),
            "{body}"
        );
    }
}

#[test]
fn a_second_chatd_on_the_same_data_dir_refuses_to_start() {
    let first = Chatd::start();
    let output = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--port-base", "0", "--data-dir"])
        .arg(first._data.path())
        .output()
        .expect("chatd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use by another chatd"), "{stderr}");
}

#[test]
fn chatload_drives_every_user_and_counts_each_delivery() {
    let chatd = Chatd::start();
    let directory = chatd._data.path().join("directory.json");
    let output = Command::new(env!("CARGO_BIN_EXE_chatload"))
        .args(["--api", &chatd.api.to_string()])
        .args(["--gateway", &chatd.gateway.to_string()])
        .arg("--directory")
        .arg(&directory)
        .args([
            "--users",
            "4",
            "--rate",
            "10",
            "--duration-s",
            "2",
            "--quiet",
        ])
        .output()
        .expect("chatload runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");

    // 10 sends a second for 2 s; one guild of 4 members, each online once: 4 deliveries each.
    assert!(
        stdout.contains("sends            20 acked, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deliveries       80 MESSAGE_CREATE"),
        "{stdout}"
    );
    assert!(stdout.contains("sessions lost 0"), "{stdout}");
    assert!(stdout.contains("send-to-deliver  p50"), "{stdout}");

    // A server that is not there is named.
    let output = Command::new(env!("CARGO_BIN_EXE_chatload"))
        .args([
            "--api",
            "127.0.0.1:9",
            "--users",
            "1",
            "--quiet",
            "--directory",
        ])
        .arg(&directory)
        .output()
        .expect("chatload runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the API at --api 127.0.0.1:9 does not answer"),
        "{stderr}"
    );
}

/// The rows each ring node reports on lines `chatd ring node N {verb} R rows`, in node order.
fn ring_rows(lines: &[String], verb: &str) -> Vec<usize> {
    lines
        .iter()
        .filter(|line| line.starts_with("chatd ring node "))
        .filter_map(|line| {
            let (_, after) = line.split_once(&format!(" {verb} "))?;
            after.strip_suffix(" rows")?.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn a_clean_stop_flushes_memtables_so_a_restart_replays_nothing_and_keeps_history() {
    // 1. Five messages into a fresh chatd, then Ctrl-C.
    let mut chatd = Chatd::start();
    assert_eq!(ring_rows(chatd.banner(), "replayed"), vec![0, 0, 0]);
    let channel = chatd.first_channel();
    let user = chatd
        .directory
        .users
        .values()
        .next()
        .expect("a user")
        .clone();
    let auth = format!("Bot {}", user.token);
    let path = format!("/api/v10/channels/{channel}/messages");
    for n in 0..5 {
        let body = json!({ "content": format!("kept {n}") })
            .to_string()
            .into_bytes();
        let (status, _) = http_request(
            chatd.api,
            Method::POST,
            &path,
            Some(&auth),
            Some(body),
            TIMEOUT,
        )
        .await
        .expect("the API answers");
        assert_eq!(status, StatusCode::OK);
    }
    let text = chatd.metrics().await;
    assert!(text.contains("chat_messages_created_total 5\n"), "{text}");
    assert!(
        text.contains("chat_message_create_seconds_count 5\n"),
        "{text}"
    );
    let (status, said) = chatd.stop();
    assert!(status.success());

    // 2. Every write reached at least a quorum of memtables, and each node flushed what it
    //    held: 5 rows on every replica that took all five (3 replicas, RF 3).
    let flushed = ring_rows(&said, "flushed");
    assert_eq!(flushed.len(), 3, "{said:?}");
    assert!(
        flushed.iter().filter(|&&rows| rows == 5).count() >= 2,
        "{said:?}"
    );

    // 3. A restart replays nothing from the commit logs and still serves the history.
    let data = std::mem::replace(&mut chatd._data, tempfile::tempdir().expect("temp dir"));
    drop(chatd);
    let mut chatd = Chatd::start_in(data);
    assert_eq!(ring_rows(chatd.banner(), "replayed"), vec![0, 0, 0]);
    let read = format!("{path}?limit=10");
    let (status, bytes) = http_request(chatd.api, Method::GET, &read, Some(&auth), None, TIMEOUT)
        .await
        .expect("the API answers");
    assert_eq!(status, StatusCode::OK);
    let history: Vec<Value> = serde_json::from_slice(&bytes).expect("an array");
    let contents: Vec<&str> = history
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        vec!["kept 4", "kept 3", "kept 2", "kept 1", "kept 0"]
    );

    // 4. The metrics endpoint answers in the Prometheus text format.
    let text = chatd.metrics().await;
    assert!(
        text.contains("# TYPE chat_store_read_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("chat_store_read_seconds_count "), "{text}");
    assert!(chatd.stop().0.success());
}
