//! `chatsim`: run a seeded simulation of the chat cluster and check what its clients saw.
//!
//! `chatsim run --seed N [--scenario NAME] [--out DIR]` prints the seed, the scenario and its
//! fault schedule, runs it, prints a summary and writes `DIR/report.json` and `DIR/trace.jsonl`.
//! The exit status tells the verdict: 0 pass, 2 bad arguments, 3 a safety violation, 4 a
//! liveness violation, 5 the availability objective missed, 6 the simulation crashed.

use std::path::PathBuf;
use std::process::ExitCode;

use chat_sim::scenario::{Scenario, SCENARIO_NAMES};
use clap::{Parser, Subcommand};

/// Seeded, deterministic simulation of the chat cluster under faults.
#[derive(Debug, Parser)]
#[command(name = "chatsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario with one seed.
    Run {
        /// The seed (an unsigned 64-bit integer); the same seed replays the same run.
        #[arg(long)]
        seed: u64,
        /// The scenario to run.
        #[arg(long, default_value = "smoke", value_parser = parse_scenario)]
        scenario: Box<Scenario>,
        /// The quiet period in ms: faults are over and healed this long before the workload
        /// ends, and the workload keeps going through it [default: the scenario's].
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=40_000))]
        quiet_ms: Option<u64>,
        /// A fault schedule file (TOML, or JSON if it ends in .json) replacing the scenario's.
        #[arg(long, value_name = "FILE")]
        schedule: Option<PathBuf>,
        /// Where to write report.json and trace.jsonl [default: target/chatsim/SCENARIO-SEED].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the built-in scenarios.
    Scenarios,
}

fn parse_scenario(name: &str) -> Result<Box<Scenario>, String> {
    Scenario::by_name(name).map(Box::new).ok_or_else(|| {
        format!(
            "unknown scenario {name:?}; known: {}",
            SCENARIO_NAMES.join(", ")
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenarios => {
            for name in SCENARIO_NAMES {
                if let Some(scenario) = Scenario::by_name(name) {
                    println!("{name:<10} {}", scenario.description);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            seed,
            scenario,
            schedule,
            quiet_ms,
            out,
        } => {
            // The exact command that replays this run.
            let mut replay = format!(
                "cargo chatsim run --seed {seed} --scenario {}",
                scenario.name
            );
            let mut scenario = *scenario;
            if let Some(quiet_ms) = quiet_ms {
                scenario.quiet_ms = quiet_ms;
                replay.push_str(&format!(" --quiet-ms {quiet_ms}"));
            }
            let mut scenario = scenario.resolve(seed);
            if let Some(path) = schedule {
                match load_schedule(&path) {
                    Ok(schedule) => {
                        scenario.schedule = schedule;
                        scenario.profile = None;
                        replay.push_str(&format!(" --schedule {}", path.display()));
                    }
                    Err(message) => {
                        eprintln!("chatsim: --schedule {}: {message}", path.display());
                        return ExitCode::from(2);
                    }
                }
            }
            if let Err(message) = fits_before_quiet(&scenario) {
                eprintln!("chatsim: {message}");
                return ExitCode::from(2);
            }
            run(seed, &scenario, &replay, out)
        }
    }
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
fn run(_seed: u64, _scenario: &Scenario, _replay: &str, _out: Option<PathBuf>) -> ExitCode {
    eprintln!(
        "chatsim: this binary was built without `--cfg madsim`, so it has no simulator. \
         Build and run it with `cargo chatsim run --seed N` (and leave RUSTFLAGS unset: it \
         replaces the flags the alias sets)."
    );
    ExitCode::from(2)
}

#[cfg(madsim)]
fn run(seed: u64, scenario: &Scenario, replay: &str, out: Option<PathBuf>) -> ExitCode {
    match sim::run(seed, scenario, replay.to_string(), out) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            eprintln!("chatsim: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(madsim)]
mod sim {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::PathBuf;

    use chat_reports::report::{EXIT_CRASH, EXIT_USAGE};
    use chat_sim::runner;
    use chat_sim::scenario::Scenario;

    pub fn run(
        seed: u64,
        scenario: &Scenario,
        replay: String,
        out: Option<PathBuf>,
    ) -> Result<i32, String> {
        // 0. The output dir must be usable before any time is spent simulating.
        let dir = out.unwrap_or_else(|| {
            PathBuf::from("target")
                .join("chatsim")
                .join(format!("{}-{seed}", scenario.name))
        });
        if let Err(error) = std::fs::create_dir_all(&dir) {
            eprintln!(
                "chatsim: --out {}: cannot use it as a directory: {error}",
                dir.display()
            );
            return Ok(EXIT_USAGE);
        }
        let schedule = serde_json::to_string(&scenario.schedule).map_err(|e| e.to_string())?;
        println!(
            "chatsim seed {seed} scenario {} ({})",
            scenario.name, scenario.description
        );
        println!("chatsim schedule {schedule}");
        if let Some(profile) = &scenario.profile {
            let profile = serde_json::to_string(profile).map_err(|e| e.to_string())?;
            println!("chatsim profile {profile}");
        }

        // 1. Simulate; a panic anywhere in the cluster is a crash of the run.
        let output = match catch_unwind(AssertUnwindSafe(|| runner::run(seed, scenario))) {
            Ok(output) => output,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                eprintln!("chatsim: the simulation crashed: {message}");
                eprintln!("chatsim: replay with: {replay}");
                return Ok(EXIT_CRASH);
            }
        };

        // 2. Check and report.
        let report = output.report(seed, scenario, replay);
        print!("{}", report.summary());

        // 3. Write the report and the trace.
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        let report_path = dir.join("report.json");
        std::fs::write(&report_path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
        let trace_path = dir.join("trace.jsonl");
        std::fs::write(&trace_path, &output.trace)
            .map_err(|e| format!("cannot write {}: {e}", trace_path.display()))?;
        println!("report  {}", report_path.display());
        println!("trace   {}", trace_path.display());
        Ok(report.exit_code)
    }
}
