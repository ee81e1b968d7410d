//! Repository tidiness: the fixed top-level layout, line width, module docs, banned markers.

use std::fs;
use std::path::{Path, PathBuf};

const LINE_COLUMNS_MAX: usize = 100;
const TOP_LEVEL: [&str; 8] = [
    "Cargo.toml",
    "Cargo.lock",
    "README.md",
    "system",
    "sim",
    "faults",
    "reports",
    "tests",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repo")
        .to_path_buf()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// The top-level names of the files git tracks; `None` where git or its metadata is absent.
fn tracked_top_level() -> Option<Vec<String>> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo_root())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split('\0')
        .filter_map(|path| path.split('/').next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    names.dedup();
    Some(names)
}

#[test]
fn the_top_level_holds_only_the_agreed_entries() {
    // What git tracks decides; without git, what is on disk (outputs such as target/ aside).
    let names = tracked_top_level().unwrap_or_else(|| {
        let entries = fs::read_dir(repo_root()).expect("repo root");
        entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    });
    let unexpected: Vec<&String> = names
        .iter()
        .filter(|name| !name.starts_with('.') && *name != "target")
        .filter(|name| !TOP_LEVEL.contains(&name.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected top-level entries: {unexpected:?}"
    );
}

#[test]
fn rust_lines_fit_in_100_columns_unless_they_hold_a_string() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["system", "sim", "faults", "reports", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found the sources");

    let mut long = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("utf-8 source");
        for (number, line) in text.lines().enumerate() {
            if line.chars().count() > LINE_COLUMNS_MAX && !line.contains('"') {
                long.push(format!(
                    "{}:{}",
                    file.strip_prefix(&root).unwrap().display(),
                    number + 1
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "lines over {LINE_COLUMNS_MAX} columns: {long:?}"
    );
}

#[test]
fn every_rust_file_opens_with_module_docs_and_carries_no_banned_marker() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["system", "sim", "faults", "reports", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    let banned = [
        concat!("FIX", "ME"),
        concat!("dbg", "!("),
        concat!("todo", "!("),
    ];
    let mut problems = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("utf-8 source");
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{shown}: no module docs"));
        }
        for marker in banned {
            if text.contains(marker) {
                problems.push(format!("{shown}: contains {marker}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:?}");
}
