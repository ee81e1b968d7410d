//! Size-tiered compaction: which sorted tables to merge, and the merge itself.
//!
//! Choosing: tables are sorted by file size and grouped into buckets of similar size; a table
//! joins the first bucket whose average size it is within half to one and a half times of,
//! and every table under `min_sstable_bytes` shares one bucket with the other small ones (as
//! Cassandra's STCS does with `bucket_low` 0.5, `bucket_high` 1.5, `min_sstable_size` 50 MiB).
//! A bucket of at least `min_threshold` tables qualifies and is cut to its `max_threshold`
//! smallest; of the qualifying buckets the one with the most tables is compacted, a tie going
//! to the smaller average size.
//!
//! Merging keeps the winning cell per key under [`Cell::supersedes`]. A winning tombstone is
//! purged (dropped with everything it shadows) when it is older than gc grace and no source
//! outside the compaction (another table or the memtable) holds a cell for that key written
//! at or before it: such a cell would come back to life if the tombstone went, while a newer
//! cell outside wins anyway.
//!
//! Range tombstones of the inputs are all kept side by side (identical ones once). Rows they
//! shadow are dropped, since the tombstone still deletes them where it goes. A range tombstone
//! is purged when it is older than gc grace and no source outside the compaction holds a cell
//! in its slice written at or before it; the rows it shadowed in the inputs go with it.
//!
//! Not modelled: Cassandra's read-hotness ordering of buckets, tombstone-ratio single-table
//! compactions, concurrent compactions, throughput limits, and bloom filters standing in for
//! the exact "does an outside source hold this key" check made here.
//! TODO(compaction-background): compaction runs inline on the caller's task; move it to a task
//! of its own once tables are large enough for that to matter to write latency.

use std::collections::{BTreeMap, BTreeSet};

use super::super::{shadowed, Cell, RangeTombstone, Row, RowKey};
use super::sstable::SsTable;

/// What size-tiered bucketing needs to know of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    /// The table's generation.
    pub generation: u64,
    /// Its file size.
    pub bytes: u64,
}

/// The knobs of size-tiered compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierPolicy {
    /// Fewest tables a bucket needs to be compacted.
    pub min_threshold: usize,
    /// Most tables one compaction takes.
    pub max_threshold: usize,
    /// Tables below this size all share one bucket.
    pub min_sstable_bytes: u64,
}

/// Groups `tables` into buckets of similar size, each ascending by size.
pub fn buckets(tables: &[TableSize], min_sstable_bytes: u64) -> Vec<Vec<TableSize>> {
    let mut sorted = tables.to_vec();
    sorted.sort_by_key(|t| (t.bytes, t.generation));
    let mut buckets: Vec<(u64, Vec<TableSize>)> = Vec::new();
    for table in sorted {
        let fits = |(total, members): &(u64, Vec<TableSize>)| {
            let average = total / members.len() as u64;
            let similar = 2 * u128::from(table.bytes) >= u128::from(average)
                && 2 * u128::from(table.bytes) <= 3 * u128::from(average);
            let both_small = table.bytes < min_sstable_bytes && average < min_sstable_bytes;
            similar || both_small
        };
        match buckets.iter_mut().find(|bucket| fits(bucket)) {
            Some((total, members)) => {
                *total += table.bytes;
                members.push(table);
            }
            None => buckets.push((table.bytes, vec![table])),
        }
    }
    buckets.into_iter().map(|(_, members)| members).collect()
}

/// The generations to compact next, ascending, if any bucket qualifies.
pub fn pick(tables: &[TableSize], policy: TierPolicy) -> Option<Vec<u64>> {
    let mut best: Option<(usize, u64, Vec<u64>)> = None;
    for mut bucket in buckets(tables, policy.min_sstable_bytes) {
        if bucket.len() < policy.min_threshold {
            continue;
        }
        bucket.truncate(policy.max_threshold);
        let average = bucket.iter().map(|t| t.bytes).sum::<u64>() / bucket.len() as u64;
        let better = best.as_ref().is_none_or(|(len, avg, _)| {
            bucket.len() > *len || (bucket.len() == *len && average < *avg)
        });
        if better {
            let mut generations: Vec<u64> = bucket.iter().map(|t| t.generation).collect();
            generations.sort_unstable();
            best = Some((bucket.len(), average, generations));
        }
    }
    best.map(|(_, _, generations)| generations)
}

/// The outcome of merging tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// One winning row per key, ascending, purged tombstones and shadowed rows left out.
    pub rows: Vec<Row>,
    /// The range tombstones kept, ascending.
    pub range_tombstones: Vec<RangeTombstone>,
    /// Rows read from the inputs.
    pub rows_in: usize,
    /// Winning tombstones dropped.
    pub tombstones_purged: usize,
    /// Range tombstones dropped.
    pub range_tombstones_purged: usize,
}

/// Merges `inputs` keeping each key's winner. A winning tombstone, or a range tombstone,
/// written before `purge_before_us` is dropped unless `older_outside(low, high, write_us)`
/// says a source outside the compaction holds a cell with a key in `low..=high` (the row's
/// key, or the range's slice) written at or before it.
pub fn merge(
    inputs: &[&SsTable],
    purge_before_us: i64,
    older_outside: impl Fn(RowKey, RowKey, i64) -> bool,
) -> Merged {
    // 1. The winner per key.
    let mut winners: BTreeMap<RowKey, &Cell> = BTreeMap::new();
    let mut rows_in = 0;
    for row in inputs.iter().flat_map(|table| table.rows()) {
        rows_in += 1;
        let wins = winners
            .get(&row.key)
            .is_none_or(|held| row.cell.supersedes(held));
        if wins {
            winners.insert(row.key, &row.cell);
        }
    }

    // 2. The range tombstones per partition, and those old enough and shadowing nothing
    // outside dropped.
    let all: BTreeSet<RangeTombstone> = inputs
        .iter()
        .flat_map(|table| table.range_tombstones().iter().copied())
        .collect();
    let mut by_partition: BTreeMap<(u64, u32), Vec<RangeTombstone>> = BTreeMap::new();
    let mut range_tombstones = Vec::with_capacity(all.len());
    for tombstone in all {
        by_partition
            .entry((tombstone.channel_id, tombstone.bucket))
            .or_default()
            .push(tombstone);
        let (low, high) = tombstone.bounds();
        let purgeable = tombstone.deleted_at_us < purge_before_us
            && !older_outside(low, high, tombstone.deleted_at_us);
        if !purgeable {
            range_tombstones.push(tombstone);
        }
    }
    let range_tombstones_purged =
        by_partition.values().map(Vec::len).sum::<usize>() - range_tombstones.len();

    // 3. Drop the rows a range tombstone shadows, and the row tombstones that are old
    // enough and shadow nothing outside.
    let mut rows = Vec::with_capacity(winners.len());
    let mut tombstones_purged = 0;
    for (key, cell) in winners {
        let row = Row {
            key,
            cell: cell.clone(),
        };
        let partition = by_partition.get(&(key.channel_id, key.bucket));
        if partition.is_some_and(|ranges| shadowed(&row, ranges)) {
            continue;
        }
        let purgeable = cell.value.is_none()
            && cell.write_us < purge_before_us
            && !older_outside(key, key, cell.write_us);
        if purgeable {
            tombstones_purged += 1;
            continue;
        }
        rows.push(row);
    }
    Merged {
        rows,
        range_tombstones,
        rows_in,
        tombstones_purged,
        range_tombstones_purged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(generation: u64, bytes: u64) -> TableSize {
        TableSize { generation, bytes }
    }

    fn generations(bucket: &[TableSize]) -> Vec<u64> {
        bucket.iter().map(|t| t.generation).collect()
    }

    const POLICY: TierPolicy = TierPolicy {
        min_threshold: 4,
        max_threshold: 32,
        min_sstable_bytes: 0,
    };

    #[test]
    fn tables_of_similar_size_share_a_bucket() {
        // 120 and 140 sit within [0.5, 1.5] of the first bucket's running average (100, then
        // 110); 1000 is over 1.5 times 120 and starts a bucket, which 1200 then joins.
        let tables = [
            size(1, 100),
            size(2, 1000),
            size(3, 120),
            size(4, 1200),
            size(5, 140),
        ];
        let grouped = buckets(&tables, 0);
        let grouped: Vec<Vec<u64>> = grouped.iter().map(|b| generations(b)).collect();
        assert_eq!(grouped, vec![vec![1, 3, 5], vec![2, 4]]);
    }

    #[test]
    fn small_tables_share_one_bucket_whatever_their_ratio() {
        let tables = [size(1, 10), size(2, 1000), size(3, 40)];
        let grouped = buckets(&tables, 2000);
        assert_eq!(grouped.len(), 1);
        assert_eq!(generations(&grouped[0]), vec![1, 3, 2]);
    }

    #[test]
    fn a_bucket_needs_min_threshold_tables_and_takes_at_most_max_threshold() {
        let three = [size(1, 100), size(2, 100), size(3, 100)];
        assert_eq!(pick(&three, POLICY), None);

        let six: Vec<TableSize> = (1..=6).map(|g| size(g, 100 + g)).collect();
        let policy = TierPolicy {
            max_threshold: 5,
            ..POLICY
        };
        assert_eq!(pick(&six, policy), Some(vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn the_fullest_bucket_wins_then_the_smaller() {
        let mut tables: Vec<TableSize> = (1..=4).map(|g| size(g, 10_000)).collect();
        tables.extend((5..=9).map(|g| size(g, 100)));
        assert_eq!(pick(&tables, POLICY), Some(vec![5, 6, 7, 8, 9]));

        tables.truncate(8);
        assert_eq!(pick(&tables, POLICY), Some(vec![5, 6, 7, 8]));
    }
}
