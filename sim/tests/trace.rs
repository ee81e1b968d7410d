//! Trace replay through the `chatsim` binary: the fixture excerpt of a real
//! DiscordChatExporter export (two channels of one guild) replayed as the workload.
#![cfg(madsim)]

use std::process::Command;

#[test]
fn a_real_export_replays_with_its_authors_channels_and_messages() {
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

    // 60 messages (30 per channel) by 16 authors in 2 channels, as the fixture holds.
    assert!(
        stdout.contains("chatsim trace 60 messages by 16 authors in 2 channels"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(tmp.path().join("report.json")).expect("report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");

    // Every trace message was sent once and acknowledged, and delivered to the sessions of
    // its guild (each author is a member, so at least once per message).
    assert_eq!(report["operations"]["sent"], 60, "{}", report["operations"]);
    assert_eq!(report["operations"]["acked"], 60);
    assert!(report["deliveries"].as_u64().unwrap() >= 60);
    assert_eq!(report["verdict"], "pass");
    for file in ["summary.md", "latency.svg", "availability.png", "load.svg"] {
        assert!(tmp.path().join(file).exists(), "{file} written");
    }
}
