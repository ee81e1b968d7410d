//! The storage ring alone in the simulator: consistency levels under crashes, hinted handoff,
//! read repair. Every check reads over the network, as a client of the ring would.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::time::Duration;

use chat_sim::ringsim::{merkle_root, repair, replica_rows, simulate, RingCluster, RingShape};
use chat_system::env::clock::NodeClock;
use chat_system::ids::{self, SnowflakeGenerator};
use chat_system::model::StoredMessage;
use chat_system::ring::client::{HistoryQuery, StoreClient};
use chat_system::ring::engine::{EngineConfig, SyncMode};
use chat_system::ring::{bucket_of, Consistency, PartitionQuery, StoreError};

const CHANNELS: u64 = 4;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Channel ids minted a day ago, so every message is newer than its channel.
fn channels() -> Vec<u64> {
    let day_ago_ms = NodeClock::new().now_ms() - 24 * 60 * 60 * 1000;
    (1..=CHANNELS)
        .map(|i| ids::from_timestamp_ms(day_ago_ms) + i)
        .collect()
}

/// Writes `count` messages round-robin over `channels`, `gap` apart; the ids acknowledged.
async fn write_messages(
    store: &StoreClient,
    channels: &[u64],
    count: usize,
    gap: Duration,
) -> Vec<u64> {
    let clock = NodeClock::new();
    let mut ids = SnowflakeGenerator::new(clock.clone(), 2, 0);
    let mut acked = Vec::new();
    for n in 0..count {
        let message = StoredMessage {
            channel_id: channels[n % channels.len()],
            message_id: ids.next_id(),
            guild_id: 1,
            author_id: 1,
            content: format!("message {n}"),
            ..Default::default()
        };
        if store.put(&message, clock.now_us()).await.is_ok() {
            acked.push(message.message_id);
        }
        tokio::time::sleep(gap).await;
    }
    acked
}

/// Every message id in `channels` that a history read through `store` returns.
async fn history_ids(store: &StoreClient, channels: &[u64]) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    for &channel_id in channels {
        let query = HistoryQuery {
            channel_id,
            before: None,
            limit: 100,
        };
        let messages = store.history(query).await.expect("history read succeeds");
        seen.extend(messages.iter().map(|m| m.message_id));
    }
    seen
}

/// Every live message id node `index` alone holds for `channels` in `bucket`.
async fn replica_ids(
    cluster_addr: std::net::SocketAddr,
    channels: &[u64],
    bucket: u32,
) -> BTreeSet<u64> {
    let mut held = BTreeSet::new();
    for &channel_id in channels {
        let query = PartitionQuery {
            channel_id,
            bucket,
            before: None,
            after: None,
            limit: 10_000,
        };
        let rows = replica_rows(cluster_addr, query)
            .await
            .expect("the replica answers");
        held.extend(
            rows.iter()
                .filter(|r| r.cell.value.is_some())
                .map(|r| r.key.message_id),
        );
    }
    held
}

/// Crashes ring-2 `settle` after `cluster` started, writes `count` messages `gap` apart
/// through ring-1 and ring-3 at QUORUM (all must be acknowledged), restarts ring-2 and waits
/// `after` for it to come back. The channels written and the ids acknowledged.
async fn outage_of_ring_2(
    cluster: &RingCluster,
    settle: Duration,
    count: usize,
    gap: Duration,
    after: Duration,
) -> (Vec<u64>, Vec<u64>) {
    tokio::time::sleep(settle).await;
    cluster.crash(1);
    let store = cluster.store(&[0, 2], Consistency::Quorum);
    let channels = channels();
    let written = channels.clone();
    let acked = cluster
        .on_client(async move { write_messages(&store, &written, count, gap).await })
        .await;
    assert_eq!(acked.len(), count, "QUORUM writes with one replica down");
    cluster.restart(1);
    tokio::time::sleep(after).await;
    (channels, acked)
}

fn current_bucket() -> u32 {
    bucket_of(ids::from_timestamp_ms(NodeClock::new().now_ms()))
}

#[test]
fn with_one_replica_crashed_quorum_reads_see_every_acknowledged_quorum_write() {
    simulate(1, || async {
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.crash(0);

        let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
        let channels = channels();
        let (acked, seen) = cluster
            .on_client(async move {
                let acked = write_messages(&store, &channels, 60, Duration::from_millis(50)).await;
                (acked, history_ids(&store, &channels).await)
            })
            .await;

        assert_eq!(acked.len(), 60, "one replica down leaves QUORUM writable");
        for id in &acked {
            assert!(
                seen.contains(id),
                "acknowledged {id} missing from a QUORUM read"
            );
        }
    });
}

#[test]
fn a_replica_down_for_30_s_converges_from_hints_alone() {
    simulate(2, || async {
        // 30 s of writes through the two live coordinators, no reads at all; then back up,
        // and hints are delivered within a few delivery rounds.
        let cluster = RingCluster::start(&RingShape::default());
        let (settle, gap, after) = (ms(100), ms(300), ms(5_000));
        let (channels, acked) = outage_of_ring_2(&cluster, settle, 100, gap, after).await;
        let addr = cluster.addrs[1];
        let bucket = current_bucket();
        let held = cluster
            .on_client(async move { replica_ids(addr, &channels, bucket).await })
            .await;
        let missing: Vec<&u64> = acked.iter().filter(|id| !held.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "ring-2 still lacks {} of 100 after hint delivery",
            missing.len()
        );
    });
}

#[test]
fn a_replica_down_past_the_hint_window_stays_behind() {
    simulate(3, || async {
        // A 10 s window, opened when the detector convicts ring-2: phi passes 8 after
        // 8 ln 10 = 18.4 mean heartbeat intervals of silence, and with three nodes a peer's
        // heartbeat is seen every 1-2 s, so conviction comes 18-40 s after the crash. Gossip
        // runs 5 s first so every detector has samples.
        let shape = RingShape {
            hint_window_ms: 10_000,
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);

        // 120 s of writes, 0.3 s apart: the first 24 s come before any conviction and are
        // hinted; from 60 s on the window has surely passed and none are.
        let (settle, gap, after) = (ms(5_000), ms(300), ms(5_000));
        let (channels, acked) = outage_of_ring_2(&cluster, settle, 400, gap, after).await;

        let addr = cluster.addrs[1];
        let bucket = current_bucket();
        let reader = channels.clone();
        let held = cluster
            .on_client(async move { replica_ids(addr, &reader, bucket).await })
            .await;
        let (early, late) = (&acked[..80], &acked[200..]);
        assert!(
            early.iter().all(|id| held.contains(id)),
            "writes inside the window were hinted"
        );
        assert!(
            late.iter().all(|id| !held.contains(id)),
            "writes past the window were not"
        );

        // Repair converges it: every acknowledged write, and equal Merkle roots everywhere.
        let addrs = cluster.addrs.clone();
        let (report, held, roots) = cluster
            .on_client(async move {
                let stale = merkle_root(addrs[1]).await;
                assert_ne!(
                    stale,
                    merkle_root(addrs[0]).await,
                    "ring-2 differs before repair"
                );
                let report = repair(addrs[1]).await.expect("ring-2 repairs");
                let held = replica_ids(addrs[1], &channels, bucket).await;
                let mut roots = Vec::new();
                for &addr in &addrs {
                    roots.push(merkle_root(addr).await.expect("a Merkle tree"));
                }
                (report, held, roots)
            })
            .await;
        assert!(
            report.rows_pulled > 0 && report.replicas_unreachable == 0,
            "{report:?}"
        );
        assert!(
            acked.iter().all(|id| held.contains(id)),
            "repair brought ring-2 up to date"
        );
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "roots differ: {roots:x?}"
        );
    });
}

#[test]
fn with_two_replicas_down_writes_are_unavailable_not_timed_out() {
    simulate(5, || async {
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.crash(0);
        cluster.crash(1);

        // Once ring-3's detector convicts both (18-40 s, see above), it refuses to send.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let store = cluster.store(&[2], Consistency::Quorum);
        let channel = channels()[0];
        let outcomes = cluster
            .on_client(async move {
                let clock = NodeClock::new();
                let mut ids = SnowflakeGenerator::new(clock.clone(), 3, 0);
                let mut outcomes = Vec::new();
                for n in 0..10 {
                    let message = StoredMessage {
                        channel_id: channel,
                        message_id: ids.next_id(),
                        guild_id: 1,
                        author_id: 1,
                        content: format!("m{n}"),
                        ..Default::default()
                    };
                    outcomes.push(store.put(&message, clock.now_us()).await);
                }
                outcomes
            })
            .await;
        for outcome in outcomes {
            let expected = StoreError::Unavailable {
                required: 2,
                alive: 1,
            };
            assert_eq!(outcome, Err(expected));
        }
    });
}

#[test]
fn a_stale_replica_is_repaired_by_a_quorum_read() {
    simulate(4, || async {
        // No hints, so ring-2 comes back stale.
        let shape = RingShape {
            hint_window_ms: 0,
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);
        let (settle, gap, after) = (ms(100), ms(20), ms(3_000));
        let (channels, acked) = outage_of_ring_2(&cluster, settle, 20, gap, after).await;

        // ring-2 alone at ONE: stale.
        let at_one = cluster.store(&[1], Consistency::One);
        let reader = channels.clone();
        let before = cluster
            .on_client(async move { history_ids(&at_one, &reader).await })
            .await;
        assert!(before.is_empty(), "ring-2 missed every write");

        // A QUORUM read coordinated by ring-2 (which asks itself first) repairs it.
        let at_quorum = cluster.store(&[1], Consistency::Quorum);
        let reader = channels.clone();
        let seen = cluster
            .on_client(async move { history_ids(&at_quorum, &reader).await })
            .await;
        assert_eq!(seen.len(), 20);

        // ring-2 alone at ONE again: repaired.
        let at_one = cluster.store(&[1], Consistency::One);
        let after = cluster
            .on_client(async move { history_ids(&at_one, &channels).await })
            .await;
        assert_eq!(after, acked.into_iter().collect::<BTreeSet<u64>>());
    });
}

/// Writes one message to every replica, misses ring-2 with its delete, and brings ring-2 back;
/// `repair_early` repairs right then, inside gc grace. After gc grace has passed and
/// compaction has purged the tombstone where it landed, a repair follows; returns whether a
/// QUORUM read then finds the message.
fn deleted_message_after_gc_grace(seed: u64, repair_early: bool) -> bool {
    let found = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = found.clone();
    simulate(seed, move || async move {
        // No hints (ring-2 must miss the delete), 20 s gc grace, and every write flushed, so
        // size-tiered compaction runs and can purge.
        let engine = EngineConfig {
            gc_grace_seconds: 20,
            memtable_rows_max: 1,
            ..EngineConfig::default()
        };
        let shape = RingShape {
            hint_window_ms: 0,
            engine: EngineConfig {
                sync: SyncMode::Batch,
                ..engine
            },
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let channels = channels();
        let (target, filler) = (channels[0], channels[1..].to_vec());

        // 1. The message on all three replicas.
        let store = cluster.store(&[0, 2], Consistency::All);
        let written = vec![target];
        let acked = cluster
            .on_client(async move {
                write_messages(&store, &written, 1, Duration::from_millis(10)).await
            })
            .await;
        let message_id = acked[0];

        // 2. Its delete misses ring-2.
        cluster.crash(1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let store = cluster.store(&[0, 2], Consistency::Quorum);
        let clock = cluster.clock(0);
        cluster
            .on_client(async move { store.delete(target, message_id, clock.now_us()).await })
            .await
            .expect("the delete reaches QUORUM");
        cluster.restart(1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let addrs = cluster.addrs.clone();
        if repair_early {
            let addr = addrs[1];
            cluster
                .on_client(async move { repair(addr).await })
                .await
                .expect("repair");
        }

        // 3. Past gc grace, more writes make compaction run and purge the tombstone.
        tokio::time::sleep(Duration::from_secs(25)).await;
        let store = cluster.store(&[0, 2], Consistency::Quorum);
        cluster
            .on_client(async move {
                write_messages(&store, &filler, 12, Duration::from_millis(50)).await
            })
            .await;

        // 4. Repair, then read.
        let store = cluster.store(&[0, 2], Consistency::Quorum);
        let seen = cluster
            .on_client(async move {
                repair(addrs[0]).await.expect("repair");
                history_ids(&store, &[target]).await
            })
            .await;
        *out.lock().expect("result slot") = Some(seen.contains(&message_id));
    });
    let seen = found.lock().expect("result slot").take();
    seen.expect("the simulation finished")
}

#[test]
fn a_delete_missed_by_a_replica_comes_back_when_repair_waits_past_gc_grace() {
    assert!(
        deleted_message_after_gc_grace(6, false),
        "the zombie Cassandra documents"
    );
}

#[test]
fn a_delete_missed_by_a_replica_stays_deleted_when_repaired_inside_gc_grace() {
    assert!(!deleted_message_after_gc_grace(7, true));
}

/// Message ids with the simulated time (ms) at which each was acknowledged.
type AckedAt = Vec<(u64, u64)>;

/// Crashes every replica at once after 25 s of writes; the writes acknowledged and lost.
fn crash_all_replicas(seed: u64, sync: SyncMode) -> (AckedAt, AckedAt) {
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = result.clone();
    simulate(seed, move || async move {
        let shape = RingShape {
            engine: EngineConfig {
                sync,
                ..EngineConfig::default()
            },
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);
        let start = std::time::Instant::now();
        let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
        let channels = channels();
        let written = channels.clone();

        // 1. A write every 100 ms, noting when each was acknowledged.
        let writer = cluster.on_client(async move {
            let mut acked = Vec::new();
            while start.elapsed() < Duration::from_millis(25_050) {
                let before = write_messages(&store, &written, 1, Duration::from_millis(100)).await;
                let at_ms = start.elapsed().as_millis() as u64;
                acked.extend(before.into_iter().map(|id| (id, at_ms)));
            }
            acked
        });
        let acked = writer.await;

        // 2. Power loss on every replica at once, then a restart.
        for index in 0..3 {
            cluster.crash(index);
        }
        for index in 0..3 {
            cluster.restart(index);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
        let seen = cluster
            .on_client(async move { all_ids(&store, &channels).await })
            .await;
        let lost = acked
            .iter()
            .filter(|(id, _)| !seen.contains(id))
            .copied()
            .collect();
        *out.lock().expect("result slot") = Some((acked, lost));
    });
    let taken = result.lock().expect("result slot").take();
    taken.expect("the simulation finished")
}

/// Every message id in `channels`, paging through each whole history.
async fn all_ids(store: &StoreClient, channels: &[u64]) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    for &channel_id in channels {
        let mut before = None;
        loop {
            let query = HistoryQuery {
                channel_id,
                before,
                limit: 100,
            };
            let page = store.history(query).await.expect("history read succeeds");
            seen.extend(page.iter().map(|m| m.message_id));
            match page.last() {
                Some(oldest) if page.len() == 100 => before = Some(oldest.message_id),
                _ => break,
            }
        }
    }
    seen
}

#[test]
fn crashing_every_replica_loses_at_most_the_unsynced_window_in_periodic_mode() {
    let (acked, lost) = crash_all_replicas(8, SyncMode::Periodic { period_ms: 10_000 });
    assert!(acked.len() > 200, "{} writes acknowledged", acked.len());

    // Nodes sync at 10 s and 20 s of their lives; the crash at 25 s loses what came after the
    // last sync, and only that: a bound of one period (10 s) before the crash.
    assert!(!lost.is_empty(), "unsynced acknowledged writes are lost");
    let oldest_lost_ms = lost.iter().map(|(_, at)| *at).min().unwrap_or(0);
    assert!(
        oldest_lost_ms >= 25_050 - 10_000,
        "lost a write acked at {oldest_lost_ms} ms"
    );
    let in_window = acked.iter().filter(|(_, at)| *at >= 15_050).count();
    assert!(lost.len() <= in_window);
    println!(
        "periodic: {} of {} acknowledged writes lost, oldest acked at {oldest_lost_ms} ms",
        lost.len(),
        acked.len()
    );
}

#[test]
fn crashing_every_replica_loses_nothing_acknowledged_in_batch_mode() {
    let (acked, lost) = crash_all_replicas(8, SyncMode::Batch);
    assert!(acked.len() > 200);
    assert!(
        lost.is_empty(),
        "batch mode lost {} acknowledged writes",
        lost.len()
    );
}

/// Every message id of `channel` through `store`, paging `limit` at a time.
async fn paged_ids(store: &StoreClient, channel_id: u64, limit: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let query = HistoryQuery {
            channel_id,
            before,
            limit,
        };
        let page = store.history(query).await.expect("history read succeeds");
        seen.extend(page.iter().map(|m| m.message_id));
        match page.last() {
            Some(oldest) if page.len() == limit => before = Some(oldest.message_id),
            _ => break,
        }
    }
    seen
}

/// The ids of `acked` (ascending) without the 6th to the 15th, newest first.
fn outside_the_deleted_slice(acked: &[u64]) -> Vec<u64> {
    let mut kept: Vec<u64> = acked[..5].iter().chain(&acked[15..]).copied().collect();
    kept.reverse();
    kept
}

#[test]
fn a_quorum_range_delete_hides_its_slice_from_quorum_reads() {
    simulate(9, || async {
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
        let channel = channels()[0];

        // 1. Twenty messages; the 6th to the 15th deleted; the 8th written again afterwards.
        let clock = cluster.clock(0);
        let (acked, seen, paged) = cluster
            .on_client(async move {
                let acked = write_messages(&store, &[channel], 20, Duration::from_millis(20)).await;
                let deleted_at_us = clock.now_us();
                store
                    .delete_range(channel, acked[5], acked[14], deleted_at_us)
                    .await
                    .expect("the range delete reaches QUORUM");
                let again = StoredMessage {
                    channel_id: channel,
                    message_id: acked[7],
                    guild_id: 1,
                    author_id: 1,
                    content: "written after the delete".into(),
                    ..Default::default()
                };
                store.put(&again, deleted_at_us + 1).await.expect("a put");
                let seen = history_ids(&store, &[channel]).await;
                (acked, seen, paged_ids(&store, channel, 3).await)
            })
            .await;

        // 2. Outside the slice everything stays; inside only the later write survives.
        assert_eq!(acked.len(), 20);
        let mut expected = outside_the_deleted_slice(&acked);
        expected.insert(5, acked[7]);
        assert_eq!(seen, expected.iter().copied().collect::<BTreeSet<u64>>());
        assert_eq!(paged, expected, "pages of three cross the slice in order");
    });
}

/// Twenty messages on every replica, a range delete of the 6th to the 15th that ring-2 misses
/// (no hints), and ring-2 back up; the ids written, ascending.
async fn range_delete_missed_by_ring_2(cluster: &RingCluster, channel: u64) -> Vec<u64> {
    let store = cluster.store(&[0, 2], Consistency::All);
    let acked = cluster
        .on_client(async move {
            write_messages(&store, &[channel], 20, Duration::from_millis(20)).await
        })
        .await;
    assert_eq!(acked.len(), 20);

    cluster.crash(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let store = cluster.store(&[0, 2], Consistency::Quorum);
    let clock = cluster.clock(0);
    let (from, to) = (acked[5], acked[14]);
    cluster
        .on_client(async move { store.delete_range(channel, from, to, clock.now_us()).await })
        .await
        .expect("the range delete reaches QUORUM");
    cluster.restart(1);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ring-2 alone at ONE still has all twenty.
    let at_one = cluster.store(&[1], Consistency::One);
    let stale = cluster
        .on_client(async move { history_ids(&at_one, &[channel]).await })
        .await;
    assert_eq!(stale.len(), 20, "ring-2 missed the range delete");
    acked
}

#[test]
fn a_range_delete_missed_by_a_replica_is_repaired_by_a_quorum_read() {
    simulate(10, || async {
        let shape = RingShape {
            hint_window_ms: 0,
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let channel = channels()[0];
        let acked = range_delete_missed_by_ring_2(&cluster, channel).await;

        // 1. QUORUM pages of four coordinated by ring-2, which reads its own data first: its
        // second page is all shadowed rows, so short-read protection has to page on.
        let at_quorum = cluster.store(&[1], Consistency::Quorum);
        let paged = cluster
            .on_client(async move { paged_ids(&at_quorum, channel, 4).await })
            .await;
        let expected = outside_the_deleted_slice(&acked);
        assert_eq!(paged, expected);

        // 2. Read repair gave ring-2 the range tombstone.
        let at_one = cluster.store(&[1], Consistency::One);
        let after = cluster
            .on_client(async move { paged_ids(&at_one, channel, 100).await })
            .await;
        assert_eq!(after, expected, "ring-2 alone, after the QUORUM read");
    });
}

#[test]
fn a_range_delete_missed_by_a_replica_is_repaired_by_anti_entropy() {
    simulate(11, || async {
        let shape = RingShape {
            hint_window_ms: 0,
            ..RingShape::default()
        };
        let cluster = RingCluster::start(&shape);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let channel = channels()[0];
        let acked = range_delete_missed_by_ring_2(&cluster, channel).await;

        // Repair from ring-2: it pulls the range tombstone, and every root is then equal.
        let addrs = cluster.addrs.clone();
        let bucket = current_bucket();
        let (stale_root, report, held, roots) = cluster
            .on_client(async move {
                let stale_root = merkle_root(addrs[1]).await != merkle_root(addrs[0]).await;
                let report = repair(addrs[1]).await.expect("ring-2 repairs");
                let held = replica_ids(addrs[1], &[channel], bucket).await;
                let mut roots = Vec::new();
                for &addr in &addrs {
                    roots.push(merkle_root(addr).await.expect("a Merkle tree"));
                }
                (stale_root, report, held, roots)
            })
            .await;
        assert!(stale_root, "ring-2's root differs before repair");
        assert!(
            report.range_tombstones_pulled >= 1 && report.replicas_unreachable == 0,
            "{report:?}"
        );
        let expected = outside_the_deleted_slice(&acked);
        assert_eq!(held, expected.into_iter().collect::<BTreeSet<u64>>());
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "roots differ: {roots:x?}"
        );
    });
}
