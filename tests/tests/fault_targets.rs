//! Faults that reach one node or one link and nothing else: slow syncs on one replica's disk,
//! latency and loss on one node's links or on one link, and a clock step on the gateway.
//! Every figure is simulated time, checked against what the fault's numbers predict with the
//! network's own latency pinned to 5 ms each way.
#![cfg(madsim)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chat_faults::{DiskFault, Fault, FaultKind, Schedule};
use chat_reports::report;
use chat_sim::nemesis::Nemesis;
use chat_sim::recorder::Recorder;
use chat_sim::ringsim::{simulate, RingCluster, RingShape};
use chat_sim::runner;
use chat_sim::scenario::Scenario;
use chat_system::env::clock::NodeClock;
use chat_system::env::disk::SimDisk;
use chat_system::ids;
use chat_system::model::StoredMessage;
use chat_system::ring::client::StoreClient;
use chat_system::ring::Consistency;
use chat_system::rpc::{serve_rpc, RpcClient};
use madsim::runtime::{Handle, NodeHandle};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pins every message's network latency to 5 ms, so a round trip is 10 ms plus the faults.
fn pin_network_latency() {
    madsim::net::NetSim::current().update_config(|config| {
        config.send_latency = ms(5)..ms(5) + Duration::from_nanos(1);
    });
}

/// `measured` is `expected` give or take 1 ms (scheduling adds microseconds, never more).
fn assert_about(measured: Duration, expected: Duration, what: &str) {
    let gap = measured.abs_diff(expected);
    assert!(gap < ms(1), "{what}: {measured:?}, expected {expected:?}");
}

// ---- Slow syncs ----------------------------------------------------------------------------

fn message(channel_id: u64, message_id: u64) -> StoredMessage {
    StoredMessage {
        channel_id,
        message_id,
        guild_id: 1,
        author_id: 1,
        content: "m".to_string(),
        ..Default::default()
    }
}

/// How long a write through `store` (coordinated by ring-1) takes, from the client.
async fn write_time(cluster: &RingCluster, store: &StoreClient, message_id: u64) -> Duration {
    let store = store.clone();
    let channel = ids::from_timestamp_ms(NodeClock::new().now_ms() - 86_400_000) + 1;
    cluster
        .on_client(async move {
            let started = Instant::now();
            let written = store
                .put(&message(channel, message_id), NodeClock::new().now_us())
                .await;
            assert_eq!(written, Ok(()));
            started.elapsed()
        })
        .await
}

#[test]
fn slow_syncs_on_one_replica_hold_its_writes_back_by_the_delay() {
    simulate(41, || async {
        pin_network_latency();
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (all, quorum) = (
            cluster.store(&[0], Consistency::All),
            cluster.store(&[0], Consistency::Quorum),
        );
        // Open every connection first (a fresh simulated connection's first bytes take a
        // few ms longer to be accepted).
        write_time(&cluster, &all, 1).await;
        write_time(&cluster, &quorum, 2).await;

        // 1. Healthy: client -> ring-1, ring-1 -> replicas and back, back to the client.
        let base = ms(20);
        assert_about(write_time(&cluster, &all, 3).await, base, "ALL before");
        assert_about(
            write_time(&cluster, &quorum, 4).await,
            base,
            "QUORUM before",
        );

        // 2. ring-2's syncs take 200 ms longer: its replica acknowledges 200 ms later, which
        //    ALL waits for and QUORUM (ring-1 and ring-3 answer first) does not.
        cluster.disk(1).set_sync_delay(ms(200));
        let slow_all = write_time(&cluster, &all, 5).await;
        assert_about(slow_all, base + ms(200), "ALL with ring-2 slow");
        let slow_quorum = write_time(&cluster, &quorum, 6).await;
        assert_about(slow_quorum, base, "QUORUM with ring-2 slow");

        // 3. With ring-3 slow too, a QUORUM needs one of them: 200 ms later as well.
        cluster.disk(2).set_sync_delay(ms(200));
        tokio::time::sleep(ms(500)).await;
        let slow_quorum = write_time(&cluster, &quorum, 7).await;
        assert_about(
            slow_quorum,
            base + ms(200),
            "QUORUM with ring-2 and ring-3 slow",
        );

        // 4. Healed, writes are as fast as before.
        cluster.disk(1).set_sync_delay(Duration::ZERO);
        cluster.disk(2).set_sync_delay(Duration::ZERO);
        tokio::time::sleep(ms(500)).await;
        assert_about(write_time(&cluster, &all, 8).await, base, "ALL after");
    });
}

#[test]
fn overlapping_slow_syncs_on_one_disk_leave_the_worst_in_force_until_the_last_heals() {
    simulate(48, || async {
        let disk = SimDisk::new();
        let disks = BTreeMap::from([("ring-1".to_string(), disk.clone())]);
        let (ips, clocks, stopped) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let start = std::time::Instant::now();
        let recorder = Recorder::new(start);
        let nemesis = Nemesis {
            handle: &Handle::current(),
            ips: &ips,
            disks: &disks,
            clocks: &clocks,
            recorder: &recorder,
            stopped: &stopped,
            start,
        };
        let slow = |at_ms, delay_ms, duration_ms| Fault {
            at_ms,
            kind: FaultKind::Disk {
                node: "ring-1".into(),
                disk: DiskFault::SlowSync { delay_ms },
                duration_ms,
            },
        };
        // 300 ms from 1 s to 3 s, 100 ms from 2 s to 5 s.
        let schedule = Schedule::new(vec![slow(1_000, 300, 2_000), slow(2_000, 100, 3_000)]);
        let tokio_start = Instant::now();
        let probe = async {
            let mut seen = Vec::new();
            for at_ms in [500, 1_500, 2_500, 3_500, 5_500] {
                tokio::time::sleep_until(tokio_start + ms(at_ms)).await;
                seen.push(disk.sync_delay().as_millis());
            }
            seen
        };
        let ((), seen) = tokio::join!(nemesis.run(&schedule), probe);
        assert_eq!(seen, [0, 300, 300, 100, 0]);
    });
}

// ---- Latency and loss per link -------------------------------------------------------------

/// Echo servers on `ring-1..3` and `client`, for timing round trips between them.
struct Echoes {
    handle: Handle,
    nodes: BTreeMap<String, (NodeHandle, SocketAddr)>,
    /// One client per node, so its connections are reused once open.
    clients: BTreeMap<String, RpcClient>,
}

const ECHO_PORT: u16 = 7000;

impl Echoes {
    fn start() -> Self {
        let handle = Handle::current();
        let mut nodes = BTreeMap::new();
        let hosts = [
            ("ring-1", 1, 1),
            ("ring-2", 1, 2),
            ("ring-3", 1, 3),
            ("client", 9, 1),
        ];
        for (name, subnet, last) in hosts {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, subnet, last)), ECHO_PORT);
            let node = handle
                .create_node()
                .name(name)
                .ip(addr.ip())
                .init(move || async move {
                    let listener = TcpListener::bind(addr).await.expect("bind the echo port");
                    serve_rpc(listener, |n: u64| async move { n }).await;
                })
                .build();
            nodes.insert(name.to_string(), (node, addr));
        }
        let clients = nodes
            .keys()
            .map(|n| (n.clone(), RpcClient::new()))
            .collect();
        Self {
            handle,
            nodes,
            clients,
        }
    }

    /// Opens a connection on every route, both ways (a fresh simulated connection's first
    /// bytes take a few ms longer to be accepted).
    async fn warm_up(&self) {
        for from in self.nodes.keys() {
            for to in self.nodes.keys().filter(|to| *to != from) {
                self.rtt(from, to).await;
            }
        }
    }

    fn ips(&self) -> BTreeMap<String, IpAddr> {
        let ips = self
            .nodes
            .iter()
            .map(|(name, (_, addr))| (name.clone(), addr.ip()));
        ips.collect()
    }

    /// The round trip of one call from `from` to `to`.
    async fn rtt(&self, from: &str, to: &str) -> Duration {
        let to = self.nodes[to].1;
        let client = self.clients[from].clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.nodes[from].0.spawn(async move {
            let started = Instant::now();
            let echoed = client
                .call::<u64, u64>(to, &7, Duration::from_secs(30))
                .await;
            assert_eq!(echoed, Ok(7));
            let _ = tx.send(started.elapsed());
        });
        rx.await.expect("the call finished")
    }

    /// Round trips at `at_ms` from the start, on every route of `routes`, concurrently.
    async fn rtts_at(&self, start: Instant, at_ms: u64, routes: &[(&str, &str)]) -> Vec<Duration> {
        tokio::time::sleep_until(start + ms(at_ms)).await;
        let calls = routes.iter().map(|(from, to)| self.rtt(from, to));
        futures_util::future::join_all(calls).await
    }
}

/// Applies `schedule` with the nemesis while `measure` runs; what `measure` returned and the
/// trace lines of the faults.
async fn with_schedule<T>(
    echoes: &Echoes,
    schedule: &Schedule,
    measure: impl std::future::Future<Output = T>,
) -> (T, Vec<String>) {
    let start = std::time::Instant::now();
    let recorder = Recorder::new(start);
    let ips = echoes.ips();
    let (disks, clocks, stopped) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let nemesis = Nemesis {
        handle: &echoes.handle,
        ips: &ips,
        disks: &disks,
        clocks: &clocks,
        recorder: &recorder,
        stopped: &stopped,
        start,
    };
    let ((), measured) = tokio::join!(nemesis.run(schedule), measure);
    nemesis.heal_all();
    (
        measured,
        recorder
            .snapshot()
            .0
            .faults
            .iter()
            .map(|f| f.action.clone())
            .collect(),
    )
}

fn latency(at_ms: u64, duration_ms: u64, node: &str, delay_ms: u64) -> Fault {
    Fault {
        at_ms,
        kind: FaultKind::Latency {
            nodes: vec![node.to_string()],
            links: Vec::new(),
            one_way: false,
            every_link: false,
            delay_ms,
            jitter_ms: 0,
            duration_ms,
        },
    }
}

#[test]
fn a_latency_fault_on_one_node_slows_its_links_by_the_delay_and_no_others() {
    simulate(42, || async {
        pin_network_latency();
        let echoes = Echoes::start();
        tokio::time::sleep(ms(100)).await;
        echoes.warm_up().await;
        let start = Instant::now();
        let schedule = Schedule::new(vec![latency(1_000, 4_000, "ring-2", 40)]);
        let routes = [
            ("client", "ring-2"),
            ("ring-1", "ring-2"),
            ("client", "ring-1"),
            ("ring-1", "ring-3"),
        ];
        let measure = async {
            let before = echoes.rtts_at(start, 500, &routes).await;
            let during = echoes.rtts_at(start, 2_000, &routes).await;
            let after = echoes.rtts_at(start, 6_000, &routes).await;
            (before, during, after)
        };
        let ((before, during, after), trace) = with_schedule(&echoes, &schedule, measure).await;

        // Through ring-2 both ways: 40 ms out and 40 ms back on top of 10 ms.
        for (route, rtt) in routes.iter().zip(&before) {
            assert_about(*rtt, ms(10), &format!("{route:?} before"));
        }
        assert_about(during[0], ms(90), "client -> ring-2 during");
        assert_about(during[1], ms(90), "ring-1 -> ring-2 during");
        assert_about(during[2], ms(10), "client -> ring-1 during");
        assert_about(during[3], ms(10), "ring-1 -> ring-3 during");
        for (route, rtt) in routes.iter().zip(&after) {
            assert_about(*rtt, ms(10), &format!("{route:?} after"));
        }
        assert_eq!(
            trace,
            [
                "latency fault 0 on every link of ring-2: +40 ms, jitter up to 0 ms",
                "latency fault 0 healed"
            ]
        );
    });
}

#[test]
fn jitter_adds_up_to_its_bound_and_differs_between_connections() {
    simulate(43, || async {
        pin_network_latency();
        let echoes = Echoes::start();
        tokio::time::sleep(ms(100)).await;
        echoes.warm_up().await;
        let start = Instant::now();
        let mut fault = latency(1_000, 10_000, "ring-2", 40);
        if let FaultKind::Latency { jitter_ms, .. } = &mut fault.kind {
            *jitter_ms = 30;
        }
        let routes = [("client", "ring-2"); 8];
        let measure = echoes.rtts_at(start, 2_000, &routes);
        let (rtts, _) = with_schedule(&echoes, &Schedule::new(vec![fault]), measure).await;

        // Each way 40 ms plus 0..=30 ms: a round trip in 90..=150 ms (and up to 3 ms more on
        // the connections the concurrent calls open afresh).
        for rtt in &rtts {
            assert!((ms(90)..=ms(154)).contains(rtt), "{rtt:?}");
        }
        let distinct: std::collections::BTreeSet<Duration> = rtts.iter().copied().collect();
        assert!(distinct.len() > 4, "jitter is drawn per piece: {rtts:?}");
    });
}

#[test]
fn a_loss_fault_on_one_link_stalls_only_that_link() {
    simulate(44, || async {
        pin_network_latency();
        let echoes = Echoes::start();
        tokio::time::sleep(ms(100)).await;
        echoes.warm_up().await;
        let start = Instant::now();
        let loss = Fault {
            at_ms: 1_000,
            kind: FaultKind::Loss {
                nodes: Vec::new(),
                links: vec![["client".into(), "ring-2".into()]],
                one_way: true,
                every_link: false,
                rate: 1.0,
                duration_ms: 2_000,
            },
        };
        let routes = [
            ("client", "ring-2"),
            ("client", "ring-1"),
            ("ring-3", "ring-2"),
        ];
        let measure = echoes.rtts_at(start, 1_500, &routes);
        let (rtts, trace) = with_schedule(&echoes, &Schedule::new(vec![loss]), measure).await;

        // The request reaches ring-2's socket at 1.505 s and is lost, and lost again on each
        // resend while the fault lasts: resent at 1.705 (after 200 ms), 2.105 (400), 2.905
        // (800), then 1,600 ms later at 4.505, past the heal at 3 s, when it gets through.
        assert_about(rtts[0], ms(3_010), "client -> ring-2");
        assert_about(rtts[1], ms(10), "client -> ring-1");
        assert_about(rtts[2], ms(10), "ring-3 -> ring-2");
        assert_eq!(
            trace[0],
            "loss fault 0 on client -> ring-2: 100.0% of segments lost (TCP stalls and retransmits)"
        );
    });
}

#[test]
fn removing_one_fault_leaves_the_others_effects_unchanged() {
    // ring-2 slowed by 40 ms from 1 s to 3 s, ring-3 by 20 ms from 1 s to 5 s.
    let schedule = Schedule::new(vec![
        latency(1_000, 2_000, "ring-2", 40),
        latency(1_000, 4_000, "ring-3", 20),
    ]);
    let run = |schedule: Schedule| {
        let (tx, rx) = std::sync::mpsc::channel();
        simulate(45, move || async move {
            pin_network_latency();
            let echoes = Echoes::start();
            tokio::time::sleep(ms(100)).await;
            echoes.warm_up().await;
            let start = Instant::now();
            let routes = [
                ("client", "ring-2"),
                ("client", "ring-3"),
                ("ring-2", "ring-3"),
            ];
            let measure = async {
                let during = echoes.rtts_at(start, 2_000, &routes).await;
                let later = echoes.rtts_at(start, 4_000, &routes).await;
                (during, later)
            };
            let (measured, _) = with_schedule(&echoes, &schedule, measure).await;
            tx.send(measured).expect("the test waits");
        });
        rx.recv().expect("the simulation measured")
    };

    let (during, later) = run(schedule.clone());
    assert_about(during[0], ms(90), "ring-2 during both");
    assert_about(during[1], ms(50), "ring-3 during both");
    assert_about(during[2], ms(130), "ring-2 -> ring-3: both rules add up");
    assert_about(later[0], ms(10), "ring-2 once its fault healed");
    assert_about(later[1], ms(50), "ring-3 after ring-2's fault healed");
    assert_about(
        later[2],
        ms(50),
        "ring-2 -> ring-3 with ring-3's fault only",
    );

    // Without ring-2's fault, ring-3's is exactly as it was.
    let (during, later) = run(schedule.without(0));
    assert_about(during[0], ms(10), "ring-2 without its fault");
    assert_about(during[1], ms(50), "ring-3 alone");
    assert_about(during[2], ms(50), "ring-2 -> ring-3, ring-3's fault alone");
    assert_about(later[1], ms(50), "ring-3 alone, later");
}

// ---- Through the harness: the trace, determinism, the gateway's clock ----------------------

#[test]
fn node_and_link_faults_and_slow_syncs_are_applied_and_replay_to_the_same_trace() {
    let faults = vec![
        latency(15_000, 10_000, "ring-2", 30),
        Fault {
            at_ms: 20_000,
            kind: FaultKind::Loss {
                nodes: Vec::new(),
                links: vec![["api-1".into(), "guild-1".into()]],
                one_way: false,
                every_link: false,
                rate: 0.3,
                duration_ms: 10_000,
            },
        },
        Fault {
            at_ms: 25_000,
            kind: FaultKind::Disk {
                node: "ring-3".into(),
                disk: DiskFault::SlowSync { delay_ms: 100 },
                duration_ms: 10_000,
            },
        },
    ];
    let mut scenario = Scenario::smoke();
    scenario.schedule = Schedule::new(faults);
    let (first, second) = (runner::run(46, &scenario), runner::run(46, &scenario));
    assert_eq!(
        report::trace_hash(&first.trace),
        report::trace_hash(&second.trace)
    );
    assert_eq!(first.history, second.history);

    let actions: Vec<&str> = first
        .history
        .faults
        .iter()
        .map(|f| f.action.as_str())
        .collect();
    for expected in [
        "latency fault 0 on every link of ring-2: +30 ms, jitter up to 0 ms",
        "loss fault 1 on api-1 <-> guild-1: 30.0% of segments lost (TCP stalls and retransmits)",
        "disk ring-3: every sync takes 100 ms longer",
        "latency fault 0 healed",
        "loss fault 1 healed",
        "disk ring-3: syncs at full speed again",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected:?} not in {actions:?}"
        );
    }
    let report = first.report(46, &scenario, String::new());
    for check in ["durability", "ordering", "sequence", "duplicates"] {
        assert_eq!(report.checks[check].violations, 0, "{}", report.summary());
    }
}

#[test]
fn a_clock_step_on_the_gateway_moves_the_time_its_session_ids_carry() {
    // The gateway's clock runs an hour ahead from 15 s to 45 s; it crashes at 20 s and is
    // back at 21 s, so every client identifies again on the skewed clock.
    const HOUR_MS: i64 = 3_600_000;
    let mut scenario = Scenario::smoke();
    scenario.schedule = Schedule::new(vec![
        Fault {
            at_ms: 15_000,
            kind: FaultKind::Clock {
                node: "gateway".into(),
                offset_us: HOUR_MS * 1_000,
                drift_ppm: 0,
                duration_ms: Some(30_000),
            },
        },
        Fault {
            at_ms: 20_000,
            kind: FaultKind::Crash {
                node: "gateway".into(),
                restart_after_ms: Some(1_000),
            },
        },
    ]);
    let output = runner::run(47, &scenario);
    let actions: Vec<&str> = output
        .history
        .faults
        .iter()
        .map(|f| f.action.as_str())
        .collect();
    assert!(
        actions.contains(&"clock gateway stepped 3600000000 µs, drifting 0 ppm"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"clock gateway back to true time"),
        "{actions:?}"
    );

    // A session id's time minus when READY reached the client (ns since the run's start) is
    // the run's start on the gateway's clock, give or take the network: an hour later for
    // the sessions issued while the clock was ahead.
    let stamped: Vec<(u64, i64)> = output
        .history
        .sessions
        .iter()
        .filter_map(|s| {
            let issued_ms = chat_system::gateway::session_issued_ms(s.session_id.as_ref()?)?;
            let ready_ns = s.ready_ns?;
            Some((
                ready_ns,
                issued_ms - i64::try_from(ready_ns / 1_000_000).ok()?,
            ))
        })
        .collect();
    let before: Vec<i64> = stamped
        .iter()
        .filter(|(t, _)| *t < 15_000_000_000)
        .map(|s| s.1)
        .collect();
    let during: Vec<i64> = stamped
        .iter()
        .filter(|(t, _)| (21_000_000_000..45_000_000_000).contains(t))
        .map(|s| s.1)
        .collect();
    assert_eq!(before.len(), 20, "every user identified at the start");
    assert!(
        during.len() >= 20,
        "every user identified again: {}",
        during.len()
    );
    let origin = before[0];
    for start in &before {
        assert!((start - origin).abs() < 50, "{start} vs {origin}");
    }
    for start in &during {
        let moved = start - origin;
        assert!(
            (moved - HOUR_MS).abs() < 50,
            "moved by {moved} ms, not an hour"
        );
    }
}
