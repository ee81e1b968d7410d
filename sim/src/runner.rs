//! Runs one scenario on madsim hosts and returns what its clients saw.
//!
//! Topology: `ring-1..3` (10.0.1.1–3), `api-1..2` (10.0.2.1–2), `guild-1..3` (10.0.3.1–3),
//! `gateway` (10.0.4.1), `data-1..2` (10.0.5.1–2) and `client` (10.0.9.1), which runs every
//! simulated user; the members of each guild alternate between the API nodes, so concurrent
//! sends to one channel come through different API nodes. Each ring node keeps a
//! [`SimDisk`] owned by the harness, so its durable bytes outlive a crash and its unsynced
//! bytes do not; every node but `client` reads a [`NodeClock`] the harness owns. Every node
//! also counts the requests it serves into a [`NodeLoad`] the harness keeps (so the count
//! outlives a crash), which the report shows per node and per second. The nemesis, on the
//! harness's own node, applies the fault schedule; link faults live in this thread's table
//! (`chat_system::env::link`), emptied before and after every run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_reports::checks::CheckResult;
use chat_reports::history::History;
use chat_reports::report::{trace_hash, Report, RunInfo};
use chat_system::cluster::Topology;
use chat_system::directory::{Directory, SharedDirectory};
use chat_system::env::clock::NodeClock;
use chat_system::env::disk::{Disk, SimDisk};
use chat_system::load::{LoadSnapshot, NodeLoad};
use chat_system::net::runtime_instant;
use chat_system::{api, data, gateway, guild, ring};
use madsim::runtime::{Handle, Runtime};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::nemesis::Nemesis;
use crate::recorder::Recorder;
use crate::scenario::Scenario;

/// What a finished run hands to the report.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// What the clients saw.
    pub history: History,
    /// The trace, one JSON line per event.
    pub trace: Vec<u8>,
    /// Events in the trace.
    pub events: u64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// Error-level events the cluster logged: each is a broken invariant.
    pub invariant_errors: InvariantErrors,
    /// Whether every ring replica's Merkle root was equal after heal and repair.
    pub convergence: CheckResult,
    /// What each node served, by node name.
    pub node_load: BTreeMap<String, LoadSnapshot>,
}

impl RunOutput {
    /// Checks this run of `scenario` with `seed` and builds its report; `replay` is the
    /// command that replays it.
    pub fn report(&self, seed: u64, scenario: &Scenario, replay: String) -> Report {
        let info = RunInfo {
            seed,
            scenario: scenario.name.to_string(),
            trace_hash: trace_hash(&self.trace),
            events: self.events,
            sim_seconds: self.sim_seconds,
            wall_seconds: self.wall_seconds,
            schedule: scenario.schedule.clone(),
            profile: scenario.profile.clone(),
            check_config: scenario.check_config(),
            replay_command: replay,
            harness_checks: self.harness_checks(),
            node_load: self
                .node_load
                .iter()
                .map(|(name, load)| {
                    let report = chat_reports::report::NodeLoad {
                        total: load.total(),
                        by_kind: load.by_kind.clone(),
                        per_second: load.per_second.clone(),
                    };
                    (name.clone(), report)
                })
                .collect(),
        };
        Report::build(info, &self.history)
    }

    /// The checks the harness made itself, by name, for the report.
    pub fn harness_checks(&self) -> BTreeMap<String, CheckResult> {
        let invariants = CheckResult {
            violations: self.invariant_errors.count,
            examples: self.invariant_errors.examples.clone(),
            ..CheckResult::default()
        };
        let mut checks = BTreeMap::new();
        checks.insert("invariants".to_string(), invariants);
        checks.insert("convergence".to_string(), self.convergence.clone());
        checks
    }
}

/// Error-level tracing events of one run: how many, and the first few.
#[derive(Debug, Clone, Default)]
pub struct InvariantErrors {
    /// How many were logged.
    pub count: u64,
    /// The first few, as "target: fields".
    pub examples: Vec<String>,
}

const INVARIANT_EXAMPLES_MAX: usize = 10;

std::thread_local! {
    /// The error collector of the simulation running on this thread, if any.
    static RUN_ERRORS: std::cell::RefCell<Option<Arc<std::sync::Mutex<InvariantErrors>>>> =
        const { std::cell::RefCell::new(None) };
}

/// A tracing layer that hands every error-level event to the simulation running on the
/// emitting thread (each simulation owns its thread, and madsim runs all of its nodes there).
struct InvariantLayer;

struct FieldText(String);

impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for InvariantLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(errors) = RUN_ERRORS.with(|run| run.borrow().clone()) else {
            return;
        };
        let mut fields = FieldText(String::new());
        event.record(&mut fields);
        let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.count += 1;
        if errors.examples.len() < INVARIANT_EXAMPLES_MAX {
            errors
                .examples
                .push(format!("{}:{}", event.metadata().target(), fields.0));
        }
    }
}

/// Installs the process's subscriber once: logs to stderr as RUST_LOG asks (errors only by
/// default), and error-level events to the running simulation's collector. One global
/// subscriber, because madsim's spans may outlive a thread-scoped one.
fn install_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
        let logs = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter);
        let invariants = InvariantLayer.with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
        let subscriber = tracing_subscriber::registry().with(logs).with(invariants);
        // Another subscriber set by the embedding program wins; runs then go uncounted.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

const RING_PORT: u16 = 7000;
const API_PORT: u16 = 8080;
const GUILD_PORT: u16 = 7100;
const DATA_PORT: u16 = 7300;
/// API nodes, guild nodes and data-service nodes of a simulated cluster.
pub const API_NODES: u8 = 2;
/// See [`API_NODES`].
pub const GUILD_NODES: u8 = 3;
/// See [`API_NODES`].
pub const DATA_NODES: u8 = 2;
const GATEWAY_HTTP_PORT: u16 = 8081;
const GATEWAY_RPC_PORT: u16 = 7200;

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
}

/// The simulated cluster's addresses; node `ROLE-N` of a role is its N-th address.
pub fn topology() -> Topology {
    let nodes = |subnet: u8, count: u8, port: u16| -> Vec<SocketAddr> {
        (1..=count)
            .map(|i| SocketAddr::new(ip(subnet, i), port))
            .collect()
    };
    Topology {
        ring: nodes(1, 3, RING_PORT),
        api: nodes(2, API_NODES, API_PORT),
        guild: nodes(3, GUILD_NODES, GUILD_PORT),
        data: nodes(5, DATA_NODES, DATA_PORT),
        gateway_http: SocketAddr::new(ip(4, 1), GATEWAY_HTTP_PORT),
        gateway_rpc: SocketAddr::new(ip(4, 1), GATEWAY_RPC_PORT),
    }
}

/// Binds `addr`, retrying for a while: a restarted node's old listener is released only when
/// madsim drops the killed task that held it.
async fn listen(addr: SocketAddr) -> TcpListener {
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = last_error.map_or("no attempt".to_string(), |e| e.to_string());
    panic!("simulated bind of {addr} failed after {BIND_ATTEMPTS} attempts: {error}")
}

const BIND_ATTEMPTS: u32 = 50;

/// The per-node environment the harness owns: each node's disk and clock.
#[derive(Default)]
struct NodeEnv {
    disks: BTreeMap<String, SimDisk>,
    clocks: BTreeMap<String, NodeClock>,
    /// Set by a node that stopped itself, for the harness to restart it.
    stopped: BTreeMap<String, Arc<AtomicBool>>,
    /// What each node served.
    loads: BTreeMap<String, NodeLoad>,
}

impl NodeEnv {
    fn disk(&mut self, node: &str) -> SimDisk {
        self.disks.entry(node.to_string()).or_default().clone()
    }

    fn clock(&mut self, node: &str) -> NodeClock {
        self.clocks.entry(node.to_string()).or_default().clone()
    }

    fn stopped(&mut self, node: &str) -> Arc<AtomicBool> {
        self.stopped.entry(node.to_string()).or_default().clone()
    }

    fn load(&mut self, node: &str) -> NodeLoad {
        self.loads.entry(node.to_string()).or_default().clone()
    }
}

/// Creates the host `name` at `ip`, whose `init` runs at start and at every restart, inside a
/// tracing span named after the node.
fn host<F, Fut>(handle: &Handle, name: &str, ip: IpAddr, init: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let span_name = name.to_string();
    handle
        .create_node()
        .name(name)
        .ip(ip)
        .init(move || init().instrument(tracing::info_span!("node", name = %span_name)))
        .build();
}

/// Runs `scenario` with `seed` in a fresh simulation, on a fresh thread.
///
/// The fresh thread is what makes a run a function of its seed alone: std seeds its hash-map
/// keys once per thread, and madsim can set them from the seed only on a thread that has not
/// made any yet, so a second simulation on one thread would iterate maps differently. A panic
/// inside the simulation is passed on to the caller.
pub fn run(seed: u64, scenario: &Scenario) -> RunOutput {
    let scenario = scenario.clone();
    #[allow(
        clippy::disallowed_methods,
        reason = "the thread is outside the simulation"
    )]
    let thread = std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .spawn(move || run_here(seed, &scenario));
    match thread.map(std::thread::JoinHandle::join) {
        Ok(Ok(output)) => output,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(error) => panic!("cannot start the simulation thread: {error}"),
    }
}

fn run_here(seed: u64, scenario: &Scenario) -> RunOutput {
    install_tracing();
    let errors = Arc::new(std::sync::Mutex::new(InvariantErrors::default()));
    RUN_ERRORS.with(|run| *run.borrow_mut() = Some(errors.clone()));

    // Link faults live per thread; a run starts and ends with none.
    chat_system::env::link::reset();
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let wall_start = Instant::now();
    let (history, trace, events, convergence, node_load) =
        runtime.block_on(supervise(scenario.clone()));
    chat_system::env::link::reset();
    RUN_ERRORS.with(|run| *run.borrow_mut() = None);
    let invariant_errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    RunOutput {
        history,
        trace,
        events,
        sim_seconds: scenario.duration_ms as f64 / 1000.0,
        wall_seconds: wall_start.elapsed().as_secs_f64(),
        invariant_errors,
        convergence,
        node_load,
    }
}

/// What [`supervise`] hands back: history, trace, events, convergence, node loads.
type Supervised = (
    History,
    Vec<u8>,
    u64,
    CheckResult,
    BTreeMap<String, LoadSnapshot>,
);

async fn supervise(scenario: Scenario) -> Supervised {
    let handle = Handle::current();
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let topology = topology();

    // 1. The directory, minted a minute before the run starts.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let created_unix_ms = i64::try_from(now_ms).unwrap_or(i64::MAX) - 60_000;
    let trace = scenario.loaded_trace();
    let directory = Arc::new(crate::workload::directory(
        &scenario,
        created_unix_ms,
        trace,
    ));
    // Every node starts from this directory and keeps its own copy (a fresh one per
    // incarnation), so nothing reaches a node except over the simulated network.
    let copy = |d: &Arc<Directory>| SharedDirectory::new(Directory::clone(d));

    // 2. The roles, one host each. Disks and clocks belong to the harness, so they outlive a
    //    node's crash and faults can reach them.
    let mut env = NodeEnv::default();
    for index in 0..topology.ring.len() {
        let name = format!("ring-{}", index + 1);
        let (topology, disk, clock) = (topology.clone(), env.disk(&name), env.clock(&name));
        let name_for_init = name.clone();
        let (stopped, load) = (env.stopped(&name), env.load(&name));
        let engine = scenario.ring_engine;
        let addr = topology.ring[index];
        host(&handle, &name, addr.ip(), move || {
            let name = &name_for_init;
            let disk = Arc::new(disk.clone()) as Arc<dyn Disk>;
            let mut config = topology.ring_config(index, disk, clock.clone());
            config.engine = engine;
            let (name, stopped, load) = (name.clone(), stopped.clone(), load.clone());
            // This incarnation runs; only its own failure marks the node stopped.
            stopped.store(false, std::sync::atomic::Ordering::Relaxed);
            async move {
                let listener = listen(addr).await;
                let served = match ring::node::open(config) {
                    Ok(node) => node.counting(load).serve(listener).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    // A node whose disk failed stops, as its process would: killed, with
                    // its connections, until the harness heals it.
                    tracing::warn!(%addr, %error, "ring_node_stopped");
                    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                    Handle::current().kill(name.as_str());
                }
            }
        });
    }
    for (index, &addr) in topology.guild.iter().enumerate() {
        let name = format!("guild-{}", index + 1);
        let (t, d, clock) = (topology.clone(), directory.clone(), env.clock(&name));
        let load = env.load(&name);
        host(&handle, &name, addr.ip(), move || {
            let config = t.guild_config(index, copy(&d), clock.clone());
            let load = load.clone();
            async move { guild::run_counted(listen(addr).await, config, load).await }
        });
    }
    for (index, &addr) in topology.data.iter().enumerate() {
        let name = format!("data-{}", index + 1);
        let (t, clock, load) = (topology.clone(), env.clock(&name), env.load(&name));
        host(&handle, &name, addr.ip(), move || {
            let (store, load) = (t.data_store(clock.clone()), load.clone());
            async move { data::run_counted(listen(addr).await, store, load).await }
        });
    }
    let (t, d, beat, clock) = (
        topology.clone(),
        directory.clone(),
        scenario.heartbeat_interval_ms,
        env.clock("gateway"),
    );
    let gateway_load = env.load("gateway");
    host(&handle, "gateway", topology.gateway_http.ip(), move || {
        let mut config = t.gateway_config(copy(&d), beat);
        config.clock = clock.clone();
        let (http, rpc, load) = (t.gateway_http, t.gateway_rpc, gateway_load.clone());
        async move {
            let (http, rpc) = (listen(http).await, listen(rpc).await);
            gateway::run_counted(http, rpc, config, load).await;
        }
    });
    for (index, &addr) in topology.api.iter().enumerate() {
        let name = format!("api-{}", index + 1);
        let (t, d, clock) = (topology.clone(), directory.clone(), env.clock(&name));
        let (rate_limits, load) = (scenario.rate_limits, env.load(&name));
        host(&handle, &name, addr.ip(), move || {
            let mut config = t.api_config(index, copy(&d), clock.clone());
            if !rate_limits {
                config.rate_limits = chat_system::api::ratelimit::RateLimits::unlimited();
            }
            let load = load.clone();
            async move { api::run_counted(listen(addr).await, config, load).await }
        });
    }

    // 3. The users, all on the client host, after the servers have had a moment to listen.
    let client_env = crate::workload::ClientEnv {
        api: topology.api.clone(),
        gateway: topology.gateway_http,
        recorder: recorder.clone(),
        start,
    };
    let clients = crate::workload::clients(&scenario, &directory, trace, &client_env);
    let client_node = handle.create_node().name("client").ip(ip(9, 1)).build();
    client_node.spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for client in clients {
            tokio::spawn(client.run());
        }
    });

    // 4. The faults; then, with everything healed, repair and compare every replica.
    let ips = node_ips(&topology);
    let nemesis = Nemesis {
        handle: &handle,
        ips: &ips,
        disks: &env.disks,
        clocks: &env.clocks,
        recorder: &recorder,
        stopped: &env.stopped,
        start,
    };
    nemesis.run(&scenario.schedule).await;
    let healed_at = runtime_instant(start + Duration::from_millis(scenario.faults_end_ms()));
    tokio::time::sleep_until(healed_at).await;
    nemesis.heal_all();
    recorder.healed();
    let check_at = scenario
        .duration_ms
        .saturating_sub(CONVERGENCE_BEFORE_END_MS);
    tokio::time::sleep_until(runtime_instant(start + Duration::from_millis(check_at))).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ring = topology.ring.clone();
    client_node.spawn(async move {
        let _ = tx.send(converge(&ring).await);
    });
    let convergence = rx.await.unwrap_or_else(|_| CheckResult {
        violations: 1,
        examples: vec!["the convergence check did not finish".into()],
        ..CheckResult::default()
    });

    // 5. The end of the run.
    let end = runtime_instant(start + Duration::from_millis(scenario.duration_ms));
    tokio::time::sleep_until(end).await;
    let (history, trace, events) = recorder.snapshot();
    let node_load = env
        .loads
        .iter()
        .map(|(name, load)| (name.clone(), load.snapshot()))
        .collect();
    (history, trace, events, convergence, node_load)
}

/// Every node's address by name, as the nemesis keeps link faults.
pub fn node_ips(topology: &Topology) -> BTreeMap<String, IpAddr> {
    let mut ips = BTreeMap::new();
    let roles = [
        ("ring", &topology.ring),
        ("api", &topology.api),
        ("guild", &topology.guild),
        ("data", &topology.data),
    ];
    for (role, addrs) in roles {
        for (index, addr) in addrs.iter().enumerate() {
            ips.insert(format!("{role}-{}", index + 1), addr.ip());
        }
    }
    ips.insert("gateway".to_string(), topology.gateway_http.ip());
    ips.insert("client".to_string(), ip(9, 1));
    ips
}

/// How long before the end of a run the replicas are repaired and compared.
const CONVERGENCE_BEFORE_END_MS: u64 = 4_000;

/// Repairs every ring node in turn, then compares their Merkle roots over the whole ring.
async fn converge(ring: &[SocketAddr]) -> CheckResult {
    let mut result = CheckResult::default();
    for (index, &addr) in ring.iter().enumerate() {
        if crate::ringsim::repair(addr).await.is_none() {
            result.violations += 1;
            result
                .examples
                .push(format!("ring-{} did not finish its repair", index + 1));
        }
    }
    let mut roots = Vec::new();
    for &addr in ring {
        roots.push(crate::ringsim::merkle_root(addr).await);
    }
    if roots.iter().any(Option::is_none) || roots.windows(2).any(|w| w[0] != w[1]) {
        result.violations += 1;
        let shown: Vec<String> = roots
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "ring-{}: {}",
                    i + 1,
                    r.map_or("none".into(), |r| format!("{r:032x}"))
                )
            })
            .collect();
        result.examples.push(format!(
            "Merkle roots differ after repair: {}",
            shown.join(", ")
        ));
    }
    result
}
