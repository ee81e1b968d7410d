//! Ring throughput and latency in the simulator: three simulated ring nodes (1–10 ms links),
//! 16 concurrent store clients, 30 simulated seconds per phase. Prints writes and history
//! reads per simulated second with p50 / p99 simulated latency at QUORUM, ONE measured in the
//! same process as the baseline, and the wall time each phase took (time compression).
//!
//! Run: `cargo sim-bench -p chat-sim --bench ring_sim`.

#[cfg(not(madsim))]
fn main() {
    eprintln!("ring_sim needs the simulator; run it with `cargo sim-bench`");
}

#[cfg(madsim)]
fn main() {
    bench::run();
}

#[cfg(madsim)]
mod bench {
    use std::time::{Duration, Instant};

    use chat_sim::ringsim::{RingCluster, RingShape};
    use chat_system::env::clock::NodeClock;
    use chat_system::ids::{self, SnowflakeGenerator};
    use chat_system::model::StoredMessage;
    use chat_system::ring::client::{HistoryQuery, StoreClient};
    use chat_system::ring::Consistency;
    use madsim::runtime::Runtime;

    const CLIENTS: u8 = 16;
    const PHASE: Duration = Duration::from_secs(30);
    const CHANNELS: u64 = 32;

    struct Figures {
        per_sim_second: f64,
        p50_ms: f64,
        p99_ms: f64,
        wall_seconds: f64,
    }

    fn percentile(sorted: &[Duration], q: f64) -> f64 {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn channel(n: u64) -> u64 {
        ids::from_timestamp_ms(NodeClock::new().now_ms() - 60_000) + n % CHANNELS
    }

    async fn client(store: StoreClient, worker: u8, write: bool) -> Vec<Duration> {
        let clock = NodeClock::new();
        let mut ids = SnowflakeGenerator::new(clock.clone(), worker, 2);
        let (start, mut latencies, mut n) = (Instant::now(), Vec::new(), 0u64);
        while start.elapsed() < PHASE {
            n += 1;
            let channel_id = channel(n + u64::from(worker));
            let began = Instant::now();
            let ok = if write {
                let message = StoredMessage {
                    channel_id,
                    message_id: ids.next_id(),
                    guild_id: 1,
                    author_id: u64::from(worker),
                    content: "x".repeat(64),
                    ..Default::default()
                };
                store.put(&message, clock.now_us()).await.is_ok()
            } else {
                let query = HistoryQuery {
                    channel_id,
                    before: None,
                    limit: 50,
                };
                store.history(query).await.is_ok()
            };
            if ok {
                latencies.push(began.elapsed());
            }
        }
        latencies
    }

    fn phase(seed: u64, consistency: Consistency, write: bool) -> Figures {
        let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        let wall = Instant::now();
        let mut latencies = runtime.block_on(async move {
            let cluster = RingCluster::start(&RingShape::default());
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !write {
                // Something to read: one write phase's worth, unmeasured.
                let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
                cluster.on_client(client(store, 31, true)).await;
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(usize::from(CLIENTS));
            for worker in 0..CLIENTS {
                let store = cluster.store(&[0, 1, 2], consistency);
                let tx = tx.clone();
                let work = async move {
                    let _ = tx.send(client(store, worker, write).await).await;
                };
                // Spawned from the client host, so the task runs there.
                cluster
                    .on_client(async move {
                        let _detached = tokio::spawn(work);
                    })
                    .await;
            }
            drop(tx);
            let mut all = Vec::new();
            while let Some(latencies) = rx.recv().await {
                all.extend(latencies);
            }
            all
        });
        latencies.sort();
        Figures {
            per_sim_second: latencies.len() as f64 / PHASE.as_secs_f64(),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            wall_seconds: wall.elapsed().as_secs_f64(),
        }
    }

    pub fn run() {
        println!(
            "ring in the simulator: 3 nodes, {CLIENTS} clients, {}s per phase",
            PHASE.as_secs()
        );
        for (name, write) in [("write", true), ("history read", false)] {
            let one = phase(1, Consistency::One, write);
            let quorum = phase(1, Consistency::Quorum, write);
            println!(
                "{name:<13} QUORUM {:>7.0}/sim-s p50 {:>6.2} ms p99 {:>6.2} ms ({:.2} s wall) | \
                 ONE {:>7.0}/sim-s p99 {:>6.2} ms | QUORUM/ONE throughput {:.2}",
                quorum.per_sim_second,
                quorum.p50_ms,
                quorum.p99_ms,
                quorum.wall_seconds,
                one.per_sim_second,
                one.p99_ms,
                quorum.per_sim_second / one.per_sim_second.max(1e-9),
            );
        }
    }
}
