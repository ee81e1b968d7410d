//! One replica's storage engine, after Cassandra's: commit log, memtable, sorted tables and
//! size-tiered compaction on the node's [`Disk`].
//!
//! Write path: [`Engine::apply`] appends the row to the commit log, merges it into the
//! memtable under last-write-wins and returns its [`LogPosition`]. When the memtable holds
//! `memtable_rows_max` rows it is flushed to a new sorted table (temp file, sync, rename) and
//! the commit log segments it covers are removed. Read path: [`Engine::read`] merges the
//! memtable and every table under [`Cell::supersedes`] and returns tombstones too, since the
//! coordinator reconciles replicas.
//!
//! Range tombstones ([`Engine::apply_range`]) travel the same path: a commit log frame, a set
//! beside the memtable, a section after the rows of each sorted table. A read returns the
//! range tombstones overlapping the part of the slice it covered and leaves out the rows they
//! shadow, so a page's limit counts only rows that may still be live; compaction drops
//! shadowed rows and purges a range tombstone past gc grace as it does a row tombstone.
//!
//! Durability follows the [`SyncMode`], and a crash loses exactly what it leaves unsynced:
//! - `Batch`: `apply` syncs the log before it returns, so nothing acknowledged is lost.
//! - `Periodic`: `apply` returns at once and the write may be acknowledged at once; a task
//!   running [`run_sync`] syncs the log every period, so a crash loses the writes since the
//!   last sync (up to a period of acknowledged writes, as in Cassandra).
//! - `Group`: the write may be acknowledged only once durable. [`run_sync`] syncs as soon as a
//!   write is pending, then waits a window before the next sync, so the writes arriving in a
//!   window share one sync and nothing acknowledged is lost.
//!
//! A flush also makes durable everything it covers, whatever the mode.
//!
//! A slow device ([`Disk::syncs_done_at`], a slow-sync fault): a sync's bytes are durable when
//! the call returns, but the engine announces them durable only once the device has finished,
//! so nothing waiting on durability (a batch or group write's acknowledgment) goes ahead
//! early. The sync leaves a [`SlowSync`] behind; whoever made it takes it under the same lock
//! ([`Engine::take_slow_sync`]) and passes it to [`wait_out_slow_sync`], which waits on the
//! runtime's clock without the lock, so reads and other writes go on meanwhile, and then
//! announces it. Periodic mode acknowledges at once and so does not slow down.
//!
//! Driving it from async code: the disk calls stay synchronous, inside `&mut self` methods, so
//! the node keeps the engine in a `tokio::sync::Mutex`. It applies under the lock, releases
//! it, then awaits [`DurableWatch::wait_ack`] on a handle taken once from
//! [`Engine::durable_watch`]; waiting needs no lock, so concurrent writes can share a sync.
//! The node runs [`run_sync`] beside its server for as long as it serves, and calls
//! [`Engine::compact`] with its own clock after writes.
//!
//! Not modelled: memory-based flush thresholds (a row count stands in), Cassandra's blocking
//! of writes when periodic syncs lag, commit log archiving, multiple tables per node, and
//! expiring (TTL) cells.
//! TODO(group-visibility): in group mode a row is readable on this replica before it is
//! durable (Cassandra applies it to the memtable only after the sync); applying later needs
//! the flush to keep segments whose rows are not yet in the memtable.

pub mod commitlog;
pub mod compaction;
pub mod sstable;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex, Notify};

use super::{shadowed, Cell, Mutation, PartitionQuery, RangeTombstone, Row, RowKey, Slice};
use crate::env::disk::Disk;
pub use commitlog::LogPosition;
use commitlog::{CommitLog, TEMP_PREFIX};
use compaction::{TableSize, TierPolicy};
use sstable::{table_generation, SsTable};

/// When the commit log is synced, and so when a write may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge at once; sync every `period_ms` (Cassandra's default, 10 s).
    Periodic {
        /// Time between syncs.
        period_ms: u64,
    },
    /// Sync before acknowledging each write.
    Batch,
    /// Acknowledge after a sync; sync at most once per `window_ms`, shared by the writes
    /// that arrived meanwhile.
    Group {
        /// Shortest time between two syncs.
        window_ms: u64,
    },
}

impl Default for SyncMode {
    fn default() -> Self {
        SyncMode::Periodic { period_ms: 10_000 }
    }
}

/// The engine's knobs; [`Default`] gives Cassandra's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Commit log sync mode (`commitlog_sync`, default periodic every 10 s).
    pub sync: SyncMode,
    /// Rows at which the memtable is flushed. Cassandra flushes by memory use; 10 000 rows of
    /// about a kilobyte each stand in for that.
    pub memtable_rows_max: usize,
    /// How long a tombstone must be kept before compaction may purge it (10 days).
    pub gc_grace_seconds: u64,
    /// Fewest similar-size tables worth compacting (4).
    pub compaction_min_threshold: usize,
    /// Most tables one compaction takes (32).
    pub compaction_max_threshold: usize,
    /// Tables under this size share one bucket whatever their ratio (50 MiB).
    pub compaction_min_sstable_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sync: SyncMode::default(),
            memtable_rows_max: 10_000,
            gc_grace_seconds: 864_000,
            compaction_min_threshold: 4,
            compaction_max_threshold: 32,
            compaction_min_sstable_bytes: 50 * 1024 * 1024,
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                what.to_string(),
            ))
        };
        match self.sync {
            SyncMode::Periodic { period_ms: 0 } => return bad("sync period must be positive"),
            SyncMode::Group { window_ms: 0 } => return bad("group window must be positive"),
            _ => {}
        }
        if self.memtable_rows_max == 0 {
            return bad("memtable_rows_max must be positive");
        }
        if self.compaction_min_threshold < 2 {
            return bad("compaction_min_threshold must be at least 2");
        }
        if self.compaction_max_threshold < self.compaction_min_threshold {
            return bad("compaction_max_threshold must be at least compaction_min_threshold");
        }
        Ok(())
    }
}

/// What opening the engine found on its disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// Commit log frames (rows and range tombstones) replayed into the memtable.
    pub rows_replayed: usize,
    /// Bytes after the last good frame of the commit log segments that were cut off.
    pub tail_bytes_discarded: usize,
    /// Commit log segments read.
    pub segments_replayed: usize,
    /// Sorted tables loaded.
    pub sstables_loaded: usize,
    /// Temporary files a crash left behind, removed.
    pub temp_files_removed: usize,
}

/// Counters of the engine's disk work since open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Syncs of the commit log that reached the disk.
    pub log_syncs: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Compactions.
    pub compactions: u64,
    /// Tombstones purged by compaction, range tombstones included.
    pub tombstones_purged: u64,
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// The generations merged (and removed).
    pub inputs: Vec<u64>,
    /// The generation written, if any row survived.
    pub output: Option<u64>,
    /// Rows read from the inputs.
    pub rows_in: usize,
    /// Rows written.
    pub rows_out: usize,
    /// Tombstones older than gc grace dropped.
    pub tombstones_purged: usize,
    /// Range tombstones older than gc grace dropped.
    pub range_tombstones_purged: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DurableState {
    durable: LogPosition,
    /// Set once a sync or flush failed: the engine stops, and waiters get this error.
    failure: Option<String>,
}

/// A handle on how far the commit log is durable, for awaiting it without the engine's lock.
#[derive(Debug, Clone)]
pub struct DurableWatch {
    sync: SyncMode,
    state: watch::Receiver<DurableState>,
}

impl DurableWatch {
    /// The highest position known durable.
    pub fn durable(&self) -> LogPosition {
        self.state.borrow().durable
    }

    /// Waits until the write at `position` is durable.
    pub async fn wait_durable(&self, position: LogPosition) -> io::Result<()> {
        let mut state = self.state.clone();
        let reached = state
            .wait_for(|s| s.durable >= position || s.failure.is_some())
            .await
            .map_err(|_| io::Error::other("engine closed before the write was durable"))?;
        match &reached.failure {
            Some(failure) if reached.durable < position => Err(io::Error::other(failure.clone())),
            _ => Ok(()),
        }
    }

    /// Waits until the write at `position` may be acknowledged: at once in periodic mode,
    /// once durable in batch and group mode.
    pub async fn wait_ack(&self, position: LogPosition) -> io::Result<()> {
        match self.sync {
            SyncMode::Periodic { .. } => Ok(()),
            SyncMode::Batch | SyncMode::Group { .. } => self.wait_durable(position).await,
        }
    }
}

/// A replica's engine.
pub struct Engine {
    disk: Arc<dyn Disk>,
    config: EngineConfig,
    log: CommitLog,
    memtable: BTreeMap<RowKey, Cell>,
    /// The range tombstones written since the last flush.
    memtable_ranges: BTreeSet<RangeTombstone>,
    /// Loaded tables, ascending by generation.
    tables: Vec<SsTable>,
    next_generation: u64,
    durable: watch::Sender<DurableState>,
    /// Woken on each append in group mode, for [`run_sync`].
    pending: Arc<Notify>,
    /// A sync the device is still working off, not yet announced durable.
    slow_sync: Option<SlowSync>,
    /// Whether the tables changed since compaction last found nothing to do.
    compaction_due: bool,
    stats: EngineStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("memtable_rows", &self.memtable.len())
            .field("memtable_ranges", &self.memtable_ranges.len())
            .field("tables", &self.table_generations())
            .field("log", &self.log)
            .finish()
    }
}

/// Merges `cell` into `merged` under last-write-wins.
fn merge_cell<'a>(merged: &mut BTreeMap<RowKey, &'a Cell>, key: RowKey, cell: &'a Cell) {
    let wins = merged.get(&key).is_none_or(|held| cell.supersedes(held));
    if wins {
        merged.insert(key, cell);
    }
}

/// The range tombstones of one partition, as a range of the set's ascending order (which
/// sorts by channel, then bucket).
fn partition_span((channel_id, bucket): (u64, u32)) -> std::ops::RangeInclusive<RangeTombstone> {
    let at = |from, to, deleted_at_us| RangeTombstone {
        channel_id,
        bucket,
        from,
        to,
        deleted_at_us,
    };
    at(0, 0, i64::MIN)..=at(u64::MAX, u64::MAX, i64::MAX)
}

/// The key range a partition slice covers, or `None` if it is empty.
fn slice_bounds(query: &PartitionQuery) -> Option<(RowKey, RowKey)> {
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
    let empty = low > high || query.after == Some(u64::MAX) || query.before == Some(0);
    (!empty).then_some((low, high))
}

impl Engine {
    /// Opens the engine on `disk`: removes temporary files, loads the sorted tables and
    /// replays the commit log into the memtable.
    pub fn open(disk: Arc<dyn Disk>, config: EngineConfig) -> io::Result<(Self, Replay)> {
        config.validate()?;
        let mut replay = Replay::default();

        // 1. Leftovers of a write a crash interrupted.
        for name in disk.list()? {
            if name.starts_with(TEMP_PREFIX) {
                disk.remove(&name)?;
                replay.temp_files_removed += 1;
            }
        }

        // 2. The sorted tables, oldest first.
        let mut tables = Vec::new();
        for name in disk.list()? {
            if table_generation(&name).is_some() {
                tables.push(SsTable::load(&disk, &name)?);
            }
        }
        tables.sort_by_key(SsTable::generation);
        replay.sstables_loaded = tables.len();
        let next_generation = tables.last().map_or(1, |t| t.generation() + 1);

        // 3. The commit log, into the memtable.
        let (log, log_replay) = CommitLog::open(disk.clone())?;
        replay.rows_replayed = log_replay.mutations.len();
        replay.segments_replayed = log_replay.segments;
        replay.tail_bytes_discarded = log_replay.tail_bytes_discarded;
        let (durable, _) = watch::channel(DurableState::default());
        let mut engine = Self {
            disk,
            config,
            log,
            memtable: BTreeMap::new(),
            memtable_ranges: BTreeSet::new(),
            tables,
            next_generation,
            durable,
            pending: Arc::new(Notify::new()),
            slow_sync: None,
            compaction_due: true,
            stats: EngineStats::default(),
        };
        for mutation in log_replay.mutations {
            engine.merge(mutation);
        }

        // 4. A replay can fill the memtable past its limit.
        if engine.memtable_full() {
            engine.flush()?;
        }
        Ok((engine, replay))
    }

    fn merge(&mut self, mutation: Mutation) {
        let row = match mutation {
            Mutation::Row(row) => row,
            Mutation::RangeDelete(tombstone) => {
                self.memtable_ranges.insert(tombstone);
                return;
            }
        };
        match self.memtable.get(&row.key) {
            Some(existing) if !row.cell.supersedes(existing) => {}
            _ => {
                self.memtable.insert(row.key, row.cell);
            }
        }
    }

    /// Whether the memtable holds `memtable_rows_max` rows and range tombstones.
    fn memtable_full(&self) -> bool {
        self.memtable.len() + self.memtable_ranges.len() >= self.config.memtable_rows_max
    }

    /// Records that the write path failed: every later write fails, and so does every wait
    /// for a write not yet durable (Cassandra's `commit_failure_policy: stop`).
    fn fail(&mut self, error: io::Error) -> io::Error {
        let failure = format!("storage engine stopped: {error}");
        tracing::warn!(%error, "engine_failed");
        self.durable.send_modify(|s| s.failure = Some(failure));
        error
    }

    fn check_running(&self) -> io::Result<()> {
        match &self.durable.borrow().failure {
            Some(failure) => Err(io::Error::other(failure.clone())),
            None => Ok(()),
        }
    }

    /// Announces `durable` at once, or, while the device is still working off its syncs, keeps
    /// it as a [`SlowSync`] for whoever made the sync to wait out.
    fn made_durable(&mut self, durable: LogPosition) {
        let Some(done_at) = self.disk.syncs_done_at() else {
            self.publish_durable(durable);
            return;
        };
        let durable = self.slow_sync.map_or(durable, |s| s.durable.max(durable));
        self.slow_sync = Some(SlowSync { durable, done_at });
    }

    /// The sync the device is still working off, if the last disk call left one; the caller
    /// passes it to [`wait_out_slow_sync`].
    pub fn take_slow_sync(&mut self) -> Option<SlowSync> {
        self.slow_sync.take()
    }

    fn publish_durable(&mut self, durable: LogPosition) {
        self.durable.send_if_modified(|s| {
            let advanced = s.durable < durable;
            s.durable = s.durable.max(durable);
            advanced
        });
    }

    /// Logs `row` and applies it; returns its position. In batch mode it is durable on return;
    /// otherwise see [`DurableWatch::wait_ack`]. May flush the memtable.
    pub fn apply(&mut self, row: Row) -> io::Result<LogPosition> {
        self.apply_mutation(Mutation::Row(row))
    }

    /// Logs `tombstone` and applies it, as [`Engine::apply`] does a row.
    pub fn apply_range(&mut self, tombstone: RangeTombstone) -> io::Result<LogPosition> {
        self.apply_mutation(Mutation::RangeDelete(tombstone))
    }

    /// Logs a row or a range tombstone and applies it, as [`Engine::apply`] describes.
    pub fn apply_mutation(&mut self, mutation: Mutation) -> io::Result<LogPosition> {
        self.check_running()?;

        // 1. Log it, durably before returning in batch mode.
        let position = self.log.append(&mutation).map_err(|e| self.fail(e))?;
        match self.config.sync {
            SyncMode::Batch => {
                self.sync()?;
            }
            SyncMode::Group { .. } => self.pending.notify_one(),
            SyncMode::Periodic { .. } => {}
        }

        // 2. Into the memtable, flushed once full.
        self.merge(mutation);
        if self.memtable_full() {
            self.flush()?;
        }
        Ok(position)
    }

    /// Syncs the commit log; returns the durable position. Costs no disk call when every
    /// append is already durable.
    pub fn sync(&mut self) -> io::Result<LogPosition> {
        self.check_running()?;
        if self.log.durable() < self.log.appended() {
            self.stats.log_syncs += 1;
        }
        let durable = self.log.sync().map_err(|e| self.fail(e))?;
        self.made_durable(durable);
        Ok(durable)
    }

    /// A handle for awaiting durability without holding the engine.
    pub fn durable_watch(&self) -> DurableWatch {
        DurableWatch {
            sync: self.config.sync,
            state: self.durable.subscribe(),
        }
    }

    /// Writes the memtable to a new sorted table and drops the commit log segments it covers;
    /// returns the table's generation, or `None` if the memtable was empty.
    pub fn flush(&mut self) -> io::Result<Option<u64>> {
        self.check_running()?;
        if self.memtable.is_empty() && self.memtable_ranges.is_empty() {
            return Ok(None);
        }
        let generation = self.next_generation;
        let rows = self.memtable.iter().map(|(key, cell)| Row {
            key: *key,
            cell: cell.clone(),
        });
        let ranges = self.memtable_ranges.iter().copied().collect();
        let table = SsTable::write(&self.disk, generation, rows.collect(), ranges)
            .map_err(|e| self.fail(e))?;
        tracing::debug!(
            generation,
            rows = self.memtable.len(),
            range_tombstones = self.memtable_ranges.len(),
            "memtable_flushed"
        );

        self.next_generation += 1;
        self.tables.push(table);
        self.memtable.clear();
        self.memtable_ranges.clear();
        let durable = self.log.discard_flushed().map_err(|e| self.fail(e))?;
        self.made_durable(durable);
        self.stats.flushes += 1;
        self.compaction_due = true;
        Ok(Some(generation))
    }

    fn tier_policy(&self) -> TierPolicy {
        TierPolicy {
            min_threshold: self.config.compaction_min_threshold,
            max_threshold: self.config.compaction_max_threshold,
            min_sstable_bytes: self.config.compaction_min_sstable_bytes,
        }
    }

    /// Runs one size-tiered compaction if a bucket qualifies, purging tombstones older than
    /// gc grace at `now_us` (the node's clock, µs since the Unix epoch) where that is safe.
    pub fn compact(&mut self, now_us: i64) -> io::Result<Option<CompactionReport>> {
        self.check_running()?;
        if !self.compaction_due {
            return Ok(None);
        }

        // 1. Pick the bucket.
        let sizes: Vec<TableSize> = self
            .tables
            .iter()
            .map(|t| TableSize {
                generation: t.generation(),
                bytes: t.bytes,
            })
            .collect();
        let Some(chosen) = compaction::pick(&sizes, self.tier_policy()) else {
            self.compaction_due = false;
            return Ok(None);
        };

        // 2. Merge it; a tombstone shadowing an older cell outside the bucket must stay.
        let grace_us = i64::try_from(self.config.gc_grace_seconds.saturating_mul(1_000_000));
        let purge_before_us = now_us.saturating_sub(grace_us.unwrap_or(i64::MAX));
        let (inputs, outside): (Vec<&SsTable>, Vec<&SsTable>) = self
            .tables
            .iter()
            .partition(|t| chosen.contains(&t.generation()));
        let memtable = &self.memtable;
        let older_outside = |low: RowKey, high: RowKey, write_us: i64| {
            let older = |cell: &Cell| cell.write_us <= write_us;
            memtable.range(low..=high).any(|(_, cell)| older(cell))
                || outside
                    .iter()
                    .any(|t| t.range(low, high).iter().any(|row| older(&row.cell)))
        };
        let merged = compaction::merge(&inputs, purge_before_us, older_outside);

        // 3. Write the result, then drop the inputs.
        self.finish_compaction(chosen, merged)
            .map(Some)
            .map_err(|e| self.fail(e))
    }

    fn finish_compaction(
        &mut self,
        inputs: Vec<u64>,
        merged: compaction::Merged,
    ) -> io::Result<CompactionReport> {
        let rows_out = merged.rows.len();
        let output = if merged.rows.is_empty() && merged.range_tombstones.is_empty() {
            None
        } else {
            let generation = self.next_generation;
            let table =
                SsTable::write(&self.disk, generation, merged.rows, merged.range_tombstones)?;
            self.tables.push(table);
            self.next_generation += 1;
            Some(generation)
        };
        for table in self
            .tables
            .iter()
            .filter(|t| inputs.contains(&t.generation()))
        {
            self.disk.remove(&table.name())?;
        }
        self.tables.retain(|t| !inputs.contains(&t.generation()));

        self.stats.compactions += 1;
        let purged = merged.tombstones_purged + merged.range_tombstones_purged;
        self.stats.tombstones_purged += purged as u64;
        self.compaction_due = true;
        tracing::debug!(
            ?inputs,
            ?output,
            rows_out,
            purged = merged.tombstones_purged,
            range_tombstones_purged = merged.range_tombstones_purged,
            "compacted"
        );
        Ok(CompactionReport {
            inputs,
            output,
            rows_in: merged.rows_in,
            rows_out,
            tombstones_purged: merged.tombstones_purged,
            range_tombstones_purged: merged.range_tombstones_purged,
        })
    }

    /// The range tombstones of the memtable and every table overlapping `low..=high`.
    fn ranges_overlapping(&self, low: RowKey, high: RowKey) -> BTreeSet<RangeTombstone> {
        let tables = self.tables.iter().flat_map(|t| t.range_tombstones().iter());
        self.memtable_ranges
            .iter()
            .chain(tables)
            .filter(|t| t.overlaps(low, high))
            .copied()
            .collect()
    }

    /// The winner per key in `low..=high` over the memtable and every table, leaving out the
    /// cells `ranges` shadow, and taking at most `limit` of the highest remaining keys from
    /// each source (enough for the merged slice's `limit`).
    fn merged(
        &self,
        low: RowKey,
        high: RowKey,
        limit: usize,
        ranges: &BTreeSet<RangeTombstone>,
    ) -> BTreeMap<RowKey, &Cell> {
        let dead = |key: &RowKey, cell: &Cell| ranges.iter().any(|t| t.deletes(key, cell.write_us));
        let mut merged = BTreeMap::new();
        let memtable = self.memtable.range(low..=high).rev();
        for (key, cell) in memtable.filter(|(k, c)| !dead(k, c)).take(limit) {
            merge_cell(&mut merged, *key, cell);
        }
        for table in self.tables.iter().rev() {
            let rows = table.range(low, high).iter().rev();
            for row in rows.filter(|r| !dead(&r.key, &r.cell)).take(limit) {
                merge_cell(&mut merged, row.key, &row.cell);
            }
        }
        merged
    }

    /// One partition slice, newest first: the rows no range tombstone shadows, tombstones
    /// included (the coordinator needs them to reconcile replicas), and the range tombstones
    /// overlapping the part of the slice the rows cover (all of it, unless the page is full;
    /// then from the oldest row returned up).
    pub fn read(&self, query: &PartitionQuery) -> Slice {
        let Some((low, high)) = slice_bounds(query) else {
            return Slice::default();
        };
        let ranges = self.ranges_overlapping(low, high);
        let rows: Vec<Row> = self
            .merged(low, high, query.limit, &ranges)
            .into_iter()
            .rev()
            .take(query.limit)
            .map(|(key, cell)| Row {
                key,
                cell: cell.clone(),
            })
            .collect();
        let covered_low = match rows.last() {
            Some(oldest) if rows.len() >= query.limit => oldest.key,
            _ => low,
        };
        let range_tombstones = ranges
            .into_iter()
            .filter(|t| t.overlaps(covered_low, high))
            .collect();
        Slice {
            rows,
            range_tombstones,
        }
    }

    /// Every row this replica holds that no range tombstone shadows, live or tombstone,
    /// merged, in key order (for convergence checks and Merkle trees).
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        let low = RowKey {
            channel_id: 0,
            bucket: 0,
            message_id: 0,
        };
        let high = RowKey {
            channel_id: u64::MAX,
            bucket: u32::MAX,
            message_id: u64::MAX,
        };
        let ranges = self.range_tombstones();
        let merged: Vec<Row> = self
            .merged(low, high, usize::MAX, &BTreeSet::new())
            .into_iter()
            .map(|(key, cell)| Row {
                key,
                cell: cell.clone(),
            })
            .collect();
        merged.into_iter().filter(move |row| {
            let partition = (row.key.channel_id, row.key.bucket);
            !shadowed(row, ranges.range(partition_span(partition)))
        })
    }

    /// Every range tombstone this replica holds, ascending, each once.
    pub fn range_tombstones(&self) -> BTreeSet<RangeTombstone> {
        let tables = self.tables.iter().flat_map(|t| t.range_tombstones().iter());
        self.memtable_ranges.iter().chain(tables).copied().collect()
    }

    /// The configuration the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The generations of the loaded tables, ascending.
    pub fn table_generations(&self) -> Vec<u64> {
        self.tables.iter().map(SsTable::generation).collect()
    }

    /// Rows in the memtable.
    pub fn memtable_rows(&self) -> usize {
        self.memtable.len()
    }

    /// Counters since open.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }
}

/// A sync whose bytes are on the disk while the device still works it off: durable up to
/// `durable` once `done_at` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowSync {
    /// The log position the sync covers.
    pub durable: LogPosition,
    /// When the device is done with it, on the runtime's clock.
    pub done_at: tokio::time::Instant,
}

/// Waits until the device has finished `slow` (without holding the engine), then announces
/// its position durable; nothing to do for `None`.
pub async fn wait_out_slow_sync(engine: &Mutex<Engine>, slow: Option<SlowSync>) {
    let Some(slow) = slow else { return };
    tokio::time::sleep_until(slow.done_at).await;
    engine.lock().await.publish_durable(slow.durable);
}

/// Drives the commit log's syncs for the engine's mode; the node runs it beside its server.
/// In batch mode there is nothing to drive and it never returns; otherwise it returns only
/// when a sync fails, after which the engine refuses writes.
pub async fn run_sync(engine: Arc<Mutex<Engine>>) -> io::Result<()> {
    let (sync, pending) = {
        let engine = engine.lock().await;
        (engine.config.sync, engine.pending.clone())
    };
    match sync {
        SyncMode::Batch => std::future::pending().await,
        SyncMode::Periodic { period_ms } => loop {
            tokio::time::sleep(Duration::from_millis(period_ms)).await;
            let slow = synced(&engine).await?;
            wait_out_slow_sync(&engine, slow).await;
        },
        SyncMode::Group { window_ms } => loop {
            // 1. Wait for a write that is not yet durable.
            pending.notified().await;

            // 2. Sync it, with every write that arrived meanwhile, as slowly as the device is.
            let slow = synced(&engine).await?;
            wait_out_slow_sync(&engine, slow).await;

            // 3. Hold the next sync off for a window; the writes arriving meanwhile share it.
            tokio::time::sleep(Duration::from_millis(window_ms)).await;
        },
    }
}

/// Syncs the engine's log; the sync the device still works off, if any.
async fn synced(engine: &Mutex<Engine>) -> io::Result<Option<SlowSync>> {
    let mut engine = engine.lock().await;
    engine.sync()?;
    Ok(engine.take_slow_sync())
}

#[cfg(test)]
mod tests {
    use super::commitlog::{encode_row, segment_name, TEMP_PREFIX};
    use super::sstable::table_name;
    use super::*;
    use crate::env::disk::{CrashLoss, SimDisk};
    use crate::model::StoredMessage;

    const BATCH: SyncMode = SyncMode::Batch;
    const PERIODIC: SyncMode = SyncMode::Periodic { period_ms: 10_000 };
    const GROUP: SyncMode = SyncMode::Group { window_ms: 1_000 };
    const DAY_US: i64 = 86_400 * 1_000_000;
    /// 2023-11-14, as the node's clock would give it.
    const NOW_US: i64 = 1_700_000_000 * 1_000_000;
    /// A "now" long before any tombstone in these tests is past gc grace.
    const EARLY_US: i64 = 1_000;

    fn key(message_id: u64) -> RowKey {
        RowKey {
            channel_id: 9,
            bucket: 0,
            message_id,
        }
    }

    fn live(message_id: u64, write_us: i64, content: &str) -> Row {
        let value = StoredMessage {
            channel_id: 9,
            message_id,
            guild_id: 1,
            author_id: 1,
            content: content.into(),
            ..Default::default()
        };
        Row {
            key: key(message_id),
            cell: Cell {
                write_us,
                value: Some(value),
            },
        }
    }

    fn tombstone(message_id: u64, write_us: i64) -> Row {
        Row {
            key: key(message_id),
            cell: Cell {
                write_us,
                value: None,
            },
        }
    }

    fn range(from: u64, to: u64, deleted_at_us: i64) -> RangeTombstone {
        RangeTombstone {
            channel_id: 9,
            bucket: 0,
            from,
            to,
            deleted_at_us,
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

    /// Rows as (id, write time, content, or "-" for a tombstone).
    fn summary(rows: impl IntoIterator<Item = Row>) -> Vec<(u64, i64, String)> {
        rows.into_iter()
            .map(|r| {
                let content = r.cell.value.map_or_else(|| "-".to_string(), |v| v.content);
                (r.key.message_id, r.cell.write_us, content)
            })
            .collect()
    }

    fn expect(rows: &[(u64, i64, &str)]) -> Vec<(u64, i64, String)> {
        rows.iter()
            .map(|(id, write_us, content)| (*id, *write_us, content.to_string()))
            .collect()
    }

    fn ids(rows: impl IntoIterator<Item = Row>) -> Vec<u64> {
        rows.into_iter().map(|r| r.key.message_id).collect()
    }

    fn config(sync: SyncMode) -> EngineConfig {
        EngineConfig {
            sync,
            memtable_rows_max: 1_000,
            ..EngineConfig::default()
        }
    }

    fn open(disk: &SimDisk, config: EngineConfig) -> (Engine, Replay) {
        Engine::open(Arc::new(disk.clone()), config).unwrap()
    }

    fn apply_all(engine: &mut Engine, rows: impl IntoIterator<Item = Row>) {
        for row in rows {
            engine.apply(row).unwrap();
        }
    }

    #[test]
    fn defaults_are_cassandras_and_nonsense_is_refused() {
        let config = EngineConfig::default();
        assert_eq!(config.sync, SyncMode::Periodic { period_ms: 10_000 });
        assert_eq!(config.gc_grace_seconds, 864_000);
        assert_eq!(config.compaction_min_threshold, 4);
        assert_eq!(config.compaction_max_threshold, 32);
        assert_eq!(config.compaction_min_sstable_bytes, 50 * 1024 * 1024);

        let no_memtable = EngineConfig {
            memtable_rows_max: 0,
            ..config
        };
        let error = Engine::open(Arc::new(SimDisk::new()), no_memtable).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn reads_newest_first_within_bounds() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        apply_all(&mut engine, (1..=5).map(|id| live(id, 1, "m")));
        assert_eq!(ids(engine.read(&query(None, None, 3)).rows), vec![5, 4, 3]);
        assert_eq!(
            ids(engine.read(&query(Some(4), Some(1), 10)).rows),
            vec![3, 2]
        );
        assert!(engine.read(&query(Some(1), Some(1), 10)).rows.is_empty());
        assert!(engine.read(&query(Some(0), None, 10)).rows.is_empty());
        assert!(engine
            .read(&query(None, Some(u64::MAX), 10))
            .rows
            .is_empty());
    }

    #[test]
    fn an_older_write_does_not_overwrite_a_newer_one() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        engine.apply(live(1, 10, "newer")).unwrap();
        engine.apply(live(1, 5, "older")).unwrap();
        let rows = engine.read(&query(None, None, 10)).rows;
        assert_eq!(summary(rows), expect(&[(1, 10, "newer")]));
    }

    #[test]
    fn batch_mode_loses_nothing_acknowledged() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(BATCH));
        let watch = engine.durable_watch();
        for id in 1..=3 {
            let position = engine.apply(live(id, 1, "m")).unwrap();
            assert_eq!(position, LogPosition(id));
            assert_eq!(watch.durable(), position, "durable before apply returns");
        }
        assert_eq!(engine.stats().log_syncs, 3);
        drop(engine);

        assert_eq!(disk.crash(Some(1)), CrashLoss::default());
        let (engine, replay) = open(&disk, config(BATCH));
        assert_eq!(replay.rows_replayed, 3);
        assert_eq!(ids(engine.rows()), vec![1, 2, 3]);
    }

    #[test]
    fn periodic_mode_loses_exactly_the_writes_since_the_last_sync() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(PERIODIC));
        apply_all(&mut engine, [live(1, 1, "a"), live(2, 1, "b")]);
        assert_eq!(engine.sync().unwrap(), LogPosition(2));
        apply_all(&mut engine, (3..=5).map(|id| live(id, 1, "c")));
        assert_eq!(engine.durable_watch().durable(), LogPosition(2));
        drop(engine);

        assert_eq!(disk.crash(None).writes_dropped, 3);
        let (engine, replay) = open(&disk, config(PERIODIC));
        assert_eq!(replay.rows_replayed, 2);
        assert_eq!(ids(engine.rows()), vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_periodic_task_syncs_once_a_period_while_writes_are_acknowledged_at_once() {
        let disk = SimDisk::new();
        let (engine, _) = open(&disk, config(PERIODIC));
        let watch = engine.durable_watch();
        let engine = Arc::new(Mutex::new(engine));
        let syncer = tokio::spawn(run_sync(engine.clone()));

        // 1. t = 0: acknowledged at once, durable only at the end of the period.
        let first = engine.lock().await.apply(live(1, 1, "a")).unwrap();
        watch.wait_ack(first).await.unwrap();
        assert_eq!(watch.durable(), LogPosition(0));

        // 2. t = 10.001 s: the first period's sync covered it; the next write is acked at once.
        tokio::time::sleep(Duration::from_millis(10_001)).await;
        assert_eq!(watch.durable(), first);
        let second = engine.lock().await.apply(live(2, 1, "b")).unwrap();
        watch.wait_ack(second).await.unwrap();

        // 3. t = 15 s: a crash before the second period ends loses the second write only.
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        syncer.abort();
        assert_eq!(engine.lock().await.stats().log_syncs, 1);
        assert_eq!(disk.crash(None).writes_dropped, 1);
        let (reopened, _) = open(&disk, config(PERIODIC));
        assert_eq!(ids(reopened.rows()), vec![1]);
    }

    /// `elapsed` is `expected_ms` (the simulator's clock also moves a few ns per poll).
    fn assert_near(elapsed: Duration, expected_ms: u64) {
        let expected = Duration::from_millis(expected_ms);
        assert!(
            elapsed >= expected && elapsed - expected < Duration::from_millis(1),
            "{elapsed:?}, expected {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_device_holds_batch_acknowledgments_back_one_delay_per_sync() {
        let disk = SimDisk::new();
        let (engine, _) = open(&disk, config(BATCH));
        let watch = engine.durable_watch();
        let engine = Arc::new(Mutex::new(engine));
        disk.set_sync_delay(Duration::from_millis(200));
        let start = tokio::time::Instant::now();

        // 1. Two writes at once: both on the disk, neither announced durable yet.
        let (first, first_slow) = {
            let mut engine = engine.lock().await;
            (
                engine.apply(live(1, 1, "a")).unwrap(),
                engine.take_slow_sync(),
            )
        };
        let (second, second_slow) = {
            let mut engine = engine.lock().await;
            (
                engine.apply(live(2, 1, "b")).unwrap(),
                engine.take_slow_sync(),
            )
        };
        assert_eq!(disk.pending_bytes(), 0);
        assert_eq!(watch.durable(), LogPosition(0));
        assert_eq!(
            first_slow.map(|s| s.done_at - start),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            second_slow.map(|s| s.done_at - start),
            Some(Duration::from_millis(400))
        );

        // 2. Each is acknowledged when the device has finished its sync, the second a delay
        //    after the first.
        wait_out_slow_sync(&engine, first_slow).await;
        watch.wait_ack(first).await.unwrap();
        assert_near(start.elapsed(), 200);
        assert_eq!(watch.durable(), first);
        wait_out_slow_sync(&engine, second_slow).await;
        watch.wait_ack(second).await.unwrap();
        assert_near(start.elapsed(), 400);

        // 3. Healed, a write is durable and announced on return.
        disk.set_sync_delay(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut engine = engine.lock().await;
        let third = engine.apply(live(3, 1, "c")).unwrap();
        assert_eq!(engine.take_slow_sync(), None);
        assert_eq!(watch.durable(), third);
    }

    #[tokio::test(start_paused = true)]
    async fn group_mode_on_a_slow_device_acknowledges_when_the_device_is_done() {
        let disk = SimDisk::new();
        let (engine, _) = open(&disk, config(GROUP));
        let watch = engine.durable_watch();
        let engine = Arc::new(Mutex::new(engine));
        let syncer = tokio::spawn(run_sync(engine.clone()));
        disk.set_sync_delay(Duration::from_millis(300));
        let start = tokio::time::Instant::now();

        let first = engine.lock().await.apply(live(1, 1, "a")).unwrap();
        watch.wait_ack(first).await.unwrap();
        assert_near(start.elapsed(), 300);
        syncer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn group_mode_acknowledges_after_a_sync_the_window_shares() {
        let disk = SimDisk::new();
        let (engine, _) = open(&disk, config(GROUP));
        let watch = engine.durable_watch();
        let engine = Arc::new(Mutex::new(engine));
        let syncer = tokio::spawn(run_sync(engine.clone()));

        // 1. A lone write after a quiet window is synced at once.
        let first = engine.lock().await.apply(live(1, 1, "a")).unwrap();
        watch.wait_ack(first).await.unwrap();
        assert_eq!(engine.lock().await.stats().log_syncs, 1);

        // 2. Two writes inside the window wait for its end: unsynced, so unacknowledged.
        let second = engine.lock().await.apply(live(2, 1, "b")).unwrap();
        let third = engine.lock().await.apply(live(3, 1, "c")).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(500), watch.wait_ack(second)).await;
        assert!(early.is_err(), "acknowledged before the window ended");
        assert!(disk.pending_bytes() > 0);

        // 3. At t = 1 s one sync covers both.
        let late = tokio::time::timeout(Duration::from_millis(600), watch.wait_ack(second)).await;
        assert!(late.is_ok(), "still unacknowledged after the window");
        watch.wait_ack(third).await.unwrap();
        assert_eq!(engine.lock().await.stats().log_syncs, 2);

        // 4. A crash loses nothing acknowledged.
        syncer.abort();
        assert_eq!(disk.crash(None), CrashLoss::default());
        let (reopened, _) = open(&disk, config(GROUP));
        assert_eq!(ids(reopened.rows()), vec![1, 2, 3]);
    }

    #[test]
    fn a_torn_tail_is_discarded_and_cut_off() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(BATCH));
        engine.apply(live(1, 1, "a")).unwrap();
        let segment = engine.log.active_segment();
        let good_len = disk.read(&segment).unwrap().len();
        drop(engine);

        // 1. A second frame, torn halfway by a crash.
        let frame = encode_row(&live(2, 1, "b")).unwrap();
        disk.append(&segment, &frame).unwrap();
        disk.crash(Some(frame.len() / 2));
        let (mut engine, replay) = open(&disk, config(BATCH));
        assert_eq!(replay.rows_replayed, 1);
        assert_eq!(replay.tail_bytes_discarded, frame.len() / 2);
        assert_eq!(disk.read(&segment).unwrap().len(), good_len);

        // 2. Appends after the cut replay again.
        engine.apply(live(3, 1, "c")).unwrap();
        drop(engine);
        let (engine, replay) = open(&disk, config(BATCH));
        assert_eq!(replay.rows_replayed, 2);
        assert_eq!(ids(engine.rows()), vec![1, 3]);
    }

    #[test]
    fn a_periodic_crash_that_tears_the_last_write_loses_every_unsynced_one() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(PERIODIC));
        engine.apply(live(1, 1, "a")).unwrap();
        engine.sync().unwrap();
        let lost = [live(2, 1, "b"), live(3, 1, "c")];
        let lost_len: Vec<usize> = lost.iter().map(|r| encode_row(r).unwrap().len()).collect();
        apply_all(&mut engine, lost);
        drop(engine);

        // The second write is dropped (a zero-filled gap), ten bytes of the third are kept.
        disk.crash(Some(10));
        let (engine, replay) = open(&disk, config(PERIODIC));
        assert_eq!(replay.rows_replayed, 1);
        assert_eq!(replay.tail_bytes_discarded, lost_len[0] + 10);
        assert_eq!(ids(engine.rows()), vec![1]);
    }

    #[test]
    fn a_flushed_memtable_reads_the_same_after_a_crash_and_reopen() {
        let disk = SimDisk::new();
        let small = EngineConfig {
            memtable_rows_max: 3,
            ..config(BATCH)
        };
        let (mut engine, _) = open(&disk, small);
        apply_all(&mut engine, (1..=5).map(|id| live(id, id as i64, "m")));

        // 1. The third write filled the memtable: table 1 holds ids 1..=3, segment 2 ids 4, 5.
        assert_eq!(engine.table_generations(), vec![1]);
        assert_eq!(engine.memtable_rows(), 2);
        assert_eq!(disk.list().unwrap(), vec![segment_name(2), table_name(1)]);
        let all = summary(engine.rows());
        let slice = summary(engine.read(&query(Some(5), Some(1), 2)).rows);
        assert_eq!(slice, expect(&[(4, 4, "m"), (3, 3, "m")]));
        drop(engine);

        // 2. The same after a crash.
        disk.crash(None);
        let (engine, replay) = open(&disk, small);
        let expected = Replay {
            rows_replayed: 2,
            tail_bytes_discarded: 0,
            segments_replayed: 1,
            sstables_loaded: 1,
            temp_files_removed: 0,
        };
        assert_eq!(replay, expected);
        assert_eq!(summary(engine.rows()), all);
        assert_eq!(
            summary(engine.read(&query(Some(5), Some(1), 2)).rows),
            slice
        );
    }

    #[test]
    fn a_flush_makes_the_rows_it_covers_durable_in_periodic_mode() {
        let disk = SimDisk::new();
        let small = EngineConfig {
            memtable_rows_max: 3,
            ..config(PERIODIC)
        };
        let (mut engine, _) = open(&disk, small);
        apply_all(&mut engine, (1..=4).map(|id| live(id, 1, "m")));
        assert_eq!(engine.durable_watch().durable(), LogPosition(3));
        assert_eq!(engine.stats().log_syncs, 0);
        drop(engine);

        assert_eq!(disk.crash(None).writes_dropped, 1);
        let (engine, _) = open(&disk, small);
        assert_eq!(ids(engine.rows()), vec![1, 2, 3]);
    }

    #[test]
    fn a_table_write_a_crash_cut_short_leaves_nothing_behind() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(BATCH));
        engine.apply(live(1, 1, "a")).unwrap();
        drop(engine);

        // A crash while the next table was being written keeps three bytes of it.
        let temp = format!("{TEMP_PREFIX}{}", table_name(1));
        disk.append(&temp, b"partial table").unwrap();
        disk.crash(Some(3));
        let (engine, replay) = open(&disk, config(BATCH));
        assert_eq!(replay.temp_files_removed, 1);
        assert_eq!(replay.sstables_loaded, 0);
        assert!(!disk.list().unwrap().contains(&temp));
        assert_eq!(ids(engine.rows()), vec![1]);
    }

    #[test]
    fn reads_across_the_memtable_and_tables_pick_the_lww_winner() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));

        // 1. Table 1, table 2, then the memtable, with overlapping keys.
        apply_all(
            &mut engine,
            [live(1, 10, "t1"), live(2, 50, "t1"), live(3, 5, "t1")],
        );
        engine.flush().unwrap();
        apply_all(
            &mut engine,
            [live(1, 30, "t2"), tombstone(2, 40), live(4, 7, "t2")],
        );
        engine.flush().unwrap();
        apply_all(
            &mut engine,
            [live(1, 20, "mem"), tombstone(3, 5), live(4, 7, "t3")],
        );
        assert_eq!(engine.table_generations(), vec![1, 2]);

        // 2. Key 1: the latest write (table 2); key 2: the live cell written after the
        // tombstone; key 3: the tombstone wins its tie; key 4: the greater value wins its tie.
        let winners = expect(&[(4, 7, "t3"), (3, 5, "-"), (2, 50, "t1"), (1, 30, "t2")]);
        assert_eq!(summary(engine.read(&query(None, None, 10)).rows), winners);
        assert_eq!(
            summary(engine.read(&query(None, None, 2)).rows),
            winners[..2]
        );
        assert_eq!(
            summary(engine.read(&query(Some(4), Some(1), 10)).rows),
            winners[1..3]
        );
        let ascending: Vec<_> = winners.iter().rev().cloned().collect();
        assert_eq!(summary(engine.rows()), ascending);
    }

    #[test]
    fn compaction_merges_four_tables_and_keeps_the_winners() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(BATCH));
        let tables = [
            vec![live(1, 10, "t1"), live(2, 10, "only")],
            vec![live(1, 40, "t2"), live(3, 40, "only")],
            vec![live(1, 20, "t3"), tombstone(2, 25), live(4, 20, "only")],
            vec![live(1, 30, "t4"), live(5, 30, "only")],
        ];
        for rows in tables {
            apply_all(&mut engine, rows);
            engine.flush().unwrap();
        }
        let merged_before = summary(engine.rows());

        // 1. The four small tables share a bucket; nothing is old enough to purge.
        let report = engine.compact(EARLY_US).unwrap().unwrap();
        let expected = CompactionReport {
            inputs: vec![1, 2, 3, 4],
            output: Some(5),
            rows_in: 9,
            rows_out: 5,
            tombstones_purged: 0,
            range_tombstones_purged: 0,
        };
        assert_eq!(report, expected);
        assert_eq!(engine.table_generations(), vec![5]);
        assert_eq!(disk.list().unwrap(), vec![table_name(5)]);

        // 2. The winners are those the tables gave before, and survive a reopen.
        let winners = expect(&[
            (1, 40, "t2"),
            (2, 25, "-"),
            (3, 40, "only"),
            (4, 20, "only"),
            (5, 30, "only"),
        ]);
        assert_eq!(merged_before, winners);
        assert_eq!(summary(engine.rows()), winners);
        assert_eq!(engine.compact(EARLY_US).unwrap(), None);
        drop(engine);
        let (engine, _) = open(&disk, config(BATCH));
        assert_eq!(summary(engine.rows()), winners);
    }

    #[test]
    fn compaction_purges_a_tombstone_older_than_gc_grace_and_keeps_a_younger_one() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        let grace_us = 864_000 * 1_000_000;
        let past_grace = NOW_US - grace_us - 1;
        let at_grace = NOW_US - grace_us;
        let nine_days_ago = NOW_US - 9 * DAY_US;
        let tables = [
            vec![
                live(1, past_grace - 1, "old"),
                live(2, nine_days_ago - 1, "young"),
            ],
            vec![tombstone(1, past_grace)],
            vec![tombstone(2, nine_days_ago)],
            vec![live(3, NOW_US, "now"), tombstone(4, at_grace)],
        ];
        for rows in tables {
            apply_all(&mut engine, rows);
            engine.flush().unwrap();
        }

        // Key 1's tombstone is past gc grace and goes with the value it deleted; key 2's is
        // younger and key 4's exactly gc grace old, so both stay.
        let report = engine.compact(NOW_US).unwrap().unwrap();
        assert_eq!((report.rows_in, report.rows_out), (6, 3));
        assert_eq!(report.tombstones_purged, 1);
        let kept = expect(&[
            (2, nine_days_ago, "-"),
            (3, NOW_US, "now"),
            (4, at_grace, "-"),
        ]);
        assert_eq!(summary(engine.rows()), kept);
        assert!(engine.read(&query(Some(2), None, 10)).rows.is_empty());
        assert_eq!(engine.stats().tombstones_purged, 1);
    }

    #[test]
    fn an_old_tombstone_stays_while_the_memtable_holds_older_data_for_its_key() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        let old = NOW_US - 11 * DAY_US;
        for id in 1..=4 {
            engine.apply(tombstone(id, old)).unwrap();
            engine.flush().unwrap();
        }

        // A late copy of key 1's value, written before the deletion (as a hint or a repair
        // would bring it), and a write to key 2 after it.
        apply_all(
            &mut engine,
            [live(1, old - 1, "late"), live(2, old + 1, "newer")],
        );

        // Key 1's tombstone must stay or the late value would come back; key 2's may go,
        // since the newer write wins anyway; keys 3 and 4 shadow nothing.
        let report = engine.compact(NOW_US).unwrap().unwrap();
        assert_eq!(report.tombstones_purged, 3);
        let rows = expect(&[(1, old, "-"), (2, old + 1, "newer")]);
        assert_eq!(summary(engine.rows()), rows);
    }

    #[test]
    fn an_old_tombstone_stays_while_another_table_holds_older_data_for_its_key() {
        let tiered = EngineConfig {
            compaction_min_sstable_bytes: 0,
            ..config(BATCH)
        };
        let (mut engine, _) = open(&SimDisk::new(), tiered);
        let old = NOW_US - 11 * DAY_US;

        // 1. A large table holding key 1's value, then four small ones of tombstones.
        apply_all(&mut engine, (1..=20).map(|id| live(id, old - 1, "value")));
        engine.flush().unwrap();
        for id in 1..=4 {
            engine.apply(tombstone(id, old)).unwrap();
            engine.flush().unwrap();
        }

        // 2. Only the small tables are of a size; the large one keeps all four tombstones.
        let report = engine.compact(NOW_US).unwrap().unwrap();
        assert_eq!(report.inputs, vec![2, 3, 4, 5]);
        assert_eq!(report.tombstones_purged, 0);
        assert_eq!(engine.table_generations(), vec![1, 6]);
        let deleted = ids(engine.rows().filter(|r| r.cell.value.is_none()));
        assert_eq!(deleted, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_write_at_the_tombstones_timestamp_stays_deleted() {
        let pairs = EngineConfig {
            compaction_min_threshold: 2,
            ..config(BATCH)
        };
        let (mut engine, _) = open(&SimDisk::new(), pairs);

        // 1. Key 1: the deletion is in a table when the write arrives; key 2: the other way
        // round, within the memtable.
        engine.apply(tombstone(1, 100)).unwrap();
        engine.flush().unwrap();
        apply_all(
            &mut engine,
            [live(1, 100, "again"), live(2, 100, "x"), tombstone(2, 100)],
        );
        let deleted = expect(&[(2, 100, "-"), (1, 100, "-")]);
        assert_eq!(summary(engine.read(&query(None, None, 10)).rows), deleted);

        // 2. Still so once the live cell is flushed and compacted with the tombstone.
        engine.flush().unwrap();
        let report = engine.compact(EARLY_US).unwrap().unwrap();
        assert_eq!(report.inputs, vec![1, 2]);
        assert_eq!(summary(engine.read(&query(None, None, 10)).rows), deleted);
    }

    #[test]
    fn a_range_tombstone_deletes_its_slice_up_to_its_timestamp() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));

        // 1. Five rows at 10, ids 2..=4 deleted at 20, then id 3 written after the deletion
        // and id 4 written at its very timestamp.
        apply_all(&mut engine, (1..=5).map(|id| live(id, 10, "m")));
        engine.apply_range(range(2, 4, 20)).unwrap();
        apply_all(&mut engine, [live(3, 21, "after"), live(4, 20, "at")]);

        // 2. Id 2 and id 4 (written at 20 <= 20) are gone, id 3 (21) survives; 1 and 5 lie
        // outside the slice. The tombstone comes with the rows.
        let full = engine.read(&query(None, None, 10));
        let survivors = expect(&[(5, 10, "m"), (3, 21, "after"), (1, 10, "m")]);
        assert_eq!(summary(full.rows), survivors);
        assert_eq!(full.range_tombstones, vec![range(2, 4, 20)]);

        // 3. Shadowed rows do not count against the limit: two rows are 5 and 3, and the page,
        // full, covers ids 3 and up, which the tombstone overlaps.
        let page = engine.read(&query(None, None, 2));
        assert_eq!(summary(page.rows), survivors[..2]);
        assert_eq!(page.range_tombstones, vec![range(2, 4, 20)]);

        // 4. Below id 2 the tombstone is not in the slice and is not returned.
        let below = engine.read(&query(Some(2), None, 10));
        assert_eq!(summary(below.rows), survivors[2..]);
        assert!(below.range_tombstones.is_empty());
        assert_eq!(ids(engine.rows()), vec![1, 3, 5]);
    }

    #[test]
    fn range_tombstones_survive_a_flush_a_crash_and_a_reopen() {
        let disk = SimDisk::new();
        let (mut engine, _) = open(&disk, config(BATCH));

        // 1. One range tombstone flushed into table 1, another only in the commit log.
        apply_all(&mut engine, (1..=6).map(|id| live(id, 10, "m")));
        engine.apply_range(range(1, 2, 15)).unwrap();
        engine.flush().unwrap();
        engine.apply_range(range(5, 9, 15)).unwrap();
        let before = engine.read(&query(None, None, 10));
        assert_eq!(ids(before.rows.clone()), vec![4, 3]);
        drop(engine);

        // 2. After a crash: the table and the log's frame give the same answer.
        disk.crash(None);
        let (engine, replay) = open(&disk, config(BATCH));
        assert_eq!((replay.sstables_loaded, replay.rows_replayed), (1, 1));
        assert_eq!(engine.read(&query(None, None, 10)), before);
        let all: Vec<RangeTombstone> = engine.range_tombstones().into_iter().collect();
        assert_eq!(all, vec![range(1, 2, 15), range(5, 9, 15)]);
    }

    #[test]
    fn compaction_purges_a_range_tombstone_past_gc_grace_with_the_rows_it_shadows() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        let grace_us = 864_000 * 1_000_000;
        let past_grace = NOW_US - grace_us - 1;
        let at_grace = NOW_US - grace_us;
        let nine_days_ago = NOW_US - 9 * DAY_US;

        // 1. Four tables: old rows 1, 2 and a live row 7; ids 1..=2 deleted past gc grace;
        // ids 5..=6 deleted nine days ago over a row 5; id 7 deleted exactly gc grace ago
        // (before row 7 was written).
        apply_all(
            &mut engine,
            [
                live(1, past_grace - 1, "old"),
                live(2, past_grace - 1, "old"),
            ],
        );
        engine.apply(live(7, NOW_US, "now")).unwrap();
        engine.flush().unwrap();
        engine.apply_range(range(1, 2, past_grace)).unwrap();
        engine.flush().unwrap();
        engine.apply(live(5, nine_days_ago - 1, "young")).unwrap();
        engine.apply_range(range(5, 6, nine_days_ago)).unwrap();
        engine.flush().unwrap();
        engine.apply_range(range(7, 7, at_grace)).unwrap();
        engine.flush().unwrap();

        // 2. Ids 1..=2 go with their rows; 5..=6 is too young and 7..=7 exactly gc grace
        // old, so both stay, though row 5, shadowed, is dropped.
        let report = engine.compact(NOW_US).unwrap().unwrap();
        assert_eq!((report.rows_in, report.rows_out), (4, 1));
        assert_eq!(report.tombstones_purged, 0);
        assert_eq!(report.range_tombstones_purged, 1);
        assert_eq!(engine.stats().tombstones_purged, 1);
        assert_eq!(summary(engine.rows()), expect(&[(7, NOW_US, "now")]));
        let kept: Vec<RangeTombstone> = engine.range_tombstones().into_iter().collect();
        assert_eq!(
            kept,
            vec![range(5, 6, nine_days_ago), range(7, 7, at_grace)]
        );
    }

    #[test]
    fn an_old_range_tombstone_stays_while_the_memtable_holds_older_data_in_its_slice() {
        let (mut engine, _) = open(&SimDisk::new(), config(BATCH));
        let old = NOW_US - 11 * DAY_US;
        for (from, to) in [(1, 2), (3, 3), (10, 20), (30, 30)] {
            engine.apply_range(range(from, to, old)).unwrap();
            engine.flush().unwrap();
        }

        // A late copy of id 2 written before its deletion, and id 15 written after one.
        apply_all(
            &mut engine,
            [live(2, old - 1, "late"), live(15, old + 1, "newer")],
        );

        // 1..=2 must stay or the late value would come back; the other three may go.
        let report = engine.compact(NOW_US).unwrap().unwrap();
        assert_eq!(report.range_tombstones_purged, 3);
        let kept: Vec<RangeTombstone> = engine.range_tombstones().into_iter().collect();
        assert_eq!(kept, vec![range(1, 2, old)]);
        let read = engine.read(&query(None, None, 10));
        assert_eq!(summary(read.rows), expect(&[(15, old + 1, "newer")]));
    }
}
