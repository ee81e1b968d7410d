//! Sweeps sharded over "machines" and merged: two shards of a tiny sweep of `smoke`, run as
//! `--shard 0/2` and `--shard 1/2` into separate directories, merged by `chatsim sweep-merge`,
//! give the report of the same sweep run unsharded (wall-clock figures aside). A shard whose
//! seed disagrees with another's, or of another scenario, is refused by file and JSON path.
#![cfg(madsim)]

use std::path::Path;
use std::process::{Command, Output};

fn chatsim(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("chatsim runs")
}

fn sweep(shard: Option<&str>, out: &Path) {
    let mut args = vec!["sweep", "--seeds", "1..4", "--jobs", "2"];
    args.extend(["--scenario", "smoke"]);
    if let Some(shard) = shard {
        args.extend(["--shard", shard]);
    }
    // Exit 5 is a seed missing the availability objective, which smoke's crash may cause.
    let output = chatsim(&args, out);
    assert!(
        matches!(output.status.code(), Some(0 | 5)),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("a sweep.json");
    serde_json::from_str(&text).expect("JSON")
}

/// A seed's result without the figures that depend on the machine's speed.
fn result(seed: &serde_json::Value) -> serde_json::Value {
    let mut seed = seed.clone();
    let fields = seed.as_object_mut().expect("a seed object");
    fields.remove("time_compression");
    serde_json::Value::Object(fields.clone())
}

#[test]
fn two_shards_merged_give_the_unsharded_sweep_and_conflicts_are_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (all, first, second) = (
        tmp.path().join("all"),
        tmp.path().join("s0"),
        tmp.path().join("s1"),
    );
    sweep(None, &all);
    sweep(Some("0/2"), &first);
    sweep(Some("1/2"), &second);

    // 1. Shard 0/2 ran seeds 1 and 3, shard 1/2 seed 2.
    let seeds_of = |dir: &Path| -> Vec<u64> {
        json(&dir.join("sweep.json"))["seeds"]
            .as_array()
            .expect("seeds")
            .iter()
            .map(|s| s["seed"].as_u64().expect("a seed"))
            .collect()
    };
    assert_eq!(seeds_of(&first), vec![1, 3]);
    assert_eq!(seeds_of(&second), vec![2]);

    // 2. A directory and a file, merged, equal the unsharded sweep.
    let merged_dir = tmp.path().join("merged");
    let second_file = second.join("sweep.json");
    let output = chatsim(
        &[
            "sweep-merge",
            first.to_str().expect("utf-8"),
            second_file.to_str().expect("utf-8"),
        ],
        &merged_dir,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (merged, unsharded) = (
        json(&merged_dir.join("sweep.json")),
        json(&all.join("sweep.json")),
    );
    let exit = unsharded["exit_code"].as_i64().expect("an exit code");
    assert_eq!(output.status.code().map(i64::from), Some(exit), "{stdout}");
    assert!(stdout.contains("merged 2 shards"), "{stdout}");
    assert!(stdout.contains("sweep smoke: 3 seeds; "), "{stdout}");
    let results = |sweep: &serde_json::Value| -> Vec<serde_json::Value> {
        sweep["seeds"]
            .as_array()
            .expect("seeds")
            .iter()
            .map(result)
            .collect()
    };
    assert_eq!(results(&merged), results(&unsharded));
    for field in [
        "scenario",
        "classes",
        "failed_checks",
        "availability",
        "exit_code",
    ] {
        assert_eq!(merged[field], unsharded[field], "{field}");
    }
    let summary = std::fs::read_to_string(merged_dir.join("sweep.md")).expect("sweep.md");
    let unsharded_summary = std::fs::read_to_string(all.join("sweep.md")).expect("sweep.md");
    assert_eq!(summary, unsharded_summary);
    assert!(summary.starts_with("sweep smoke: 3 seeds; "), "{summary}");

    // 3. A shard whose seed 2 gave another trace is refused, naming the file and the path.
    let mut forged = json(&second_file);
    forged["seeds"][0]["trace_hash"] = serde_json::json!("0000000000000000");
    let forged_path = tmp.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    let output = chatsim(
        &[
            "sweep-merge",
            all.to_str().expect("utf-8"),
            forged_path.to_str().expect("utf-8"),
        ],
        &tmp.path().join("refused"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let (class, exit) = (
        &forged["seeds"][0]["class"],
        &forged["seeds"][0]["exit_code"],
    );
    let class = class.as_str().expect("a class");
    assert!(
        stderr.contains(&format!(
            "{}: at JSON path seeds[0]: seed 2 gave {class} (exit {exit}, trace \
             0000000000000000), but {} at seeds[1] gave {class} (exit {exit}, trace {})",
            forged_path.display(),
            all.join("sweep.json").display(),
            unsharded["seeds"][1]["trace_hash"]
                .as_str()
                .expect("a trace hash")
        )),
        "{stderr}"
    );
    assert!(!tmp.path().join("refused").join("sweep.json").exists());

    // 4. A shard of another scenario is refused the same way.
    let mut other = json(&second_file);
    other["scenario"] = serde_json::json!("small");
    std::fs::write(&forged_path, other.to_string()).expect("write");
    let output = chatsim(
        &[
            "sweep-merge",
            first.to_str().expect("utf-8"),
            forged_path.to_str().expect("utf-8"),
        ],
        &tmp.path().join("refused"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("at JSON path scenario: \"small\", but"),
        "{stderr}"
    );
}
