//! A cluster's topology: where each role listens, and the configuration each role gets.
//!
//! The same topology drives `chatd` (every role in one process on loopback ports) and the
//! simulator (every role on its own simulated host), so both wire the roles identically.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::ratelimit::RateLimits;
use crate::api::ApiConfig;
use crate::directory::SharedDirectory;
use crate::env::clock::NodeClock;
use crate::env::disk::Disk;
use crate::gateway::GatewayConfig;
use crate::guild::GuildConfig;
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
    /// The REST API.
    pub api: SocketAddr,
    /// The guild role's RPC port.
    pub guild: SocketAddr,
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

    /// The API role's configuration.
    pub fn api_config(&self, directory: SharedDirectory, clock: NodeClock) -> ApiConfig {
        ApiConfig {
            directory,
            store: self.store_client(clock.clone()),
            guild: self.guild,
            gateway_url: self.gateway_url(),
            clock,
            rate_limits: RateLimits::default(),
        }
    }

    /// The guild role's configuration.
    pub fn guild_config(&self, directory: SharedDirectory, clock: NodeClock) -> GuildConfig {
        GuildConfig {
            directory,
            store: self.store_client(clock.clone()),
            gateways: vec![self.gateway_rpc],
            clock,
            worker_id: 1,
        }
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
