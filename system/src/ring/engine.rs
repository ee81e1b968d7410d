//! One replica's storage engine: a commit log on the node's disk plus a memtable.
//!
//! A write is appended to the commit log as a checksummed frame and synced before it is
//! acknowledged (Cassandra's batch mode), then merged into the memtable under LWW. On open the
//! log is replayed up to the first frame that is short or fails its checksum (a torn tail);
//! the log is then rewritten to that good prefix so later appends stay readable.
//!
//! Frame: `len: u32 LE`, `crc32(payload): u32 LE`, `payload` (a JSON [`Row`]).
//!
//! TODO(ring-engine): periodic and group sync modes, flushing the memtable to sorted tables,
//! compaction and tombstone purging; today the log grows for the node's lifetime.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use super::{Cell, PartitionQuery, Row, RowKey};
use crate::env::disk::Disk;

/// The commit log's file name.
pub const COMMIT_LOG: &str = "commitlog";
const COMMIT_LOG_REWRITE: &str = "commitlog-rewrite";
const FRAME_HEADER_BYTES: usize = 8;

/// What opening the engine found in the commit log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// Frames replayed.
    pub rows_replayed: usize,
    /// Bytes after the last good frame that were discarded.
    pub tail_bytes_discarded: usize,
}

/// A replica's engine.
pub struct Engine {
    disk: Arc<dyn Disk>,
    memtable: BTreeMap<RowKey, Cell>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rows", &self.memtable.len())
            .finish()
    }
}

fn encode_frame(row: &Row) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(row).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes frames from the start of `log`; returns the rows and the length of the good prefix.
fn decode_frames(log: &[u8]) -> (Vec<Row>, usize) {
    let mut rows = Vec::new();
    let mut at = 0;
    while log.len() - at >= FRAME_HEADER_BYTES {
        let word = |i: usize| u32::from_le_bytes([log[i], log[i + 1], log[i + 2], log[i + 3]]);
        let len = word(at) as usize;
        let crc = word(at + 4);
        let start = at + FRAME_HEADER_BYTES;
        let Some(payload) = log.get(start..start.saturating_add(len)) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(row) = serde_json::from_slice::<Row>(payload) else {
            break;
        };
        rows.push(row);
        at = start + len;
    }
    (rows, at)
}

impl Engine {
    /// Opens the engine on `disk`, replaying its commit log.
    pub fn open(disk: Arc<dyn Disk>) -> io::Result<(Self, Replay)> {
        let mut engine = Self {
            disk,
            memtable: BTreeMap::new(),
        };
        let log = match engine.disk.read(COMMIT_LOG) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };

        // 1. Replay the good prefix.
        let (rows, good_len) = decode_frames(&log);
        let replay = Replay {
            rows_replayed: rows.len(),
            tail_bytes_discarded: log.len() - good_len,
        };
        for row in rows {
            engine.merge(row);
        }

        // 2. Cut a torn tail off, durably, before anything is appended after it.
        if replay.tail_bytes_discarded > 0 {
            engine
                .disk
                .write_at(COMMIT_LOG_REWRITE, 0, &log[..good_len])?;
            engine.disk.sync(COMMIT_LOG_REWRITE)?;
            engine.disk.rename(COMMIT_LOG_REWRITE, COMMIT_LOG)?;
        }
        Ok((engine, replay))
    }

    fn merge(&mut self, row: Row) {
        match self.memtable.get(&row.key) {
            Some(existing) if !row.cell.supersedes(existing) => {}
            _ => {
                self.memtable.insert(row.key, row.cell);
            }
        }
    }

    /// Logs `row` durably, then applies it.
    pub fn apply(&mut self, row: Row) -> io::Result<()> {
        let frame = encode_frame(&row)?;
        self.disk.append(COMMIT_LOG, &frame)?;
        self.disk.sync(COMMIT_LOG)?;
        self.merge(row);
        Ok(())
    }

    /// The rows of one partition slice, newest first, tombstones included (the coordinator
    /// needs them to reconcile replicas).
    pub fn read(&self, query: &PartitionQuery) -> Vec<Row> {
        let low = RowKey {
            channel_id: query.channel_id,
            bucket: query.bucket,
            message_id: query.after.map_or(0, |a| a.saturating_add(1)),
        };
        let high = RowKey {
            channel_id: query.channel_id,
            bucket: query.bucket,
            message_id: query.before.map_or(u64::MAX, |b| b.saturating_sub(1)),
        };
        if low > high {
            return Vec::new();
        }
        self.memtable
            .range(low..=high)
            .rev()
            .take(query.limit)
            .map(|(key, cell)| Row {
                key: *key,
                cell: cell.clone(),
            })
            .collect()
    }

    /// Every row this replica holds, in key order (for convergence checks).
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.memtable.iter().map(|(key, cell)| Row {
            key: *key,
            cell: cell.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::disk::SimDisk;
    use crate::model::StoredMessage;

    fn row(message_id: u64, write_us: i64) -> Row {
        let value = StoredMessage {
            channel_id: 9,
            message_id,
            guild_id: 1,
            author_id: 1,
            content: format!("m{message_id}"),
            nonce: None,
        };
        Row {
            key: RowKey {
                channel_id: 9,
                bucket: 0,
                message_id,
            },
            cell: Cell {
                write_us,
                value: Some(value),
            },
        }
    }

    fn query(before: Option<u64>, after: Option<u64>, limit: usize) -> PartitionQuery {
        PartitionQuery {
            channel_id: 9,
            bucket: 0,
            before,
            after,
            limit,
        }
    }

    #[test]
    fn reads_newest_first_within_bounds() {
        let (mut engine, _) = Engine::open(Arc::new(SimDisk::new())).unwrap();
        for id in 1..=5 {
            engine.apply(row(id, 1)).unwrap();
        }
        let ids = |rows: Vec<Row>| rows.iter().map(|r| r.key.message_id).collect::<Vec<_>>();
        assert_eq!(ids(engine.read(&query(None, None, 3))), vec![5, 4, 3]);
        assert_eq!(ids(engine.read(&query(Some(4), Some(1), 10))), vec![3, 2]);
        assert!(engine.read(&query(Some(1), Some(1), 10)).is_empty());
    }

    #[test]
    fn synced_writes_survive_a_crash_and_replay() {
        let disk = SimDisk::new();
        let (mut engine, _) = Engine::open(Arc::new(disk.clone())).unwrap();
        engine.apply(row(1, 1)).unwrap();
        engine.apply(row(2, 1)).unwrap();
        drop(engine);

        assert_eq!(disk.crash(None).writes_dropped, 0);
        let (engine, replay) = Engine::open(Arc::new(disk)).unwrap();
        assert_eq!(
            replay,
            Replay {
                rows_replayed: 2,
                tail_bytes_discarded: 0
            }
        );
        assert_eq!(engine.rows().count(), 2);
    }

    #[test]
    fn a_torn_tail_is_discarded_and_cut_off() {
        let disk = SimDisk::new();
        let (mut engine, _) = Engine::open(Arc::new(disk.clone())).unwrap();
        engine.apply(row(1, 1)).unwrap();
        let good_len = disk.read(COMMIT_LOG).unwrap().len();

        // A half-written second frame, then a crash that tears it.
        let frame = encode_frame(&row(2, 1)).unwrap();
        disk.append(COMMIT_LOG, &frame).unwrap();
        disk.crash(Some(frame.len() / 2));

        let (mut engine, replay) = Engine::open(Arc::new(disk.clone())).unwrap();
        assert_eq!(replay.rows_replayed, 1);
        assert_eq!(replay.tail_bytes_discarded, frame.len() / 2);
        assert_eq!(disk.read(COMMIT_LOG).unwrap().len(), good_len);

        // Appends after the cut replay again.
        engine.apply(row(3, 1)).unwrap();
        let (engine, replay) = Engine::open(Arc::new(disk)).unwrap();
        assert_eq!(replay.rows_replayed, 2);
        assert_eq!(
            engine.rows().map(|r| r.key.message_id).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn an_older_write_does_not_overwrite_a_newer_one() {
        let (mut engine, _) = Engine::open(Arc::new(SimDisk::new())).unwrap();
        let mut newer = row(1, 10);
        newer.cell.value.as_mut().unwrap().content = "newer".into();
        engine.apply(newer).unwrap();
        engine.apply(row(1, 5)).unwrap();
        let rows = engine.read(&query(None, None, 10));
        assert_eq!(rows[0].cell.value.as_ref().unwrap().content, "newer");
    }
}
