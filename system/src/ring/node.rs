//! A ring node: a replica that also coordinates requests from any client.
//!
//! This module holds the node's wire protocol, its replica-local operations and its start-up;
//! the coordinator's side (consistency levels, hints, digest reads, read repair) is in
//! [`super::coordinator`].

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::engine::Engine;
use super::hints::HintStore;
use super::layout::RingLayout;
use super::liveness::LivenessView;
use super::{Consistency, PartitionQuery, Row, StoreError};
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
    /// The digest of a slice on this replica only.
    ReplicaDigest {
        /// The slice.
        query: PartitionQuery,
    },
    /// Are you there? (Hint delivery probes peers believed down.)
    Ping,
}

/// A ring node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RingResponse {
    /// The write was acknowledged by enough replicas.
    Written,
    /// The rows read, reconciled and newest first.
    Rows(Vec<Row>),
    /// A replica's digest of a slice.
    Digest(u64),
    /// The answer to a ping.
    Pong,
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
}

pub(super) struct RingNode {
    pub(super) addr: SocketAddr,
    pub(super) layout: Arc<RingLayout>,
    pub(super) engine: Mutex<Engine>,
    pub(super) rpc: RpcClient,
    pub(super) clock: NodeClock,
    pub(super) hints: Mutex<HintStore>,
    pub(super) liveness: LivenessView,
}

/// Runs a ring node on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, config: RingNodeConfig) -> std::io::Result<()> {
    assert!(
        config.layout.addrs().contains(&config.addr),
        "a ring node is in its own layout"
    );
    let (engine, replay) = Engine::open(config.disk.clone())?;
    tracing::info!(
        addr = %config.addr,
        rows_replayed = replay.rows_replayed,
        tail_bytes_discarded = replay.tail_bytes_discarded,
        "ring_node_started"
    );
    let hints = HintStore::open(config.disk.clone(), config.hint_window_ms)?;
    let node = Arc::new(RingNode {
        addr: config.addr,
        layout: config.layout,
        engine: Mutex::new(engine),
        rpc: RpcClient::new(),
        clock: config.clock,
        hints: Mutex::new(hints),
        liveness: LivenessView::new(),
    });
    tokio::spawn(node.clone().deliver_hints());
    serve_rpc(listener, move |request: RingRequest| {
        let node = node.clone();
        async move { node.handle(request).await }
    })
    .await;
    Ok(())
}

impl RingNode {
    pub(super) async fn handle(self: Arc<Self>, request: RingRequest) -> RingResponse {
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
            RingRequest::ReplicaDigest { query } => {
                RingResponse::Digest(digest(&self.engine.lock().await.read(&query)))
            }
            RingRequest::Ping => RingResponse::Pong,
        }
    }

    pub(super) async fn apply_local(&self, row: Row) -> RingResponse {
        match self.engine.lock().await.apply(row) {
            Ok(()) => RingResponse::Written,
            Err(error) => {
                tracing::warn!(addr = %self.addr, %error, "replica_write_failed");
                RingResponse::Failed(StoreError::Storage(error.to_string()))
            }
        }
    }
}

/// A replica's digest of the rows it answers a slice with (keys, timestamps and values).
pub fn digest(rows: &[Row]) -> u64 {
    let bytes = serde_json::to_vec(rows).unwrap_or_default();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
