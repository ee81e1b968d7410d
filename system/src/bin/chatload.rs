//! `chatload`: a load generator for a running cluster. It opens one real WebSocket session per
//! user, sends messages over REST at a fixed rate from those users, and prints throughput and
//! latency percentiles: REST send latency, and send-to-deliver latency measured from the send to
//! each MESSAGE_CREATE a session receives carrying the send's nonce.
//!
//! It reads the accounts from a `directory.json` (the one `chatd` keeps in its data dir). What
//! it measures is the whole path through the cluster as clients see it; it does not check
//! ordering or durability (the simulator's checkers do that).

#[cfg(madsim)]
fn main() {
    eprintln!("chatload runs on the real runtime only; build it without `--cfg madsim`");
    std::process::exit(2);
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use chat_system::directory::{Directory, User};
    use chat_system::net::{http_request, FlushIfDirty};
    use clap::Parser;
    use futures_util::{SinkExt, StreamExt};
    use hdrhistogram::Histogram;
    use hyper::Method;
    use indicatif::{ProgressBar, ProgressStyle};
    use serde_json::{json, Value};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;

    /// GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT.
    const INTENTS: u64 = 1 | 512 | 32_768;
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The slowest latency the histograms hold, in µs (a minute).
    const LATENCY_US_MAX: u64 = 60_000_000;

    /// Drive N real WebSocket users against a running chat cluster.
    #[derive(Debug, Parser)]
    #[command(name = "chatload", version)]
    struct Args {
        /// The REST API's address (host:port), as `chatd` prints it.
        #[arg(long, default_value = "127.0.0.1:7710")]
        api: SocketAddr,
        /// The gateway's address (host:port).
        #[arg(long, default_value = "127.0.0.1:7720")]
        gateway: SocketAddr,
        /// The accounts: a chatd `directory.json`.
        #[arg(long, default_value = "chatd-data/directory.json")]
        directory: PathBuf,
        /// Users to connect (the first N of the directory).
        #[arg(
            long,
            default_value_t = 20,
            value_parser = clap::value_parser!(u64).range(1..=10_000)
        )]
        users: u64,
        /// Messages sent per second, over all users.
        #[arg(
            long,
            default_value_t = 20,
            value_parser = clap::value_parser!(u64).range(1..=10_000)
        )]
        rate: u64,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        duration_s: u64,
        /// How long to wait for the last deliveries after the last send, in ms.
        #[arg(long, default_value_t = 2_000)]
        drain_ms: u64,
        /// No progress bar (for logs and scripts).
        #[arg(long)]
        quiet: bool,
    }

    /// What every task adds to.
    struct Tally {
        started: Instant,
        /// Per nonce, when its send was invoked.
        sent_at: Mutex<BTreeMap<String, Instant>>,
        send_us: Mutex<Histogram<u64>>,
        deliver_us: Mutex<Histogram<u64>>,
        sends_ok: AtomicU64,
        sends_failed: AtomicU64,
        deliveries: AtomicU64,
        sessions_ready: AtomicU64,
        sessions_lost: AtomicU64,
    }

    impl Tally {
        fn new() -> Result<Self, String> {
            let histogram = || {
                Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                    .map_err(|e| format!("histogram: {e}"))
            };
            Ok(Self {
                started: Instant::now(),
                sent_at: Mutex::new(BTreeMap::new()),
                send_us: Mutex::new(histogram()?),
                deliver_us: Mutex::new(histogram()?),
                sends_ok: AtomicU64::new(0),
                sends_failed: AtomicU64::new(0),
                deliveries: AtomicU64::new(0),
                sessions_ready: AtomicU64::new(0),
                sessions_lost: AtomicU64::new(0),
            })
        }

        fn record(histogram: &Mutex<Histogram<u64>>, elapsed: Duration) {
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
            histogram.saturating_record(us.clamp(1, LATENCY_US_MAX));
        }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("chatload: cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("chatload: {error}");
                ExitCode::FAILURE
            }
        }
    }

    /// The users to drive and, for each, the channels it may send in.
    fn load_users(args: &Args) -> Result<Vec<(User, Vec<u64>)>, String> {
        let path = args.directory.display();
        let text = std::fs::read_to_string(&args.directory)
            .map_err(|e| format!("cannot read --directory {path}: {e}"))?;
        let directory: Directory = serde_json::from_str(&text)
            .map_err(|e| format!("--directory {path} is not a chatd directory: {e}"))?;
        let wanted = usize::try_from(args.users).unwrap_or(usize::MAX);
        if directory.users.len() < wanted {
            return Err(format!(
                "--users {wanted} but {path} holds {} users",
                directory.users.len()
            ));
        }
        let users = directory.users.values().take(wanted).map(|user| {
            let channels = directory
                .guilds_of(user.id)
                .iter()
                .flat_map(|g| g.channels.iter().map(|c| c.id))
                .collect();
            (user.clone(), channels)
        });
        Ok(users.collect())
    }

    async fn run(args: Args) -> Result<(), String> {
        // 1. Accounts, and a first request that tells an unreachable server apart.
        let users = load_users(&args)?;
        let probe = http_request(
            args.api,
            Method::GET,
            "/api/v10/gateway",
            None,
            None,
            REQUEST_TIMEOUT,
        );
        probe
            .await
            .map_err(|e| format!("the API at --api {} does not answer: {e}", args.api))?;

        // 2. One session per user; wait until they are ready (or a deadline passes).
        let tally = Arc::new(Tally::new()?);
        for (user, _) in &users {
            tokio::spawn(session(args.gateway, user.clone(), tally.clone()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while tally.sessions_ready.load(Ordering::Relaxed) < args.users {
            if Instant::now() > deadline {
                let ready = tally.sessions_ready.load(Ordering::Relaxed);
                return Err(format!(
                    "only {ready} of {} sessions became ready at --gateway {} within 10 s",
                    args.users, args.gateway
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // 3. Send at the rate, from the users in turn, with a progress bar.
        let bar = progress_bar(&args);
        let total = args.rate * args.duration_s;
        let period = Duration::from_secs_f64(1.0 / args.rate as f64);
        let send_start = Instant::now();
        let senders: Vec<(User, Vec<u64>)> =
            users.into_iter().filter(|(_, c)| !c.is_empty()).collect();
        if senders.is_empty() {
            return Err("no user of the directory is a member of any channel".into());
        }
        for n in 0..total {
            let at = send_start + period.mul_f64(n as f64);
            tokio::time::sleep_until(at.into()).await;
            let index = usize::try_from(n).unwrap_or(0);
            let (user, channels) = &senders[index % senders.len()];
            let channel = channels[(index / senders.len()) % channels.len()];
            tokio::spawn(send(
                args.api,
                user.token.clone(),
                channel,
                format!("load-{n}"),
                tally.clone(),
            ));
            bar.set_position(n + 1);
            bar.set_message(format!(
                "acked {} delivered {}",
                tally.sends_ok.load(Ordering::Relaxed),
                tally.deliveries.load(Ordering::Relaxed)
            ));
        }
        let send_seconds = send_start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(args.drain_ms)).await;
        bar.finish_and_clear();

        // 4. The figures.
        print_summary(&args, &tally, send_seconds);
        Ok(())
    }

    fn progress_bar(args: &Args) -> ProgressBar {
        if args.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(args.rate * args.duration_s);
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar
    }

    fn print_summary(args: &Args, tally: &Tally, send_seconds: f64) {
        let ok = tally.sends_ok.load(Ordering::Relaxed);
        let failed = tally.sends_failed.load(Ordering::Relaxed);
        let deliveries = tally.deliveries.load(Ordering::Relaxed);
        let lost = tally.sessions_lost.load(Ordering::Relaxed);
        let line = |name: &str, histogram: &Mutex<Histogram<u64>>| {
            let h = histogram.lock().unwrap_or_else(|p| p.into_inner());
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{name:<16} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)",
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0,
                h.len()
            );
        };
        println!(
            "chatload {} users, {} msg/s for {} s ({:.1} s of wall time in all)",
            args.users,
            args.rate,
            args.duration_s,
            tally.started.elapsed().as_secs_f64()
        );
        println!(
            "sends            {ok} acked, {failed} failed; {:.1} acked/s",
            ok as f64 / send_seconds
        );
        println!(
            "deliveries       {deliveries} MESSAGE_CREATE; {:.1}/s; sessions lost {lost}",
            deliveries as f64 / send_seconds
        );
        line("send (REST)", &tally.send_us);
        line("send-to-deliver", &tally.deliver_us);
    }

    /// One REST send; its latency and, by its nonce, the time deliveries are measured from.
    async fn send(api: SocketAddr, token: String, channel: u64, nonce: String, tally: Arc<Tally>) {
        let body = json!({"content": format!("load {nonce}"), "nonce": nonce});
        let path = format!("/api/v10/channels/{channel}/messages");
        let invoked = Instant::now();
        {
            let mut sent_at = tally.sent_at.lock().unwrap_or_else(|p| p.into_inner());
            sent_at.insert(nonce, invoked);
        }
        let authorization = format!("Bot {token}");
        let answer = http_request(
            api,
            Method::POST,
            &path,
            Some(&authorization),
            Some(body.to_string().into_bytes()),
            REQUEST_TIMEOUT,
        )
        .await;
        match answer {
            Ok((status, _)) if status.is_success() => {
                Tally::record(&tally.send_us, invoked.elapsed());
                tally.sends_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) => {
                tally.sends_failed.fetch_add(1, Ordering::Relaxed);
                let body = String::from_utf8_lossy(&body);
                tracing::warn!(%status, %body, "send_refused");
            }
            Err(error) => {
                tally.sends_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "send_failed");
            }
        }
    }

    /// One gateway session for `user`: Identify, heartbeats, and the deliveries it receives.
    async fn session(gateway: SocketAddr, user: User, tally: Arc<Tally>) {
        if let Err(error) = drive_session(gateway, &user, &tally).await {
            tracing::warn!(user = %user.username, %error, "session_lost");
        }
        tally.sessions_lost.fetch_add(1, Ordering::Relaxed);
    }

    async fn drive_session(gateway: SocketAddr, user: &User, tally: &Tally) -> Result<(), String> {
        // 1. Connect and identify.
        let stream = TcpStream::connect(gateway)
            .await
            .map_err(|e| format!("cannot connect to the gateway at {gateway}: {e}"))?;
        let url = format!("ws://{gateway}/gateway?v=10&encoding=json");
        let (mut ws, _) = tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
            .await
            .map_err(|e| format!("WebSocket handshake with {gateway} failed: {e}"))?;
        let identify = json!({"op": 2, "d": {
            "token": user.token,
            "intents": INTENTS,
            "properties": {"os": "linux", "browser": "chatload", "device": "chatload"},
        }});
        let mut interval = Duration::from_secs(41);
        let mut last_s = Value::Null;
        let mut next_beat = tokio::time::Instant::now() + interval;

        // 2. Answer Hello, beat, and time every delivery that carries one of our nonces.
        loop {
            let message = tokio::select! {
                biased;
                message = ws.next() => message,
                () = tokio::time::sleep_until(next_beat) => {
                    let beat = json!({"op": 1, "d": last_s});
                    ws.send(Message::Text(beat.to_string().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                    next_beat += interval;
                    continue;
                }
            };
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the gateway closed the connection".into()),
            };
            let payload: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the gateway sent a payload that is not JSON: {e}"))?;
            if !payload["s"].is_null() {
                last_s = payload["s"].clone();
            }
            match (payload["op"].as_u64(), payload["t"].as_str()) {
                (Some(10), _) => {
                    let ms = payload["d"]["heartbeat_interval"]
                        .as_u64()
                        .unwrap_or(41_250);
                    interval = Duration::from_millis(ms.max(1));
                    next_beat = tokio::time::Instant::now() + interval / 2;
                    ws.send(Message::Text(identify.to_string().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                (Some(0), Some("READY")) => {
                    tally.sessions_ready.fetch_add(1, Ordering::Relaxed);
                }
                (Some(0), Some("MESSAGE_CREATE")) => delivered(tally, &payload["d"]),
                (Some(9), _) => return Err("the gateway invalidated the session".into()),
                _ => {}
            }
        }
    }

    fn delivered(tally: &Tally, message: &Value) {
        let Some(nonce) = message["nonce"].as_str() else {
            return;
        };
        let invoked = {
            let sent_at = tally.sent_at.lock().unwrap_or_else(|p| p.into_inner());
            sent_at.get(nonce).copied()
        };
        if let Some(invoked) = invoked {
            Tally::record(&tally.deliver_us, invoked.elapsed());
            tally.deliveries.fetch_add(1, Ordering::Relaxed);
        }
    }
}
