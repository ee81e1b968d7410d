//! The guild role: the per-guild ordering point and its fan-out to gateways.
//!
//! Every message of a guild is created by that guild's process, which holds the guild's lock
//! while it (1) assigns the snowflake, (2) stores the message at QUORUM and (3) queues the
//! MESSAGE_CREATE for every gateway. Ids are assigned here, not in the API, so that one
//! generator orders a guild's messages: the order of ids, of storage and of live delivery are
//! the same order, whichever API node the sends came through.
//!
//! Fan-out is one bounded queue per gateway, drained in batches by one task per gateway; a
//! full queue makes senders wait (back-pressure). A batch that fails is sent again, and each
//! event carries a per-guild sequence number so a gateway drops the copies it has already seen.
//!
//! Sends with `enforce_nonce`, edits, deletes and directory changes are ordered by the same
//! lock; their handlers live in [`changes`], the nonce memory in [`nonce`].
//!
//! TODO(guild-ring): one guild node serves every guild; placing guilds on several nodes by a
//! consistent-hash ring, and moving them when a node dies, comes with more guild nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

use crate::directory::{ChangeRecord, SharedDirectory};
use crate::env::clock::NodeClock;
use crate::gateway::{GatewayEvent, GatewayRequest, GatewayResponse};
use crate::ids::SnowflakeGenerator;
use crate::model::{MessageView, StoredMessage};
use crate::ring::client::StoreClient;
use crate::ring::StoreError;
use crate::rpc::{serve_rpc, RpcClient};

mod changes;
pub mod nonce;

/// Events queued per gateway before senders wait.
pub const FANOUT_QUEUE_MAX: usize = 4_096;
/// Events per batch sent to a gateway.
const FANOUT_BATCH_MAX: usize = 128;
const FANOUT_TIMEOUT: Duration = Duration::from_secs(2);
const FANOUT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A request to the guild role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GuildRequest {
    /// Create a message in a channel (membership already checked by the API).
    CreateMessage {
        /// The channel.
        channel_id: u64,
        /// The author.
        author_id: u64,
        /// The text.
        content: String,
        /// The client's nonce.
        nonce: Option<String>,
        /// Whether a send with the same author and nonce in the channel within
        /// [`nonce::NONCE_WINDOW_MS`] answers the first message instead of making another.
        #[serde(default)]
        enforce_nonce: bool,
    },
    /// Replace a message's content (the API checked membership; the guild checks authorship).
    EditMessage {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
        /// Who asks; must be the author.
        actor_id: u64,
        /// The new text.
        content: String,
    },
    /// Delete a message.
    DeleteMessage {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
        /// Who asks; must be the author.
        actor_id: u64,
    },
    /// Create a guild with one text channel, `general`, and its creator as owner and member.
    CreateGuild {
        /// The creator.
        owner_id: u64,
        /// The guild's name.
        name: String,
    },
    /// Add a text channel to a guild (any member may).
    CreateChannel {
        /// The guild.
        guild_id: u64,
        /// Who asks; must be a member.
        actor_id: u64,
        /// The channel's name.
        name: String,
    },
    /// Add a user to a guild (any member may add anyone).
    AddMember {
        /// The guild.
        guild_id: u64,
        /// Who asks; must be a member.
        actor_id: u64,
        /// Who joins.
        user_id: u64,
    },
}

/// The guild role's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GuildResponse {
    /// The message was stored and queued for delivery.
    Created(StoredMessage),
    /// The channel belongs to no guild.
    UnknownChannel,
    /// The store failed.
    Failed(StoreError),
    /// The message was edited (the new version).
    Updated(StoredMessage),
    /// The message was deleted.
    Deleted,
    /// No such message in the channel.
    UnknownMessage,
    /// The actor is not the message's author.
    NotAuthor,
    /// No such guild.
    UnknownGuild,
    /// No such user.
    UnknownUser,
    /// The actor is not a member of the guild.
    NotMember,
    /// The directory changed.
    Changed(ChangeRecord),
    /// The directory already held the change (an existing member).
    Unchanged,
}

/// The guild role's configuration.
#[derive(Clone)]
pub struct GuildConfig {
    /// Who exists.
    pub directory: SharedDirectory,
    /// The ring.
    pub store: StoreClient,
    /// Every gateway's dispatch (RPC) address.
    pub gateways: Vec<SocketAddr>,
    /// This node's clock (ids and write timestamps).
    pub clock: NodeClock,
    /// The snowflake worker id of this node.
    pub worker_id: u8,
}

struct GuildProcess {
    next_seq: u64,
}

struct GuildNode {
    directory: SharedDirectory,
    store: StoreClient,
    clock: NodeClock,
    ids: Mutex<SnowflakeGenerator>,
    guilds: BTreeMap<u64, Mutex<GuildProcess>>,
    fanout: Vec<mpsc::Sender<GatewayEvent>>,
    /// Processes of the guilds created since this node started.
    created: std::sync::Mutex<BTreeMap<u64, Arc<Mutex<GuildProcess>>>>,
    /// Recent sends' nonces, for `enforce_nonce`.
    nonces: std::sync::Mutex<nonce::NonceCache>,
    /// This node's clock at start, in ms.
    started_ms: i64,
    /// This incarnation's epoch: the node's clock at start, in µs.
    // TODO(guild-epoch): a clock stepped back across a restart could repeat an epoch; a
    // persisted counter would not.
    epoch: u64,
}

/// Runs the guild role on `listener`.
pub async fn run(listener: TcpListener, config: GuildConfig) {
    // 1. One fan-out queue and pump per gateway.
    let mut fanout = Vec::new();
    for gateway in config.gateways {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE_MAX);
        tokio::spawn(pump(gateway, rx));
        fanout.push(tx);
    }

    // 2. One process (lock plus sequence) per guild.
    let guilds = config
        .directory
        .read()
        .guilds
        .keys()
        .map(|&id| (id, Mutex::new(GuildProcess { next_seq: 1 })))
        .collect();
    let node = Arc::new(GuildNode {
        directory: config.directory,
        store: config.store,
        ids: Mutex::new(SnowflakeGenerator::new(
            config.clock.clone(),
            config.worker_id,
            0,
        )),
        epoch: config.clock.now_us().unsigned_abs(),
        started_ms: config.clock.now_ms(),
        created: std::sync::Mutex::default(),
        nonces: std::sync::Mutex::default(),
        clock: config.clock,
        guilds,
        fanout,
    });
    tracing::info!(guilds = node.guilds.len(), "guild_node_started");
    tokio::spawn(changes::catch_up_at_start(node.clone()));

    // 3. Serve.
    serve_rpc(listener, move |request: GuildRequest| {
        let node = node.clone();
        async move { node.handle(request).await }
    })
    .await;
}

impl GuildNode {
    async fn handle(&self, request: GuildRequest) -> GuildResponse {
        match request {
            GuildRequest::CreateMessage {
                channel_id,
                author_id,
                content,
                nonce,
                enforce_nonce,
            } => {
                let nonce = nonce.map(|nonce| (nonce, enforce_nonce));
                self.create_message(channel_id, author_id, content, nonce)
                    .await
            }
            other => self.handle_change(other).await,
        }
    }

    async fn create_message(
        &self,
        channel_id: u64,
        author_id: u64,
        content: String,
        nonce: Option<(String, bool)>,
    ) -> GuildResponse {
        let Some(guild_id) = self.guild_of_channel(channel_id).await else {
            return GuildResponse::UnknownChannel;
        };
        let author_name = self.directory.read().username(author_id).to_string();
        let Some(mut process) = self.lock_process(guild_id).await else {
            return GuildResponse::UnknownChannel;
        };

        // 1. The guild's order starts here: hold its lock until the event is queued. A send
        // whose nonce is enforced and was seen answers the first message.
        if let Some((nonce, true)) = &nonce {
            let key = (channel_id, author_id, nonce.clone());
            if let Some(answer) = self.repeat_of(&mut process, &key, &author_name).await {
                return answer;
            }
        }
        let nonce = nonce.map(|(nonce, _enforced)| nonce);
        let message_id = self.ids.lock().await.next_id();
        let message = StoredMessage {
            channel_id,
            message_id,
            guild_id,
            author_id,
            content,
            nonce,
            edited_ms: None,
        };

        // 2. Store at the client's consistency level; nothing is delivered unless it is stored.
        if let Err(error) = self.store.put(&message, self.clock.now_us()).await {
            tracing::warn!(channel_id, message_id, %error, "message_store_failed");
            self.remember_nonce(&message, Some(&error), process.next_seq);
            return GuildResponse::Failed(error);
        }
        self.remember_nonce(&message, None, process.next_seq);

        // 3. Queue for every gateway, in the guild's order.
        let view = MessageView::of(&message, &author_name);
        let event = GatewayEvent {
            guild_id,
            guild_epoch: self.epoch,
            guild_seq: process.next_seq,
            name: "MESSAGE_CREATE".to_string(),
            data: serde_json::to_value(&view).unwrap_or_default(),
        };
        process.next_seq += 1;
        for queue in &self.fanout {
            if queue.send(event.clone()).await.is_err() {
                tracing::error!(guild_id, "fanout_queue_closed");
            }
        }
        GuildResponse::Created(message)
    }
}

/// Drains one gateway's queue in batches, resending a batch until the gateway takes it.
async fn pump(gateway: SocketAddr, mut queue: mpsc::Receiver<GatewayEvent>) {
    let rpc = RpcClient::new();
    while let Some(first) = queue.recv().await {
        let mut events = vec![first];
        while events.len() < FANOUT_BATCH_MAX {
            match queue.try_recv() {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        let request = GatewayRequest::Dispatch { events };
        loop {
            let sent = rpc
                .call::<_, GatewayResponse>(gateway, &request, FANOUT_TIMEOUT)
                .await;
            match sent {
                Ok(GatewayResponse::Accepted) => break,
                Err(error) => {
                    tracing::debug!(%gateway, %error, "fanout_retry");
                    tokio::time::sleep(FANOUT_RETRY_DELAY).await;
                }
            }
        }
    }
}
