//! Simulator speed: one seed of the `small` scenario (1,000 users, 200 guilds, 90 simulated
//! seconds under its swarm faults) beside a raw madsim TCP ping-pong measured in the same
//! process. Prints, for each, events per wall second and time compression (simulated seconds
//! per wall second), and the ratio between them: what the whole cluster and its checkers
//! cost against the bare simulated network.
//!
//! An event is one recorded history event for `small` (an operation, a dispatch, a session
//! change, a fault) and one message for the ping-pong (each round trip is two).
//!
//! Run: `cargo sim-bench -p chat-sim --bench sim_speed`.

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim_speed needs the simulator; run it with `cargo sim-bench`");
}

#[cfg(madsim)]
fn main() {
    bench::run();
}

#[cfg(madsim)]
mod bench {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use chat_sim::runner;
    use chat_sim::scenario::Scenario;
    use madsim::runtime::{Handle, Runtime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const SEED: u64 = 1;
    const PING_PONG_SIM: Duration = Duration::from_secs(90);
    const MESSAGE_BYTES: usize = 64;

    struct Figures {
        events: u64,
        sim_seconds: f64,
        wall_seconds: f64,
    }

    impl Figures {
        fn print(&self, name: &str) {
            println!(
                "{name:<22} {:>9} events in {:>6.1} s simulated, {:>7.2} s wall: {:>9.0} \
                 events/s, {:>7.1}x time compression",
                self.events,
                self.sim_seconds,
                self.wall_seconds,
                self.events as f64 / self.wall_seconds,
                self.sim_seconds / self.wall_seconds
            );
        }
    }

    /// Two simulated hosts: one echoes, the other sends a message and waits for it back,
    /// for `PING_PONG_SIM` of simulated time.
    fn ping_pong() -> Figures {
        let runtime = Runtime::with_seed_and_config(SEED, madsim::Config::default());
        let wall = Instant::now();
        let round_trips = runtime.block_on(async {
            let handle = Handle::current();
            let server_addr: SocketAddr = "10.0.0.1:9000".parse().expect("address");
            let server = handle
                .create_node()
                .name("echo")
                .ip(server_addr.ip())
                .build();
            server.spawn(async move {
                let listener = TcpListener::bind(server_addr).await.expect("bind");
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut buffer = [0u8; MESSAGE_BYTES];
                while stream.read_exact(&mut buffer).await.is_ok() {
                    if stream.write_all(&buffer).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            });
            let client = handle
                .create_node()
                .name("ping")
                .ip("10.0.0.2".parse().expect("ip"));
            let client = client.build();
            let task = client.spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut stream = TcpStream::connect(server_addr).await.expect("connect");
                let (start, mut count, mut buffer) = (Instant::now(), 0u64, [7u8; MESSAGE_BYTES]);
                while start.elapsed() < PING_PONG_SIM {
                    stream.write_all(&buffer).await.expect("write");
                    stream.flush().await.expect("flush");
                    stream.read_exact(&mut buffer).await.expect("read");
                    count += 1;
                }
                count
            });
            task.await.expect("the ping task ends")
        });
        Figures {
            events: round_trips * 2,
            sim_seconds: PING_PONG_SIM.as_secs_f64() + 0.1,
            wall_seconds: wall.elapsed().as_secs_f64(),
        }
    }

    fn small() -> Figures {
        let scenario = Scenario::by_name("small")
            .expect("small is built in")
            .resolve(SEED);
        let output = runner::run(SEED, &scenario);
        Figures {
            events: output.events,
            sim_seconds: output.sim_seconds,
            wall_seconds: output.wall_seconds,
        }
    }

    pub fn run() {
        println!("simulator speed, seed {SEED} (same process)");
        let baseline = ping_pong();
        baseline.print("madsim TCP ping-pong");
        let small = small();
        small.print("small (1,000 users)");
        let rate = |f: &Figures| f.events as f64 / f.wall_seconds;
        let compression = |f: &Figures| f.sim_seconds / f.wall_seconds;
        println!(
            "small / ping-pong: {:.3}x the events per second, {:.3}x the time compression",
            rate(&small) / rate(&baseline),
            compression(&small) / compression(&baseline)
        );
    }
}
