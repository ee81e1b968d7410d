//! The coordinator's side of a ring node: what any node does for a client's request.
//!
//! - **Writes** go to every replica believed up, each in its own task, and the coordinator
//!   answers once the consistency level's share acknowledged. If fewer replicas are believed
//!   up than the level needs, it answers Unavailable and sends nothing. A replica believed
//!   down, or one that fails or misses the write timeout, gets a hint instead; too few
//!   acknowledgements in time is a Timeout, whose outcome is unknown to the client.
//! - **Reads** take a full data read from one replica and digests from enough others to meet
//!   the level (ONE asks one replica and never repairs). If the digests disagree it reads the
//!   data of every contacted replica, reconciles them under LWW and, before answering, writes
//!   the winners back to the replicas that were stale (blocking read repair, which makes
//!   quorum reads monotonic). Short-read protection asks a replica that filled its page for
//!   the next page, until the merged result can be trusted to the limit.
//! - **Range tombstones** are written like rows (to every live replica, hinted for the rest).
//!   A read merges every contacted replica's range tombstones with the rows and leaves out
//!   the rows any of them shadows; read repair sends a replica each range tombstone over the
//!   trusted part of the slice that it did not return, besides the rows it lacked.
//! - **Liveness** is the gossip failure detector's (phi accrual, threshold 8): a peer never
//!   heard from counts as up until the detector has samples of it.
//! - **Hint delivery**: every second the node hands each target the detector holds up its
//!   hints, with their original timestamps; a target held down keeps its hint window open.
//!
//! - **Speculative retry**: a contacted replica that does not answer is replaced by a live
//!   replica that was not contacted yet.
//!
//! TODO(ring-reads): retries happen only after a failure, not after a latency percentile as
//! Cassandra's `speculative_retry` does.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;

use super::node::{digest, RingNode, RingRequest, RingResponse};
use super::{reconcile_slice, Consistency, Mutation, PartitionQuery, RangeTombstone, Row};
use super::{RowKey, StoreError};
use super::{READ_TIMEOUT_MS, WRITE_TIMEOUT_MS};
use crate::metrics;

/// Rounds of short-read protection before a read settles for what it has.
const SHORT_READ_ROUNDS_MAX: usize = 8;
/// How often hints are delivered and down peers probed.
const HINT_DELIVERY_PERIOD: Duration = Duration::from_secs(1);
/// Hints sent to one target per delivery round.
const HINT_BATCH_MAX: usize = 256;

/// One contacted replica's answer to a read, as the coordinator merges it.
struct ReplicaRows {
    addr: SocketAddr,
    rows: Vec<Row>,
    /// The range tombstones it returned so far.
    range_tombstones: BTreeSet<RangeTombstone>,
    /// The oldest message id it returned so far.
    oldest: Option<u64>,
    /// Whether its last page was full, so it may hold older rows it did not return.
    cut: bool,
}

impl RingNode {
    /// [`RingNode::handle`] behind a named `Send` future: a coordinator handling its own
    /// replica call recurses into `handle`, and the box breaks the cycle in the future's type.
    fn handle_boxed(
        self: Arc<Self>,
        request: RingRequest,
    ) -> Pin<Box<dyn Future<Output = RingResponse> + Send>> {
        Box::pin(self.handle(request))
    }

    /// The replicas of the partition holding `channel_id`'s `bucket`, this node first if it is
    /// one of them, then in ring order.
    pub(super) fn replicas_for(&self, channel_id: u64, bucket: u32) -> Vec<SocketAddr> {
        let mut replicas = self.layout.replicas(channel_id, bucket);
        replicas.sort_by_key(|r| *r != self.addr);
        replicas
    }

    /// How many of `replicas` are in this node's datacenter (for LOCAL_QUORUM).
    fn local_count(&self, replicas: &[SocketAddr]) -> usize {
        let local = self.layout.datacenter_of(self.addr);
        replicas
            .iter()
            .filter(|r| self.layout.datacenter_of(**r) == local)
            .count()
    }

    /// Whether `peer` is believed up: the failure detector's verdict once the peer has been
    /// heard from; before that, optimistically up (a write it misses becomes a hint).
    pub(super) fn is_up(&self, peer: SocketAddr) -> bool {
        if peer == self.addr {
            return true;
        }
        let now_ms = self.gossip.now_ms();
        let gossiper = self.gossip.lock();
        gossiper.detector().sample_count(peer) == 0 || gossiper.is_alive(peer, now_ms)
    }

    fn split_by_liveness(&self, replicas: &[SocketAddr]) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        replicas.iter().partition(|r| self.is_up(**r))
    }

    /// Sends `request` to `replica` (or handles it here); `None` if it did not answer.
    async fn call_replica(
        self: &Arc<Self>,
        replica: SocketAddr,
        request: RingRequest,
        timeout_ms: u64,
    ) -> Option<RingResponse> {
        if replica == self.addr {
            return Some(self.clone().handle_boxed(request).await);
        }
        let timeout = Duration::from_millis(timeout_ms);
        self.rpc
            .call::<_, RingResponse>(replica, &request, timeout)
            .await
            .ok()
    }

    async fn hint(&self, target: SocketAddr, mutation: Mutation) {
        let now_ms = self.clock.now_ms();
        let mut hints = self.hints.lock().await;

        // A target the detector holds down starts (or continues) its hint window.
        if !self.is_up(target) {
            if let Err(error) = hints.mark_down(target, now_ms) {
                tracing::warn!(%error, "hint_window_save_failed");
            }
        }
        match hints.add(target, mutation, now_ms) {
            Ok(true) => tracing::debug!(%target, "hint_stored"),
            Ok(false) => tracing::debug!(%target, "hint_window_passed"),
            Err(error) => tracing::warn!(%target, %error, "hint_store_failed"),
        }
    }

    pub(super) async fn coordinate_write(
        self: Arc<Self>,
        mutation: Mutation,
        consistency: Consistency,
    ) -> RingResponse {
        // 1. Enough replicas believed up, or nothing is sent.
        let (channel_id, bucket) = mutation.partition();
        let replicas = self.replicas_for(channel_id, bucket);
        let (up, down) = self.split_by_liveness(&replicas);
        let required = consistency.required(replicas.len(), self.local_count(&replicas));
        if up.len() < required {
            return RingResponse::Failed(StoreError::Unavailable {
                required,
                alive: up.len(),
            });
        }

        // 2. Hints for the replicas believed down.
        for target in down {
            self.hint(target, mutation.clone()).await;
        }

        // 3. Every live replica gets the write in its own task; a failed or late one, a hint.
        let (tx, mut acks) = mpsc::channel(up.len());
        for replica in up {
            let (node, mutation, tx) = (self.clone(), mutation.clone(), tx.clone());
            tokio::spawn(async move {
                let request = replica_write(mutation.clone());
                let answer = node.call_replica(replica, request, WRITE_TIMEOUT_MS).await;
                let acked = matches!(answer, Some(RingResponse::Written));
                if !acked && replica != node.addr {
                    node.hint(replica, mutation).await;
                }
                let _ = tx.send(acked).await;
            });
        }
        drop(tx);

        // 4. Answer at the level's share.
        let mut received = 0;
        while let Some(acked) = acks.recv().await {
            received += usize::from(acked);
            if received >= required {
                return RingResponse::Written;
            }
        }
        RingResponse::Failed(StoreError::Timeout { required, received })
    }

    pub(super) async fn coordinate_read(
        self: Arc<Self>,
        query: PartitionQuery,
        consistency: Consistency,
    ) -> RingResponse {
        // 1. Enough replicas believed up, or nothing is sent.
        let replicas = self.replicas_for(query.channel_id, query.bucket);
        let (up, _down) = self.split_by_liveness(&replicas);
        let required = consistency.required(replicas.len(), self.local_count(&replicas));
        if up.len() < required {
            return RingResponse::Failed(StoreError::Unavailable {
                required,
                alive: up.len(),
            });
        }
        let mut spares: VecDeque<SocketAddr> = up.iter().skip(required).copied().collect();
        let mut contacted: Vec<SocketAddr> = up.into_iter().take(required).collect();

        // 2. Data from the first, digests from the others, at once.
        let data = self.call_replica(
            contacted[0],
            RingRequest::ReplicaRead {
                query: query.clone(),
            },
            READ_TIMEOUT_MS,
        );
        let digests = join_all(contacted[1..].iter().map(|&replica| {
            let request = RingRequest::ReplicaDigest {
                query: query.clone(),
            };
            self.call_replica(replica, request, READ_TIMEOUT_MS)
        }));
        let (data, digests) = futures_util::future::join(data, digests).await;

        // 3. A replica that did not answer is replaced by a spare live one (speculative
        //    retry); with no spare left the read times out.
        let data_request = RingRequest::ReplicaRead {
            query: query.clone(),
        };
        let slice = match data {
            Some(RingResponse::Slice(slice)) => slice,
            _ => match self.retry_on_spares(&mut spares, &data_request).await {
                Some((addr, RingResponse::Slice(slice))) => {
                    contacted[0] = addr;
                    slice
                }
                _ => {
                    return RingResponse::Failed(StoreError::Timeout {
                        required,
                        received: 0,
                    })
                }
            },
        };
        let expected = digest(&slice);
        let mut agreed = true;
        let digest_request = RingRequest::ReplicaDigest {
            query: query.clone(),
        };
        for (slot, answer) in digests.into_iter().enumerate() {
            let answer = match answer {
                Some(answer @ RingResponse::Digest(_)) => answer,
                _ => match self.retry_on_spares(&mut spares, &digest_request).await {
                    Some((addr, answer)) => {
                        contacted[slot + 1] = addr;
                        answer
                    }
                    None => {
                        let received = slot + 1;
                        return RingResponse::Failed(StoreError::Timeout { required, received });
                    }
                },
            };
            agreed &= matches!(answer, RingResponse::Digest(d) if d == expected);
        }

        // 4. Agreement on a page that is complete to the limit: answer it as it is (a
        //    replica leaves out the rows its own range tombstones shadow).
        let rows = slice.rows;
        let live = rows.iter().filter(|r| r.cell.value.is_some()).count();
        if agreed && (live >= query.limit || rows.len() < query.limit) {
            return RingResponse::Rows(live_rows(rows, query.limit));
        }
        if !agreed {
            tracing::debug!(addr = %self.addr, channel = query.channel_id, "digest_mismatch");
        }

        // 5. Otherwise reconcile every contacted replica's data, repairing the stale ones.
        self.reconcile_read(&contacted, &query, required).await
    }

    /// Asks spare replicas in turn until one gives the answer `request` expects.
    async fn retry_on_spares(
        self: &Arc<Self>,
        spares: &mut VecDeque<SocketAddr>,
        request: &RingRequest,
    ) -> Option<(SocketAddr, RingResponse)> {
        while let Some(spare) = spares.pop_front() {
            tracing::debug!(addr = %self.addr, %spare, "speculative_retry");
            let answer = self
                .call_replica(spare, request.clone(), READ_TIMEOUT_MS)
                .await;
            match (request, answer) {
                (RingRequest::ReplicaRead { .. }, Some(slice @ RingResponse::Slice(_))) => {
                    return Some((spare, slice));
                }
                (RingRequest::ReplicaDigest { .. }, Some(d @ RingResponse::Digest(_))) => {
                    return Some((spare, d));
                }
                _ => continue,
            }
        }
        None
    }

    /// Full data reads from `contacted`, merged with short-read protection, then repaired.
    async fn reconcile_read(
        self: &Arc<Self>,
        contacted: &[SocketAddr],
        query: &PartitionQuery,
        required: usize,
    ) -> RingResponse {
        let mut views = Vec::new();
        for &addr in contacted {
            let request = RingRequest::ReplicaRead {
                query: query.clone(),
            };
            let Some(RingResponse::Slice(slice)) =
                self.call_replica(addr, request, READ_TIMEOUT_MS).await
            else {
                return RingResponse::Failed(StoreError::Timeout {
                    required,
                    received: views.len(),
                });
            };
            let oldest = slice.rows.last().map(|r| r.key.message_id);
            let cut = slice.rows.len() >= query.limit;
            views.push(ReplicaRows {
                addr,
                rows: slice.rows,
                range_tombstones: slice.range_tombstones.into_iter().collect(),
                oldest,
                cut,
            });
        }

        for round in 0.. {
            // The merge is trustworthy down to the oldest id a full page stopped at; a row any
            // replica's range tombstone shadows is out of it.
            let (trusted, ranges) = merge_views(&views, query);
            let frontier = views
                .iter()
                .filter(|v| v.cut)
                .filter_map(|v| v.oldest)
                .max();
            let live = trusted.iter().filter(|r| r.cell.value.is_some()).count();
            if live >= query.limit || frontier.is_none() || round >= SHORT_READ_ROUNDS_MAX {
                self.read_repair(&views, &trusted, &ranges).await;
                return RingResponse::Rows(live_rows(trusted, query.limit));
            }

            // Short-read protection: the next page from each replica that filled its page.
            for view in views.iter_mut().filter(|v| v.cut) {
                let more = PartitionQuery {
                    before: view.oldest,
                    ..query.clone()
                };
                let request = RingRequest::ReplicaRead { query: more };
                let Some(RingResponse::Slice(slice)) =
                    self.call_replica(view.addr, request, READ_TIMEOUT_MS).await
                else {
                    return RingResponse::Failed(StoreError::Timeout {
                        required,
                        received: 0,
                    });
                };
                let rows = slice.rows;
                view.cut = rows.len() >= query.limit;
                view.oldest = rows.last().map(|r| r.key.message_id).or(view.oldest);
                view.rows.extend(rows);
                view.range_tombstones.extend(slice.range_tombstones);
            }
        }
        unreachable!("the loop returns by its last round")
    }

    /// Blocking read repair: writes each winner to every contacted replica that answered with
    /// an older version or none, and each range tombstone to every one that did not return
    /// it, and waits for those writes.
    async fn read_repair(
        self: &Arc<Self>,
        views: &[ReplicaRows],
        winners: &[Row],
        ranges: &[RangeTombstone],
    ) {
        let mut repairs = Vec::new();
        for view in views {
            for tombstone in ranges {
                if !view.range_tombstones.contains(tombstone) {
                    repairs.push((view.addr, Mutation::RangeDelete(*tombstone)));
                }
            }
            for winner in winners {
                let held = view.rows.iter().find(|row| row.key == winner.key);
                if held.is_none_or(|row| winner.cell.supersedes(&row.cell)) {
                    repairs.push((view.addr, Mutation::Row(winner.clone())));
                }
            }
        }
        metrics::registry()
            .read_repairs
            .inc_by(u64::try_from(repairs.len()).unwrap_or(u64::MAX));
        let writes = repairs.into_iter().map(|(replica, mutation)| {
            match &mutation {
                Mutation::Row(row) => {
                    tracing::debug!(%replica, message_id = row.key.message_id, "read_repair");
                }
                Mutation::RangeDelete(t) => {
                    tracing::debug!(%replica, from = t.from, to = t.to, "read_repair_range");
                }
            }
            self.call_replica(replica, replica_write(mutation), WRITE_TIMEOUT_MS)
        });
        join_all(writes).await;
    }

    /// Every [`HINT_DELIVERY_PERIOD`]: updates each hint target's window from the failure
    /// detector, and hands the targets it holds up their hints, oldest first.
    pub(super) async fn deliver_hints(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HINT_DELIVERY_PERIOD).await;
            let targets = self.hints.lock().await.targets_and_down();
            for target in targets {
                if !self.is_up(target) {
                    let now_ms = self.clock.now_ms();
                    if let Err(error) = self.hints.lock().await.mark_down(target, now_ms) {
                        tracing::warn!(%error, "hint_window_save_failed");
                    }
                    continue;
                }
                if let Err(error) = self.hints.lock().await.mark_up(target) {
                    tracing::warn!(%error, "hint_window_save_failed");
                }
                self.deliver_hints_to(target).await;
            }
        }
    }

    async fn deliver_hints_to(self: &Arc<Self>, target: SocketAddr) {
        let batch = self.hints.lock().await.hints_for(target);
        let mut delivered = 0;
        for mutation in batch.into_iter().take(HINT_BATCH_MAX) {
            let request = replica_write(mutation);
            match self.call_replica(target, request, WRITE_TIMEOUT_MS).await {
                Some(RingResponse::Written) => delivered += 1,
                _ => break,
            }
        }
        if delivered > 0 {
            tracing::debug!(%target, delivered, "hints_delivered");
            if let Err(error) = self.hints.lock().await.delivered(target, delivered) {
                tracing::warn!(%target, %error, "hint_delete_failed");
            }
        }
    }
}

/// The replica-only request applying `mutation`.
fn replica_write(mutation: Mutation) -> RingRequest {
    match mutation {
        Mutation::Row(row) => RingRequest::ReplicaWrite { row },
        Mutation::RangeDelete(tombstone) => RingRequest::ReplicaWriteRange { tombstone },
    }
}

/// The replicas' rows reconciled, with those any replica's range tombstone shadows left out,
/// down to the oldest id a full page stopped at (the frontier); and the range tombstones
/// overlapping that trusted part of the slice.
fn merge_views(views: &[ReplicaRows], query: &PartitionQuery) -> (Vec<Row>, Vec<RangeTombstone>) {
    let frontier = views
        .iter()
        .filter(|v| v.cut)
        .filter_map(|v| v.oldest)
        .max();
    let key = |message_id| RowKey {
        channel_id: query.channel_id,
        bucket: query.bucket,
        message_id,
    };
    let low = key(frontier
        .or(query.after.map(|a| a.saturating_add(1)))
        .unwrap_or(0));
    let high = key(query.before.map_or(u64::MAX, |b| b.saturating_sub(1)));
    let ranges: Vec<RangeTombstone> = views
        .iter()
        .flat_map(|v| v.range_tombstones.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|t| t.overlaps(low, high))
        .collect();
    let all = views.iter().flat_map(|v| v.rows.iter().cloned());
    let trusted = reconcile_slice(all, &ranges)
        .into_iter()
        .filter(|r| frontier.is_none_or(|f| r.key.message_id >= f))
        .collect();
    (trusted, ranges)
}

/// The live rows of `rows`, at most `limit`, in their order.
fn live_rows(rows: Vec<Row>, limit: usize) -> Vec<Row> {
    rows.into_iter()
        .filter(|r| r.cell.value.is_some())
        .take(limit)
        .collect()
}
