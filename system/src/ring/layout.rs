//! Where the ring's nodes are and which of them replicate a partition: the token ring of
//! [`super::placement`] bound to network addresses.
//!
//! Every node of a cluster builds the same layout from the same inputs, so all agree on each
//! partition's replicas without coordination. Not modelled: nodes joining or leaving.

use std::net::SocketAddr;

use super::placement::NUM_TOKENS_DEFAULT;
use super::placement::{allocate_tokens, NodeInfo, RingError, Strategy, TokenRing};
use super::token::message_partition_token;

/// The datacenter of a layout built by [`RingLayout::single_datacenter`].
pub const DATACENTER_DEFAULT: &str = "datacenter1";

/// A token ring whose nodes have addresses.
#[derive(Debug, Clone)]
pub struct RingLayout {
    ring: TokenRing,
    addrs: Vec<SocketAddr>,
    strategy: Strategy,
}

impl RingLayout {
    /// A layout of `nodes`, node `i` at `addrs[i]`, replicating by `strategy`.
    pub fn new(
        nodes: Vec<NodeInfo>,
        addrs: Vec<SocketAddr>,
        strategy: Strategy,
    ) -> Result<Self, RingError> {
        assert_eq!(nodes.len(), addrs.len(), "one address per node");
        Ok(Self {
            ring: TokenRing::new(nodes)?,
            addrs,
            strategy,
        })
    }

    /// `addrs` as nodes `ring-1..N` of one datacenter and one rack, with 16 vnodes each and
    /// SimpleStrategy at `replication_factor`.
    pub fn single_datacenter(addrs: Vec<SocketAddr>, replication_factor: usize) -> Self {
        let nodes = (0..addrs.len())
            .map(|i| {
                let name = format!("ring-{}", i + 1);
                NodeInfo {
                    tokens: allocate_tokens(&name, NUM_TOKENS_DEFAULT),
                    name,
                    datacenter: DATACENTER_DEFAULT.to_string(),
                    rack: "rack1".to_string(),
                }
            })
            .collect();
        let strategy = Strategy::Simple { replication_factor };
        match Self::new(nodes, addrs, strategy) {
            Ok(layout) => layout,
            Err(error) => panic!("generated ring is invalid: {error:?}"),
        }
    }

    /// Every node's address.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The replicas of the messages partition `(channel_id, bucket)`, primary first.
    pub fn replicas(&self, channel_id: u64, bucket: u32) -> Vec<SocketAddr> {
        let token = message_partition_token(channel_id, bucket);
        let replicas: Vec<SocketAddr> = self
            .ring
            .replicas(token, &self.strategy)
            .into_iter()
            .map(|i| self.addrs[i])
            .collect();
        debug_assert_eq!(replicas.len(), self.ring.replica_count(&self.strategy));
        replicas
    }

    /// The datacenter of the node at `addr`, if it is one.
    pub fn datacenter_of(&self, addr: SocketAddr) -> Option<&str> {
        let index = self.addrs.iter().position(|a| *a == addr)?;
        Some(self.ring.nodes()[index].datacenter.as_str())
    }

    /// The token ring.
    pub fn ring(&self) -> &TokenRing {
        &self.ring
    }

    /// The replication strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 1, i], 7000)))
            .collect()
    }

    #[test]
    fn three_nodes_at_rf3_all_replicate_every_partition() {
        let layout = RingLayout::single_datacenter(addrs(3), 3);
        for channel in 0..50 {
            let mut replicas = layout.replicas(channel, 7);
            replicas.sort();
            assert_eq!(replicas, addrs(3));
        }
    }

    #[test]
    fn five_nodes_at_rf3_spread_partitions() {
        let layout = RingLayout::single_datacenter(addrs(5), 3);
        let mut primaries = std::collections::BTreeSet::new();
        for channel in 0..200 {
            let replicas = layout.replicas(channel, 1);
            assert_eq!(replicas.len(), 3);
            primaries.insert(replicas[0]);
        }
        assert_eq!(
            primaries.len(),
            5,
            "every node is primary for some partition"
        );
        assert_eq!(layout.datacenter_of(addrs(5)[2]), Some(DATACENTER_DEFAULT));
    }
}
