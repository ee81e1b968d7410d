//! Snowflake ids laid out as Discord lays them out.
//!
//! Bits 63–22 hold milliseconds since the Discord epoch (2015-01-01T00:00:00Z), bits 21–17 the
//! worker, bits 16–12 the process and bits 11–0 a per-millisecond sequence. A generator never
//! goes backwards: if its node's clock steps back it keeps using the last millisecond it issued,
//! and when a millisecond's 4096 sequence numbers run out it borrows the next millisecond. So
//! the ids of one generator strictly increase whatever the clock does.
//!
//! Not modelled: uniqueness across generators that share a worker and process id (the caller
//! assigns distinct ones).

use crate::env::clock::NodeClock;

/// 2015-01-01T00:00:00Z in ms since the Unix epoch.
pub const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
const SEQUENCE_BITS: u32 = 12;
const PROCESS_SHIFT: u32 = 12;
const WORKER_SHIFT: u32 = 17;
const TIMESTAMP_SHIFT: u32 = 22;
const SEQUENCE_MAX: u64 = (1 << SEQUENCE_BITS) - 1;

/// The ms since the Unix epoch encoded in a snowflake.
pub fn timestamp_ms(id: u64) -> i64 {
    i64::try_from(id >> TIMESTAMP_SHIFT).unwrap_or(i64::MAX) + DISCORD_EPOCH_MS
}

/// The smallest snowflake at Unix time `unix_ms` (useful as a `before`/`after` bound).
pub fn from_timestamp_ms(unix_ms: i64) -> u64 {
    let since_epoch = u64::try_from(unix_ms - DISCORD_EPOCH_MS).unwrap_or(0);
    since_epoch << TIMESTAMP_SHIFT
}

/// Issues strictly increasing snowflakes for one worker/process pair.
#[derive(Debug)]
pub struct SnowflakeGenerator {
    clock: NodeClock,
    worker_id: u64,
    process_id: u64,
    last_ms: u64,
    sequence: u64,
}

impl SnowflakeGenerator {
    /// A generator for `worker_id` and `process_id` (each below 32), reading `clock`.
    pub fn new(clock: NodeClock, worker_id: u8, process_id: u8) -> Self {
        assert!(worker_id < 32, "worker id {worker_id} does not fit 5 bits");
        assert!(
            process_id < 32,
            "process id {process_id} does not fit 5 bits"
        );
        Self {
            clock,
            worker_id: u64::from(worker_id),
            process_id: u64::from(process_id),
            last_ms: 0,
            sequence: 0,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> u64 {
        let now_ms = u64::try_from(self.clock.now_ms() - DISCORD_EPOCH_MS).unwrap_or(0);
        self.next_id_at(now_ms)
    }

    /// Makes every later id greater than `id`, whoever minted it: the generator moves to
    /// `id`'s millisecond with its sequence used up, so the next id is at least one ms later.
    /// Does nothing if the generator is already past that millisecond.
    pub fn advance_past(&mut self, id: u64) {
        let id_ms = id >> TIMESTAMP_SHIFT;
        if id_ms >= self.last_ms {
            self.last_ms = id_ms;
            self.sequence = SEQUENCE_MAX;
        }
    }

    fn next_id_at(&mut self, now_ms: u64) -> u64 {
        // 1. Never go back in time: a clock step back reuses the last millisecond.
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.sequence = 0;
        } else if self.sequence == SEQUENCE_MAX {
            // 2. The millisecond is used up: borrow the next one.
            self.last_ms += 1;
            self.sequence = 0;
        } else {
            self.sequence += 1;
        }

        // 3. Compose.
        let id = (self.last_ms << TIMESTAMP_SHIFT)
            | (self.worker_id << WORKER_SHIFT)
            | (self.process_id << PROCESS_SHIFT)
            | self.sequence;
        debug_assert!(self.sequence <= SEQUENCE_MAX);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_discords_documented_example() {
        // Discord's reference: 175928847299117063 was made at 2016-04-30 11:18:25.796 UTC,
        // worker 1, process 0, increment 7.
        let id: u64 = 175_928_847_299_117_063;
        assert_eq!(timestamp_ms(id), 1_462_015_105_796);
        assert_eq!((id >> WORKER_SHIFT) & 0x1f, 1);
        assert_eq!((id >> PROCESS_SHIFT) & 0x1f, 0);
        assert_eq!(id & SEQUENCE_MAX, 7);
    }

    #[test]
    fn composes_fields_in_their_bits() {
        let mut gen = SnowflakeGenerator::new(NodeClock::new(), 1, 0);
        gen.last_ms = 0;
        let id = gen.next_id_at(41_944_705_796);
        assert_eq!(id, 175_928_847_299_117_056);
    }

    #[test]
    fn ids_increase_when_the_clock_steps_back() {
        let mut gen = SnowflakeGenerator::new(NodeClock::new(), 3, 4);
        let a = gen.next_id_at(1_000);
        let b = gen.next_id_at(900);
        let c = gen.next_id_at(1_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(timestamp_ms(b), timestamp_ms(a));
    }

    #[test]
    fn a_full_millisecond_borrows_the_next() {
        let mut gen = SnowflakeGenerator::new(NodeClock::new(), 0, 0);
        let mut last = gen.next_id_at(50);
        for _ in 0..SEQUENCE_MAX + 10 {
            let id = gen.next_id_at(50);
            assert!(id > last);
            last = id;
        }
        assert_eq!(last >> TIMESTAMP_SHIFT, 51);
    }

    #[test]
    fn advancing_past_another_generators_id_keeps_ids_above_it() {
        // Another worker at ms 5_000 with sequence 9: (5_000 << 22) | (31 << 17) | 9.
        let foreign = (5_000 << TIMESTAMP_SHIFT) | (31 << WORKER_SHIFT) | 9;
        let mut gen = SnowflakeGenerator::new(NodeClock::new(), 1, 0);
        gen.advance_past(foreign);
        // Our clock says ms 4_000 (behind): the next id borrows ms 5_001, sequence 0.
        let id = gen.next_id_at(4_000);
        assert_eq!(id, (5_001 << TIMESTAMP_SHIFT) | (1 << WORKER_SHIFT));
        assert!(id > foreign);
        // An older id changes nothing.
        gen.advance_past(1 << TIMESTAMP_SHIFT);
        assert_eq!(gen.next_id_at(4_000), id + 1);
    }

    #[test]
    fn bounds_round_trip() {
        let id = from_timestamp_ms(1_462_015_105_796);
        assert_eq!(timestamp_ms(id), 1_462_015_105_796);
        assert_eq!(from_timestamp_ms(0), 0);
    }
}
