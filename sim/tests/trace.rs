//! Trace replay through the `chatsim` binary: the fixture excerpt of a real
//! DiscordChatExporter export (two channels of one guild) replayed as the workload, with its
//! replies, edits and reactions.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::process::Command;

/// What the fixture holds, counted from its JSON here rather than by the trace reader:
/// replies to a message of the same file, edited messages, and reactions (the counts).
fn fixture_counts(dir: &std::path::Path) -> (usize, usize, u64) {
    let (mut replies, mut edits, mut reactions) = (0, 0, 0);
    for entry in std::fs::read_dir(dir).expect("the fixture folder") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("a file");
        let export: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let messages = export["messages"].as_array().expect("messages");
        let ids: BTreeSet<&str> = messages.iter().filter_map(|m| m["id"].as_str()).collect();
        for message in messages {
            let target = message["reference"]["messageId"].as_str();
            replies += usize::from(target.is_some_and(|t| ids.contains(t)));
            edits += usize::from(message["timestampEdited"].is_string());
            for reaction in message["reactions"].as_array().into_iter().flatten() {
                reactions += reaction["count"].as_u64().expect("a count");
            }
        }
    }
    (replies, edits, reactions)
}

#[test]
fn a_real_export_replays_with_its_authors_channels_messages_replies_edits_and_reactions() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/trace");
    let output = Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args([
            "run",
            "--seed",
            "7",
            "--scenario",
            "trace",
            "--trace",
            fixture,
        ])
        .arg("--out")
        .arg(tmp.path())
        .output()
        .expect("chatsim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");

    // 60 messages (30 per channel) by 16 authors in 2 channels, as the fixture holds, with
    // 20 replies, 2 edits and 25 reactions.
    let (replies, edits, reactions) = fixture_counts(std::path::Path::new(fixture));
    assert_eq!((replies, edits, reactions), (20, 2, 25));
    assert!(
        stdout.contains("chatsim trace 60 messages by 16 authors in 2 channels"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chatsim trace 20 replies, 2 edits, 25 reactions"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(tmp.path().join("report.json")).expect("report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");

    // Every trace message was sent once and acknowledged, and delivered to the sessions of
    // its guild (each author is a member, so at least once per message); every edit and
    // reaction was made.
    assert_eq!(report["operations"]["sent"], 60, "{}", report["operations"]);
    assert_eq!(report["operations"]["acked"], 60);
    assert!(report["deliveries"].as_u64().unwrap() >= 60);
    assert_eq!(report["edits"]["sent"], edits as u64, "{}", report["edits"]);
    assert_eq!(report["edits"]["acked"], edits as u64);
    assert_eq!(
        report["reactions"]["sent"], reactions,
        "{}",
        report["reactions"]
    );
    assert_eq!(report["reactions"]["acked"], reactions);
    assert_eq!(report["verdict"], "pass");
    for file in ["summary.md", "latency.svg", "availability.png", "load.svg"] {
        assert!(tmp.path().join(file).exists(), "{file} written");
    }

    // The replies, from the history: each names a message the replay had acknowledged.
    let trace = std::fs::read_to_string(tmp.path().join("trace.jsonl")).expect("trace");
    let ops: Vec<serde_json::Value> = trace
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .filter(|line| line["record"] == "op")
        .collect();
    let acked: BTreeSet<u64> = ops
        .iter()
        .filter_map(|op| op["outcome"]["message_id"].as_u64())
        .collect();
    let reply_targets: Vec<u64> = ops
        .iter()
        .filter_map(|op| op["kind"]["reply_to"].as_u64())
        .collect();
    assert_eq!(reply_targets.len(), replies);
    assert!(reply_targets.iter().all(|id| acked.contains(id)));
    let dispatched = trace.matches("\"event\":\"MESSAGE_REACTION_ADD\"").count();
    assert!(dispatched > 0, "reactions were dispatched");
}
