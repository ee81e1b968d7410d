//! A consistent-hash ring that places keys (guild ids, channel ids) on nodes (guild nodes,
//! data-service nodes).
//!
//! Each node owns several virtual points on a 64-bit circle; a key belongs to the node of the
//! first point at or after the key's token, wrapping past the end. A point's token is the
//! Murmur3 token of `"{label}#{index}"` and a key's token the Murmur3 token of its 8 big-endian
//! bytes, so every process that builds a ring from the same labels places every key alike.
//!
//! Guaranteed: removing a node moves only the keys it owned, each to the next node after it
//! on the ring, which is the key's second entry in [`HashRing::successors`]; every other key
//! stays where it was. That is what lets a caller fail over by walking a key's successors.
//!
//! Not modelled: weights (every node gets the same number of points) and rebalancing data when
//! a node joins; the ring places keys, moving their state is the caller's business.

use std::collections::BTreeMap;

use crate::ring::token::murmur3_token;

/// Virtual points per node unless a caller picks another count.
pub const POINTS_PER_NODE_DEFAULT: usize = 64;

/// Nodes placed on a circle of tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing<N> {
    /// Token → index into `nodes`.
    points: BTreeMap<i64, usize>,
    nodes: Vec<N>,
}

/// A key's token: the Murmur3 token of its big-endian bytes.
pub fn key_token(key: u64) -> i64 {
    murmur3_token(&key.to_be_bytes())
}

impl<N: Clone + PartialEq> HashRing<N> {
    /// A ring of `nodes`, each with `points_per_node` points named after `label(node)`.
    ///
    /// Two points on one token (a hash collision) go to the first node given, so the ring is
    /// the same whatever else differs.
    pub fn new(nodes: Vec<N>, points_per_node: usize, label: impl Fn(&N) -> String) -> Self {
        assert!(points_per_node > 0, "a node needs at least one point");
        let mut points = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            let label = label(node);
            for point in 0..points_per_node {
                let token = murmur3_token(format!("{label}#{point}").as_bytes());
                points.entry(token).or_insert(index);
            }
        }
        Self { points, nodes }
    }

    /// A ring with its points given: `(token, node)`. For rings worked out by hand.
    pub fn from_points(points: Vec<(i64, N)>) -> Self {
        let mut ring = Self {
            points: BTreeMap::new(),
            nodes: Vec::new(),
        };
        for (token, node) in points {
            let index = match ring.nodes.iter().position(|n| *n == node) {
                Some(index) => index,
                None => {
                    ring.nodes.push(node);
                    ring.nodes.len() - 1
                }
            };
            ring.points.entry(token).or_insert(index);
        }
        ring
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// The node owning `token`: the node of the first point at or after it, wrapping around.
    pub fn owner_of_token(&self, token: i64) -> Option<&N> {
        self.successors_of_token(token).into_iter().next()
    }

    /// Every node once, in ring order from the owner of `token`: the owner, then the node
    /// that takes the token over if the owner is removed, and so on.
    pub fn successors_of_token(&self, token: i64) -> Vec<&N> {
        let mut seen = vec![false; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        let after = self.points.range(token..).chain(self.points.range(..token));
        for (_, &index) in after {
            if !seen[index] {
                seen[index] = true;
                order.push(&self.nodes[index]);
                if order.len() == self.nodes.len() {
                    break;
                }
            }
        }
        order
    }

    /// The node owning `key`.
    pub fn owner(&self, key: u64) -> Option<&N> {
        self.owner_of_token(key_token(key))
    }

    /// Every node once, in the order `key` fails over through them.
    pub fn successors(&self, key: u64) -> Vec<&N> {
        self.successors_of_token(key_token(key))
    }

    /// The same ring without `node` (its points gone, every other point kept).
    pub fn without(&self, node: &N) -> Self {
        let points = self
            .points
            .iter()
            .filter(|(_, &index)| self.nodes[index] != *node)
            .map(|(&token, &index)| (token, self.nodes[index].clone()))
            .collect();
        Self::from_points(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a at 10 and 50, b at 20 and 60, c at 30: worked out by hand below.
    fn hand_ring() -> HashRing<&'static str> {
        HashRing::from_points(vec![(10, "a"), (20, "b"), (30, "c"), (50, "a"), (60, "b")])
    }

    #[test]
    fn a_token_belongs_to_the_next_point_wrapping_around() {
        let ring = hand_ring();
        assert_eq!(ring.owner_of_token(5), Some(&"a"));
        assert_eq!(ring.owner_of_token(10), Some(&"a"));
        assert_eq!(ring.owner_of_token(11), Some(&"b"));
        assert_eq!(ring.owner_of_token(25), Some(&"c"));
        assert_eq!(ring.owner_of_token(31), Some(&"a"));
        assert_eq!(ring.owner_of_token(55), Some(&"b"));
        // Past the last point the circle wraps to the first.
        assert_eq!(ring.owner_of_token(61), Some(&"a"));
        assert_eq!(ring.owner_of_token(i64::MIN), Some(&"a"));
    }

    #[test]
    fn successors_list_each_node_once_in_ring_order() {
        let ring = hand_ring();
        assert_eq!(ring.successors_of_token(25), vec![&"c", &"a", &"b"]);
        assert_eq!(ring.successors_of_token(55), vec![&"b", &"a", &"c"]);
        assert_eq!(ring.successors_of_token(61), vec![&"a", &"b", &"c"]);
    }

    #[test]
    fn removing_a_node_moves_only_its_tokens_to_the_next_node() {
        let ring = hand_ring();
        let without_c = ring.without(&"c");
        // c owned (20, 30]; those go to the next point, a at 50. Nothing else moves.
        assert_eq!(without_c.owner_of_token(25), Some(&"a"));
        assert_eq!(without_c.owner_of_token(30), Some(&"a"));
        for token in [5, 10, 11, 20, 31, 50, 55, 60, 61] {
            assert_eq!(without_c.owner_of_token(token), ring.owner_of_token(token));
        }
        assert_eq!(without_c.nodes(), &["a", "b"]);
        let without_a = ring.without(&"a");
        // a owned (60, 10] and (30, 50]: to b at 20 and b at 60.
        assert_eq!(without_a.owner_of_token(5), Some(&"b"));
        assert_eq!(without_a.owner_of_token(40), Some(&"b"));
        assert_eq!(without_a.owner_of_token(25), Some(&"c"));
    }

    #[test]
    fn key_tokens_are_murmur3_of_the_big_endian_bytes() {
        assert_eq!(key_token(7), murmur3_token(&[0, 0, 0, 0, 0, 0, 0, 7]));
        assert_ne!(key_token(7), key_token(8));
    }

    #[test]
    fn a_removed_nodes_keys_go_to_their_second_successor_and_no_other_key_moves() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("guild-{i}")).collect();
        let ring = HashRing::new(nodes.clone(), POINTS_PER_NODE_DEFAULT, String::clone);
        let smaller = ring.without(&nodes[2]);
        let mut moved = 0;
        for key in 0..2_000u64 {
            let before = ring.successors(key);
            let after = smaller.owner(key).expect("four nodes remain");
            if before[0] == &nodes[2] {
                moved += 1;
                assert_eq!(after, before[1], "key {key}");
            } else {
                assert_eq!(after, before[0], "key {key}");
            }
        }
        // Each of five nodes owns roughly a fifth of the keys.
        assert!((200..=600).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn every_node_gets_a_share_of_the_keys() {
        let nodes: Vec<u32> = vec![1, 2, 3];
        let ring = HashRing::new(nodes, POINTS_PER_NODE_DEFAULT, |n| format!("n{n}"));
        let mut counts = BTreeMap::new();
        for key in 0..3_000u64 {
            *counts.entry(*ring.owner(key).expect("nodes")).or_insert(0) += 1;
        }
        for (node, count) in counts {
            assert!((600..=1_400).contains(&count), "node {node} owns {count}");
        }
    }
}
