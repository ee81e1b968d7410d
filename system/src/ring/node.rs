//! A ring node: a replica that also coordinates requests from any client.
//!
//! As coordinator it sends a write to every replica at once and answers when the consistency
//! level's share has acknowledged; slower replicas still get the write, since each replica
//! call runs in its own task. A read asks every replica, waits for the required share, and
//! reconciles their rows under LWW, then repairs the replicas that answered with stale data
//! before answering. Replicas that fail or miss the deadline count as missing.
//!
//! As replica it applies a write to its engine under the engine's lock, compacts if a bucket
//! of tables is due, releases the lock and acknowledges once the engine's sync mode allows
//! ([`DurableWatch::wait_ack`]); [`run_sync`] runs beside the server to drive periodic and
//! group syncs. The engine runs in batch mode for now ([`engine_config`]).
//!
//! TODO(ring-clock): gc grace is measured on a clock of the node's own with no offset; the
//! harness should hand ring nodes their clocks, as it does the other roles, so a clock fault
//! moves tombstone purging too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

use super::engine::{run_sync, DurableWatch, Engine, EngineConfig, SyncMode};
use super::{reconcile, Consistency, PartitionQuery, Row, StoreError};
use super::{READ_TIMEOUT_MS, WRITE_TIMEOUT_MS};
use crate::env::clock::NodeClock;
use crate::env::disk::Disk;
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
    /// Apply a row on this replica only.
    ReplicaWrite {
        /// The row.
        row: Row,
    },
    /// Read a slice from this replica only.
    ReplicaRead {
        /// The slice.
        query: PartitionQuery,
    },
}

/// A ring node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RingResponse {
    /// The write was acknowledged by enough replicas.
    Written,
    /// The rows read, reconciled and newest first.
    Rows(Vec<Row>),
    /// The operation failed.
    Failed(StoreError),
}

/// The configuration of one ring node.
#[derive(Clone)]
pub struct RingNodeConfig {
    /// This node's replica address (its own, as peers know it).
    pub addr: SocketAddr,
    /// Every replica's address, this node's included.
    pub replicas: Vec<SocketAddr>,
    /// This node's disk.
    pub disk: Arc<dyn Disk>,
}

/// The engine configuration ring nodes run with: Cassandra's defaults, but batch mode, so a
/// replica acknowledges only durable writes (switching to periodic or group needs no other
/// change here).
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        sync: SyncMode::Batch,
        ..EngineConfig::default()
    }
}

struct RingNode {
    addr: SocketAddr,
    replicas: Vec<SocketAddr>,
    engine: Arc<Mutex<Engine>>,
    durable: DurableWatch,
    clock: NodeClock,
    rpc: RpcClient,
}

/// Runs a ring node on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, config: RingNodeConfig) -> std::io::Result<()> {
    assert!(
        config.replicas.contains(&config.addr),
        "a ring node is one of its replicas"
    );
    let (engine, replay) = Engine::open(config.disk.clone(), engine_config())?;
    tracing::info!(
        addr = %config.addr,
        rows_replayed = replay.rows_replayed,
        tail_bytes_discarded = replay.tail_bytes_discarded,
        sstables_loaded = replay.sstables_loaded,
        "ring_node_started"
    );
    let durable = engine.durable_watch();
    let engine = Arc::new(Mutex::new(engine));
    let node = Arc::new(RingNode {
        addr: config.addr,
        replicas: config.replicas,
        engine: engine.clone(),
        durable,
        clock: NodeClock::new(),
        rpc: RpcClient::new(),
    });
    let server = serve_rpc(listener, move |request: RingRequest| {
        let node = node.clone();
        async move { node.handle(request).await }
    });

    // The server and the commit log's syncs live and die together; a failed sync stops the
    // node (Cassandra's commit_failure_policy: stop). Biased: the branch order must not
    // depend on an unseeded random choice.
    tokio::select! {
        biased;
        () = server => Ok(()),
        synced = run_sync(engine) => {
            if let Err(error) = &synced {
                tracing::warn!(addr = %config.addr, %error, "commit_log_sync_failed");
            }
            synced
        }
    }
}

impl RingNode {
    async fn handle(self: Arc<Self>, request: RingRequest) -> RingResponse {
        match request {
            RingRequest::Write { row, consistency } => {
                self.coordinate_write(row, consistency).await
            }
            RingRequest::Read { query, consistency } => {
                self.coordinate_read(query, consistency).await
            }
            RingRequest::ReplicaWrite { row } => self.apply_local(row).await,
            RingRequest::ReplicaRead { query } => {
                RingResponse::Rows(self.engine.lock().await.read(&query))
            }
        }
    }

    async fn apply_local(&self, row: Row) -> RingResponse {
        let applied = {
            let mut engine = self.engine.lock().await;
            engine.apply(row).and_then(|position| {
                engine.compact(self.clock.now_us())?;
                Ok(position)
            })
        };
        let acknowledged = match applied {
            Ok(position) => self.durable.wait_ack(position).await,
            Err(error) => Err(error),
        };
        match acknowledged {
            Ok(()) => RingResponse::Written,
            Err(error) => {
                tracing::warn!(addr = %self.addr, %error, "replica_write_failed");
                RingResponse::Failed(StoreError::Storage(error.to_string()))
            }
        }
    }

    /// Sends `request` to every replica, each in its own task, and returns the channel their
    /// answers arrive on (a missing or failed replica sends `None`).
    fn fan_out(
        self: &Arc<Self>,
        request: RingRequest,
        timeout_ms: u64,
    ) -> mpsc::Receiver<(SocketAddr, Option<RingResponse>)> {
        let (tx, rx) = mpsc::channel(self.replicas.len());
        for &replica in &self.replicas {
            let (node, request, tx) = (self.clone(), request.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = if replica == node.addr {
                    Some(Box::pin(node.clone().handle(request)).await)
                } else {
                    let timeout = Duration::from_millis(timeout_ms);
                    node.rpc
                        .call::<_, RingResponse>(replica, &request, timeout)
                        .await
                        .ok()
                };
                let _ = tx.send((replica, answer)).await;
            });
        }
        rx
    }

    async fn coordinate_write(self: Arc<Self>, row: Row, consistency: Consistency) -> RingResponse {
        let required = consistency.required(self.replicas.len());
        let mut answers = self.fan_out(RingRequest::ReplicaWrite { row }, WRITE_TIMEOUT_MS);

        // Count acknowledgements until enough arrive or every replica has answered.
        let mut received = 0;
        while let Some((_replica, answer)) = answers.recv().await {
            if matches!(answer, Some(RingResponse::Written)) {
                received += 1;
            }
            if received >= required {
                return RingResponse::Written;
            }
        }
        RingResponse::Failed(StoreError::Timeout { required, received })
    }

    async fn coordinate_read(
        self: Arc<Self>,
        query: PartitionQuery,
        consistency: Consistency,
    ) -> RingResponse {
        let required = consistency.required(self.replicas.len());
        let query_limit = query.limit;
        let mut answers = self.fan_out(RingRequest::ReplicaRead { query }, READ_TIMEOUT_MS);

        // TODO(ring-repair): digest reads instead of a full data read from every replica.
        let mut replies: Vec<(SocketAddr, Vec<Row>)> = Vec::new();
        while let Some((replica, answer)) = answers.recv().await {
            if let Some(RingResponse::Rows(rows)) = answer {
                replies.push((replica, rows));
            }
            if replies.len() >= required {
                let all_rows = replies.iter().flat_map(|(_, rows)| rows.iter().cloned());
                let merged: Vec<Row> = reconcile(all_rows).into_iter().take(query_limit).collect();
                self.repair(&replies, &merged).await;
                return RingResponse::Rows(merged);
            }
        }
        let received = replies.len();
        RingResponse::Failed(StoreError::Timeout { required, received })
    }

    /// Blocking read repair: before answering, write the reconciled winner to every replica
    /// that answered with an older version or none, so a later quorum read cannot miss what
    /// this one returned (Cassandra's monotonic quorum reads).
    async fn repair(self: &Arc<Self>, replies: &[(SocketAddr, Vec<Row>)], merged: &[Row]) {
        let mut repairs = Vec::new();
        for (replica, rows) in replies {
            for winner in merged {
                let held = rows.iter().find(|row| row.key == winner.key);
                let stale = held.is_none_or(|row| winner.cell.supersedes(&row.cell));
                if stale {
                    repairs.push((*replica, winner.clone()));
                }
            }
        }
        for (replica, row) in repairs {
            tracing::debug!(%replica, message_id = row.key.message_id, "read_repair");
            if replica == self.addr {
                self.apply_local(row).await;
                continue;
            }
            let request = RingRequest::ReplicaWrite { row };
            let timeout = Duration::from_millis(WRITE_TIMEOUT_MS);
            if let Err(error) = self
                .rpc
                .call::<_, RingResponse>(replica, &request, timeout)
                .await
            {
                tracing::debug!(%replica, %error, "read_repair_failed");
            }
        }
    }
}
