//! The simulator harness: scenarios, simulated users, the recorder and (under `--cfg madsim`)
//! the runner that builds a cluster on madsim hosts, applies faults and collects the history.

pub mod client;
#[cfg(madsim)]
pub mod nemesis;
pub mod recorder;
#[cfg(madsim)]
pub mod ringsim;
#[cfg(madsim)]
pub mod runner;
pub mod scenario;
pub mod trace;
pub mod workload;
