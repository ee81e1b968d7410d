//! The data service's request coalescing in the simulator: a hot channel read by bursts of
//! 100 identical history reads every 100 ms for 10 simulated seconds, through one
//! data-service node in front of three ring nodes, and, as the baseline in the same process,
//! the same bursts read straight from the ring. Prints reads, store queries, queries per read
//! and p50 / p99 simulated read latency for both.
//!
//! Run: `cargo sim-bench -p chat-sim --bench data_coalescing`.

#[cfg(not(madsim))]
fn main() {
    eprintln!("data_coalescing needs the simulator; run it with `cargo sim-bench`");
}

#[cfg(madsim)]
fn main() {
    bench::run();
}

#[cfg(madsim)]
mod bench {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use chat_sim::ringsim::{RingCluster, RingShape};
    use chat_system::data::{self, DataClient};
    use chat_system::env::clock::NodeClock;
    use chat_system::ids::{self, SnowflakeGenerator};
    use chat_system::model::StoredMessage;
    use chat_system::ring::client::{HistoryQuery, StoreClient};
    use chat_system::ring::Consistency;
    use madsim::runtime::{Handle, Runtime};
    use tokio::net::TcpListener;

    const BURST: usize = 100;
    const BURSTS: usize = 100;
    const BURST_GAP: Duration = Duration::from_millis(100);

    fn percentile(sorted: &[Duration], q: f64) -> f64 {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Runs the bursts, each read through `read`; the latencies, sorted.
    async fn bursts<F, Fut>(read: F) -> Vec<Duration>
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..BURSTS {
            for _ in 0..BURST {
                let (read, tx) = (read.clone(), tx.clone());
                tokio::spawn(async move {
                    let began = Instant::now();
                    let ok = read().await;
                    let _ = tx.send((ok, began.elapsed()));
                });
            }
            tokio::time::sleep(BURST_GAP).await;
        }
        drop(tx);
        let mut latencies = Vec::new();
        while let Some((ok, latency)) = rx.recv().await {
            assert!(ok, "a read failed");
            latencies.push(latency);
        }
        latencies.sort();
        latencies
    }

    fn print(name: &str, latencies: &[Duration], store_queries: u64) {
        let reads = latencies.len() as f64;
        println!(
            "{name:<22} reads {reads:>6}  store queries {store_queries:>6}  per read {:.3}  \
             p50 {:.1} ms  p99 {:.1} ms",
            store_queries as f64 / reads,
            percentile(latencies, 0.5),
            percentile(latencies, 0.99)
        );
    }

    pub fn run() {
        let runtime = Runtime::with_seed_and_config(1, madsim::Config::default());
        runtime.block_on(async {
            let cluster = RingCluster::start(&RingShape::default());
            let ring = cluster.addrs.clone();
            let node = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 5, 1)), 7300);
            let ring_for_node = ring.clone();
            Handle::current()
                .create_node()
                .name("data-1")
                .ip(node.ip())
                .init(move || {
                    let clock = NodeClock::new();
                    let store = StoreClient::new(ring_for_node.clone(), Consistency::Quorum, clock);
                    async move {
                        let listener = TcpListener::bind(node).await.expect("bind data-1");
                        data::run(listener, store).await;
                    }
                })
                .build();
            cluster
                .on_client(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;

                    // 1. A hot channel with 50 messages.
                    let clock = NodeClock::new();
                    let channel_id = ids::from_timestamp_ms(clock.now_ms() - 3_600_000);
                    let store = StoreClient::new(ring, Consistency::Quorum, clock.clone());
                    let mut generator = SnowflakeGenerator::new(clock.clone(), 3, 0);
                    for n in 0..50 {
                        let message = StoredMessage {
                            channel_id,
                            message_id: generator.next_id(),
                            guild_id: 1,
                            author_id: 7,
                            content: format!("message {n}"),
                            ..Default::default()
                        };
                        store.put(&message, clock.now_us()).await.expect("stored");
                    }
                    let query = HistoryQuery {
                        channel_id,
                        before: None,
                        limit: 50,
                    };

                    // 2. Through the data service, then straight from the ring.
                    let client = DataClient::new(vec![node]);
                    let via_data = client.clone();
                    let coalesced = bursts(move || {
                        let client = via_data.clone();
                        async move { client.history(query).await.is_ok_and(|m| m.len() == 50) }
                    })
                    .await;
                    let stats = client.stats(node).await.expect("counters");
                    print("data service", &coalesced, stats.store_queries);
                    let direct = bursts(move || {
                        let store = store.clone();
                        async move { store.history(query).await.is_ok_and(|m| m.len() == 50) }
                    })
                    .await;
                    print("straight to the ring", &direct, direct.len() as u64);
                    println!(
                        "store queries: {:.1}x fewer through the data service ({} vs {})",
                        direct.len() as f64 / stats.store_queries.max(1) as f64,
                        stats.store_queries,
                        direct.len(),
                    );
                })
                .await;
        });
    }
}
