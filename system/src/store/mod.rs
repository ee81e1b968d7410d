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

use serde::{Deserialize, Serialize};

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

    /// A page anchored as Discord anchors it ([`HistoryAnchor`]), newest first. Composed
    /// from [`Self::history`] and [`Self::oldest_after`] unless a backend has a page query
    /// of its own.
    fn page(&self, page: HistoryPage) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(compose_page(self, page))
    }

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

/// Where a process keeps its messages: the built-in ring, or a CQL cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreSpec {
    /// The built-in ring (`ring`).
    Ring,
    /// ScyllaDB or Cassandra:
    /// `cql://host:port[,host:port...][/keyspace][?replication=N]`.
    Cql(CqlTarget),
}

/// A CQL cluster and the keyspace in it, as a `cql://` URL names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlTarget {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace (default [`CQL_KEYSPACE_DEFAULT`]).
    pub keyspace: String,
    /// Replicas per partition when the keyspace is created (default: one per contact point,
    /// at most three).
    pub replication_factor: u8,
}

/// The keyspace a `cql://` URL without a path names.
pub const CQL_KEYSPACE_DEFAULT: &str = "chat";
/// The longest keyspace name Cassandra accepts.
pub const KEYSPACE_NAME_MAX: usize = 48;

impl StoreSpec {
    /// Parses `ring` or a `cql://` URL; an error names the part at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "ring" {
            return Ok(StoreSpec::Ring);
        }
        let Some(rest) = text.strip_prefix("cql://") else {
            return Err(format!(
                "store '{text}': expected 'ring' or \
                 'cql://HOST:PORT[,HOST:PORT...][/KEYSPACE][?replication=N]'"
            ));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (hosts, keyspace) = match rest.split_once('/') {
            Some((hosts, keyspace)) => (hosts, keyspace),
            None => (rest, CQL_KEYSPACE_DEFAULT),
        };
        let nodes = parse_contact_points(hosts).map_err(|e| format!("store '{text}': {e}"))?;
        if let Some(problem) = keyspace_problem(keyspace) {
            return Err(format!("store '{text}': {problem}"));
        }
        let mut replication_factor = u8::try_from(nodes.len().min(3)).unwrap_or(3);
        if let Some(query) = query {
            let factor = query
                .strip_prefix("replication=")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| *n >= 1);
            replication_factor = factor.ok_or_else(|| {
                format!(
                    "store '{text}': the query is '{query}', expected 'replication=N' \
                     with N from 1 to 255"
                )
            })?;
        }
        Ok(StoreSpec::Cql(CqlTarget {
            nodes,
            keyspace: keyspace.to_string(),
            replication_factor,
        }))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Ring => write!(f, "ring"),
            StoreSpec::Cql(target) => write!(
                f,
                "cql://{}/{}?replication={}",
                target.nodes.join(","),
                target.keyspace,
                target.replication_factor
            ),
        }
    }
}

impl std::str::FromStr for StoreSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl TryFrom<String> for StoreSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<StoreSpec> for String {
    fn from(spec: StoreSpec) -> String {
        spec.to_string()
    }
}

/// Parses contact points written as `host:port[,host:port...]`, naming the first entry that
/// is not a `host:port` with a port from 1 to 65535.
pub fn parse_contact_points(list: &str) -> Result<Vec<String>, String> {
    let mut nodes = Vec::new();
    for (index, entry) in list.split(',').enumerate() {
        let entry = entry.trim();
        let port = entry
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port != 0);
        if port.is_none() {
            return Err(format!(
                "CQL node {} of '{list}' is '{entry}': expected HOST:PORT with a port 1-65535",
                index + 1
            ));
        }
        nodes.push(entry.to_string());
    }
    Ok(nodes)
}

/// What is wrong with a keyspace name for DDL text, if anything: it must be a letter
/// followed by letters, digits or `_`, at most 48 characters in all.
pub fn keyspace_problem(name: &str) -> Option<String> {
    let well_formed = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= KEYSPACE_NAME_MAX;
    (!well_formed).then(|| {
        format!(
            "keyspace name '{name}' is not a letter followed by at most {} letters, digits or _",
            KEYSPACE_NAME_MAX - 1
        )
    })
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
pub async fn compose_page<S: MessageStore + ?Sized>(
    store: &S,
    page: HistoryPage,
) -> Result<Vec<StoredMessage>, StoreError> {
    if page.limit == 0 {
        return Ok(Vec::new());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_with_their_defaults() {
        assert_eq!(StoreSpec::parse("ring"), Ok(StoreSpec::Ring));
        let one = StoreSpec::parse("cql://127.0.0.1:9042").expect("valid");
        let expected = CqlTarget {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "chat".into(),
            replication_factor: 1,
        };
        assert_eq!(one, StoreSpec::Cql(expected));
        let four = StoreSpec::parse("cql://a:1,b:2,c:3,d:4/chat_2").expect("valid");
        let StoreSpec::Cql(four) = four else {
            panic!("a CQL store");
        };
        assert_eq!((four.nodes.len(), four.keyspace.as_str()), (4, "chat_2"));
        assert_eq!(four.replication_factor, 3);
        let wide = StoreSpec::parse("cql://a:1/k?replication=5").expect("valid");
        assert_eq!(wide.to_string(), "cql://a:1/k?replication=5");
        assert_eq!(StoreSpec::parse(&wide.to_string()), Ok(wide));
    }

    #[test]
    fn bad_store_urls_name_the_part_at_fault() {
        let scheme = StoreSpec::parse("cassandra://a:1").expect_err("scheme");
        assert!(scheme.contains("expected 'ring' or 'cql://"), "{scheme}");
        let port = StoreSpec::parse("cql://a:1,b").expect_err("port");
        assert!(
            port.contains("CQL node 2") && port.contains("'b'"),
            "{port}"
        );
        let empty = StoreSpec::parse("cql://").expect_err("no node");
        assert!(empty.contains("CQL node 1"), "{empty}");
        let keyspace = StoreSpec::parse("cql://a:1/chat-1").expect_err("keyspace");
        assert!(keyspace.contains("keyspace name 'chat-1'"), "{keyspace}");
        let factor = StoreSpec::parse("cql://a:1/k?replication=0").expect_err("factor");
        assert!(factor.contains("'replication=0'"), "{factor}");
        let other = StoreSpec::parse("cql://a:1/k?rf=3").expect_err("query");
        assert!(other.contains("'rf=3'"), "{other}");
    }
}
