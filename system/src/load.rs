//! Per-node load: how many requests one node served, by kind and per second.
//!
//! Whoever starts a node hands it a [`NodeLoad`] (the simulator keeps one per node, beside
//! its disk and clock, so the count outlives a crash); the node counts each request it
//! serves as it takes it, before doing the work, so a request that fails or times out
//! still counts. Seconds are measured on the runtime's clock (simulated time in the
//! simulator) from the moment the counter was made, which is why counting adds no task and
//! draws no randomness: a simulated run's trace is the same with or without it.
//!
//! What a request is, per role: a ring node counts the store operations it coordinates and
//! the replica reads and writes it applies (not gossip, Merkle trees or repair streams);
//! a guild node, every request from an API node or a peer; a data node, every history read;
//! an API node, every HTTP request; a gateway, every WebSocket upgrade and every batch of
//! guild events. Not modelled: bytes, or time spent serving.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A node's request counter; clones count into the same totals.
#[derive(Debug, Clone)]
pub struct NodeLoad {
    state: Arc<Mutex<LoadState>>,
}

#[derive(Debug)]
struct LoadState {
    start: Instant,
    by_kind: BTreeMap<&'static str, u64>,
    per_second: Vec<u64>,
}

/// What a [`NodeLoad`] counted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSnapshot {
    /// Requests served, by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Requests served in each second since the counter was made (index 0 is the first).
    pub per_second: Vec<u64>,
}

impl LoadSnapshot {
    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

impl NodeLoad {
    /// A counter whose seconds count from `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            state: Arc::new(Mutex::new(LoadState {
                start,
                by_kind: BTreeMap::new(),
                per_second: Vec::new(),
            })),
        }
    }

    /// A counter whose seconds count from now.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// Counts one request of `kind` served now.
    pub fn served(&self, kind: &'static str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let second = usize::try_from(state.start.elapsed().as_secs()).unwrap_or(usize::MAX);
        *state.by_kind.entry(kind).or_insert(0) += 1;
        if state.per_second.len() <= second {
            state.per_second.resize(second.saturating_add(1), 0);
        }
        state.per_second[second] += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LoadSnapshot {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        LoadSnapshot {
            by_kind: state
                .by_kind
                .iter()
                .map(|(kind, n)| ((*kind).to_string(), *n))
                .collect(),
            per_second: state.per_second.clone(),
        }
    }
}

impl Default for NodeLoad {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_count_by_kind_and_by_the_second_they_came_in() {
        let load = NodeLoad::new();
        let other_handle = load.clone();
        load.served("read");
        load.served("write");
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        other_handle.served("write");
        let snapshot = load.snapshot();
        assert_eq!(snapshot.by_kind["read"], 1);
        assert_eq!(snapshot.by_kind["write"], 2);
        assert_eq!(snapshot.total(), 3);
        assert_eq!(snapshot.per_second, vec![2, 0, 1]);
    }
}
