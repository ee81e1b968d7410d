//! Operational metrics in the Prometheus text format: what an operator graphs and alerts on.
//!
//! One registry per process ([`registry`]), which the roles of that process add to and which
//! `GET /metrics` renders ([`render`]). Rates (messages or deliveries per second) come from
//! the counters, as Prometheus computes them with `rate()`. In the simulator every simulated
//! node shares its process's registry, so the figures there are cluster-wide sums; the
//! simulator's verdicts never read them (they come from client histories).
//!
//! Not modelled: per-node labels within one process, and exemplars.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Every metric this process keeps.
pub struct Metrics {
    /// Gateway sessions held: live, or waiting for a resume.
    pub sessions: Gauge,
    /// Messages created (stored and queued for delivery).
    pub messages_created: Counter,
    /// Sends an API node acknowledged to a REST client (200 with the message).
    pub rest_messages_acknowledged: Counter,
    /// Dispatches written to gateway sessions.
    pub deliveries: Counter,
    /// Time to create a message at its guild process: id, QUORUM store, fan-out queue.
    pub message_create_seconds: Histogram,
    /// Time a coordinator takes to answer a write at the requested level.
    pub store_write_seconds: Histogram,
    /// Time a coordinator takes to answer a read at the requested level.
    pub store_read_seconds: Histogram,
    /// Hints stored for replicas that missed writes and not yet handed back.
    pub hints_pending: Gauge,
    /// Rows and range deletions written back to stale replicas by read repair.
    pub read_repairs: Counter,
    registry: Registry,
}

fn latency_histogram() -> Histogram {
    // 100 µs doubling to about 26 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("chat");
        let metrics = Metrics {
            sessions: Gauge::default(),
            messages_created: Counter::default(),
            rest_messages_acknowledged: Counter::default(),
            deliveries: Counter::default(),
            message_create_seconds: latency_histogram(),
            store_write_seconds: latency_histogram(),
            store_read_seconds: latency_histogram(),
            hints_pending: Gauge::default(),
            read_repairs: Counter::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "gateway_sessions",
            "Live gateway sessions",
            m.sessions.clone(),
        );
        registry.register(
            "messages_created",
            "Messages stored and queued for delivery",
            m.messages_created.clone(),
        );
        registry.register(
            "rest_messages_acknowledged",
            "Sends an API node acknowledged to a REST client",
            m.rest_messages_acknowledged.clone(),
        );
        registry.register(
            "deliveries",
            "Dispatches written to gateway sessions",
            m.deliveries.clone(),
        );
        registry.register(
            "message_create_seconds",
            "Time to create a message at its guild process",
            m.message_create_seconds.clone(),
        );
        registry.register(
            "store_write_seconds",
            "Time a ring coordinator takes to answer a write",
            m.store_write_seconds.clone(),
        );
        registry.register(
            "store_read_seconds",
            "Time a ring coordinator takes to answer a read",
            m.store_read_seconds.clone(),
        );
        registry.register(
            "ring_hints_pending",
            "Hints held for replicas that missed writes",
            m.hints_pending.clone(),
        );
        registry.register(
            "ring_read_repairs",
            "Rows and range deletions written back by read repair",
            m.read_repairs.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

/// This process's metrics.
pub fn registry() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The Prometheus text exposition of this process's metrics.
pub fn render() -> String {
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &registry().registry) {
        tracing::warn!(%error, "metrics_encode_failed");
    }
    text
}

/// The content type Prometheus expects for [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A router answering `GET /metrics` with [`render`]'s text.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render())
        }),
    )
}

/// Serves [`router`] on `listener`.
pub async fn serve(listener: tokio::net::TcpListener) {
    crate::net::serve_http(listener, router()).await;
}

/// Seconds since `start`, for the histograms.
pub fn seconds_since(start: tokio::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_prefix_and_counts() {
        let metrics = registry();
        let before = metrics.read_repairs.get();
        metrics.read_repairs.inc_by(3);
        metrics.store_write_seconds.observe(0.000_15);
        let text = render();
        for name in [
            "chat_gateway_sessions",
            "chat_messages_created_total",
            "chat_rest_messages_acknowledged_total",
            "chat_deliveries_total",
            "chat_message_create_seconds_bucket",
            "chat_store_write_seconds_count",
            "chat_store_read_seconds_sum",
            "chat_ring_hints_pending",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        let repairs = format!("chat_ring_read_repairs_total {}", before + 3);
        assert!(text.contains(&repairs), "{text}");
        // 150 µs falls in the bucket up to 200 µs, not in the one up to 100 µs.
        assert!(
            text.contains("chat_store_write_seconds_bucket{le=\"0.0002\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
