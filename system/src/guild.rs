//! The guild role: guild processes placed on guild nodes by a consistent-hash ring, each the
//! ordering point of its guild, and their fan-out to gateways.
//!
//! Placement. Every guild node and every API node build the same [`HashRing`] of guild nodes;
//! a guild's preferred node is its owner on the ring, and its failover order is the ring's
//! successor list. The API sends a guild's request to the first node of that list it can
//! reach ([`GuildRouter`]). A node that is not first serves the guild only if it cannot reach
//! any node ahead of it itself (it pings them); otherwise it answers [`GuildResponse::NotOwner`]
//! and retires any process it held for the guild. So when a guild node dies its guilds move to
//! the next node on the ring, and when it comes back they move back to it.
//!
//! Ids. Every message of a guild is created by its guild process, which holds the guild's lock
//! while it (1) assigns the snowflake, (2) stores the message at QUORUM and (3) queues the
//! MESSAGE_CREATE for every gateway. Ids are assigned here, not in the API, so that one
//! generator orders a guild's messages: the order of ids, of storage and of live delivery are
//! the same order, whichever API node the sends came through. A process that takes a guild over
//! (at a node's first request for it, after a crash or a move) first reads each of the guild's
//! channels' newest stored id at QUORUM and moves the node's generator past the largest, so
//! its ids are above every id an earlier process had acknowledged, whatever the two nodes'
//! clocks say.
//!
//! Epochs. Each process incarnation takes as its epoch the first id its generator gives after
//! that read: above every stored id of the guild, hence above the epoch of every earlier
//! process that delivered anything (an epoch is below its process's ids). Gateways drop an
//! event whose (epoch, sequence) is not above the last they saw, and invalidate the guild's
//! sessions (op 9) when a newer epoch starts, so a client whose events were lost with the old
//! process resyncs from history instead of living with a silent gap. Epochs do not come from
//! node start times: a node that started earlier can still take a guild over later.
//!
//! Fan-out is one bounded queue per gateway on every guild node, drained in batches by one
//! pump per gateway; a full queue makes senders wait (back-pressure). A batch that fails is
//! sent again; the per-guild (epoch, sequence) lets a gateway drop the copies it already took.
//!
//! Hand-over. A takeover tells every other guild node its epoch, and a process in an older
//! epoch retires. A node serving a guild for an owner ahead of it checks every
//! [`WATCH_INTERVAL`] (and at each request) whether the owner answers again; then it retires
//! its process and tells the owner its epoch, so an owner that kept an older process starts a
//! newer one, and the guild's sessions are invalidated once more instead of losing its events.
//!
//! Sends with `enforce_nonce`, edits, deletes and directory changes are ordered by the same
//! lock and take the guild over the same way; their handlers live in [`changes`], the nonce
//! memory in [`nonce`].
//!
//! Split brain (the old node partitioned, not dead). A node takes a guild over only when it
//! cannot reach the nodes ahead of it itself, so an API node cut off from the owner alone
//! moves nothing. If the owner is cut off from its successor too but still reachable by some
//! API node, both serve the guild while the partition lasts: both store messages, each with
//! ids above what it read at its start, and the gateway delivers only the newer epoch's
//! events, so the older process's messages are stored and acknowledged but not delivered live
//! (a silent gap for the sessions that stay open through it, and ids of the two processes
//! interleave in history). When the partition heals, the successor hands the guild back and
//! the owner starts a newer epoch, so sessions resync from then on.
//!
//! TODO(guild-fencing): fence a deposed process (a lease, or a conditional write of the
//! guild's epoch, which the ring does not model) so a partitioned owner stops acknowledging.
//! TODO(guild-handoff): events queued by a process that died before any of its guild's events
//! reached a gateway leave that gateway no older epoch to compare with, so its sessions are
//! not invalidated; the ids of a write that timed out on the old process may surface in
//! history later, out of live order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::directory::{ChangeRecord, SharedDirectory};
use crate::env::clock::NodeClock;
use crate::gateway::{GatewayEvent, GatewayRequest, GatewayResponse};
use crate::hashring::{HashRing, POINTS_PER_NODE_DEFAULT};
use crate::ids::SnowflakeGenerator;
use crate::model::{MessageView, StoredMessage};
use crate::rpc::{serve_rpc, RpcClient, RpcError};
use crate::store::{HistoryQuery, SharedStore, StoreError};

mod changes;
pub mod nonce;

/// Events queued per gateway before senders wait.
pub const FANOUT_QUEUE_MAX: usize = 4_096;
/// Events per batch sent to a gateway.
const FANOUT_BATCH_MAX: usize = 128;
const FANOUT_TIMEOUT: Duration = Duration::from_secs(2);
const FANOUT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// How long a node waits for a peer's answer to a ping before it counts the peer as down.
const PING_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a ping's answer is trusted.
const PING_FRESH_FOR: Duration = Duration::from_millis(250);
/// How many times a node sends a release that is not taken.
const RELEASE_TRIES_MAX: usize = 20;
/// How long a node waits for a peer to take a release.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a node checks whether the owners of the guilds it took over are back.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Guild nodes at most: each needs its own 5-bit snowflake worker id, and 0 is left out.
pub const GUILD_NODES_MAX: usize = 31;

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
        /// The newest message id the author has seen, anywhere: the new id is greater.
        #[serde(default)]
        after: Option<u64>,
        /// For a reply: the message it answers, which must exist in the channel.
        #[serde(default)]
        referenced_message_id: Option<u64>,
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
        /// The new guild's id, minted by the API node (it places the guild on the ring).
        guild_id: u64,
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
    /// Add `user_id`'s reaction with `emoji` to a message (the API checked membership).
    AddReaction {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
        /// Who reacts.
        user_id: u64,
        /// A unicode emoji or `name:id`.
        emoji: String,
    },
    /// Remove `user_id`'s reaction with `emoji` from a message.
    RemoveReaction {
        /// The channel.
        channel_id: u64,
        /// The message.
        message_id: u64,
        /// Whose reaction.
        user_id: u64,
        /// A unicode emoji or `name:id`.
        emoji: String,
    },
    /// Is this node up? (Asked by a node behind it on some guild's successor list.)
    Ping,
    /// The sender serves (or served) `guild_id` in `epoch`: a process of the guild in an
    /// older epoch retires, since gateways drop its events as old ones.
    Release {
        /// The guild.
        guild_id: u64,
        /// The sender's address, as the placement ring knows it.
        from: SocketAddr,
        /// The sender's epoch for the guild.
        epoch: u64,
    },
}

impl GuildRequest {
    /// The kind a guild node's load counts this request as (pings are not counted).
    pub fn load_kind(&self) -> Option<&'static str> {
        match self {
            GuildRequest::CreateMessage { .. } => Some("create_message"),
            GuildRequest::EditMessage { .. } => Some("edit_message"),
            GuildRequest::AddReaction { .. } | GuildRequest::RemoveReaction { .. } => {
                Some("reaction")
            }
            GuildRequest::DeleteMessage { .. } => Some("delete_message"),
            GuildRequest::CreateGuild { .. }
            | GuildRequest::CreateChannel { .. }
            | GuildRequest::AddMember { .. } => Some("directory"),
            GuildRequest::Release { .. } => Some("release"),
            GuildRequest::Ping => None,
        }
    }
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
    /// A node ahead of this one on the guild's successor list is up: ask it.
    NotOwner,
    /// The answer to [`GuildRequest::Ping`].
    Pong,
    /// A reaction was added or removed (or already was).
    Reacted,
    /// A reply's `referenced_message_id` names no message of the channel.
    UnknownReference,
    /// The answer to [`GuildRequest::Release`].
    Released,
}

/// The guild role's configuration.
#[derive(Clone)]
pub struct GuildConfig {
    /// Who exists.
    pub directory: SharedDirectory,
    /// The message store (the ring, or Cassandra in the real build).
    pub store: SharedStore,
    /// Every gateway's dispatch (RPC) address.
    pub gateways: Vec<SocketAddr>,
    /// This node's clock (ids and write timestamps).
    pub clock: NodeClock,
    /// Every guild node's RPC address: the placement ring is built from them.
    pub nodes: Vec<SocketAddr>,
    /// This node's place in `nodes` (its snowflake worker id is one more).
    pub index: usize,
}

/// The placement ring of guild nodes, as every node and API node builds it.
pub fn placement(nodes: &[SocketAddr]) -> HashRing<SocketAddr> {
    HashRing::new(
        nodes.to_vec(),
        POINTS_PER_NODE_DEFAULT,
        SocketAddr::to_string,
    )
}

/// One guild process: its epoch once it has taken the guild over, and its event sequence.
struct GuildProcess {
    /// Set when a newer owner took the guild over; the process then creates nothing more.
    retired: AtomicBool,
    state: Arc<Mutex<ProcessState>>,
}

pub(super) struct ProcessState {
    /// `None` until the takeover read finished.
    epoch: Option<u64>,
    /// The sequence number of the guild's next event.
    pub(super) next_seq: u64,
}

/// A guild process's lock, held by a node that owns the guild and has taken it over.
pub(super) struct ProcessLock {
    state: OwnedMutexGuard<ProcessState>,
    /// The process's epoch.
    epoch: u64,
}

impl Deref for ProcessLock {
    type Target = ProcessState;

    fn deref(&self) -> &ProcessState {
        &self.state
    }
}

impl DerefMut for ProcessLock {
    fn deref_mut(&mut self) -> &mut ProcessState {
        &mut self.state
    }
}

struct GuildNode {
    directory: SharedDirectory,
    store: SharedStore,
    clock: NodeClock,
    ids: Mutex<SnowflakeGenerator>,
    addr: SocketAddr,
    placement: HashRing<SocketAddr>,
    processes: std::sync::Mutex<BTreeMap<u64, Arc<GuildProcess>>>,
    /// Per peer: when it was last pinged and whether it answered.
    peers: std::sync::Mutex<BTreeMap<SocketAddr, (Instant, bool)>>,
    rpc: RpcClient,
    fanout: Vec<mpsc::Sender<GatewayEvent>>,
    /// Recent sends' nonces, for `enforce_nonce`.
    nonces: std::sync::Mutex<nonce::NonceCache>,
}

/// Runs the guild role on `listener`.
pub async fn run(listener: TcpListener, config: GuildConfig) {
    serve(listener, config, None).await;
}

/// Runs the guild role on `listener`, counting the requests it serves into `load`.
pub async fn run_counted(listener: TcpListener, config: GuildConfig, load: crate::load::NodeLoad) {
    serve(listener, config, Some(load)).await;
}

async fn serve(listener: TcpListener, config: GuildConfig, load: Option<crate::load::NodeLoad>) {
    assert!(
        config.index < config.nodes.len() && config.nodes.len() <= GUILD_NODES_MAX,
        "guild node {} of {} (at most {GUILD_NODES_MAX})",
        config.index,
        config.nodes.len()
    );

    // 1. One fan-out queue and pump per gateway; a gateway that finds a process of this node
    //    deposed (its epoch older than one it follows) says so, and the process retires.
    let mut fanout = Vec::new();
    let (stale_tx, mut stale_rx) = mpsc::channel(FANOUT_QUEUE_MAX);
    for gateway in config.gateways {
        let (tx, rx) = mpsc::channel(FANOUT_QUEUE_MAX);
        tokio::spawn(pump(gateway, rx, stale_tx.clone()));
        fanout.push(tx);
    }
    drop(stale_tx);

    // 2. Guild processes start at a guild's first request, once this node is its owner.
    let worker_id = u8::try_from(config.index + 1).expect("at most 31 guild nodes");
    let node = Arc::new(GuildNode {
        directory: config.directory,
        store: config.store,
        ids: Mutex::new(SnowflakeGenerator::new(config.clock.clone(), worker_id, 0)),
        nonces: std::sync::Mutex::default(),
        clock: config.clock,
        addr: config.nodes[config.index],
        placement: placement(&config.nodes),
        processes: std::sync::Mutex::default(),
        peers: std::sync::Mutex::default(),
        rpc: RpcClient::new(),
        fanout,
    });
    tracing::info!(addr = %node.addr, "guild_node_started");
    tokio::spawn(node.clone().watch());
    let deposed = node.clone();
    tokio::spawn(async move {
        while let Some((guild_id, epoch)) = stale_rx.recv().await {
            deposed.release(guild_id, deposed.addr, epoch).await;
        }
    });
    tokio::spawn(changes::catch_up_at_start(node.clone()));

    // 3. Serve.
    serve_rpc(listener, move |request: GuildRequest| {
        let node = node.clone();
        if let (Some(load), Some(kind)) = (&load, request.load_kind()) {
            load.served(kind);
        }
        async move { node.handle(request).await }
    })
    .await;
}

impl GuildNode {
    async fn handle(self: &Arc<Self>, request: GuildRequest) -> GuildResponse {
        match request {
            GuildRequest::CreateMessage {
                channel_id,
                author_id,
                content,
                nonce,
                enforce_nonce,
                after,
                referenced_message_id,
            } => {
                let nonce = nonce.map(|nonce| (nonce, enforce_nonce));
                let message = changes::NewMessage {
                    channel_id,
                    author_id,
                    content,
                    referenced_message_id,
                };
                self.create_message(message, nonce, after).await
            }
            GuildRequest::Ping => GuildResponse::Pong,
            GuildRequest::Release {
                guild_id,
                from,
                epoch,
            } => {
                self.release(guild_id, from, epoch).await;
                GuildResponse::Released
            }
            other => self.handle_change(other).await,
        }
    }

    fn processes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<GuildProcess>>> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Retires this node's process for `guild_id` if its epoch is below `epoch`: the gateways
    /// have seen (or will see) the newer one and would drop this process's events. The next
    /// request, if this node owns the guild, starts a process in an epoch above both.
    async fn release(&self, guild_id: u64, from: SocketAddr, epoch: u64) {
        let Some(process) = self.processes().get(&guild_id).cloned() else {
            return;
        };
        // Waits for a create in progress, which may be setting the epoch.
        let state = process.state.lock().await;
        if state.epoch.is_some_and(|mine| mine >= epoch) {
            tracing::info!(guild_id, %from, epoch, "guild_release_ignored");
            return;
        }
        process.retired.store(true, Ordering::SeqCst);
        let mut processes = self.processes();
        if processes
            .get(&guild_id)
            .is_some_and(|p| Arc::ptr_eq(p, &process))
        {
            processes.remove(&guild_id);
        }
        tracing::info!(guild_id, %from, epoch, "guild_released");
    }

    /// Tells `peers` that this node serves `guild_id` in `epoch` (best effort, in the
    /// background: a node that cannot be reached hears it from the next hand-back).
    fn announce(&self, guild_id: u64, epoch: u64, peers: Vec<SocketAddr>) {
        for peer in peers {
            let (rpc, from) = (self.rpc.clone(), self.addr);
            tokio::spawn(async move {
                let release = GuildRequest::Release {
                    guild_id,
                    from,
                    epoch,
                };
                // Sent again until taken (a lost release would leave a deposed process
                // serving), a bounded number of times: a node that stays away hears it from
                // the next hand-back.
                for _ in 0..RELEASE_TRIES_MAX {
                    let answer = rpc
                        .call::<_, GuildResponse>(peer, &release, RELEASE_TIMEOUT)
                        .await;
                    if matches!(answer, Ok(GuildResponse::Released)) {
                        break;
                    }
                    tokio::time::sleep(RELEASE_TIMEOUT).await;
                }
            });
        }
    }

    /// Retires this node's process for `guild_id` because `owner`, ahead of it on the guild's
    /// list, is reachable again, and tells the owner this process's epoch: an owner that kept
    /// serving in an older epoch through a partition must start a newer one.
    async fn hand_back(&self, guild_id: u64, owner: SocketAddr) {
        let Some(process) = self.processes().remove(&guild_id) else {
            return;
        };
        process.retired.store(true, Ordering::SeqCst);
        tracing::info!(guild_id, %owner, "guild_handed_back");
        // Waits for a create in progress; a process that never took over has no epoch.
        let epoch = process.state.lock().await.epoch;
        if let Some(epoch) = epoch {
            self.announce(guild_id, epoch, vec![owner]);
        }
    }

    /// Every [`WATCH_INTERVAL`], hands back each guild this node serves for an owner ahead of
    /// it that is reachable again, so the owner's events are not dropped as older ones.
    async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let guilds: Vec<u64> = self.processes().keys().copied().collect();
            for guild_id in guilds {
                for peer in self.placement.successors(guild_id) {
                    if *peer == self.addr {
                        break;
                    }
                    if self.reachable(*peer).await {
                        self.hand_back(guild_id, *peer).await;
                        break;
                    }
                }
            }
        }
    }

    /// Whether `peer` answers a ping (answers are trusted for a short while).
    async fn reachable(&self, peer: SocketAddr) -> bool {
        let cached = {
            let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.get(&peer).copied()
        };
        if let Some((at, up)) = cached {
            if at.elapsed() < PING_FRESH_FOR {
                return up;
            }
        }
        let answer = self.rpc.call(peer, &GuildRequest::Ping, PING_TIMEOUT).await;
        let up = matches!(answer, Ok(GuildResponse::Pong));
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.insert(peer, (Instant::now(), up));
        up
    }

    /// This node's process for `guild_id`, if this node owns the guild: no node ahead of it on
    /// the guild's successor list answers. A process of a guild it no longer owns is retired.
    async fn owned_process(self: &Arc<Self>, guild_id: u64) -> Option<Arc<GuildProcess>> {
        // 1. Ownership: every node ahead of this one must be unreachable from here.
        for peer in self.placement.successors(guild_id) {
            if *peer == self.addr {
                break;
            }
            if self.reachable(*peer).await {
                self.hand_back(guild_id, *peer).await;
                return None;
            }
        }

        // 2. The process, new if there is none: it takes the guild over at its first use.
        let mut processes = self.processes();
        let process = processes.entry(guild_id).or_insert_with(|| {
            Arc::new(GuildProcess {
                retired: AtomicBool::new(false),
                state: Arc::new(Mutex::new(ProcessState {
                    epoch: None,
                    next_seq: 1,
                })),
            })
        });
        Some(process.clone())
    }

    /// Locks this node's process of `guild_id`, taking the guild over at the process's first
    /// use; the answer to give instead when this node does not own the guild (`NotOwner`,
    /// also for a process retired while the request waited) or the takeover read failed.
    pub(super) async fn lock_owned(
        self: &Arc<Self>,
        guild_id: u64,
    ) -> Result<ProcessLock, GuildResponse> {
        let Some(process) = self.owned_process(guild_id).await else {
            return Err(GuildResponse::NotOwner);
        };
        let mut state = process.state.clone().lock_owned().await;
        if process.retired.load(Ordering::SeqCst) {
            return Err(GuildResponse::NotOwner);
        }
        let epoch = match state.epoch {
            Some(epoch) => epoch,
            None => match self.take_over(guild_id).await {
                Ok(epoch) => *state.epoch.insert(epoch),
                Err(error) => {
                    tracing::warn!(guild_id, %error, "guild_takeover_failed");
                    return Err(GuildResponse::Failed(error));
                }
            },
        };
        Ok(ProcessLock { state, epoch })
    }

    /// Takes `guild_id` over: moves the generator past every id stored in the guild's
    /// channels (read at QUORUM), takes the epoch, and tells the other guild nodes.
    async fn take_over(self: &Arc<Self>, guild_id: u64) -> Result<u64, StoreError> {
        // 1. The newest stored id of each channel.
        let channels: Vec<u64> = {
            let directory = self.directory.read();
            let guild = directory.guilds.get(&guild_id);
            guild.map_or_else(Vec::new, |g| g.channels.iter().map(|c| c.id).collect())
        };
        {
            // Sends another process took may carry nonces this node never saw: read them again.
            let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            channels
                .iter()
                .for_each(|&channel_id| nonces.forget_loaded(channel_id));
        }
        let mut newest = 0;
        for channel_id in channels {
            let query = HistoryQuery {
                channel_id,
                before: None,
                limit: 1,
            };
            let page = self.store.history(query).await?;
            newest = page.iter().map(|m| m.message_id).fold(newest, u64::max);
        }

        // 2. Ids and the epoch above all of them.
        let epoch = {
            let mut ids = self.ids.lock().await;
            ids.advance_past(newest);
            ids.next_id()
        };
        tracing::info!(guild_id, epoch, newest, "guild_taken_over");

        // 3. Every other node retires its process for the guild, all of them older.
        let peers = self.placement.nodes().iter().copied();
        self.announce(guild_id, epoch, peers.filter(|&p| p != self.addr).collect());
        Ok(epoch)
    }

    /// Starts a new epoch for the guild `process` serves, as a takeover does: its next event
    /// is the new epoch's first, on which gateways invalidate the guild's sessions.
    pub(super) async fn renew_epoch(
        self: &Arc<Self>,
        process: &mut ProcessLock,
        guild_id: u64,
    ) -> Result<(), StoreError> {
        let epoch = self.take_over(guild_id).await?;
        process.state.epoch = Some(epoch);
        process.epoch = epoch;
        process.state.next_seq = 1;
        Ok(())
    }

    async fn create_message(
        self: &Arc<Self>,
        new: changes::NewMessage,
        nonce: Option<(String, bool)>,
        after: Option<u64>,
    ) -> GuildResponse {
        let changes::NewMessage {
            channel_id,
            author_id,
            content,
            referenced_message_id,
        } = new;
        let started = tokio::time::Instant::now();
        let Some(guild_id) = self.guild_of_channel(channel_id).await else {
            return GuildResponse::UnknownChannel;
        };
        let author_name = self.directory.read().username(author_id).to_string();
        let mut process = match self.lock_owned(guild_id).await {
            Ok(process) => process,
            Err(refused) => return refused,
        };

        // 1. The guild's order starts here: hold its lock until the event is queued. A send
        //    whose nonce is enforced and was seen answers the first message.
        if let Some((nonce, true)) = &nonce {
            let key = (channel_id, author_id, nonce.clone());
            if let Some(answer) = self.repeat_of(&mut process, &key, &author_name).await {
                return answer;
            }
        }
        if let Some(referenced) = referenced_message_id {
            if let Some(refused) = self.check_reference(channel_id, referenced).await {
                return refused;
            }
        }
        let nonce = nonce.map(|(nonce, _enforced)| nonce);
        let message_id = {
            let mut ids = self.ids.lock().await;
            if let Some(seen) = after {
                ids.advance_past(seen);
            }
            ids.next_id()
        };
        let message = StoredMessage {
            channel_id,
            message_id,
            guild_id,
            author_id,
            content,
            nonce,
            edited_ms: None,
            referenced_message_id,
            reactions: Vec::new(),
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
            guild_epoch: process.epoch,
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
        let metrics = crate::metrics::registry();
        metrics.messages_created.inc();
        metrics
            .message_create_seconds
            .observe(crate::metrics::seconds_since(started));
        GuildResponse::Created(message)
    }
}

/// The API's side: sends each guild's requests to its owner on the placement ring, or to the
/// next node on the ring when the owner cannot be reached.
#[derive(Debug, Clone)]
pub struct GuildRouter {
    placement: HashRing<SocketAddr>,
    rpc: RpcClient,
}

impl GuildRouter {
    /// A router over the guild nodes at `nodes`.
    pub fn new(nodes: &[SocketAddr]) -> Self {
        assert!(!nodes.is_empty(), "a guild router needs a guild node");
        Self {
            placement: placement(nodes),
            rpc: RpcClient::new(),
        }
    }

    /// The nodes `guild_id`'s requests try, in order.
    pub fn route(&self, guild_id: u64) -> Vec<SocketAddr> {
        let order = self.placement.successors(guild_id);
        order.into_iter().copied().collect()
    }

    /// Sends `request` for `guild_id` along the guild's successor list: a node that cannot be
    /// reached (nothing was sent) or is not the owner passes it on to the next one. A call
    /// whose outcome is unknown is not sent again, since the node may have acted on it.
    pub async fn call(
        &self,
        guild_id: u64,
        request: &GuildRequest,
        timeout: Duration,
    ) -> Result<GuildResponse, RpcError> {
        let order = self.route(guild_id);
        let mut refusals = Vec::new();
        for &node in &order {
            match self.rpc.call(node, request, timeout).await {
                Ok(GuildResponse::NotOwner) => refusals.push(format!("{node} is not the owner")),
                Err(RpcError::Unreachable { addr, reason }) => {
                    tracing::debug!(guild_id, %addr, reason, "guild_node_unreachable");
                    refusals.push(format!("{addr}: {reason}"));
                }
                answer => return answer,
            }
        }
        Err(RpcError::Unreachable {
            addr: order[0],
            reason: format!(
                "no guild node took guild {guild_id}: {}",
                refusals.join("; ")
            ),
        })
    }
}

/// Drains one gateway's queue in batches, resending a batch until the gateway takes it.
async fn pump(
    gateway: SocketAddr,
    mut queue: mpsc::Receiver<GatewayEvent>,
    stale: mpsc::Sender<(u64, u64)>,
) {
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
                Ok(GatewayResponse::Stale { guilds }) => {
                    for deposed in guilds {
                        tracing::info!(%gateway, guild_id = deposed.0, "guild_process_deposed");
                        let _ = stale.send(deposed).await;
                    }
                    break;
                }
                Err(error) => {
                    tracing::debug!(%gateway, %error, "fanout_retry");
                    tokio::time::sleep(FANOUT_RETRY_DELAY).await;
                }
            }
        }
    }
}
