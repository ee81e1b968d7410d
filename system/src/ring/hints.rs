//! Hinted handoff: writes a coordinator keeps for a replica that did not acknowledge them.
//!
//! A hint is the original write, a row or a range tombstone ([`Mutation`]), with its original
//! write timestamp, so replaying it is idempotent and can never overwrite newer data. A
//! mutation is framed untagged, as the row or the range tombstone alone, so hint files
//! written before range tombstones existed (rows only) still load. Hints for one target live
//! in one file on the coordinator's disk (`hints-<target>`), framed like the commit log.
//! The hint window bounds how long a target may be down and still collect hints: once it has
//! been down longer, hints stop until it is seen up and goes down again. The down-since times
//! are kept in a file too, so the window survives a restart of the coordinator.
//!
//! Not modelled: throttled delivery, hint file size limits, hints expiring after gc grace.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::engine::commitlog::{decode_mutations, encode_mutation};
use super::Mutation;
use crate::env::disk::Disk;

/// Cassandra's default hint window: 3 hours.
pub const HINT_WINDOW_MS_DEFAULT: i64 = 3 * 60 * 60 * 1000;
const WINDOW_FILE: &str = "hint-window";
const WINDOW_FILE_REWRITE: &str = "hint-window-rewrite";

/// `hints-<ip>-<port>`, with an IPv6 address's colons as underscores (names are flat).
fn hint_file(target: SocketAddr) -> String {
    let ip = target.ip().to_string().replace(':', "_");
    format!("hints-{ip}-{}", target.port())
}

/// A hint is framed as a commit log record is.
fn frame(mutation: &Mutation) -> io::Result<Vec<u8>> {
    encode_mutation(mutation)
}

/// The hints of a file, up to the first damaged record.
fn unframe(bytes: &[u8]) -> Vec<Mutation> {
    decode_mutations(bytes).0
}

/// The hints one coordinator holds.
pub struct HintStore {
    disk: Arc<dyn Disk>,
    window_ms: i64,
    /// Since when (node clock, ms) each target has been seen down.
    down_since_ms: BTreeMap<SocketAddr, i64>,
    /// Hints waiting per target, mirrored in the target's file.
    pending: BTreeMap<SocketAddr, Vec<Mutation>>,
}

impl std::fmt::Debug for HintStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: BTreeMap<_, _> = self.pending.iter().map(|(t, h)| (t, h.len())).collect();
        f.debug_struct("HintStore")
            .field("pending", &counts)
            .finish()
    }
}

impl HintStore {
    /// Loads the hints and the window state kept on `disk`.
    pub fn open(disk: Arc<dyn Disk>, window_ms: i64) -> io::Result<Self> {
        let mut store = Self {
            disk,
            window_ms,
            down_since_ms: BTreeMap::new(),
            pending: BTreeMap::new(),
        };

        // 1. The window state.
        if let Ok(bytes) = store.disk.read(WINDOW_FILE) {
            let saved: Vec<(SocketAddr, i64)> = serde_json::from_slice(&bytes).unwrap_or_default();
            store.down_since_ms = saved.into_iter().collect();
        }

        // 2. The hint files.
        for name in store.disk.list()? {
            let Some(target) = name.strip_prefix("hints-") else {
                continue;
            };
            let Some(addr) = parse_target(target) else {
                continue;
            };
            let rows = unframe(&store.disk.read(&name)?);
            if !rows.is_empty() {
                store.pending.insert(addr, rows);
            }
        }
        pending_gauge().inc_by(count_i64(store.pending_count()));
        Ok(store)
    }

    fn save_window(&self) -> io::Result<()> {
        let saved: Vec<(SocketAddr, i64)> =
            self.down_since_ms.iter().map(|(a, s)| (*a, *s)).collect();
        let bytes = serde_json::to_vec(&saved).map_err(io::Error::other)?;
        self.disk.write_at(WINDOW_FILE_REWRITE, 0, &bytes)?;
        self.disk.sync(WINDOW_FILE_REWRITE)?;
        self.disk.rename(WINDOW_FILE_REWRITE, WINDOW_FILE)
    }

    /// Notes that `target` is down as of `now_ms`, unless it already was.
    pub fn mark_down(&mut self, target: SocketAddr, now_ms: i64) -> io::Result<()> {
        if self.down_since_ms.contains_key(&target) {
            return Ok(());
        }
        self.down_since_ms.insert(target, now_ms);
        self.save_window()
    }

    /// Notes that `target` is up: a later outage starts a new window.
    pub fn mark_up(&mut self, target: SocketAddr) -> io::Result<()> {
        if self.down_since_ms.remove(&target).is_some() {
            self.save_window()?;
        }
        Ok(())
    }

    /// Whether a write that `target` missed at `now_ms` should become a hint. A window of 0
    /// or less turns hinted handoff off.
    pub fn within_window(&self, target: SocketAddr, now_ms: i64) -> bool {
        if self.window_ms <= 0 {
            return false;
        }
        self.down_since_ms
            .get(&target)
            .is_none_or(|since| now_ms - since < self.window_ms)
    }

    /// Stores a hint for `target` if it is within its window; returns whether it did.
    pub fn add(&mut self, target: SocketAddr, row: Mutation, now_ms: i64) -> io::Result<bool> {
        if !self.within_window(target, now_ms) {
            return Ok(false);
        }
        let name = hint_file(target);
        self.disk.append(&name, &frame(&row)?)?;
        self.disk.sync(&name)?;
        self.pending.entry(target).or_default().push(row);
        pending_gauge().inc();
        Ok(true)
    }

    /// The targets that have hints waiting.
    pub fn targets(&self) -> Vec<SocketAddr> {
        self.pending.keys().copied().collect()
    }

    /// The targets that have hints waiting or an open window (were seen down), in order.
    pub fn targets_and_down(&self) -> Vec<SocketAddr> {
        let mut targets: std::collections::BTreeSet<SocketAddr> =
            self.pending.keys().copied().collect();
        targets.extend(self.down_since_ms.keys().copied());
        targets.into_iter().collect()
    }

    /// The hints waiting for `target`, oldest first.
    pub fn hints_for(&self, target: SocketAddr) -> Vec<Mutation> {
        self.pending.get(&target).cloned().unwrap_or_default()
    }

    /// Drops the first `count` hints of `target`, which it has acknowledged.
    pub fn delivered(&mut self, target: SocketAddr, count: usize) -> io::Result<()> {
        let Some(rows) = self.pending.get_mut(&target) else {
            return Ok(());
        };
        let drained = rows.drain(..count.min(rows.len())).count();
        pending_gauge().dec_by(count_i64(drained));
        let name = hint_file(target);
        if rows.is_empty() {
            self.pending.remove(&target);
            return match self.disk.remove(&name) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }

        // Rewrite what is left.
        let mut bytes = Vec::new();
        for row in rows.iter() {
            bytes.extend(frame(row)?);
        }
        let rewrite = format!("{name}-rewrite");
        self.disk.write_at(&rewrite, 0, &bytes)?;
        self.disk.sync(&rewrite)?;
        self.disk.rename(&rewrite, &name)
    }

    /// Hints waiting over all targets.
    pub fn pending_count(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

/// A store that goes away (its node stopped or crashed) takes its hints out of the gauge; the
/// next open of its disk puts back what survived.
impl Drop for HintStore {
    fn drop(&mut self) {
        pending_gauge().dec_by(count_i64(self.pending_count()));
    }
}

fn pending_gauge() -> &'static prometheus_client::metrics::gauge::Gauge {
    &crate::metrics::registry().hints_pending
}

fn count_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn parse_target(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.rsplit_once('-')?;
    let ip: std::net::IpAddr = ip.replace('_', ":").parse().ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::disk::SimDisk;
    use crate::model::StoredMessage;
    use crate::ring::{Cell, RangeTombstone, Row, RowKey};

    fn row(message_id: u64) -> Mutation {
        let value = StoredMessage {
            channel_id: 1,
            message_id,
            guild_id: 1,
            author_id: 1,
            content: "x".into(),
            ..Default::default()
        };
        Mutation::Row(Row {
            key: RowKey {
                channel_id: 1,
                bucket: 0,
                message_id,
            },
            cell: Cell {
                write_us: 7,
                value: Some(value),
            },
        })
    }

    fn target() -> SocketAddr {
        "10.0.1.2:7000".parse().unwrap()
    }

    #[test]
    fn file_names_round_trip_for_v4_and_v6() {
        let v6: SocketAddr = "[::1]:9042".parse().unwrap();
        for addr in [target(), v6] {
            let name = hint_file(addr);
            assert!(!name.contains('/'));
            assert_eq!(
                parse_target(name.strip_prefix("hints-").unwrap()),
                Some(addr)
            );
        }
    }

    #[test]
    fn hints_survive_a_restart_of_the_coordinator_and_are_dropped_once_delivered() {
        let disk = SimDisk::new();
        let mut store = HintStore::open(Arc::new(disk.clone()), 10_000).unwrap();
        assert!(store.add(target(), row(1), 0).unwrap());
        assert!(store.add(target(), row(2), 0).unwrap());
        disk.crash(None);

        let mut store = HintStore::open(Arc::new(disk.clone()), 10_000).unwrap();
        let hints = store.hints_for(target());
        assert_eq!(
            hints,
            vec![row(1), row(2)],
            "the original timestamps are kept"
        );

        store.delivered(target(), 1).unwrap();
        let store = HintStore::open(Arc::new(disk.clone()), 10_000).unwrap();
        assert_eq!(store.pending_count(), 1);
        let mut store = store;
        store.delivered(target(), 1).unwrap();
        assert!(disk
            .list()
            .unwrap()
            .iter()
            .all(|n| !n.starts_with("hints-")));
    }

    #[test]
    fn no_hints_past_the_window_until_the_target_comes_back() {
        let disk = SimDisk::new();
        let mut store = HintStore::open(Arc::new(disk.clone()), 10_000).unwrap();
        store.mark_down(target(), 1_000).unwrap();
        assert!(store.add(target(), row(1), 10_999).unwrap());
        assert!(
            !store.add(target(), row(2), 11_000).unwrap(),
            "10 s after going down"
        );

        // The window state survives a restart.
        disk.crash(None);
        let mut store = HintStore::open(Arc::new(disk), 10_000).unwrap();
        assert!(!store.within_window(target(), 12_000));
        store.mark_up(target()).unwrap();
        store.mark_down(target(), 50_000).unwrap();
        assert!(store.add(target(), row(3), 55_000).unwrap());
    }

    #[test]
    fn a_range_tombstone_hint_loads_beside_a_row_hint_of_the_old_format() {
        let disk = SimDisk::new();
        let Mutation::Row(bare) = row(1) else {
            unreachable!("row() builds a row")
        };

        // 1. A hint file as written before range tombstones: bare rows.
        let payload = serde_json::to_vec(&bare).unwrap();
        let mut old = (payload.len() as u32).to_le_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        old.extend_from_slice(&payload);
        disk.append(&hint_file(target()), &old).unwrap();

        // 2. A range tombstone appended after it; both load back, in order.
        let mut store = HintStore::open(Arc::new(disk.clone()), 10_000).unwrap();
        let deletion = Mutation::RangeDelete(RangeTombstone {
            channel_id: 1,
            bucket: 0,
            from: 1,
            to: 9,
            deleted_at_us: 8,
        });
        assert!(store.add(target(), deletion.clone(), 0).unwrap());
        let store = HintStore::open(Arc::new(disk), 10_000).unwrap();
        assert_eq!(store.hints_for(target()), vec![row(1), deletion]);
    }
}
