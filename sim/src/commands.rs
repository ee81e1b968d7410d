//! The simulator's commands (built only under `--cfg madsim`): run, sweep, replay and
//! check-determinism. See the binary's docs for what each prints and writes.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_reports::markdown;
use chat_reports::plots::{self, PlotInput};
use chat_reports::report::{trace_hash, Report, EXIT_CRASH, EXIT_USAGE};
use chat_reports::sweep::{SeedOutcome, SweepReport};
use chat_sim::runner::{self, RunOutput};
use chat_sim::scenario::Scenario;

use super::RunArgs;

/// Exit status when two runs of one seed differed.
const EXIT_NONDETERMINISTIC: i32 = 7;

fn usage(message: impl std::fmt::Display) -> i32 {
    eprintln!("chatsim: {message}");
    EXIT_USAGE
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs the simulation, turning a panic anywhere in the cluster into an error.
fn simulate(seed: u64, scenario: &Scenario) -> Result<RunOutput, String> {
    catch_unwind(AssertUnwindSafe(|| runner::run(seed, scenario))).map_err(|p| panic_text(&*p))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `chatsim run`.
pub fn run(seed: u64, args: &RunArgs, out: Option<PathBuf>, plots: bool) -> i32 {
    // 0. The scenario and the output dir must be usable before any time is spent simulating.
    let scenario = match args.scenario(seed) {
        Ok(scenario) => scenario,
        Err(message) => return usage(message),
    };
    let dir = match super::out_dir(out, &format!("{}-{seed}", scenario.name)) {
        Ok(dir) => dir,
        Err(message) => return usage(message),
    };
    let replay = args.replay_command(seed);
    println!(
        "chatsim seed {seed} scenario {} ({})",
        scenario.name, scenario.description
    );
    println!(
        "chatsim schedule {}",
        serde_json::to_string(&scenario.schedule).unwrap_or_default()
    );
    if let Some(profile) = &scenario.profile {
        println!(
            "chatsim profile {}",
            serde_json::to_string(profile).unwrap_or_default()
        );
    }
    if let Some(trace) = scenario.loaded_trace() {
        println!(
            "chatsim trace {} messages by {} authors in {} channels over {:.1} days, \
             replayed {:.0}x faster",
            trace.messages.len(),
            trace.authors.len(),
            trace.channels.len(),
            trace.span_ms() as f64 / 86_400_000.0,
            chat_sim::workload::trace_speedup(&scenario, trace)
        );
        let (replies, edits, reactions) = trace.interaction_counts();
        println!("chatsim trace {replies} replies, {edits} edits, {reactions} reactions");
    }

    // 1. Simulate; a panic anywhere in the cluster is a crash of the run.
    let output = match simulate(seed, &scenario) {
        Ok(output) => output,
        Err(message) => {
            eprintln!("chatsim: the simulation crashed: {message}");
            eprintln!("chatsim: replay with: {replay}");
            return EXIT_CRASH;
        }
    };

    // 2. Check, report, write.
    let report = output.report(seed, &scenario, replay);
    print!("{}", report.summary());
    match write_outputs(&dir, &scenario, &output, &report, plots) {
        Ok(()) => report.exit_code,
        Err(message) => {
            eprintln!("chatsim: {message}");
            1
        }
    }
}

fn write_outputs(
    dir: &Path,
    scenario: &Scenario,
    output: &RunOutput,
    report: &Report,
    plots: bool,
) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let report_path = dir.join("report.json");
    write(&report_path, (json + "\n").as_bytes())?;
    let trace_path = dir.join("trace.jsonl");
    write(&trace_path, &output.trace)?;

    let mut plot_names = Vec::new();
    if plots {
        let input = PlotInput {
            history: &output.history,
            fault_windows_ms: scenario.schedule.active_windows_ms(scenario.duration_ms),
            windows: &report.availability_windows,
            objective: report.availability_objective,
            duration_ms: scenario.duration_ms,
            node_load: &report.node_load,
        };
        for path in plots::write_all(&input, dir)? {
            if let Some(name) = path.file_name() {
                plot_names.push(name.to_string_lossy().into_owned());
            }
        }
    }
    let summary_path = dir.join("summary.md");
    write(
        &summary_path,
        markdown::summary(report, &plot_names).as_bytes(),
    )?;
    println!("report  {}", report_path.display());
    println!("trace   {}", trace_path.display());
    println!("summary {}", summary_path.display());
    if plots {
        println!("plots   {} ({})", dir.display(), plot_names.join(", "));
    }
    Ok(())
}

/// `chatsim replay`: the run in a child process whose tracing goes to `DIR/replay.log`.
pub fn replay(seed: u64, args: &RunArgs, log: &str, out: Option<PathBuf>) -> i32 {
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(log) {
        return usage(format!("--log {log:?}: {error}"));
    }
    let scenario = match args.scenario(seed) {
        Ok(scenario) => scenario,
        Err(message) => return usage(message),
    };
    let dir = match super::out_dir(out, &format!("replay-{}-{seed}", scenario.name)) {
        Ok(dir) => dir,
        Err(message) => return usage(message),
    };
    let log_path = dir.join("replay.log");
    let log_file = match std::fs::File::create(&log_path) {
        Ok(file) => file,
        Err(error) => return usage(format!("cannot write {}: {error}", log_path.display())),
    };
    let status = self_command()
        .and_then(|mut command| {
            command
                .arg("run")
                .args(["--seed", &seed.to_string()])
                .args(args.to_args())
                .arg("--out")
                .arg(&dir)
                .env("RUST_LOG", log)
                .stderr(log_file)
                .status()
                .map_err(|e| format!("cannot start the run: {e}"))
        })
        .map(|status| status.code().unwrap_or(1));
    match status {
        Ok(code) => {
            println!("log     {} (filter {log})", log_path.display());
            code
        }
        Err(message) => {
            eprintln!("chatsim: {message}");
            1
        }
    }
}

fn self_command() -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find chatsim itself: {e}"))?;
    Ok(Command::new(exe))
}

/// `chatsim check-determinism`.
pub fn check_determinism(seed: u64, args: &RunArgs) -> i32 {
    let scenario = match args.scenario(seed) {
        Ok(scenario) => scenario,
        Err(message) => return usage(message),
    };
    let mut runs = Vec::new();
    for attempt in 1..=2 {
        match simulate(seed, &scenario) {
            Ok(output) => runs.push(output),
            Err(message) => {
                eprintln!("chatsim: run {attempt} crashed: {message}");
                return EXIT_CRASH;
            }
        }
    }
    let (first, second) = (&runs[0], &runs[1]);
    let (hash_a, hash_b) = (trace_hash(&first.trace), trace_hash(&second.trace));
    println!("run 1   trace {hash_a} ({} events)", first.events);
    println!("run 2   trace {hash_b} ({} events)", second.events);
    if hash_a == hash_b && first.trace == second.trace {
        println!("deterministic: seed {seed} gave the same trace twice");
        return 0;
    }
    let lines_a: Vec<&[u8]> = first.trace.split(|&b| b == b'\n').collect();
    let lines_b: Vec<&[u8]> = second.trace.split(|&b| b == b'\n').collect();
    let index = lines_a
        .iter()
        .zip(&lines_b)
        .position(|(a, b)| a != b)
        .unwrap_or(lines_a.len().min(lines_b.len()));
    let show = |lines: &[&[u8]]| {
        lines
            .get(index)
            .map_or("(the trace ended)".to_string(), |l| {
                String::from_utf8_lossy(l).into_owned()
            })
    };
    println!("NONDETERMINISTIC: the traces first differ at event {index} (from 0)");
    println!("run 1   {}", show(&lines_a));
    println!("run 2   {}", show(&lines_b));
    EXIT_NONDETERMINISTIC
}

/// One seed's child process.
struct Running {
    seed: u64,
    child: Child,
    dir: PathBuf,
}

/// `chatsim sweep`.
pub fn sweep(
    label: &str,
    seeds: Vec<u64>,
    jobs: u64,
    args: &RunArgs,
    out: Option<PathBuf>,
    plots: bool,
) -> i32 {
    // 1. The scenario must load before anything starts.
    let Some(&first) = seeds.first() else {
        return usage(format!("--shard: no seed of {label} falls in this shard"));
    };
    let scenario = match args.scenario(first) {
        Ok(scenario) => scenario,
        Err(message) => return usage(message),
    };
    let mut pending: VecDeque<u64> = seeds.into_iter().collect();
    let dir = match super::out_dir(out, &format!("sweep-{}", scenario.name)) {
        Ok(dir) => dir,
        Err(message) => return usage(message),
    };
    println!(
        "sweep {} seeds {label} ({} here), {jobs} at a time, into {}",
        scenario.name,
        pending.len(),
        dir.display()
    );

    // 2. Children, at most `jobs` at once, behind a progress bar.
    let bar = indicatif::ProgressBar::new(pending.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds {msg} [{elapsed_precise}, eta {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut running: Vec<Running> = Vec::new();
    let mut outcomes: Vec<SeedOutcome> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < usize::try_from(jobs).unwrap_or(1) {
            let Some(seed) = pending.pop_front() else {
                break;
            };
            match start_seed(seed, args, &dir, plots) {
                Ok(child) => running.push(child),
                Err(message) => {
                    bar.abandon();
                    eprintln!("chatsim: seed {seed}: {message}");
                    return 1;
                }
            }
        }
        let mut index = 0;
        while index < running.len() {
            match running[index].child.try_wait() {
                Ok(Some(status)) => {
                    let done = running.swap_remove(index);
                    let code = status.code().unwrap_or(1);
                    let outcome = finish_seed(&done, code, args);
                    if outcome.exit_code != 0 {
                        bar.println(format!(
                            "seed {} {} (exit {}): {}",
                            outcome.seed, outcome.class, outcome.exit_code, outcome.replay_command
                        ));
                    }
                    outcomes.push(outcome);
                    let failing = outcomes.iter().filter(|o| o.exit_code != 0).count();
                    bar.set_message(format!("({failing} failing)"));
                    bar.inc(1);
                }
                Ok(None) => index += 1,
                Err(error) => {
                    eprintln!("chatsim: seed {}: {error}", running[index].seed);
                    index += 1;
                }
            }
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "the sweep waits for child processes, outside any simulation"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
    bar.finish();

    // 3. The merged report.
    let sweep = SweepReport::merge(&scenario.name, outcomes);
    let summary = sweep.summary();
    print!("{summary}");
    let json = serde_json::to_string_pretty(&sweep).unwrap_or_default();
    let written = write(&dir.join("sweep.json"), (json + "\n").as_bytes())
        .and_then(|()| write(&dir.join("sweep.md"), summary.as_bytes()));
    if let Err(message) = written {
        eprintln!("chatsim: {message}");
        return 1;
    }
    println!("sweep report {}", dir.join("sweep.json").display());
    sweep.exit_code
}

fn start_seed(seed: u64, args: &RunArgs, dir: &Path, plots: bool) -> Result<Running, String> {
    let seed_dir = dir.join(format!("seed-{seed}"));
    super::create_dir(&seed_dir)?;
    // A report left by an earlier sweep must not stand in for this run's.
    let _ = std::fs::remove_file(seed_dir.join("report.json"));
    let output = std::fs::File::create(seed_dir.join("output.txt"))
        .map_err(|e| format!("cannot write in {}: {e}", seed_dir.display()))?;
    let errors = output
        .try_clone()
        .map_err(|e| format!("cannot write in {}: {e}", seed_dir.display()))?;
    let mut command = self_command()?;
    command
        .arg("run")
        .args(["--seed", &seed.to_string()])
        .args(args.to_args())
        .arg("--out")
        .arg(&seed_dir)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors);
    if !plots {
        command.arg("--no-plots");
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start a run: {e}"))?;
    Ok(Running {
        seed,
        child,
        dir: seed_dir,
    })
}

fn finish_seed(done: &Running, code: i32, args: &RunArgs) -> SeedOutcome {
    let report = std::fs::read_to_string(done.dir.join("report.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Report>(&text).ok())
        .filter(|report| report.seed == done.seed);
    match report {
        Some(report) => SeedOutcome::from_report(&report),
        None => SeedOutcome::without_report(done.seed, code, args.replay_command(done.seed)),
    }
}
