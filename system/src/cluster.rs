//! A cluster's topology: where each role listens, and the configuration each role gets.
//!
//! The same topology drives `chatd` (every role in one process on loopback ports) and the
//! simulator (every role on its own simulated host), so both wire the roles identically.
//! Roles with several nodes (API, guild, data service) list them all: API nodes are
//! interchangeable, guild nodes hold the guilds the placement ring gives them, and
//! data-service nodes the channels theirs gives them.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::ratelimit::RateLimits;
use crate::api::ApiConfig;
use crate::data::DataClient;
use crate::directory::SharedDirectory;
use crate::env::clock::NodeClock;
use crate::env::disk::Disk;
use crate::gateway::GatewayConfig;
use crate::guild::{GuildConfig, GuildRouter};
use crate::ring::client::StoreClient;
use crate::ring::hints::HINT_WINDOW_MS_DEFAULT;
use crate::ring::layout::RingLayout;
use crate::ring::node::{engine_config, RingNodeConfig};
use crate::ring::{Consistency, REPLICATION_FACTOR};

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

    /// API node `index`'s configuration.
    pub fn api_config(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
    ) -> ApiConfig {
        ApiConfig {
            directory,
            store: self.store_client(clock.clone()),
            data: DataClient::new(self.data.clone()),
            guilds: GuildRouter::new(&self.guild),
            gateway_url: self.gateway_url(),
            clock,
            rate_limits: RateLimits::default(),
            index,
        }
    }

    /// Guild node `index`'s configuration.
    pub fn guild_config(
        &self,
        index: usize,
        directory: SharedDirectory,
        clock: NodeClock,
    ) -> GuildConfig {
        GuildConfig {
            directory,
            store: self.store_client(clock.clone()),
            gateways: vec![self.gateway_rpc],
            clock,
            nodes: self.guild.clone(),
            index,
        }
    }

    /// A data-service node's store client.
    pub fn data_store(&self, clock: NodeClock) -> StoreClient {
        self.store_client(clock)
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
        }
    }
}
