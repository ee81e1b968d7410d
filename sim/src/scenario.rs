//! Scenarios: the cluster's shape, the workload's shape and the fault schedule, read from
//! TOML files (the built-in ones are embedded from `sim/scenarios/`).
//!
//! A file names its directory shape (round robin, heavy-tailed, or the authors of a trace),
//! its workload (Poisson sends with bursts, recent and paged reads, offline churn, an
//! optional @everyone-style burst), its timings, what the checks hold it to, and its faults:
//! `"none"`, `"swarm"` (drawn from the seed) or `"listed"` (`[[fault]]` tables, the schedule
//! file format). Every error names the field and the line.
//!
//! Not modelled: voice, presence, typing, edits and deletes.

use std::path::PathBuf;

use chat_faults::{FaultKind, Profile, Roles, Schedule, Swarm};
use chat_reports::checks::CheckConfig;
use chat_system::ring::engine::EngineConfig;
use chat_system::ring::node::engine_config;
use serde::{Deserialize, Serialize};

/// How the directory of users and guilds is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryPlan {
    /// `round_robin` (user i in guild i mod guilds, the first user in all), `heavy_tailed`, or
    /// `trace` (the trace's authors and channels).
    pub shape: DirectoryKind,
    /// Users (one simulated client each).
    #[serde(default)]
    pub users: usize,
    /// Guilds.
    #[serde(default)]
    pub guilds: usize,
    /// Text channels per guild.
    #[serde(default)]
    pub channels_per_guild: usize,
    /// Heavy-tailed: the mean number of guilds a user is in.
    #[serde(default)]
    pub guilds_per_user: f64,
    /// Heavy-tailed: the share of users in the first (big) guild.
    #[serde(default)]
    pub big_guild_share: f64,
    /// Heavy-tailed: the Zipf exponent of the other guilds' popularity.
    #[serde(default)]
    pub size_exponent: f64,
}

/// The directory's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    /// [`chat_system::directory::Directory::generate`]'s layout.
    RoundRobin,
    /// One big guild and Zipf-sized others.
    HeavyTailed,
    /// The authors and channels of the replayed trace.
    Trace,
}

/// What each simulated user does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Mean gap between one user's sends (exponential); 0 sends nothing but bursts and
    /// trace messages.
    #[serde(default)]
    pub send_gap_ms_mean: u64,
    /// The share of sends that start a burst of follow-ups.
    #[serde(default)]
    pub burst_share: f64,
    /// A burst adds 1 to this many more sends, about a second apart.
    #[serde(default)]
    pub burst_size_max: u64,
    /// Mean gap between one user's history reads; 0 reads only at the end.
    #[serde(default)]
    pub read_gap_ms_mean: u64,
    /// The share of reads that page back (`before` the oldest id of a first page).
    #[serde(default)]
    pub paged_read_share: f64,
    /// Mean gap between one user's offline periods; 0 keeps users online.
    #[serde(default)]
    pub offline_gap_ms_mean: u64,
    /// Mean length of an offline period.
    #[serde(default)]
    pub offline_ms_mean: u64,
    /// How many times a send that timed out or got a 5xx is retried with the same nonce.
    #[serde(default)]
    pub send_retries: u32,
}

/// An @everyone-style burst: many members of the big guild send in its first channel at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EveryoneBurst {
    /// When it starts.
    pub at_ms: u64,
    /// Over how long the replies spread.
    pub duration_ms: u64,
    /// The share of the big guild's members who reply.
    pub sender_share: f64,
}

/// Trace replay settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracePlan {
    /// A DiscordChatExporter JSON file or a folder of them.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Trace time divided by this is simulated time; 0 fits the trace into the workload.
    #[serde(default)]
    pub speedup: f64,
    /// The trace, once read (see [`Scenario::load_trace`]).
    #[serde(skip)]
    pub loaded: Option<std::sync::Arc<crate::trace::Trace>>,
}

/// Where a scenario's faults come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPlan {
    /// No faults.
    None,
    /// Drawn from the seed.
    Swarm,
    /// The file's `[[fault]]` tables.
    Listed,
}

/// The file form of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    description: String,
    duration_ms: u64,
    workload_end_ms: u64,
    quiet_ms: u64,
    final_read_ms: u64,
    #[serde(default = "default_heartbeat_ms")]
    heartbeat_interval_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    #[serde(default = "default_rate_limits")]
    rate_limits: bool,
    faults: FaultPlan,
    /// Parsed on its own by the schedule file reader, which names fault, field and line.
    #[serde(default)]
    #[allow(dead_code, reason = "the schedule reader parses it from the text")]
    fault: Vec<toml::Value>,
    directory: DirectoryPlan,
    workload: Workload,
    #[serde(default)]
    checks: CheckConfig,
    #[serde(default)]
    everyone: Option<EveryoneBurst>,
    #[serde(default)]
    trace: Option<TracePlan>,
}

fn default_heartbeat_ms() -> u64 {
    5_000
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

/// A scenario a run can be asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// The users and guilds.
    pub directory: DirectoryPlan,
    /// What the users do.
    pub workload: Workload,
    /// An @everyone-style burst, if any.
    pub everyone: Option<EveryoneBurst>,
    /// Trace replay, if the scenario replays one.
    pub trace: Option<TracePlan>,
    /// Simulated run length.
    pub duration_ms: u64,
    /// Clients stop sending and reading at this time.
    pub workload_end_ms: u64,
    /// The quiet period before the workload ends: faults are over and healed by
    /// `workload_end_ms - quiet_ms`, and the workload keeps going through it.
    pub quiet_ms: u64,
    /// Clients page through every channel's full history at this time.
    pub final_read_ms: u64,
    /// The heartbeat interval gateways announce.
    pub heartbeat_interval_ms: u64,
    /// How long a client waits for a REST answer.
    pub request_timeout_ms: u64,
    /// Whether the API enforces Discord's rate limits (off for trace replays at a speed-up).
    pub rate_limits: bool,
    /// What the checks hold the run to (objective, deadlines, bounds).
    pub checks: CheckConfig,
    /// Where the faults come from.
    pub faults: FaultPlan,
    /// The faults.
    pub schedule: Schedule,
    /// The ring nodes' storage engine (sync mode, gc grace).
    pub ring_engine: EngineConfig,
    /// For a swarm scenario: the profile its schedule was drawn from, once resolved.
    pub profile: Option<Profile>,
}

/// The names of every built-in scenario.
pub const SCENARIO_NAMES: [&str; 5] = ["smoke", "swarm", "small", "peak", "trace"];

fn builtin_text(name: &str) -> Option<&'static str> {
    match name {
        "smoke" => Some(include_str!("../scenarios/smoke.toml")),
        "swarm" => Some(include_str!("../scenarios/swarm.toml")),
        "small" => Some(include_str!("../scenarios/small.toml")),
        "peak" => Some(include_str!("../scenarios/peak.toml")),
        "trace" => Some(include_str!("../scenarios/trace.toml")),
        _ => None,
    }
}

/// When swarm faults may start: after the sessions are up.
const SWARM_FAULTS_FROM_MS: u64 = 5_000;

/// The `[[fault]]` tables of a scenario file, every other line blanked so that the schedule
/// reader's line numbers are the file's.
fn default_rate_limits() -> bool {
    true
}

fn fault_tables(text: &str) -> String {
    let mut inside = false;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let header = line.trim_start();
        if header.starts_with('[') {
            inside = header.starts_with("[[fault]]");
        }
        if inside {
            kept.push_str(line);
        }
        kept.push('\n');
    }
    kept
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// The built-in scenario called `name`.
    pub fn by_name(name: &str) -> Option<Scenario> {
        let text = builtin_text(name)?;
        let parsed = Self::parse(text);
        Some(parsed.unwrap_or_else(|e| panic!("built-in scenario {name} is invalid: {e}")))
    }

    /// A built-in scenario by name, or a scenario file by path (anything with a `/` or
    /// ending in `.toml`).
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some(scenario) = Self::by_name(name_or_path) {
            return Ok(scenario);
        }
        if !name_or_path.contains('/') && !name_or_path.ends_with(".toml") {
            return Err(format!(
                "unknown scenario {name_or_path:?}; known: {} (or a path to a .toml file)",
                SCENARIO_NAMES.join(", ")
            ));
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|e| format!("{name_or_path}: cannot read it: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{name_or_path}: {e}"))
    }

    /// Parses and checks a scenario file.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        // 1. The shape and types, with toml's spans for the line.
        let file: ScenarioFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().trim().to_string();
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            }
        })?;

        // 2. The listed faults, by the schedule file reader.
        //    A scenario without `[[fault]]` tables lists none (a schedule file must say so).
        let nodes = Roles::simulator().all();
        let tables = fault_tables(text);
        let listed = if tables.contains("[[fault]]") {
            chat_faults::parse_toml(&tables, Some(&nodes)).map_err(|e| format!("[[fault]]: {e}"))?
        } else {
            Schedule::default()
        };
        let schedule = match file.faults {
            FaultPlan::Listed => listed,
            FaultPlan::None | FaultPlan::Swarm if !listed.faults.is_empty() => {
                return Err("faults: [[fault]] tables need faults = \"listed\"".into());
            }
            FaultPlan::None | FaultPlan::Swarm => Schedule::default(),
        };

        // 3. Everything together.
        let scenario = Scenario {
            name: file.name,
            description: file.description,
            directory: file.directory,
            workload: file.workload,
            everyone: file.everyone,
            trace: file.trace,
            duration_ms: file.duration_ms,
            workload_end_ms: file.workload_end_ms,
            quiet_ms: file.quiet_ms,
            final_read_ms: file.final_read_ms,
            heartbeat_interval_ms: file.heartbeat_interval_ms,
            request_timeout_ms: file.request_timeout_ms,
            rate_limits: file.rate_limits,
            checks: file.checks,
            faults: file.faults,
            schedule,
            ring_engine: engine_config(),
            profile: None,
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks the values beyond their types; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |field: &str, why: String| Err(format!("{field}: {why}"));
        let share = |value: f64| (0.0..=1.0).contains(&value);
        if self.workload_end_ms >= self.final_read_ms {
            return fail(
                "workload_end_ms",
                format!(
                    "{} must come before final_read_ms {}",
                    self.workload_end_ms, self.final_read_ms
                ),
            );
        }
        if self.final_read_ms >= self.duration_ms {
            return fail(
                "final_read_ms",
                format!(
                    "{} must come before duration_ms {}",
                    self.final_read_ms, self.duration_ms
                ),
            );
        }
        if self.quiet_ms > self.workload_end_ms {
            return fail(
                "quiet_ms",
                format!("{} is longer than the workload", self.quiet_ms),
            );
        }
        if self.heartbeat_interval_ms == 0 || self.request_timeout_ms == 0 {
            return fail(
                "heartbeat_interval_ms / request_timeout_ms",
                "must be positive".into(),
            );
        }
        let d = &self.directory;
        if d.shape != DirectoryKind::Trace {
            if d.users == 0 || d.guilds == 0 || d.channels_per_guild == 0 {
                return fail(
                    "directory",
                    "users, guilds and channels_per_guild must be positive".into(),
                );
            }
            if d.shape == DirectoryKind::HeavyTailed
                && (!share(d.big_guild_share) || d.guilds_per_user < 1.0)
            {
                return fail(
                    "directory",
                    "big_guild_share must be in 0..=1 and guilds_per_user at least 1".into(),
                );
            }
        } else if self.trace.is_none() {
            return fail("trace", "a trace directory needs a [trace] table".into());
        }
        let w = &self.workload;
        if !share(w.burst_share) || !share(w.paged_read_share) {
            return fail(
                "workload",
                "burst_share and paged_read_share must be in 0..=1".into(),
            );
        }
        if let Some(everyone) = &self.everyone {
            if !share(everyone.sender_share) || everyone.at_ms >= self.workload_end_ms {
                return fail(
                    "everyone",
                    "sender_share must be in 0..=1 and at_ms before workload_end_ms".into(),
                );
            }
        }
        if let Some(trace) = &self.trace {
            if !(trace.speedup >= 0.0 && trace.speedup.is_finite()) {
                return fail(
                    "trace.speedup",
                    format!("{} is not a factor >= 0", trace.speedup),
                );
            }
        }
        if !(self.checks.availability_objective > 0.0 && self.checks.availability_objective <= 1.0)
        {
            return fail(
                "checks.availability_objective",
                format!("{} is not in (0, 1]", self.checks.availability_objective),
            );
        }
        Ok(())
    }

    /// About 20 users in 2 guilds for 60 s, with ring node 1 crashed from 20 s to 40 s.
    pub fn smoke() -> Scenario {
        Self::by_name("smoke").expect("smoke is built in")
    }

    /// Reads the trace a trace scenario replays: `path` if given, else the file's `path`.
    pub fn load_trace(&mut self, path: Option<PathBuf>) -> Result<(), String> {
        let Some(plan) = self.trace.as_mut() else {
            return match path {
                Some(_) => Err(format!(
                    "--trace: scenario {} replays no trace (use --scenario trace)",
                    self.name
                )),
                None => Ok(()),
            };
        };
        if let Some(path) = path {
            plan.path = Some(path);
        }
        let path = plan.path.clone().ok_or_else(|| {
            format!(
                "--trace: scenario {} needs a trace file or folder",
                self.name
            )
        })?;
        let trace = crate::trace::Trace::load(&path).map_err(|e| format!("--trace {e}"))?;
        plan.loaded = Some(std::sync::Arc::new(trace));
        Ok(())
    }

    /// The trace this scenario replays, once loaded.
    pub fn loaded_trace(&self) -> Option<&crate::trace::Trace> {
        self.trace.as_ref()?.loaded.as_deref()
    }

    /// The share of operations that must succeed.
    pub fn availability_objective(&self) -> f64 {
        self.checks.availability_objective
    }

    /// What the checks hold this run to.
    pub fn check_config(&self) -> CheckConfig {
        self.checks
    }

    /// When every fault must be over and the cluster is healed: the start of the quiet period.
    pub fn faults_end_ms(&self) -> u64 {
        self.workload_end_ms.saturating_sub(self.quiet_ms)
    }

    /// The scenario as run with `seed`: a swarm draws its profile and schedule from the seed
    /// (the same seed, the same faults); the others are fixed.
    pub fn resolve(mut self, seed: u64) -> Scenario {
        if self.faults == FaultPlan::Swarm {
            let end_ms = self.faults_end_ms();
            // The client host runs the workload and keeps the history; faults are for the
            // cluster.
            let mut roles = Roles::simulator();
            roles.others.retain(|node| node != "client");
            let swarm = Swarm::new(seed, SWARM_FAULTS_FROM_MS, end_ms, roles);

            // TODO(role-failover): single-node roles have no standby yet, so a crash that
            // never restarts would end the run's service for good; those restart at the end
            // of the fault window instead.
            let mut schedule = swarm.schedule();
            for fault in &mut schedule.faults {
                if let FaultKind::Crash {
                    restart_after_ms: restart @ None,
                    ..
                } = &mut fault.kind
                {
                    *restart = Some(end_ms.saturating_sub(fault.at_ms).max(1));
                }
            }
            // Faults the harness cannot apply are left out (each fault is independent of the
            // others, so the rest stay as drawn): disks exist only on ring nodes.
            schedule.faults.retain(|fault| match &fault.kind {
                FaultKind::Disk { node, .. } => node.starts_with("ring-"),
                _ => true,
            });
            self.schedule = schedule;
            self.profile = Some(swarm.profile);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_scenario_exists_and_ends_after_its_workload() {
        for name in SCENARIO_NAMES {
            let scenario = Scenario::by_name(name).unwrap();
            assert_eq!(scenario.name, name);
            assert!(scenario.workload_end_ms < scenario.final_read_ms);
            assert!(scenario.final_read_ms < scenario.duration_ms);
            let healed = scenario.schedule.all_healed_ms().unwrap_or(u64::MAX);
            assert!(
                healed <= scenario.faults_end_ms(),
                "faults heal before the final reads"
            );
        }
        assert!(Scenario::by_name("nope").is_none());
        let small = Scenario::by_name("small").unwrap();
        assert_eq!(small.directory.users, 1000);
        assert_eq!(small.directory.guilds, 200);
        assert_eq!(small.faults, FaultPlan::Swarm);
        assert_eq!(Scenario::smoke().schedule.faults.len(), 1);
    }

    #[test]
    fn a_swarm_draws_the_same_faults_from_the_same_seed_and_heals_in_time() {
        let swarm = |seed| Scenario::by_name("swarm").unwrap().resolve(seed);
        assert_eq!(swarm(7).schedule, swarm(7).schedule);
        assert_eq!(swarm(7).profile, swarm(7).profile);
        assert_ne!(swarm(7).schedule, swarm(8).schedule);
        for seed in 0..50 {
            let scenario = swarm(seed);
            for fault in &scenario.schedule.faults {
                assert!(fault.at_ms >= SWARM_FAULTS_FROM_MS, "{fault:?}");
            }
        }
    }

    #[test]
    fn a_bad_scenario_file_is_refused_naming_the_field_and_line() {
        let smoke = include_str!("../scenarios/smoke.toml");

        let unknown = smoke.replace("send_gap_ms_mean", "send_gap_ms_meen");
        let error = Scenario::parse(&unknown).unwrap_err();
        assert!(error.contains("send_gap_ms_meen"), "{error}");
        assert!(error.starts_with("line 18:"), "{error}");

        let typed = smoke.replace("users = 20", "users = \"many\"");
        let error = Scenario::parse(&typed).unwrap_err();
        assert!(error.starts_with("line 13:"), "{error}");

        let late = smoke.replace("final_read_ms = 54000", "final_read_ms = 70000");
        let error = Scenario::parse(&late).unwrap_err();
        assert!(error.starts_with("final_read_ms: 70000"), "{error}");

        let node = smoke.replace("node = \"ring-1\"", "node = \"ring-9\"");
        let error = Scenario::parse(&node).unwrap_err();
        assert!(error.starts_with("[[fault]]:"), "{error}");
        assert!(error.contains("ring-9"), "{error}");

        let error = Scenario::load("nosuch").unwrap_err();
        assert!(
            error.contains("known: smoke, swarm, small, peak, trace"),
            "{error}"
        );
    }
}
