//! Cassandra's Murmur3Partitioner: how a partition key becomes a token on the ring.
//!
//! Modelled: the token is the first 64-bit half (`h1`) of MurmurHash3 x64_128 with seed 0 over
//! the serialized partition key, including Cassandra's departure from the canonical hash (tail
//! bytes are sign-extended before they are mixed in), and its normalization (`i64::MIN` is the
//! ring minimum and never a key's token: a hash equal to it becomes `i64::MAX`; an empty key is
//! `i64::MIN`). A single-column key is hashed over its raw bytes, a composite key over each
//! component framed as `u16 big-endian length ‖ bytes ‖ 0x00`, which is what Cassandra's
//! composite type writes and what drivers hash for token-aware routing.
//!
//! Guaranteed: for the same key bytes, the same token as Cassandra and the drivers compute
//! (checked against the driver's published vectors and, for inputs longer than one 16-byte
//! block, against the canonical hash where the two agree).
//!
//! Not modelled: other partitioners (Random, ByteOrdered), the second half of the hash, and
//! CQL serialization of types other than the fixed-width integers our `messages` key uses.

/// A position on the ring; Murmur3Partitioner tokens are signed 64-bit.
pub type Token = i64;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;
const BLOCK_BYTES: usize = 16;

/// The token Cassandra's Murmur3Partitioner gives a partition key serialized as `key`.
pub fn murmur3_token(key: &[u8]) -> Token {
    if key.is_empty() {
        return Token::MIN;
    }
    normalize(murmur3_x64_128_h1(key))
}

/// Keeps `i64::MIN` for the ring minimum: a key hashing to it is moved to `i64::MAX`.
fn normalize(hash: i64) -> Token {
    if hash == Token::MIN {
        Token::MAX
    } else {
        hash
    }
}

/// The bytes a partition key is hashed over: a lone component as it is, several components
/// each framed as `u16 big-endian length ‖ bytes ‖ 0x00`.
///
/// # Panics
///
/// If a component of a composite key is longer than `u16::MAX` bytes; Cassandra refuses such
/// keys too, so reaching this is a programming error.
pub fn partition_key_bytes(components: &[&[u8]]) -> Vec<u8> {
    if let [only] = components {
        return only.to_vec();
    }
    let framed_len: usize = components.iter().map(|c| c.len() + 3).sum();
    let mut bytes = Vec::with_capacity(framed_len);
    for component in components {
        let Ok(len) = u16::try_from(component.len()) else {
            panic!(
                "partition key component of {} bytes exceeds the u16 length prefix",
                component.len()
            );
        };
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(component);
        bytes.push(0x00);
    }
    assert_eq!(bytes.len(), framed_len);
    bytes
}

/// The token of a `messages` partition, whose key is `(channel_id bigint, bucket int)`.
///
/// CQL serializes `bigint` as 8 bytes and `int` as 4 bytes, both big-endian. The `u64` and
/// `u32` here are reinterpreted bit for bit, so an id above `i64::MAX` hashes as the negative
/// `bigint` Cassandra would store.
pub fn message_partition_token(channel_id: u64, bucket: u32) -> Token {
    let channel = channel_id.to_be_bytes();
    let bucket = bucket.to_be_bytes();
    murmur3_token(&partition_key_bytes(&[&channel, &bucket]))
}

/// `h1` of MurmurHash3 x64_128 with seed 0, with tail bytes sign-extended as Cassandra does.
fn murmur3_x64_128_h1(key: &[u8]) -> i64 {
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;

    // 1. Whole 16-byte blocks, read as two little-endian words.
    let mut blocks = key.chunks_exact(BLOCK_BYTES);
    for block in &mut blocks {
        let (low, high) = block.split_at(8);
        let k1 = u64::from_le_bytes(word(low));
        let k2 = u64::from_le_bytes(word(high));

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2);
        h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);

        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1);
        h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    // 2. The tail of up to 15 bytes. Cassandra widens each byte as a signed Java `byte`, so a
    //    byte of 0x80 or more sets every bit above it; canonical MurmurHash3 zero-extends.
    let tail = blocks.remainder();
    let (tail_low, tail_high) = tail.split_at(tail.len().min(8));
    if !tail_high.is_empty() {
        h2 ^= mix_k2(sign_extended_word(tail_high));
    }
    if !tail_low.is_empty() {
        h1 ^= mix_k1(sign_extended_word(tail_low));
    }

    // 3. Finalization.
    let len = key.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h1 as i64
}

/// Eight bytes as an array; `bytes` is exactly eight long.
fn word(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

/// Up to eight tail bytes folded into a word, byte `i` at bit `8 * i`, each sign-extended.
fn sign_extended_word(bytes: &[u8]) -> u64 {
    debug_assert!(bytes.len() <= 8);
    bytes.iter().enumerate().fold(0u64, |acc, (i, &byte)| {
        let widened = i64::from(byte as i8) as u64;
        acc ^ (widened << (8 * i))
    })
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_test_vectors() {
        assert_eq!(murmur3_token(b"test"), -6017608668500074083);
        assert_eq!(murmur3_token(b"xd"), 4507812186440344727);
        assert_eq!(murmur3_token(b"primary_key"), -1632642444691073360);
        assert_eq!(murmur3_token("kremówki".as_bytes()), 4354931215268080151);
    }

    #[test]
    fn sign_extended_tail_departs_from_canonical_murmur3() {
        // "kremówki" has two tail bytes >= 0x80 (ó is c3 b3); canonical MurmurHash3 x64_128
        // (zero-extended tail) gives h1 = 5170069825885792609 for it, Cassandra does not.
        assert_ne!(murmur3_token("kremówki".as_bytes()), 5170069825885792609);
    }

    #[test]
    fn inputs_longer_than_a_block_match_canonical_murmur3_when_the_tail_is_below_0x80() {
        // The driver's vectors are all shorter than 16 bytes, so they never reach the block
        // loop. These values are canonical MurmurHash3 x64_128 h1 (seed 0); with every tail
        // byte below 0x80 sign extension changes nothing, so Cassandra's token is the same.
        assert_eq!(murmur3_token(b"0123456789abcdef"), 5467490433528156583);
        assert_eq!(
            murmur3_token(b"The quick brown fox jumps over the lazy dog"),
            -2068352364225029268
        );
        assert_eq!(message_partition_token(1, 2), -5927342534679261077);
        assert_eq!(message_partition_token(0, 0), -1803309391158144184);
        assert_eq!(
            message_partition_token(1234567890123456789, 1899),
            -6294205061766624619
        );
    }

    #[test]
    fn empty_key_is_the_ring_minimum() {
        assert_eq!(murmur3_token(b""), Token::MIN);
        assert_eq!(murmur3_token(&partition_key_bytes(&[b""])), Token::MIN);
    }

    #[test]
    fn a_hash_equal_to_the_ring_minimum_becomes_the_maximum() {
        // No key is known to hash to i64::MIN, so the rule is checked on its own.
        assert_eq!(normalize(i64::MIN), Token::MAX);
        assert_eq!(normalize(i64::MIN + 1), i64::MIN + 1);
        assert_eq!(normalize(i64::MAX), Token::MAX);
        assert_eq!(normalize(0), 0);
    }

    #[test]
    fn a_single_component_is_its_raw_bytes() {
        assert_eq!(partition_key_bytes(&[b"abc"]), b"abc".to_vec());
        assert_eq!(
            murmur3_token(&partition_key_bytes(&[b"test"])),
            murmur3_token(b"test")
        );
    }

    #[test]
    fn composite_encoding_worked_by_hand() {
        // Components [01 02] and [ff]:
        //   first:  length 2 as u16 BE = 00 02, then 01 02, then the 0x00 end byte;
        //   second: length 1 as u16 BE = 00 01, then ff,    then the 0x00 end byte.
        let bytes = partition_key_bytes(&[&[0x01, 0x02], &[0xff]]);
        assert_eq!(
            bytes,
            vec![0x00, 0x02, 0x01, 0x02, 0x00, 0x00, 0x01, 0xff, 0x00]
        );

        // An empty component still takes its length and end byte.
        let bytes = partition_key_bytes(&[b"", b"a"]);
        assert_eq!(bytes, vec![0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]);
    }

    #[test]
    fn message_partition_key_is_bigint_then_int() {
        // channel_id 1 as 8 bytes BE, bucket 2 as 4 bytes BE, each framed.
        let expected: Vec<u8> = [
            &[0x00, 0x08][..],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[0x00],
            &[0x00, 0x04],
            &[0, 0, 0, 2],
            &[0x00],
        ]
        .concat();
        let channel = 1u64.to_be_bytes();
        let bucket = 2u32.to_be_bytes();
        assert_eq!(partition_key_bytes(&[&channel, &bucket]), expected);
        assert_eq!(message_partition_token(1, 2), murmur3_token(&expected));
    }

    #[test]
    fn composite_tokens_differ_from_tokens_of_concatenated_bytes() {
        for channel_id in [0u64, 1, 42, 1 << 40, u64::MAX] {
            for bucket in [0u32, 1, 7, 1899, u32::MAX] {
                let concatenated =
                    [&channel_id.to_be_bytes()[..], &bucket.to_be_bytes()[..]].concat();
                assert_ne!(
                    message_partition_token(channel_id, bucket),
                    murmur3_token(&concatenated),
                    "channel {channel_id} bucket {bucket}"
                );
            }
        }
    }

    #[test]
    fn buckets_of_one_channel_scatter_over_the_ring() {
        let mut tokens: Vec<Token> = (0..64).map(|b| message_partition_token(7, b)).collect();
        let positive = tokens.iter().filter(|t| **t > 0).count();
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 64);
        assert!(
            (16..=48).contains(&positive),
            "{positive} of 64 tokens positive"
        );
    }
}
