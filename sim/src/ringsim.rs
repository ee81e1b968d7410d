//! A storage ring alone on madsim hosts, for tests and benchmarks of the ring itself.
//!
//! `ring-1..N` at 10.0.1.1–N, each with a harness-owned [`SimDisk`] and clock, and a client
//! host (10.0.9.1) on which test code runs and reaches the ring only over the network, as the
//! API and guild roles do. Faults: crash (losing unsynced disk writes) and restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chat_system::env::clock::NodeClock;
use chat_system::env::disk::{CrashLoss, Disk, SimDisk};
use chat_system::ring::client::StoreClient;
use chat_system::ring::engine::EngineConfig;
use chat_system::ring::layout::RingLayout;
use chat_system::ring::merkle::TokenRange;
use chat_system::ring::node::{engine_config, RingNodeConfig, RingRequest, RingResponse};
use chat_system::ring::repair::RepairReport;
use chat_system::ring::{Consistency, PartitionQuery, Row, Slice, REPLICATION_FACTOR};
use chat_system::rpc::RpcClient;
use madsim::runtime::{Handle, NodeHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const RING_PORT: u16 = 7000;

/// How to build the ring.
#[derive(Debug, Clone)]
pub struct RingShape {
    /// Nodes.
    pub node_count: u8,
    /// The hint window each coordinator uses (0 turns hints off).
    pub hint_window_ms: i64,
    /// Each node's storage engine configuration (sync mode, gc grace).
    pub engine: EngineConfig,
}

impl Default for RingShape {
    fn default() -> Self {
        Self {
            node_count: 3,
            hint_window_ms: chat_system::ring::hints::HINT_WINDOW_MS_DEFAULT,
            engine: engine_config(),
        }
    }
}

/// A running ring and the handles to fault it.
pub struct RingCluster {
    handle: Handle,
    /// Every node's address, `ring-1` first.
    pub addrs: Vec<SocketAddr>,
    disks: BTreeMap<String, SimDisk>,
    clocks: BTreeMap<String, NodeClock>,
    client: NodeHandle,
}

/// The name of node `index` (from 0).
pub fn node_name(index: usize) -> String {
    format!("ring-{}", index + 1)
}

impl RingCluster {
    /// Starts the ring; call inside a madsim runtime.
    pub fn start(shape: &RingShape) -> Self {
        let handle = Handle::current();
        let addrs: Vec<SocketAddr> = (1..=shape.node_count)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), RING_PORT))
            .collect();
        let (mut disks, mut clocks) = (BTreeMap::new(), BTreeMap::new());
        let layout = Arc::new(RingLayout::single_datacenter(
            addrs.clone(),
            REPLICATION_FACTOR,
        ));
        for (index, &addr) in addrs.iter().enumerate() {
            let (disk, clock) = (SimDisk::new(), NodeClock::new());
            disks.insert(node_name(index), disk.clone());
            clocks.insert(node_name(index), clock.clone());
            let config = RingNodeConfig {
                addr,
                layout: layout.clone(),
                disk: Arc::new(disk) as Arc<dyn Disk>,
                clock,
                hint_window_ms: shape.hint_window_ms,
                engine: shape.engine,
                repair_interval_ms: None,
            };
            handle
                .create_node()
                .name(node_name(index))
                .ip(addr.ip())
                .init(move || {
                    let config = config.clone();
                    async move {
                        let listener = match TcpListener::bind(config.addr).await {
                            Ok(listener) => listener,
                            Err(error) => panic!("bind {}: {error}", config.addr),
                        };
                        if let Err(error) = chat_system::ring::node::run(listener, config).await {
                            // A node whose disk failed stops; a restart revives it.
                            tracing::warn!(%error, "ring_node_stopped");
                        }
                    }
                })
                .build();
        }
        let client_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1));
        let client = handle.create_node().name("client").ip(client_ip).build();
        Self {
            handle,
            addrs,
            disks,
            clocks,
            client,
        }
    }

    /// Runs `work` on the client host and returns its result.
    pub async fn on_client<F, T>(&self, work: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.client.spawn(async move {
            let _ = tx.send(work.await);
        });
        match rx.await {
            Ok(value) => value,
            Err(_) => panic!("the client task was dropped before it finished"),
        }
    }

    /// Kills node `index`; its unsynced disk writes are lost.
    pub fn crash(&self, index: usize) -> CrashLoss {
        self.handle.kill(node_name(index).as_str());
        self.disks[&node_name(index)].crash(None)
    }

    /// Restarts node `index` (its engine replays its disk).
    pub fn restart(&self, index: usize) {
        self.handle.restart(node_name(index).as_str());
    }

    /// Cuts the link from node `from` to node `to` (one way: `to` stops receiving from
    /// `from`; open streams stall, new connections are refused).
    pub fn cut(&self, from: usize, to: usize) {
        let net = madsim::net::NetSim::current();
        net.clog_link(self.node_id(from), self.node_id(to));
    }

    /// Restores the link from node `from` to node `to`.
    pub fn mend(&self, from: usize, to: usize) {
        let net = madsim::net::NetSim::current();
        net.unclog_link(self.node_id(from), self.node_id(to));
    }

    fn node_id(&self, index: usize) -> madsim::task::NodeId {
        match self.handle.get_node(node_name(index).as_str()) {
            Some(node) => node.id(),
            None => panic!("no node {}", node_name(index)),
        }
    }

    /// Node `index`'s disk (the harness's handle on it: faults set here reach the node).
    pub fn disk(&self, index: usize) -> SimDisk {
        self.disks[&node_name(index)].clone()
    }

    /// Node `index`'s clock.
    pub fn clock(&self, index: usize) -> NodeClock {
        self.clocks[&node_name(index)].clone()
    }

    /// A store client that coordinates through `coordinators` (indexes) at `consistency`.
    pub fn store(&self, coordinators: &[usize], consistency: Consistency) -> StoreClient {
        let addrs = coordinators.iter().map(|&i| self.addrs[i]).collect();
        StoreClient::new(addrs, consistency, NodeClock::new())
    }
}

/// The rows node `addr` alone holds for `query` (tombstones included, none its range
/// tombstones shadow), read over the network.
pub async fn replica_rows(addr: SocketAddr, query: PartitionQuery) -> Option<Vec<Row>> {
    replica_slice(addr, query).await.map(|slice| slice.rows)
}

/// What node `addr` alone answers `query` with: rows and range tombstones.
pub async fn replica_slice(addr: SocketAddr, query: PartitionQuery) -> Option<Slice> {
    let rpc = RpcClient::new();
    let request = RingRequest::ReplicaRead { query };
    match rpc
        .call::<_, RingResponse>(addr, &request, Duration::from_secs(5))
        .await
    {
        Ok(RingResponse::Slice(slice)) => Some(slice),
        _ => None,
    }
}

/// Asks node `addr` to run anti-entropy repair now; its report.
pub async fn repair(addr: SocketAddr) -> Option<RepairReport> {
    let rpc = RpcClient::new();
    match rpc
        .call::<_, RingResponse>(addr, &RingRequest::Repair, Duration::from_secs(60))
        .await
    {
        Ok(RingResponse::Repaired(report)) => Some(report),
        _ => None,
    }
}

/// Node `addr`'s Merkle root over the whole ring.
pub async fn merkle_root(addr: SocketAddr) -> Option<u128> {
    let rpc = RpcClient::new();
    let request = RingRequest::ReplicaMerkle {
        range: TokenRange::FULL,
    };
    match rpc
        .call::<_, RingResponse>(addr, &request, Duration::from_secs(10))
        .await
    {
        Ok(RingResponse::Merkle(tree)) => Some(tree.root()),
        _ => None,
    }
}

/// Runs `body` in a fresh simulation seeded with `seed`, on a thread of its own (std seeds
/// hash keys once per thread, so a simulation sharing a thread would not replay); a panic in
/// the simulation is passed on.
pub fn simulate<F, Fut>(seed: u64, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    #[allow(
        clippy::disallowed_methods,
        reason = "the thread is outside the simulation"
    )]
    let thread = std::thread::spawn(move || {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
