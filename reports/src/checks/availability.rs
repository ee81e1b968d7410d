//! Availability: the share of operations answered successfully within their kind's deadline,
//! per window (by invocation time) and overall, with the share answered within 100 ms beside
//! it. An operation that failed, timed out, or was answered late counts against it. The
//! final verification reads are not workload traffic and are left out. Every operation
//! counts once, whatever its kind (a send, a read, an edit, a reaction); edits and reactions
//! are held to a send's deadline, and each attempt of a retried send is an operation.

use serde::{Deserialize, Serialize};

use super::{CheckConfig, CheckResult, Evidence, Violation};
use crate::history::{History, Op, OpKind, Outcome};

/// Operations answered within this long count as fast.
const FAST_NS: u64 = 100_000_000;
/// At most this many failed operations are listed in one violation's witness.
const WITNESS_OPS_MAX: usize = 5;

/// One window's operations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The window's start, in simulated seconds.
    pub start_s: f64,
    /// Operations invoked in it.
    pub ops: u64,
    /// Of those, answered successfully within their deadline.
    pub ok: u64,
    /// Of those, answered successfully within 100 ms.
    pub fast: u64,
    /// `ok / ops` (1 without operations).
    pub availability: f64,
}

/// Availability overall and per window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityStats {
    /// All operations.
    pub ops: u64,
    /// Answered successfully within their deadline.
    pub ok: u64,
    /// `ok / ops` (1 without operations).
    pub availability: f64,
    /// The share answered successfully within 100 ms.
    pub within_100ms: f64,
    /// Per window, in order.
    pub windows: Vec<Window>,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// Whether `op` was answered successfully within its deadline; and within 100 ms.
fn judge(op: &Op, config: &CheckConfig) -> (bool, bool) {
    // Edits and reactions are writes, held to a send's deadline.
    let deadline_ms = match op.kind {
        OpKind::Send { .. } | OpKind::Edit { .. } | OpKind::React { .. } => config.send_deadline_ms,
        OpKind::Read { .. } => config.read_deadline_ms,
    };
    let succeeded = matches!(
        op.outcome,
        Outcome::Sent { .. } | Outcome::Read { .. } | Outcome::Done
    );
    let took_ns = op.completed_ns.saturating_sub(op.invoked_ns);
    (
        succeeded && took_ns <= deadline_ms * 1_000_000,
        succeeded && took_ns <= FAST_NS,
    )
}

fn window_of(op: &Op, config: &CheckConfig) -> usize {
    let window_ns = config.window_ms.max(1) * 1_000_000;
    usize::try_from(op.invoked_ns / window_ns).unwrap_or(usize::MAX)
}

/// Availability overall and per window.
pub fn availability_stats(history: &History, config: &CheckConfig) -> AvailabilityStats {
    let mut stats = AvailabilityStats::default();
    let mut fast_total = 0;
    for op in history.ops.iter().filter(|op| !op.verification) {
        let window = window_of(op, config);
        while stats.windows.len() <= window {
            let start_s = (stats.windows.len() as u64 * config.window_ms) as f64 / 1000.0;
            stats.windows.push(Window {
                start_s,
                ..Window::default()
            });
        }
        let (ok, fast) = judge(op, config);
        let entry = &mut stats.windows[window];
        entry.ops += 1;
        entry.ok += u64::from(ok);
        entry.fast += u64::from(fast);
        stats.ops += 1;
        stats.ok += u64::from(ok);
        fast_total += u64::from(fast);
    }
    for window in &mut stats.windows {
        window.availability = share(window.ok, window.ops);
    }
    stats.availability = share(stats.ok, stats.ops);
    stats.within_100ms = share(fast_total, stats.ops);
    stats
}

/// Whether `ok` of `ops` meets `objective`. The epsilon keeps binary rounding (1 − 0.9999 is a
/// hair under 1e-4) from costing a whole operation.
fn meets(ok: u64, ops: u64, objective: f64) -> bool {
    let allowed = ((ops as f64) * (1.0 - objective) + 1e-6).floor() as u64;
    ops - ok <= allowed
}

/// One violation per window below the objective, and one if the whole run is below it; each
/// witnessed by the window's first few failed operations.
pub fn availability(history: &History, config: &CheckConfig) -> CheckResult {
    let mut result = CheckResult::default();
    let stats = availability_stats(history, config);
    let objective = config.availability_objective;
    let failed_in = |window: Option<usize>| -> Vec<Evidence> {
        history
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| !op.verification)
            .filter(|(_, op)| window.is_none_or(|w| window_of(op, config) == w))
            .filter(|(_, op)| !judge(op, config).0)
            .take(WITNESS_OPS_MAX)
            .map(|(index, _)| Evidence::op(history, index))
            .collect()
    };
    for (index, window) in stats.windows.iter().enumerate() {
        if !meets(window.ok, window.ops, objective) {
            result.violation(|| Violation {
                summary: format!(
                    "window at {:.0} s: {} of {} operations answered in time ({:.4}%, \
                     objective {:.4}%)",
                    window.start_s,
                    window.ok,
                    window.ops,
                    window.availability * 100.0,
                    objective * 100.0
                ),
                witness: failed_in(Some(index)),
            });
        }
    }
    if !meets(stats.ok, stats.ops, objective) {
        result.violation(|| Violation {
            summary: format!(
                "overall: {} of {} operations answered in time ({:.4}%, objective {:.4}%)",
                stats.ok,
                stats.ops,
                stats.availability * 100.0,
                objective * 100.0
            ),
            witness: failed_in(None),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::build::{read, send};

    const MINUTE_NS: u64 = 60_000_000_000;

    #[test]
    fn availability_allows_the_objectives_budget_per_window_and_overall() {
        // 20,000 sends a minute apart in two windows; 99.99% allows 1 failure per 10,000.
        let mut ops: Vec<Op> = (0..20_000)
            .map(|i| send(1, 7, (i / 10_000) * MINUTE_NS + i, i))
            .collect();
        ops[0].outcome = Outcome::TimedOut;
        ops[10_000].outcome = Outcome::Failed {
            status: 503,
            reason: "down".into(),
        };
        let mut history = History {
            ops,
            ..History::default()
        };
        let config = CheckConfig::default();
        assert_eq!(availability(&history, &config), CheckResult::default());
        let stats = availability_stats(&history, &config);
        assert_eq!(stats.windows.len(), 2);
        assert_eq!((stats.windows[1].ops, stats.windows[1].ok), (10_000, 9_999));
        assert_eq!(stats.windows[1].start_s, 60.0);

        // A second failure in the first window breaks that window, and 3 of 20,000 the run.
        history.ops[1].outcome = Outcome::TimedOut;
        let result = availability(&history, &config);
        assert_eq!(result.violations, 2, "{result:?}");
        assert_eq!(result.witnesses[0].keys(), vec![("op", 0), ("op", 1)]);
        assert!(
            result.examples[0].starts_with("window at 0 s"),
            "{result:?}"
        );
        assert_eq!(
            result.witnesses[1].keys(),
            vec![("op", 0), ("op", 1), ("op", 10_000)]
        );
        assert!(
            result.examples[1].starts_with("overall: 19997 of 20000"),
            "{result:?}"
        );
    }

    #[test]
    fn a_late_answer_counts_against_availability_by_its_kinds_deadline() {
        let config = CheckConfig::default();
        let mut slow_read = read(1, 7, 0, 10, &[]);
        slow_read.completed_ns = config.read_deadline_ms * 1_000_000 + 1;
        let mut slow_send = send(1, 7, 0, 1);
        slow_send.completed_ns = 200_000_000; // 200 ms: within its deadline, not fast
        let history = History {
            ops: vec![slow_read, slow_send],
            ..History::default()
        };
        let stats = availability_stats(&history, &config);
        assert_eq!((stats.ops, stats.ok), (2, 1));
        let mut verifying = history.clone();
        verifying.ops[0].verification = true;
        assert_eq!(availability_stats(&verifying, &config).ops, 1);
        assert_eq!(stats.within_100ms, 0.0);
        let result = availability(&history, &config);
        // The one window and the whole run: both below.
        assert_eq!(result.violations, 2, "{result:?}");
        assert_eq!(result.witnesses[1].keys(), vec![("op", 0)]);
    }
}
