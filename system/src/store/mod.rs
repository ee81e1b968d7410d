//! Message storage as the service needs it, over interchangeable backends.
//!
//! [`MessageStore`] is the one interface: put a message, read one, delete one, and a page of
//! a channel's history newest first. Backends:
//! - [`ring::RingStore`], the built-in replicated ring, through [`crate::ring::client`];
//! - `cql::CqlStore` (real-runtime build only), ScyllaDB or Apache Cassandra through the
//!   `scylla` driver, with the same table.
//!
//! Every backend keeps Discord's table: partition `(channel_id, bucket)` with 10-day buckets
//! ([`crate::ring::bucket_of`]), clustering `message_id` newest first, and walks a channel's
//! buckets newest first back to the channel's own bucket. Writes carry the caller's write
//! timestamp, so a put and a delete of one message resolve by last-write-wins on every
//! backend.
//!
//! Outcomes are [`StoreError`]s: `Unavailable` (too few replicas up, nothing written),
//! `Timeout` (too few replicas answered in time; a write may have been applied),
//! `NoCoordinator` (no node reachable) and `Storage` (anything else, named).
//!
//! Guarantees: at QUORUM on both sides, an acknowledged write is seen by every later read.
//! Not modelled here: ties between writes at the same timestamp resolve per cell in Cassandra
//! and per row in the ring, so two different writes at one timestamp may merge differently.
//!
//! Beyond messages the trait carries the directory log: the guilds, channels and members
//! created at run time, as [`ChangeRecord`]s read back in id order, so every role rebuilds
//! the same directory from whichever backend holds it.
//!
//! Extending it: a new query shape is a variant of [`HistoryAnchor`] or a field of
//! [`HistoryQuery`], which the ring backend hands to its client whole and the CQL backend
//! takes apart, so it cannot compile while ignoring one. A new operation is a trait method;
//! each backend then gains one method.

pub mod ring;

// Also left out when rustdoc collects doctests: the simulated test run gives rustdoc no
// `--cfg madsim`, yet its dependencies were resolved without the driver.
#[cfg(not(any(madsim, doctest)))]
pub mod cql;

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

pub use crate::ring::client::{HistoryAnchor, HistoryPage, HistoryQuery};
pub use crate::ring::StoreError;

use crate::directory::ChangeRecord;
use crate::model::StoredMessage;
use crate::ring::client::StoreClient;

/// What a store operation returns: a boxed future, so stores can sit behind `dyn`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A stored message and the write timestamp of its newest write, which a later edit or
/// delete must exceed to win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedMessage {
    /// The message as stored.
    pub message: StoredMessage,
    /// µs since the Unix epoch.
    pub write_us: i64,
}

/// Storage for the `messages` table and the directory log.
pub trait MessageStore: Send + Sync {
    /// Stores `message` with write timestamp `write_us` (µs since the Unix epoch); a later
    /// put of the same ids replaces it.
    fn put<'a>(&'a self, message: &'a StoredMessage, write_us: i64) -> StoreFuture<'a, ()>;

    /// The message `message_id` of `channel_id` with its write timestamp, or `None` if it is
    /// absent or deleted.
    fn get(&self, channel_id: u64, message_id: u64) -> StoreFuture<'_, Option<TimedMessage>>;

    /// Deletes the message `message_id` of `channel_id` at `write_us`: a put at or before
    /// `write_us` is gone, a later one survives. Deleting an absent message succeeds.
    fn delete(&self, channel_id: u64, message_id: u64, write_us: i64) -> StoreFuture<'_, ()>;

    /// At most `query.limit` messages of the channel, newest first, older than
    /// `query.before` when it is given.
    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, Vec<StoredMessage>>;

    /// The `limit` oldest messages of `channel_id` with ids above `after`, oldest first.
    fn oldest_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredMessage>>;

    /// A page anchored as Discord anchors it ([`HistoryAnchor`]), newest first.
    fn page(&self, page: HistoryPage) -> StoreFuture<'_, Vec<StoredMessage>>;

    /// Appends `record` to the directory log at write timestamp `write_us`; writing the same
    /// record again changes nothing.
    fn put_directory_change<'a>(
        &'a self,
        record: &'a ChangeRecord,
        write_us: i64,
    ) -> StoreFuture<'a, ()>;

    /// The directory log's records with ids above `after`, oldest first.
    fn directory_changes_after(&self, after: u64) -> StoreFuture<'_, Vec<ChangeRecord>>;

    /// A short name for reports: `ring` or `cql`.
    fn backend(&self) -> &'static str;
}

/// A shared store, as every role holds one.
pub type SharedStore = Arc<dyn MessageStore>;

impl From<StoreClient> for SharedStore {
    fn from(client: StoreClient) -> Self {
        Arc::new(ring::RingStore::new(client))
    }
}

/// A page composed from `history` and `oldest_after`, for backends without a page query of
/// their own: `after` is the oldest messages above the id, reversed; `around` is `limit / 2`
/// of those above the id and the rest at or below it, newest first.
pub async fn compose_page(
    store: &dyn MessageStore,
    page: HistoryPage,
) -> Result<Vec<StoredMessage>, StoreError> {
    let latest = |before| HistoryQuery {
        channel_id: page.channel_id,
        before,
        limit: page.limit,
    };
    match page.anchor {
        HistoryAnchor::Latest => store.history(latest(None)).await,
        HistoryAnchor::Before(id) => store.history(latest(Some(id))).await,
        HistoryAnchor::After(id) => {
            let mut messages = store.oldest_after(page.channel_id, id, page.limit).await?;
            messages.reverse();
            Ok(messages)
        }
        HistoryAnchor::Around(id) => {
            let newer_count = page.limit / 2;
            let mut messages = store.oldest_after(page.channel_id, id, newer_count).await?;
            messages.reverse();
            let older = HistoryQuery {
                channel_id: page.channel_id,
                before: Some(id.saturating_add(1)),
                limit: page.limit - newer_count,
            };
            messages.extend(store.history(older).await?);
            Ok(messages)
        }
    }
}
