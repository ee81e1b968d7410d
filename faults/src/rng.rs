//! A small seeded PRNG (SplitMix64), so drawing a schedule needs neither madsim nor the OS.
//!
//! SplitMix64 passes the usual statistical batteries for this use and has a 64-bit state, which
//! makes deriving independent sub-seeds (one per fault) a single call to [`mix`].
//! Not modelled: cryptographic quality, which nothing here needs.

/// The golden-ratio increment SplitMix64 adds per draw.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A deterministic 64-bit generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// The SplitMix64 finalizer: a bijective scramble of 64 bits.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A sub-seed for item `index` of stream `stream` under `seed`: items drawn from distinct
/// sub-seeds do not depend on each other, so removing one leaves the others unchanged.
pub fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let a = finalize(seed.wrapping_add(GAMMA));
    let b = finalize(a ^ stream.wrapping_mul(GAMMA).wrapping_add(1));
    finalize(b ^ index.wrapping_mul(GAMMA).wrapping_add(2))
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        finalize(self.state)
    }

    /// Uniform in `low..=high` (`low` if the range is empty). The modulo bias is below 2^-32
    /// for the ranges used here.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low;
        match span.checked_add(1) {
            Some(size) => low + self.next_u64() % size,
            None => self.next_u64(),
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen element, `None` if `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let last = items.len() as u64 - 1;
        items.get(self.range(0, last) as usize)
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_stream() {
        let a: Vec<u64> = (0..8)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(SplitMix64::new(42), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(SplitMix64::new(43).next_u64(), a[0]);
    }

    #[test]
    fn ranges_stay_inside_their_bounds() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..1_000 {
            let x = rng.range(3, 9);
            assert!((3..=9).contains(&x));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.range(5, 5), 5);
        assert_eq!(rng.range(5, 1), 5);
    }

    #[test]
    fn sub_seeds_differ_by_stream_and_index() {
        assert_ne!(mix(1, 0, 0), mix(1, 0, 1));
        assert_ne!(mix(1, 0, 0), mix(1, 1, 0));
        assert_ne!(mix(1, 0, 0), mix(2, 0, 0));
        assert_eq!(mix(1, 2, 3), mix(1, 2, 3));
    }
}
