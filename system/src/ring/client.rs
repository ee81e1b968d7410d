//! The ring's client side: what the API and guild roles use to store and read messages.
//!
//! A client knows every ring node's address and sends each request to one coordinator, the
//! first in a rotation that starts at the channel's hash. A coordinator that cannot be reached
//! or does not answer is skipped for the next one; that retry is safe because a write carries
//! its own key and timestamp, so applying it twice changes nothing.
//!
//! History walks a channel's buckets newest first, back to the channel's own bucket (a channel
//! is older than its messages). Like Discord's query code, a client remembers the buckets it
//! found empty once they are settled (ended a day ago), and skips them afterwards.
//!
//! A range deletion ([`StoreClient::delete_range`]) becomes one range tombstone per bucket
//! its ids span, each cut to that bucket's ids, written in turn at the client's level; ids
//! older than the channel or newer than the bucket after the newest by this node's clock have
//! no bucket to delete from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::node::{RingRequest, RingResponse};
use super::{bucket_of, Cell, Consistency, PartitionQuery, RangeTombstone, Row, RowKey};
use super::{StoreError, BUCKET_MS};
use super::{READ_TIMEOUT_MS, WRITE_TIMEOUT_MS};
use crate::env::clock::NodeClock;
use crate::ids;
use crate::model::StoredMessage;
use crate::rpc::RpcClient;

/// Extra time a coordinator gets beyond its replicas' timeout.
const COORDINATOR_SLACK_MS: u64 = 500;

/// A history page request, as the REST API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The channel.
    pub channel_id: u64,
    /// Only messages older than this id.
    pub before: Option<u64>,
    /// At most this many messages.
    pub limit: usize,
}

/// A client of the ring.
#[derive(Debug, Clone)]
pub struct StoreClient {
    coordinators: Vec<SocketAddr>,
    rpc: RpcClient,
    consistency: Consistency,
    clock: NodeClock,
    /// Per channel, buckets read whole and found empty, which later reads skip.
    empty_buckets: Arc<Mutex<BTreeMap<u64, BTreeSet<u32>>>>,
}

impl StoreClient {
    /// A client of the ring nodes at `coordinators`, reading and writing at `consistency`;
    /// `clock` tells it which bucket is the newest.
    pub fn new(coordinators: Vec<SocketAddr>, consistency: Consistency, clock: NodeClock) -> Self {
        assert!(
            !coordinators.is_empty(),
            "a store client needs at least one ring node"
        );
        Self {
            coordinators,
            rpc: RpcClient::new(),
            consistency,
            clock,
            empty_buckets: Arc::default(),
        }
    }

    async fn send(
        &self,
        channel_id: u64,
        request: RingRequest,
        timeout_ms: u64,
    ) -> Result<RingResponse, StoreError> {
        let count = self.coordinators.len();
        let first = usize::try_from(channel_id % count as u64).unwrap_or(0);
        let timeout = Duration::from_millis(timeout_ms + COORDINATOR_SLACK_MS);
        let mut failures = Vec::new();
        for step in 0..count {
            let coordinator = self.coordinators[(first + step) % count];
            match self
                .rpc
                .call::<_, RingResponse>(coordinator, &request, timeout)
                .await
            {
                Ok(response) => return Ok(response),
                Err(error) => failures.push(error.to_string()),
            }
        }
        Err(StoreError::NoCoordinator(failures.join("; ")))
    }

    /// Buckets below this one can no longer get messages: they ended a day or more ago, by this
    /// node's clock (the margin covers writers whose clocks lag behind).
    fn settled_bucket(&self) -> u32 {
        let day_ms = 24 * 60 * 60 * 1000;
        bucket_of(ids::from_timestamp_ms(self.clock.now_ms() - day_ms))
    }

    fn known_empty(&self, channel_id: u64, bucket: u32) -> bool {
        let empty = self.empty_buckets.lock().unwrap_or_else(|p| p.into_inner());
        empty
            .get(&channel_id)
            .is_some_and(|buckets| buckets.contains(&bucket))
    }

    fn remember_empty(&self, channel_id: u64, bucket: u32) {
        let mut empty = self.empty_buckets.lock().unwrap_or_else(|p| p.into_inner());
        empty.entry(channel_id).or_default().insert(bucket);
    }

    /// Stores `message` with write timestamp `write_us`.
    pub async fn put(&self, message: &StoredMessage, write_us: i64) -> Result<(), StoreError> {
        let key = RowKey {
            channel_id: message.channel_id,
            bucket: bucket_of(message.message_id),
            message_id: message.message_id,
        };
        let row = Row {
            key,
            cell: Cell {
                write_us,
                value: Some(message.clone()),
            },
        };
        let request = RingRequest::Write {
            row,
            consistency: self.consistency,
        };
        match self
            .send(message.channel_id, request, WRITE_TIMEOUT_MS)
            .await?
        {
            RingResponse::Written => Ok(()),
            RingResponse::Failed(error) => Err(error),
            other => Err(StoreError::Storage(format!("a write answered {other:?}"))),
        }
    }

    /// The message `message_id` of `channel_id`: one slice of its partition holding only
    /// that id; `None` if it is absent or deleted.
    pub async fn get(
        &self,
        channel_id: u64,
        message_id: u64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let slice = PartitionQuery {
            channel_id,
            bucket: bucket_of(message_id),
            before: message_id.checked_add(1),
            after: message_id.checked_sub(1),
            limit: 1,
        };
        let request = RingRequest::Read {
            query: slice,
            consistency: self.consistency,
        };
        let rows = match self.send(channel_id, request, READ_TIMEOUT_MS).await? {
            RingResponse::Rows(rows) => rows,
            RingResponse::Failed(error) => return Err(error),
            other => return Err(StoreError::Storage(format!("a read answered {other:?}"))),
        };
        Ok(rows
            .into_iter()
            .filter(|row| row.key.message_id == message_id)
            .find_map(|row| row.cell.value))
    }

    /// Deletes message `message_id` of `channel_id` with a tombstone at `write_us`.
    pub async fn delete(
        &self,
        channel_id: u64,
        message_id: u64,
        write_us: i64,
    ) -> Result<(), StoreError> {
        let key = RowKey {
            channel_id,
            bucket: bucket_of(message_id),
            message_id,
        };
        let row = Row {
            key,
            cell: Cell {
                write_us,
                value: None,
            },
        };
        let request = RingRequest::Write {
            row,
            consistency: self.consistency,
        };
        match self.send(channel_id, request, WRITE_TIMEOUT_MS).await? {
            RingResponse::Written => Ok(()),
            RingResponse::Failed(error) => Err(error),
            other => Err(StoreError::Storage(format!("a delete answered {other:?}"))),
        }
    }

    /// Deletes the messages `from..=to` of `channel_id` with range tombstones at `write_us`:
    /// a message written at or before `write_us` is gone, a later write survives. Fails on
    /// the first bucket whose deletion fails; the buckets before it stay deleted.
    pub async fn delete_range(
        &self,
        channel_id: u64,
        from: u64,
        to: u64,
        write_us: i64,
    ) -> Result<(), StoreError> {
        let newest = bucket_of(ids::from_timestamp_ms(self.clock.now_ms())).saturating_add(1);
        let first = bucket_of(from).max(bucket_of(channel_id));
        let last = bucket_of(to).min(newest);
        for bucket in first..=last {
            let tombstone = RangeTombstone {
                channel_id,
                bucket,
                from: from.max(bucket_first_id(bucket)),
                to: to.min(bucket_first_id(bucket.saturating_add(1)).saturating_sub(1)),
                deleted_at_us: write_us,
            };
            let request = RingRequest::WriteRange {
                tombstone,
                consistency: self.consistency,
            };
            match self.send(channel_id, request, WRITE_TIMEOUT_MS).await? {
                RingResponse::Written => {}
                RingResponse::Failed(error) => return Err(error),
                other => {
                    return Err(StoreError::Storage(format!(
                        "a range delete answered {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// A page of history, newest first, walking buckets back to the channel's creation.
    pub async fn history(&self, query: HistoryQuery) -> Result<Vec<StoredMessage>, StoreError> {
        let newest_bucket = match query.before {
            Some(before) => bucket_of(before),
            // One bucket of slack for writers whose clocks run ahead of this node's.
            None => bucket_of(ids::from_timestamp_ms(self.clock.now_ms())).saturating_add(1),
        };
        let oldest_bucket = bucket_of(query.channel_id);
        let mut messages = Vec::new();

        let mut bucket = newest_bucket.max(oldest_bucket);
        let settled = self.settled_bucket();
        loop {
            if self.known_empty(query.channel_id, bucket) {
                if bucket <= oldest_bucket {
                    break;
                }
                bucket -= 1;
                continue;
            }
            let remaining = query.limit - messages.len();
            let slice = PartitionQuery {
                channel_id: query.channel_id,
                bucket,
                before: query.before,
                after: None,
                limit: remaining,
            };
            let request = RingRequest::Read {
                query: slice,
                consistency: self.consistency,
            };
            let rows = match self
                .send(query.channel_id, request, READ_TIMEOUT_MS)
                .await?
            {
                RingResponse::Rows(rows) => rows,
                RingResponse::Failed(error) => return Err(error),
                other => {
                    return Err(StoreError::Storage(format!("a read answered {other:?}")));
                }
            };
            // A settled bucket read whole with nothing in it stays empty: skip it from now on.
            let whole = query.before.is_none_or(|b| bucket < bucket_of(b));
            if rows.is_empty() && whole && bucket < settled {
                self.remember_empty(query.channel_id, bucket);
            }
            messages.extend(rows.into_iter().filter_map(|row| row.cell.value));
            if messages.len() >= query.limit || bucket <= oldest_bucket {
                break;
            }
            bucket -= 1;
        }
        Ok(messages)
    }
}

/// The smallest snowflake in `bucket`.
fn bucket_first_id(bucket: u32) -> u64 {
    ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS + i64::from(bucket) * BUCKET_MS)
}
