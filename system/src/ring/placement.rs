//! Which nodes hold a replica of a token: vnodes on a ring and Cassandra's replication
//! strategies.
//!
//! Modelled: every node owns one or more tokens (vnodes); the range `(previous token, token]`
//! belongs to the node holding its end token, and the first range wraps from the highest token
//! round to the lowest. A key's primary replica owns the first ring token at or after the key's
//! token (wrapping); further replicas come from walking the ring clockwise, passing over vnodes
//! of nodes already chosen.
//!
//! - SimpleStrategy takes the first `replication_factor` distinct nodes of that walk and
//!   ignores datacenters and racks.
//! - NetworkTopologyStrategy fills each datacenter's own replication factor in the same single
//!   walk. Within a datacenter the first node met on each rack is taken; a node on a rack
//!   already used is taken only while the datacenter has fewer racks than its replication
//!   factor, and only as many of them as that shortfall (`rf - racks`), the earliest met first.
//!   So with enough racks every replica sits on a different rack, and otherwise every rack holds
//!   at least one. Replicas are listed in the order the walk took them, across datacenters, as
//!   Cassandra 3.0 and later do.
//!
//! Guaranteed (asserted on every answer): no node twice; as many replicas as the strategy asks
//! for wherever the datacenter has that many nodes, and every node of it otherwise; under
//! NetworkTopologyStrategy, replicas only in the datacenters it names, each with
//! `min(rf, racks)` distinct racks.
//!
//! Not modelled: Cassandra's replication-aware token allocator (see [`allocate_tokens`]),
//! pending ranges while a node joins or leaves, transient replicas, snitch proximity sorting,
//! the local and everywhere strategies, and caching of placements. Cassandra 2.x picked the same
//! NetworkTopologyStrategy replicas but listed repeated-rack nodes after the distinct racks;
//! that order is not reproduced.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::token::{murmur3_token, Token};

/// Tokens per node unless told otherwise; Cassandra 4.0 and later ship `num_tokens: 16`.
pub const NUM_TOKENS_DEFAULT: usize = 16;

/// `num_tokens` distinct tokens for a node, ascending, derived from its name alone.
///
/// Token `i` is the Murmur3 token of `"{node_name}:{i}"`, skipping a repeat in the unlikely
/// event of one, so the same name always yields the same tokens in every run and on every host.
///
/// TODO(ring-placement): this is random-style allocation, what Cassandra did before 3.0 and
/// still does without `allocate_tokens_for_local_replication_factor`. With 16 tokens per node
/// ownership can be uneven by tens of percent; Cassandra's allocator places each new node's
/// tokens to even out replicated ownership. We have not modelled it because it depends on
/// join order and on the keyspace's replication, and the simulator only needs placement that
/// is deterministic and spread.
pub fn allocate_tokens(node_name: &str, num_tokens: usize) -> Vec<Token> {
    let mut tokens = BTreeSet::new();
    let mut i: u64 = 0;
    while tokens.len() < num_tokens {
        tokens.insert(murmur3_token(format!("{node_name}:{i}").as_bytes()));
        i += 1;
    }
    tokens.into_iter().collect()
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique name.
    pub name: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Its rack, unique only within the datacenter.
    pub rack: String,
    /// The ring tokens it owns; at least one.
    pub tokens: Vec<Token>,
}

/// A keyspace's replication strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// The first `replication_factor` distinct nodes clockwise, whatever their location.
    Simple {
        /// Replicas per partition.
        replication_factor: usize,
    },
    /// A replication factor per datacenter, spread over racks.
    NetworkTopology {
        /// Replicas per partition in each named datacenter; others hold none.
        replication: BTreeMap<String, usize>,
    },
}

/// Why a ring could not be built or a question about it has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A ring needs at least one node.
    #[error("a ring needs at least one node")]
    NoNodes,
    /// Every node must own a token.
    #[error("node {node} owns no token")]
    NoTokens {
        /// The node.
        node: String,
    },
    /// Two nodes share a name.
    #[error("two nodes are named {name}")]
    DuplicateNodeName {
        /// The name.
        name: String,
    },
    /// A token is owned twice (by two nodes or twice by one).
    #[error("token {token} is owned by both {first} and {second}")]
    DuplicateToken {
        /// The token.
        token: Token,
        /// The node listed first.
        first: String,
        /// The node listed second.
        second: String,
    },
    /// A range holds a ring token before its end, so no one replica set covers it.
    #[error("range ({start}, {end}] holds ring token {token} before its end")]
    RangeSpansRingTokens {
        /// Exclusive start.
        start: Token,
        /// Inclusive end.
        end: Token,
        /// The ring token inside it.
        token: Token,
    },
}

/// Whether `token` lies in the range `(start, end]`, which wraps past `i64::MAX` when
/// `start >= end`; `start == end` is the whole ring, as in Cassandra.
pub fn range_contains(range: (Token, Token), token: Token) -> bool {
    let (start, end) = range;
    if start < end {
        start < token && token <= end
    } else {
        token > start || token <= end
    }
}

/// What placement needs to know about one datacenter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DatacenterShape {
    node_count: usize,
    racks: BTreeSet<String>,
}

/// The ring: every node's tokens in order. Nodes are named by their index in the `Vec` the
/// ring was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRing {
    nodes: Vec<NodeInfo>,
    /// Every token with the index of its owner, ascending by token.
    ring: Vec<(Token, usize)>,
    datacenters: BTreeMap<String, DatacenterShape>,
}

/// One datacenter's progress during a NetworkTopologyStrategy walk.
struct DatacenterFill<'a> {
    replicas_left: usize,
    rack_repeats_left: usize,
    racks_used: BTreeSet<&'a str>,
}

impl TokenRing {
    /// Builds the ring; names and tokens must be unique and every node must own a token.
    pub fn new(nodes: Vec<NodeInfo>) -> Result<TokenRing, RingError> {
        if nodes.is_empty() {
            return Err(RingError::NoNodes);
        }

        // 1. Names are unique and every node owns something.
        let mut names = BTreeSet::new();
        for node in &nodes {
            if node.tokens.is_empty() {
                return Err(RingError::NoTokens {
                    node: node.name.clone(),
                });
            }
            if !names.insert(node.name.as_str()) {
                return Err(RingError::DuplicateNodeName {
                    name: node.name.clone(),
                });
            }
        }

        // 2. Tokens in ring order, each owned once.
        let mut ring: Vec<(Token, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(index, node)| node.tokens.iter().map(move |&token| (token, index)))
            .collect();
        ring.sort_unstable();
        if let Some(pair) = ring.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(RingError::DuplicateToken {
                token: pair[0].0,
                first: nodes[pair[0].1].name.clone(),
                second: nodes[pair[1].1].name.clone(),
            });
        }

        // 3. Each datacenter's node count and racks.
        let mut datacenters: BTreeMap<String, DatacenterShape> = BTreeMap::new();
        for node in &nodes {
            let shape = datacenters.entry(node.datacenter.clone()).or_default();
            shape.node_count += 1;
            shape.racks.insert(node.rack.clone());
        }

        Ok(TokenRing {
            nodes,
            ring,
            datacenters,
        })
    }

    /// The nodes, in the order the ring was built from.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The node owning the first ring token at or after `token`, wrapping past the highest.
    pub fn primary(&self, token: Token) -> usize {
        self.ring[self.first_at_or_after(token) % self.ring.len()].1
    }

    /// How many replicas `strategy` yields on this ring for any token.
    pub fn replica_count(&self, strategy: &Strategy) -> usize {
        match strategy {
            Strategy::Simple { replication_factor } => (*replication_factor).min(self.nodes.len()),
            Strategy::NetworkTopology { replication } => self.replica_count_nts(replication),
        }
    }

    /// The replicas of `token` under `strategy`, primary first, in the order Cassandra picks.
    pub fn replicas(&self, token: Token, strategy: &Strategy) -> Vec<usize> {
        let replicas = match strategy {
            Strategy::Simple { replication_factor } => self.simple(token, *replication_factor),
            Strategy::NetworkTopology { replication } => self.network_topology(token, replication),
        };
        self.assert_placement(token, strategy, &replicas);
        replicas
    }

    /// Every range `(start, end]` between consecutive ring tokens, ordered by end token, the
    /// one wrapping from the highest token to the lowest first. With a single token that one
    /// range is `(t, t]`, the whole ring.
    pub fn ranges(&self) -> Vec<(Token, Token)> {
        let ring_len = self.ring.len();
        (0..ring_len)
            .map(|i| {
                let start = self.ring[(i + ring_len - 1) % ring_len].0;
                (start, self.ring[i].0)
            })
            .collect()
    }

    /// The replicas of every token in `(start, end]`, which must hold no ring token before
    /// `end`: one of [`TokenRing::ranges`], or a piece of one.
    pub fn replicas_for_range(
        &self,
        range: (Token, Token),
        strategy: &Strategy,
    ) -> Result<Vec<usize>, RingError> {
        let (start, end) = range;
        let inside = self
            .ring
            .iter()
            .map(|&(token, _)| token)
            .find(|&token| token != end && range_contains(range, token));
        if let Some(token) = inside {
            return Err(RingError::RangeSpansRingTokens { start, end, token });
        }
        Ok(self.replicas(end, strategy))
    }

    /// Owners of the ring tokens clockwise from the first at or after `token`, once round.
    fn walk_from(&self, token: Token) -> impl Iterator<Item = usize> + '_ {
        let (before, from) = self.ring.split_at(self.first_at_or_after(token));
        from.iter().chain(before).map(|&(_, owner)| owner)
    }

    /// The index in `ring` of the first token at or after `token`; `ring.len()` if none.
    fn first_at_or_after(&self, token: Token) -> usize {
        self.ring
            .partition_point(|&(ring_token, _)| ring_token < token)
    }

    fn simple(&self, token: Token, replication_factor: usize) -> Vec<usize> {
        let mut replicas = Vec::with_capacity(replication_factor);
        for node in self.walk_from(token) {
            if replicas.len() == replication_factor {
                break;
            }
            if !replicas.contains(&node) {
                replicas.push(node);
            }
        }
        replicas
    }

    fn network_topology(&self, token: Token, replication: &BTreeMap<String, usize>) -> Vec<usize> {
        // 1. What each datacenter still needs. One with no nodes or no replicas needs nothing;
        //    with fewer nodes than its factor, all of them.
        let mut fills: BTreeMap<&str, DatacenterFill<'_>> = BTreeMap::new();
        for (dc, &rf) in replication {
            let Some(shape) = self.datacenters.get(dc) else {
                continue;
            };
            if rf == 0 {
                continue;
            }
            let fill = DatacenterFill {
                replicas_left: rf.min(shape.node_count),
                rack_repeats_left: rf.saturating_sub(shape.racks.len()),
                racks_used: BTreeSet::new(),
            };
            fills.insert(dc.as_str(), fill);
        }
        let mut datacenters_left = fills.len();

        // 2. One walk. A node on a new rack of its datacenter is taken; one on a used rack only
        //    while that datacenter may still repeat a rack.
        let mut replicas = Vec::with_capacity(self.replica_count_nts(replication));
        for node in self.walk_from(token) {
            if datacenters_left == 0 {
                break;
            }
            let info = &self.nodes[node];
            let Some(fill) = fills.get_mut(info.datacenter.as_str()) else {
                continue;
            };
            if fill.replicas_left == 0 || replicas.contains(&node) {
                continue;
            }
            let new_rack = fill.racks_used.insert(info.rack.as_str());
            if !new_rack {
                if fill.rack_repeats_left == 0 {
                    continue;
                }
                fill.rack_repeats_left -= 1;
            }
            replicas.push(node);
            fill.replicas_left -= 1;
            if fill.replicas_left == 0 {
                datacenters_left -= 1;
            }
        }
        replicas
    }

    fn replica_count_nts(&self, replication: &BTreeMap<String, usize>) -> usize {
        replication
            .iter()
            .map(|(dc, &rf)| {
                let node_count = self.datacenters.get(dc).map_or(0, |shape| shape.node_count);
                rf.min(node_count)
            })
            .sum()
    }

    /// The placement model, checked on every answer.
    fn assert_placement(&self, token: Token, strategy: &Strategy, replicas: &[usize]) {
        let distinct: BTreeSet<usize> = replicas.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            replicas.len(),
            "a node twice in {replicas:?}"
        );
        assert_eq!(
            replicas.len(),
            self.replica_count(strategy),
            "replica count for token {token} under {strategy:?}"
        );
        match strategy {
            Strategy::Simple { .. } => {
                if let Some(&first) = replicas.first() {
                    assert_eq!(first, self.primary(token), "primary of token {token}");
                }
            }
            Strategy::NetworkTopology { replication } => {
                self.assert_datacenters_and_racks(token, replication, replicas);
            }
        }
    }

    fn assert_datacenters_and_racks(
        &self,
        token: Token,
        replication: &BTreeMap<String, usize>,
        replicas: &[usize],
    ) {
        let mut racks_by_dc: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
        for &node in replicas {
            let info = &self.nodes[node];
            let entry = racks_by_dc.entry(info.datacenter.as_str()).or_default();
            entry.0 += 1;
            entry.1.insert(info.rack.as_str());
        }
        for (dc, (count, racks)) in &racks_by_dc {
            let rf = replication.get(*dc).copied().unwrap_or(0);
            let Some(shape) = self.datacenters.get(*dc) else {
                panic!("replica in unknown datacenter {dc}");
            };
            assert_eq!(
                *count,
                rf.min(shape.node_count),
                "{dc} count, token {token}"
            );
            assert_eq!(
                racks.len(),
                rf.min(shape.racks.len()),
                "{dc} racks, token {token}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token::message_partition_token;

    fn node(name: &str, datacenter: &str, rack: &str, tokens: &[Token]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            datacenter: datacenter.into(),
            rack: rack.into(),
            tokens: tokens.to_vec(),
        }
    }

    fn nts(replication: &[(&str, usize)]) -> Strategy {
        Strategy::NetworkTopology {
            replication: replication
                .iter()
                .map(|&(dc, rf)| (dc.to_string(), rf))
                .collect(),
        }
    }

    fn simple(replication_factor: usize) -> Strategy {
        Strategy::Simple { replication_factor }
    }

    /// Four nodes, one token each, racks alternating:
    ///
    /// ```text
    /// index  node  token  rack    owns
    ///   0    n0    -100   r1      (200, -100]   (wraps past i64::MAX)
    ///   1    n1       0   r2      (-100, 0]
    ///   2    n2     100   r1      (0, 100]
    ///   3    n3     200   r2      (100, 200]
    /// ```
    fn four_nodes_two_racks() -> TokenRing {
        TokenRing::new(vec![
            node("n0", "dc1", "r1", &[-100]),
            node("n1", "dc1", "r2", &[0]),
            node("n2", "dc1", "r1", &[100]),
            node("n3", "dc1", "r2", &[200]),
        ])
        .unwrap()
    }

    #[test]
    fn network_topology_on_four_nodes_two_racks_worked_by_hand() {
        // dc1 has RF 3, 4 nodes, 2 racks: replicas needed = min(3, 4) = 3; rack repeats
        // allowed = 3 - 2 = 1.
        let ring = four_nodes_two_racks();
        let strategy = nts(&[("dc1", 3)]);

        // Token -150, in the wrapping range (200, -100]: the first ring token >= -150 is -100.
        //   n0 (r1, new rack)                      -> [n0]          needed 2
        //   n1 (r2, new rack)                      -> [n0, n1]      needed 1
        //   n2 (r1 used; 1 repeat left, now 0)     -> [n0, n1, n2]  done
        assert_eq!(ring.replicas(-150, &strategy), vec![0, 1, 2]);
        // Token 300, above every ring token: no ring token >= 300, so the walk wraps to -100
        // and the answer is the same. So are i64::MAX and i64::MIN.
        assert_eq!(ring.replicas(300, &strategy), vec![0, 1, 2]);
        assert_eq!(ring.replicas(i64::MAX, &strategy), vec![0, 1, 2]);
        assert_eq!(ring.replicas(i64::MIN, &strategy), vec![0, 1, 2]);
        // Token -100, equal to n0's token: the range (200, -100] includes its end, so n0 is
        // still primary.
        assert_eq!(ring.replicas(-100, &strategy), vec![0, 1, 2]);

        // Token -99, in (-100, 0]: the first ring token >= -99 is 0.
        //   n1 (r2, new) -> [n1]; n2 (r1, new) -> [n1, n2]; n3 (r2 used, the 1 repeat)
        //   -> [n1, n2, n3].
        assert_eq!(ring.replicas(-99, &strategy), vec![1, 2, 3]);
        assert_eq!(ring.replicas(0, &strategy), vec![1, 2, 3]);

        // Token 50, in (0, 100]: start at n2.
        //   n2 (r1, new) -> [n2]; n3 (r2, new) -> [n2, n3]; wrap; n0 (r1 used, the repeat)
        //   -> [n2, n3, n0].
        assert_eq!(ring.replicas(50, &strategy), vec![2, 3, 0]);

        // Token 150, in (100, 200]: start at n3.
        //   n3 (r2, new) -> [n3]; wrap; n0 (r1, new) -> [n3, n0]; n1 (r2 used, the repeat)
        //   -> [n3, n0, n1].
        assert_eq!(ring.replicas(150, &strategy), vec![3, 0, 1]);
        assert_eq!(ring.replicas(200, &strategy), vec![3, 0, 1]);
        // One past the last ring token is the wrapping range again.
        assert_eq!(ring.replicas(201, &strategy), vec![0, 1, 2]);
    }

    #[test]
    fn simple_strategy_on_four_nodes_worked_by_hand() {
        // SimpleStrategy takes the next distinct nodes clockwise and ignores racks. With racks
        // alternating, any three neighbours already span both racks, so the answers match
        // NetworkTopologyStrategy above.
        let ring = four_nodes_two_racks();
        let strategy = simple(3);
        assert_eq!(ring.replicas(-150, &strategy), vec![0, 1, 2]);
        assert_eq!(ring.replicas(-100, &strategy), vec![0, 1, 2]);
        assert_eq!(ring.replicas(-99, &strategy), vec![1, 2, 3]);
        assert_eq!(ring.replicas(50, &strategy), vec![2, 3, 0]);
        assert_eq!(ring.replicas(150, &strategy), vec![3, 0, 1]);
        assert_eq!(ring.replicas(300, &strategy), vec![0, 1, 2]);

        // RF 1 is the primary alone; RF above the node count is every node once.
        assert_eq!(ring.replicas(50, &simple(1)), vec![2]);
        assert_eq!(ring.replicas(50, &simple(7)), vec![2, 3, 0, 1]);
        assert!(ring.replicas(50, &simple(0)).is_empty());
    }

    #[test]
    fn network_topology_skips_a_used_rack_when_racks_suffice() {
        // Racks grouped instead of alternating:
        //   n0 -100 r1, n1 0 r1, n2 100 r2, n3 200 r2.
        // dc1 RF 2 on 2 racks: rack repeats allowed = 2 - 2 = 0.
        let ring = TokenRing::new(vec![
            node("n0", "dc1", "r1", &[-100]),
            node("n1", "dc1", "r1", &[0]),
            node("n2", "dc1", "r2", &[100]),
            node("n3", "dc1", "r2", &[200]),
        ])
        .unwrap();
        let strategy = nts(&[("dc1", 2)]);

        // Token -150: n0 (r1, new) -> [n0]; n1 (r1 used, no repeat) skipped; n2 (r2, new)
        // -> [n0, n2]. SimpleStrategy would take n1.
        assert_eq!(ring.replicas(-150, &strategy), vec![0, 2]);
        assert_eq!(ring.replicas(-150, &simple(2)), vec![0, 1]);
        // Token 50: n2 (r2) -> [n2]; n3 (r2 used) skipped; wrap; n0 (r1) -> [n2, n0].
        assert_eq!(ring.replicas(50, &strategy), vec![2, 0]);
        // Token -50: n1 (r1) -> [n1]; n2 (r2) -> [n1, n2].
        assert_eq!(ring.replicas(-50, &strategy), vec![1, 2]);
    }

    #[test]
    fn network_topology_takes_the_first_repeats_in_walk_order_when_racks_are_short() {
        // Three nodes on r1, one on r2:
        //   n0 -100 r1, n1 0 r1, n2 100 r1, n3 200 r2.
        // dc1 RF 3 on 2 racks: rack repeats allowed = 3 - 2 = 1.
        let ring = TokenRing::new(vec![
            node("n0", "dc1", "r1", &[-100]),
            node("n1", "dc1", "r1", &[0]),
            node("n2", "dc1", "r1", &[100]),
            node("n3", "dc1", "r2", &[200]),
        ])
        .unwrap();
        let strategy = nts(&[("dc1", 3)]);

        // Token -150:
        //   n0 (r1, new)                  -> [n0]
        //   n1 (r1 used, the one repeat)  -> [n0, n1]
        //   n2 (r1 used, no repeat left)  skipped
        //   n3 (r2, new)                  -> [n0, n1, n3]
        // Cassandra 2.x chose the same nodes but listed the repeat last: [n0, n3, n1].
        assert_eq!(ring.replicas(-150, &strategy), vec![0, 1, 3]);
        assert_eq!(ring.replicas(-150, &simple(3)), vec![0, 1, 2]);
        // Token -50: n1 (r1) -> [n1]; n2 (r1, the repeat) -> [n1, n2]; n3 (r2) -> [n1, n2, n3].
        assert_eq!(ring.replicas(-50, &strategy), vec![1, 2, 3]);
        // Token 50: n2 (r1) -> [n2]; n3 (r2) -> [n2, n3]; wrap; n0 (r1, the repeat) -> done.
        assert_eq!(ring.replicas(50, &strategy), vec![2, 3, 0]);
        // Token 150: n3 (r2) -> [n3]; wrap; n0 (r1) -> [n3, n0]; n1 (r1, the repeat) -> done.
        assert_eq!(ring.replicas(150, &strategy), vec![3, 0, 1]);

        // The lone node of r2 is thus a replica of every range (CASSANDRA-3810's caveat).
        for (_, end) in ring.ranges() {
            assert!(
                ring.replicas(end, &strategy).contains(&3),
                "range ending {end}"
            );
        }
    }

    #[test]
    fn network_topology_on_one_rack_behaves_like_simple() {
        // dc1 RF 3 on 1 rack: repeats allowed = 3 - 1 = 2, so after the first node the next
        // two distinct nodes clockwise are taken whatever their rack.
        let ring = TokenRing::new(vec![
            node("n0", "dc1", "r1", &[-100]),
            node("n1", "dc1", "r1", &[0]),
            node("n2", "dc1", "r1", &[100]),
            node("n3", "dc1", "r1", &[200]),
        ])
        .unwrap();
        let strategy = nts(&[("dc1", 3)]);
        for token in [-150, -100, -50, 0, 50, 100, 150, 200, 250] {
            assert_eq!(
                ring.replicas(token, &strategy),
                ring.replicas(token, &simple(3)),
                "token {token}"
            );
        }
        assert_eq!(ring.replicas(50, &strategy), vec![2, 3, 0]);

        // RF 3 on a two-node datacenter is both nodes.
        let small = TokenRing::new(vec![
            node("n0", "dc1", "r1", &[-100]),
            node("n1", "dc1", "r1", &[100]),
        ])
        .unwrap();
        assert_eq!(small.replica_count(&strategy), 2);
        assert_eq!(small.replicas(0, &strategy), vec![1, 0]);
    }

    /// Two datacenters interleaved on the ring; the vec order differs from ring order.
    ///
    /// ```text
    /// ring order:  -300 a(dc1 r1)  -200 x(dc2 r1)  -100 b(dc1 r2)
    ///                 0 y(dc2 r1)   100 c(dc1 r1)   200 z(dc2 r2)
    /// indices:     a 0, b 1, c 2, x 3, y 4, z 5
    /// ```
    fn two_datacenters() -> TokenRing {
        TokenRing::new(vec![
            node("a", "dc1", "r1", &[-300]),
            node("b", "dc1", "r2", &[-100]),
            node("c", "dc1", "r1", &[100]),
            node("x", "dc2", "r1", &[-200]),
            node("y", "dc2", "r1", &[0]),
            node("z", "dc2", "r2", &[200]),
        ])
        .unwrap()
    }

    #[test]
    fn two_datacenters_fill_their_own_factors_in_one_walk() {
        let ring = two_datacenters();

        // dc1 RF 2 and dc2 RF 2, each on 2 racks: no rack repeats in either.
        // Token -250: start at x (-200).
        //   x (dc2 r1, new) -> [x]; b (dc1 r2, new) -> [x, b];
        //   y (dc2 r1 used, no repeat) skipped; c (dc1 r1, new) -> [x, b, c], dc1 done;
        //   z (dc2 r2, new) -> [x, b, c, z], dc2 done.
        let even = nts(&[("dc1", 2), ("dc2", 2)]);
        assert_eq!(ring.replicas(-250, &even), vec![3, 1, 2, 5]);
        // Token 250 wraps to a (-300):
        //   a (dc1 r1) -> [a]; x (dc2 r1) -> [a, x]; b (dc1 r2) -> [a, x, b], dc1 done;
        //   y (dc2 r1 used) skipped; c (dc1 done) skipped; z (dc2 r2) -> [a, x, b, z].
        assert_eq!(ring.replicas(250, &even), vec![0, 3, 1, 5]);

        // dc1 RF 3 (3 nodes, 2 racks: one repeat) and dc2 RF 1. Token 250 again:
        //   a (dc1 r1) -> [a]; x (dc2 r1) -> [a, x], dc2 done; b (dc1 r2) -> [a, x, b];
        //   y skipped (dc2 done); c (dc1 r1 used, the repeat) -> [a, x, b, c], dc1 done.
        let uneven = nts(&[("dc1", 3), ("dc2", 1)]);
        assert_eq!(ring.replicas(250, &uneven), vec![0, 3, 1, 2]);

        // Only the named datacenters hold replicas; an unknown one adds none.
        assert_eq!(ring.replicas(250, &nts(&[("dc2", 2)])), vec![3, 5]);
        let with_unknown = nts(&[("dc1", 2), ("dc3", 3)]);
        assert_eq!(ring.replica_count(&with_unknown), 2);
        assert_eq!(ring.replicas(250, &with_unknown), vec![0, 1]);
        assert!(ring.replicas(250, &nts(&[("dc1", 0)])).is_empty());
    }

    #[test]
    fn ranges_are_consecutive_and_the_wrapping_one_comes_first() {
        let ring = four_nodes_two_racks();
        assert_eq!(
            ring.ranges(),
            vec![(200, -100), (-100, 0), (0, 100), (100, 200)]
        );

        let strategy = nts(&[("dc1", 3)]);
        assert_eq!(
            ring.replicas_for_range((200, -100), &strategy),
            Ok(vec![0, 1, 2])
        );
        assert_eq!(
            ring.replicas_for_range((100, 200), &strategy),
            Ok(vec![3, 0, 1])
        );
        // A piece of a range has that range's replicas, wrapping pieces included.
        assert_eq!(
            ring.replicas_for_range((-50, 0), &strategy),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            ring.replicas_for_range((250, -150), &strategy),
            Ok(vec![0, 1, 2])
        );
        // A range over a ring token has no single replica set.
        assert_eq!(
            ring.replicas_for_range((-100, 100), &strategy),
            Err(RingError::RangeSpansRingTokens {
                start: -100,
                end: 100,
                token: 0,
            })
        );
        assert!(ring.replicas_for_range((0, 0), &strategy).is_err());
    }

    #[test]
    fn a_single_token_ring_is_one_range_covering_everything() {
        let ring = TokenRing::new(vec![node("n0", "dc1", "r1", &[42])]).unwrap();
        assert_eq!(ring.ranges(), vec![(42, 42)]);
        assert_eq!(ring.replicas_for_range((42, 42), &simple(3)), Ok(vec![0]));
        for token in [i64::MIN, -1, 42, 43, i64::MAX] {
            assert!(range_contains((42, 42), token));
            assert_eq!(ring.replicas(token, &simple(3)), vec![0]);
        }
    }

    #[test]
    fn range_contains_excludes_the_start_and_includes_the_end() {
        assert!(!range_contains((0, 100), 0));
        assert!(range_contains((0, 100), 1));
        assert!(range_contains((0, 100), 100));
        assert!(!range_contains((0, 100), 101));
        // Wrapping.
        assert!(range_contains((200, -100), 201));
        assert!(range_contains((200, -100), i64::MAX));
        assert!(range_contains((200, -100), i64::MIN));
        assert!(range_contains((200, -100), -100));
        assert!(!range_contains((200, -100), 200));
        assert!(!range_contains((200, -100), 0));
    }

    #[test]
    fn bad_rings_are_refused() {
        assert_eq!(TokenRing::new(Vec::new()), Err(RingError::NoNodes));
        assert_eq!(
            TokenRing::new(vec![node("n0", "dc1", "r1", &[])]),
            Err(RingError::NoTokens { node: "n0".into() })
        );
        assert_eq!(
            TokenRing::new(vec![
                node("n0", "dc1", "r1", &[1]),
                node("n0", "dc1", "r1", &[2]),
            ]),
            Err(RingError::DuplicateNodeName { name: "n0".into() })
        );
        assert_eq!(
            TokenRing::new(vec![
                node("n0", "dc1", "r1", &[1, 5]),
                node("n1", "dc1", "r1", &[5]),
            ]),
            Err(RingError::DuplicateToken {
                token: 5,
                first: "n0".into(),
                second: "n1".into(),
            })
        );
    }

    #[test]
    fn allocated_tokens_are_deterministic_distinct_and_sorted() {
        let tokens = allocate_tokens("ring-0", NUM_TOKENS_DEFAULT);
        assert_eq!(tokens.len(), NUM_TOKENS_DEFAULT);
        assert_eq!(tokens, allocate_tokens("ring-0", NUM_TOKENS_DEFAULT));
        assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]));
        // Token i is the Murmur3 token of "ring-0:{i}" (these 16 happen not to collide).
        let mut by_hand: Vec<Token> = (0..NUM_TOKENS_DEFAULT)
            .map(|i| murmur3_token(format!("ring-0:{i}").as_bytes()))
            .collect();
        by_hand.sort_unstable();
        assert_eq!(tokens, by_hand);
        assert_ne!(tokens, allocate_tokens("ring-1", NUM_TOKENS_DEFAULT));
        assert!(allocate_tokens("ring-0", 0).is_empty());
    }

    fn vnode_ring(racks: &[(&str, &str)], nodes_per_rack: usize) -> TokenRing {
        let mut nodes = Vec::new();
        for (dc, rack) in racks {
            for i in 0..nodes_per_rack {
                let name = format!("{dc}-{rack}-{i}");
                let tokens = allocate_tokens(&name, NUM_TOKENS_DEFAULT);
                nodes.push(node(&name, dc, rack, &tokens));
            }
        }
        TokenRing::new(nodes).unwrap()
    }

    #[test]
    fn vnodes_give_rf_distinct_nodes_for_many_keys() {
        // One datacenter, 3 racks of 2 nodes, 16 tokens each: 96 ring tokens.
        let ring = vnode_ring(&[("dc1", "r1"), ("dc1", "r2"), ("dc1", "r3")], 2);
        assert_eq!(ring.ranges().len(), 6 * NUM_TOKENS_DEFAULT);
        let strategies = [simple(3), nts(&[("dc1", 3)])];

        let mut primaries = BTreeSet::new();
        for channel_id in 0..200u64 {
            for bucket in 0..5u32 {
                let token = message_partition_token(channel_id, bucket);
                for strategy in &strategies {
                    let replicas = ring.replicas(token, strategy);
                    let distinct: BTreeSet<usize> = replicas.iter().copied().collect();
                    assert_eq!(distinct.len(), 3, "token {token} {strategy:?}");
                    assert_eq!(replicas[0], ring.primary(token));
                }
                let racks: BTreeSet<&str> = ring
                    .replicas(token, &strategies[1])
                    .iter()
                    .map(|&n| ring.nodes()[n].rack.as_str())
                    .collect();
                assert_eq!(racks.len(), 3, "NTS puts RF 3 on 3 racks, token {token}");
                primaries.insert(ring.primary(token));
            }
        }
        assert_eq!(primaries.len(), 6, "every node is primary for some key");
    }

    #[test]
    fn vnodes_across_two_datacenters() {
        let ring = vnode_ring(
            &[("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2")],
            2,
        );
        let strategy = nts(&[("dc1", 3), ("dc2", 2)]);
        for key in 0..1_000u64 {
            let token = message_partition_token(key, 0);
            let replicas = ring.replicas(token, &strategy);
            let in_dc2 = replicas
                .iter()
                .filter(|&&n| ring.nodes()[n].datacenter == "dc2")
                .count();
            assert_eq!(replicas.len(), 5);
            assert_eq!(in_dc2, 2);
        }
    }

    #[test]
    fn every_token_has_the_replicas_of_the_range_holding_it() {
        let ring = vnode_ring(&[("dc1", "r1"), ("dc1", "r2")], 3);
        let strategy = nts(&[("dc1", 3)]);
        let ranges = ring.ranges();

        // The ranges chain end to start and close the circle.
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
        assert_eq!(ranges[0].0, ranges[ranges.len() - 1].1);

        for key in 0..500u64 {
            let token = message_partition_token(key, 3);
            let holding: Vec<&(Token, Token)> = ranges
                .iter()
                .filter(|&&range| range_contains(range, token))
                .collect();
            assert_eq!(holding.len(), 1, "token {token} in exactly one range");
            assert_eq!(
                ring.replicas_for_range(*holding[0], &strategy),
                Ok(ring.replicas(token, &strategy))
            );
        }
    }
}
