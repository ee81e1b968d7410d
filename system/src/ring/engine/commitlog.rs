//! The commit log: checksummed frames appended to segment files, synced on the engine's say.
//!
//! A write is appended to the active segment as one frame and is pending on the disk until
//! [`CommitLog::sync`]. Positions count this log's appends since open (the first is 1); the
//! log remembers the highest position appended and the highest known durable, so the engine
//! can tell a caller when its write is safe.
//!
//! Segments: one per memtable. When the memtable is flushed to a durable sorted table,
//! [`CommitLog::discard_flushed`] marks everything appended so far as durable (it now lives in
//! that table), starts the next segment and removes the older ones. A crash between the table's
//! rename and the removal leaves an old segment behind; replaying it again is harmless, since
//! merging a row twice under last-write-wins changes nothing.
//!
//! Frame: `len: u32 LE`, `crc32(payload): u32 LE`, `payload` (a JSON [`Mutation`]: a row or a
//! range tombstone, untagged, so segments holding only rows read as before). Replay reads
//! each segment up to the first frame that is short, fails its checksum or does not parse (a
//! torn tail), and rewrites the segment to that good prefix (temp file, sync, rename) before
//! anything is appended after it.
//!
//! Not modelled: Cassandra's fixed-size (32 MiB) segments, their recycling and the total-space
//! limit that forces a flush; compression and encryption of segments.
//! TODO(commitlog-segments): roll segments by size too, syncing the sealed one first, once
//! memtables can outgrow what one segment should hold.

use std::io;
use std::sync::Arc;

use super::super::{Mutation, Row};
use crate::env::disk::Disk;

/// The name prefix of commit log segments; the segment id follows, zero-padded.
pub const SEGMENT_PREFIX: &str = "commitlog-";
/// The name prefix of files being written, removed on open if a crash left them behind.
pub const TEMP_PREFIX: &str = "tmp-";
const FRAME_HEADER_BYTES: usize = 8;

/// A write's place in the commit log: its sequence number since the engine opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition(pub u64);

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{SEGMENT_PREFIX}{id:020}")
}

fn segment_id(name: &str) -> Option<u64> {
    name.strip_prefix(SEGMENT_PREFIX)?.parse().ok()
}

/// Wraps `payload` in a frame: length, checksum, bytes.
pub fn encode_frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Splits `bytes` into frame payloads from the start; returns them and the length of the
/// prefix they cover (everything after it is short or fails its checksum).
pub fn decode_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut payloads = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER_BYTES {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let len = word(at) as usize;
        let crc = word(at + 4);
        let start = at + FRAME_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start.saturating_add(len)) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        payloads.push(payload);
        at = start + len;
    }
    (payloads, at)
}

/// Decodes mutation frames from the start of a segment; returns the mutations and the length
/// of the good prefix (a frame whose payload is not a mutation ends it, like a bad checksum).
pub fn decode_mutations(segment: &[u8]) -> (Vec<Mutation>, usize) {
    let (payloads, _) = decode_frames(segment);
    let mut rows = Vec::new();
    let mut good_len = 0;
    for payload in payloads {
        let Ok(row) = serde_json::from_slice::<Mutation>(payload) else {
            break;
        };
        rows.push(row);
        good_len += FRAME_HEADER_BYTES + payload.len();
    }
    (rows, good_len)
}

/// The offset in `rest` (past its first byte) of the first intact row frame, if any.
fn valid_frame_after(rest: &[u8]) -> Option<usize> {
    (1..rest.len()).find(|&at| {
        let (rows, good_len) = decode_mutations(&rest[at..]);
        !rows.is_empty() && good_len > 0
    })
}

/// Encodes `mutation` as one commit log frame.
pub fn encode_mutation(mutation: &Mutation) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(mutation).map_err(io::Error::other)?;
    encode_frame(&payload)
}

/// Encodes `row` as one commit log frame.
pub fn encode_row(row: &Row) -> io::Result<Vec<u8>> {
    encode_mutation(&Mutation::Row(row.clone()))
}

/// What replaying the segments found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogReplay {
    /// Mutations read from every segment, oldest segment first.
    pub mutations: Vec<Mutation>,
    /// Segments read.
    pub segments: usize,
    /// Bytes after the last good frame of each segment, summed, that were cut off.
    pub tail_bytes_discarded: usize,
}

/// The commit log of one engine.
pub struct CommitLog {
    disk: Arc<dyn Disk>,
    /// The segment appends go to.
    active: u64,
    appended: LogPosition,
    durable: LogPosition,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog")
            .field("active", &self.active)
            .field("appended", &self.appended)
            .field("durable", &self.durable)
            .finish()
    }
}

impl CommitLog {
    /// Replays every segment on `disk`, cutting torn tails off, and opens the last segment
    /// for appends. What was replayed is made durable before this returns. Expects no
    /// temporary files left (the engine removes them first).
    pub fn open(disk: Arc<dyn Disk>) -> io::Result<(Self, LogReplay)> {
        let mut ids: Vec<u64> = disk.list()?.iter().filter_map(|n| segment_id(n)).collect();
        ids.sort_unstable();
        let mut replay = LogReplay::default();

        // 1. Replay each segment's good prefix, cutting a torn tail off durably.
        for &id in &ids {
            let name = segment_name(id);
            let bytes = disk.read(&name)?;
            let (mutations, good_len) = decode_mutations(&bytes);
            replay.mutations.extend(mutations);
            replay.segments += 1;
            if good_len < bytes.len() {
                // Garbage up to the end is a torn last write; a good frame after the damage
                // means the damage is in the middle, and cutting there would drop
                // acknowledged writes, so refuse.
                if let Some(next) = valid_frame_after(&bytes[good_len..]) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "commit log segment {name} is damaged at byte {good_len}, with \
                             intact records from byte {} on; refusing to replay past the \
                             damage (move the segment aside to start without it)",
                            good_len + next
                        ),
                    ));
                }
                tracing::warn!(
                    segment = %name,
                    offset = good_len,
                    bytes = bytes.len() - good_len,
                    "commit_log_torn_tail_discarded"
                );
                replay.tail_bytes_discarded += bytes.len() - good_len;
                let temp = format!("{TEMP_PREFIX}{name}");
                disk.write_at(&temp, 0, &bytes[..good_len])?;
                disk.sync(&temp)?;
                disk.rename(&temp, &name)?;
            }
        }

        // 2. Append after the newest segment; what it holds may still be pending from the
        // previous run (a restart without a crash), so make it durable now.
        let active = ids.last().copied().unwrap_or(1);
        if ids.last().is_some() {
            disk.sync(&segment_name(active))?;
        }
        let log = Self {
            disk,
            active,
            appended: LogPosition(0),
            durable: LogPosition(0),
        };
        Ok((log, replay))
    }

    /// Appends `mutation` to the active segment; it is pending until [`CommitLog::sync`].
    pub fn append(&mut self, mutation: &Mutation) -> io::Result<LogPosition> {
        let frame = encode_mutation(mutation)?;
        self.disk.append(&segment_name(self.active), &frame)?;
        self.appended = LogPosition(self.appended.0 + 1);
        Ok(self.appended)
    }

    /// Makes every append so far durable; returns the durable position. No disk call when
    /// nothing is pending.
    pub fn sync(&mut self) -> io::Result<LogPosition> {
        if self.durable < self.appended {
            self.disk.sync(&segment_name(self.active))?;
            self.durable = self.appended;
        }
        Ok(self.durable)
    }

    /// After a flush made every row appended so far durable in a sorted table: counts them
    /// durable, starts the next segment and removes the older ones.
    pub fn discard_flushed(&mut self) -> io::Result<LogPosition> {
        self.durable = self.appended;
        self.active += 1;
        for name in self.disk.list()? {
            if segment_id(&name).is_some_and(|id| id < self.active) {
                self.disk.remove(&name)?;
            }
        }
        Ok(self.durable)
    }

    /// The highest position appended.
    pub fn appended(&self) -> LogPosition {
        self.appended
    }

    /// The highest position known durable.
    pub fn durable(&self) -> LogPosition {
        self.durable
    }

    /// The active segment's file name.
    pub fn active_segment(&self) -> String {
        segment_name(self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::disk::SimDisk;
    use crate::ring::{Cell, RangeTombstone, RowKey};

    fn row(message_id: u64) -> Mutation {
        Mutation::Row(Row {
            key: RowKey {
                channel_id: 1,
                bucket: 0,
                message_id,
            },
            cell: Cell {
                write_us: 1,
                value: None,
            },
        })
    }

    #[test]
    fn frames_round_trip_and_stop_at_a_bad_checksum() {
        let mut bytes = encode_frame(b"one").unwrap();
        bytes.extend(encode_frame(b"two").unwrap());
        let first_len = FRAME_HEADER_BYTES + 3;
        assert_eq!(
            decode_frames(&bytes),
            (vec![&b"one"[..], &b"two"[..]], 2 * first_len)
        );

        // Flip a payload byte of the second frame: only the first survives.
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(decode_frames(&bytes), (vec![&b"one"[..]], first_len));
    }

    #[test]
    fn a_frame_that_is_not_a_row_ends_the_good_prefix() {
        let mut bytes = encode_mutation(&row(1)).unwrap();
        let good = bytes.len();
        bytes.extend(encode_frame(b"not json").unwrap());
        bytes.extend(encode_mutation(&row(2)).unwrap());
        let (rows, good_len) = decode_mutations(&bytes);
        assert_eq!(rows, vec![row(1)]);
        assert_eq!(good_len, good);
    }

    #[test]
    fn positions_count_appends_and_sync_makes_them_durable() {
        let disk = SimDisk::new();
        let (mut log, replay) = CommitLog::open(Arc::new(disk.clone())).unwrap();
        assert_eq!(replay, LogReplay::default());
        assert_eq!(log.append(&row(1)).unwrap(), LogPosition(1));
        assert_eq!(log.append(&row(2)).unwrap(), LogPosition(2));
        assert_eq!(log.durable(), LogPosition(0));
        assert_eq!(log.sync().unwrap(), LogPosition(2));
        assert_eq!(disk.pending_bytes(), 0);
    }

    #[test]
    fn discarding_flushed_segments_removes_them_and_starts_the_next() {
        let disk = SimDisk::new();
        let (mut log, _) = CommitLog::open(Arc::new(disk.clone())).unwrap();
        log.append(&row(1)).unwrap();
        assert_eq!(disk.list().unwrap(), vec![segment_name(1)]);

        assert_eq!(log.discard_flushed().unwrap(), LogPosition(1));
        assert!(disk.list().unwrap().is_empty());
        log.append(&row(2)).unwrap();
        assert_eq!(disk.list().unwrap(), vec![segment_name(2)]);

        // A reopen replays only what the removed segment did not hold.
        let (_, replay) = CommitLog::open(Arc::new(disk)).unwrap();
        assert_eq!(replay.mutations, vec![row(2)]);
        assert_eq!(replay.segments, 1);
    }

    #[test]
    fn damage_in_the_middle_refuses_to_open_and_names_the_place() {
        let disk = SimDisk::new();
        let name = segment_name(1);
        let frames: Vec<Vec<u8>> = (1..=3)
            .map(|id| encode_mutation(&row(id)).unwrap())
            .collect();
        for frame in &frames {
            disk.append(&name, frame).unwrap();
        }
        disk.sync(&name).unwrap();

        // Flip a byte inside the second record: the third is intact after it.
        let second_at = frames[0].len();
        disk.write_at(&name, (second_at + 10) as u64, b"\xff")
            .unwrap();
        disk.sync(&name).unwrap();
        let error = CommitLog::open(Arc::new(disk.clone())).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let text = error.to_string();
        assert!(text.contains(&name), "{text}");
        assert!(
            text.contains(&format!("damaged at byte {second_at}")),
            "{text}"
        );

        // Nothing was cut: all three frames' bytes are still there.
        let total: usize = frames.iter().map(Vec::len).sum();
        assert_eq!(disk.read(&name).unwrap().len(), total);
    }

    #[test]
    fn damage_that_runs_to_the_end_is_a_torn_tail_and_is_cut() {
        let disk = SimDisk::new();
        let name = segment_name(1);
        let good = encode_mutation(&row(1)).unwrap();
        disk.append(&name, &good).unwrap();
        disk.append(&name, &encode_mutation(&row(2)).unwrap()[..20])
            .unwrap();
        disk.sync(&name).unwrap();

        let (_, replay) = CommitLog::open(Arc::new(disk.clone())).unwrap();
        assert_eq!(replay.mutations.len(), 1);
        assert_eq!(replay.tail_bytes_discarded, 20);
        assert_eq!(disk.read(&name).unwrap(), good);
    }

    #[test]
    fn a_range_tombstone_and_an_old_row_frame_replay_side_by_side() {
        // A row frame as written before range tombstones existed: the bare row's JSON.
        let Mutation::Row(bare) = row(1) else {
            unreachable!("row() builds a row")
        };
        let mut bytes = encode_frame(&serde_json::to_vec(&bare).unwrap()).unwrap();
        let deletion = Mutation::RangeDelete(RangeTombstone {
            channel_id: 1,
            bucket: 0,
            from: 5,
            to: 9,
            deleted_at_us: 3,
        });
        bytes.extend(encode_mutation(&deletion).unwrap());
        let (mutations, good_len) = decode_mutations(&bytes);
        assert_eq!(mutations, vec![row(1), deletion]);
        assert_eq!(good_len, bytes.len());
    }
}
