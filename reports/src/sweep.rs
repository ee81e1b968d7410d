//! Merging the reports of a sweep (many seeds of one scenario) into one: the verdict of each
//! seed, the availability distribution across seeds, failures by class, and the command that
//! replays each failing seed.
//!
//! It reads only the seeds' `report.json` (and, for a seed whose process died without one,
//! its exit status), so sweeps run on many machines (`--shard i/n`) merge the same way:
//! [`merge_shards`] takes the `sweep.json` each machine wrote and refuses shards of different
//! scenarios, or one seed with two different results, naming the file and the JSON path.
//! Wall-clock figures (time compression) and replay commands may differ between machines and
//! are not compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{Report, EXIT_CRASH, EXIT_LIVENESS, EXIT_OBJECTIVE, EXIT_PASS, EXIT_SAFETY};

/// One seed's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Its exit status.
    pub exit_code: i32,
    /// `pass`, `safety`, `liveness`, `objective`, `crash` or `error`.
    pub class: String,
    /// Its availability, if it got as far as a report.
    pub availability: Option<f64>,
    /// Its trace hash, if it got as far as a report.
    pub trace_hash: Option<String>,
    /// Simulated seconds per wall second.
    pub time_compression: Option<f64>,
    /// The checks that failed.
    pub failed_checks: Vec<String>,
    /// The command that replays it.
    pub replay_command: String,
}

/// The availability distribution across seeds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Seeds with a value.
    pub count: usize,
    /// Lowest.
    pub min: f64,
    /// 10th percentile (nearest rank).
    pub p10: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// Highest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The merged report of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The report schema's version.
    pub schema_version: u32,
    /// The scenario.
    pub scenario: String,
    /// Every seed, in seed order.
    pub seeds: Vec<SeedOutcome>,
    /// Seeds per class.
    pub classes: BTreeMap<String, usize>,
    /// Seeds per failed check.
    pub failed_checks: BTreeMap<String, usize>,
    /// Availability across seeds.
    pub availability: Distribution,
    /// The sweep's exit status: the most serious class among its seeds.
    pub exit_code: i32,
}

/// The class an exit status stands for.
pub fn class_of_exit(code: i32) -> &'static str {
    match code {
        EXIT_PASS => "pass",
        EXIT_SAFETY => "safety",
        EXIT_LIVENESS => "liveness",
        EXIT_OBJECTIVE => "objective",
        EXIT_CRASH => "crash",
        _ => "error",
    }
}

/// Seriousness, most serious first: safety, crash, error, liveness, objective, pass.
fn rank(code: i32) -> u8 {
    match code {
        EXIT_SAFETY => 0,
        EXIT_CRASH => 1,
        EXIT_PASS => 5,
        EXIT_LIVENESS => 3,
        EXIT_OBJECTIVE => 4,
        _ => 2,
    }
}

impl SeedOutcome {
    /// The outcome of a seed that wrote `report`.
    pub fn from_report(report: &Report) -> Self {
        Self {
            seed: report.seed,
            exit_code: report.exit_code,
            class: class_of_exit(report.exit_code).to_string(),
            availability: Some(report.availability),
            trace_hash: Some(report.trace_hash.clone()),
            time_compression: Some(report.time_compression),
            failed_checks: report
                .checks
                .iter()
                .filter(|(_, r)| r.violations > 0)
                .map(|(name, _)| name.clone())
                .collect(),
            replay_command: report.replay_command.clone(),
        }
    }

    /// The outcome of a seed whose process ended with `exit_code` and no report.
    pub fn without_report(seed: u64, exit_code: i32, replay_command: String) -> Self {
        Self {
            seed,
            exit_code,
            class: class_of_exit(exit_code).to_string(),
            availability: None,
            trace_hash: None,
            time_compression: None,
            failed_checks: Vec::new(),
            replay_command,
        }
    }
}

fn distribution(values: &[f64]) -> Distribution {
    if values.is_empty() {
        return Distribution::default();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        let index = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    };
    Distribution {
        count: sorted.len(),
        min: sorted[0],
        p10: rank(0.10),
        p50: rank(0.50),
        p90: rank(0.90),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

impl SweepReport {
    /// Merges seed outcomes (from one machine or many).
    pub fn merge(scenario: &str, mut seeds: Vec<SeedOutcome>) -> Self {
        seeds.sort_by_key(|s| s.seed);
        seeds.dedup_by_key(|s| s.seed);
        let mut classes = BTreeMap::new();
        let mut failed_checks = BTreeMap::new();
        for seed in &seeds {
            *classes.entry(seed.class.clone()).or_insert(0) += 1;
            for check in &seed.failed_checks {
                *failed_checks.entry(check.clone()).or_insert(0) += 1;
            }
        }
        let availability: Vec<f64> = seeds.iter().filter_map(|s| s.availability).collect();
        let exit_code = seeds
            .iter()
            .map(|s| s.exit_code)
            .min_by_key(|&code| rank(code))
            .unwrap_or(EXIT_PASS);
        Self {
            schema_version: crate::report::SCHEMA_VERSION,
            scenario: scenario.to_string(),
            availability: distribution(&availability),
            seeds,
            classes,
            failed_checks,
            exit_code,
        }
    }

    /// The seeds that did not pass.
    pub fn failing(&self) -> impl Iterator<Item = &SeedOutcome> {
        self.seeds.iter().filter(|s| s.exit_code != EXIT_PASS)
    }

    /// The text printed at the end of a sweep (and kept as `sweep.md`).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let a = &self.availability;
        let _ = writeln!(
            out,
            "sweep {}: {} seeds; {}",
            self.scenario,
            self.seeds.len(),
            self.classes
                .iter()
                .map(|(class, n)| format!("{n} {class}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "availability across seeds: min {:.4}%  p10 {:.4}%  p50 {:.4}%  p90 {:.4}%  max \
             {:.4}%  mean {:.4}%",
            a.min * 100.0,
            a.p10 * 100.0,
            a.p50 * 100.0,
            a.p90 * 100.0,
            a.max * 100.0,
            a.mean * 100.0
        );
        for (check, n) in &self.failed_checks {
            let _ = writeln!(out, "failed check {check}: {n} seeds");
        }
        for seed in self.failing() {
            let _ = writeln!(
                out,
                "FAIL seed {} ({}, exit {}): {}",
                seed.seed, seed.class, seed.exit_code, seed.replay_command
            );
        }
        let _ = writeln!(out, "sweep exit {}", self.exit_code);
        out
    }
}

/// One shard's sweep report as a machine wrote it, and where it came from.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The file it was read from, as errors name it.
    pub source: String,
    /// Its report.
    pub report: SweepReport,
}

impl Shard {
    /// Parses the `sweep.json` text read from `source`; an error names the file and the JSON
    /// path (or line and column) that is wrong.
    pub fn parse(source: &str, text: &str) -> Result<Self, String> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let report: SweepReport =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
                let path = error.path().to_string();
                let inner = error.into_inner();
                format!(
                    "{source}: at JSON path {path} (line {}, column {}): {inner}",
                    inner.line(),
                    inner.column()
                )
            })?;
        if report.schema_version > crate::report::SCHEMA_VERSION {
            return Err(format!(
                "{source}: at JSON path schema_version: version {} is newer than this build \
                 reads ({})",
                report.schema_version,
                crate::report::SCHEMA_VERSION
            ));
        }
        for (index, seed) in report.seeds.iter().enumerate() {
            if class_of_exit(seed.exit_code) != seed.class {
                return Err(format!(
                    "{source}: at JSON path seeds[{index}].class: {:?} does not match exit \
                     code {} ({})",
                    seed.class,
                    seed.exit_code,
                    class_of_exit(seed.exit_code)
                ));
            }
        }
        Ok(Self {
            source: source.to_string(),
            report,
        })
    }
}

/// Whether two runs of one seed gave the same result (what a replay must reproduce).
fn same_result(a: &SeedOutcome, b: &SeedOutcome) -> bool {
    a.exit_code == b.exit_code
        && a.class == b.class
        && a.availability == b.availability
        && a.trace_hash == b.trace_hash
        && a.failed_checks == b.failed_checks
}

/// Merges the sweep reports of several shards (or machines) into one.
///
/// Refused, with the file and the JSON path named: no shard at all, shards of different
/// scenarios, and a seed that two shards ran with different results (a seed is a replay, so
/// that is a build or machine difference the merged report must not hide). A seed two shards
/// agree on counts once.
pub fn merge_shards(shards: &[Shard]) -> Result<SweepReport, String> {
    let Some(first) = shards.first() else {
        return Err("no sweep report to merge".to_string());
    };
    let mut seen: BTreeMap<u64, (&Shard, usize)> = BTreeMap::new();
    let mut seeds = Vec::new();
    for shard in shards {
        if shard.report.scenario != first.report.scenario {
            return Err(format!(
                "{}: at JSON path scenario: {:?}, but {} is a sweep of {:?}",
                shard.source, shard.report.scenario, first.source, first.report.scenario
            ));
        }
        for (index, seed) in shard.report.seeds.iter().enumerate() {
            if let Some((other, other_index)) = seen.get(&seed.seed) {
                let earlier = &other.report.seeds[*other_index];
                if !same_result(earlier, seed) {
                    return Err(format!(
                        "{}: at JSON path seeds[{index}]: seed {} gave {} (exit {}, trace {}), \
                         but {} at seeds[{other_index}] gave {} (exit {}, trace {})",
                        shard.source,
                        seed.seed,
                        seed.class,
                        seed.exit_code,
                        seed.trace_hash.as_deref().unwrap_or("none"),
                        other.source,
                        earlier.class,
                        earlier.exit_code,
                        earlier.trace_hash.as_deref().unwrap_or("none"),
                    ));
                }
                continue;
            }
            seen.insert(seed.seed, (shard, index));
            seeds.push(seed.clone());
        }
    }
    Ok(SweepReport::merge(&first.report.scenario, seeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(seed: u64, exit_code: i32, availability: f64) -> SeedOutcome {
        SeedOutcome {
            availability: Some(availability),
            ..SeedOutcome::without_report(seed, exit_code, format!("replay {seed}"))
        }
    }

    #[test]
    fn a_sweep_merges_classes_the_distribution_and_the_worst_exit() {
        let seeds = vec![
            outcome(3, EXIT_OBJECTIVE, 0.98),
            outcome(1, EXIT_PASS, 1.0),
            outcome(2, EXIT_LIVENESS, 0.99),
            SeedOutcome::without_report(4, EXIT_CRASH, "replay 4".into()),
            outcome(1, EXIT_PASS, 1.0), // the same seed from another shard
        ];
        let sweep = SweepReport::merge("small", seeds);
        assert_eq!(sweep.seeds.len(), 4);
        assert_eq!(sweep.classes["pass"], 1);
        assert_eq!(sweep.classes["crash"], 1);
        assert_eq!(sweep.exit_code, EXIT_CRASH);
        assert_eq!(sweep.availability.count, 3);
        assert_eq!(sweep.availability.min, 0.98);
        assert_eq!(sweep.availability.p50, 0.99);
        assert!((sweep.availability.mean - 0.99).abs() < 1e-12);
        let failing: Vec<u64> = sweep.failing().map(|s| s.seed).collect();
        assert_eq!(failing, vec![2, 3, 4]);
        assert!(sweep
            .summary()
            .contains("FAIL seed 4 (crash, exit 6): replay 4"));
    }

    fn shard(source: &str, scenario: &str, seeds: Vec<SeedOutcome>) -> Shard {
        let json = serde_json::to_string(&SweepReport::merge(scenario, seeds)).expect("JSON");
        Shard::parse(source, &json).expect("a valid shard")
    }

    #[test]
    fn shards_merge_into_the_report_of_all_their_seeds() {
        let a = shard(
            "a/sweep.json",
            "small",
            vec![outcome(0, EXIT_PASS, 1.0), outcome(2, EXIT_OBJECTIVE, 0.9)],
        );
        let b = shard(
            "b/sweep.json",
            "small",
            vec![outcome(1, EXIT_PASS, 1.0), outcome(3, EXIT_OBJECTIVE, 0.8)],
        );
        let merged = merge_shards(&[a, b]).expect("merges");
        let seeds: Vec<u64> = merged.seeds.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, vec![0, 1, 2, 3]);
        assert_eq!(merged.classes["pass"], 2);
        assert_eq!(merged.classes["objective"], 2);
        assert_eq!(merged.exit_code, EXIT_OBJECTIVE);
        assert_eq!(merged.availability.min, 0.8);
        assert!((merged.availability.mean - 0.925).abs() < 1e-12);
    }

    #[test]
    fn a_seed_in_two_shards_counts_once_if_they_agree_and_is_refused_if_not() {
        let mut slower = outcome(1, EXIT_PASS, 1.0);
        slower.time_compression = Some(3.0);
        slower.replay_command = "another machine's command".into();
        let a = shard("a.json", "small", vec![outcome(1, EXIT_PASS, 1.0)]);
        let b = shard("b.json", "small", vec![outcome(0, EXIT_PASS, 1.0), slower]);
        assert_eq!(merge_shards(&[a.clone(), b]).expect("agree").seeds.len(), 2);

        let c = shard("c.json", "small", vec![outcome(1, EXIT_OBJECTIVE, 0.5)]);
        let error = merge_shards(&[a, c]).expect_err("disagree");
        assert_eq!(
            error,
            "c.json: at JSON path seeds[0]: seed 1 gave objective (exit 5, trace none), but \
             a.json at seeds[0] gave pass (exit 0, trace none)"
        );
    }

    #[test]
    fn shards_of_two_scenarios_no_shard_and_bad_files_are_refused_by_name_and_path() {
        let a = shard("a.json", "small", vec![outcome(1, EXIT_PASS, 1.0)]);
        let b = shard("b.json", "peak", vec![outcome(2, EXIT_PASS, 1.0)]);
        assert_eq!(
            merge_shards(&[a, b]).expect_err("two scenarios"),
            "b.json: at JSON path scenario: \"peak\", but a.json is a sweep of \"small\""
        );
        assert_eq!(
            merge_shards(&[]).expect_err("nothing"),
            "no sweep report to merge"
        );

        let good = serde_json::to_value(SweepReport::merge(
            "small",
            vec![outcome(1, EXIT_PASS, 1.0)],
        ))
        .expect("JSON");
        let mut wrong_type = good.clone();
        wrong_type["seeds"][0]["exit_code"] = serde_json::json!("zero");
        let error = Shard::parse("w.json", &wrong_type.to_string()).expect_err("a string");
        assert!(
            error.starts_with("w.json: at JSON path seeds[0].exit_code (line 1, column"),
            "{error}"
        );
        let mut wrong_class = good.clone();
        wrong_class["seeds"][0]["class"] = serde_json::json!("safety");
        assert_eq!(
            Shard::parse("k.json", &wrong_class.to_string()).expect_err("class"),
            "k.json: at JSON path seeds[0].class: \"safety\" does not match exit code 0 (pass)"
        );
        let mut newer = good;
        newer["schema_version"] = serde_json::json!(99);
        let error = Shard::parse("n.json", &newer.to_string()).expect_err("newer");
        assert!(
            error.starts_with("n.json: at JSON path schema_version"),
            "{error}"
        );
        let error = Shard::parse("t.json", "{\"schema_version\": 2,").expect_err("cut");
        assert!(error.starts_with("t.json: at JSON path"), "{error}");
        assert!(error.contains("line 1"), "{error}");
    }
}
