//! Every node counts the requests it serves, and the counts add up to what the clients did.
//!
//! `smoke` with seed 42 and no faults: 20 users send and read through two API nodes. With
//! three ring nodes, replication factor 3 and nothing down, every message row a guild node
//! writes is coordinated once, at QUORUM, and applied on each of the three replicas; the only
//! rows written are the messages, so each ring node applies exactly as many replica writes as
//! sends were acknowledged. Each client operation is one HTTP request to one API node, each
//! history read one request to a data node, each send one request to a guild node, and each
//! gateway connection one upgrade.
#![cfg(madsim)]

use chat_reports::history::{OpKind, Outcome};
use chat_sim::scenario::Scenario;

#[test]
fn a_run_without_faults_counts_every_request_where_the_clients_caused_it() {
    let mut scenario = Scenario::load("smoke").expect("smoke").resolve(42);
    scenario.schedule = chat_faults::Schedule::default();
    let output = chat_sim::runner::run(42, &scenario);
    let history = &output.history;
    let load = &output.node_load;
    let kind =
        |node: &str, kind: &str| -> u64 { load[node].by_kind.get(kind).copied().unwrap_or(0) };

    // 1. What the clients did: every operation answered, none lost.
    let sends = history
        .ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Send { .. }))
        .count() as u64;
    let reads = history.ops.len() as u64 - sends;
    assert!(history
        .ops
        .iter()
        .all(|op| !matches!(op.outcome, Outcome::Failed { .. } | Outcome::TimedOut)));
    assert!(sends > 100 && reads > 100, "{sends} sends, {reads} reads");

    // 2. Every node of every role has its counter.
    let names: Vec<&str> = load.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "api-1", "api-2", "data-1", "data-2", "gateway", "guild-1", "guild-2", "guild-3",
            "ring-1", "ring-2", "ring-3"
        ]
    );

    // 3. Ring: one coordinated write per send, applied on all three replicas.
    let coordinated: u64 = ["ring-1", "ring-2", "ring-3"]
        .iter()
        .map(|node| kind(node, "coordinate_write"))
        .sum();
    assert_eq!(coordinated, sends);
    for node in ["ring-1", "ring-2", "ring-3"] {
        assert_eq!(kind(node, "replica_write"), sends, "{node}");
    }

    // 4. API, data, guild and gateway nodes: one request per client operation.
    assert_eq!(load["api-1"].total() + load["api-2"].total(), sends + reads);
    assert_eq!(
        kind("api-1", "post") + kind("api-2", "post"),
        sends,
        "sends are POSTs"
    );
    assert_eq!(
        kind("data-1", "history_read") + kind("data-2", "history_read"),
        reads
    );
    let created: u64 = ["guild-1", "guild-2", "guild-3"]
        .iter()
        .map(|node| kind(node, "create_message"))
        .sum();
    assert_eq!(created, sends);
    assert_eq!(
        kind("gateway", "session_upgrade"),
        history.sessions.len() as u64
    );

    // 5. The per-second series add up to the totals, and the report carries them.
    for (node, counts) in load {
        assert_eq!(
            counts.per_second.iter().sum::<u64>(),
            counts.total(),
            "{node}"
        );
        assert!(counts.per_second.len() <= 61, "{node}: within the 60 s run");
    }
    let report = output.report(42, &scenario, "replay".into());
    assert_eq!(report.node_load["ring-2"].total, load["ring-2"].total());
    assert_eq!(
        report.node_load["ring-2"].per_second,
        load["ring-2"].per_second
    );
}
