//! One conformance suite for every message store backend: the same cases, with values worked
//! out by hand, run against the ring (three nodes on real tokio on loopback, fsync per write,
//! QUORUM) and against Apache Cassandra through the CQL backend (QUORUM).
//!
//! Cassandra: `CHAT_CQL_NODES` (`host:port[,host:port...]`) names a running cluster. When it
//! is unset, the suite starts one node through `.ci/cassandra/start` (which resolves it from
//! Maven Central on first use) and that node stops when this test binary ends. A Cassandra
//! that cannot be reached or started fails the CQL cases; they never skip.
//!
//! Every case writes to channels of its own, created from the clock and a per-process salt,
//! so reruns against a long-lived cluster never meet old rows.
#![cfg(not(madsim))]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use chat_system::directory::{ChangeRecord, Channel, DirectoryChange};
use chat_system::env::clock::NodeClock;
use chat_system::ids;
use chat_system::model::StoredMessage;
use chat_system::ring::client::StoreClient;
use chat_system::ring::{bucket_of, Consistency, BUCKET_MS};
use chat_system::store::cql::{CqlConfig, CqlStore};
use chat_system::store::ring::{spawn_local_ring, RingStore};
use chat_system::store::{
    HistoryAnchor, HistoryPage, HistoryQuery, MessageStore, StoreError, TimedMessage,
};

#[path = "support/cassandra.rs"]
mod cassandra_node;

const KEYSPACE: &str = "chat_conformance";
const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The backend a case runs against, from which it opens as many clients as it needs.
enum Backend {
    Ring {
        addrs: Vec<SocketAddr>,
        _dir: tempfile::TempDir,
    },
    Cql {
        nodes: Vec<String>,
    },
}

impl Backend {
    /// Client number `n`. Ring clients with different `n` start their coordinator rotation
    /// at different nodes, so a second client reads through another coordinator.
    async fn client(&self, n: usize) -> Box<dyn MessageStore> {
        match self {
            Backend::Ring { addrs, .. } => {
                let mut rotated = addrs.clone();
                rotated.rotate_left(n % addrs.len());
                let client = StoreClient::new(rotated, Consistency::Quorum, NodeClock::new());
                Box::new(RingStore::new(client))
            }
            Backend::Cql { nodes } => {
                let mut config = CqlConfig::new(nodes.clone(), KEYSPACE, 1);
                config.create_schema = false;
                let store = CqlStore::open(&config).await;
                Box::new(store.expect("the CQL store opens"))
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    runtime.expect("a tokio runtime")
}

/// Runs `case` against three ring nodes started for it.
fn on_ring<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let addrs = spawn_local_ring(dir.path(), 3)
            .await
            .expect("three ring nodes");
        // Let the nodes' first gossip round pass, as the ring's own benchmark does.
        tokio::time::sleep(Duration::from_millis(200)).await;
        case(Backend::Ring { addrs, _dir: dir }).await;
    });
}

/// Runs `case` against Cassandra.
fn on_cql<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    let nodes = cassandra().clone();
    runtime().block_on(case(Backend::Cql { nodes }));
}

/// The contact points of a Cassandra with the conformance keyspace, started if need be. A
/// failure is kept, so every CQL case reports the same reason without trying again.
fn cassandra() -> &'static Vec<String> {
    static NODES: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    match NODES.get_or_init(bring_up_cassandra) {
        Ok(nodes) => nodes,
        Err(error) => panic!("no Cassandra for the CQL cases: {error}"),
    }
}

fn bring_up_cassandra() -> Result<Vec<String>, String> {
    // 1. A named cluster, or a node started for this process.
    let nodes = cassandra_node::contact_points()?;

    // 2. The schema, once per process, before the cases open their sessions.
    runtime().block_on(async {
        let config = CqlConfig::new(nodes.clone(), KEYSPACE, 1);
        match CqlStore::open(&config).await {
            Ok(_) => Ok(nodes.clone()),
            Err(error) => Err(format!(
                "creating {KEYSPACE} on {}: {error}",
                nodes.join(",")
            )),
        }
    })
}

/// A channel id created `age_ms` ago, unique to this process and call.
fn channel_created_ago(age_ms: i64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let salt = (u64::from(std::process::id()) % 1024) << 12 | NEXT.fetch_add(1, Ordering::Relaxed);
    ids::from_timestamp_ms(NodeClock::new().now_ms() - age_ms) | (salt & 0x3f_ffff)
}

/// A message of `channel_id` sent at Unix time `unix_ms` (its id's sequence bits `seq`).
fn message_at(channel_id: u64, unix_ms: i64, seq: u64, content: &str) -> StoredMessage {
    StoredMessage {
        channel_id,
        message_id: ids::from_timestamp_ms(unix_ms) | seq,
        guild_id: 41,
        author_id: 7,
        content: content.to_string(),
        ..Default::default()
    }
}

fn now_us() -> i64 {
    NodeClock::new().now_us()
}

fn contents(messages: &[StoredMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

async fn history(
    store: &dyn MessageStore,
    channel_id: u64,
    before: Option<u64>,
    limit: usize,
) -> Vec<StoredMessage> {
    let query = HistoryQuery {
        channel_id,
        before,
        limit,
    };
    store.history(query).await.expect("history answers")
}

/// The message as `get` reads it, without its write timestamp.
async fn get(
    store: &dyn MessageStore,
    channel_id: u64,
    message_id: u64,
) -> Result<Option<StoredMessage>, StoreError> {
    let row = store.get(channel_id, message_id).await?;
    Ok(row.map(|row| row.message))
}

async fn page(
    store: &dyn MessageStore,
    channel_id: u64,
    anchor: HistoryAnchor,
    limit: usize,
) -> Vec<StoredMessage> {
    let page = HistoryPage {
        channel_id,
        anchor,
        limit,
    };
    store.page(page).await.expect("a page answers")
}

/// Puts `m0..m{count-1}`, one second apart, ending an hour ago; returns them oldest first.
async fn put_run(store: &dyn MessageStore, channel_id: u64, count: usize) -> Vec<StoredMessage> {
    let start_ms = NodeClock::new().now_ms() - HOUR_MS;
    let mut sent = Vec::new();
    for i in 0..count {
        let offset_ms = i64::try_from(i).expect("small") * 1000;
        let message = message_at(channel_id, start_ms + offset_ms, 0, &format!("m{i}"));
        store.put(&message, now_us()).await.expect("put answers");
        sent.push(message);
    }
    sent
}

mod cases {
    use super::*;

    pub async fn history_is_newest_first_and_limited(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        put_run(&*store, channel, 5).await;

        let all = history(&*store, channel, None, 10).await;
        assert_eq!(contents(&all), ["m4", "m3", "m2", "m1", "m0"]);
        let three = history(&*store, channel, None, 3).await;
        assert_eq!(contents(&three), ["m4", "m3", "m2"]);
        let one = history(&*store, channel, None, 1).await;
        assert_eq!(contents(&one), ["m4"]);
        assert!(history(&*store, channel, None, 0).await.is_empty());
    }

    pub async fn before_pages_through_the_whole_channel(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let sent = put_run(&*store, channel, 7).await;

        let mut pages = Vec::new();
        let mut before = None;
        loop {
            let page = history(&*store, channel, before, 3).await;
            let Some(last) = page.last() else { break };
            before = Some(last.message_id);
            pages.push(contents(&page).join(","));
        }
        assert_eq!(pages, ["m6,m5,m4", "m3,m2,m1", "m0"]);

        // `before` is exclusive: paging from m3's id starts at m2.
        let from_m3 = history(&*store, channel, Some(sent[3].message_id), 10).await;
        assert_eq!(contents(&from_m3), ["m2", "m1", "m0"]);
    }

    pub async fn a_page_crosses_a_bucket_boundary(backend: Backend) {
        let store = backend.client(0).await;
        // The current bucket starts at `boundary_ms`; the channel is three buckets older.
        let now_ms = NodeClock::new().now_ms();
        let bucket = bucket_of(ids::from_timestamp_ms(now_ms));
        let boundary_ms = ids::DISCORD_EPOCH_MS + i64::from(bucket) * BUCKET_MS;
        let channel = channel_created_ago(now_ms - boundary_ms + 3 * BUCKET_MS);
        let old_a = message_at(channel, boundary_ms - 2000, 0, "old-a");
        let old_b = message_at(channel, boundary_ms - 1000, 0, "old-b");
        let new_a = message_at(channel, boundary_ms, 0, "new-a");
        let new_b = message_at(channel, boundary_ms + 1, 0, "new-b");
        // In the channel's own bucket, with an empty bucket between.
        let ancient = message_at(channel, boundary_ms - 2 * BUCKET_MS - 1000, 0, "ancient");
        for message in [&ancient, &old_a, &old_b, &new_a, &new_b] {
            store.put(message, now_us()).await.expect("put answers");
        }
        assert_eq!(bucket_of(new_a.message_id), bucket);
        assert_eq!(bucket_of(old_b.message_id), bucket - 1);
        assert_eq!(bucket_of(ancient.message_id), bucket - 3);
        assert_eq!(bucket_of(channel), bucket - 3);

        let page = history(&*store, channel, None, 3).await;
        assert_eq!(contents(&page), ["new-b", "new-a", "old-b"]);
        let next = history(&*store, channel, Some(old_b.message_id), 3).await;
        assert_eq!(contents(&next), ["old-a", "ancient"]);
        let all = history(&*store, channel, None, 100).await;
        assert_eq!(
            contents(&all),
            ["new-b", "new-a", "old-b", "old-a", "ancient"]
        );
        // Read twice: the second walk skips the buckets the first found empty.
        let again = history(&*store, channel, None, 100).await;
        assert_eq!(contents(&again), contents(&all));
    }

    pub async fn delete_hides_a_message_and_timestamps_decide(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let sent = put_run(&*store, channel, 3).await;
        let target = &sent[1];
        let t = now_us();

        // 1. A delete after the put hides it from get and history; the others stay.
        store
            .delete(channel, target.message_id, t + 1_000_000)
            .await
            .expect("delete answers");
        assert_eq!(get(&*store, channel, target.message_id).await, Ok(None));
        assert_eq!(
            contents(&history(&*store, channel, None, 10).await),
            ["m2", "m0"]
        );

        // 2. A put older than the delete stays deleted.
        store.put(target, t + 500_000).await.expect("put answers");
        assert_eq!(get(&*store, channel, target.message_id).await, Ok(None));

        // 3. A put newer than the delete brings it back.
        let mut revived = target.clone();
        revived.content = "m1 again".into();
        store
            .put(&revived, t + 2_000_000)
            .await
            .expect("put answers");
        assert_eq!(
            get(&*store, channel, target.message_id).await,
            Ok(Some(revived))
        );
        assert_eq!(
            contents(&history(&*store, channel, None, 10).await),
            ["m2", "m1 again", "m0"]
        );

        // 4. Deleting a message that never existed succeeds and changes nothing.
        let absent = target.message_id + 1;
        assert_eq!(store.delete(channel, absent, t).await, Ok(()));
        assert_eq!(history(&*store, channel, None, 10).await.len(), 3);
    }

    pub async fn a_later_put_replaces_an_earlier_one(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let first = message_at(channel, NodeClock::new().now_ms() - HOUR_MS, 0, "draft");
        let t = now_us();
        store.put(&first, t).await.expect("put answers");
        let mut second = first.clone();
        second.content = "final".into();
        second.nonce = Some("n-2".into());
        store.put(&second, t + 1).await.expect("put answers");
        // An older write arriving late loses.
        store.put(&first, t - 1).await.expect("put answers");

        assert_eq!(
            get(&*store, channel, first.message_id).await,
            Ok(Some(second))
        );
        assert_eq!(
            contents(&history(&*store, channel, None, 10).await),
            ["final"]
        );
    }

    pub async fn get_returns_every_stored_field(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let at_ms = NodeClock::new().now_ms() - HOUR_MS;
        let with_nonce = StoredMessage {
            channel_id: channel,
            message_id: ids::from_timestamp_ms(at_ms) | 0x2_1003,
            guild_id: 175_928_847_299_117_063,
            author_id: 80_351_110_224_678_912,
            content: "héllo, wörld — ✓".into(),
            nonce: Some("nonce-17".into()),
            edited_ms: Some(at_ms + 5),
            referenced_message_id: Some(175_928_847_299_117_001),
            reactions: vec![chat_system::model::StoredReaction {
                emoji: "🔥".into(),
                user_ids: vec![4, 80_351_110_224_678_912],
            }],
        };
        let without_nonce = StoredMessage {
            message_id: with_nonce.message_id + 1,
            nonce: None,
            edited_ms: None,
            referenced_message_id: None,
            reactions: Vec::new(),
            content: String::new(),
            ..with_nonce.clone()
        };
        for message in [&with_nonce, &without_nonce] {
            store.put(message, now_us()).await.expect("put answers");
            let read = get(&*store, channel, message.message_id).await;
            assert_eq!(read, Ok(Some(message.clone())));
        }
        // Ids next to a stored one hold nothing.
        let neighbour = get(&*store, channel, with_nonce.message_id - 1).await;
        assert_eq!(neighbour, Ok(None));
    }

    pub async fn read_your_write_at_quorum_through_another_client(backend: Backend) {
        let writer = backend.client(0).await;
        let reader = backend.client(1).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let start_ms = NodeClock::new().now_ms() - HOUR_MS;
        let mut expected = Vec::new();
        for i in 0..20 {
            let message = message_at(channel, start_ms + i * 10, 0, &format!("w{i}"));
            writer.put(&message, now_us()).await.expect("put answers");
            // Acknowledged at QUORUM, so a QUORUM read anywhere sees it at once.
            let read = get(&*reader, channel, message.message_id).await;
            assert_eq!(read, Ok(Some(message.clone())), "w{i} right after its put");
            expected.insert(0, message.content.clone());
        }
        let read = history(&*reader, channel, None, 50).await;
        assert_eq!(contents(&read), expected);
    }

    pub async fn get_carries_the_write_timestamp_of_the_newest_write(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let original = message_at(channel, NodeClock::new().now_ms() - HOUR_MS, 0, "first");
        let t = now_us();

        // 1. The put's own timestamp comes back with it.
        store.put(&original, t).await.expect("put answers");
        let read = store.get(channel, original.message_id).await;
        let expected = TimedMessage {
            message: original.clone(),
            write_us: t,
        };
        assert_eq!(read, Ok(Some(expected)));

        // 2. An edit at a later timestamp: its content and its timestamp.
        let edited = StoredMessage {
            content: "edited".into(),
            edited_ms: Some((t + 7_000).div_euclid(1000)),
            ..original.clone()
        };
        store.put(&edited, t + 7_000).await.expect("put answers");
        let read = store.get(channel, original.message_id).await;
        let expected = TimedMessage {
            message: edited.clone(),
            write_us: t + 7_000,
        };
        assert_eq!(read, Ok(Some(expected)));

        // 3. A stale write changes neither; a delete after both hides the row.
        store.put(&original, t + 3_000).await.expect("put answers");
        let read = store.get(channel, original.message_id).await;
        assert_eq!(read.map(|r| r.map(|r| r.write_us)), Ok(Some(t + 7_000)));
        store
            .delete(channel, original.message_id, t + 8_000)
            .await
            .expect("delete answers");
        assert_eq!(store.get(channel, original.message_id).await, Ok(None));
    }

    pub async fn after_pages_are_the_oldest_above_the_id_newest_first(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let sent = put_run(&*store, channel, 10).await;
        let id = |i: usize| sent[i].message_id;

        // Oldest above m2, three of them, newest first: m5, m4, m3.
        let three = page(&*store, channel, HistoryAnchor::After(id(2)), 3).await;
        assert_eq!(contents(&three), ["m5", "m4", "m3"]);
        // Fewer than asked near the head: m8 and m9 only.
        let tail = page(&*store, channel, HistoryAnchor::After(id(7)), 10).await;
        assert_eq!(contents(&tail), ["m9", "m8"]);
        assert!(page(&*store, channel, HistoryAnchor::After(id(9)), 10)
            .await
            .is_empty());
        // After the channel's own id: the channel's first messages.
        let first = page(&*store, channel, HistoryAnchor::After(channel), 4).await;
        assert_eq!(contents(&first), ["m3", "m2", "m1", "m0"]);

        // The same read oldest first, as `oldest_after` gives it.
        let oldest = store.oldest_after(channel, id(2), 3).await;
        let oldest = oldest.expect("oldest_after answers");
        assert_eq!(contents(&oldest), ["m3", "m4", "m5"]);
        assert_eq!(store.oldest_after(channel, id(2), 0).await, Ok(Vec::new()));

        // Paging forwards from the start visits every message once.
        let mut seen = Vec::new();
        let mut after = channel;
        loop {
            let forward = page(&*store, channel, HistoryAnchor::After(after), 4).await;
            let Some(newest) = forward.first() else { break };
            after = newest.message_id;
            seen.push(contents(&forward).join(","));
        }
        assert_eq!(seen, ["m3,m2,m1,m0", "m7,m6,m5,m4", "m9,m8"]);
    }

    pub async fn around_pages_hold_the_message_and_its_neighbours(backend: Backend) {
        let store = backend.client(0).await;
        let channel = channel_created_ago(2 * DAY_MS);
        let sent = put_run(&*store, channel, 10).await;
        let around = |i: usize| HistoryAnchor::Around(sent[i].message_id);

        // limit 4: two above m5 (m6, m7), then m5 and one below it.
        let four = page(&*store, channel, around(5), 4).await;
        assert_eq!(contents(&four), ["m7", "m6", "m5", "m4"]);
        // limit 5: still two above, three at or below.
        let five = page(&*store, channel, around(5), 5).await;
        assert_eq!(contents(&five), ["m7", "m6", "m5", "m4", "m3"]);
        // At the newest message nothing is above it; the page is shorter.
        let head = page(&*store, channel, around(9), 4).await;
        assert_eq!(contents(&head), ["m9", "m8"]);
        // At the oldest, one above it and the message itself.
        let start = page(&*store, channel, around(0), 3).await;
        assert_eq!(contents(&start), ["m1", "m0"]);
        // Latest and before through `page`, as `history` gives them.
        let latest = page(&*store, channel, HistoryAnchor::Latest, 2).await;
        assert_eq!(contents(&latest), ["m9", "m8"]);
        let before = page(
            &*store,
            channel,
            HistoryAnchor::Before(sent[3].message_id),
            2,
        )
        .await;
        assert_eq!(contents(&before), ["m2", "m1"]);
        assert!(page(&*store, channel, around(5), 0).await.is_empty());
    }

    pub async fn after_pages_cross_bucket_boundaries_oldest_first(backend: Backend) {
        let store = backend.client(0).await;
        // As in `a_page_crosses_a_bucket_boundary`: the channel three buckets back, one
        // message in its own bucket, two each side of the current bucket's start.
        let now_ms = NodeClock::new().now_ms();
        let bucket = bucket_of(ids::from_timestamp_ms(now_ms));
        let boundary_ms = ids::DISCORD_EPOCH_MS + i64::from(bucket) * BUCKET_MS;
        let channel = channel_created_ago(now_ms - boundary_ms + 3 * BUCKET_MS);
        let ancient = message_at(channel, boundary_ms - 2 * BUCKET_MS - 1000, 0, "ancient");
        let old_a = message_at(channel, boundary_ms - 2000, 0, "old-a");
        let old_b = message_at(channel, boundary_ms - 1000, 0, "old-b");
        let new_a = message_at(channel, boundary_ms, 0, "new-a");
        let new_b = message_at(channel, boundary_ms + 1, 0, "new-b");
        for message in [&new_b, &old_a, &ancient, &new_a, &old_b] {
            store.put(message, now_us()).await.expect("put answers");
        }

        // From the channel's start: ancient, then across the empty bucket to old-a.
        let first = page(&*store, channel, HistoryAnchor::After(channel), 2).await;
        assert_eq!(contents(&first), ["old-a", "ancient"]);
        // Across the current bucket's start.
        let next = page(&*store, channel, HistoryAnchor::After(old_a.message_id), 2).await;
        assert_eq!(contents(&next), ["new-a", "old-b"]);
        let rest = store.oldest_after(channel, old_b.message_id, 10).await;
        assert_eq!(
            contents(&rest.expect("oldest_after answers")),
            ["new-a", "new-b"]
        );
        // Around the bucket's first message: one above, then new-a and what is below it.
        let around = page(&*store, channel, HistoryAnchor::Around(new_a.message_id), 3).await;
        assert_eq!(contents(&around), ["new-b", "new-a", "old-b"]);
        // Twice: the second walk skips the empty bucket the first remembered.
        let again = page(&*store, channel, HistoryAnchor::After(channel), 2).await;
        assert_eq!(contents(&again), ["old-a", "ancient"]);
    }

    pub async fn the_directory_log_reads_back_in_id_order(backend: Backend) {
        let store = backend.client(0).await;
        let reader = backend.client(1).await;
        // Ids from the clock, so a long-lived cluster's older records sort before them.
        let base = ids::from_timestamp_ms(NodeClock::new().now_ms()) | 0x3_0000;
        let guild_id = base + 1;
        let created = ChangeRecord {
            id: base + 10,
            actor_id: 7,
            change: DirectoryChange::GuildCreated {
                guild: chat_system::directory::Guild {
                    id: guild_id,
                    name: "log test".into(),
                    channels: vec![Channel {
                        id: base + 2,
                        name: "general".into(),
                    }],
                    members: [7].into_iter().collect(),
                    owner_id: 7,
                },
            },
        };
        let channel = ChangeRecord {
            id: base + 20,
            actor_id: 7,
            change: DirectoryChange::ChannelCreated {
                guild_id,
                channel: Channel {
                    id: base + 21,
                    name: "random".into(),
                },
            },
        };
        let member = ChangeRecord {
            id: base + 30,
            actor_id: 7,
            change: DirectoryChange::MemberAdded {
                guild_id,
                user_id: 8,
            },
        };

        // 1. Written out of order, one of them twice: read back once each, by id.
        for record in [&member, &created, &channel, &member] {
            store
                .put_directory_change(record, now_us())
                .await
                .expect("a log write answers");
        }
        let all = reader.directory_changes_after(base).await;
        let all = all.expect("a log read answers");
        assert_eq!(all, [created.clone(), channel.clone(), member.clone()]);

        // 2. `after` is exclusive, and past the newest there is nothing.
        let later = reader.directory_changes_after(base + 10).await;
        assert_eq!(later, Ok(vec![channel, member]));
        let none = reader.directory_changes_after(base + 30).await;
        assert_eq!(none, Ok(Vec::new()));
    }

    pub async fn an_unknown_channel_is_empty(backend: Backend) {
        let store = backend.client(0).await;
        // Created 45 days ago: history walks five empty buckets to reach its own.
        let channel = channel_created_ago(45 * DAY_MS);
        assert!(history(&*store, channel, None, 50).await.is_empty());
        let before = Some(ids::from_timestamp_ms(NodeClock::new().now_ms()));
        assert!(history(&*store, channel, before, 50).await.is_empty());
        assert_eq!(get(&*store, channel, channel + 1).await, Ok(None));
    }
}

/// One test per case and backend: `ring::CASE` and `cql::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod ring {
            $(
                #[test]
                fn $case() {
                    super::on_ring(super::cases::$case);
                }
            )*
        }
        mod cql {
            $(
                #[test]
                fn $case() {
                    super::on_cql(super::cases::$case);
                }
            )*
        }
    };
}

conformance!(
    history_is_newest_first_and_limited,
    before_pages_through_the_whole_channel,
    a_page_crosses_a_bucket_boundary,
    delete_hides_a_message_and_timestamps_decide,
    a_later_put_replaces_an_earlier_one,
    get_returns_every_stored_field,
    read_your_write_at_quorum_through_another_client,
    an_unknown_channel_is_empty,
    get_carries_the_write_timestamp_of_the_newest_write,
    after_pages_are_the_oldest_above_the_id_newest_first,
    around_pages_hold_the_message_and_its_neighbours,
    after_pages_cross_bucket_boundaries_oldest_first,
    the_directory_log_reads_back_in_id_order,
);

/// Outcomes only a real server can produce, and clusters that cannot be reached.
mod outcomes {
    use super::*;

    #[test]
    fn cql_quorum_on_a_keyspace_wider_than_the_cluster_is_unavailable() {
        // Seven replicas asked of a cluster of fewer than four nodes (one here, in CI and on a
        // developer's machine): QUORUM needs 7 / 2 + 1 = 4 alive, fewer are, so Cassandra
        // refuses before writing anything.
        let nodes = cassandra().clone();
        runtime().block_on(async {
            let config = CqlConfig::new(nodes, "chat_conformance_rf7", 7);
            let store = CqlStore::open(&config).await.expect("the CQL store opens");
            let channel = channel_created_ago(DAY_MS);
            let message = message_at(channel, NodeClock::new().now_ms(), 0, "refused");
            let put = store.put(&message, now_us()).await;
            let get = store.get(channel, message.message_id).await;
            for result in [put.map(|_| None), get] {
                let alive = match result {
                    Err(StoreError::Unavailable { required: 4, alive }) => alive,
                    other => panic!("expected Unavailable with 4 required, got {other:?}"),
                };
                assert!((1..4).contains(&alive), "{alive} alive");
            }
        });
    }

    #[test]
    fn cql_adds_the_columns_a_table_of_an_earlier_version_lacks() {
        // A `messages` table as the first version made it, without the edit time, the reply
        // reference and the reactions; opening the store adds them, and rows written before
        // read back with them unset.
        let nodes = cassandra().clone();
        let keyspace = "chat_conformance_migration";
        runtime().block_on(async {
            let session = scylla::client::session_builder::SessionBuilder::new()
                .known_nodes(&nodes)
                .build()
                .await
                .expect("a session");
            let old_shape = [
                format!(
                    "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
                     {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                ),
                format!("DROP TABLE IF EXISTS {keyspace}.messages"),
                format!(
                    "CREATE TABLE {keyspace}.messages (channel_id bigint, bucket int, \
                     message_id bigint, guild_id bigint, author_id bigint, content text, \
                     nonce text, PRIMARY KEY ((channel_id, bucket), message_id)) \
                     WITH CLUSTERING ORDER BY (message_id DESC)"
                ),
            ];
            for ddl in old_shape {
                session.query_unpaged(ddl, ()).await.expect("old schema");
            }
            let channel = channel_created_ago(DAY_MS);
            let now_ms = NodeClock::new().now_ms();
            let before = message_at(channel, now_ms, 0, "before");
            let bucket = i32::try_from(bucket_of(before.message_id)).expect("a bucket");
            let insert = format!(
                "INSERT INTO {keyspace}.messages (channel_id, bucket, message_id, guild_id, \
                 author_id, content) VALUES (?, ?, ?, 41, 7, 'before')"
            );
            let ids = (channel as i64, bucket, before.message_id as i64);
            session
                .query_unpaged(insert, ids)
                .await
                .expect("an old row");

            let config = CqlConfig::new(nodes.clone(), keyspace, 1);
            let store = CqlStore::open(&config).await.expect("the CQL store opens");
            let old = store.get(channel, before.message_id).await.expect("a read");
            assert_eq!(old.map(|t| t.message), Some(before.clone()));
            let mut reply = message_at(channel, now_ms, 1, "after");
            reply.referenced_message_id = Some(before.message_id);
            reply.edited_ms = Some(now_ms);
            reply.add_reaction("🔥", 9);
            store.put(&reply, now_us()).await.expect("a write");
            let new = store.get(channel, reply.message_id).await.expect("a read");
            assert_eq!(new.map(|t| t.message), Some(reply));
        });
    }

    #[test]
    fn cql_without_a_reachable_node_names_the_contact_points() {
        runtime().block_on(async {
            // Port 1 on loopback: nothing listens there.
            let config = CqlConfig::new(vec!["127.0.0.1:1".into()], KEYSPACE, 1);
            match CqlStore::open(&config).await {
                Err(StoreError::NoCoordinator(message)) => {
                    assert!(message.contains("127.0.0.1:1"), "{message}");
                }
                other => panic!("expected NoCoordinator, got {other:?}"),
            }
            let bad_name = CqlConfig::new(vec!["127.0.0.1:1".into()], "chat-conformance", 1);
            match CqlStore::open(&bad_name).await {
                Err(StoreError::Storage(message)) => {
                    assert!(message.contains("'chat-conformance'"), "{message}");
                }
                other => panic!("expected the keyspace name refused, got {other:?}"),
            }
        });
    }

    #[test]
    fn ring_without_a_reachable_node_is_no_coordinator() {
        runtime().block_on(async {
            let nowhere: SocketAddr = "127.0.0.1:1".parse().expect("an address");
            let client = StoreClient::new(vec![nowhere], Consistency::Quorum, NodeClock::new());
            let store = RingStore::new(client);
            let channel = channel_created_ago(DAY_MS);
            let result = store.get(channel, channel + 1).await;
            assert!(
                matches!(&result, Err(StoreError::NoCoordinator(m)) if m.contains("127.0.0.1:1")),
                "{result:?}"
            );
        });
    }
}
