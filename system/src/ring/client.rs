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
//! A page anchored `after` an id ([`HistoryAnchor::After`]) wants the oldest messages above
//! it, while a partition is read newest first. The client walks buckets oldest first from the
//! anchor's bucket, and inside a bucket reads windows of ids that start an hour wide and
//! double: a window that answers fewer rows than asked is complete; one that fills the page
//! is paged down until the page comes back short, keeping the oldest rows. Each slice read
//! goes through the coordinator, so short-read protection applies to every one of them. An
//! `around` page is the `after` page of half the limit above the id, and the newest rows at
//! or below the id for the rest, so the message itself is in it.
//!
//! The directory log ([`DIRECTORY_LOG_CHANNEL`]) is one reserved partition of the same table:
//! channel 0 (no snowflake is 0), bucket 0, one row per [`ChangeRecord`] keyed by its id, the
//! record as JSON in the row's content. It is read newest first down to a given id.
//!
//! A range deletion ([`StoreClient::delete_range`]) becomes one range tombstone per bucket
//! its ids span, each cut to that bucket's ids, written in turn at the client's level; ids
//! older than the channel or newer than the bucket after the newest by this node's clock have
//! no bucket to delete from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::node::{RingRequest, RingResponse};
use super::{bucket_of, Cell, Consistency, PartitionQuery, RangeTombstone, Row, RowKey};
use super::{StoreError, BUCKET_MS};
use super::{READ_TIMEOUT_MS, WRITE_TIMEOUT_MS};
use crate::directory::ChangeRecord;
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

/// Where a page of history sits, as Discord's mutually exclusive `before` / `after` /
/// `around` query parameters place it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HistoryAnchor {
    /// The newest messages.
    Latest,
    /// The newest messages with ids below this one.
    Before(u64),
    /// The oldest messages with ids above this one.
    After(u64),
    /// `limit / 2` messages above this id and the rest at or below it (the message itself
    /// first among them).
    Around(u64),
}

/// A page of history anchored anywhere, as the REST API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The channel.
    pub channel_id: u64,
    /// Where the page sits.
    pub anchor: HistoryAnchor,
    /// At most this many messages.
    pub limit: usize,
}

/// The reserved channel id of the directory log's partition (bucket 0).
pub const DIRECTORY_LOG_CHANNEL: u64 = 0;
/// Rows per page of a directory log read.
const DIRECTORY_LOG_PAGE: usize = 500;

/// The first window an `after` read tries: an hour of ids.
const AFTER_WINDOW_IDS_FIRST: u64 = (60 * 60 * 1000) << 22;

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
        // One bucket of slack for writers whose clocks run ahead of this node's.
        let head_bucket = self.head_bucket();
        let newest_bucket = query
            .before
            .map_or(head_bucket, |before| bucket_of(before).min(head_bucket));
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
            let rows = self.read_slice(slice).await?;
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

    /// The newest bucket a message can be in: this node's, plus one of slack for writers whose
    /// clocks run ahead.
    fn head_bucket(&self) -> u32 {
        bucket_of(ids::from_timestamp_ms(self.clock.now_ms())).saturating_add(1)
    }

    /// One partition slice at the client's level, newest first.
    async fn read_slice(&self, slice: PartitionQuery) -> Result<Vec<Row>, StoreError> {
        let channel_id = slice.channel_id;
        let request = RingRequest::Read {
            query: slice,
            consistency: self.consistency,
        };
        match self.send(channel_id, request, READ_TIMEOUT_MS).await? {
            RingResponse::Rows(rows) => Ok(rows),
            RingResponse::Failed(error) => Err(error),
            other => Err(StoreError::Storage(format!("a read answered {other:?}"))),
        }
    }

    /// Message `message_id` of `channel_id` with its write timestamp, if it exists (a deleted
    /// message does not).
    pub async fn get(&self, channel_id: u64, message_id: u64) -> Result<Option<Row>, StoreError> {
        let slice = PartitionQuery {
            channel_id,
            bucket: bucket_of(message_id),
            before: Some(message_id.saturating_add(1)),
            after: Some(message_id.saturating_sub(1)),
            limit: 1,
        };
        let rows = self.read_slice(slice).await?;
        Ok(rows
            .into_iter()
            .find(|row| row.key.message_id == message_id && row.cell.value.is_some()))
    }

    /// Appends `record` to the directory log, at write timestamp `write_us`.
    pub async fn put_directory_change(
        &self,
        record: &ChangeRecord,
        write_us: i64,
    ) -> Result<(), StoreError> {
        let content = serde_json::to_string(record)
            .map_err(|e| StoreError::Storage(format!("a directory change as JSON: {e}")))?;
        let row = Row {
            key: RowKey {
                channel_id: DIRECTORY_LOG_CHANNEL,
                bucket: 0,
                message_id: record.id,
            },
            cell: Cell {
                write_us,
                value: Some(StoredMessage {
                    channel_id: DIRECTORY_LOG_CHANNEL,
                    message_id: record.id,
                    guild_id: record.guild_id(),
                    author_id: record.actor_id,
                    content,
                    ..Default::default()
                }),
            },
        };
        let request = RingRequest::Write {
            row,
            consistency: self.consistency,
        };
        match self
            .send(DIRECTORY_LOG_CHANNEL, request, WRITE_TIMEOUT_MS)
            .await?
        {
            RingResponse::Written => Ok(()),
            RingResponse::Failed(error) => Err(error),
            other => Err(StoreError::Storage(format!(
                "a log write answered {other:?}"
            ))),
        }
    }

    /// The directory log's records with ids above `after`, oldest first. A row that does not
    /// parse is skipped with a warning rather than blocking every later change.
    pub async fn directory_changes_after(
        &self,
        after: u64,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut records = Vec::new();
        let mut before = None;
        loop {
            let slice = PartitionQuery {
                channel_id: DIRECTORY_LOG_CHANNEL,
                bucket: 0,
                before,
                after: Some(after),
                limit: DIRECTORY_LOG_PAGE,
            };
            let rows = self.read_slice(slice).await?;
            let full = rows.len() >= DIRECTORY_LOG_PAGE;
            before = rows.last().map(|row| row.key.message_id);
            for row in rows {
                let Some(value) = row.cell.value else {
                    continue;
                };
                match serde_json::from_str::<ChangeRecord>(&value.content) {
                    Ok(record) => records.push(record),
                    Err(error) => {
                        let id = row.key.message_id;
                        tracing::warn!(id, %error, "directory_change_unreadable");
                    }
                }
            }
            if !full {
                break;
            }
        }
        records.sort_by_key(|r| r.id);
        Ok(records)
    }

    /// The `limit` oldest messages of `channel_id` with ids above `after`, oldest first.
    pub async fn oldest_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let head_bucket = self.head_bucket();
        let mut bucket = bucket_of(after).max(bucket_of(channel_id));
        let mut messages = Vec::new();
        while messages.len() < limit && bucket <= head_bucket {
            if !self.known_empty(channel_id, bucket) {
                let want = limit - messages.len();
                let found = self
                    .oldest_in_bucket(channel_id, bucket, after, want)
                    .await?;
                messages.extend(found);
            }
            bucket = bucket.saturating_add(1);
            if bucket == u32::MAX {
                break;
            }
        }
        Ok(messages)
    }

    /// The `want` oldest messages of one bucket above `after`, oldest first, read in windows
    /// that double in width (see the module doc).
    async fn oldest_in_bucket(
        &self,
        channel_id: u64,
        bucket: u32,
        after: u64,
        want: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let bucket_start = bucket_first_id(bucket);
        let bucket_end = bucket_first_id(bucket.saturating_add(1));
        let whole = after < bucket_start;
        let now_id = ids::from_timestamp_ms(self.clock.now_ms());
        let mut low = after.max(bucket_start.saturating_sub(1));
        let mut span = AFTER_WINDOW_IDS_FIRST;
        let mut messages = Vec::new();
        while messages.len() < want && low.saturating_add(1) < bucket_end {
            // Past this node's now, the rest of the bucket is one window.
            let mut high = low.saturating_add(span).min(bucket_end);
            if high > now_id {
                high = bucket_end;
            }
            let need = want - messages.len();
            let window = self
                .oldest_in_window(channel_id, bucket, low, high, need)
                .await?;
            messages.extend(window);
            low = high - 1;
            span = span.saturating_mul(2);
        }
        if messages.is_empty() && whole && bucket < self.settled_bucket() {
            self.remember_empty(channel_id, bucket);
        }
        Ok(messages)
    }

    /// The `need` oldest messages with ids in `low+1..high` of one bucket, oldest first.
    async fn oldest_in_window(
        &self,
        channel_id: u64,
        bucket: u32,
        low: u64,
        high: u64,
        need: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut full_page: Vec<Row> = Vec::new();
        let mut before = high;
        loop {
            let slice = PartitionQuery {
                channel_id,
                bucket,
                before: Some(before),
                after: Some(low),
                limit: need,
            };
            let rows = self.read_slice(slice).await?;
            if rows.len() < need {
                // Short: these are the window's oldest; the previous full page tops them up.
                let top_up = need - rows.len();
                let kept = full_page.len().saturating_sub(top_up);
                let newest_first = rows.into_iter().chain(full_page.into_iter().skip(kept));
                let mut messages: Vec<StoredMessage> =
                    newest_first.filter_map(|row| row.cell.value).collect();
                messages.sort_by_key(|m| m.message_id);
                return Ok(messages);
            }
            before = rows.last().map_or(low, |row| row.key.message_id);
            full_page = rows;
            if before <= low.saturating_add(1) {
                let mut messages: Vec<StoredMessage> = full_page
                    .into_iter()
                    .filter_map(|row| row.cell.value)
                    .collect();
                messages.sort_by_key(|m| m.message_id);
                return Ok(messages);
            }
        }
    }
}

/// The smallest snowflake in `bucket`.
fn bucket_first_id(bucket: u32) -> u64 {
    ids::from_timestamp_ms(ids::DISCORD_EPOCH_MS + i64::from(bucket) * BUCKET_MS)
}
