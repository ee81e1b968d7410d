//! The two message store backends under one workload, side by side: the ring (three
//! `chatd --cluster FILE --node ring-N` processes on loopback, fsync per write, RF 3, QUORUM)
//! and Apache Cassandra through the CQL backend (one node on this machine, RF 1, QUORUM,
//! periodic commit log sync). The cluster file lists the other roles too, as every cluster
//! file must, but only the three ring processes are started. Each runs a
//! write phase and then a history-read phase of the newest 50 messages per channel, with the
//! same clients, channels and message sizes, through the `MessageStore` trait. Prints
//! operations per second and p50 / p99 latency for each, and Cassandra's figures divided by
//! the ring's, measured in the same process.
//!
//! Cassandra: `CHAT_CQL_NODES`, or a node started through `.ci/cassandra/start` that stops
//! when the benchmark ends.
//!
//! Run: `cargo bench -p chat-system --bench store_compare`.

#[cfg(madsim)]
fn main() {
    eprintln!("store_compare measures the real runtime; run it without --cfg madsim");
}

#[cfg(not(madsim))]
#[path = "../tests/support/cassandra.rs"]
mod cassandra_node;

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
    use std::io::{BufRead, BufReader};
    use std::net::{SocketAddr, TcpListener};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use chat_system::env::clock::NodeClock;
    use chat_system::ids::{self, SnowflakeGenerator};
    use chat_system::model::StoredMessage;
    use chat_system::ring::client::StoreClient;
    use chat_system::ring::Consistency;
    use chat_system::store::cql::{CqlConfig, CqlStore};
    use chat_system::store::ring::RingStore;
    use chat_system::store::{HistoryQuery, MessageStore};

    const CLIENTS: usize = 16;
    const PHASE: Duration = Duration::from_secs(4);
    const WARMUP: Duration = Duration::from_secs(1);
    const CHANNELS: u64 = 32;
    const CONTENT_BYTES: usize = 64;
    const HISTORY_LIMIT: usize = 50;

    /// Operations per second and latency percentiles of one phase.
    pub struct Figures {
        pub ops_per_second: f64,
        pub p50_ms: f64,
        pub p99_ms: f64,
        pub errors: usize,
    }

    fn figures(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Figures {
        latencies.sort();
        let at = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies
                .get(index)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Figures {
            ops_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            errors,
        }
    }

    /// The benchmark's channels, created a minute before `base_ms`; unique to this run.
    fn channel(base_ms: i64, n: u64) -> u64 {
        ids::from_timestamp_ms(base_ms - 60_000) + n % CHANNELS
    }

    /// Writes for `duration`; latencies of the acknowledged ones and the count of failures.
    async fn writes(
        store: Arc<dyn MessageStore>,
        base_ms: i64,
        worker: u8,
        duration: Duration,
    ) -> (Vec<Duration>, usize) {
        let clock = NodeClock::new();
        let mut ids = SnowflakeGenerator::new(clock.clone(), worker, 2);
        let (mut latencies, mut errors) = (Vec::new(), 0);
        let (start, mut n) = (Instant::now(), u64::from(worker));
        while start.elapsed() < duration {
            n += 1;
            let message = StoredMessage {
                channel_id: channel(base_ms, n),
                message_id: ids.next_id(),
                guild_id: 1,
                author_id: u64::from(worker),
                content: "x".repeat(CONTENT_BYTES),
                ..Default::default()
            };
            let began = Instant::now();
            match store.put(&message, clock.now_us()).await {
                Ok(()) => latencies.push(began.elapsed()),
                Err(_) => errors += 1,
            }
        }
        (latencies, errors)
    }

    /// History reads for `duration`, round-robin over the channels.
    async fn reads(
        store: Arc<dyn MessageStore>,
        base_ms: i64,
        worker: u8,
        duration: Duration,
    ) -> (Vec<Duration>, usize) {
        let (mut latencies, mut errors) = (Vec::new(), 0);
        let (start, mut n) = (Instant::now(), u64::from(worker));
        while start.elapsed() < duration {
            n += 1;
            let query = HistoryQuery {
                channel_id: channel(base_ms, n),
                before: None,
                limit: HISTORY_LIMIT,
            };
            let began = Instant::now();
            match store.history(query).await {
                Ok(page) if page.len() == HISTORY_LIMIT => latencies.push(began.elapsed()),
                Ok(_) | Err(_) => errors += 1,
            }
        }
        (latencies, errors)
    }

    async fn phase(
        store: &Arc<dyn MessageStore>,
        base_ms: i64,
        write: bool,
        duration: Duration,
    ) -> Figures {
        let began = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..CLIENTS {
            let worker = u8::try_from(worker).expect("fewer than 32 clients");
            let store = store.clone();
            tasks.push(if write {
                tokio::spawn(writes(store, base_ms, worker, duration))
            } else {
                tokio::spawn(reads(store, base_ms, worker, duration))
            });
        }
        let (mut latencies, mut errors) = (Vec::new(), 0);
        for task in tasks {
            let (mine, failed) = task.await.expect("a client task ends");
            latencies.extend(mine);
            errors += failed;
        }
        figures(latencies, errors, began.elapsed())
    }

    /// The write phase, then the read phase, after a short warm-up of each.
    async fn measure(store: Arc<dyn MessageStore>) -> (Figures, Figures) {
        let base_ms = NodeClock::new().now_ms();
        phase(&store, base_ms, true, WARMUP).await;
        let write = phase(&store, base_ms, true, PHASE).await;
        phase(&store, base_ms, false, WARMUP).await;
        let read = phase(&store, base_ms, false, PHASE).await;
        (write, read)
    }

    fn row(name: &str, ring: &Figures, cql: &Figures) {
        println!(
            "{name:<13} ring {:>7.0}/s p50 {:>6.2} ms p99 {:>6.2} ms | cassandra {:>7.0}/s \
             p50 {:>6.2} ms p99 {:>6.2} ms | cassandra/ring throughput {:.2}, p99 {:.2}",
            ring.ops_per_second,
            ring.p50_ms,
            ring.p99_ms,
            cql.ops_per_second,
            cql.p50_ms,
            cql.p99_ms,
            cql.ops_per_second / ring.ops_per_second.max(1e-9),
            cql.p99_ms / ring.p99_ms.max(1e-9),
        );
        if ring.errors + cql.errors > 0 {
            println!(
                "{name:<13} failed or short: ring {}, cassandra {}",
                ring.errors, cql.errors
            );
        }
    }

    /// The ring-node processes; each is killed when this is dropped, also on a panic.
    struct RingProcesses(Vec<Child>);

    impl Drop for RingProcesses {
        fn drop(&mut self) {
            for child in &mut self.0 {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    /// Starts ring-1..ring-3 of a cluster file written under `dir` as `chatd` processes and
    /// waits for each to say it is ready; their addresses.
    fn start_ring_processes(dir: &Path) -> (RingProcesses, Vec<SocketAddr>) {
        // 1. Eight free loopback ports: three ring nodes, then the roles never started.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("bound"))
            .collect();
        drop(listeners);
        let mut text = format!(
            "data_dir = {:?}\n[directory]\nusers = 1\nguilds = 1\nchannels = 1\n\
             created_unix_ms = 1700000000000\n",
            dir.join("data").display().to_string()
        );
        let roles = ["ring", "ring", "ring", "api", "guild", "data", "gateway"];
        for (n, (role, addr)) in roles.iter().zip(&addrs).enumerate() {
            text.push_str(&format!(
                "[[node]]\nname = \"{role}-{}\"\nrole = \"{role}\"\naddr = \"{addr}\"\n",
                n + 1
            ));
        }
        text.push_str(&format!("dispatch = \"{}\"\n", addrs[7]));
        let file = dir.join("cluster.toml");
        std::fs::write(&file, text).expect("cluster file written");

        // 2. The three ring processes, each ready before the next starts.
        let mut processes = RingProcesses(Vec::new());
        for n in 1..=3 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
                .arg("--cluster")
                .arg(&file)
                .args(["--node", &format!("ring-{n}")])
                .stdout(Stdio::piped())
                .spawn()
                .expect("chatd starts");
            let stdout = child.stdout.take().expect("piped stdout");
            processes.0.push(child);
            let mut lines = BufReader::new(stdout).lines();
            let ready = lines.any(|line| line.is_ok_and(|l| l == "chatd ready"));
            assert!(ready, "ring-{n} ended before it was ready");
            // Keep reading, so the node never writes to a closed pipe.
            #[allow(
                clippy::disallowed_methods,
                reason = "a real-runtime benchmark, no simulator here"
            )]
            std::thread::spawn(move || lines.for_each(drop));
        }
        (processes, addrs[..3].to_vec())
    }

    /// Stops the ring processes with SIGTERM, as a service manager does, by their pids.
    fn stop_ring_processes(mut processes: RingProcesses) {
        for child in &mut processes.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub async fn run() {
        // 1. The ring: three chatd ring-node processes.
        let dir = tempfile::tempdir().expect("a temp dir");
        let (processes, addrs) = start_ring_processes(dir.path());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let client = StoreClient::new(addrs, Consistency::Quorum, NodeClock::new());
        let ring: Arc<dyn MessageStore> = Arc::new(RingStore::new(client));

        // 2. Cassandra: one node, schema created if missing.
        let nodes = match super::cassandra_node::contact_points() {
            Ok(nodes) => nodes,
            Err(error) => panic!("store_compare needs Cassandra: {error}"),
        };
        let config = CqlConfig::new(nodes.clone(), "chat_bench", 1);
        let cql = match CqlStore::open(&config).await {
            Ok(store) => Arc::new(store) as Arc<dyn MessageStore>,
            Err(error) => panic!("opening chat_bench on {}: {error}", nodes.join(",")),
        };

        // 3. The same workload on each, one after the other.
        println!(
            "store_compare: {CLIENTS} clients, {CHANNELS} channels, {CONTENT_BYTES}-byte \
             messages, history pages of {HISTORY_LIMIT}, {} s per phase",
            PHASE.as_secs()
        );
        println!(
            "ring: 3 chatd ring-node processes on loopback, RF 3, QUORUM, fsync per write | \
             cassandra: 1 node ({}), RF 1, QUORUM, commit log synced every 10 s",
            nodes.join(",")
        );
        let (ring_write, ring_read) = measure(ring).await;
        let (cql_write, cql_read) = measure(cql).await;
        row("write", &ring_write, &cql_write);
        row("history read", &ring_read, &cql_read);
        stop_ring_processes(processes);
    }
}
