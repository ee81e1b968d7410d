//! Gateway fan-out on real tokio: one gateway in this process on loopback ports, N WebSocket
//! sessions of one guild (real tokio-tungstenite clients that parse every payload), and M
//! senders whose messages reach the gateway as the guild role sends them: through one ordering
//! task that numbers them and ships batches of up to 128 over the dispatch RPC.
//!
//! Two phases per session count: a burst (every sender posts its messages at once; the queue
//! bound is raised so none is cut off) gives deliveries per second; a paced phase (each sender
//! one message per 100 ms, the senders spread over the period) gives send-to-deliver p50 / p99
//! at a steady load. One session is the baseline the other rows are divided by. The send time
//! is taken when a sender hands its message to the ordering task, so the latency covers
//! ordering, RPC, fan-out, the WebSocket and the client's parse; it leaves out the store write
//! the guild role does first.
//!
//! Run: `cargo bench -p chat-system --bench gateway_fanout`.

#[cfg(madsim)]
fn main() {
    eprintln!("gateway_fanout measures the real runtime; run it without --cfg madsim");
}

#[cfg(not(madsim))]
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = runtime.expect("a tokio runtime");
    runtime.block_on(bench::run());
}

#[cfg(not(madsim))]
mod bench {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use chat_system::directory::{Directory, DirectoryShape, SharedDirectory};
    use chat_system::env::clock::NodeClock;
    use chat_system::gateway::{
        GatewayConfig, GatewayEvent, GatewayHandle, GatewayLimits, GatewayRequest, GatewayResponse,
    };
    use chat_system::net::FlushIfDirty;
    use chat_system::rpc::RpcClient;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;

    const SENDERS: usize = 4;
    const BURST_PER_SENDER: usize = 250;
    const PACED_PER_SENDER: usize = 25;
    const PACE: Duration = Duration::from_millis(100);
    const BATCH_MAX: usize = 128;
    const TIMEOUT: Duration = Duration::from_secs(120);

    /// One phase's figures.
    struct Figures {
        deliveries: usize,
        deliveries_per_second: f64,
        p50_ms: f64,
        p99_ms: f64,
    }

    /// How a phase sends.
    #[derive(Clone, Copy)]
    enum Phase {
        Burst,
        Paced,
    }

    impl Phase {
        fn per_sender(self) -> usize {
            match self {
                Phase::Burst => BURST_PER_SENDER,
                Phase::Paced => PACED_PER_SENDER,
            }
        }
    }

    pub async fn run() {
        println!(
            "gateway fan-out, real tokio on loopback: 1 guild, {SENDERS} senders; \
             burst {BURST_PER_SENDER} messages per sender, paced {PACED_PER_SENDER} per \
             sender one per {} ms",
            PACE.as_millis()
        );
        println!(
            "{:>8}  {:>10}  {:>14}  {:>8}  {:>10}  {:>10}  {:>8}",
            "sessions", "deliveries", "deliveries/s", "x base", "p50 ms", "p99 ms", "x base"
        );
        let mut baseline: Option<(f64, f64)> = None;
        for sessions in [1, 100, 1_000] {
            let burst = measure(sessions, Phase::Burst).await;
            let paced = measure(sessions, Phase::Paced).await;
            let (base_rate, base_p99) =
                *baseline.get_or_insert((burst.deliveries_per_second, paced.p99_ms));
            println!(
                "{:>8}  {:>10}  {:>14.0}  {:>8.2}  {:>10.2}  {:>10.2}  {:>8.2}",
                sessions,
                burst.deliveries,
                burst.deliveries_per_second,
                burst.deliveries_per_second / base_rate,
                paced.p50_ms,
                paced.p99_ms,
                paced.p99_ms / base_p99,
            );
        }
    }

    /// Starts a gateway for `sessions` users of one guild; its WebSocket and RPC addresses.
    async fn start_gateway(
        directory: &Directory,
        limits: GatewayLimits,
    ) -> (SocketAddr, SocketAddr) {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ws_addr = http.local_addr().expect("addr");
        let rpc_addr = rpc.local_addr().expect("addr");
        let config = GatewayConfig {
            directory: SharedDirectory::new(directory.clone()),
            heartbeat_interval_ms: 60_000,
            resume_gateway_url: format!("ws://{ws_addr}/gateway"),
            node_index: 0,
            clock: chat_system::env::clock::NodeClock::new(),
        };
        tokio::spawn(GatewayHandle::new(config, limits).serve(http, rpc));
        (ws_addr, rpc_addr)
    }

    async fn measure(sessions: usize, phase: Phase) -> Figures {
        // 1. A gateway; in a burst the queue holds every message, so none is cut off.
        let directory = Directory::generate(&DirectoryShape {
            user_count: sessions.max(SENDERS),
            guild_count: 1,
            channels_per_guild: 1,
            created_unix_ms: NodeClock::new().now_ms() - 60_000,
        });
        let guild = directory.guilds.values().next().expect("a guild").clone();
        let messages = SENDERS * phase.per_sender();
        let mut limits = GatewayLimits::default();
        if let Phase::Burst = phase {
            limits.session_queue_max = messages + 16;
        }
        let (ws_addr, rpc_addr) = start_gateway(&directory, limits).await;

        // 2. The sessions, each identified before anything is sent.
        let epoch = Instant::now();
        let (ready_tx, mut ready_rx) = mpsc::channel(sessions);
        let mut clients = Vec::new();
        for user in directory.users.values().take(sessions) {
            let task = session(
                ws_addr,
                user.token.clone(),
                ready_tx.clone(),
                messages,
                epoch,
            );
            clients.push(tokio::spawn(task));
        }
        for _ in 0..sessions {
            ready_rx.recv().await.expect("a session gets ready");
        }

        // 3. The guild's ordering task, and the senders feeding it.
        let (order_tx, order_rx) = mpsc::channel::<Value>(messages);
        let pump = tokio::spawn(order(rpc_addr, guild.id, order_rx));
        let started = Instant::now();
        for sender in 0..SENDERS {
            let (order_tx, channel_id, guild_id) =
                (order_tx.clone(), guild.channels[0].id, guild.id);
            tokio::spawn(async move {
                // Paced senders are spread over the period, so messages come one at a time.
                if let Phase::Paced = phase {
                    tokio::time::sleep(PACE * sender as u32 / SENDERS as u32).await;
                }
                for n in 0..phase.per_sender() {
                    let id = (sender * 1_000_000 + n) as u64;
                    let sent_us = epoch.elapsed().as_micros() as u64;
                    let data = json!({
                        "id": id.to_string(), "channel_id": channel_id.to_string(),
                        "guild_id": guild_id.to_string(),
                        "author": {"id": "1", "username": "bench"},
                        "content": "a message of a typical length for a chat", "sent_us": sent_us,
                    });
                    if order_tx.send(data).await.is_err() {
                        return;
                    }
                    if let Phase::Paced = phase {
                        tokio::time::sleep(PACE).await;
                    }
                }
            });
        }
        drop(order_tx);

        // 4. Every delivery's latency; the rate from the first send to the last delivery.
        let mut latencies = Vec::with_capacity(sessions * messages);
        let mut last = started;
        for client in clients {
            let (got, at) = client.await.expect("a session finishes");
            latencies.extend(got);
            last = last.max(at);
        }
        pump.await.expect("the ordering task finishes");
        latencies.sort_unstable();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(index).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        Figures {
            deliveries: latencies.len(),
            deliveries_per_second: latencies.len() as f64 / (last - started).as_secs_f64(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }

    /// Numbers the guild's messages in arrival order and ships them in batches.
    async fn order(rpc_addr: SocketAddr, guild_id: u64, mut queue: mpsc::Receiver<Value>) {
        let rpc = RpcClient::new();
        let mut seq = 0;
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                match queue.try_recv() {
                    Ok(data) => batch.push(data),
                    Err(_) => break,
                }
            }
            let events = batch
                .into_iter()
                .map(|data| {
                    seq += 1;
                    GatewayEvent {
                        guild_id,
                        guild_epoch: 1,
                        guild_seq: seq,
                        name: "MESSAGE_CREATE".into(),
                        data,
                    }
                })
                .collect();
            let request = GatewayRequest::Dispatch { events };
            let answer = rpc
                .call::<_, GatewayResponse>(rpc_addr, &request, TIMEOUT)
                .await;
            assert!(
                matches!(answer, Ok(GatewayResponse::Accepted)),
                "{answer:?}"
            );
        }
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

    /// One session: identify, report ready, read `expected` MESSAGE_CREATEs; their
    /// send-to-deliver times in µs and when the last arrived.
    async fn session(
        gateway: SocketAddr,
        token: String,
        ready: mpsc::Sender<()>,
        expected: usize,
        epoch: Instant,
    ) -> (Vec<u64>, Instant) {
        let stream = TcpStream::connect(gateway).await.expect("gateway accepts");
        let url = format!("ws://{gateway}/gateway?v=10&encoding=json");
        let (mut ws, _) = tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
            .await
            .expect("websocket handshake");
        next_json(&mut ws).await;
        let identify = json!({"op": 2, "d": {
            "token": token, "intents": 513 | 32768,
            "properties": {"os": "linux", "browser": "bench", "device": "bench"},
        }});
        ws.send(Message::Text(identify.to_string().into()))
            .await
            .expect("identify sent");
        next_json(&mut ws).await;
        next_json(&mut ws).await;
        ready.send(()).await.expect("the bench waits");

        let mut latencies = Vec::with_capacity(expected);
        while latencies.len() < expected {
            let payload = next_json(&mut ws).await;
            let sent_us = payload["d"]["sent_us"].as_u64().expect("a bench message");
            let now_us = epoch.elapsed().as_micros() as u64;
            latencies.push(now_us.saturating_sub(sent_us));
        }
        (latencies, Instant::now())
    }
}
