//! The ring backend: [`MessageStore`] over the built-in replicated ring's client.
//!
//! A thin adapter: every operation is one [`StoreClient`] call at the client's consistency
//! level (QUORUM in the service), so retries, coordinator rotation, bucket walking and the
//! empty-bucket memory are the client's. Errors pass through unchanged.
//! Not modelled here: anything the client does not do itself.

use super::{HistoryQuery, MessageStore, StoreFuture};
use crate::model::StoredMessage;
use crate::ring::client::StoreClient;

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

    fn get(&self, channel_id: u64, message_id: u64) -> StoreFuture<'_, Option<StoredMessage>> {
        Box::pin(self.client.get(channel_id, message_id))
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

    fn backend(&self) -> &'static str {
        "ring"
    }
}
