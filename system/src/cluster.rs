//! A cluster's topology: where each role listens, and the configuration each role gets.
//!
//! The same topology drives `chatd` (every role in one process on loopback ports) and the
//! simulator (every role on its own simulated host), so both wire the roles identically.
//! Roles with several nodes (API, guild, data service) list them all: API nodes are
//! interchangeable, guild nodes hold the guilds the placement ring gives them, and
//! data-service nodes the channels theirs gives them.
//!
//! A [`ClusterFile`] (TOML) names every node of a cluster whose roles run in separate
//! processes: each node's role and loopback address, the shared data dir and the directory's
//! shape. The directory is generated from that shape alone, so every process of the cluster
//! builds the same one without talking to the others. Validation checks the file's shape
//! (one gateway, at least one node of every other role, unique names and addresses on
//! loopback); it does not model membership changes: the file is the whole cluster.
//!
//! A cluster file may name its message store (`store`, a [`StoreSpec`]: the ring by default,
//! or a `cql://` URL, in which case the file has no ring nodes), and any node may name a
//! loopback `metrics` address where it serves `/metrics`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::ratelimit::RateLimits;
use crate::api::ApiConfig;
use crate::data::DataClient;
use crate::directory::{DirectoryShape, SharedDirectory};
use crate::env::clock::NodeClock;
use crate::env::disk::Disk;
use crate::gateway::GatewayConfig;
use crate::guild::{GuildConfig, GuildRouter};
use crate::ring::client::StoreClient;
use crate::ring::hints::HINT_WINDOW_MS_DEFAULT;
use crate::ring::layout::RingLayout;
use crate::ring::node::{engine_config, RingNodeConfig};
use crate::ring::{Consistency, REPLICATION_FACTOR};
use crate::store::{SharedStore, StoreSpec};

/// The heartbeat interval gateways announce unless told otherwise.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 41_250;

/// Every role's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The ring nodes (each is a replica and a coordinator).
    pub ring: Vec<SocketAddr>,
    /// The REST API nodes (any of them serves any request).
    pub api: Vec<SocketAddr>,
    /// The guild nodes' RPC ports, in the order their placement ring is built from.
    pub guild: Vec<SocketAddr>,
    /// The data-service nodes' RPC ports, in the order their ring is built from.
    pub data: Vec<SocketAddr>,
    /// The gateway's WebSocket (HTTP) port.
    pub gateway_http: SocketAddr,
    /// The gateway's dispatch (RPC) port.
    pub gateway_rpc: SocketAddr,
}

impl Topology {
    /// The URL clients open a gateway session at.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/gateway", self.gateway_http)
    }

    /// A store client of this ring at QUORUM.
    pub fn store_client(&self, clock: NodeClock) -> StoreClient {
        StoreClient::new(self.ring.clone(), Consistency::Quorum, clock)
    }

    /// This ring as a shared message store at QUORUM.
    pub fn ring_store(&self, clock: NodeClock) -> SharedStore {
        self.store_client(clock).into()
    }

    /// Ring node `index`'s configuration.
    pub fn ring_config(
        &self,
        index: usize,
        disk: Arc<dyn Disk>,
        clock: NodeClock,
    ) -> RingNodeConfig {
        RingNodeConfig {
            addr: self.ring[index],
            layout: Arc::new(RingLayout::single_datacenter(
                self.ring.clone(),
                REPLICATION_FACTOR,
            )),
            disk,
            clock,
            hint_window_ms: HINT_WINDOW_MS_DEFAULT,
            engine: engine_config(),
            repair_interval_ms: None,
        }
    }

    /// API node `index`'s configuration, on the ring.
    pub fn api_config(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
    ) -> ApiConfig {
        let store = self.ring_store(clock.clone());
        self.api_config_on(index, directory, clock, store)
    }

    /// API node `index`'s configuration, on `store`.
    pub fn api_config_on(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
        store: SharedStore,
    ) -> ApiConfig {
        ApiConfig {
            directory,
            store,
            data: DataClient::new(self.data.clone()),
            guilds: GuildRouter::new(&self.guild),
            gateway_url: self.gateway_url(),
            clock,
            rate_limits: RateLimits::default(),
            index,
        }
    }

    /// Guild node `index`'s configuration, on the ring.
    pub fn guild_config(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
    ) -> GuildConfig {
        let store = self.ring_store(clock.clone());
        self.guild_config_on(index, directory, clock, store)
    }

    /// Guild node `index`'s configuration, on `store`.
    pub fn guild_config_on(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
        store: SharedStore,
    ) -> GuildConfig {
        GuildConfig {
            directory,
            store,
            gateways: vec![self.gateway_rpc],
            clock,
            nodes: self.guild.clone(),
            index,
        }
    }

    /// A data-service node's store: the ring at QUORUM.
    pub fn data_store(&self, clock: NodeClock) -> SharedStore {
        self.ring_store(clock)
    }

    /// The gateway role's configuration.
    pub fn gateway_config(
        &self,
        directory: SharedDirectory,
        heartbeat_interval_ms: u64,
    ) -> GatewayConfig {
        GatewayConfig {
            directory,
            heartbeat_interval_ms,
            resume_gateway_url: self.gateway_url(),
            node_index: 0,
            clock: NodeClock::new(),
        }
    }
}

/// A node's role in a [`ClusterFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A ring node: a replica and a coordinator, with its own data dir.
    Ring,
    /// A REST API node.
    Api,
    /// A guild node.
    Guild,
    /// A data-service node.
    Data,
    /// The gateway; its `dispatch` address takes guild dispatches.
    Gateway,
}

/// One node of a [`ClusterFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's name, unique in the file (`chatd --node NAME`).
    pub name: String,
    /// What the node runs.
    pub role: Role,
    /// Where it listens (the gateway's WebSocket port for the gateway).
    pub addr: SocketAddr,
    /// The gateway's dispatch (RPC) address; only the gateway has one.
    #[serde(default)]
    pub dispatch: Option<SocketAddr>,
    /// Where the node serves `/metrics`, if anywhere.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// The directory every process of a cluster generates, identically, from its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    /// Users.
    pub users: usize,
    /// Guilds (at least one).
    pub guilds: usize,
    /// Text channels per guild.
    pub channels: usize,
    /// The creation time ids are minted from, in Unix ms; fixed so every process agrees.
    pub created_unix_ms: i64,
}

/// A cluster file: every node, the shared data dir, the directory and the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Where ring nodes keep their data (`DATA_DIR/NAME`) and `directory.json` is written.
    pub data_dir: std::path::PathBuf,
    /// The heartbeat interval the gateway announces, in ms.
    #[serde(default = "heartbeat_default")]
    pub heartbeat_interval_ms: u64,
    /// Where messages and the directory log live: the ring nodes of this file (the
    /// default), or a CQL cluster.
    #[serde(default = "store_default")]
    pub store: StoreSpec,
    /// The directory's shape.
    pub directory: DirectorySection,
    /// Every node.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

/// Where each node's table starts in the text, read beside the [`ClusterFile`] itself.
#[derive(Deserialize)]
struct NodeSpans {
    #[serde(default)]
    node: Vec<toml::Spanned<serde::de::IgnoredAny>>,
}

fn store_default() -> StoreSpec {
    StoreSpec::Ring
}

fn heartbeat_default() -> u64 {
    HEARTBEAT_INTERVAL_MS_DEFAULT
}

impl ClusterFile {
    /// Parses and checks a cluster file's text; errors name the field, line or node at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let spans: NodeSpans = toml::from_str(text).map_err(|e| e.to_string())?;
        let lines: Vec<usize> = spans
            .node
            .iter()
            .map(|node| 1 + text[..node.span().start].matches('\n').count())
            .collect();
        file.check(&lines)?;
        Ok(file)
    }

    /// Checks the parsed file; `lines` holds the line each node's table starts at.
    fn check(&self, lines: &[usize]) -> Result<(), String> {
        // 1. Shared settings.
        if !(100..=600_000).contains(&self.heartbeat_interval_ms) {
            return Err(format!(
                "heartbeat_interval_ms = {} is outside 100..=600000",
                self.heartbeat_interval_ms
            ));
        }
        let d = &self.directory;
        if d.guilds == 0 || d.users == 0 || d.channels == 0 {
            return Err("directory: users, guilds and channels must each be at least 1".into());
        }

        // 2. Every node: a unique name, loopback addresses used once, dispatch on the gateway.
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (node, line) in self.nodes.iter().zip(lines) {
            let at = format!("node {} (line {line})", node.name);
            if node.name.is_empty() || !names.insert(node.name.as_str()) {
                return Err(format!("{at}: the name is empty or used twice"));
            }
            let dispatch = match (node.role, node.dispatch) {
                (Role::Gateway, Some(dispatch)) => Some(dispatch),
                (Role::Gateway, None) => return Err(format!("{at}: a gateway needs `dispatch`")),
                (_, Some(_)) => return Err(format!("{at}: only the gateway has `dispatch`")),
                (_, None) => None,
            };
            let addrs_of_node = std::iter::once(node.addr)
                .chain(dispatch)
                .chain(node.metrics);
            for addr in addrs_of_node {
                if !addr.ip().is_loopback() {
                    return Err(format!("{at}: {addr} is not a loopback address"));
                }
                if addr.port() == 0 || !addrs.insert(addr) {
                    return Err(format!("{at}: {addr} has port 0 or is used twice"));
                }
            }
        }

        // 3. Every role present; one gateway; enough ring nodes for the replicas.
        let count = |role: Role| self.nodes.iter().filter(|n| n.role == role).count();
        match (&self.store, count(Role::Ring)) {
            (StoreSpec::Ring, ring) if ring < REPLICATION_FACTOR => {
                return Err(format!(
                    "the cluster needs at least {REPLICATION_FACTOR} ring nodes"
                ));
            }
            (StoreSpec::Cql(_), ring) if ring > 0 => {
                return Err(format!(
                    "store = \"{}\" keeps messages in CQL, so the file has no ring nodes \
                     (it has {ring})",
                    self.store
                ));
            }
            _ => {}
        }
        for (role, name) in [
            (Role::Api, "api"),
            (Role::Guild, "guild"),
            (Role::Data, "data"),
        ] {
            if count(role) == 0 {
                return Err(format!("the cluster needs at least one {name} node"));
            }
        }
        if count(Role::Gateway) != 1 {
            return Err("the cluster needs exactly one gateway node".into());
        }
        Ok(())
    }

    /// The node named `name`, or an error listing the names there are.
    pub fn node(&self, name: &str) -> Result<&NodeEntry, String> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no node {name:?} in the cluster file (it has {})",
                known.join(", ")
            )
        })
    }

    /// Index of `name` among the nodes of its role, in file order.
    pub fn role_index(&self, name: &str) -> Option<usize> {
        let role = self.nodes.iter().find(|n| n.name == name)?.role;
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .position(|n| n.name == name)
    }

    /// The directory's shape.
    pub fn shape(&self) -> DirectoryShape {
        DirectoryShape {
            user_count: self.directory.users,
            guild_count: self.directory.guilds,
            channels_per_guild: self.directory.channels,
            created_unix_ms: self.directory.created_unix_ms,
        }
    }

    /// The topology the file describes (checked by [`ClusterFile::parse`]).
    pub fn topology(&self) -> Topology {
        let of = |role: Role| -> Vec<SocketAddr> {
            self.nodes
                .iter()
                .filter(|n| n.role == role)
                .map(|n| n.addr)
                .collect()
        };
        let gateway = self
            .nodes
            .iter()
            .find(|n| n.role == Role::Gateway)
            .expect("a checked cluster file has a gateway");
        Topology {
            ring: of(Role::Ring),
            api: of(Role::Api),
            guild: of(Role::Guild),
            data: of(Role::Data),
            gateway_http: gateway.addr,
            gateway_rpc: gateway
                .dispatch
                .expect("a checked cluster file's gateway has a dispatch address"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
data_dir = "d"
heartbeat_interval_ms = 1000
[directory]
users = 4
guilds = 1
channels = 2
created_unix_ms = 1700000000000
[[node]]
name = "r1"
role = "ring"
addr = "127.0.0.1:7001"
[[node]]
name = "r2"
role = "ring"
addr = "127.0.0.1:7002"
[[node]]
name = "r3"
role = "ring"
addr = "127.0.0.1:7003"
[[node]]
name = "a"
role = "api"
addr = "127.0.0.1:7010"
[[node]]
name = "g"
role = "guild"
addr = "127.0.0.1:7030"
[[node]]
name = "d"
role = "data"
addr = "127.0.0.1:7040"
[[node]]
name = "gw"
role = "gateway"
addr = "127.0.0.1:7020"
dispatch = "127.0.0.1:7021"
"#;

    #[test]
    fn a_cluster_file_gives_its_topology_and_node_indices() {
        let file = ClusterFile::parse(FILE).expect("valid");
        let topology = file.topology();
        let port = |a: &SocketAddr| a.port();
        assert_eq!(
            topology.ring.iter().map(port).collect::<Vec<_>>(),
            [7001, 7002, 7003]
        );
        assert_eq!(topology.api[0].port(), 7010);
        assert_eq!(topology.gateway_rpc.port(), 7021);
        assert_eq!(file.role_index("r3"), Some(2));
        assert_eq!(file.heartbeat_interval_ms, 1000);
        let missing = file.node("r9").expect_err("unknown");
        assert!(
            missing.contains("\"r9\"") && missing.contains("r1, r2"),
            "{missing}"
        );
    }

    #[test]
    fn the_sample_cluster_file_is_valid() {
        let file = ClusterFile::parse(include_str!("../cluster.example.toml")).expect("valid");
        let topology = file.topology();
        assert_eq!(
            (
                topology.ring.len(),
                topology.api.len(),
                topology.guild.len()
            ),
            (3, 2, 2)
        );
        assert_eq!(topology.gateway_url(), "ws://127.0.0.1:7820/gateway");
        assert_eq!(file.role_index("api-2"), Some(1));
    }

    #[test]
    fn bad_files_are_refused_naming_the_fault() {
        let unknown = FILE.replace("heartbeat_interval_ms", "heartbeat_ms");
        let error = ClusterFile::parse(&unknown).expect_err("unknown field");
        assert!(
            error.contains("heartbeat_ms") && error.contains("line 3"),
            "{error}"
        );

        let role = FILE.replace("role = \"data\"", "role = \"cache\"");
        let error = ClusterFile::parse(&role).expect_err("unknown role");
        assert!(error.contains("cache"), "{error}");

        // Node d's `[[node]]` header is line 29 of FILE (line 1 is the empty first line).
        let remote = FILE.replace("127.0.0.1:7040", "10.0.0.1:7040");
        let error = ClusterFile::parse(&remote).expect_err("not loopback");
        assert!(
            error.contains("node d") && error.contains("loopback"),
            "{error}"
        );

        let twice = FILE.replace("127.0.0.1:7040", "127.0.0.1:7001");
        let error = ClusterFile::parse(&twice).expect_err("address twice");
        assert!(
            error.contains("node d (line 29): 127.0.0.1:7001"),
            "{error}"
        );
        assert!(error.contains("used twice"), "{error}");

        let two_rings = FILE.replacen("role = \"ring\"", "role = \"api\"", 1);
        let error = ClusterFile::parse(&two_rings).expect_err("too few ring nodes");
        assert!(error.contains("at least 3 ring nodes"), "{error}");
    }

    /// FILE without its ring nodes and with `store` set to a CQL cluster.
    fn cql_file() -> String {
        let without_ring: Vec<&str> = FILE
            .split("[[node]]")
            .filter(|t| !t.contains("\"ring\""))
            .collect();
        without_ring.join("[[node]]").replace(
            "heartbeat_interval_ms = 1000",
            "heartbeat_interval_ms = 1000\nstore = \"cql://127.0.0.1:9042/chat_test\"",
        )
    }

    #[test]
    fn a_cql_store_replaces_the_ring_nodes_and_metrics_addresses_are_checked() {
        // 1. The default store is the ring; a CQL store is parsed from its URL.
        assert_eq!(
            ClusterFile::parse(FILE).expect("valid").store,
            StoreSpec::Ring
        );
        let file = ClusterFile::parse(&cql_file()).expect("valid");
        let StoreSpec::Cql(target) = &file.store else {
            panic!("a CQL store: {:?}", file.store);
        };
        assert_eq!(target.nodes, ["127.0.0.1:9042"]);
        assert_eq!(target.keyspace, "chat_test");
        assert!(file.topology().ring.is_empty());

        // 2. A CQL store with ring nodes, and a bad URL, are refused naming the part.
        let with_ring = FILE.replace(
            "heartbeat_interval_ms = 1000",
            "heartbeat_interval_ms = 1000\nstore = \"cql://127.0.0.1:9042\"",
        );
        let error = ClusterFile::parse(&with_ring).expect_err("ring nodes beside CQL");
        assert!(error.contains("no ring nodes (it has 3)"), "{error}");
        let bad = cql_file().replace("127.0.0.1:9042", "127.0.0.1");
        let error = ClusterFile::parse(&bad).expect_err("no port");
        assert!(
            error.contains("CQL node 1") && error.contains("line 4"),
            "{error}"
        );

        // 3. A metrics address is a node's own: loopback, and not used by anything else.
        let metrics = FILE.replace(
            "addr = \"127.0.0.1:7010\"",
            "addr = \"127.0.0.1:7010\"\nmetrics = \"127.0.0.1:7050\"",
        );
        let file = ClusterFile::parse(&metrics).expect("valid");
        let api = file.node("a").expect("node a");
        assert_eq!(api.metrics.map(|m| m.port()), Some(7050));
        assert_eq!(file.node("g").expect("node g").metrics, None);
        let clash = metrics.replace("127.0.0.1:7050", "127.0.0.1:7030");
        let error = ClusterFile::parse(&clash).expect_err("metrics on the guild's port");
        assert!(
            error.contains("127.0.0.1:7030") && error.contains("used twice"),
            "{error}"
        );
        let remote = metrics.replace("127.0.0.1:7050", "10.0.0.2:7050");
        let error = ClusterFile::parse(&remote).expect_err("metrics off loopback");
        assert!(
            error.contains("node a") && error.contains("loopback"),
            "{error}"
        );
    }
}
