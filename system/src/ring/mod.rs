//! A Cassandra-style replicated store for the `messages` table.
//!
//! Modelled: Murmur3 tokens computed as Cassandra computes them ([`token`]); vnodes and
//! replica placement under SimpleStrategy and NetworkTopologyStrategy ([`placement`], bound to
//! addresses by [`layout`]); any node coordinating at ONE, TWO, QUORUM, LOCAL_QUORUM or ALL,
//! with Unavailable kept apart from Timeout ([`coordinator`]); hinted handoff with a window
//! that survives restarts ([`hints`]); digest reads, blocking read repair and short-read
//! protection; per-cell last-write-wins with Cassandra's tie-break (a tombstone beats a live
//! cell at the same timestamp, then the greater value wins); a per-node engine after
//! Cassandra's ([`engine`]: commit log with periodic, batch or group sync, memtable, sorted
//! tables, size-tiered compaction purging tombstones past gc grace).
//!
//! Range tombstones ([`RangeTombstone`]) delete a slice of message ids in one partition, as
//! `DELETE ... WHERE channel_id = ? AND bucket = ? AND message_id >= ? AND message_id <= ?`
//! does (a whole partition is the slice `0..=u64::MAX`). As Cassandra's `DeletionTime`, one
//! deletes every cell in its slice written at or before `deleted_at_us` and none written after.
//! Range tombstones are kept beside the rows, never merged into them: overlapping ones all
//! stay, and a row is shadowed if any of them deletes it ([`reconcile_slice`]).
//!
//! The table is Discord's: partition key `(channel_id, bucket)`, clustering key `message_id`,
//! newest first, with 10-day buckets; [`client`] walks buckets newest first.
//!
//! Membership is gossip every second with generations and versions ([`gossip`]) feeding a
//! phi-accrual failure detector ([`failure_detector`]), which decides hints and Unavailable.
//! Anti-entropy repair compares Merkle trees per token range and streams the differences
//! ([`repair`]).
//! Not modelled: TTL (expiring) cells, counters, lightweight transactions, topology changes.

pub mod client;
pub mod coordinator;
pub mod engine;
pub mod failure_detector;
pub mod gossip;
pub mod hints;
pub mod layout;
pub mod merkle;
pub mod node;
pub mod placement;
pub mod repair;
pub mod token;

use serde::{Deserialize, Serialize};

use crate::ids;
use crate::model::StoredMessage;

/// Discord's bucket width: 10 days in ms.
pub const BUCKET_MS: i64 = 1000 * 60 * 60 * 24 * 10;
/// How long a replica write may take before the coordinator gives up on it.
pub const WRITE_TIMEOUT_MS: u64 = 2_000;
/// How long a replica read may take before the coordinator gives up on it.
pub const READ_TIMEOUT_MS: u64 = 5_000;
/// Replicas per partition.
pub const REPLICATION_FACTOR: usize = 3;

/// The bucket a snowflake falls in.
pub fn bucket_of(snowflake: u64) -> u32 {
    let since_epoch_ms = ids::timestamp_ms(snowflake) - ids::DISCORD_EPOCH_MS;
    u32::try_from(since_epoch_ms / BUCKET_MS).unwrap_or(u32::MAX)
}

/// The primary key of one row of `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    /// Partition key, first part.
    pub channel_id: u64,
    /// Partition key, second part.
    pub bucket: u32,
    /// Clustering key.
    pub message_id: u64,
}

/// A row's value with its write timestamp; `None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The writer's clock in µs since the Unix epoch (Cassandra's write timestamp).
    pub write_us: i64,
    /// The message, or `None` for a deletion.
    pub value: Option<StoredMessage>,
}

impl Cell {
    /// Whether `self` wins over `other` under last-write-wins.
    pub fn supersedes(&self, other: &Cell) -> bool {
        if self.write_us != other.write_us {
            return self.write_us > other.write_us;
        }
        match (&self.value, &other.value) {
            // At equal timestamps a deletion wins.
            (None, Some(_)) => true,
            (Some(_), None) | (None, None) => false,
            // Then the greater value wins, so every replica picks the same one.
            (Some(mine), Some(theirs)) => mine > theirs,
        }
    }
}

/// A row of `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Its key.
    pub key: RowKey,
    /// Its cell.
    pub cell: Cell,
}

/// The deletion of the message ids `from..=to` of one partition, at `deleted_at_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RangeTombstone {
    /// Partition key, first part.
    pub channel_id: u64,
    /// Partition key, second part.
    pub bucket: u32,
    /// The first message id deleted.
    pub from: u64,
    /// The last message id deleted (inclusive).
    pub to: u64,
    /// The deletion's write timestamp, µs since the Unix epoch.
    pub deleted_at_us: i64,
}

impl RangeTombstone {
    /// The lowest and highest keys of its slice.
    pub fn bounds(&self) -> (RowKey, RowKey) {
        let at = |message_id| RowKey {
            channel_id: self.channel_id,
            bucket: self.bucket,
            message_id,
        };
        (at(self.from), at(self.to))
    }

    /// Whether `key` lies in its slice.
    pub fn covers(&self, key: &RowKey) -> bool {
        let (low, high) = self.bounds();
        low <= *key && *key <= high
    }

    /// Whether it deletes a cell of `key` written at `write_us`: the key is in its slice and
    /// the write is not later than the deletion (`DeletionTime.deletes`).
    pub fn deletes(&self, key: &RowKey, write_us: i64) -> bool {
        self.covers(key) && write_us <= self.deleted_at_us
    }

    /// Whether its slice shares a key with `low..=high`.
    pub fn overlaps(&self, low: RowKey, high: RowKey) -> bool {
        let (mine_low, mine_high) = self.bounds();
        mine_low <= high && low <= mine_high
    }
}

/// Whether any of `range_tombstones` deletes `row`.
pub fn shadowed<'a>(
    row: &Row,
    range_tombstones: impl IntoIterator<Item = &'a RangeTombstone>,
) -> bool {
    range_tombstones
        .into_iter()
        .any(|t| t.deletes(&row.key, row.cell.write_us))
}

/// One write to the table: a row (a value or a row tombstone) or a range tombstone. It is
/// serialized untagged, as the row or the range tombstone alone, so commit log segments and
/// hint files written before range tombstones existed (rows only) still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Mutation {
    /// A row.
    Row(Row),
    /// A range tombstone.
    RangeDelete(RangeTombstone),
}

impl Mutation {
    /// Its partition: `(channel_id, bucket)`.
    pub fn partition(&self) -> (u64, u32) {
        match self {
            Mutation::Row(row) => (row.key.channel_id, row.key.bucket),
            Mutation::RangeDelete(t) => (t.channel_id, t.bucket),
        }
    }
}

/// What a replica answers a slice with: its rows (none that its range tombstones shadow),
/// newest first, and the range tombstones overlapping the part of the slice it covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// Rows, tombstones included, newest first.
    pub rows: Vec<Row>,
    /// Range tombstones, ascending.
    pub range_tombstones: Vec<RangeTombstone>,
}

/// A slice of one partition, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionQuery {
    /// The channel.
    pub channel_id: u64,
    /// The bucket.
    pub bucket: u32,
    /// Only ids strictly below this.
    pub before: Option<u64>,
    /// Only ids strictly above this.
    pub after: Option<u64>,
    /// At most this many rows.
    pub limit: usize,
}

/// How many replicas must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// A majority of all replicas: floor(RF / 2) + 1.
    Quorum,
    /// A majority of the replicas in the coordinator's datacenter.
    LocalQuorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// Replies required out of `replica_count` replicas, `local_count` of them in the
    /// coordinator's datacenter.
    pub fn required(self, replica_count: usize, local_count: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Quorum => replica_count / 2 + 1,
            Consistency::LocalQuorum => local_count / 2 + 1,
            Consistency::All => replica_count,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// Too few replicas were known to be up; nothing was written.
    #[error("unavailable: {alive} replicas alive, {required} required")]
    Unavailable {
        /// Replicas required.
        required: usize,
        /// Replicas believed alive.
        alive: usize,
    },
    /// Too few replicas answered in time; a write may still have been applied.
    #[error("timeout: {received} of {required} required replicas answered")]
    Timeout {
        /// Replicas required.
        required: usize,
        /// Replicas that answered.
        received: usize,
    },
    /// No coordinator could be reached.
    #[error("no coordinator reachable: {0}")]
    NoCoordinator(String),
    /// A replica's engine failed (disk error).
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Merges `rows` into one row per key under last-write-wins, newest key first.
pub fn reconcile(rows: impl IntoIterator<Item = Row>) -> Vec<Row> {
    let mut merged: std::collections::BTreeMap<RowKey, Cell> = std::collections::BTreeMap::new();
    for row in rows {
        match merged.get(&row.key) {
            Some(existing) if !row.cell.supersedes(existing) => {}
            _ => {
                merged.insert(row.key, row.cell);
            }
        }
    }
    merged
        .into_iter()
        .rev()
        .map(|(key, cell)| Row { key, cell })
        .collect()
}

/// Merges replicas' rows under last-write-wins and drops those any of `range_tombstones`
/// deletes; newest key first.
pub fn reconcile_slice(
    rows: impl IntoIterator<Item = Row>,
    range_tombstones: &[RangeTombstone],
) -> Vec<Row> {
    reconcile(rows)
        .into_iter()
        .filter(|row| !shadowed(row, range_tombstones))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str) -> StoredMessage {
        StoredMessage {
            channel_id: 1,
            message_id: 2,
            guild_id: 3,
            author_id: 4,
            content: content.into(),
            ..Default::default()
        }
    }

    fn cell(write_us: i64, value: Option<&str>) -> Cell {
        Cell {
            write_us,
            value: value.map(message),
        }
    }

    #[test]
    fn later_timestamp_wins() {
        assert!(cell(2, Some("a")).supersedes(&cell(1, Some("b"))));
        assert!(!cell(1, Some("b")).supersedes(&cell(2, Some("a"))));
    }

    #[test]
    fn tombstone_wins_a_timestamp_tie() {
        assert!(cell(5, None).supersedes(&cell(5, Some("a"))));
        assert!(!cell(5, Some("a")).supersedes(&cell(5, None)));
    }

    #[test]
    fn greater_value_wins_a_live_tie() {
        assert!(cell(5, Some("b")).supersedes(&cell(5, Some("a"))));
        assert!(!cell(5, Some("a")).supersedes(&cell(5, Some("b"))));
    }

    #[test]
    fn two_tombstones_at_one_timestamp_are_the_same_deletion() {
        // Reference case 3 (both deleted): with no TTL cells modelled, two tombstones at one
        // timestamp are indistinguishable, so neither supersedes the other.
        assert!(!cell(5, None).supersedes(&cell(5, None)));
    }

    #[test]
    fn every_tie_resolves_the_same_in_either_order() {
        // Replicas meet writes in different orders; reconciliation must not care.
        let cells = [
            cell(4, Some("a")),
            cell(5, Some("a")),
            cell(5, Some("b")),
            cell(5, None),
        ];
        let key = RowKey {
            channel_id: 1,
            bucket: 0,
            message_id: 2,
        };
        let rows = |order: &[usize]| -> Vec<Row> {
            order
                .iter()
                .map(|&i| Row {
                    key,
                    cell: cells[i].clone(),
                })
                .collect()
        };
        let forward = reconcile(rows(&[0, 1, 2, 3]));
        let backward = reconcile(rows(&[3, 2, 1, 0]));
        assert_eq!(forward, backward);
        assert_eq!(
            forward[0].cell,
            cell(5, None),
            "the tombstone wins the 5 µs tie"
        );
    }

    #[test]
    fn reconcile_keeps_one_winner_per_key_newest_first() {
        let key = |message_id| RowKey {
            channel_id: 1,
            bucket: 0,
            message_id,
        };
        let rows = vec![
            Row {
                key: key(1),
                cell: cell(1, Some("old")),
            },
            Row {
                key: key(2),
                cell: cell(1, Some("x")),
            },
            Row {
                key: key(1),
                cell: cell(2, Some("new")),
            },
        ];
        let merged = reconcile(rows);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].key.message_id, 2);
        assert_eq!(merged[1].cell.value.as_ref().unwrap().content, "new");
    }

    #[test]
    fn required_replies_per_level() {
        // RF 3 in one datacenter; then RF 5 with 3 of them local.
        let levels = [
            Consistency::One,
            Consistency::Two,
            Consistency::Quorum,
            Consistency::LocalQuorum,
            Consistency::All,
        ];
        let one_dc: Vec<usize> = levels.iter().map(|l| l.required(3, 3)).collect();
        assert_eq!(one_dc, vec![1, 2, 2, 2, 3]);
        let two_dc: Vec<usize> = levels.iter().map(|l| l.required(5, 3)).collect();
        assert_eq!(two_dc, vec![1, 2, 3, 2, 5]);
    }

    #[test]
    fn buckets_are_ten_days_wide() {
        let day0 = ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS);
        let day10 = ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS + BUCKET_MS);
        assert_eq!(bucket_of(day0), 0);
        assert_eq!(bucket_of(day10 - 1), 0);
        assert_eq!(bucket_of(day10), 1);
    }

    fn slice(from: u64, to: u64, deleted_at_us: i64) -> RangeTombstone {
        RangeTombstone {
            channel_id: 1,
            bucket: 0,
            from,
            to,
            deleted_at_us,
        }
    }

    #[test]
    fn a_range_tombstone_deletes_its_inclusive_slice_at_and_before_its_timestamp() {
        let tombstone = slice(10, 20, 100);
        let key = |bucket, message_id| RowKey {
            channel_id: 1,
            bucket,
            message_id,
        };
        assert!(
            tombstone.deletes(&key(0, 10), 100),
            "a write at the deletion"
        );
        assert!(tombstone.deletes(&key(0, 20), 99));
        assert!(!tombstone.deletes(&key(0, 15), 101), "a later write");
        assert!(!tombstone.deletes(&key(0, 9), 1));
        assert!(!tombstone.deletes(&key(0, 21), 1));
        assert!(!tombstone.deletes(&key(1, 15), 1), "another partition");
        assert!(tombstone.overlaps(key(0, 20), key(0, 30)));
        assert!(!tombstone.overlaps(key(0, 21), key(0, 30)));
    }

    #[test]
    fn reconcile_slice_drops_what_any_replicas_range_tombstone_deletes() {
        let key = |message_id| RowKey {
            channel_id: 1,
            bucket: 0,
            message_id,
        };
        let row = |id, write_us| Row {
            key: key(id),
            cell: cell(write_us, Some("m")),
        };

        // Replica A: ids 1..=4 at 5. Replica B: id 2 again at 12, id 3 at 10, id 5 at 11.
        let a = (1..=4).map(|id| row(id, 5));
        let b = [row(2, 12), row(3, 10), row(5, 11)];
        let merged = reconcile_slice(a.chain(b), &[slice(2, 3, 10), slice(4, 4, 1)]);

        // Id 3's winner (10) is at the deletion and goes; id 2's (12) is later and stays;
        // id 4 at 5 is newer than the second tombstone; ids 1 and 5 are outside.
        let kept: Vec<(u64, i64)> = merged
            .iter()
            .map(|r| (r.key.message_id, r.cell.write_us))
            .collect();
        assert_eq!(kept, vec![(5, 11), (4, 5), (2, 12), (1, 5)]);
    }
}
