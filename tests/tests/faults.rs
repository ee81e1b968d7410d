//! Each fault kind's effect is real: scenarios in the simulator that show what a fault does to
//! the ring, read back over the network.
#![cfg(madsim)]

use std::time::Duration;

use chat_sim::ringsim::{simulate, RingCluster, RingShape};
use chat_system::env::clock::NodeClock;
use chat_system::ids;
use chat_system::model::StoredMessage;
use chat_system::ring::client::HistoryQuery;
use chat_system::ring::{Consistency, StoreError};

fn message(channel_id: u64, message_id: u64, content: &str) -> StoredMessage {
    StoredMessage {
        channel_id,
        message_id,
        guild_id: 1,
        author_id: 1,
        content: content.to_string(),
        ..Default::default()
    }
}

fn channel() -> u64 {
    ids::from_timestamp_ms(NodeClock::new().now_ms() - 24 * 60 * 60 * 1000) + 1
}

#[test]
fn a_partition_leaves_the_minority_coordinator_unavailable_at_quorum() {
    simulate(21, || async {
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_secs(5)).await;

        // Isolate ring-1 from the other ring nodes, both ways (clients still reach it).
        for other in [1, 2] {
            cluster.cut(0, other);
            cluster.cut(other, 0);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;

        let (minority, majority) = (
            cluster.store(&[0], Consistency::Quorum),
            cluster.store(&[1], Consistency::Quorum),
        );
        let channel = channel();
        let clock = NodeClock::new();
        let id = ids::from_timestamp_ms(clock.now_ms());
        let (on_minority, on_majority) = cluster
            .on_client(async move {
                let a = minority
                    .put(&message(channel, id, "a"), clock.now_us())
                    .await;
                let b = majority
                    .put(&message(channel, id + 1, "b"), clock.now_us())
                    .await;
                (a, b)
            })
            .await;
        assert_eq!(
            on_minority,
            Err(StoreError::Unavailable {
                required: 2,
                alive: 1
            })
        );
        assert_eq!(on_majority, Ok(()));

        // Healed, the minority side coordinates again once its detector sees the others.
        for other in [1, 2] {
            cluster.mend(0, other);
            cluster.mend(other, 0);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let store = cluster.store(&[0], Consistency::Quorum);
        let clock = NodeClock::new();
        let healed = cluster
            .on_client(async move {
                store
                    .put(&message(channel, id + 2, "c"), clock.now_us())
                    .await
            })
            .await;
        assert_eq!(healed, Ok(()));
    });
}

#[test]
fn a_coordinator_clock_behind_makes_a_later_write_lose_to_an_earlier_one() {
    simulate(22, || async {
        let cluster = RingCluster::start(&RingShape::default());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let channel = channel();
        let id = ids::from_timestamp_ms(NodeClock::new().now_ms());

        // Writer A's clock is true; writer B's is 10 s behind. A edits first, B a second later.
        let (true_clock, skewed) = (NodeClock::new(), NodeClock::new());
        skewed.step_us(-10_000_000);
        let store = cluster.store(&[0, 1, 2], Consistency::Quorum);
        let seen = cluster
            .on_client(async move {
                store
                    .put(&message(channel, id, "first"), true_clock.now_us())
                    .await
                    .expect("a");
                tokio::time::sleep(Duration::from_secs(1)).await;
                store
                    .put(&message(channel, id, "second"), skewed.now_us())
                    .await
                    .expect("b");
                let query = HistoryQuery {
                    channel_id: channel,
                    before: None,
                    limit: 10,
                };
                store.history(query).await.expect("history")
            })
            .await;

        // Both writes were acknowledged, yet the later one is silently lost under LWW.
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].content, "first");
    });
}
