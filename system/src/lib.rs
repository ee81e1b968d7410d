//! The chat system: every role of a Discord-style cluster, written once against the `tokio`
//! name so that it runs on real tokio and, under `--cfg madsim`, inside the simulator.
//!
//! Roles: [`ring`] (the replicated message store), [`data`] (coalesced reads in front of it),
//! [`guild`] (per-guild ordering and fan-out, placed by [`hashring`]),
//! [`gateway`] (WebSocket sessions) and [`api`] (REST). [`cluster`] wires them to addresses;
//! [`env`] is the seam for per-node clocks and disks; [`store`] is message storage over the
//! ring or, in the real-runtime build, ScyllaDB / Cassandra.

pub mod api;
pub mod cluster;
pub mod data;
pub mod directory;
pub mod env;
pub mod gateway;
pub mod guild;
pub mod hashring;
pub mod ids;
pub mod load;
pub mod metrics;
pub mod model;
pub mod net;
pub mod ring;
pub mod rpc;
pub mod store;
