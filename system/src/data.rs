//! The data service: nodes between the API and the store that answer history reads and
//! coalesce concurrent identical ones into one store query.
//!
//! The API routes a read to a data-service node by a consistent hash of its `channel_id`
//! ([`DataClient`]), so every read of one channel meets the others on one node, where they can
//! share a query. On a node, reads with the same key (channel, anchor, `limit`) share a
//! worker: the first read of a key starts it; reads arriving while it queries the store wait
//! for its next query, which starts as soon as the current one ends and answers every read
//! that arrived in the meantime. So a burst of identical reads costs one store query per
//! query's duration it spans, however many reads it holds, and every read is answered by a
//! query that started after the read arrived: a read sees every message acknowledged before
//! it was sent, as a direct store read would.
//!
//! Counted (for tests and metrics): reads answered, store queries issued, and reads answered by
//! a query another read also got ([`DataStats`]).
//!
//! Not modelled: caching between bursts (each burst queries the store again), a bound on
//! waiting readers per key, and cancelling a query whose readers all went away.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::hashring::{HashRing, POINTS_PER_NODE_DEFAULT};
use crate::model::StoredMessage;
use crate::ring::READ_TIMEOUT_MS;
use crate::rpc::{serve_rpc, RpcClient, RpcError};
use crate::store::{HistoryAnchor, HistoryPage, HistoryQuery, SharedStore, StoreError};

/// How long the API waits for the last data-service node it tries: a store read and its
/// coordinator's slack, plus a second query for a reader that arrived while the first ran.
const DATA_CALL_TIMEOUT: Duration = Duration::from_millis(2 * READ_TIMEOUT_MS + 2_000);
/// How long it waits for any other before it tries the next (a paused node answers nothing).
const DATA_FAILOVER_TIMEOUT: Duration = Duration::from_millis(READ_TIMEOUT_MS + 1_000);

/// A request to a data-service node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DataRequest {
    /// A page of a channel's history, newest first.
    History {
        /// The page.
        page: HistoryPage,
    },
    /// The node's counters.
    Stats,
}

/// A data-service node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DataResponse {
    /// The page asked for, newest first.
    Messages(Vec<StoredMessage>),
    /// The store failed.
    Failed(StoreError),
    /// The node's counters.
    Stats(DataStats),
}

/// A data-service node's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStats {
    /// History reads answered (successfully or not).
    pub reads: u64,
    /// Store queries issued for them.
    pub store_queries: u64,
    /// Reads answered by a store query that also answered another read.
    pub coalesced_reads: u64,
}

type Answer = Result<Vec<StoredMessage>, StoreError>;
type Key = HistoryPage;

/// The readers of one key waiting for its next query (a key is present while its worker runs).
#[derive(Default)]
struct Pending {
    waiting: Vec<oneshot::Sender<Answer>>,
}

/// One data-service node's coalescing reader.
pub struct DataService {
    store: SharedStore,
    /// Keys with a running worker, and the readers waiting for its next query.
    keys: Mutex<BTreeMap<Key, Pending>>,
    reads: AtomicU64,
    store_queries: AtomicU64,
    coalesced_reads: AtomicU64,
}

impl DataService {
    /// A data service reading from `store`.
    pub fn new(store: impl Into<SharedStore>) -> Arc<Self> {
        Arc::new(Self {
            store: store.into(),
            keys: Mutex::default(),
            reads: AtomicU64::new(0),
            store_queries: AtomicU64::new(0),
            coalesced_reads: AtomicU64::new(0),
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Pending>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters so far.
    pub fn stats(&self) -> DataStats {
        DataStats {
            reads: self.reads.load(Ordering::Relaxed),
            store_queries: self.store_queries.load(Ordering::Relaxed),
            coalesced_reads: self.coalesced_reads.load(Ordering::Relaxed),
        }
    }

    /// A page of history, from a store query that started after this call.
    pub async fn page(self: &Arc<Self>, page: HistoryPage) -> Answer {
        let key = page;
        let (tx, rx) = oneshot::channel();

        // 1. Wait for the key's next query; start its worker if none runs.
        let start_worker = {
            let mut keys = self.keys();
            let idle = !keys.contains_key(&key);
            keys.entry(key).or_default().waiting.push(tx);
            idle
        };
        if start_worker {
            let service = self.clone();
            tokio::spawn(async move { service.work(key).await });
        }

        // 2. The answer the worker hands out.
        self.reads.fetch_add(1, Ordering::Relaxed);
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Storage(
                "the data service's query for this read was dropped".to_string(),
            ))
        })
    }

    /// Queries the store for `key` while readers wait for it; ends when none is left.
    async fn work(self: Arc<Self>, key: Key) {
        loop {
            // 1. Everyone waiting now gets this query's answer; later readers, the next one's.
            let readers = {
                let mut keys = self.keys();
                let Some(pending) = keys.get_mut(&key) else {
                    return;
                };
                if pending.waiting.is_empty() {
                    keys.remove(&key);
                    return;
                }
                std::mem::take(&mut pending.waiting)
            };

            // 2. One store query for all of them.
            self.store_queries.fetch_add(1, Ordering::Relaxed);
            let shared = u64::try_from(readers.len()).unwrap_or(u64::MAX);
            if shared > 1 {
                self.coalesced_reads.fetch_add(shared, Ordering::Relaxed);
            }
            let answer = self.store.page(key).await;
            for reader in readers {
                // A reader that went away needs no answer.
                let _ = reader.send(answer.clone());
            }
        }
    }

    async fn handle(self: Arc<Self>, request: DataRequest) -> DataResponse {
        match request {
            DataRequest::History { page } => match self.page(page).await {
                Ok(messages) => DataResponse::Messages(messages),
                Err(error) => DataResponse::Failed(error),
            },
            DataRequest::Stats => DataResponse::Stats(self.stats()),
        }
    }
}

/// Runs a data-service node on `listener`, reading from `store`.
pub async fn run(listener: TcpListener, store: impl Into<SharedStore>) {
    serve(listener, store.into(), None).await;
}

/// Runs a data-service node on `listener`, counting each history read it serves into `load`.
pub async fn run_counted(
    listener: TcpListener,
    store: impl Into<SharedStore>,
    load: crate::load::NodeLoad,
) {
    serve(listener, store.into(), Some(load)).await;
}

async fn serve(listener: TcpListener, store: SharedStore, load: Option<crate::load::NodeLoad>) {
    let service = DataService::new(store);
    tracing::info!("data_node_started");
    serve_rpc(listener, move |request: DataRequest| {
        if let (Some(load), DataRequest::History { .. }) = (&load, &request) {
            load.served("history_read");
        }
        service.clone().handle(request)
    })
    .await;
}

/// The API's side: routes each read to a data-service node by its channel.
#[derive(Debug, Clone)]
pub struct DataClient {
    nodes: HashRing<SocketAddr>,
    rpc: RpcClient,
}

impl DataClient {
    /// A client of the data-service nodes at `nodes`.
    pub fn new(nodes: Vec<SocketAddr>) -> Self {
        assert!(!nodes.is_empty(), "a data client needs a data-service node");
        Self {
            nodes: HashRing::new(nodes, POINTS_PER_NODE_DEFAULT, SocketAddr::to_string),
            rpc: RpcClient::new(),
        }
    }

    /// The nodes a read of `channel_id` tries, in order: its owner first.
    pub fn route(&self, channel_id: u64) -> Vec<SocketAddr> {
        self.nodes
            .successors(channel_id)
            .into_iter()
            .copied()
            .collect()
    }

    /// The newest messages before `query.before` (or the newest of all), as [`Self::page`].
    pub async fn history(&self, query: HistoryQuery) -> Answer {
        let anchor = query
            .before
            .map_or(HistoryAnchor::Latest, HistoryAnchor::Before);
        let page = HistoryPage {
            channel_id: query.channel_id,
            anchor,
            limit: query.limit,
        };
        self.page(page).await
    }

    /// A page of history from the channel's data-service node, or the next node on the ring
    /// if it cannot be reached or does not answer (a read is safe to send twice).
    pub async fn page(&self, page: HistoryPage) -> Answer {
        let request = DataRequest::History { page };
        let mut failures = Vec::new();
        let route = self.route(page.channel_id);
        for (attempt, &node) in route.iter().enumerate() {
            let timeout = if attempt + 1 == route.len() {
                DATA_CALL_TIMEOUT
            } else {
                DATA_FAILOVER_TIMEOUT
            };
            let answer = self.rpc.call(node, &request, timeout).await;
            match answer {
                Ok(DataResponse::Messages(messages)) => return Ok(messages),
                Ok(DataResponse::Failed(error)) => return Err(error),
                Ok(DataResponse::Stats(_)) => {
                    failures.push(format!("{node} answered a read with its counters"));
                }
                Err(error @ (RpcError::Unreachable { .. } | RpcError::Unknown { .. })) => {
                    tracing::debug!(%node, %error, "data_node_failed_over");
                    failures.push(format!("data service {error}"));
                }
            }
        }
        Err(StoreError::NoCoordinator(failures.join("; ")))
    }

    /// The counters of the data-service node at `node`.
    pub async fn stats(&self, node: SocketAddr) -> Result<DataStats, RpcError> {
        match self
            .rpc
            .call(node, &DataRequest::Stats, DATA_CALL_TIMEOUT)
            .await?
        {
            DataResponse::Stats(stats) => Ok(stats),
            other => Err(RpcError::Unknown {
                addr: node,
                reason: format!("asked for counters, got {other:?}"),
            }),
        }
    }
}
