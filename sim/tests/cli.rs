//! The `chatsim` binary as a user runs it: determinism across processes, bad arguments, the
//! report contract, and the refusal of a build without the simulator.

use std::path::Path;
use std::process::{Command, Output};

fn chatsim(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args(args)
        .output();
    output.expect("the chatsim binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_seed_that_is_not_a_number_is_refused_by_name() {
    let output = chatsim(&["run", "--seed", "notanumber"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--seed"), "{text}");
    assert!(text.contains("notanumber"), "{text}");
}

#[test]
fn an_unknown_scenario_is_refused_with_the_known_ones() {
    let output = chatsim(&["run", "--seed", "1", "--scenario", "nosuch"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--scenario"), "{text}");
    assert!(
        text.contains("unknown scenario \"nosuch\"; known: smoke"),
        "{text}"
    );
}

#[cfg(not(madsim))]
#[test]
fn a_build_without_the_simulator_says_so_and_fails() {
    let output = chatsim(&["run", "--seed", "1"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("built without `--cfg madsim`"), "{text}");
    assert!(text.contains("cargo chatsim"), "{text}");
}

#[test]
fn sweep_merge_names_the_file_and_json_path_of_a_bad_shard() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("merged");
    let out = out.to_str().expect("utf-8");

    // 1. A file that is not there, and a directory without a sweep.json.
    let missing = tmp.path().join("nowhere.json");
    let output = chatsim(&[
        "sweep-merge",
        missing.to_str().expect("utf-8"),
        "--out",
        out,
    ]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("{}: cannot read it", missing.display())),
        "{text}"
    );
    let output = chatsim(&[
        "sweep-merge",
        tmp.path().to_str().expect("utf-8"),
        "--out",
        out,
    ]);
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "{}: cannot read it",
            tmp.path().join("sweep.json").display()
        )),
        "{text}"
    );

    // 2. A seed whose availability is a string.
    let bad = tmp.path().join("bad.json");
    let shard = r#"{"schema_version": 2, "scenario": "smoke", "seeds": [
        {"seed": 1, "exit_code": 0, "class": "pass", "availability": "high",
         "trace_hash": null, "time_compression": null, "failed_checks": [],
         "replay_command": "r"}],
        "classes": {"pass": 1}, "failed_checks": {}, "availability": {"count": 1,
        "min": 1.0, "p10": 1.0, "p50": 1.0, "p90": 1.0, "max": 1.0, "mean": 1.0},
        "exit_code": 0}"#;
    std::fs::write(&bad, shard).expect("write");
    let output = chatsim(&["sweep-merge", bad.to_str().expect("utf-8"), "--out", out]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "{}: at JSON path seeds[0].availability (line 2",
            bad.display()
        )),
        "{text}"
    );

    // 3. The same shard, fixed, merges on its own; nothing was written before.
    assert!(!Path::new(out).join("sweep.json").exists());
    std::fs::write(&bad, shard.replace("\"high\"", "1.0")).expect("write");
    let output = chatsim(&["sweep-merge", bad.to_str().expect("utf-8"), "--out", out]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout.contains("sweep smoke: 1 seeds; 1 pass"), "{stdout}");
    assert!(Path::new(out).join("sweep.json").exists());
}

#[cfg(madsim)]
fn run_to(seed: &str, dir: &Path) -> serde_json::Value {
    let out = dir.to_str().expect("utf-8 temp path");
    let output = chatsim(&["run", "--seed", seed, "--out", out]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        stderr(&output)
    );
    assert!(stdout.contains(&format!("seed {seed}")), "{stdout}");
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

#[cfg(madsim)]
#[test]
fn the_same_seed_in_two_processes_gives_the_same_trace_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let first = run_to("42", &tmp.path().join("a"));
    let second = run_to("42", &tmp.path().join("b"));
    let other = run_to("43", &tmp.path().join("c"));

    assert_eq!(first["trace_hash"], second["trace_hash"]);
    assert_ne!(first["trace_hash"], other["trace_hash"]);
    let trace = |dir: &str| std::fs::read(tmp.path().join(dir).join("trace.jsonl")).unwrap();
    assert!(
        trace("a") == trace("b"),
        "same-seed traces differ byte for byte"
    );
}

#[cfg(madsim)]
#[test]
fn the_report_keeps_its_contract() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let report = run_to("5", tmp.path());

    // The fields scripts and CI read, with their types.
    assert_eq!(report["schema_version"], 3);
    assert_eq!(report["seed"], 5);
    assert_eq!(report["scenario"], "smoke");
    let hash = report["trace_hash"]
        .as_str()
        .expect("trace_hash is a string");
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(report["sim_seconds"], 60.0);
    assert!(report["wall_seconds"].as_f64().is_some());
    assert_eq!(report["verdict"], "pass");
    for check in [
        "durability",
        "ordering",
        "sequence",
        "duplicates",
        "causality",
        "delivery",
        "sessions",
        "availability",
    ] {
        assert_eq!(report["checks"][check]["violations"], 0, "{check}");
        assert_eq!(report["checks"][check]["witnesses"], serde_json::json!([]));
    }
    // Per one-minute window: smoke's 60 s of operations fall in the first.
    let windows = report["availability_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["start_s"], 0.0);
    assert_eq!(report["check_config"]["window_ms"], 60_000);
    let ops = &report["operations"];
    assert!(ops["sent"].as_u64().unwrap() > 100, "{ops}");
    let counted = ["acked", "failed", "timed_out"].map(|k| ops[k].as_u64().unwrap());
    assert_eq!(counted.iter().sum::<u64>(), ops["sent"].as_u64().unwrap());
    assert!(report["deliveries"].as_u64().unwrap() > 0);
    assert!(report["availability"].as_f64().unwrap() <= 1.0);
    assert!(
        report["latency_ms"]["p50"].as_f64().unwrap()
            <= report["latency_ms"]["p99"].as_f64().unwrap()
    );
    assert_eq!(report["faults"].as_array().unwrap().len(), 2);
}

#[cfg(madsim)]
#[test]
fn an_out_path_that_cannot_be_a_directory_is_refused_before_running() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let output = chatsim(&["run", "--seed", "1", "--out", file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--out"), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "nothing ran"
    );
}

#[test]
fn a_schedule_file_with_a_bad_field_is_refused_naming_the_field_and_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("faults.toml");
    let text = "[[fault]]\nkind = \"crash\"\nnode = \"ring-1\"\nat_ms = 1000\n\n\
                [[fault]]\nkind = \"pause\"\nnode = \"api\"\nat_ms = 2000\nduraton_ms = 5\n";
    std::fs::write(&path, text).expect("write");
    let output = chatsim(&[
        "run",
        "--seed",
        "1",
        "--schedule",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--schedule"), "{text}");
    assert!(text.contains("line 10"), "{text}");
    assert!(text.contains("duraton_ms"), "{text}");
}

#[test]
fn a_quiet_period_that_faults_run_into_is_refused() {
    // smoke crashes ring-1 until 40 s; a 40 s quiet period before 50 s starts at 10 s.
    let output = chatsim(&["run", "--seed", "1", "--quiet-ms", "40000"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("fault 0 (crash at 20000 ms) does not end by 10000 ms"),
        "{text}"
    );
}

#[test]
fn bad_sweep_arguments_are_refused_by_name() {
    let output = chatsim(&["sweep", "--seeds", "5..5"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--seeds"), "{text}");
    assert!(text.contains("holds no seed"), "{text}");

    let output = chatsim(&["sweep", "--seeds", "0..4", "--shard", "4/4"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--shard"), "{text}");
    assert!(text.contains("0 <= i < n"), "{text}");

    let output = chatsim(&["run", "--seed", "1", "--slo", "101"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--slo"), "{}", stderr(&output));
}

#[test]
fn a_scenario_file_with_a_bad_field_is_refused_naming_the_field_and_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("mine.toml");
    let text = include_str!("../scenarios/smoke.toml").replace("users = 20", "userz = 20");
    std::fs::write(&path, text).expect("write");
    let output = chatsim(&["run", "--seed", "1", "--scenario", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("line 13"), "{text}");
    assert!(text.contains("userz"), "{text}");
}

#[test]
fn a_trace_file_with_a_bad_value_is_refused_naming_its_json_path() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("export.json");
    let text = r#"{"guild": {"id": "1", "name": "g"}, "channel": {"id": "2", "name": "c"},
        "messages": [{"id": "10", "type": "Default", "content": "x", "author": {"id": 7}}]}"#;
    std::fs::write(&path, text).expect("write");
    let trace = path.to_str().unwrap();
    let output = chatsim(&[
        "run",
        "--seed",
        "1",
        "--scenario",
        "trace",
        "--trace",
        trace,
    ]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--trace"), "{text}");
    assert!(text.contains("messages[0].author.id"), "{text}");
}

#[cfg(madsim)]
#[test]
fn check_determinism_runs_a_seed_twice_and_finds_the_same_trace() {
    let output = chatsim(&["check-determinism", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    assert!(stdout.contains("deterministic: seed 3"), "{stdout}");
    let hashes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("run "))
        .map(|l| l.split_whitespace().nth(3).unwrap_or_default())
        .collect();
    assert_eq!(hashes.len(), 2, "{stdout}");
    assert_eq!(hashes[0], hashes[1]);
}

#[cfg(madsim)]
#[test]
fn replay_writes_the_runs_tracing_to_a_log_at_the_filter_given() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().to_str().unwrap();
    let filter = "chat_system::gateway=info";
    let output = chatsim(&["replay", "--seed", "3", "--log", filter, "--out", out]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    let log = std::fs::read_to_string(tmp.path().join("replay.log")).expect("replay.log");
    assert!(
        log.contains("INFO chat_system::gateway::connection: session_ready"),
        "the filter let the gateway's events through"
    );
    assert!(
        !log.contains("chat_system::ring"),
        "the filter kept other targets out"
    );
    assert!(tmp.path().join("report.json").exists());

    let output = chatsim(&["replay", "--seed", "3", "--log", "=[", "--out", out]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--log"), "{}", stderr(&output));
}
