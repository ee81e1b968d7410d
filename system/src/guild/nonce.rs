//! The guild process's memory of recent sends' nonces, for `enforce_nonce`.
//!
//! Every send with a nonce is remembered under (channel, author, nonce); a send with
//! `enforce_nonce` is checked against it. The guild process that orders the channel checks
//! under the guild's lock, before it mints an id, so two copies of one enforced send can never
//! both make a message, whichever API nodes they came through. A nonce sent again without
//! `enforce_nonce` makes a new message, which later enforced sends then answer with.
//! An entry lives [`NONCE_WINDOW_MS`] after its message's id was minted, and at most
//! [`NONCE_ENTRIES_MAX`] entries are kept (the oldest go first).
//!
//! An entry is `stored` once the message's write was acknowledged. A write that failed in a
//! way that may still have applied it (a timeout) leaves the entry unstored: the retry writes
//! the same row again (same id, so it is idempotent) instead of minting a second message, and
//! delivers it if no later event of the guild has been delivered since; otherwise live
//! sessions would get it out of id order, so it is left to history.
//!
//! The memory is the process's own and dies with it. A restarted guild process covers the
//! gap from the store: for [`NONCE_WINDOW_MS`] after its start, the first enforced send in a
//! channel reads the channel's messages of the last window (stored messages keep their nonce
//! and author) into the memory, once per channel; if that read fails, the send fails rather
//! than risk a copy. See [`super::changes`].

use std::collections::{BTreeMap, BTreeSet};

use crate::ids;
use crate::model::StoredMessage;

/// How long a nonce is remembered: Discord says "the past few minutes".
pub const NONCE_WINDOW_MS: i64 = 5 * 60 * 1000;
/// The most entries kept.
pub const NONCE_ENTRIES_MAX: usize = 100_000;

/// (channel id, author id, nonce).
pub type NonceKey = (u64, u64, String);

/// What a nonce was used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceEntry {
    /// The message the first send made.
    pub message: StoredMessage,
    /// Whether its write was acknowledged.
    pub stored: bool,
    /// The guild's next event sequence number when it was remembered: if it is still the
    /// next when a retry writes an unstored message again, no later event of the guild was
    /// delivered and the message can be delivered in order.
    pub guild_seq: u64,
}

/// Recent nonces of one guild node.
#[derive(Debug, Default)]
pub struct NonceCache {
    entries: BTreeMap<NonceKey, NonceEntry>,
    /// The keys by their message's id, oldest first, for expiry.
    by_id: BTreeMap<u64, NonceKey>,
    /// Channels whose recent nonces were read from the store since this process started.
    loaded: BTreeSet<u64>,
}

fn expired(message_id: u64, now_ms: i64) -> bool {
    now_ms - ids::timestamp_ms(message_id) > NONCE_WINDOW_MS
}

impl NonceCache {
    /// The entry of `key`, unless it is older than the window.
    pub fn get(&self, key: &NonceKey, now_ms: i64) -> Option<&NonceEntry> {
        self.entries
            .get(key)
            .filter(|entry| !expired(entry.message.message_id, now_ms))
    }

    /// Remembers `entry` under `key`, forgetting what expired and the oldest past the cap.
    pub fn insert(&mut self, key: NonceKey, entry: NonceEntry, now_ms: i64) {
        if let Some(old) = self.entries.insert(key.clone(), entry.clone()) {
            self.by_id.remove(&old.message.message_id);
        }
        self.by_id.insert(entry.message.message_id, key);
        while let Some((&oldest, _)) = self.by_id.first_key_value() {
            if !expired(oldest, now_ms) && self.by_id.len() <= NONCE_ENTRIES_MAX {
                break;
            }
            if let Some(key) = self.by_id.remove(&oldest) {
                self.entries.remove(&key);
            }
        }
    }

    /// Whether `channel_id`'s recent nonces were read from the store.
    pub fn loaded(&self, channel_id: u64) -> bool {
        self.loaded.contains(&channel_id)
    }

    /// Notes that `channel_id`'s recent nonces were read from the store.
    pub fn mark_loaded(&mut self, channel_id: u64) {
        self.loaded.insert(channel_id);
    }

    /// Forgets that `channel_id`'s recent nonces were read (its guild moved here again).
    pub fn forget_loaded(&mut self, channel_id: u64) {
        self.loaded.remove(&channel_id);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(at_ms: i64, nonce: &str) -> StoredMessage {
        StoredMessage {
            channel_id: 1,
            message_id: ids::from_timestamp_ms(at_ms),
            guild_id: 2,
            author_id: 3,
            content: "hi".into(),
            nonce: Some(nonce.into()),
            edited_ms: None,
            referenced_message_id: None,
            reactions: Vec::new(),
        }
    }

    #[test]
    fn a_nonce_is_remembered_for_the_window_only() {
        let start = 1_700_000_000_000;
        let mut cache = NonceCache::default();
        let key: NonceKey = (1, 3, "n".into());
        let entry = NonceEntry {
            message: message(start, "n"),
            stored: true,
            guild_seq: 1,
        };
        cache.insert(key.clone(), entry.clone(), start);
        assert_eq!(cache.get(&key, start + NONCE_WINDOW_MS), Some(&entry));
        assert_eq!(cache.get(&key, start + NONCE_WINDOW_MS + 1), None);
        assert_eq!(
            cache.get(&(1, 4, "n".into()), start),
            None,
            "another author"
        );

        // A later insert drops the expired entry.
        let later = start + NONCE_WINDOW_MS + 1;
        let other = NonceEntry {
            message: message(later, "m"),
            stored: false,
            guild_seq: 1,
        };
        cache.insert((1, 3, "m".into()), other, later);
        assert_eq!(cache.len(), 1);
    }
}
