//! A ring node: a replica that also coordinates requests from any client.
//!
//! This module holds the node's wire protocol, its replica-local operations and its start-up;
//! the coordinator's side (consistency levels, hints, digest reads, read repair) is in
//! [`super::coordinator`].
//!
//! As replica it applies a write to its engine under the engine's lock, compacts if a bucket
//! of tables is due, releases the lock and acknowledges once the engine's sync mode allows
//! ([`DurableWatch::wait_ack`]), after a slow device has finished the syncs the write made
//! ([`wait_out_slow_sync`]); [`run_sync`] runs beside the server to drive periodic and
//! group syncs. Tombstone purging measures gc grace on the node's clock.
//!
//! Range tombstones on the wire, the only protocol changes they brought:
//! - [`RingRequest::WriteRange`] and [`RingRequest::ReplicaWriteRange`] carry a range
//!   tombstone as `Write` and `ReplicaWrite` carry a row, and are answered the same way.
//! - [`RingRequest::ReplicaRead`] and [`RingRequest::ReplicaRangeRows`] are answered with
//!   [`RingResponse::Slice`] (rows and range tombstones) where they were answered with `Rows`;
//!   a coordinated `Read` still answers `Rows`, the live rows only.
//! - [`RingRequest::ReplicaApply`] has a `range_tombstones` field, empty when absent.
//! - [`RingRequest::ReplicaDigest`] hashes the slice's rows and range tombstones together.
//!
//! A node of the older protocol would not understand the new variants; the ring is upgraded
//! all at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::engine::{run_sync, wait_out_slow_sync, DurableWatch, Engine, EngineConfig, SyncMode};
use super::failure_detector::FailureDetector;
use super::gossip::{next_generation, run_gossip, seeded_chooser, GossipConfig, GossipMessage};
use super::gossip::{Gossiper, SharedGossiper};
use super::hints::HintStore;
use super::layout::RingLayout;
use super::merkle::{MerkleTree, TokenRange};
use super::repair::RepairReport;
use super::{Consistency, Mutation, PartitionQuery, RangeTombstone, Row, Slice, StoreError};
use crate::env::clock::NodeClock;
use crate::env::disk::Disk;
use crate::load::NodeLoad;
use crate::metrics;
use crate::rpc::{serve_rpc, RpcClient};

/// A request to a ring node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RingRequest {
    /// Coordinate a write at `consistency`.
    Write {
        /// The row.
        row: Row,
        /// How many replicas must acknowledge.
        consistency: Consistency,
    },
    /// Coordinate a read at `consistency`.
    Read {
        /// The slice.
        query: PartitionQuery,
        /// How many replicas must answer.
        consistency: Consistency,
    },
    /// Coordinate a range deletion at `consistency`.
    WriteRange {
        /// The range tombstone.
        tombstone: RangeTombstone,
        /// How many replicas must acknowledge.
        consistency: Consistency,
    },
    /// Apply a row on this replica only.
    ReplicaWrite {
        /// The row.
        row: Row,
    },
    /// Apply a range tombstone on this replica only.
    ReplicaWriteRange {
        /// The range tombstone.
        tombstone: RangeTombstone,
    },
    /// Read a slice from this replica only; answered with [`RingResponse::Slice`].
    ReplicaRead {
        /// The slice.
        query: PartitionQuery,
    },
    /// The digest of a slice on this replica only.
    ReplicaDigest {
        /// The slice.
        query: PartitionQuery,
    },
    /// A gossip exchange message.
    Gossip(GossipMessage),
    /// This replica's Merkle tree of a token range.
    ReplicaMerkle {
        /// The range.
        range: TokenRange,
    },
    /// Every row (tombstones included) and range tombstone this replica holds in these
    /// `(left, right]` ranges; answered with [`RingResponse::Slice`].
    ReplicaRangeRows {
        /// The ranges.
        ranges: Vec<(i64, i64)>,
    },
    /// Apply these rows and range tombstones on this replica (repair streaming).
    ReplicaApply {
        /// The rows.
        rows: Vec<Row>,
        /// The range tombstones.
        #[serde(default)]
        range_tombstones: Vec<RangeTombstone>,
    },
    /// Repair every range this node replicates now (anti-entropy, as `nodetool repair`).
    Repair,
}

impl RingRequest {
    /// The kind a node's load counts this request as: store operations coordinated and
    /// replica reads and writes, not gossip, Merkle trees or repair.
    pub fn load_kind(&self) -> Option<&'static str> {
        match self {
            RingRequest::Write { .. } | RingRequest::WriteRange { .. } => Some("coordinate_write"),
            RingRequest::Read { .. } => Some("coordinate_read"),
            RingRequest::ReplicaWrite { .. } | RingRequest::ReplicaWriteRange { .. } => {
                Some("replica_write")
            }
            RingRequest::ReplicaRead { .. } | RingRequest::ReplicaDigest { .. } => {
                Some("replica_read")
            }
            RingRequest::Gossip(_)
            | RingRequest::ReplicaMerkle { .. }
            | RingRequest::ReplicaRangeRows { .. }
            | RingRequest::ReplicaApply { .. }
            | RingRequest::Repair => None,
        }
    }
}

/// A ring node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RingResponse {
    /// The write was acknowledged by enough replicas.
    Written,
    /// The rows read, reconciled and newest first.
    Rows(Vec<Row>),
    /// What one replica holds of a slice or of token ranges.
    Slice(Slice),
    /// A replica's digest of a slice.
    Digest(u64),
    /// The answer to a gossip message.
    Gossip(Option<GossipMessage>),
    /// A replica's Merkle tree.
    Merkle(MerkleTree),
    /// What a repair did.
    Repaired(RepairReport),
    /// The operation failed.
    Failed(StoreError),
}

/// The configuration of one ring node.
#[derive(Clone)]
pub struct RingNodeConfig {
    /// This node's replica address (its own, as peers know it).
    pub addr: SocketAddr,
    /// The ring: every node's address and who replicates what.
    pub layout: Arc<RingLayout>,
    /// This node's disk.
    pub disk: Arc<dyn Disk>,
    /// This node's clock (hint windows).
    pub clock: NodeClock,
    /// How long a replica may be down and still collect hints.
    pub hint_window_ms: i64,
    /// The storage engine's configuration (sync mode, gc grace, compaction).
    pub engine: EngineConfig,
    /// Run anti-entropy repair this often, if set.
    pub repair_interval_ms: Option<u64>,
}

/// The engine configuration ring nodes run with by default: Cassandra's defaults, but batch
/// mode, so a replica acknowledges only durable writes.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        sync: SyncMode::Batch,
        ..EngineConfig::default()
    }
}

pub(super) struct RingNode {
    pub(super) addr: SocketAddr,
    pub(super) layout: Arc<RingLayout>,
    pub(super) engine: Arc<Mutex<Engine>>,
    pub(super) durable: DurableWatch,
    /// Signalled when the engine fails a write: the node must stop serving.
    pub(super) storage_failed: tokio::sync::Notify,
    pub(super) rpc: RpcClient,
    pub(super) clock: NodeClock,
    pub(super) hints: Mutex<HintStore>,
    pub(super) gossip: SharedGossiper,
    /// Counts the requests this node serves, if whoever started it asked.
    pub(super) load: std::sync::OnceLock<NodeLoad>,
}

/// A ring node whose engine, hints and gossip state are open: everything that can fail on
/// its disk has, before it serves anything.
pub struct OpenRingNode {
    node: Arc<RingNode>,
    gossip_seed: i64,
    repair_interval_ms: Option<u64>,
}

/// Opens a ring node: replays its commit log and tables, loads its hints and its gossip
/// generation.
pub fn open(config: RingNodeConfig) -> std::io::Result<OpenRingNode> {
    assert!(
        config.layout.addrs().contains(&config.addr),
        "a ring node is in its own layout"
    );
    let (engine, replay) = Engine::open(config.disk.clone(), config.engine)?;
    tracing::info!(
        addr = %config.addr,
        rows_replayed = replay.rows_replayed,
        tail_bytes_discarded = replay.tail_bytes_discarded,
        sstables_loaded = replay.sstables_loaded,
        "ring_node_opened"
    );
    let hints = HintStore::open(config.disk.clone(), config.hint_window_ms)?;
    let gossip = start_gossip(&config)?;
    let gossip_seed = config.clock.now_us();
    let durable = engine.durable_watch();
    let node = Arc::new(RingNode {
        addr: config.addr,
        layout: config.layout,
        engine: Arc::new(Mutex::new(engine)),
        durable,
        storage_failed: tokio::sync::Notify::new(),
        rpc: RpcClient::new(),
        clock: config.clock,
        hints: Mutex::new(hints),
        gossip,
        load: std::sync::OnceLock::new(),
    });
    Ok(OpenRingNode {
        node,
        gossip_seed,
        repair_interval_ms: config.repair_interval_ms,
    })
}

/// What a ring node did when it was stopped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Rows the final flush wrote to a sorted table (range deletions not counted).
    pub rows_flushed: usize,
    /// The sorted table the flush wrote, if the memtable held anything.
    pub generation: Option<u64>,
}

impl OpenRingNode {
    /// Rows in the memtable: right after the open, the rows the commit log replayed.
    pub fn memtable_rows(&self) -> usize {
        self.node
            .engine
            .try_lock()
            .map_or(0, |engine| engine.memtable_rows())
    }

    /// Serves on `listener` until `stop` completes, then stops cleanly: it takes no more
    /// requests and flushes the memtable to a sorted table, which drops the commit log the
    /// table covers, so the next start replays nothing. A request in flight at the stop is
    /// abandoned (its caller sees an unknown outcome, as with a crash).
    pub async fn serve_until(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<StopReport> {
        let engine = self.node.engine.clone();
        tokio::select! {
            biased;
            () = stop => {}
            served = self.serve(listener) => {
                served?;
            }
        }
        let (rows_flushed, generation, slow) = {
            let mut engine = engine.lock().await;
            let rows_flushed = engine.memtable_rows();
            let generation = engine.flush()?;
            engine.sync()?;
            (rows_flushed, generation, engine.take_slow_sync())
        };
        wait_out_slow_sync(&engine, slow).await;
        Ok(StopReport {
            rows_flushed,
            generation,
        })
    }

    /// Counts every request this node serves into `load` (see [`crate::load`]).
    pub fn counting(self, load: NodeLoad) -> Self {
        // Set once, right after the open: a second counter is ignored.
        let _ = self.node.load.set(load);
        self
    }

    /// Serves on `listener` until the task is dropped or a commit log sync fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let addr = self.node.addr;
        let node = self.node;
        tokio::spawn(gossip_task(node.clone(), self.gossip_seed));
        tokio::spawn(node.clone().deliver_hints());
        if let Some(interval_ms) = self.repair_interval_ms {
            let interval = std::time::Duration::from_millis(interval_ms);
            tokio::spawn(node.clone().repair_on_schedule(interval));
        }
        let (engine, watcher) = (node.engine.clone(), node.clone());
        let server = serve_rpc(listener, move |request: RingRequest| {
            let node = node.clone();
            async move { node.handle(request).await }
        });

        // The server and the commit log's syncs live and die together; a failed sync or write
        // stops the node (Cassandra's commit_failure_policy: stop): the caller's process, or
        // the simulated node, ends, instead of serving reads while refusing every write.
        tokio::select! {
            biased;
            () = server => Ok(()),
            () = watcher.storage_failed.notified() => {
                tracing::warn!(%addr, "storage_failed_node_stops");
                Err(std::io::Error::other("the storage engine failed; the node stops"))
            }
            synced = run_sync(engine) => {
                if let Err(error) = &synced {
                    tracing::warn!(%addr, %error, "commit_log_sync_failed");
                }
                synced
            }
        }
    }
}

/// Opens a ring node and serves it on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, config: RingNodeConfig) -> std::io::Result<()> {
    open(config)?.serve(listener).await
}

impl RingNode {
    pub(super) async fn handle(self: Arc<Self>, request: RingRequest) -> RingResponse {
        if let (Some(load), Some(kind)) = (self.load.get(), request.load_kind()) {
            load.served(kind);
        }
        match request {
            RingRequest::Write { row, consistency } => {
                let start = tokio::time::Instant::now();
                let answer = self.coordinate_write(Mutation::Row(row), consistency).await;
                metrics::registry()
                    .store_write_seconds
                    .observe(metrics::seconds_since(start));
                answer
            }
            RingRequest::WriteRange {
                tombstone,
                consistency,
            } => {
                let mutation = Mutation::RangeDelete(tombstone);
                self.coordinate_write(mutation, consistency).await
            }
            RingRequest::Read { query, consistency } => {
                let start = tokio::time::Instant::now();
                let answer = self.coordinate_read(query, consistency).await;
                metrics::registry()
                    .store_read_seconds
                    .observe(metrics::seconds_since(start));
                answer
            }
            RingRequest::ReplicaWrite { row } => self.apply_local(Mutation::Row(row)).await,
            RingRequest::ReplicaWriteRange { tombstone } => {
                self.apply_local(Mutation::RangeDelete(tombstone)).await
            }
            RingRequest::ReplicaRead { query } => {
                RingResponse::Slice(self.engine.lock().await.read(&query))
            }
            RingRequest::ReplicaDigest { query } => {
                RingResponse::Digest(digest(&self.engine.lock().await.read(&query)))
            }
            RingRequest::Gossip(message) => RingResponse::Gossip(self.gossip.handle(message)),
            RingRequest::ReplicaMerkle { range } => RingResponse::Merkle(self.merkle(range).await),
            RingRequest::ReplicaRangeRows { ranges } => {
                RingResponse::Slice(self.slice_in(&ranges).await)
            }
            RingRequest::ReplicaApply {
                rows,
                range_tombstones,
            } => {
                let rows = rows.into_iter().map(Mutation::Row);
                let ranges = range_tombstones.into_iter().map(Mutation::RangeDelete);
                for mutation in ranges.chain(rows) {
                    if let failed @ RingResponse::Failed(_) = self.apply_local(mutation).await {
                        return failed;
                    }
                }
                RingResponse::Written
            }
            RingRequest::Repair => RingResponse::Repaired(self.repair().await),
        }
    }

    pub(super) async fn apply_local(&self, mutation: Mutation) -> RingResponse {
        // Apply (and compact if due) under the lock; wait for durability outside it, first
        // for a slow device to finish the syncs this write made.
        let applied = {
            let mut engine = self.engine.lock().await;
            engine.apply_mutation(mutation).and_then(|position| {
                engine.compact(self.clock.now_us())?;
                Ok((position, engine.take_slow_sync()))
            })
        };
        let acknowledged = match applied {
            Ok((position, slow)) => {
                wait_out_slow_sync(&self.engine, slow).await;
                self.durable.wait_ack(position).await
            }
            Err(error) => Err(error),
        };
        match acknowledged {
            Ok(()) => RingResponse::Written,
            Err(error) => {
                tracing::warn!(addr = %self.addr, %error, "replica_write_failed");
                self.storage_failed.notify_one();
                RingResponse::Failed(StoreError::Storage(error.to_string()))
            }
        }
    }
}

/// The file a node keeps its last gossip generation in.
const GENERATION_FILE: &str = "gossip-generation";
const GENERATION_FILE_REWRITE: &str = "gossip-generation-rewrite";

/// A gossiper with a generation above every earlier one of this node (kept on its disk), so
/// peers see a restart even within the same second.
fn start_gossip(config: &RingNodeConfig) -> std::io::Result<SharedGossiper> {
    let previous = config
        .disk
        .read(GENERATION_FILE)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse().ok());
    let now_s = u64::try_from(config.clock.now_ms() / 1000).unwrap_or(0);
    let generation = next_generation(previous, now_s);
    let disk = &config.disk;
    disk.write_at(
        GENERATION_FILE_REWRITE,
        0,
        generation.to_string().as_bytes(),
    )?;
    disk.sync(GENERATION_FILE_REWRITE)?;
    disk.rename(GENERATION_FILE_REWRITE, GENERATION_FILE)?;

    let peers = config
        .layout
        .addrs()
        .iter()
        .copied()
        .filter(|a| *a != config.addr);
    let gossiper = Gossiper::new(config.addr, generation, peers, FailureDetector::default());
    Ok(SharedGossiper::new(gossiper))
}

/// Gossips every second with peers chosen from a seed (the node's clock at start, which in the
/// simulator follows the run's seed).
async fn gossip_task(node: Arc<RingNode>, seed: i64) {
    let chooser = seeded_chooser(seed.unsigned_abs() ^ u64::from(node.addr.port()));
    let rpc = node.rpc.clone();
    let send = move |peer: SocketAddr, message: GossipMessage| {
        let rpc = rpc.clone();
        async move {
            let request = RingRequest::Gossip(message);
            let timeout = std::time::Duration::from_secs(1);
            match rpc.call::<_, RingResponse>(peer, &request, timeout).await? {
                RingResponse::Gossip(answer) => Ok(answer),
                other => Err(crate::rpc::RpcError::Unknown {
                    addr: peer,
                    reason: format!("gossip answered with {other:?}"),
                }),
            }
        }
    };
    run_gossip(node.gossip.clone(), GossipConfig::default(), chooser, send).await;
}

/// A replica's digest of what it answers a slice with: the rows (keys, timestamps and values)
/// and the range tombstones, so replicas that differ in either disagree.
pub fn digest(slice: &Slice) -> u64 {
    let bytes = serde_json::to_vec(slice).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
