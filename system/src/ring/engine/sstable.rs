//! Sorted tables: immutable files of rows in key order, one per flush or compaction.
//!
//! A table is written whole under a temporary name, synced, then renamed to
//! `sstable-<generation>`, so a table under its final name is always complete; a crash leaves
//! at most a temporary file, which the engine removes on open. Generations rise by one per
//! table written, so a larger generation holds data written (or compacted) later.
//!
//! File: commit log frames; the first holds a JSON [`TableMeta`], then one frame per row
//! (JSON [`Row`]) in ascending key order, then one per range tombstone (JSON
//! [`RangeTombstone`]) in ascending order. Loading checks every checksum, both counts and the
//! order, and fails with `InvalidData` otherwise, since a table under its final name must be
//! whole. A header without `range_tombstone_count` (a table written before range tombstones
//! existed) counts none.
//!
//! Not modelled: Cassandra's on-disk layout (data, index, summary, bloom filter, statistics
//! components), partial reads and the page cache. A loaded table's rows stay in memory, so a
//! read costs no disk call; the disk is what survives a restart.

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::{Cell, RangeTombstone, Row, RowKey};
use super::commitlog::{decode_frames, encode_frame, TEMP_PREFIX};
use crate::env::disk::Disk;

/// The name prefix of sorted tables; the generation follows, zero-padded.
pub const TABLE_PREFIX: &str = "sstable-";

/// The file name of the table of `generation`.
pub fn table_name(generation: u64) -> String {
    format!("{TABLE_PREFIX}{generation:020}")
}

/// The generation a table's file name carries, if it names a table.
pub fn table_generation(name: &str) -> Option<u64> {
    name.strip_prefix(TABLE_PREFIX)?.parse().ok()
}

/// What a table's first frame records about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    /// The table's generation (also in its name).
    pub generation: u64,
    /// Rows that follow.
    pub row_count: u64,
    /// The smallest write timestamp of any cell, or 0 for an empty table.
    pub write_us_min: i64,
    /// The largest write timestamp of any cell, or 0 for an empty table.
    pub write_us_max: i64,
    /// Range tombstones that follow the rows.
    #[serde(default)]
    pub range_tombstone_count: u64,
}

/// A sorted table, loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsTable {
    /// What its header says.
    pub meta: TableMeta,
    /// Its file's size, which size-tiered compaction buckets by.
    pub bytes: u64,
    /// Its rows, ascending by key, one per key.
    rows: Vec<Row>,
    /// Its range tombstones, ascending, each once.
    range_tombstones: Vec<RangeTombstone>,
}

fn invalid(name: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sorted table {name}: {what}"),
    )
}

fn json_frame(value: &impl Serialize) -> io::Result<Vec<u8>> {
    encode_frame(&serde_json::to_vec(value).map_err(io::Error::other)?)
}

impl SsTable {
    /// Writes `rows` (ascending by key, one per key) and `range_tombstones` (ascending, each
    /// once) as the table of `generation`: a temporary file, synced, then renamed.
    pub fn write(
        disk: &Arc<dyn Disk>,
        generation: u64,
        rows: Vec<Row>,
        range_tombstones: Vec<RangeTombstone>,
    ) -> io::Result<Self> {
        assert!(
            rows.windows(2).all(|pair| pair[0].key < pair[1].key),
            "a sorted table's rows ascend by key, one per key"
        );
        assert!(
            range_tombstones.windows(2).all(|pair| pair[0] < pair[1]),
            "a sorted table's range tombstones ascend, each once"
        );
        let stamps = rows
            .iter()
            .map(|r| r.cell.write_us)
            .chain(range_tombstones.iter().map(|t| t.deleted_at_us));
        let meta = TableMeta {
            generation,
            row_count: rows.len() as u64,
            write_us_min: stamps.clone().min().unwrap_or(0),
            write_us_max: stamps.max().unwrap_or(0),
            range_tombstone_count: range_tombstones.len() as u64,
        };

        // 1. Encode the header, the rows and the range tombstones.
        let mut bytes = json_frame(&meta)?;
        for row in &rows {
            bytes.extend(json_frame(row)?);
        }
        for tombstone in &range_tombstones {
            bytes.extend(json_frame(tombstone)?);
        }

        // 2. Make it durable under a temporary name, then give it its real one.
        let name = table_name(generation);
        let temp = format!("{TEMP_PREFIX}{name}");
        disk.write_at(&temp, 0, &bytes)?;
        disk.sync(&temp)?;
        disk.rename(&temp, &name)?;
        Ok(Self {
            meta,
            bytes: bytes.len() as u64,
            rows,
            range_tombstones,
        })
    }

    /// Loads the table named `name`, checking that it is whole.
    pub fn load(disk: &Arc<dyn Disk>, name: &str) -> io::Result<Self> {
        let bytes = disk.read(name)?;
        let (payloads, good_len) = decode_frames(&bytes);
        if good_len != bytes.len() {
            return Err(invalid(name, "a frame is short or fails its checksum"));
        }
        let Some((header, row_frames)) = payloads.split_first() else {
            return Err(invalid(name, "no header"));
        };

        // 1. The header, which must match the name and the frames that follow.
        let meta: TableMeta =
            serde_json::from_slice(header).map_err(|e| invalid(name, &e.to_string()))?;
        if Some(meta.generation) != table_generation(name) {
            return Err(invalid(name, "generation differs from the name"));
        }
        let frame_count = meta.row_count.saturating_add(meta.range_tombstone_count);
        if frame_count != row_frames.len() as u64 {
            return Err(invalid(name, "row count differs from the frames"));
        }
        let (row_frames, tombstone_frames) = row_frames.split_at(meta.row_count as usize);

        // 2. The rows and the range tombstones, which must ascend.
        let rows: Vec<Row> = row_frames
            .iter()
            .map(|frame| serde_json::from_slice(frame))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(name, &e.to_string()))?;
        let range_tombstones: Vec<RangeTombstone> = tombstone_frames
            .iter()
            .map(|frame| serde_json::from_slice(frame))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(name, &e.to_string()))?;
        if !rows.windows(2).all(|pair| pair[0].key < pair[1].key) {
            return Err(invalid(name, "rows out of order"));
        }
        if !range_tombstones.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(invalid(name, "range tombstones out of order"));
        }
        Ok(Self {
            meta,
            bytes: bytes.len() as u64,
            rows,
            range_tombstones,
        })
    }

    /// The table's generation.
    pub fn generation(&self) -> u64 {
        self.meta.generation
    }

    /// Its file name.
    pub fn name(&self) -> String {
        table_name(self.meta.generation)
    }

    /// Every row, ascending by key.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows with keys in `low..=high`, ascending.
    pub fn range(&self, low: RowKey, high: RowKey) -> &[Row] {
        let start = self.rows.partition_point(|row| row.key < low);
        let end = self.rows.partition_point(|row| row.key <= high);
        self.rows.get(start..end).unwrap_or_default()
    }

    /// Every range tombstone, ascending.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.range_tombstones
    }

    /// The cell this table holds for `key`.
    pub fn get(&self, key: &RowKey) -> Option<&Cell> {
        let index = self.rows.binary_search_by(|row| row.key.cmp(key)).ok()?;
        Some(&self.rows[index].cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::disk::SimDisk;

    fn row(message_id: u64, write_us: i64) -> Row {
        Row {
            key: RowKey {
                channel_id: 1,
                bucket: 0,
                message_id,
            },
            cell: Cell {
                write_us,
                value: None,
            },
        }
    }

    #[test]
    fn a_written_table_loads_back_the_same() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let table =
            SsTable::write(&disk, 7, vec![row(1, 30), row(4, 10), row(9, 20)], vec![]).unwrap();
        assert_eq!(disk.list().unwrap(), vec![table_name(7)]);
        assert_eq!((table.meta.write_us_min, table.meta.write_us_max), (10, 30));

        let loaded = SsTable::load(&disk, &table_name(7)).unwrap();
        assert_eq!(loaded, table);
        let ids: Vec<u64> = loaded
            .range(row(2, 0).key, row(9, 0).key)
            .iter()
            .map(|r| r.key.message_id)
            .collect();
        assert_eq!(ids, vec![4, 9]);
        assert_eq!(loaded.get(&row(4, 0).key).map(|c| c.write_us), Some(10));
        assert!(loaded.get(&row(5, 0).key).is_none());
    }

    #[test]
    fn a_written_table_survives_a_crash() {
        let sim = SimDisk::new();
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        SsTable::write(&disk, 1, vec![row(1, 1)], vec![]).unwrap();
        sim.crash(None);
        assert_eq!(sim.pending_bytes(), 0);
        assert!(SsTable::load(&disk, &table_name(1)).is_ok());
    }

    #[test]
    fn a_damaged_table_fails_to_load() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        SsTable::write(&disk, 2, vec![row(1, 1), row(2, 1)], vec![]).unwrap();
        let name = table_name(2);
        let mut bytes = disk.read(&name).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        disk.write_at(&name, 0, &bytes).unwrap();
        let error = SsTable::load(&disk, &name).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn range_tombstones_load_back_after_the_rows() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let tombstone = RangeTombstone {
            channel_id: 1,
            bucket: 0,
            from: 2,
            to: 8,
            deleted_at_us: 40,
        };
        let table = SsTable::write(&disk, 3, vec![row(1, 30)], vec![tombstone]).unwrap();
        assert_eq!((table.meta.write_us_min, table.meta.write_us_max), (30, 40));
        let loaded = SsTable::load(&disk, &table_name(3)).unwrap();
        assert_eq!(loaded.range_tombstones(), &[tombstone]);
        assert_eq!(loaded.rows().len(), 1);
    }

    #[test]
    fn a_header_without_a_range_tombstone_count_loads_as_none() {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let header = br#"{"generation":4,"row_count":1,"write_us_min":5,"write_us_max":5}"#;
        let mut bytes = encode_frame(header).unwrap();
        bytes.extend(json_frame(&row(1, 5)).unwrap());
        disk.write_at(&table_name(4), 0, &bytes).unwrap();
        let loaded = SsTable::load(&disk, &table_name(4)).unwrap();
        assert_eq!(loaded.meta.range_tombstone_count, 0);
        assert!(loaded.range_tombstones().is_empty());
        assert_eq!(loaded.rows(), &[row(1, 5)]);
    }
}
