//! Cluster membership by gossip, versioned the way Cassandra versions it.
//!
//! Modelled: every node owns an [`EndpointState`] for itself: a `generation` fixed at
//! process start (it must rise across restarts; see [`next_generation`]), a heartbeat
//! `version` bumped every round, and application states (status, tokens) stamped from the
//! same per-node version counter. Once a second a [`Gossiper`] bumps its heartbeat and runs
//! the three-message exchange with one random live peer and, with probability
//! `unreachable / (live + 1)`, one random unreachable peer:
//!
//! 1. SYN: the initiator's digests, `(endpoint, generation, version_max)` per known endpoint;
//! 2. ACK: the receiver's states the initiator lacks, and requests for what it lacks itself;
//! 3. ACK2: the initiator's states answering those requests.
//!
//! Merge rule: a higher generation replaces the whole state (the node restarted); at the same
//! generation only versions newer than the local ones are applied; anything else is stale.
//! A node never takes another's word about itself. Whenever a peer's heartbeat is seen to
//! advance (or its generation to rise) the [`FailureDetector`] gets a report, so UP/DOWN is a
//! local, phi-based judgement of that peer's heartbeat progress, however it was relayed.
//!
//! [`Gossiper`] does no I/O and reads no clock: the caller passes `now_ms` and a chooser for
//! random picks, so a seeded caller gets the same rounds every run. [`run_gossip`] is the
//! async driver a ring node spawns; it reads the runtime's monotonic clock (virtual under
//! madsim) and sends through a closure, e.g. one built on [`RpcGossipSender`].
//!
//! Not modelled:
//! TODO(ring-membership): Cassandra's echo before marking a newly learned node up; here a
//! node first seen via a relayed state is up only after its heartbeat is seen to advance.
//! TODO(ring-membership): seeds as a separate role, shadow rounds at boot, quarantine of
//! removed nodes, decommission and replacement; every configured peer acts as a seed.
//! TODO(ring-membership): digests are sent in address order, not shuffled as Cassandra does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::failure_detector::FailureDetector;
use crate::rpc::{RpcClient, RpcError};

/// How often a node gossips (Cassandra's interval).
pub const GOSSIP_INTERVAL_MS: u64 = 1000;
/// How far past the known generation a remote one may jump before it is taken for corrupt
/// data rather than a restart: one year of seconds, as in Cassandra.
pub const GENERATION_JUMP_S_MAX: u64 = 365 * 24 * 60 * 60;

/// The generation for a node booting at `now_s` (seconds on its clock) whose previous run
/// used `previous`: its clock, or one past the previous generation if the clock has not
/// moved past it (a fast restart, or a clock stepped back).
pub fn next_generation(previous: Option<u64>, now_s: u64) -> u64 {
    match previous {
        Some(previous) => now_s.max(previous + 1),
        None => now_s,
    }
}

/// An application state a node publishes about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AppStateKey {
    /// Its ring status (e.g. joining, normal, leaving).
    Status,
    /// Its ring tokens.
    Tokens,
}

/// An application state's value and the version it was set at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedValue {
    /// The value.
    pub value: String,
    /// The owner's version counter when it was set.
    pub version: u64,
}

/// What the cluster knows about one node, as that node last published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Fixed for the node's process lifetime; higher after a restart.
    pub generation: u64,
    /// The heartbeat version, bumped every gossip round.
    pub version: u64,
    /// Application states, each stamped from the same version counter as the heartbeat.
    pub app_states: BTreeMap<AppStateKey, VersionedValue>,
}

/// What merging a remote state into a known one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The remote generation was higher: the node restarted, its old state is replaced.
    Restarted,
    /// Same generation, newer versions applied.
    Updated {
        /// Whether the heartbeat version rose.
        heartbeat_advanced: bool,
    },
    /// Older generation, or nothing newer: ignored.
    Stale,
    /// A generation jump over [`GENERATION_JUMP_S_MAX`]: ignored as corrupt.
    Rejected,
}

impl EndpointState {
    /// A fresh state at `generation`, version 0, no application states.
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            version: 0,
            app_states: BTreeMap::new(),
        }
    }

    /// The highest version anywhere in this state.
    pub fn version_max(&self) -> u64 {
        let app_max = self.app_states.values().map(|value| value.version).max();
        self.version.max(app_max.unwrap_or(0))
    }

    /// The part of this state newer than `version`: the heartbeat always, and the
    /// application states set after `version`; `None` if nothing is newer.
    pub fn newer_than(&self, version: u64) -> Option<EndpointState> {
        if self.version_max() <= version {
            return None;
        }
        let app_states = self
            .app_states
            .iter()
            .filter(|(_, value)| value.version > version)
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        Some(EndpointState {
            generation: self.generation,
            version: self.version,
            app_states,
        })
    }

    /// Merges `remote` (a full state or a delta from [`EndpointState::newer_than`]).
    pub fn merge(&mut self, remote: EndpointState) -> MergeOutcome {
        if remote.generation > self.generation {
            if remote.generation - self.generation > GENERATION_JUMP_S_MAX {
                return MergeOutcome::Rejected;
            }
            *self = remote;
            return MergeOutcome::Restarted;
        }
        if remote.generation < self.generation || remote.version_max() <= self.version_max() {
            return MergeOutcome::Stale;
        }

        let heartbeat_advanced = remote.version > self.version;
        self.version = self.version.max(remote.version);
        for (key, value) in remote.app_states {
            let newer = self
                .app_states
                .get(&key)
                .is_none_or(|known| value.version > known.version);
            if newer {
                self.app_states.insert(key, value);
            }
        }
        MergeOutcome::Updated { heartbeat_advanced }
    }

    fn digest(&self, endpoint: SocketAddr) -> GossipDigest {
        GossipDigest {
            endpoint,
            generation: self.generation,
            version_max: self.version_max(),
        }
    }
}

/// A summary of one endpoint's state: enough to tell who holds the newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// The endpoint described.
    pub endpoint: SocketAddr,
    /// Its generation.
    pub generation: u64,
    /// Its highest version; in a request, "send what is newer than this".
    pub version_max: u64,
}

/// One endpoint's state (or a delta of it) in a gossip message.
pub type StateEntry = (SocketAddr, EndpointState);

/// A message of the three-way gossip exchange, carried over a node's RPC.
///
/// On the wire a SYN is a request answered by an ACK, and an ACK2 is a request answered by
/// nothing (`None`), so a transport maps [`GossipMessage`] to `Option<GossipMessage>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// The initiator's digests.
    Syn {
        /// The initiator.
        from: SocketAddr,
        /// One per endpoint the initiator knows, itself included.
        digests: Vec<GossipDigest>,
    },
    /// The receiver's answer.
    Ack {
        /// The receiver.
        from: SocketAddr,
        /// States the receiver wants: newer than `version_max` at `generation`.
        requests: Vec<GossipDigest>,
        /// States the receiver holds newer than the initiator's digests.
        states: Vec<StateEntry>,
    },
    /// The initiator's answer to the requests.
    Ack2 {
        /// The initiator.
        from: SocketAddr,
        /// The requested states.
        states: Vec<StateEntry>,
    },
}

/// What a gossip round sends, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipRound {
    /// The SYN to send to every target.
    pub syn: GossipMessage,
    /// A live peer, an unreachable one, both or neither.
    pub targets: Vec<SocketAddr>,
}

/// One node's view of the cluster and its part in the gossip protocol.
#[derive(Debug, Clone)]
pub struct Gossiper {
    addr: SocketAddr,
    local: EndpointState,
    seeds: BTreeSet<SocketAddr>,
    states: BTreeMap<SocketAddr, EndpointState>,
    detector: FailureDetector,
}

/// Calls `choose(n)` and checks it kept to `0..n`.
fn pick(choose: &mut impl FnMut(usize) -> usize, n: usize) -> usize {
    assert!(n > 0, "a pick is among at least one");
    let index = choose(n);
    assert!(
        index < n,
        "the chooser returned {index} for a pick among {n}"
    );
    index
}

impl Gossiper {
    /// The gossiper of the node at `addr`, booted at `generation`, that knows `seeds`
    /// (any peers' addresses; its own is ignored) and judges peers with `detector`.
    pub fn new(
        addr: SocketAddr,
        generation: u64,
        seeds: impl IntoIterator<Item = SocketAddr>,
        detector: FailureDetector,
    ) -> Self {
        let seeds = seeds.into_iter().filter(|seed| *seed != addr).collect();
        Self {
            addr,
            local: EndpointState::new(generation),
            seeds,
            states: BTreeMap::new(),
            detector,
        }
    }

    /// This node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's own state.
    pub fn local_state(&self) -> &EndpointState {
        &self.local
    }

    /// The state known for `endpoint`, this node's own included.
    pub fn state(&self, endpoint: SocketAddr) -> Option<&EndpointState> {
        if endpoint == self.addr {
            return Some(&self.local);
        }
        self.states.get(&endpoint)
    }

    /// The failure detector fed by this gossiper.
    pub fn detector(&self) -> &FailureDetector {
        &self.detector
    }

    /// Every other node this one knows of, by configuration or by gossip, in address order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        let known = self.states.keys().copied();
        let all: BTreeSet<SocketAddr> = self.seeds.iter().copied().chain(known).collect();
        all.into_iter().collect()
    }

    /// Whether `endpoint` is up at `now_ms`; a node always believes itself up.
    pub fn is_alive(&self, endpoint: SocketAddr, now_ms: u64) -> bool {
        endpoint == self.addr || self.detector.is_alive(endpoint, now_ms)
    }

    /// Peers up at `now_ms`, in address order.
    pub fn live_peers(&self, now_ms: u64) -> Vec<SocketAddr> {
        let peers = self.peers().into_iter();
        peers.filter(|peer| self.is_alive(*peer, now_ms)).collect()
    }

    /// Peers down (or never heard from) at `now_ms`, in address order.
    pub fn unreachable_peers(&self, now_ms: u64) -> Vec<SocketAddr> {
        let peers = self.peers().into_iter();
        peers.filter(|peer| !self.is_alive(*peer, now_ms)).collect()
    }

    /// Publishes an application state about this node, stamped with a new version.
    pub fn set_app_state(&mut self, key: AppStateKey, value: String) {
        let version = self.local.version_max() + 1;
        let versioned = VersionedValue { value, version };
        self.local.app_states.insert(key, versioned);
    }

    /// Starts a round at `now_ms`: bumps this node's heartbeat, builds the SYN and picks the
    /// targets with `choose(n)`, which must return an index in `0..n`.
    pub fn begin_round(
        &mut self,
        now_ms: u64,
        choose: &mut impl FnMut(usize) -> usize,
    ) -> GossipRound {
        // 1. The heartbeat: a new version from the node's counter.
        self.local.version = self.local.version_max() + 1;

        // 2. Digests for everything known, this node first.
        let mut digests = vec![self.local.digest(self.addr)];
        digests.extend(self.states.iter().map(|(addr, state)| state.digest(*addr)));
        let syn = GossipMessage::Syn {
            from: self.addr,
            digests,
        };

        // 3. One live peer; then an unreachable one with chance unreachable / (live + 1),
        //    which is certain while nobody is live, so a booting node reaches its seeds.
        let live = self.live_peers(now_ms);
        let unreachable = self.unreachable_peers(now_ms);
        let mut targets = Vec::new();
        if !live.is_empty() {
            targets.push(live[pick(choose, live.len())]);
        }
        if !unreachable.is_empty() && pick(choose, live.len() + 1) < unreachable.len() {
            targets.push(unreachable[pick(choose, unreachable.len())]);
        }
        GossipRound { syn, targets }
    }

    /// Handles a gossip message received at `now_ms` and returns the answer to send back:
    /// an ACK for a SYN, an ACK2 for an ACK, nothing for an ACK2.
    pub fn handle(&mut self, message: GossipMessage, now_ms: u64) -> Option<GossipMessage> {
        match message {
            GossipMessage::Syn { from, digests } => {
                let (requests, states) = self.examine(&digests);
                let (request_count, state_count) = (requests.len(), states.len());
                tracing::trace!(%from, request_count, state_count, "gossip_syn");
                Some(GossipMessage::Ack {
                    from: self.addr,
                    requests,
                    states,
                })
            }
            GossipMessage::Ack {
                from,
                requests,
                states,
            } => {
                let (request_count, state_count) = (requests.len(), states.len());
                tracing::trace!(%from, request_count, state_count, "gossip_ack");
                self.apply(states, now_ms);
                let states = self.answer(&requests);
                Some(GossipMessage::Ack2 {
                    from: self.addr,
                    states,
                })
            }
            GossipMessage::Ack2 { from, states } => {
                let state_count = states.len();
                tracing::trace!(%from, state_count, "gossip_ack2");
                self.apply(states, now_ms);
                None
            }
        }
    }

    /// Compares a SYN's digests with local knowledge: what to request, what to send.
    fn examine(&self, digests: &[GossipDigest]) -> (Vec<GossipDigest>, Vec<StateEntry>) {
        let mut requests = Vec::new();
        let mut states = Vec::new();
        for digest in digests {
            let endpoint = digest.endpoint;
            let request_from = |version_max| GossipDigest {
                version_max,
                ..*digest
            };
            let Some(local) = self.state(endpoint) else {
                requests.push(request_from(0));
                continue;
            };
            let is_self = endpoint == self.addr;
            if digest.generation > local.generation {
                // The sender knows a newer incarnation; this node never learns about itself.
                if !is_self {
                    requests.push(request_from(0));
                }
            } else if digest.generation < local.generation {
                states.push((endpoint, local.clone()));
            } else if digest.version_max > local.version_max() {
                if !is_self {
                    requests.push(request_from(local.version_max()));
                }
            } else if let Some(delta) = local.newer_than(digest.version_max) {
                states.push((endpoint, delta));
            }
        }
        (requests, states)
    }

    /// The states answering `requests`: a delta at the requested generation, the whole state
    /// if this node knows a newer generation, nothing if it knows only an older one.
    fn answer(&self, requests: &[GossipDigest]) -> Vec<StateEntry> {
        let mut states = Vec::new();
        for request in requests {
            let Some(local) = self.state(request.endpoint) else {
                continue;
            };
            let state = if local.generation == request.generation {
                local.newer_than(request.version_max)
            } else if local.generation > request.generation {
                Some(local.clone())
            } else {
                None
            };
            if let Some(state) = state {
                states.push((request.endpoint, state));
            }
        }
        states
    }

    /// Merges received states and reports advancing heartbeats to the detector.
    fn apply(&mut self, states: Vec<StateEntry>, now_ms: u64) {
        for (endpoint, remote) in states {
            if endpoint == self.addr {
                continue;
            }
            let Some(local) = self.states.get_mut(&endpoint) else {
                // First sight, possibly relayed from long ago: up only once it advances.
                let generation = remote.generation;
                tracing::debug!(%endpoint, generation, "gossip_endpoint_learned");
                self.states.insert(endpoint, remote);
                continue;
            };
            let outcome = local.merge(remote);
            match outcome {
                MergeOutcome::Restarted => {
                    let generation = local.generation;
                    tracing::debug!(%endpoint, generation, "gossip_endpoint_restarted");
                    self.detector.report(endpoint, now_ms);
                }
                MergeOutcome::Updated {
                    heartbeat_advanced: true,
                } => self.detector.report(endpoint, now_ms),
                MergeOutcome::Rejected => {
                    tracing::warn!(%endpoint, "gossip_generation_jump_rejected");
                }
                MergeOutcome::Updated { .. } | MergeOutcome::Stale => {}
            }
        }
    }
}

/// A pseudo-random chooser for [`Gossiper::begin_round`] (SplitMix64 steps, scaled to
/// `0..n` by multiply-and-shift), for callers without an RNG of their own. Seeded, so a run
/// is reproducible; seed it from the simulation's RNG for variety across seeds.
pub fn seeded_chooser(seed: u64) -> impl FnMut(usize) -> usize + Send {
    let mut state = seed;
    move |n: usize| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let scaled = (u128::from(z) * n as u128) >> 64;
        usize::try_from(scaled).unwrap_or(0)
    }
}

/// A [`Gossiper`] shared by a node's gossip task and its RPC handler, with the monotonic
/// origin both measure `now_ms` from.
#[derive(Debug, Clone)]
pub struct SharedGossiper {
    inner: Arc<Mutex<Gossiper>>,
    origin: tokio::time::Instant,
}

impl SharedGossiper {
    /// Shares `gossiper`; time counts from now on the runtime's monotonic clock.
    pub fn new(gossiper: Gossiper) -> Self {
        Self {
            inner: Arc::new(Mutex::new(gossiper)),
            origin: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since this handle was made, on the runtime's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// The gossiper, locked; hold it only briefly and never across an await.
    pub fn lock(&self) -> MutexGuard<'_, Gossiper> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Handles a message a peer sent (what a node's RPC handler calls).
    pub fn handle(&self, message: GossipMessage) -> Option<GossipMessage> {
        let now_ms = self.now_ms();
        self.lock().handle(message, now_ms)
    }

    /// Whether `endpoint` is up now (what a coordinator asks before sending).
    pub fn is_alive(&self, endpoint: SocketAddr) -> bool {
        let now_ms = self.now_ms();
        self.lock().is_alive(endpoint, now_ms)
    }

    /// Peers up now.
    pub fn live_peers(&self) -> Vec<SocketAddr> {
        let now_ms = self.now_ms();
        self.lock().live_peers(now_ms)
    }
}

/// The gossip task's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipConfig {
    /// Time between round starts.
    pub interval_ms: u64,
    /// How long one message may take to be answered.
    pub exchange_timeout_ms: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval_ms: GOSSIP_INTERVAL_MS,
            exchange_timeout_ms: GOSSIP_INTERVAL_MS,
        }
    }
}

/// Sends gossip over a node's RPC, wrapped in the node's own request type.
pub struct RpcGossipSender<Req, Resp> {
    client: RpcClient,
    timeout: Duration,
    wrap: fn(GossipMessage) -> Req,
    unwrap: fn(Resp) -> Option<Option<GossipMessage>>,
}

impl<Req, Resp> Clone for RpcGossipSender<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            timeout: self.timeout,
            wrap: self.wrap,
            unwrap: self.unwrap,
        }
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> RpcGossipSender<Req, Resp> {
    /// A sender through `client`: `wrap` puts a message in the node's request type, `unwrap`
    /// takes the answer out of its response type (`None` if the response is not gossip).
    pub fn new(
        client: RpcClient,
        timeout: Duration,
        wrap: fn(GossipMessage) -> Req,
        unwrap: fn(Resp) -> Option<Option<GossipMessage>>,
    ) -> Self {
        Self {
            client,
            timeout,
            wrap,
            unwrap,
        }
    }

    /// Sends `message` to `peer` and returns its answer.
    pub async fn send(
        &self,
        peer: SocketAddr,
        message: GossipMessage,
    ) -> Result<Option<GossipMessage>, RpcError> {
        let request = (self.wrap)(message);
        let response: Resp = self.client.call(peer, &request, self.timeout).await?;
        (self.unwrap)(response).ok_or_else(|| RpcError::Unknown {
            addr: peer,
            reason: "the response is not a gossip answer".to_string(),
        })
    }
}

/// Runs `shared`'s gossip rounds every `config.interval_ms` until the task is dropped,
/// picking targets with `choose` and exchanging messages through `send(peer, message)`,
/// which returns the peer's answer. The exchanges of a round run concurrently.
pub async fn run_gossip<S, F>(
    shared: SharedGossiper,
    config: GossipConfig,
    mut choose: impl FnMut(usize) -> usize,
    send: S,
) where
    S: Fn(SocketAddr, GossipMessage) -> F,
    F: Future<Output = Result<Option<GossipMessage>, RpcError>>,
{
    assert!(config.interval_ms > 0, "a gossip interval is positive");
    let interval = Duration::from_millis(config.interval_ms);
    loop {
        let round_start = tokio::time::Instant::now();
        let round = {
            let now_ms = shared.now_ms();
            shared.lock().begin_round(now_ms, &mut choose)
        };
        let exchanges = round
            .targets
            .iter()
            .map(|peer| exchange(&shared, &config, &send, *peer, round.syn.clone()));
        futures_util::future::join_all(exchanges).await;
        tokio::time::sleep_until(round_start + interval).await;
    }
}

/// One SYN → ACK → ACK2 exchange with `peer`; failures are logged and dropped, since the
/// failure detector, not the transport, decides who is down.
async fn exchange<S, F>(
    shared: &SharedGossiper,
    config: &GossipConfig,
    send: &S,
    peer: SocketAddr,
    syn: GossipMessage,
) where
    S: Fn(SocketAddr, GossipMessage) -> F,
    F: Future<Output = Result<Option<GossipMessage>, RpcError>>,
{
    let timeout = Duration::from_millis(config.exchange_timeout_ms);
    let send_in_time = |message| tokio::time::timeout(timeout, send(peer, message));

    // 1. SYN, answered by an ACK.
    let ack = match send_in_time(syn).await {
        Ok(Ok(Some(ack @ GossipMessage::Ack { .. }))) => ack,
        Ok(Ok(other)) => {
            tracing::warn!(%peer, answer = ?other, "gossip_unexpected_answer");
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "gossip_syn_failed");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, "gossip_syn_timed_out");
            return;
        }
    };

    // 2. Apply the ACK, then send the ACK2 it calls for.
    let ack2 = shared.handle(ack);
    let Some(ack2) = ack2 else { return };
    match send_in_time(ack2).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "gossip_ack2_failed"),
        Err(_elapsed) => tracing::debug!(%peer, "gossip_ack2_timed_out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::failure_detector::DetectorConfig;

    /// The most rounds the three-node sweep may need (see its test).
    const ROUNDS_TO_CONVERGE_MAX: u64 = 6;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7000))
    }

    fn gossiper(n: u8, generation: u64, peers: &[u8]) -> Gossiper {
        let seeds = peers.iter().map(|peer| addr(*peer));
        Gossiper::new(addr(n), generation, seeds, FailureDetector::default())
    }

    fn state(generation: u64, version: u64) -> EndpointState {
        EndpointState {
            generation,
            version,
            app_states: BTreeMap::new(),
        }
    }

    /// A full exchange initiated by `from` towards `to`, both at `now_ms`.
    fn exchange(from: &mut Gossiper, to: &mut Gossiper, now_ms: u64) {
        let digests = vec![from.local.digest(from.addr)]
            .into_iter()
            .chain(from.states.iter().map(|(a, s)| s.digest(*a)))
            .collect();
        let syn = GossipMessage::Syn {
            from: from.addr,
            digests,
        };
        let ack = to.handle(syn, now_ms).unwrap();
        let ack2 = from.handle(ack, now_ms).unwrap();
        assert_eq!(to.handle(ack2, now_ms), None);
    }

    #[test]
    fn a_higher_generation_wins_whatever_the_versions() {
        let mut local = state(10, 500);
        assert_eq!(local.merge(state(11, 1)), MergeOutcome::Restarted);
        assert_eq!(local, state(11, 1));
    }

    #[test]
    fn a_lower_generation_is_stale_whatever_the_versions() {
        let mut local = state(10, 5);
        assert_eq!(local.merge(state(9, 500)), MergeOutcome::Stale);
        assert_eq!(local, state(10, 5));
    }

    #[test]
    fn at_the_same_generation_the_higher_version_wins() {
        let mut local = state(10, 5);
        let outcome = local.merge(state(10, 6));
        assert_eq!(
            outcome,
            MergeOutcome::Updated {
                heartbeat_advanced: true
            }
        );
        assert_eq!(local.version, 6);
        assert_eq!(local.merge(state(10, 6)), MergeOutcome::Stale);
        assert_eq!(local.merge(state(10, 3)), MergeOutcome::Stale);
        assert_eq!(local.version, 6);
    }

    #[test]
    fn a_delta_applies_only_the_newer_app_states() {
        let mut owner = gossiper(1, 10, &[]);
        owner.set_app_state(AppStateKey::Status, "joining".into());
        owner.set_app_state(AppStateKey::Tokens, "1,2,3".into());
        let mut known = owner.local_state().clone();

        owner.set_app_state(AppStateKey::Status, "normal".into());
        let delta = owner.local_state().newer_than(known.version_max()).unwrap();
        assert_eq!(delta.app_states.len(), 1, "only the status changed");

        let outcome = known.merge(delta);
        assert_eq!(
            outcome,
            MergeOutcome::Updated {
                heartbeat_advanced: false
            }
        );
        assert_eq!(&known, owner.local_state());
        assert_eq!(owner.local_state().newer_than(known.version_max()), None);
    }

    #[test]
    fn an_absurd_generation_jump_is_rejected() {
        let mut local = state(10, 5);
        let outcome = local.merge(state(11 + GENERATION_JUMP_S_MAX, 1));
        assert_eq!(outcome, MergeOutcome::Rejected);
        assert_eq!(local, state(10, 5));
    }

    #[test]
    fn a_generation_rises_across_restarts_even_when_the_clock_did_not() {
        assert_eq!(next_generation(None, 1_000), 1_000);
        assert_eq!(next_generation(Some(900), 1_000), 1_000);
        assert_eq!(next_generation(Some(1_000), 1_000), 1_001);
        assert_eq!(next_generation(Some(5_000), 1_000), 5_001);
    }

    #[test]
    fn a_restarted_node_replaces_its_old_state_everywhere() {
        let mut choose = seeded_chooser(1);
        let mut a = gossiper(1, 100, &[2, 3]);
        let mut b = gossiper(2, 100, &[1, 3]);
        let mut c = gossiper(3, 100, &[1, 2]);
        b.set_app_state(AppStateKey::Status, "normal".into());
        for round in 0..5 {
            b.begin_round(round * 1000, &mut choose);
            exchange(&mut b, &mut a, round * 1000);
            exchange(&mut b, &mut c, round * 1000);
        }
        assert_eq!(a.state(addr(2)), Some(b.local_state()));
        assert_eq!(c.state(addr(2)), Some(b.local_state()));

        // b restarts: a new generation, versions from zero, no application states yet.
        let mut b = gossiper(2, 200, &[1, 3]);
        b.begin_round(5_000, &mut choose);
        exchange(&mut b, &mut a, 5_000);
        assert_eq!(a.state(addr(2)), Some(b.local_state()));
        assert!(a.state(addr(2)).unwrap().app_states.is_empty());

        // c still holds the old incarnation, with higher versions; it cannot win, and its
        // exchange with a teaches it the new one.
        assert!(c.state(addr(2)).unwrap().version > b.local_state().version);
        exchange(&mut c, &mut a, 6_000);
        assert_eq!(a.state(addr(2)).unwrap().generation, 200);
        assert_eq!(c.state(addr(2)), Some(b.local_state()));
    }

    #[test]
    fn a_node_ignores_what_others_say_about_itself() {
        let mut a = gossiper(1, 100, &[2]);
        let mut b = gossiper(2, 100, &[1]);
        exchange(&mut a, &mut b, 0);
        // b now holds a's state; an impostor claim about a at a higher generation is ignored.
        let claim = GossipMessage::Ack2 {
            from: addr(2),
            states: vec![(addr(1), state(999, 999))],
        };
        assert_eq!(a.handle(claim, 1), None);
        assert_eq!(a.local_state().generation, 100);
    }

    #[test]
    fn a_booting_node_gossips_to_an_unreachable_seed() {
        let mut a = gossiper(1, 100, &[2, 3]);
        let mut choose = seeded_chooser(7);
        let round = a.begin_round(0, &mut choose);
        assert_eq!(
            round.targets.len(),
            1,
            "no live peer, so exactly one unreachable one"
        );
        assert!([addr(2), addr(3)].contains(&round.targets[0]));
        assert_eq!(a.local_state().version, 1);
    }

    #[test]
    fn gossip_messages_survive_the_rpc_encoding() {
        let mut a = gossiper(1, 100, &[2]);
        a.set_app_state(AppStateKey::Tokens, "-5,7".into());
        let message = GossipMessage::Ack {
            from: addr(1),
            requests: vec![a.local.digest(addr(1))],
            states: vec![(addr(1), a.local_state().clone())],
        };
        let bytes = serde_json::to_vec(&message).unwrap();
        let decoded: GossipMessage = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded, message);
    }

    /// Runs one round on every node not in `silent` at `now_ms`, delivering each exchange
    /// at once; silent nodes neither start rounds nor answer.
    fn run_round(
        nodes: &mut [Gossiper],
        now_ms: u64,
        silent: &[usize],
        choose: &mut impl FnMut(usize) -> usize,
    ) {
        for i in 0..nodes.len() {
            if silent.contains(&i) {
                continue;
            }
            let plan = nodes[i].begin_round(now_ms, choose);
            for target in plan.targets {
                let j = nodes.iter().position(|n| n.addr() == target);
                let Some(j) = j.filter(|j| !silent.contains(j)) else {
                    continue;
                };
                let ack = nodes[j].handle(plan.syn.clone(), now_ms).unwrap();
                if let Some(ack2) = nodes[i].handle(ack, now_ms) {
                    nodes[j].handle(ack2, now_ms);
                }
            }
        }
    }

    /// Runs a round a second for `rounds` rounds from `start_ms`.
    fn run_rounds(nodes: &mut [Gossiper], rounds: u64, start_ms: u64, silent: &[usize]) {
        let mut choose = seeded_chooser(42);
        for round in 0..rounds {
            run_round(nodes, start_ms + round * 1000, silent, &mut choose);
        }
    }

    fn three_nodes() -> Vec<Gossiper> {
        let mut nodes = vec![
            gossiper(1, 100, &[1, 2, 3]),
            gossiper(2, 200, &[1, 2, 3]),
            gossiper(3, 300, &[1, 2, 3]),
        ];
        nodes[2].set_app_state(AppStateKey::Tokens, "42".into());
        nodes
    }

    /// Every node knows every node's current generation and application states, and sees
    /// every peer up.
    fn converged(nodes: &[Gossiper], now_ms: u64) -> bool {
        nodes.iter().all(|viewer| {
            let all_up = viewer.live_peers(now_ms).len() == nodes.len() - 1;
            all_up
                && nodes.iter().all(|node| {
                    let own = node.local_state();
                    let seen = viewer.state(node.addr());
                    seen.is_some_and(|seen| {
                        seen.generation == own.generation && seen.app_states == own.app_states
                    })
                })
        })
    }

    /// From a cold start (nobody heard from) a node is up only once its heartbeat has been
    /// seen to advance, so two rounds is the fastest possible; over these 100 seeds the
    /// fastest takes 2 and the slowest 6.
    #[test]
    fn three_nodes_converge_within_a_bounded_number_of_rounds() {
        let mut slowest = 0;
        for seed in 0..100 {
            let mut nodes = three_nodes();
            let mut choose = seeded_chooser(seed);
            let rounds = (0..20u64).find(|round| {
                let now_ms = round * 1000;
                run_round(&mut nodes, now_ms, &[], &mut choose);
                converged(&nodes, now_ms)
            });
            let rounds = rounds.expect("three nodes converge within 20 rounds") + 1;
            slowest = slowest.max(rounds);
        }
        assert!(
            slowest <= ROUNDS_TO_CONVERGE_MAX,
            "slowest seed took {slowest} rounds"
        );
    }

    #[test]
    fn a_converged_view_trails_each_owner_by_at_most_two_heartbeats() {
        let mut nodes = three_nodes();
        run_rounds(&mut nodes, 10, 0, &[]);
        assert!(converged(&nodes, 9_000));
        for viewer in &nodes {
            for node in &nodes {
                let seen = viewer.state(node.addr()).unwrap().version;
                assert!(node.local_state().version - seen <= 2);
            }
        }
    }

    #[test]
    fn the_detector_marks_a_silent_peer_down_and_keeps_an_active_one_up() {
        let mut nodes = three_nodes();
        run_rounds(&mut nodes, 30, 0, &[]);
        assert_eq!(nodes[0].live_peers(29_000), vec![addr(2), addr(3)]);

        // Node 3 goes silent. Node 1 saw its heartbeats advance about once a round (some
        // pairs in one simulated instant, some a round late): the mean is 1036 ms for this
        // seed. A few missed heartbeats, 4 s, are phi = 4000 / (1036 * ln 10) = 1.7: up.
        let mean_ms = nodes[0].detector().interval_ms_mean(addr(3)).unwrap();
        assert!((900.0..=1200.0).contains(&mean_ms), "mean {mean_ms} ms");
        run_rounds(&mut nodes, 4, 30_000, &[2]);
        assert!(nodes[0].is_alive(addr(3), 33_000));

        // After 40 s, phi = 40000 / (1036 * ln 10) = 16.8 (8.7 even at the 2 s cap): down.
        run_rounds(&mut nodes, 36, 34_000, &[2]);
        let now_ms = 69_000;
        assert!(nodes[0].is_alive(addr(2), now_ms));
        assert!(!nodes[0].is_alive(addr(3), now_ms));
        assert!(!nodes[1].is_alive(addr(3), now_ms));
        assert_eq!(nodes[0].unreachable_peers(now_ms), vec![addr(3)]);

        // It comes back (a partition healing, same process) and is up within a few rounds.
        run_rounds(&mut nodes, 3, 70_000, &[]);
        assert!(nodes[0].is_alive(addr(3), 72_000));
        assert!(nodes[1].is_alive(addr(3), 72_000));
        assert!(nodes[2].is_alive(addr(1), 72_000));
    }

    #[test]
    fn the_seeded_chooser_is_reproducible_and_in_range() {
        let mut one = seeded_chooser(9);
        let mut two = seeded_chooser(9);
        let picks: Vec<usize> = (0..100).map(|_| one(3)).collect();
        assert_eq!(picks, (0..100).map(|_| two(3)).collect::<Vec<_>>());
        assert!(picks.iter().all(|pick| *pick < 3));
        for value in 0..3 {
            assert!(picks.contains(&value), "{value} is picked sometimes");
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    /// The async driver against an in-process fake transport: three nodes converge, and a
    /// node the transport cannot reach is marked down while the others stay up. In the std
    /// build this runs in real time: 25 ms rounds for 800 ms, conviction after about
    /// 8 * 25 * ln 10 = 460 ms of silence.
    #[tokio::test]
    async fn the_driver_converges_over_a_fake_transport_and_convicts_an_unreachable_node() {
        let interval_ms = 25;
        let detector = || FailureDetector::new(DetectorConfig::for_gossip_interval(interval_ms));
        let peers = [addr(1), addr(2), addr(3), addr(4)];
        let shared: Vec<SharedGossiper> = (1..=3)
            .map(|n| SharedGossiper::new(Gossiper::new(addr(n), 100, peers, detector())))
            .collect();
        let config = GossipConfig {
            interval_ms,
            exchange_timeout_ms: interval_ms,
        };

        // addr(4) is configured everywhere but never answers.
        let drivers = shared.iter().enumerate().map(|(i, node)| {
            let everyone = shared.clone();
            let send = move |peer: SocketAddr, message: GossipMessage| {
                let target = everyone.iter().find(|n| n.lock().addr() == peer).cloned();
                async move {
                    let Some(target) = target else {
                        let reason = "nobody there".to_string();
                        return Err(RpcError::Unreachable { addr: peer, reason });
                    };
                    Ok(target.handle(message))
                }
            };
            let driver = run_gossip(node.clone(), config, seeded_chooser(i as u64), send);
            assert_send(&driver);
            driver
        });
        let all = futures_util::future::join_all(drivers);
        let ran = tokio::time::timeout(Duration::from_millis(800), all).await;
        assert!(ran.is_err(), "the drivers run until dropped");

        for node in &shared {
            let now_ms = node.now_ms();
            let gossiper = node.lock();
            let others: Vec<SocketAddr> = (1..=3)
                .map(addr)
                .filter(|peer| *peer != gossiper.addr())
                .collect();
            assert_eq!(gossiper.live_peers(now_ms), others);
            assert_eq!(gossiper.unreachable_peers(now_ms), vec![addr(4)]);
            assert!(gossiper.local_state().version > 10, "it ran rounds");
        }
    }

    /// A node's request and response types as the coordinator wiring might define them.
    #[cfg(not(madsim))]
    #[derive(Debug, Serialize, Deserialize)]
    enum TestRequest {
        Gossip(GossipMessage),
    }

    #[cfg(not(madsim))]
    #[derive(Debug, Serialize, Deserialize)]
    enum TestResponse {
        Gossip(Option<GossipMessage>),
    }

    /// Two nodes gossiping through `RpcGossipSender` and `serve_rpc` on loopback TCP.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn two_nodes_gossip_over_the_rpc_layer() {
        use crate::rpc::serve_rpc;
        use tokio::net::TcpListener;

        let interval_ms = 25;
        let listeners = [
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ];
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let config = GossipConfig {
            interval_ms,
            exchange_timeout_ms: 200,
        };

        let mut tasks = Vec::new();
        let mut shared = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let detector = FailureDetector::new(DetectorConfig::for_gossip_interval(interval_ms));
            let gossiper = Gossiper::new(addrs[i], 100 + i as u64, addrs.clone(), detector);
            let node = SharedGossiper::new(gossiper);
            shared.push(node.clone());

            let handler_node = node.clone();
            tasks.push(tokio::spawn(serve_rpc(
                listener,
                move |request: TestRequest| {
                    let TestRequest::Gossip(message) = request;
                    let answer = TestResponse::Gossip(handler_node.handle(message));
                    async move { answer }
                },
            )));

            let sender = RpcGossipSender::new(
                RpcClient::new(),
                Duration::from_millis(200),
                TestRequest::Gossip,
                |TestResponse::Gossip(answer)| Some(answer),
            );
            let send = move |peer, message| {
                let sender = sender.clone();
                async move { sender.send(peer, message).await }
            };
            let driver = run_gossip(node, config, seeded_chooser(i as u64), send);
            tasks.push(tokio::spawn(driver));
        }

        tokio::time::sleep(Duration::from_millis(500)).await;
        for task in &tasks {
            task.abort();
        }
        assert!(shared[0].is_alive(addrs[1]));
        assert!(shared[1].is_alive(addrs[0]));
        let seen = shared[0]
            .lock()
            .state(addrs[1])
            .map(|state| state.generation);
        assert_eq!(seen, Some(101));
    }
}
