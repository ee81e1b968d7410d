//! The ring backend: [`MessageStore`] over the built-in replicated ring's client.
//!
//! A thin adapter: every operation is one [`StoreClient`] call at the client's consistency
//! level (QUORUM in the service), so retries, coordinator rotation, bucket walking and the
//! empty-bucket memory are the client's. Errors pass through unchanged.
//!
//! [`spawn_local_ring`] starts ring nodes in this process on loopback ports, each on its own
//! data directory, for tests and benchmarks that compare backends on one machine.
//! Not modelled here: anything the client does not do itself.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{HistoryQuery, MessageStore, StoreFuture, TimedMessage};
use crate::directory::ChangeRecord;
use crate::env::clock::NodeClock;
use crate::env::disk::{Disk, RealDisk};
use crate::model::StoredMessage;
use crate::ring::client::StoreClient;
use crate::ring::hints::HINT_WINDOW_MS_DEFAULT;
use crate::ring::layout::RingLayout;
use crate::ring::node::{engine_config, RingNodeConfig};

/// The ring, as a message store.
#[derive(Debug, Clone)]
pub struct RingStore {
    client: StoreClient,
}

impl RingStore {
    /// A store over `client`.
    pub fn new(client: StoreClient) -> Self {
        Self { client }
    }
}

impl MessageStore for RingStore {
    fn put<'a>(&'a self, message: &'a StoredMessage, write_us: i64) -> StoreFuture<'a, ()> {
        Box::pin(self.client.put(message, write_us))
    }

    fn get(&self, channel_id: u64, message_id: u64) -> StoreFuture<'_, Option<TimedMessage>> {
        Box::pin(async move {
            let row = self.client.get(channel_id, message_id).await?;
            Ok(row.and_then(|row| {
                let write_us = row.cell.write_us;
                row.cell
                    .value
                    .map(|message| TimedMessage { message, write_us })
            }))
        })
    }

    fn delete(&self, channel_id: u64, message_id: u64, write_us: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.client.delete(channel_id, message_id, write_us))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(async move {
            if query.limit == 0 {
                return Ok(Vec::new());
            }
            self.client.history(query).await
        })
    }

    fn oldest_after(
        &self,
        channel_id: u64,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        Box::pin(self.client.oldest_after(channel_id, after, limit))
    }

    fn put_directory_change<'a>(
        &'a self,
        record: &'a ChangeRecord,
        write_us: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.client.put_directory_change(record, write_us))
    }

    fn directory_changes_after(&self, after: u64) -> StoreFuture<'_, Vec<ChangeRecord>> {
        Box::pin(self.client.directory_changes_after(after))
    }

    fn backend(&self) -> &'static str {
        "ring"
    }
}

/// Starts `count` ring nodes (replication factor `count.min(3)`) on ephemeral loopback ports,
/// node `i` keeping its data under `dir/ring-i`, as tasks of the current runtime. Returns
/// their addresses once every node listens.
pub async fn spawn_local_ring(dir: &Path, count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let layout = Arc::new(RingLayout::single_datacenter(addrs.clone(), count.min(3)));
    for (index, listener) in listeners.into_iter().enumerate() {
        let disk = RealDisk::open(dir.join(format!("ring-{}", index + 1)))?;
        let config = RingNodeConfig {
            addr: addrs[index],
            layout: layout.clone(),
            disk: Arc::new(disk) as Arc<dyn Disk>,
            clock: NodeClock::new(),
            hint_window_ms: HINT_WINDOW_MS_DEFAULT,
            engine: engine_config(),
            repair_interval_ms: None,
        };
        tokio::spawn(crate::ring::node::run(listener, config));
    }
    Ok(addrs)
}
