//! The environment seam: what a node gets from its host that madsim does not model per node or
//! per link: a wall clock, a disk, and (in the simulator) the faults of its links.
//!
//! - [`clock::NodeClock`] is the node's wall clock: the runtime's time plus the node's own
//!   offset and drift. Under madsim the runtime's time is virtual, so a clock fault shifts
//!   exactly one node's idea of "now"; LWW cell timestamps and snowflake ids read it.
//! - [`disk::Disk`] is a small file API with explicit durability: bytes written are pending
//!   until `sync`. [`disk::RealDisk`] is files and fsync; [`disk::SimDisk`] keeps durable and
//!   pending bytes per node and drops the pending ones when the node crashes.
//!
//! - [`link`] (simulator only) holds latency, jitter and loss per link, which madsim models
//!   only for the whole network; every connection's reads go through it.
//!
//! Code under `system/` reads time and touches storage only through this module.

pub mod clock;
pub mod disk;
#[cfg(madsim)]
pub mod link;
