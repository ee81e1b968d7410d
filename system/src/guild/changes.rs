//! The guild process's edits, deletes, nonce checks and directory changes.
//!
//! Each runs under its guild's lock, like a send, so a guild's sends, edits, deletes and
//! directory changes have one order, and their dispatches reach gateways in it:
//!
//! - an edit reads the message, checks its author, and writes the row again with the new
//!   content and `edited_ms`, at a write timestamp above the one it read, so last-write-wins
//!   keeps it even if this node's clock is behind the first writer's; MESSAGE_UPDATE;
//! - a delete reads the message, checks its author and writes a row tombstone above the write
//!   timestamp it read; MESSAGE_DELETE;
//! - a reaction reads the message and writes the row again with the user added to (or
//!   removed from) the emoji's users, above the write timestamp it read, exactly as an
//!   edit does; MESSAGE_REACTION_ADD / MESSAGE_REACTION_REMOVE, none if nothing changed;
//! - a reply's referenced message is read before the reply gets its id: one that is not
//!   stored in the channel (or was deleted) refuses the reply;
//! - a directory change gets a snowflake, is written to the directory log at the store's
//!   level, applied to this node's directory copy and dispatched (GUILD_CREATE,
//!   CHANNEL_CREATE, GUILD_MEMBER_ADD). A guild created here gets a process here.
//!
//! A request about a guild or channel this node does not know first catches the directory up
//! from the log (another node may have made it). Not modelled: permissions beyond membership
//! and authorship (any member may add channels and members; only authors edit or delete).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::nonce::{NonceEntry, NonceKey, NONCE_WINDOW_MS};
use super::{GuildNode, GuildRequest, GuildResponse, ProcessLock};
use crate::directory::{self, ChangeRecord, Channel, DirectoryChange, Guild};
use crate::gateway::GatewayEvent;
use crate::ids;
use crate::model::{MessageView, StoredMessage};
use crate::store::{HistoryAnchor, HistoryPage, StoreError, TimedMessage};

/// Tries of the catch-up at start before leaving it to the misses.
const START_CATCH_UP_TRIES: u32 = 10;
const START_CATCH_UP_RETRY: Duration = Duration::from_millis(500);
/// The channel a new guild starts with.
pub const FIRST_CHANNEL_NAME: &str = "general";

/// Reads the directory log once the store answers, so guilds created before this node
/// started are known without waiting for a miss.
pub(super) async fn catch_up_at_start(node: Arc<GuildNode>) {
    for attempt in 1..=START_CATCH_UP_TRIES {
        match directory::catch_up(&node.directory, &*node.store).await {
            Ok(changed) => {
                tracing::info!(changed, "guild_directory_caught_up");
                return;
            }
            Err(error) => {
                tracing::debug!(attempt, %error, "guild_directory_catch_up_failed");
                tokio::time::sleep(START_CATCH_UP_RETRY).await;
            }
        }
    }
}

/// A message to create, as the API asked for it.
#[derive(Debug, Clone)]
pub(super) struct NewMessage {
    pub(super) channel_id: u64,
    pub(super) author_id: u64,
    pub(super) content: String,
    pub(super) referenced_message_id: Option<u64>,
}

impl GuildNode {
    /// Whether a reply may reference `referenced` in `channel_id`: `None` if it may, else
    /// the answer refusing the reply.
    pub(super) async fn check_reference(
        &self,
        channel_id: u64,
        referenced: u64,
    ) -> Option<GuildResponse> {
        match self.store.get(channel_id, referenced).await {
            Ok(Some(_)) => None,
            Ok(_) => Some(GuildResponse::UnknownReference),
            Err(error) => Some(GuildResponse::Failed(error)),
        }
    }

    /// Adds (`add`) or removes `user_id`'s reaction with `emoji` on a message, by
    /// read-modify-write of its row under the guild's lock.
    async fn react(
        self: &Arc<Self>,
        (channel_id, message_id): (u64, u64),
        user_id: u64,
        emoji: String,
        add: bool,
    ) -> GuildResponse {
        let Some(guild_id) = self.guild_of_channel(channel_id).await else {
            return GuildResponse::UnknownChannel;
        };
        let mut process = match self.lock_owned(guild_id).await {
            Ok(process) => process,
            Err(refused) => return refused,
        };

        // 1. Under the lock: the message as stored now.
        let (mut message, read_us) = match self.store.get(channel_id, message_id).await {
            Ok(Some(timed)) => (timed.message, timed.write_us),
            Ok(None) => return GuildResponse::UnknownMessage,
            Err(error) => return GuildResponse::Failed(error),
        };
        let changed = if add {
            message.add_reaction(&emoji, user_id)
        } else {
            message.remove_reaction(&emoji, user_id)
        };
        if !changed {
            return GuildResponse::Reacted;
        }

        // 2. Write above what was read, then dispatch.
        let write_us = self.clock.now_us().max(read_us + 1);
        if let Err(error) = self.store.put(&message, write_us).await {
            return GuildResponse::Failed(error);
        }
        let mut data = json!({
            "user_id": user_id.to_string(),
            "channel_id": channel_id.to_string(),
            "message_id": message_id.to_string(),
            "guild_id": guild_id.to_string(),
            "emoji": crate::model::emoji_json(&emoji),
            "burst": false,
            "type": 0,
        });
        let name = if add {
            data["message_author_id"] = json!(message.author_id.to_string());
            "MESSAGE_REACTION_ADD"
        } else {
            "MESSAGE_REACTION_REMOVE"
        };
        self.queue_event(&mut process, guild_id, name, data).await;
        GuildResponse::Reacted
    }

    /// Catches the directory up after a miss that happened when `started` catch-ups had begun.
    async fn catch_up_after_miss(&self, started: u64) {
        if let Err(error) = directory::catch_up_after(&self.directory, &*self.store, started).await
        {
            tracing::warn!(%error, "guild_directory_catch_up_failed");
        }
    }

    /// The guild of `channel_id`, catching up from the log once if it is unknown.
    pub(super) async fn guild_of_channel(&self, channel_id: u64) -> Option<u64> {
        let started = self.directory.catch_ups_started();
        let known = |node: &Self| {
            node.directory
                .read()
                .guild_of_channel(channel_id)
                .map(|g| g.id)
        };
        if let Some(guild_id) = known(self) {
            return Some(guild_id);
        }
        self.catch_up_after_miss(started).await;
        known(self)
    }

    /// Whether `guild_id` exists, catching up from the log once if it is unknown.
    async fn guild_known(&self, guild_id: u64) -> bool {
        let started = self.directory.catch_ups_started();
        if self.directory.read().guilds.contains_key(&guild_id) {
            return true;
        }
        self.catch_up_after_miss(started).await;
        self.directory.read().guilds.contains_key(&guild_id)
    }

    /// Queues one event of `guild_id` for every gateway, in the guild's order.
    async fn queue_event(&self, process: &mut ProcessLock, guild_id: u64, name: &str, data: Value) {
        let event = GatewayEvent {
            guild_id,
            guild_epoch: process.epoch,
            guild_seq: process.next_seq,
            name: name.to_string(),
            data,
        };
        process.next_seq += 1;
        for queue in &self.fanout {
            if queue.send(event.clone()).await.is_err() {
                tracing::error!(guild_id, "fanout_queue_closed");
            }
        }
    }

    /// Remembers a send's nonce (enforced or not: a later enforced send with the same nonce
    /// answers it, as Discord's does). A write that failed as unavailable wrote nothing and is
    /// forgotten; one that may have applied is kept as unstored.
    pub(super) fn remember_nonce(
        &self,
        message: &StoredMessage,
        error: Option<&StoreError>,
        guild_seq: u64,
    ) {
        if matches!(error, Some(StoreError::Unavailable { .. })) {
            return;
        }
        let Some(nonce) = message.nonce.clone() else {
            return;
        };
        let key = (message.channel_id, message.author_id, nonce);
        let entry = NonceEntry {
            message: message.clone(),
            stored: error.is_none(),
            guild_seq,
        };
        let now_ms = self.clock.now_ms();
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.insert(key, entry, now_ms);
    }

    /// The answer to a repeated send with an enforced nonce, or `None` if `key` is new.
    pub(super) async fn repeat_of(
        self: &Arc<Self>,
        process: &mut ProcessLock,
        key: &NonceKey,
        author_name: &str,
    ) -> Option<GuildResponse> {
        // 1. This process's memory; after a restart, first the channel's recent messages.
        let now_ms = self.clock.now_ms();
        let (held, loaded) = {
            let nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            (nonces.get(key, now_ms).cloned(), nonces.loaded(key.0))
        };
        let entry = match held {
            Some(entry) => entry,
            None if !loaded => {
                if let Err(error) = self.load_recent_nonces(key.0).await {
                    // Unknown whether the nonce was used: refuse rather than risk a copy.
                    return Some(GuildResponse::Failed(error));
                }
                let nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
                nonces.get(key, now_ms).cloned()?
            }
            None => return None,
        };
        tracing::debug!(message_id = entry.message.message_id, "nonce_repeat");
        if entry.stored {
            return Some(GuildResponse::Created(entry.message));
        }

        // 2. The first write may not have applied: write the same row again, then deliver.
        let message = entry.message;
        if let Err(error) = self.store.put(&message, self.clock.now_us()).await {
            return Some(GuildResponse::Failed(error));
        }
        if entry.guild_seq != process.next_seq {
            // Later events went out live: this one cannot join the live order. A new epoch
            // whose first event it is makes every gateway invalidate the guild's sessions
            // (op 9), and they resync from history, where it now is.
            tracing::warn!(message_id = message.message_id, "nonce_retry_renews_epoch");
            if let Err(error) = self.renew_epoch(process, message.guild_id).await {
                return Some(GuildResponse::Failed(error));
            }
        }
        self.remember_nonce(&message, None, process.next_seq);
        let data = serde_json::to_value(MessageView::of(&message, author_name)).ok()?;
        self.queue_event(process, message.guild_id, "MESSAGE_CREATE", data)
            .await;
        Some(GuildResponse::Created(message))
    }

    /// Remembers the nonces of the channel's messages of the last nonce window, read from the
    /// store (pages newest first back to the window's start), once per channel per process.
    async fn load_recent_nonces(&self, channel_id: u64) -> Result<(), StoreError> {
        let window_start = ids::from_timestamp_ms(self.clock.now_ms() - NONCE_WINDOW_MS);
        let mut anchor = HistoryAnchor::Latest;
        let mut found = Vec::new();
        loop {
            let page = HistoryPage {
                channel_id,
                anchor,
                limit: 100,
            };
            let messages = self.store.page(page).await?;
            let oldest = messages.last().map(|m| m.message_id);
            let recent = messages.into_iter().filter(|m| m.message_id > window_start);
            found.extend(recent.filter(|m| m.nonce.is_some()));
            match oldest {
                Some(oldest) if oldest > window_start => anchor = HistoryAnchor::Before(oldest),
                _ => break,
            }
        }

        // Oldest first, so a nonce used twice keeps its newest message, as live sends do.
        tracing::debug!(channel_id, found = found.len(), "nonces_loaded");
        for message in found.iter().rev() {
            self.remember_nonce(message, None, 0);
        }
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.mark_loaded(channel_id);
        Ok(())
    }

    /// Serves every request but a send.
    pub(super) async fn handle_change(self: &Arc<Self>, request: GuildRequest) -> GuildResponse {
        match request {
            GuildRequest::CreateMessage { .. }
            | GuildRequest::Ping
            | GuildRequest::Release { .. } => {
                tracing::error!("request_routed_to_change_handler");
                GuildResponse::UnknownChannel
            }
            GuildRequest::EditMessage {
                channel_id,
                message_id,
                actor_id,
                content,
            } => {
                self.edit_message(channel_id, message_id, actor_id, Some(content))
                    .await
            }
            GuildRequest::DeleteMessage {
                channel_id,
                message_id,
                actor_id,
            } => {
                self.edit_message(channel_id, message_id, actor_id, None)
                    .await
            }
            GuildRequest::AddReaction {
                channel_id,
                message_id,
                user_id,
                emoji,
            } => {
                self.react((channel_id, message_id), user_id, emoji, true)
                    .await
            }
            GuildRequest::RemoveReaction {
                channel_id,
                message_id,
                user_id,
                emoji,
            } => {
                self.react((channel_id, message_id), user_id, emoji, false)
                    .await
            }
            GuildRequest::CreateGuild {
                guild_id,
                owner_id,
                name,
            } => self.create_guild(guild_id, owner_id, name).await,
            GuildRequest::CreateChannel {
                guild_id,
                actor_id,
                name,
            } => {
                let change = |id| DirectoryChange::ChannelCreated {
                    guild_id,
                    channel: Channel { id, name },
                };
                self.change_guild(guild_id, actor_id, change).await
            }
            GuildRequest::AddMember {
                guild_id,
                actor_id,
                user_id,
            } => {
                if !self.directory.read().users.contains_key(&user_id) {
                    return GuildResponse::UnknownUser;
                }
                let change = |_| DirectoryChange::MemberAdded { guild_id, user_id };
                self.change_guild(guild_id, actor_id, change).await
            }
        }
    }

    /// Replaces the content of a message (`Some`) or deletes it (`None`), by its author.
    async fn edit_message(
        self: &Arc<Self>,
        channel_id: u64,
        message_id: u64,
        actor_id: u64,
        content: Option<String>,
    ) -> GuildResponse {
        let Some(guild_id) = self.guild_of_channel(channel_id).await else {
            return GuildResponse::UnknownChannel;
        };
        let mut process = match self.lock_owned(guild_id).await {
            Ok(process) => process,
            Err(refused) => return refused,
        };

        // 1. Under the lock: the message as stored now, and its author.
        let TimedMessage {
            message,
            write_us: stored_us,
        } = match self.store.get(channel_id, message_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return GuildResponse::UnknownMessage,
            Err(error) => return GuildResponse::Failed(error),
        };
        if message.author_id != actor_id {
            return GuildResponse::NotAuthor;
        }
        let write_us = self.clock.now_us().max(stored_us + 1);

        // 2. Write, then dispatch.
        match content {
            Some(content) => {
                let edited = StoredMessage {
                    content,
                    edited_ms: Some(write_us.div_euclid(1000)),
                    ..message
                };
                if let Err(error) = self.store.put(&edited, write_us).await {
                    return GuildResponse::Failed(error);
                }
                let author = self.directory.read().username(actor_id).to_string();
                let data =
                    serde_json::to_value(MessageView::of(&edited, &author)).unwrap_or_default();
                self.queue_event(&mut process, guild_id, "MESSAGE_UPDATE", data)
                    .await;
                GuildResponse::Updated(edited)
            }
            None => {
                if let Err(error) = self.store.delete(channel_id, message_id, write_us).await {
                    return GuildResponse::Failed(error);
                }
                let data = json!({
                    "id": message_id.to_string(),
                    "channel_id": channel_id.to_string(),
                    "guild_id": guild_id.to_string(),
                });
                self.queue_event(&mut process, guild_id, "MESSAGE_DELETE", data)
                    .await;
                GuildResponse::Deleted
            }
        }
    }

    /// Creates guild `guild_id` (an id the API minted, which placed the guild here) with one
    /// channel, owned by `owner_id`. Its process starts here, as for any guild's first use.
    async fn create_guild(
        self: &Arc<Self>,
        guild_id: u64,
        owner_id: u64,
        name: String,
    ) -> GuildResponse {
        if !self.directory.read().users.contains_key(&owner_id) {
            return GuildResponse::UnknownUser;
        }
        let mut process = match self.lock_owned(guild_id).await {
            Ok(process) => process,
            Err(refused) => return refused,
        };
        let (channel_id, record_id) = {
            let mut ids = self.ids.lock().await;
            (ids.next_id(), ids.next_id())
        };
        let guild = Guild {
            id: guild_id,
            name,
            channels: vec![Channel {
                id: channel_id,
                name: FIRST_CHANNEL_NAME.to_string(),
            }],
            members: [owner_id].into(),
            owner_id,
        };
        let record = ChangeRecord {
            id: record_id,
            actor_id: owner_id,
            change: DirectoryChange::GuildCreated { guild },
        };
        self.commit_change(&mut process, record).await
    }

    /// A change of an existing guild by one of its members; `change` gets the new id.
    async fn change_guild(
        self: &Arc<Self>,
        guild_id: u64,
        actor_id: u64,
        change: impl FnOnce(u64) -> DirectoryChange,
    ) -> GuildResponse {
        if !self.guild_known(guild_id).await {
            return GuildResponse::UnknownGuild;
        }
        let started = self.directory.catch_ups_started();
        let mut process = match self.lock_owned(guild_id).await {
            Ok(process) => process,
            Err(refused) => return refused,
        };
        let is_member = |node: &Self, user_id: u64| {
            let directory = node.directory.read();
            let guild = directory.guilds.get(&guild_id);
            guild.is_some_and(|g| g.members.contains(&user_id))
        };
        if !is_member(self, actor_id) {
            // A change another node ordered (before this node took the guild over) may be
            // missing here: read the log before refusing.
            self.catch_up_after_miss(started).await;
            if !is_member(self, actor_id) {
                return GuildResponse::NotMember;
            }
        }
        let id = self.ids.lock().await.next_id();
        let record = ChangeRecord {
            id,
            actor_id,
            change: change(id),
        };
        let already = match &record.change {
            DirectoryChange::MemberAdded { user_id, .. } => is_member(self, *user_id),
            _ => false,
        };
        if already {
            // Nothing to write or dispatch.
            return GuildResponse::Unchanged;
        }
        self.commit_change(&mut process, record).await
    }

    /// Writes `record` to the log, applies it here and dispatches it, under the guild's lock.
    async fn commit_change(
        &self,
        process: &mut ProcessLock,
        record: ChangeRecord,
    ) -> GuildResponse {
        if let Err(error) = self
            .store
            .put_directory_change(&record, self.clock.now_us())
            .await
        {
            tracing::warn!(id = record.id, %error, "directory_change_store_failed");
            return GuildResponse::Failed(error);
        }
        self.directory.apply(&record);
        let guild_id = record.guild_id();
        let (name, data) = {
            let directory = self.directory.read();
            match &record.change {
                DirectoryChange::GuildCreated { guild } => (
                    "GUILD_CREATE",
                    directory.guild_json(guild.id).unwrap_or_default(),
                ),
                DirectoryChange::ChannelCreated { channel, .. } => {
                    ("CHANNEL_CREATE", directory::channel_json(guild_id, channel))
                }
                DirectoryChange::MemberAdded { user_id, .. } => {
                    let mut member = directory.member_json(*user_id);
                    member["guild_id"] = json!(guild_id.to_string());
                    ("GUILD_MEMBER_ADD", member)
                }
            }
        };
        tracing::info!(id = record.id, guild_id, event = name, "directory_changed");
        self.queue_event(process, guild_id, name, data).await;
        GuildResponse::Changed(record)
    }
}
