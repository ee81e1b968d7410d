//! A Cassandra for the CQL store's conformance suite and benchmark.
//!
//! `CHAT_CQL_NODES` (`host:port[,host:port...]`) names a running cluster. When it is unset,
//! `.ci/cassandra/start --owner PID` starts one node on 127.0.0.1:9042 (resolving it from
//! Maven Central on first use) that stops once this process ends, or reuses one that already
//! answers there. Failures come back as text naming the script and its output; nothing here
//! ever skips quietly. Not provided: several local nodes.

use std::path::PathBuf;
use std::process::Command;

use chat_system::store::cql::parse_nodes;

/// The contact points of a Cassandra cluster, starting a local node if none is named.
pub fn contact_points() -> Result<Vec<String>, String> {
    if let Ok(list) = std::env::var("CHAT_CQL_NODES") {
        return parse_nodes(&list).map_err(|e| format!("CHAT_CQL_NODES: {e}"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root
        .parent()
        .ok_or("system/ has no parent directory")?
        .join(".ci/cassandra/start");
    let output = Command::new(&script)
        .arg("--owner")
        .arg(std::process::id().to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(vec!["127.0.0.1:9042".to_string()])
}
