//! Partition shapes and the grudges they produce.
//!
//! A grudge maps every node to the set of nodes it **cannot receive from** (the direction of
//! Jepsen's grudges): `grudge["b"]` containing `"a"` means messages from `a` to `b` are dropped.
//! A symmetric cut puts each node in the other's set.
//!
//! Shapes, over a node list of length `n` taken in its given order:
//! - halves: the first ⌈n/2⌉ nodes against the rest (so with an odd count the first group is
//!   the majority; Jepsen's own bisection puts the smaller half first);
//! - random halves: the same after shuffling the list with the shape's seed;
//! - isolate: one node against all the others;
//! - majorities ring: with `m` = ⌊n/2⌋ + 1, node `i` receives only from the `m` consecutive
//!   ring positions `i - ⌊m/2⌋ ..= i + (m - 1 - ⌊m/2⌋)` (mod n), so every node
//!   sees a majority and no two see the same one. For 5 nodes each sees itself and one
//!   neighbour on each side. For an even `n` the window is lopsided, so the cut is not
//!   symmetric (as in Jepsen);
//! - bridge: the node at index ⌊n/2⌋ is the bridge, the nodes before it one side and the nodes
//!   after it the other; the sides cannot reach each other, the bridge reaches both.
//!
//! One-way cuts: each shape lays the nodes in an order (the given one; shuffled for random
//! halves; for isolate, the isolated node last), and a one-way cut keeps only the entries
//! where the sender comes earlier in that order. So the second half cannot hear the first, an
//! isolated node can send but hears nobody, and the bridge's second side cannot hear the first.
//!
//! Not modelled: Jepsen's random shuffling for the majorities ring (the order given is the
//! ring), and shapes of more than two components.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// For each node, the nodes it cannot receive from.
pub type Grudge = BTreeMap<String, BTreeSet<String>>;

/// Which links a partition cuts; see the module docs for each rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionShape {
    /// The first ⌈n/2⌉ nodes against the rest.
    Halves,
    /// Halves after a shuffle drawn from `seed` (stored, so the cut replays).
    RandomHalves {
        /// The shuffle's seed.
        seed: u64,
    },
    /// One node against the others.
    Isolate {
        /// The isolated node.
        node: String,
    },
    /// Every node sees a different majority.
    MajoritiesRing,
    /// Two sides and one bridge node that sees both.
    Bridge,
}

/// The grudge of `shape` over `nodes`, cutting both directions or, if `one_way`, one.
///
/// Every node of `nodes` is a key, with an empty set if it hears everyone. An isolated node
/// that is not in `nodes` is cut from all of them.
pub fn grudge(shape: &PartitionShape, one_way: bool, nodes: &[String]) -> Grudge {
    // 1. Lay the nodes in the shape's order and compute the symmetric cut.
    let order = ordered(shape, nodes);
    let mut cut: Grudge = order.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
    match shape {
        PartitionShape::Halves | PartitionShape::RandomHalves { .. } => {
            let (first, second) = order.split_at(order.len().div_ceil(2));
            cut_between(&mut cut, first, second);
        }
        PartitionShape::Isolate { .. } => {
            let (others, isolated) = order.split_at(order.len().saturating_sub(1));
            cut_between(&mut cut, others, isolated);
        }
        PartitionShape::MajoritiesRing => majorities_ring(&mut cut, &order),
        PartitionShape::Bridge => {
            let bridge = order.len() / 2;
            let (first, rest) = order.split_at(bridge);
            cut_between(&mut cut, first, rest.get(1..).unwrap_or_default());
        }
    }

    // 2. A one-way cut keeps only what an earlier node sends to a later one.
    if one_way {
        let position: BTreeMap<&String, usize> =
            order.iter().enumerate().map(|(i, n)| (n, i)).collect();
        for (receiver, senders) in cut.iter_mut() {
            let at = position[receiver];
            senders.retain(|sender| position[sender] < at);
        }
    }
    cut
}

/// The nodes in the order the shape lays them out.
fn ordered(shape: &PartitionShape, nodes: &[String]) -> Vec<String> {
    let mut order: Vec<String> = nodes.to_vec();
    match shape {
        PartitionShape::RandomHalves { seed } => SplitMix64::new(*seed).shuffle(&mut order),
        PartitionShape::Isolate { node } => {
            order.retain(|n| n != node);
            order.push(node.clone());
        }
        PartitionShape::Halves | PartitionShape::MajoritiesRing | PartitionShape::Bridge => {}
    }
    order
}

/// Cuts every link between `a` and `b`, both ways.
fn cut_between(cut: &mut Grudge, a: &[String], b: &[String]) {
    for x in a {
        for y in b {
            cut.entry(x.clone()).or_default().insert(y.clone());
            cut.entry(y.clone()).or_default().insert(x.clone());
        }
    }
}

/// Node `i` hears only a window of ⌊n/2⌋ + 1 ring positions around itself.
fn majorities_ring(cut: &mut Grudge, order: &[String]) {
    let n = order.len();
    if n == 0 {
        return;
    }
    let majority = n / 2 + 1;
    let before = majority / 2;
    for (i, receiver) in order.iter().enumerate() {
        let heard: BTreeSet<usize> = (0..majority).map(|k| (i + n - before + k) % n).collect();
        let senders = cut.entry(receiver.clone()).or_default();
        for (j, sender) in order.iter().enumerate() {
            if !heard.contains(&j) {
                senders.insert(sender.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn expect(entries: &[(&str, &[&str])]) -> Grudge {
        entries
            .iter()
            .map(|(node, from)| {
                (
                    node.to_string(),
                    from.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    fn five() -> Vec<String> {
        names(&["n1", "n2", "n3", "n4", "n5"])
    }

    #[test]
    fn halves_of_five_put_three_first() {
        let want = expect(&[
            ("n1", &["n4", "n5"]),
            ("n2", &["n4", "n5"]),
            ("n3", &["n4", "n5"]),
            ("n4", &["n1", "n2", "n3"]),
            ("n5", &["n1", "n2", "n3"]),
        ]);
        assert_eq!(grudge(&PartitionShape::Halves, false, &five()), want);
    }

    #[test]
    fn majorities_ring_of_five_sees_one_neighbour_each_side() {
        let want = expect(&[
            ("n1", &["n3", "n4"]),
            ("n2", &["n4", "n5"]),
            ("n3", &["n1", "n5"]),
            ("n4", &["n1", "n2"]),
            ("n5", &["n2", "n3"]),
        ]);
        assert_eq!(
            grudge(&PartitionShape::MajoritiesRing, false, &five()),
            want
        );
    }

    #[test]
    fn bridge_of_five_is_the_middle_node() {
        let want = expect(&[
            ("n1", &["n4", "n5"]),
            ("n2", &["n4", "n5"]),
            ("n3", &[]),
            ("n4", &["n1", "n2"]),
            ("n5", &["n1", "n2"]),
        ]);
        assert_eq!(grudge(&PartitionShape::Bridge, false, &five()), want);
    }

    #[test]
    fn isolating_one_cuts_it_from_all() {
        let shape = PartitionShape::Isolate { node: "n2".into() };
        let want = expect(&[
            ("n1", &["n2"]),
            ("n2", &["n1", "n3", "n4", "n5"]),
            ("n3", &["n2"]),
            ("n4", &["n2"]),
            ("n5", &["n2"]),
        ]);
        assert_eq!(grudge(&shape, false, &five()), want);
    }

    #[test]
    fn one_way_cuts_keep_one_direction() {
        let halves = expect(&[
            ("n1", &[]),
            ("n2", &[]),
            ("n3", &[]),
            ("n4", &["n1", "n2", "n3"]),
            ("n5", &["n1", "n2", "n3"]),
        ]);
        assert_eq!(grudge(&PartitionShape::Halves, true, &five()), halves);
        let shape = PartitionShape::Isolate { node: "n2".into() };
        let isolated = expect(&[
            ("n1", &[]),
            ("n2", &["n1", "n3", "n4", "n5"]),
            ("n3", &[]),
            ("n4", &[]),
            ("n5", &[]),
        ]);
        assert_eq!(grudge(&shape, true, &five()), isolated);
    }

    #[test]
    fn every_majorities_ring_node_hears_a_distinct_majority() {
        for n in 1..9 {
            let nodes: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let cut = grudge(&PartitionShape::MajoritiesRing, false, &nodes);
            let heard: BTreeSet<BTreeSet<&String>> = cut
                .values()
                .map(|from| nodes.iter().filter(|m| !from.contains(*m)).collect())
                .collect();
            assert!(heard.iter().all(|h| h.len() == n / 2 + 1), "n = {n}");
            assert_eq!(heard.len(), if n <= 2 { 1 } else { n }, "n = {n}");
        }
    }

    #[test]
    fn random_halves_replay_from_their_seed() {
        let nodes: Vec<String> = (1..=7).map(|i| format!("n{i}")).collect();
        let a = grudge(&PartitionShape::RandomHalves { seed: 3 }, false, &nodes);
        let b = grudge(&PartitionShape::RandomHalves { seed: 3 }, false, &nodes);
        assert_eq!(a, b);
        let cut_off: Vec<usize> = a.values().map(BTreeSet::len).collect();
        assert_eq!(cut_off.iter().filter(|&&c| c == 3).count(), 4);
        assert_eq!(cut_off.iter().filter(|&&c| c == 4).count(), 3);
    }
}
