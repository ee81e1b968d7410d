//! The Markdown summary of one run: what ran, the verdict, each check with its first
//! violations and their witnesses, availability per window, the faults, and the plots.
//!
//! It is written for a person opening `summary.md` beside the plots; `report.json` stays the
//! document scripts read.

use std::fmt::Write as _;

use crate::checks::{class_of, Evidence};
use crate::report::Report;

/// At most this many violations per check are shown with their witness.
const WITNESSES_SHOWN: usize = 3;

fn evidence_line(evidence: &Evidence) -> String {
    let json = match evidence {
        Evidence::Op { op, .. } => serde_json::to_string(op),
        Evidence::Delivery { delivery, .. } => serde_json::to_string(delivery),
        Evidence::Session { session, .. } => serde_json::to_string(session),
    };
    let (kind, index) = evidence.key();
    format!("{kind} {index}: `{}`", json.unwrap_or_default())
}

/// The summary, with links to the plots named in `plots` (file names beside it).
pub fn summary(report: &Report, plots: &[String]) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };

    // 1. What ran.
    line(format!(
        "# chatsim {} seed {}: {}",
        report.scenario, report.seed, report.verdict
    ));
    line(String::new());
    line(format!("- trace hash `{}`", report.trace_hash));
    line(format!(
        "- simulated {:.1} s in {:.2} s wall ({:.0}x), {} events ({:.0}/s)",
        report.sim_seconds,
        report.wall_seconds,
        report.time_compression,
        report.events,
        report.events_per_second
    ));
    line(format!("- exit status {}", report.exit_code));
    line(format!("- replay: `{}`", report.replay_command));
    if let Some(profile) = &report.profile {
        line(format!(
            "- swarm profile: `{}`",
            serde_json::to_string(profile).unwrap_or_default()
        ));
    }
    line(String::new());

    // 2. Operations and availability.
    line("## Operations".into());
    line(String::new());
    line("| kind | sent | ok | failed | timed out |".into());
    line("| --- | ---: | ---: | ---: | ---: |".into());
    let kinds = [
        ("send", &report.operations),
        ("read", &report.reads),
        ("edit", &report.edits),
        ("react", &report.reactions),
    ];
    for (name, counts) in kinds
        .into_iter()
        .filter(|(name, c)| c.sent > 0 || *name == "send")
    {
        line(format!(
            "| {name} | {} | {} | {} | {} |",
            counts.sent, counts.acked, counts.failed, counts.timed_out
        ));
    }
    line(String::new());
    let latency = report
        .latency_ms
        .as_ref()
        .map_or("no deliveries".to_string(), |l| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p99, l.max
            )
        });
    line(format!(
        "{} MESSAGE_CREATE received; send-to-deliver {latency}.",
        report.deliveries
    ));
    line(String::new());
    line(format!(
        "Availability {:.4}% answered within the deadline (send {} ms, read {} ms; objective \
         {:.2}%), {:.2}% within 100 ms.",
        report.availability * 100.0,
        report.check_config.send_deadline_ms,
        report.check_config.read_deadline_ms,
        report.availability_objective * 100.0,
        report.availability_within_100ms * 100.0
    ));
    line(String::new());
    line("| window from (s) | operations | in time | within 100 ms | availability |".into());
    line("| ---: | ---: | ---: | ---: | ---: |".into());
    for window in &report.availability_windows {
        line(format!(
            "| {:.0} | {} | {} | {} | {:.4}% |",
            window.start_s,
            window.ops,
            window.ok,
            window.fast,
            window.availability * 100.0
        ));
    }
    line(String::new());

    // 3. Checks, with witnesses.
    line("## Checks".into());
    line(String::new());
    line("| check | class | violations |".into());
    line("| --- | --- | ---: |".into());
    for (name, result) in &report.checks {
        let class = class_of(name).map_or("?".to_string(), |c| format!("{c:?}").to_lowercase());
        line(format!("| {name} | {class} | {} |", result.violations));
    }
    for (name, result) in report.checks.iter().filter(|(_, r)| r.violations > 0) {
        line(String::new());
        line(format!("### {name}: {} violations", result.violations));
        for violation in result.witnesses.iter().take(WITNESSES_SHOWN) {
            line(String::new());
            line(format!("- {}", violation.summary));
            for evidence in &violation.witness {
                line(format!("  - {}", evidence_line(evidence)));
            }
        }
    }
    line(String::new());

    // 4. What each node served, by its own count.
    if !report.node_load.is_empty() {
        line("## Load per node".into());
        line(String::new());
        line("| node | requests | busiest second | by kind |".into());
        line("| --- | ---: | ---: | --- |".into());
        for (name, load) in &report.node_load {
            let busiest = load.per_second.iter().copied().max().unwrap_or(0);
            let kinds: Vec<String> = load
                .by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            line(format!(
                "| {name} | {} | {busiest} | {} |",
                load.total,
                kinds.join(", ")
            ));
        }
        line(String::new());
    }

    // 5. Faults and plots.
    line("## Faults as applied".into());
    line(String::new());
    if report.faults.is_empty() {
        line("None.".into());
    }
    for fault in &report.faults {
        line(format!(
            "- {:.3} s: {}",
            fault.at_ns as f64 / 1e9,
            fault.action
        ));
    }
    line(String::new());
    line("## Plots".into());
    line(String::new());
    for plot in plots.iter().filter(|p| p.ends_with(".svg")) {
        let mut text = String::new();
        let _ = write!(text, "![{plot}]({plot})");
        line(text);
    }
    out
}
