//! Merkle trees over token ranges, the digests anti-entropy repair compares.
//!
//! Modelled: a [`TokenRange`] `(left, right]` of Murmur3 tokens (`i64::MIN` is never a
//! token; `left >= right` wraps past `i64::MAX`, and `(t, t]` is the whole ring, as in
//! Cassandra) split into `2^depth` leaves of near-equal width. Each row is hashed with
//! xxh3-128 over a canonical byte encoding of its key and cell (write timestamp and value,
//! a tombstone included), and a leaf's digest covers the wrapping sum of its rows' hashes and
//! their count, so the tree does not depend on insertion order. A range tombstone is hashed
//! into the leaf of its partition's token like a row, over its own canonical bytes (a tag
//! that no row's bytes begin with, then its partition, slice and deletion time). Inner nodes
//! hash their two children; [`diff`] walks both trees from the root, skipping equal
//! subtrees, and returns the leaf ranges whose digests differ, in token order.
//!
//! Guarantees: equal row sets in the same range at the same depth give equal roots; a row
//! present on one side only, or different in any field, changes its leaf (barring a 128-bit
//! collision). The caller passes each row once with its token (e.g. from
//! `ring::token::murmur3_token`); a token outside the range is a caller bug and panics.
//!
//! Not modelled:
//! TODO(ring-repair): streaming the mismatching ranges, incremental repair (repaired /
//! unrepaired sets) and `-pr`; this module only finds the ranges.
//! TODO(ring-repair): Cassandra's tree-size budget (`repair_session_space`) choosing the
//! depth; the caller picks it. A serialized depth-15 tree is about 2 MB of JSON, within one
//! RPC frame; deeper trees need sending level by level.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use super::{Cell, RangeTombstone, Row, RowKey};
use crate::model::StoredMessage;

/// The deepest tree allowed: 2^20 leaves.
pub const DEPTH_MAX: u32 = 20;
/// A depth suiting this model's data sizes: 2^15 leaves.
pub const DEPTH_DEFAULT: u32 = 15;
/// How many tokens the ring holds: `i64::MIN + 1 ..= i64::MAX`.
const RING_TOKEN_COUNT: i128 = u64::MAX as i128;

/// The tokens `(left, right]`, wrapping past `i64::MAX` when `left >= right`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRange {
    /// Exclusive start.
    pub left: i64,
    /// Inclusive end.
    pub right: i64,
}

impl TokenRange {
    /// The whole ring without wrapping: every token from `i64::MIN + 1` to `i64::MAX`.
    pub const FULL: TokenRange = TokenRange {
        left: i64::MIN,
        right: i64::MAX,
    };

    /// The range `(left, right]`.
    pub fn new(left: i64, right: i64) -> Self {
        Self { left, right }
    }

    /// Whether it wraps past `i64::MAX` (or is the whole ring as `(t, t]`).
    pub fn wraps(&self) -> bool {
        self.left >= self.right
    }

    /// How many tokens it holds.
    pub fn token_count(&self) -> u128 {
        let span = i128::from(self.right) - i128::from(self.left);
        let count = if self.wraps() {
            span + RING_TOKEN_COUNT
        } else {
            span
        };
        count.unsigned_abs()
    }

    /// Whether `token` lies in it.
    pub fn contains(&self, token: i64) -> bool {
        token != i64::MIN && self.offset_of(token) <= self.token_count()
    }

    /// A token's position past `left`, walking up and wrapping: `1` for the first token.
    fn offset_of(&self, token: i64) -> u128 {
        let mut offset = i128::from(token) - i128::from(self.left);
        if offset <= 0 {
            offset += RING_TOKEN_COUNT;
        }
        offset.unsigned_abs()
    }

    /// The token `offset` steps past `left`, wrapping from `i64::MAX` to `i64::MIN + 1`.
    fn token_at(&self, offset: u128) -> i64 {
        let offset = i128::try_from(offset).unwrap_or(i128::MAX);
        let mut token = i128::from(self.left) + offset;
        if token > i128::from(i64::MAX) {
            token -= RING_TOKEN_COUNT;
        }
        i64::try_from(token).unwrap_or(i64::MAX)
    }
}

/// One leaf's rows, summarised independently of their order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Leaf {
    /// The wrapping sum of the rows' hashes.
    hash_sum: u128,
    /// How many rows were added.
    row_count: u64,
}

impl Leaf {
    fn digest(&self) -> u128 {
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&self.hash_sum.to_le_bytes());
        bytes[16..].copy_from_slice(&self.row_count.to_le_bytes());
        xxh3_128(&bytes)
    }
}

fn inner_digest(left: u128, right: u128) -> u128 {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&left.to_le_bytes());
    bytes[16..].copy_from_slice(&right.to_le_bytes());
    xxh3_128(&bytes)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The canonical bytes of a row: fixed-width little-endian integers, length-prefixed strings,
/// a tag byte before each optional value. The destructuring lists every field, so adding one
/// to the row's types fails to compile until it is hashed here too.
fn row_bytes(row: &Row) -> Vec<u8> {
    let Row { key, cell } = row;
    let RowKey {
        channel_id,
        bucket,
        message_id,
    } = key;
    let Cell { write_us, value } = cell;
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(&channel_id.to_le_bytes());
    out.extend_from_slice(&bucket.to_le_bytes());
    out.extend_from_slice(&message_id.to_le_bytes());
    out.extend_from_slice(&write_us.to_le_bytes());
    let Some(message) = value else {
        out.push(0);
        return out;
    };

    let StoredMessage {
        channel_id,
        message_id,
        guild_id,
        author_id,
        content,
        nonce,
        edited_ms,
        referenced_message_id,
        reactions,
    } = message;
    out.push(1);
    for id in [channel_id, message_id, guild_id, author_id] {
        out.extend_from_slice(&id.to_le_bytes());
    }
    put_str(&mut out, content);
    match nonce {
        Some(nonce) => {
            out.push(1);
            put_str(&mut out, nonce);
        }
        None => out.push(0),
    }
    // An edit time adds bytes only when present, so a never-edited row digests as before.
    if let Some(edited_ms) = edited_ms {
        out.push(2);
        out.extend_from_slice(&edited_ms.to_le_bytes());
    }
    // Replies and reactions likewise, each behind its own tag.
    if let Some(referenced) = referenced_message_id {
        out.push(3);
        out.extend_from_slice(&referenced.to_le_bytes());
    }
    for reaction in reactions {
        out.push(4);
        put_str(&mut out, &reaction.emoji);
        out.extend_from_slice(&(reaction.user_ids.len() as u64).to_le_bytes());
        for user_id in &reaction.user_ids {
            out.extend_from_slice(&user_id.to_le_bytes());
        }
    }
    out
}

/// What a range tombstone's canonical bytes begin with: longer than a row's channel id, so
/// no row's bytes can equal a range tombstone's.
const RANGE_TOMBSTONE_TAG: &[u8] = b"range-tombstone:";

/// The canonical bytes of a range tombstone, as [`row_bytes`] gives a row's.
fn range_tombstone_bytes(tombstone: &RangeTombstone) -> Vec<u8> {
    let RangeTombstone {
        channel_id,
        bucket,
        from,
        to,
        deleted_at_us,
    } = tombstone;
    let mut out = RANGE_TOMBSTONE_TAG.to_vec();
    out.extend_from_slice(&channel_id.to_le_bytes());
    out.extend_from_slice(&bucket.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&to.to_le_bytes());
    out.extend_from_slice(&deleted_at_us.to_le_bytes());
    out
}

/// A row's stable 128-bit hash: the same on every node and every run.
pub fn row_hash(row: &Row) -> u128 {
    xxh3_128(&row_bytes(row))
}

/// A Merkle tree over one token range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleTree {
    range: TokenRange,
    depth: u32,
    leaves: Vec<Leaf>,
}

impl MerkleTree {
    /// An empty tree over `range` with `2^depth` leaves.
    pub fn new(range: TokenRange, depth: u32) -> Self {
        assert!(depth <= DEPTH_MAX, "depth {depth} exceeds {DEPTH_MAX}");
        assert!(
            range.token_count() > 0,
            "the range {range:?} holds no token"
        );
        Self {
            range,
            depth,
            leaves: vec![Leaf::default(); 1 << depth],
        }
    }

    /// A tree over `range` holding `rows`, each with its token.
    pub fn from_rows<'a>(
        range: TokenRange,
        depth: u32,
        rows: impl IntoIterator<Item = (i64, &'a Row)>,
    ) -> Self {
        let mut tree = Self::new(range, depth);
        for (token, row) in rows {
            tree.insert(token, row);
        }
        tree
    }

    /// Adds `row`, whose token is `token`; each row must be added once.
    pub fn insert(&mut self, token: i64, row: &Row) {
        let index = self.leaf_of(token);
        let leaf = &mut self.leaves[index];
        leaf.hash_sum = leaf.hash_sum.wrapping_add(row_hash(row));
        leaf.row_count += 1;
    }

    /// Adds `tombstone`, whose partition's token is `token`; each must be added once.
    pub fn insert_range_tombstone(&mut self, token: i64, tombstone: &RangeTombstone) {
        let index = self.leaf_of(token);
        let leaf = &mut self.leaves[index];
        let hash = xxh3_128(&range_tombstone_bytes(tombstone));
        leaf.hash_sum = leaf.hash_sum.wrapping_add(hash);
        leaf.row_count += 1;
    }

    /// The range covered.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// The depth: the tree has `2^depth` leaves.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// How many leaves it has.
    pub fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// How many rows were added.
    pub fn row_count(&self) -> u64 {
        self.leaves.iter().map(|leaf| leaf.row_count).sum()
    }

    /// The leaf holding `token`, which must lie in the range.
    pub fn leaf_of(&self, token: i64) -> usize {
        assert!(
            self.range.contains(token),
            "token {token} outside {:?}",
            self.range
        );
        // Leaf i holds offsets in (floor(w*i/n), floor(w*(i+1)/n)], so a token at offset o
        // is in leaf ceil(o*n/w) - 1. Both products fit: w < 2^64 and n <= 2^20.
        let offset = self.range.offset_of(token);
        let leaves = self.leaves.len() as u128;
        let index = (offset * leaves).div_ceil(self.range.token_count()) - 1;
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        assert!(
            index < self.leaves.len(),
            "leaf {index} of {}",
            self.leaves.len()
        );
        index
    }

    /// The tokens of leaf `index`; a leaf of a range narrower than the leaf count may be
    /// empty, `(t, t]` here meaning no token rather than the whole ring.
    pub fn leaf_range(&self, index: usize) -> TokenRange {
        assert!(
            index < self.leaves.len(),
            "leaf {index} of {}",
            self.leaves.len()
        );
        let bound = |i: usize| {
            let offset = self.range.token_count() * i as u128 / self.leaves.len() as u128;
            self.range.token_at(offset)
        };
        TokenRange::new(bound(index), bound(index + 1))
    }

    /// Every level's digests, the root's first and the leaves' last.
    fn levels(&self) -> Vec<Vec<u128>> {
        let mut levels = vec![self.leaves.iter().map(Leaf::digest).collect::<Vec<_>>()];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|pair| inner_digest(pair[0], pair[1]))
                .collect();
            levels.push(above);
        }
        levels.reverse();
        assert_eq!(levels.len() as u32, self.depth + 1);
        levels
    }

    /// The root digest.
    pub fn root(&self) -> u128 {
        self.levels()[0][0]
    }
}

/// The ranges of the leaves whose digests differ between `a` and `b`, in token order. Both
/// trees must cover the same range at the same depth.
pub fn diff(a: &MerkleTree, b: &MerkleTree) -> Vec<(i64, i64)> {
    assert_eq!(a.range, b.range, "trees over different ranges");
    assert_eq!(a.depth, b.depth, "trees of different depths");
    let (levels_a, levels_b) = (a.levels(), b.levels());
    let leaf_level = a.depth as usize;

    // Depth first from the root, left child first, skipping subtrees whose digests agree.
    let mut mismatches = Vec::new();
    let mut stack = vec![(0usize, 0usize)];
    while let Some((level, index)) = stack.pop() {
        if levels_a[level][index] == levels_b[level][index] {
            continue;
        }
        if level == leaf_level {
            let range = a.leaf_range(index);
            mismatches.push((range.left, range.right));
            continue;
        }
        stack.push((level + 1, 2 * index + 1));
        stack.push((level + 1, 2 * index));
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(message_id: u64, write_us: i64, content: Option<&str>) -> Row {
        Row {
            key: RowKey {
                channel_id: 7,
                bucket: 1,
                message_id,
            },
            cell: Cell {
                write_us,
                value: content.map(|content| StoredMessage {
                    channel_id: 7,
                    message_id,
                    guild_id: 3,
                    author_id: 4,
                    content: content.into(),
                    ..Default::default()
                }),
            },
        }
    }

    /// Rows with tokens spread over the ring (a stand-in for Murmur3 tokens).
    fn rows(count: u64) -> Vec<(i64, Row)> {
        (0..count)
            .map(|i| {
                let token = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) as i64).max(i64::MIN + 1);
                (token, row(i, 1_000 + i as i64, Some("hello")))
            })
            .collect()
    }

    fn tree(depth: u32, rows: &[(i64, Row)]) -> MerkleTree {
        MerkleTree::from_rows(TokenRange::FULL, depth, rows.iter().map(|(t, r)| (*t, r)))
    }

    #[test]
    fn equal_sets_give_equal_roots_whatever_the_insertion_order() {
        let forward = rows(500);
        let mut backward = forward.clone();
        backward.reverse();
        let (a, b) = (tree(10, &forward), tree(10, &backward));
        assert_eq!(a.root(), b.root());
        assert_eq!(diff(&a, &b), vec![]);
        assert_eq!(a.row_count(), 500);
        assert_ne!(a.root(), tree(10, &[]).root(), "rows change the root");
    }

    #[test]
    fn one_differing_row_is_exactly_the_leaf_range_holding_its_token() {
        let mine = rows(500);
        let mut theirs = mine.clone();
        let (token, changed) = &mut theirs[123];
        changed.cell.write_us += 1;
        let token = *token;

        let (a, b) = (tree(12, &mine), tree(12, &theirs));
        assert_ne!(a.root(), b.root());
        let expected = a.leaf_range(a.leaf_of(token));
        assert_eq!(diff(&a, &b), vec![(expected.left, expected.right)]);
        assert!(expected.contains(token));
    }

    #[test]
    fn a_row_missing_on_one_side_is_found() {
        let mine = rows(300);
        let theirs: Vec<_> = mine
            .iter()
            .filter(|(_, r)| r.key.message_id != 42)
            .cloned()
            .collect();
        let (a, b) = (tree(10, &mine), tree(10, &theirs));
        let expected = a.leaf_range(a.leaf_of(mine[42].0));
        assert_eq!(diff(&a, &b), vec![(expected.left, expected.right)]);
    }

    #[test]
    fn a_tombstone_and_a_live_cell_at_the_same_timestamp_differ() {
        let live = [(5, row(1, 100, Some("hi")))];
        let tombstone = [(5, row(1, 100, None))];
        let (a, b) = (tree(4, &live), tree(4, &tombstone));
        assert_ne!(row_hash(&live[0].1), row_hash(&tombstone[0].1));
        assert_eq!(diff(&a, &b).len(), 1);
    }

    #[test]
    fn the_edge_tokens_fall_in_the_first_and_last_leaves() {
        let empty = tree(10, &[]);
        assert_eq!(empty.leaf_of(i64::MIN + 1), 0);
        assert_eq!(empty.leaf_of(i64::MAX), empty.leaf_count() - 1);
        assert_eq!(empty.leaf_range(0).left, i64::MIN);
        assert_eq!(empty.leaf_range(empty.leaf_count() - 1).right, i64::MAX);

        let edges = [
            (i64::MIN + 1, row(1, 1, Some("first"))),
            (i64::MAX, row(2, 1, Some("last"))),
        ];
        let with_edges = tree(10, &edges);
        let first = empty.leaf_range(0);
        let last = empty.leaf_range(empty.leaf_count() - 1);
        let expected = vec![(first.left, first.right), (last.left, last.right)];
        assert_eq!(diff(&empty, &with_edges), expected);
    }

    #[test]
    fn leaves_tile_the_range_and_agree_with_leaf_of() {
        let ranges = [
            TokenRange::FULL,
            TokenRange::new(-1_000, 1_000),
            TokenRange::new(1_000, -1_000),
            TokenRange::new(i64::MAX - 10, i64::MIN + 10),
            TokenRange::new(0, 0),
        ];
        for range in ranges {
            let tree = MerkleTree::new(range, 6);
            assert_eq!(tree.leaf_range(0).left, range.left);
            assert_eq!(tree.leaf_range(tree.leaf_count() - 1).right, range.right);
            for i in 1..tree.leaf_count() {
                assert_eq!(tree.leaf_range(i - 1).right, tree.leaf_range(i).left);
            }
            let probes = [
                i64::MIN + 1,
                -1_001,
                -1_000,
                -999,
                -1,
                0,
                1,
                999,
                1_000,
                i64::MAX,
            ];
            for token in probes.into_iter().filter(|t| range.contains(*t)) {
                let leaf = tree.leaf_range(tree.leaf_of(token));
                assert!(leaf.contains(token), "{token} in {leaf:?} of {range:?}");
            }
        }
    }

    #[test]
    fn a_wrapping_range_holds_both_ends_of_the_ring_and_not_the_middle() {
        let range = TokenRange::new(1_000, -1_000);
        assert!(range.wraps());
        assert!(range.contains(i64::MAX));
        assert!(range.contains(i64::MIN + 1));
        assert!(range.contains(-1_000));
        assert!(!range.contains(1_000));
        assert!(!range.contains(0));
        assert!(!range.contains(i64::MIN), "i64::MIN is never a token");
        assert_eq!(range.token_count(), u128::from(u64::MAX) - 2_000);

        let edges = [(i64::MAX, row(1, 1, None)), (i64::MIN + 1, row(2, 1, None))];
        let a = MerkleTree::new(range, 1);
        let b = MerkleTree::from_rows(range, 1, edges.iter().map(|(t, r)| (*t, r)));
        // Two leaves of (2^64 - 2001) tokens between them: the first ends at offset
        // floor((2^64 - 2001) / 2) = 2^63 - 1001, which is token 1000 + 2^63 - 1001 =
        // i64::MAX. So i64::MAX closes the first leaf and the second, (i64::MAX, -1000],
        // starts at i64::MIN + 1: the wrap is exactly the leaf boundary.
        let (first, second) = (a.leaf_range(0), a.leaf_range(1));
        assert_eq!(first, TokenRange::new(1_000, i64::MAX));
        assert_eq!(second, TokenRange::new(i64::MAX, -1_000));
        assert!(second.wraps());
        let expected = vec![(1_000, i64::MAX), (i64::MAX, -1_000)];
        assert_eq!(diff(&a, &b), expected);
    }

    #[test]
    fn the_whole_ring_as_t_t_holds_every_token() {
        let range = TokenRange::new(i64::MIN, i64::MIN);
        assert_eq!(range.token_count(), u128::from(u64::MAX));
        assert!(range.contains(i64::MIN + 1) && range.contains(i64::MAX) && range.contains(0));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_token_outside_the_range_is_a_caller_bug() {
        let mut tree = MerkleTree::new(TokenRange::new(0, 100), 3);
        tree.insert(101, &row(1, 1, None));
    }

    #[test]
    fn a_tree_survives_the_rpc_encoding() {
        let a = tree(8, &rows(50));
        let bytes = serde_json::to_vec(&a).unwrap();
        let decoded: MerkleTree = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded.root(), a.root());
        assert_eq!(decoded, a);
    }

    #[test]
    fn row_hashes_are_stable_across_builds() {
        // Pinned so a change to the encoding (which would make mixed-version replicas
        // disagree on every range) is a deliberate one.
        let hash = row_hash(&row(1, 100, Some("hi")));
        assert_eq!(hash, row_hash(&row(1, 100, Some("hi"))));
        assert_eq!(format!("{hash:032x}"), PINNED_ROW_HASH);
    }

    const PINNED_ROW_HASH: &str = "37046a98019578d7ec21616a3653582c";
}
