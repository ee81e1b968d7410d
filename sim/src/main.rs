//! `chatsim`: seeded simulations of the chat cluster, checked from what its clients saw.
//!
//! - `run --seed N`: one run; prints seed, scenario, profile, the summary; writes
//!   `report.json`, `trace.jsonl`, `summary.md` and the plots to `--out DIR`.
//! - `sweep --seeds A..B --jobs N [--shard i/n]`: one child process per seed (exact replay),
//!   a progress bar, the failing seeds with the command that replays each, and a merged
//!   report (`sweep.json`, `sweep.md`).
//! - `sweep-merge SHARD...`: merges the `sweep.json` of shards run on several machines (the
//!   files, or the directories holding them) into one sweep report; works in either build.
//! - `replay --seed N --log FILTER`: the same run with tracing at a RUST_LOG-style filter
//!   into `DIR/replay.log`.
//! - `check-determinism --seed N`: two runs; the trace hashes compared, and on a mismatch
//!   the first differing trace event printed.
//!
//! Exit status: 0 pass, 2 bad arguments or input, 3 a safety violation, 4 a liveness
//! violation, 5 the availability objective missed, 6 the simulation crashed, 7 two runs of
//! one seed differed.

use std::path::PathBuf;
use std::process::ExitCode;

use chat_sim::scenario::{Scenario, SCENARIO_NAMES};
use clap::{Args, Parser, Subcommand};

/// Seeded, deterministic simulation of the chat cluster under faults.
#[derive(Debug, Parser)]
#[command(name = "chatsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What a run is: the scenario and its overrides.
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// A built-in scenario (see `chatsim scenarios`) or a scenario file (.toml).
    #[arg(long, default_value = "smoke")]
    scenario: String,
    /// The quiet period in ms: faults are over and healed this long before the workload
    /// ends, and the workload keeps going through it [default: the scenario's].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=40_000))]
    quiet_ms: Option<u64>,
    /// A fault schedule file (TOML, or JSON if it ends in .json) replacing the scenario's.
    #[arg(long, value_name = "FILE")]
    schedule: Option<PathBuf>,
    /// The availability objective in percent, e.g. 99.99 [default: the scenario's].
    #[arg(long, value_name = "PERCENT", value_parser = parse_slo)]
    slo: Option<f64>,
    /// Overrides the scenario's user count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    users: Option<u64>,
    /// Overrides the scenario's guild count.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    guilds: Option<u64>,
    /// Overrides the mean gap between one user's sends, in ms.
    #[arg(long, value_name = "MS")]
    send_gap_ms: Option<u64>,
    /// A DiscordChatExporter JSON export (a channel file, or a folder of them) to replay;
    /// with `--scenario trace`.
    #[arg(long, value_name = "PATH")]
    trace: Option<PathBuf>,
    /// Trace time divided by this is simulated time (0 fits the trace into the run).
    #[arg(long, value_name = "FACTOR", value_parser = parse_speedup)]
    speedup: Option<f64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario with one seed.
    Run {
        /// The seed (an unsigned 64-bit integer); the same seed replays the same run.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        run: RunArgs,
        /// Where to write the report, trace, summary and plots
        /// [default: target/chatsim/SCENARIO-SEED].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the plots (a sweep's seeds do).
        #[arg(long)]
        no_plots: bool,
    },
    /// Run many seeds, one process each, and merge their reports.
    Sweep {
        /// The seeds, `A..B` (A included, B not) or `A..=B`.
        #[arg(long, value_parser = parse_seeds)]
        seeds: SeedRange,
        /// How many seeds run at once.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
        jobs: u64,
        /// Run only every n-th seed from the i-th (0-based): `--shard 0/4` … `--shard 3/4`.
        #[arg(long, value_parser = parse_shard)]
        shard: Option<(u64, u64)>,
        #[command(flatten)]
        run: RunArgs,
        /// Where the seeds' reports and the merged one go
        /// [default: target/chatsim/sweep-SCENARIO].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw each seed's plots too.
        #[arg(long)]
        plots: bool,
    },
    /// Merge the sweep reports of shards run elsewhere (`sweep --shard i/n`) into one.
    SweepMerge {
        /// Each shard's `sweep.json`, or the directory a shard's sweep wrote it to.
        #[arg(required = true, value_name = "SHARD")]
        shards: Vec<PathBuf>,
        /// Where the merged `sweep.json` and `sweep.md` go
        /// [default: target/chatsim/sweep-SCENARIO-merged].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one seed again with full tracing into DIR/replay.log.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        run: RunArgs,
        /// What to log, RUST_LOG-style (e.g. `debug`, `chat_system::gateway=trace,info`).
        #[arg(long, default_value = "debug")]
        log: String,
        /// Where to write [default: target/chatsim/replay-SCENARIO-SEED].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one seed twice and compare the trace hashes.
    CheckDeterminism {
        /// The seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// List the built-in scenarios.
    Scenarios,
}

/// A range of seeds.
#[derive(Debug, Clone, Copy)]
struct SeedRange {
    first: u64,
    /// Excluded.
    end: u64,
}

fn parse_seeds(text: &str) -> Result<SeedRange, String> {
    let (first, last, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!("{text:?} is not a range A..B or A..=B"));
    };
    let number = |part: &str, which: &str| {
        part.trim()
            .parse::<u64>()
            .map_err(|_| format!("{which} {part:?} of {text:?} is not an unsigned integer"))
    };
    let first = number(first, "start")?;
    let end = number(last, "end")?.saturating_add(u64::from(inclusive));
    if end <= first {
        return Err(format!("{text:?} holds no seed"));
    }
    Ok(SeedRange { first, end })
}

impl SeedRange {
    /// The seeds of shard `i` of `n` (every n-th from the i-th), or all of them.
    fn seeds(&self, shard: Option<(u64, u64)>) -> Vec<u64> {
        (self.first..self.end)
            .filter(|seed| shard.is_none_or(|(i, n)| (seed - self.first) % n == i))
            .collect()
    }

    fn label(&self, shard: Option<(u64, u64)>) -> String {
        let shard = shard.map_or(String::new(), |(i, n)| format!(" shard {i}/{n}"));
        format!("{}..{}{shard}", self.first, self.end)
    }
}

fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let parse = || {
        let (i, n) = text.split_once('/')?;
        Some((i.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?))
    };
    match parse() {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(format!("{text:?} is not i/n with 0 <= i < n")),
    }
}

fn parse_slo(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(percent) if percent > 0.0 && percent <= 100.0 => Ok(percent / 100.0),
        _ => Err(format!(
            "{text:?} is not a percentage in (0, 100], e.g. 99.99"
        )),
    }
}

fn parse_speedup(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor >= 0.0 && factor.is_finite() => Ok(factor),
        _ => Err(format!("{text:?} is not a factor >= 0")),
    }
}

impl RunArgs {
    /// The arguments as they are passed on (to a sweep's children, in replay commands).
    #[cfg_attr(
        not(madsim),
        allow(dead_code, reason = "only the simulator passes them on")
    )]
    fn to_args(&self) -> Vec<String> {
        let mut args = vec!["--scenario".to_string(), self.scenario.clone()];
        let mut push = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(name.to_string());
                args.push(value);
            }
        };
        push("--quiet-ms", self.quiet_ms.map(|v| v.to_string()));
        push(
            "--schedule",
            self.schedule.as_ref().map(|p| p.display().to_string()),
        );
        push("--slo", self.slo.map(|v| format!("{}", v * 100.0)));
        push("--users", self.users.map(|v| v.to_string()));
        push("--guilds", self.guilds.map(|v| v.to_string()));
        push("--send-gap-ms", self.send_gap_ms.map(|v| v.to_string()));
        push(
            "--trace",
            self.trace.as_ref().map(|p| p.display().to_string()),
        );
        push("--speedup", self.speedup.map(|v| v.to_string()));
        args
    }

    #[cfg_attr(not(madsim), allow(dead_code, reason = "only the simulator replays"))]
    fn replay_command(&self, seed: u64) -> String {
        format!(
            "cargo chatsim run --seed {seed} {}",
            self.to_args().join(" ")
        )
    }

    /// The scenario as this run has it: loaded, overridden, resolved for `seed`, checked.
    fn scenario(&self, seed: u64) -> Result<Scenario, String> {
        let mut scenario = Scenario::load(&self.scenario).map_err(|e| format!("--scenario {e}"))?;

        // 1. Overrides, then the values checked again.
        if let Some(quiet_ms) = self.quiet_ms {
            scenario.quiet_ms = quiet_ms;
        }
        if let Some(slo) = self.slo {
            scenario.checks.availability_objective = slo;
        }
        if let Some(users) = self.users {
            scenario.directory.users = usize::try_from(users).unwrap_or(usize::MAX);
        }
        if let Some(guilds) = self.guilds {
            scenario.directory.guilds = usize::try_from(guilds).unwrap_or(usize::MAX);
        }
        if let Some(gap) = self.send_gap_ms {
            scenario.workload.send_gap_ms_mean = gap;
        }
        if let (Some(speedup), Some(trace)) = (self.speedup, scenario.trace.as_mut()) {
            trace.speedup = speedup;
        }
        scenario.validate()?;

        // 2. The seed's faults, a schedule file, the trace.
        let mut scenario = scenario.resolve(seed);
        if let Some(path) = &self.schedule {
            let schedule =
                load_schedule(path).map_err(|e| format!("--schedule {}: {e}", path.display()))?;
            scenario.schedule = schedule;
            scenario.profile = None;
        }
        scenario.load_trace(self.trace.clone())?;
        fits_before_quiet(&scenario)?;
        Ok(scenario)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Scenarios => {
            for name in SCENARIO_NAMES {
                if let Some(scenario) = Scenario::by_name(name) {
                    println!("{name:<10} {}", scenario.description);
                }
            }
            0
        }
        Command::Run {
            seed,
            run,
            out,
            no_plots,
        } => commands::run(seed, &run, out, !no_plots),
        Command::Sweep {
            seeds,
            jobs,
            shard,
            run,
            out,
            plots,
        } => {
            let label = seeds.label(shard);
            commands::sweep(&label, seeds.seeds(shard), jobs, &run, out, plots)
        }
        Command::SweepMerge { shards, out } => sweep_merge(&shards, out),
        Command::Replay {
            seed,
            run,
            log,
            out,
        } => commands::replay(seed, &run, &log, out),
        Command::CheckDeterminism { seed, run } => commands::check_determinism(seed, &run),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `chatsim sweep-merge`: reads every shard, merges them, writes and prints the report.
fn sweep_merge(inputs: &[PathBuf], out: Option<PathBuf>) -> i32 {
    use chat_reports::sweep::{merge_shards, Shard};

    // 1. Every shard, read and parsed; the first bad one stops the merge.
    let mut shards = Vec::new();
    for input in inputs {
        let path = if input.is_dir() {
            input.join("sweep.json")
        } else {
            input.clone()
        };
        let source = path.display().to_string();
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("{source}: cannot read it: {e}"))
            .and_then(|text| Shard::parse(&source, &text));
        match parsed {
            Ok(shard) => shards.push(shard),
            Err(message) => {
                eprintln!("chatsim: sweep-merge: {message}");
                return 2;
            }
        }
    }

    // 2. The merge, refused on a conflict.
    let sweep = match merge_shards(&shards) {
        Ok(sweep) => sweep,
        Err(message) => {
            eprintln!("chatsim: sweep-merge: {message}");
            return 2;
        }
    };

    // 3. Written beside the shards' reports, and printed.
    let summary = sweep.summary();
    let name = format!("sweep-{}-merged", sweep.scenario);
    let written = out_dir(out, &name).and_then(|dir| {
        let json = serde_json::to_string_pretty(&sweep).map_err(|e| e.to_string())?;
        for (file, text) in [("sweep.json", json + "\n"), ("sweep.md", summary.clone())] {
            let path = dir.join(file);
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(dir)
    });
    let dir = match written {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("chatsim: sweep-merge: {message}");
            return 2;
        }
    };
    println!("merged {} shards", shards.len());
    print!("{summary}");
    println!("sweep report {}", dir.join("sweep.json").display());
    sweep.exit_code
}

/// The output directory: `--out` if given, else `target/chatsim/NAME`; created if need be.
fn out_dir(out: Option<PathBuf>, name: &str) -> Result<PathBuf, String> {
    let dir = out.unwrap_or_else(|| PathBuf::from("target").join("chatsim").join(name));
    create_dir(&dir)?;
    Ok(dir)
}

fn create_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("--out {}: cannot use it as a directory: {e}", dir.display()))
}

/// Every fault must be over by the start of the quiet period (a crash may stay permanent).
fn fits_before_quiet(scenario: &Scenario) -> Result<(), String> {
    let end_ms = scenario.faults_end_ms();
    for (index, fault) in scenario.schedule.faults.iter().enumerate() {
        let late = match fault.heal_ms() {
            Some(heal_ms) => heal_ms > end_ms,
            None => fault.at_ms > end_ms,
        };
        if late {
            return Err(format!(
                "fault {index} ({} at {} ms) does not end by {end_ms} ms, where the quiet \
                 period of {} ms before the workload ends at {} ms begins (see --quiet-ms)",
                fault.kind_name(),
                fault.at_ms,
                scenario.quiet_ms,
                scenario.workload_end_ms
            ));
        }
    }
    Ok(())
}

/// Reads and checks a schedule file against the simulator's node names.
fn load_schedule(path: &std::path::Path) -> Result<chat_faults::Schedule, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let nodes = chat_faults::Roles::simulator().all();
    let json = path.extension().is_some_and(|e| e == "json");
    let parsed = if json {
        chat_faults::parse_json(&text, Some(&nodes))
    } else {
        chat_faults::parse_toml(&text, Some(&nodes))
    };
    parsed.map_err(|error| error.to_string())
}

#[cfg(not(madsim))]
mod commands {
    use std::path::PathBuf;

    use super::RunArgs;

    /// Checks the arguments as a simulator build would, then refuses.
    fn refuse(seed: u64, args: &RunArgs) -> i32 {
        if let Err(message) = args.scenario(seed) {
            eprintln!("chatsim: {message}");
            return 2;
        }
        eprintln!(
            "chatsim: this binary was built without `--cfg madsim`, so it has no simulator. \
             Build and run it with `cargo chatsim run --seed N` (and leave RUSTFLAGS unset: \
             it replaces the flags the alias sets)."
        );
        2
    }

    pub fn run(seed: u64, args: &RunArgs, _out: Option<PathBuf>, _plots: bool) -> i32 {
        refuse(seed, args)
    }

    pub fn sweep(
        _label: &str,
        seeds: Vec<u64>,
        _jobs: u64,
        args: &RunArgs,
        _out: Option<PathBuf>,
        _plots: bool,
    ) -> i32 {
        refuse(seeds.first().copied().unwrap_or(0), args)
    }

    pub fn replay(seed: u64, args: &RunArgs, _log: &str, _out: Option<PathBuf>) -> i32 {
        refuse(seed, args)
    }

    pub fn check_determinism(seed: u64, args: &RunArgs) -> i32 {
        refuse(seed, args)
    }
}

#[cfg(madsim)]
#[path = "commands.rs"]
mod commands;
