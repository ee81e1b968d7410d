//! A coordinator's view of which replicas are up.
//!
//! The view decides, before anything is sent, whether a request can meet its consistency level
//! (Unavailable if not) and whether a replica gets a write or a hint. It is a local belief,
//! never gossiped: the failure detector and RPC outcomes feed it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// One coordinator's beliefs about its peers.
#[derive(Debug, Default)]
pub struct LivenessView {
    /// Peers believed down, with the node clock (ms) at which they were first believed down.
    down_since_ms: Mutex<BTreeMap<SocketAddr, i64>>,
}

impl LivenessView {
    /// A view in which every peer is up.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, i64>> {
        self.down_since_ms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `peer` is believed up.
    pub fn is_up(&self, peer: SocketAddr) -> bool {
        !self.lock().contains_key(&peer)
    }

    /// Believes `peer` down from `now_ms` (kept if it already was); returns whether it changed.
    pub fn mark_down(&self, peer: SocketAddr, now_ms: i64) -> bool {
        let mut down = self.lock();
        if down.contains_key(&peer) {
            return false;
        }
        down.insert(peer, now_ms);
        true
    }

    /// Believes `peer` up; returns whether it changed.
    pub fn mark_up(&self, peer: SocketAddr) -> bool {
        self.lock().remove(&peer).is_some()
    }

    /// The peers believed down.
    pub fn down(&self) -> Vec<SocketAddr> {
        self.lock().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_down_from_the_first_mark_until_marked_up() {
        let view = LivenessView::new();
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert!(view.is_up(peer));
        assert!(view.mark_down(peer, 5));
        assert!(!view.mark_down(peer, 9), "already down");
        assert!(!view.is_up(peer));
        assert_eq!(view.down(), vec![peer]);
        assert!(view.mark_up(peer));
        assert!(!view.mark_up(peer));
        assert!(view.is_up(peer));
    }
}
