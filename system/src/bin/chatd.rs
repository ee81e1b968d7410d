//! `chatd`: every role of the chat system in one process on real tokio, on loopback ports.
//!
//! Three ring nodes (each with its own data directory), three guild nodes (guilds placed by
//! a consistent-hash ring), two data-service nodes (reads placed by channel), the gateway and
//! two REST API nodes (the first one at the documented port). The directory of users, tokens,
//! guilds and channels is generated on first start and kept in the data dir, so a restart
//! serves the same accounts and their history.
//!
//! With `--store cql://host:port[,host:port...][/keyspace]` messages and the directory log live
//! in ScyllaDB or Cassandra instead: no ring node starts, and every guild, data-service and
//! API role shares one CQL session (created with the keyspace and tables if they are
//! missing). A bad URL is refused naming the part at fault; a cluster that cannot be reached
//! stops chatd with the driver's reason within 30 s (`CQL_OPEN_TIMEOUT`), before anything
//! serves.
//!
//! With `--cluster FILE --node NAME` the process runs only that node's role, at the address
//! the cluster file gives it; every process of the cluster generates the same directory from
//! the file's shape (and writes it to the shared data dir for clients). The file's `store`
//! key chooses the store as `--store` does, and a node with a `metrics` address serves
//! `/metrics` there. A clean stop (Ctrl-C or SIGTERM) drains the gateway's sessions (op 7,
//! close 1012) before ring nodes flush their memtables.

#[cfg(madsim)]
fn main() {
    eprintln!("chatd runs on the real runtime only; build it without `--cfg madsim`");
    std::process::exit(2);
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    /// Prints a line to stdout, ignoring a closed stdout: whoever read the banner may be gone,
    /// and that must not turn a clean stop into a panic.
    macro_rules! say {
        ($($arg:tt)*) => {{
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), $($arg)*);
        }};
    }

    use std::net::{IpAddr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use chat_system::cluster::{ClusterFile, Role, Topology, HEARTBEAT_INTERVAL_MS_DEFAULT};
    use chat_system::directory::{Directory, DirectoryShape, SharedDirectory};
    use chat_system::env::clock::NodeClock;
    use chat_system::env::disk::{Disk, RealDisk};
    use chat_system::gateway::{GatewayHandle, GatewayLimits};
    use chat_system::ring::node::OpenRingNode;
    use chat_system::store::cql::{CqlConfig, CqlStore};
    use chat_system::store::{CqlTarget, SharedStore, StoreSpec};
    use chat_system::{api, data, guild, ring};
    use clap::Parser;
    use tokio::net::TcpListener;

    const API_NODES: u16 = 2;
    const GUILD_NODES: u16 = 3;
    const DATA_NODES: u16 = 2;
    /// How long connecting to a CQL cluster and preparing its statements may take.
    pub const CQL_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    /// Run the chat system's roles in one process on real tokio.
    #[derive(Debug, Parser)]
    #[command(name = "chatd", version)]
    struct Args {
        /// Where the ring nodes keep their data and where the directory is kept.
        #[arg(long, default_value = "chatd-data")]
        data_dir: PathBuf,
        /// The address every role listens on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// First port: ring nodes at +1..+3, API nodes at +10 and +11, gateway at +20
        /// (dispatch +21), guild nodes at +30..+32, data-service nodes at +40 and +41, metrics
        /// at +50 (so at most 65485). 0 gives every role an ephemeral port.
        #[arg(
            long,
            default_value_t = 7700,
            value_parser = clap::value_parser!(u16).range(..=65485)
        )]
        port_base: u16,
        /// Users in a newly generated directory (ignored when the data dir has one).
        #[arg(
            long,
            default_value_t = 10,
            value_parser = clap::value_parser!(u16).range(1..=10_000)
        )]
        users: u16,
        /// Guilds in a newly generated directory (ignored when the data dir has one).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1_000))]
        guilds: u16,
        /// Text channels per guild in a newly generated directory (ignored likewise).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=100))]
        channels: u16,
        /// The heartbeat interval the gateway announces, in ms.
        #[arg(
            long,
            default_value_t = HEARTBEAT_INTERVAL_MS_DEFAULT,
            value_parser = clap::value_parser!(u64).range(100..=600_000)
        )]
        heartbeat_interval_ms: u64,
        /// Where messages live: `ring` (three ring nodes in this process) or
        /// `cql://HOST:PORT[,HOST:PORT...][/KEYSPACE][?replication=N]` (keyspace `chat` and
        /// one replica per contact point, at most three, by default).
        #[arg(long, default_value = "ring", value_parser = StoreSpec::parse)]
        store: StoreSpec,
        /// A cluster file: run only `--node`'s role, as the file places it.
        #[arg(
            long,
            requires = "node",
            conflicts_with_all = ["data_dir", "host", "port_base", "store"]
        )]
        cluster: Option<PathBuf>,
        /// The node of `--cluster` this process runs.
        #[arg(long, requires = "cluster")]
        node: Option<String>,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("chatd: cannot start the runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        let served = match (&args.cluster, &args.node) {
            (Some(file), Some(node)) => runtime.block_on(serve_node(file, node)),
            _ => runtime.block_on(serve(args)),
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("chatd: {message}");
                ExitCode::FAILURE
            }
        }
    }

    fn load_or_create_directory(args: &Args, data_dir: &Path) -> Result<Directory, String> {
        let path = data_dir.join("directory.json");

        // 1. An existing directory is kept, so its accounts keep their history.
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let directory = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not a valid directory file: {e}", path.display()))?;
            say!(
                "chatd directory {} reused (--users, --guilds, --channels ignored)",
                path.display()
            );
            return Ok(directory);
        }

        // 2. Ring data without its directory would be unreachable under new ids.
        if data_dir.join("ring-1").exists() {
            return Err(format!(
                "{} holds ring data but no directory.json; restore it, or use a new --data-dir",
                data_dir.display()
            ));
        }

        // 3. A new one.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let shape = DirectoryShape {
            user_count: usize::from(args.users),
            guild_count: usize::from(args.guilds),
            channels_per_guild: usize::from(args.channels),
            created_unix_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
        };
        let directory = Directory::generate(&shape);
        let text = serde_json::to_string_pretty(&directory).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        say!("chatd directory {} created", path.display());
        Ok(directory)
    }

    /// Takes the data dir's lock for this process's lifetime, so a second chatd on the same
    /// data dir refuses to start instead of interleaving writes with this one.
    fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, String> {
        let path = data_dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "data dir {} is in use by another chatd (its LOCK is held)",
                data_dir.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }

    async fn bind(host: IpAddr, base: u16, offset: u16, role: &str) -> Result<TcpListener, String> {
        let port = if base == 0 {
            0
        } else {
            base.checked_add(offset)
                .ok_or("--port-base leaves no room for every role's port")?
        };
        let addr = SocketAddr::new(host, port);
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for {role}: {e}"))
    }

    fn local(listener: &TcpListener) -> Result<SocketAddr, String> {
        listener.local_addr().map_err(|e| e.to_string())
    }

    async fn serve(args: Args) -> Result<(), String> {
        // 1. The data dir and the directory.
        std::fs::create_dir_all(&args.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", args.data_dir.display()))?;
        let data_dir = args.data_dir.canonicalize().map_err(|e| e.to_string())?;
        say!("chatd data_dir={}", data_dir.display());
        let _lock = lock_data_dir(&data_dir)?;
        let directory = load_or_create_directory(&args, &data_dir)?;
        let shared = SharedDirectory::new(directory.clone());
        let cql = match &args.store {
            StoreSpec::Ring => None,
            StoreSpec::Cql(target) => Some(open_cql(target).await?),
        };

        // 2. Bind every role first, so each knows the others' addresses.
        let (host, base) = (args.host, args.port_base);
        let mut ring_listeners = Vec::new();
        let ring_count = if cql.is_some() { 0 } else { 3u16 };
        for i in 0..ring_count {
            ring_listeners.push(bind(host, base, 1 + i, "ring").await?);
        }
        let mut api_listeners = Vec::new();
        for i in 0..API_NODES {
            api_listeners.push(bind(host, base, 10 + i, "api").await?);
        }
        let gateway_listener = bind(host, base, 20, "gateway").await?;
        let dispatch_listener = bind(host, base, 21, "gateway dispatch").await?;
        let mut guild_listeners = Vec::new();
        for i in 0..GUILD_NODES {
            guild_listeners.push(bind(host, base, 30 + i, "guild").await?);
        }
        let mut data_listeners = Vec::new();
        for i in 0..DATA_NODES {
            data_listeners.push(bind(host, base, 40 + i, "data service").await?);
        }
        let metrics_listener = bind(host, base, 50, "metrics").await?;
        let metrics_addr = local(&metrics_listener)?;
        tokio::spawn(chat_system::metrics::serve(metrics_listener));
        let all = |listeners: &[TcpListener]| -> Result<Vec<SocketAddr>, String> {
            listeners.iter().map(local).collect()
        };
        let topology = Topology {
            ring: all(&ring_listeners)?,
            api: all(&api_listeners)?,
            guild: all(&guild_listeners)?,
            data: all(&data_listeners)?,
            gateway_http: local(&gateway_listener)?,
            gateway_rpc: local(&dispatch_listener)?,
        };

        // 3. Start the roles. Ring nodes stop on the stop signal, flushing their memtables.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut ring_nodes = Vec::new();
        for (index, listener) in ring_listeners.into_iter().enumerate() {
            let dir = data_dir.join(format!("ring-{}", index + 1));
            let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(&dir).map_err(|e| e.to_string())?);
            let config = topology.ring_config(index, disk, NodeClock::new());
            let addr = config.addr;
            // Open (replay) before serving anything, so a damaged disk stops chatd before
            // it says it is ready.
            let node = ring::node::open(config).map_err(|e| {
                format!("ring node {} cannot open {}: {e}", index + 1, dir.display())
            })?;
            say!(
                "chatd ring node {} at {addr} data {} replayed {} rows",
                index + 1,
                dir.display(),
                node.memtable_rows()
            );
            let mut stop = stop_rx.clone();
            ring_nodes.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|&stop| stop).await;
                };
                match node.serve_until(listener, stopped).await {
                    Ok(report) => report,
                    Err(error) => {
                        eprintln!("chatd: ring node {} failed: {error}", index + 1);
                        std::process::exit(1);
                    }
                }
            }));
        }
        let store_of = |clock: &NodeClock| -> SharedStore {
            match &cql {
                Some(store) => store.clone(),
                None => topology.ring_store(clock.clone()),
            }
        };
        for (index, listener) in guild_listeners.into_iter().enumerate() {
            let clock = NodeClock::new();
            let store = store_of(&clock);
            let config = topology.guild_config_on(index, shared.clone(), clock, store);
            tokio::spawn(guild::run(listener, config));
        }
        for listener in data_listeners {
            tokio::spawn(data::run(listener, store_of(&NodeClock::new())));
        }
        let gateway_config = topology.gateway_config(shared.clone(), args.heartbeat_interval_ms);
        let gateway = GatewayHandle::new(gateway_config, GatewayLimits::default());
        tokio::spawn(gateway.clone().serve(gateway_listener, dispatch_listener));
        for (index, listener) in api_listeners.into_iter().enumerate() {
            let clock = NodeClock::new();
            let store = store_of(&clock);
            let config = topology.api_config_on(index, shared.clone(), clock, store);
            tokio::spawn(api::run(listener, config));
        }

        // 4. Say where everything is, then wait for Ctrl-C or SIGTERM.
        say!("chatd store {}", args.store);
        for api in &topology.api {
            say!("chatd api http://{api}/api/v10");
        }
        for guild in &topology.guild {
            say!("chatd guild node {guild}");
        }
        for data in &topology.data {
            say!("chatd data node {data}");
        }
        say!("chatd gateway {}", topology.gateway_url());
        say!(
            "chatd directory {}",
            data_dir.join("directory.json").display()
        );
        for user in directory.users.values().take(3) {
            say!("chatd user {} token {}", user.username, user.token);
        }
        for guild in directory.guilds.values() {
            let channels: Vec<String> = guild
                .channels
                .iter()
                .map(|c| format!("{}={}", c.name, c.id))
                .collect();
            let members: Vec<&str> = guild
                .members
                .iter()
                .map(|id| directory.username(*id))
                .collect();
            say!(
                "chatd guild {} channels {} members {}",
                guild.name,
                channels.join(","),
                members.join(",")
            );
        }
        say!("chatd metrics http://{metrics_addr}/metrics");
        say!("chatd ready");
        stop_signal().await?;

        // 5. Stop: the gateway's sessions are told to reconnect elsewhere, then every ring
        //    node flushes its memtable, so a restart replays nothing (a CQL cluster keeps
        //    its own data).
        say!("chatd stopping");
        drain_gateway(&gateway).await;
        let _ = stop_tx.send(true);
        for (index, node) in ring_nodes.into_iter().enumerate() {
            let report = node
                .await
                .map_err(|e| format!("ring node {} did not stop: {e}", index + 1))?;
            say!(
                "chatd ring node {} flushed {} rows",
                index + 1,
                report.rows_flushed
            );
        }
        say!("chatd stopped");
        Ok(())
    }

    /// Connects to the CQL cluster `target` names, creating its keyspace and tables if they
    /// are missing; an unreachable cluster is an error naming it, within `CQL_OPEN_TIMEOUT`.
    async fn open_cql(target: &CqlTarget) -> Result<SharedStore, String> {
        let config = CqlConfig::of_target(target);
        let at = format!("{} keyspace {}", target.nodes.join(","), target.keyspace);
        match tokio::time::timeout(CQL_OPEN_TIMEOUT, CqlStore::open(&config)).await {
            Ok(Ok(store)) => {
                say!("chatd cql store {at} open");
                Ok(Arc::new(store))
            }
            Ok(Err(error)) => Err(format!("cannot open the CQL store at {at}: {error}")),
            Err(_) => Err(format!(
                "the CQL store at {at} did not open within {} s",
                CQL_OPEN_TIMEOUT.as_secs()
            )),
        }
    }

    /// Tells every gateway session to reconnect (op 7, close 1012) and gives the close frames
    /// a moment to leave before the process goes.
    async fn drain_gateway(gateway: &GatewayHandle) {
        if gateway.drain() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Opens (replays) ring node `label`'s data in `dir`, stopping before anything is served
    /// when the disk is damaged.
    fn open_ring(
        topology: &Topology,
        index: usize,
        dir: &Path,
        label: &str,
    ) -> Result<OpenRingNode, String> {
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(dir).map_err(|e| e.to_string())?);
        let config = topology.ring_config(index, disk, NodeClock::new());
        ring::node::open(config)
            .map_err(|e| format!("ring node {label} cannot open {}: {e}", dir.display()))
    }

    /// Writes the cluster's directory to `DATA_DIR/directory.json` for clients, unless an
    /// identical one is there; a different one means the data dir belongs to another cluster.
    fn publish_directory(data_dir: &Path, directory: &Directory, node: &str) -> Result<(), String> {
        let path = data_dir.join("directory.json");
        let text = serde_json::to_string_pretty(directory).map_err(|e| e.to_string())?;
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let same =
                serde_json::from_str::<Directory>(&existing).ok().as_ref() == Some(directory);
            if same {
                return Ok(());
            }
            return Err(format!(
                "{} holds another directory than the cluster file's [directory] makes; \
                 use a new data_dir or the shape that made it",
                path.display()
            ));
        }
        // Written under a per-node name, then renamed, so a reader never sees half a file.
        let partial = data_dir.join(format!("directory.json.{node}.partial"));
        std::fs::write(&partial, text)
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    async fn bind_at(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("node {what} cannot listen on {addr}: {e}"))
    }

    /// Waits for Ctrl-C (SIGINT) or SIGTERM, either of which asks a node to stop cleanly.
    async fn stop_signal() -> Result<(), String> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
        tokio::select! {
            biased;
            interrupted = tokio::signal::ctrl_c() => {
                interrupted.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))
            }
            _ = term.recv() => Ok(()),
        }
    }

    /// Runs node `name` of the cluster file at `file` until Ctrl-C or SIGTERM.
    async fn serve_node(file: &Path, name: &str) -> Result<(), String> {
        // 1. The file, the node and the directory every process of the cluster shares.
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read cluster file {}: {e}", file.display()))?;
        let cluster = ClusterFile::parse(&text)
            .map_err(|e| format!("cluster file {}: {e}", file.display()))?;
        let node = cluster.node(name)?.clone();
        let index = cluster
            .role_index(name)
            .ok_or_else(|| format!("no node {name:?} in the cluster file"))?;
        let topology = cluster.topology();
        std::fs::create_dir_all(&cluster.data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", cluster.data_dir.display()))?;
        let data_dir = cluster.data_dir.canonicalize().map_err(|e| e.to_string())?;
        let directory = Directory::generate(&cluster.shape());
        publish_directory(&data_dir, &directory, name)?;
        let shared = SharedDirectory::new(directory);

        // 2. The store the roles use, then bind and serve the node's role and its metrics.
        let store = match (&cluster.store, node.role) {
            (StoreSpec::Cql(target), Role::Api | Role::Guild | Role::Data) => {
                Some(open_cql(target).await?)
            }
            _ => None,
        };
        let listener = bind_at(node.addr, name).await?;
        if let Some(metrics) = node.metrics {
            let metrics_listener = bind_at(metrics, name).await?;
            tokio::spawn(chat_system::metrics::serve(metrics_listener));
            say!("chatd metrics http://{metrics}/metrics");
        }
        let clock = NodeClock::new();
        // The ring's client, made only for roles that read or write (a CQL file has no ring).
        let store_of = |clock: &NodeClock| -> SharedStore {
            store.unwrap_or_else(|| topology.ring_store(clock.clone()))
        };
        let mut gateway = None;
        let mut ring_node = None;
        match node.role {
            Role::Ring => {
                let dir = data_dir.join(name);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let lock = lock_data_dir(&dir)?;
                let opened = open_ring(&topology, index, &dir, name)?;
                say!(
                    "chatd ring node {name} at {} data {} replayed {} rows",
                    node.addr,
                    dir.display(),
                    opened.memtable_rows()
                );
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let task = tokio::spawn(async move {
                    let mut stop = stop_rx;
                    let stopped = async move {
                        let _ = stop.wait_for(|&stop| stop).await;
                    };
                    opened.serve_until(listener, stopped).await
                });
                ring_node = Some((stop_tx, task, lock));
            }
            Role::Api => {
                let config = topology.api_config_on(index, shared, clock.clone(), store_of(&clock));
                tokio::spawn(api::run(listener, config));
                say!("chatd api http://{}/api/v10", node.addr);
            }
            Role::Guild => {
                tokio::spawn(guild::run(
                    listener,
                    topology.guild_config_on(index, shared, clock.clone(), store_of(&clock)),
                ));
                say!("chatd guild node {}", node.addr);
            }
            Role::Data => {
                tokio::spawn(data::run(listener, store_of(&clock)));
                say!("chatd data node {}", node.addr);
            }
            Role::Gateway => {
                let dispatch = node
                    .dispatch
                    .expect("a checked cluster file's gateway has a dispatch address");
                let rpc = bind_at(dispatch, name).await?;
                let config = topology.gateway_config(shared, cluster.heartbeat_interval_ms);
                let handle = GatewayHandle::new(config, GatewayLimits::default());
                tokio::spawn(handle.clone().serve(listener, rpc));
                say!("chatd gateway {}", topology.gateway_url());
                gateway = Some(handle);
            }
        }
        say!(
            "chatd directory {}",
            data_dir.join("directory.json").display()
        );
        say!("chatd ready");

        // 3. Wait for Ctrl-C or SIGTERM, or for the ring node to fail.
        let failed = match ring_node.as_mut() {
            Some((_, task, _)) => {
                tokio::select! {
                    biased;
                    signal = stop_signal() => {
                        signal?;
                        None
                    }
                    ended = task => Some(ended),
                }
            }
            None => {
                stop_signal().await?;
                None
            }
        };
        if let Some(ended) = failed {
            return match ended {
                Ok(Err(error)) => Err(format!("ring node {name} failed: {error}")),
                _ => Err(format!("ring node {name} stopped unexpectedly")),
            };
        }

        // 4. A clean stop: the gateway drains, a ring node flushes.
        say!("chatd stopping");
        if let Some(gateway) = &gateway {
            let told = gateway.drain();
            say!("chatd gateway drained {told} connections");
            if told > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        if let Some((stop_tx, task, _lock)) = ring_node {
            let _ = stop_tx.send(true);
            let report = task
                .await
                .map_err(|e| format!("ring node {name} did not stop: {e}"))?
                .map_err(|e| format!("ring node {name} failed: {e}"))?;
            say!(
                "chatd ring node {name} flushed {} rows",
                report.rows_flushed
            );
        }
        say!("chatd stopped");
        Ok(())
    }
}
