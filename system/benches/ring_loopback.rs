//! Ring throughput and latency on real tokio: three ring nodes in this process on loopback
//! ports, each on its own data directory with real files and fsync, driven by concurrent
//! store clients. Prints writes and history reads per second and p50 / p99 latency at QUORUM,
//! with ONE measured in the same process as the baseline the QUORUM figures are divided by.
//!
//! Run: `cargo bench -p chat-system --bench ring_loopback`.

#[cfg(madsim)]
fn main() {
    eprintln!("ring_loopback measures the real runtime; run it without --cfg madsim");
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
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use chat_system::env::clock::NodeClock;
    use chat_system::env::disk::{Disk, RealDisk};
    use chat_system::ids::{self, SnowflakeGenerator};
    use chat_system::model::StoredMessage;
    use chat_system::ring::client::{HistoryQuery, StoreClient};
    use chat_system::ring::hints::HINT_WINDOW_MS_DEFAULT;
    use chat_system::ring::layout::RingLayout;
    use chat_system::ring::node::{engine_config, RingNodeConfig};
    use chat_system::ring::Consistency;
    use tokio::net::TcpListener;

    const CLIENTS: usize = 16;
    const PHASE: Duration = Duration::from_secs(3);
    const CHANNELS: u64 = 32;

    /// Operations per second and latency percentiles of one phase.
    pub struct Figures {
        pub ops_per_second: f64,
        pub p50_ms: f64,
        pub p99_ms: f64,
    }

    fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
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
        }
    }

    async fn start_ring(dir: &std::path::Path) -> Vec<SocketAddr> {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback"),
            );
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr"))
            .collect();
        let layout = Arc::new(RingLayout::single_datacenter(addrs.clone(), 3));
        for (index, listener) in listeners.into_iter().enumerate() {
            let disk = RealDisk::open(dir.join(format!("ring-{}", index + 1))).expect("data dir");
            let config = RingNodeConfig {
                addr: addrs[index],
                layout: layout.clone(),
                disk: Arc::new(disk) as Arc<dyn Disk>,
                clock: NodeClock::new(),
                hint_window_ms: HINT_WINDOW_MS_DEFAULT,
                engine: engine_config(),
                repair_interval_ms: None,
            };
            tokio::spawn(chat_system::ring::node::run(listener, config));
        }
        addrs
    }

    fn channel(n: u64) -> u64 {
        ids::from_timestamp_ms(NodeClock::new().now_ms() - 60_000) + n % CHANNELS
    }

    async fn writes(store: StoreClient, worker: u8) -> Vec<Duration> {
        let clock = NodeClock::new();
        let mut ids = SnowflakeGenerator::new(clock.clone(), worker, 1);
        let (mut latencies, start, mut n) = (Vec::new(), Instant::now(), 0u64);
        while start.elapsed() < PHASE {
            n += 1;
            let message = StoredMessage {
                channel_id: channel(n + u64::from(worker)),
                message_id: ids.next_id(),
                guild_id: 1,
                author_id: u64::from(worker),
                content: "x".repeat(64),
                ..Default::default()
            };
            let began = Instant::now();
            if store.put(&message, clock.now_us()).await.is_ok() {
                latencies.push(began.elapsed());
            }
        }
        latencies
    }

    async fn reads(store: StoreClient, worker: u8) -> Vec<Duration> {
        let (mut latencies, start, mut n) = (Vec::new(), Instant::now(), 0u64);
        while start.elapsed() < PHASE {
            n += 1;
            let query = HistoryQuery {
                channel_id: channel(n + u64::from(worker)),
                before: None,
                limit: 50,
            };
            let began = Instant::now();
            if store.history(query).await.is_ok() {
                latencies.push(began.elapsed());
            }
        }
        latencies
    }

    async fn phase(addrs: &[SocketAddr], consistency: Consistency, write: bool) -> Figures {
        let began = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..CLIENTS {
            let store = StoreClient::new(addrs.to_vec(), consistency, NodeClock::new());
            let worker = u8::try_from(worker).unwrap_or(0);
            tasks.push(if write {
                tokio::spawn(writes(store, worker))
            } else {
                tokio::spawn(reads(store, worker))
            });
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        figures(latencies, began.elapsed())
    }

    pub async fn run() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let addrs = start_ring(dir.path()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        println!("ring on real tokio: 3 nodes on loopback, fsync per write, {CLIENTS} clients");
        let mut rows = Vec::new();
        for (name, write) in [("write", true), ("history read", false)] {
            let one = phase(&addrs, Consistency::One, write).await;
            let quorum = phase(&addrs, Consistency::Quorum, write).await;
            rows.push((name, one, quorum));
        }
        for (name, one, quorum) in rows {
            println!(
                "{name:<13} QUORUM {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms | ONE {:>8.0}/s \
                 p99 {:>6.2} ms | QUORUM/ONE throughput {:.2}",
                quorum.ops_per_second,
                quorum.p50_ms,
                quorum.p99_ms,
                one.ops_per_second,
                one.p99_ms,
                quorum.ops_per_second / one.ops_per_second.max(1e-9),
            );
        }
    }
}
