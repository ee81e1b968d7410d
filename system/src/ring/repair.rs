//! Anti-entropy repair: a node makes every replica of the ranges it holds agree.
//!
//! For each token range this node replicates, it asks every other replica for a Merkle tree of
//! the range ([`super::merkle`]) and compares it with its own. For each replica: (1) pull the
//! rows and range tombstones of the mismatching leaves from it and apply them here under LWW;
//! then (2) push this node's rows and range tombstones of the leaves that still mismatch back
//! to it. A range tombstone sits in the leaf of its partition's token, beside that
//! partition's rows; the rows a replica's range tombstones shadow are left out of its tree,
//! since they no longer count. After both passes, and with no concurrent writes, every
//! replica of the range holds the same live rows, row tombstones and range tombstones, and so
//! the same Merkle root. Repair runs on demand ([`RingRequest::Repair`]) and, if
//! configured, on a schedule.
//!
//! Not modelled: incremental repair (repaired / unrepaired tables), primary-range-only repair,
//! throttled streaming, repair sessions shared between nodes.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::merkle::{diff, MerkleTree, TokenRange};
use super::node::{RingNode, RingRequest, RingResponse};
use super::token::message_partition_token;
use super::{Mutation, RangeTombstone, Row, Slice};

/// Leaves per tree: 2^depth. 2^10 keeps a tree's JSON well under the RPC frame limit.
pub const MERKLE_DEPTH: u32 = 10;
const REPAIR_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What one repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Token ranges compared.
    pub ranges: usize,
    /// Leaf ranges that mismatched, over all replicas.
    pub mismatched_leaves: usize,
    /// Rows pulled here from other replicas.
    pub rows_pulled: usize,
    /// Rows pushed from here to other replicas.
    pub rows_pushed: usize,
    /// Range tombstones pulled here from other replicas.
    #[serde(default)]
    pub range_tombstones_pulled: usize,
    /// Range tombstones pushed from here to other replicas.
    #[serde(default)]
    pub range_tombstones_pushed: usize,
    /// Replicas that did not answer; their ranges stay unrepaired.
    pub replicas_unreachable: usize,
}

/// The token of a row's partition.
pub fn row_token(row: &Row) -> i64 {
    message_partition_token(row.key.channel_id, row.key.bucket)
}

/// The token of a range tombstone's partition.
pub fn range_tombstone_token(tombstone: &RangeTombstone) -> i64 {
    message_partition_token(tombstone.channel_id, tombstone.bucket)
}

fn in_any(ranges: &[(i64, i64)], token: i64) -> bool {
    ranges
        .iter()
        .any(|&(left, right)| TokenRange::new(left, right).contains(token))
}

impl RingNode {
    /// This node's rows (none its range tombstones shadow) and range tombstones whose
    /// partition tokens fall in `ranges` (`(left, right]` each).
    pub(super) async fn slice_in(&self, ranges: &[(i64, i64)]) -> Slice {
        let engine = self.engine.lock().await;
        let rows = engine
            .rows()
            .filter(|row| in_any(ranges, row_token(row)))
            .collect();
        let range_tombstones = engine
            .range_tombstones()
            .into_iter()
            .filter(|t| in_any(ranges, range_tombstone_token(t)))
            .collect();
        Slice {
            rows,
            range_tombstones,
        }
    }

    /// This node's Merkle tree of `range`.
    pub(super) async fn merkle(&self, range: TokenRange) -> MerkleTree {
        let slice = self.slice_in(&[(range.left, range.right)]).await;
        let rows = slice.rows.iter().map(|r| (row_token(r), r));
        let mut tree = MerkleTree::from_rows(range, MERKLE_DEPTH, rows);
        for tombstone in &slice.range_tombstones {
            tree.insert_range_tombstone(range_tombstone_token(tombstone), tombstone);
        }
        tree
    }

    async fn ask(&self, peer: std::net::SocketAddr, request: &RingRequest) -> Option<RingResponse> {
        self.rpc
            .call::<_, RingResponse>(peer, request, REPAIR_CALL_TIMEOUT)
            .await
            .ok()
    }

    /// Repairs every range this node replicates against its other replicas.
    pub(super) async fn repair(self: Arc<Self>) -> RepairReport {
        let mut report = RepairReport::default();
        let ring = self.layout.ring();
        for (left, right) in ring.ranges() {
            let Ok(replicas) = ring.replicas_for_range((left, right), self.layout.strategy())
            else {
                continue;
            };
            let addrs: Vec<_> = replicas.iter().map(|&i| self.layout.addrs()[i]).collect();
            if !addrs.contains(&self.addr) {
                continue;
            }
            report.ranges += 1;
            let range = TokenRange::new(left, right);
            for peer in addrs.into_iter().filter(|a| *a != self.addr) {
                self.repair_with(peer, range, &mut report).await;
            }
        }
        tracing::info!(addr = %self.addr, ?report, "repair_finished");
        report
    }

    /// The leaves of `range` where this node's tree and `peer`'s differ; `None` if `peer` did
    /// not answer.
    async fn differing_leaves(
        &self,
        peer: std::net::SocketAddr,
        range: TokenRange,
    ) -> Option<Vec<(i64, i64)>> {
        match self.ask(peer, &RingRequest::ReplicaMerkle { range }).await {
            Some(RingResponse::Merkle(theirs)) => Some(diff(&self.merkle(range).await, &theirs)),
            _ => None,
        }
    }

    /// Pull, then push, the mismatching leaves of `range` between this node and `peer`.
    async fn repair_with(
        self: &Arc<Self>,
        peer: std::net::SocketAddr,
        range: TokenRange,
        report: &mut RepairReport,
    ) {
        // 1. Compare trees.
        let Some(leaves) = self.differing_leaves(peer, range).await else {
            report.replicas_unreachable += 1;
            return;
        };
        if leaves.is_empty() {
            return;
        }
        report.mismatched_leaves += leaves.len();

        // 2. Pull their rows of those leaves; LWW keeps the winner of each.
        let request = RingRequest::ReplicaRangeRows {
            ranges: leaves.clone(),
        };
        let Some(RingResponse::Slice(theirs)) = self.ask(peer, &request).await else {
            report.replicas_unreachable += 1;
            return;
        };
        report.rows_pulled += theirs.rows.len();
        report.range_tombstones_pulled += theirs.range_tombstones.len();
        let ranges = theirs
            .range_tombstones
            .into_iter()
            .map(Mutation::RangeDelete);
        for mutation in ranges.chain(theirs.rows.into_iter().map(Mutation::Row)) {
            self.apply_local(mutation).await;
        }

        // 3. Push ours of the leaves that still differ.
        let Some(leaves) = self.differing_leaves(peer, range).await else {
            report.replicas_unreachable += 1;
            return;
        };
        let ours = self.slice_in(&leaves).await;
        report.rows_pushed += ours.rows.len();
        report.range_tombstones_pushed += ours.range_tombstones.len();
        let request = RingRequest::ReplicaApply {
            rows: ours.rows,
            range_tombstones: ours.range_tombstones,
        };
        if !matches!(self.ask(peer, &request).await, Some(RingResponse::Written)) {
            report.replicas_unreachable += 1;
        }
    }

    /// Repairs every `interval`, forever.
    pub(super) async fn repair_on_schedule(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.clone().repair().await;
        }
    }
}
