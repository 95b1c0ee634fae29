//! The `rayr` command: start and stop clusters, and look at what they did.
//!
//! `start`/`stop`/`status`/`memory` live here; the read-only queries over the event record
//! (`list`, `summary`, `events`) live in [`query`], `why-died` in [`whydied`], and finding
//! the cluster a command talks about in [`connect`]. Every command exits non-zero with a
//! message that says what was wrong and what to do.

mod connect;
mod logs;
mod query;
mod whydied;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use rayr_logs::{Session, hex, new_id};

#[derive(Parser)]
#[command(name = "rayr", version, about = "rayr: distributed tasks for Rust, every decision recorded")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster's head (with a node agent) on this host, or a node agent that joins
    /// a running cluster, in the background.
    Start(StartArgs),
    /// Stop every rayr process of this host's latest session and remove its sockets and shm.
    Stop {
        /// Session directory to stop (default: $RAYR_TMPDIR/session_latest).
        #[arg(long)]
        session: Option<PathBuf>,
    },
    /// Show the cluster: session, nodes and their resources.
    Status {
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        json: bool,
        /// Only the URL of every live node's Prometheus metrics, one per line.
        #[arg(long)]
        metrics_urls: bool,
    },
    /// List tasks, objects, workers, nodes, jobs or actors.
    List(query::ListArgs),
    /// Counts of tasks, actors or objects by state.
    Summary(query::SummaryArgs),
    /// Read the event record.
    Events(query::EventsArgs),
    /// How a task, worker, object, node or job ended, and why (the id an error named).
    WhyDied(whydied::WhyDiedArgs),
    /// Search or list the log files of every node.
    Logs(logs::LogsArgs),
    /// The shm object store of this host's node: bytes used, capacity, objects.
    Memory {
        #[arg(long)]
        json: bool,
    },
    /// Internal: the long-running head + node agent process that `start` launches.
    #[command(hide = true, name = "__serve")]
    Serve(ServeArgs),
}

#[derive(clap::Args, Clone)]
struct StartArgs {
    /// Start the head of a new cluster (with a node agent).
    #[arg(long)]
    head: bool,
    /// Join the cluster whose head is at HOST:PORT.
    #[arg(long)]
    address: Option<String>,
    /// Head: its gRPC port (0: any free port) [default: 6380].
    #[arg(long)]
    port: Option<u16>,
    /// The address this node binds and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: String,
    /// The port this node's agent serves object transfers on, to other nodes (0: any
    /// free port).
    #[arg(long, default_value_t = 0)]
    object_manager_port: u16,
    /// The port of this node's agent for drivers and workers of other hosts (0: any free).
    #[arg(long, default_value_t = 0)]
    node_manager_port: u16,
    /// The ports drivers and workers of this node listen on for other hosts, from
    /// --min-worker-port to --max-worker-port (both 0: any free ports).
    #[arg(long, default_value_t = 0)]
    min_worker_port: u16,
    #[arg(long, default_value_t = 0)]
    max_worker_port: u16,
    /// Labels of this node as a JSON object of strings, e.g. '{"zone": "eu-1"}'.
    #[arg(long)]
    labels: Option<String>,
    /// The port this node serves Prometheus metrics on, at /metrics (0: any free port;
    /// `rayr status --metrics-urls` lists every node's).
    #[arg(long, default_value_t = 0)]
    metrics_export_port: u16,
    /// Workers' stdout and stderr files rotate past this many bytes (`rayr logs` searches
    /// the old ones too).
    #[arg(long, default_value_t = 512 << 20)]
    log_rotate_bytes: u64,
    /// How many rotated files of each a worker keeps.
    #[arg(long, default_value_t = 5)]
    log_rotate_keep: u32,
    /// The dashboard's port (the dashboard arrives with its own issue).
    #[arg(long, default_value_t = 8265)]
    dashboard_port: u16,
    /// CPUs this node offers (default: the machine's).
    #[arg(long)]
    num_cpus: Option<f64>,
    #[arg(long)]
    num_gpus: Option<f64>,
    /// Custom resources as JSON, e.g. '{"ssd": 2}'.
    #[arg(long)]
    resources: Option<String>,
    /// Memory this node offers to tasks, in bytes (the `memory` resource).
    #[arg(long)]
    memory: Option<f64>,
    /// Bytes of the shm object store.
    #[arg(long, default_value_t = 2 << 30)]
    object_store_memory: u64,
    /// Head: how often nodes beat (milliseconds) [default: 1000].
    #[arg(long)]
    heartbeat_period_ms: Option<u32>,
    /// Head: a node silent for this many periods is declared dead [default: 5].
    #[arg(long)]
    missed_heartbeats: Option<u32>,
    /// Joining node: how long the head may be unreachable before the node exits (seconds)
    /// [default: 60].
    #[arg(long)]
    head_timeout_s: Option<u64>,
    /// With --head: restart the head of this existing session (after its process died);
    /// its record stays, and its nodes register again (give the old --port so they find it).
    #[arg(long)]
    session: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long)]
    session: PathBuf,
    #[arg(long)]
    resources_json: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    node_ip_address: String,
    #[arg(long)]
    object_store_memory: u64,
    #[arg(long, default_value_t = 0)]
    object_manager_port: u16,
    #[arg(long, default_value_t = 0)]
    node_manager_port: u16,
    #[arg(long, default_value_t = 0)]
    min_worker_port: u16,
    #[arg(long, default_value_t = 0)]
    max_worker_port: u16,
    #[arg(long, default_value = "{}")]
    labels_json: String,
    #[arg(long, default_value_t = 0)]
    metrics_export_port: u16,
    #[arg(long, default_value_t = 512 << 20)]
    log_rotate_bytes: u64,
    #[arg(long, default_value_t = 5)]
    log_rotate_keep: u32,
    #[arg(long, default_value_t = 1000)]
    heartbeat_period_ms: u32,
    #[arg(long, default_value_t = 5)]
    missed_heartbeats: u32,
    /// A joining node: the head's HOST:PORT (no head is started here).
    #[arg(long)]
    join: Option<String>,
    #[arg(long)]
    node_id: Option<String>,
    #[arg(long, default_value_t = 60)]
    head_timeout_s: u64,
    /// The session already has a record: expect its nodes to register again.
    #[arg(long)]
    resume: bool,
    /// A joining node on another host than the head: ship its event log to the head.
    #[arg(long)]
    ship_events: bool,
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A command piped into `head` ends quietly when the pipe closes, as grep does,
        // instead of panicking on the failed write.
        // SAFETY: restores the default disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = match cli.command {
        Command::Start(a) => start(a),
        Command::Stop { session } => stop(session),
        Command::Status { address, json, metrics_urls } => rt.block_on(status(address, json, metrics_urls)),
        Command::List(a) => rt.block_on(query::list(a)),
        Command::Summary(a) => rt.block_on(query::summary(a)),
        Command::Events(a) => rt.block_on(query::events(a)),
        Command::WhyDied(a) => rt.block_on(whydied::why_died(a)),
        Command::Memory { json } => memory(json),
        Command::Logs(a) => rt.block_on(logs::logs(a)),
        Command::Serve(a) => serve(a),
    };
    if let Err(e) = result {
        eprintln!("rayr: {e:#}");
        std::process::exit(1);
    }
}

/// The node's ports and labels, checked, as `__serve` flags.
fn node_flags(a: &StartArgs) -> anyhow::Result<Vec<String>> {
    let ip: std::net::IpAddr = a
        .node_ip_address
        .parse()
        .map_err(|e| anyhow!("--node-ip-address {} is not an IP address: {e}", a.node_ip_address))?;
    if ip.is_unspecified() || ip.is_multicast() {
        bail!("--node-ip-address {ip}: other nodes and drivers reach this node at that address, so it must be one of this host's own (e.g. 127.0.0.2 or the host's LAN address)");
    }
    if a.object_store_memory < MIN_OBJECT_STORE_MEMORY {
        bail!("--object-store-memory {}: the object store needs at least {MIN_OBJECT_STORE_MEMORY} bytes (16 MiB)", a.object_store_memory);
    }
    // One port for one purpose: a clash would only show as "address in use" later.
    let ports = [
        ("--port", if a.head { a.port.unwrap_or(DEFAULT_HEAD_PORT) } else { 0 }),
        ("--object-manager-port", a.object_manager_port),
        ("--node-manager-port", a.node_manager_port),
        ("--metrics-export-port", a.metrics_export_port),
    ];
    for (i, (f1, p1)) in ports.iter().enumerate() {
        if let Some((f2, _)) = ports[i + 1..].iter().find(|(_, p2)| *p1 != 0 && p2 == p1) {
            bail!("{f1} and {f2} are both {p1}: each needs a port of its own");
        }
        if *p1 != 0 && a.min_worker_port != 0 && (a.min_worker_port..=a.max_worker_port).contains(p1) {
            bail!("{f1} {p1} lies in the workers' ports (--min-worker-port {} to --max-worker-port {}): give it one outside", a.min_worker_port, a.max_worker_port);
        }
    }
    let (lo, hi) = (a.min_worker_port, a.max_worker_port);
    if (lo == 0) != (hi == 0) || lo > hi {
        bail!("--min-worker-port {lo} and --max-worker-port {hi}: give both (MIN <= MAX), or neither for any free ports");
    }
    let labels: HashMap<String, String> = match &a.labels {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            anyhow!("--labels {json:?} is not a JSON object of strings ({e}); example: --labels '{{\"zone\": \"eu-1\"}}'")
        })?,
        None => HashMap::new(),
    };
    if a.log_rotate_bytes < 4096 || a.log_rotate_keep == 0 {
        bail!("--log-rotate-bytes must be at least 4096 and --log-rotate-keep at least 1");
    }
    if let Some(k) = labels.keys().find(|k| k.is_empty()) {
        bail!("--labels: a label's name must not be empty ({k:?})");
    }
    Ok(vec![
        "--node-manager-port".into(),
        a.node_manager_port.to_string(),
        "--min-worker-port".into(),
        lo.to_string(),
        "--max-worker-port".into(),
        hi.to_string(),
        "--labels-json".into(),
        serde_json::to_string(&labels)?,
        "--metrics-export-port".into(),
        a.metrics_export_port.to_string(),
        "--log-rotate-bytes".into(),
        a.log_rotate_bytes.to_string(),
        "--log-rotate-keep".into(),
        a.log_rotate_keep.to_string(),
    ])
}

fn node_resources(a: &StartArgs) -> anyhow::Result<HashMap<String, f64>> {
    let mut r: HashMap<String, f64> = match &a.resources {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            anyhow!("--resources {json:?} is not a JSON object of numbers ({e}); example: --resources '{{\"ssd\": 2}}'")
        })?,
        None => HashMap::new(),
    };
    for (k, v) in &r {
        if !v.is_finite() || *v < 0.0 {
            bail!("--resources: {k} = {v} must be a non-negative number");
        }
        if let Some(flag) = match k.as_str() {
            "CPU" => Some("--num-cpus"),
            "GPU" => Some("--num-gpus"),
            "memory" => Some("--memory"),
            _ => None,
        } {
            bail!("--resources: give {k} with {flag}, not in --resources (e.g. {flag} {v})");
        }
        if k.is_empty() {
            bail!("--resources: a resource's name must not be empty");
        }
    }
    let cpus = a.num_cpus.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0));
    if !cpus.is_finite() || cpus < 0.0 {
        bail!("--num-cpus {cpus} must be a non-negative number");
    }
    r.insert("CPU".into(), cpus);
    if let Some(g) = a.num_gpus {
        if !g.is_finite() || g < 0.0 {
            bail!("--num-gpus {g} must be a non-negative number");
        }
        r.insert("GPU".into(), g);
    }
    if let Some(m) = a.memory {
        if !m.is_finite() || m < 0.0 {
            bail!("--memory {m} must be a non-negative number of bytes");
        }
        r.insert("memory".into(), m);
    }
    Ok(r)
}

const DEFAULT_HEAD_PORT: u16 = 6380;
/// The smallest object store a node may have.
const MIN_OBJECT_STORE_MEMORY: u64 = 16 << 20;

/// Undoes a session directory `rayr start` made, when the start fails: the directory goes,
/// and `session_latest` points where it did before (at the cluster that may still run).
struct NewSession {
    dir: Option<PathBuf>,
    tmpdir: PathBuf,
    latest_before: Option<PathBuf>,
}

impl NewSession {
    /// Makes a session under RAYR_TMPDIR, remembering what `session_latest` was.
    fn create() -> anyhow::Result<(Session, NewSession)> {
        let tmpdir = rayr_logs::tmpdir();
        let latest_before = std::fs::read_link(tmpdir.join("session_latest")).ok();
        let session = Session::create(&tmpdir).with_context(|| format!("creating a session directory under {} (RAYR_TMPDIR)", tmpdir.display()))?;
        let tmpdir = session.dir.parent().map(Path::to_path_buf).unwrap_or(tmpdir);
        Ok((session.clone(), NewSession { dir: Some(session.dir), tmpdir, latest_before }))
    }

    /// The start succeeded: keep it.
    fn keep(mut self) {
        self.dir = None;
    }
}

impl Drop for NewSession {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        Session::open(&dir).remove_socket_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let latest = self.tmpdir.join("session_latest");
        match &self.latest_before {
            Some(before) => {
                let tmp = self.tmpdir.join(format!(".session_latest.{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(before, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, &latest);
                }
            }
            None => {
                let _ = std::fs::remove_file(&latest);
            }
        }
    }
}

/// Starts `rayr __serve` detached, then waits until its head answers.
fn start(a: StartArgs) -> anyhow::Result<()> {
    match (&a.address, a.head) {
        (Some(_), true) => bail!("--head starts a new cluster and --address joins one: give one of them"),
        (Some(addr), false) => {
            let head_only: Vec<&str> = [
                ("--port", a.port.is_some()),
                ("--heartbeat-period-ms", a.heartbeat_period_ms.is_some()),
                ("--missed-heartbeats", a.missed_heartbeats.is_some()),
                ("--session", a.session.is_some()),
            ]
            .into_iter()
            .filter_map(|(f, given)| given.then_some(f))
            .collect();
            if !head_only.is_empty() {
                bail!("{} set(s) the head, not a joining node (which takes them from the head at {addr}): leave it out", head_only.join(", "));
            }
            return start_node(&a, addr);
        }
        (None, false) => {
            bail!("say what to start: `rayr start --head` starts a new cluster on this host; `rayr start --address HEAD:PORT` joins one")
        }
        (None, true) => {}
    }
    if a.head_timeout_s.is_some() {
        bail!("--head-timeout-s is for a joining node (how long it waits for a lost head), not the head: leave it out");
    }
    let (heartbeat_period_ms, missed_heartbeats) = (a.heartbeat_period_ms.unwrap_or(1000), a.missed_heartbeats.unwrap_or(5));
    if heartbeat_period_ms == 0 || missed_heartbeats == 0 {
        bail!("--heartbeat-period-ms and --missed-heartbeats must be at least 1");
    }
    let port = a.port.unwrap_or(DEFAULT_HEAD_PORT);
    let resources = node_resources(&a)?;
    let flags = node_flags(&a)?;
    // One cluster per RAYR_TMPDIR: a second would take `session_latest`, and with it what
    // `rayr stop`, `rayr status` and drivers find, from the running one.
    if a.session.is_none()
        && let Some(latest) = Session::latest(&rayr_logs::tmpdir())
        && let Some(addr) = latest.head_address()
        && head_answers(&addr)
    {
        bail!(
            "a rayr cluster is already running here (session {}, head at {addr}): stop it with `rayr stop` first, join it with `rayr start --address {addr}`, or give a second cluster its own RAYR_TMPDIR",
            latest.dir.display()
        );
    }
    for (flag, p) in [("--port", port), ("--metrics-export-port", a.metrics_export_port)] {
        if p != 0
            && let Err(e) = std::net::TcpListener::bind((a.node_ip_address.as_str(), p))
        {
            bail!("cannot use {}:{p} ({flag}): {e}; is another cluster running? pick another {flag}", a.node_ip_address);
        }
    }
    let resume = a.session.is_some();
    let session = match &a.session {
        Some(dir) => {
            let session = Session::open(std::fs::canonicalize(dir).with_context(|| format!("--session {}", dir.display()))?);
            if !session.events_dir().is_dir() {
                bail!("--session {}: not a rayr session directory (it has no events/)", session.dir.display());
            }
            if let Some(addr) = session.head_address() {
                if head_answers(&addr) {
                    bail!("the head of {} is running (at {addr}): nothing to restart", session.dir.display());
                }
                // The dead head's address: the new one writes its own when it answers.
                let _ = std::fs::remove_file(session.head_address_file());
            }
            (session, None)
        }
        None => {
            let (session, undo) = NewSession::create()?;
            (session, Some(undo))
        }
    };
    let (session, undo) = session;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(session.logs_dir().join("head.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__serve")
        .arg("--session")
        .arg(&session.dir)
        .arg("--resources-json")
        .arg(serde_json::to_string(&resources)?)
        .arg("--port")
        .arg(port.to_string())
        .arg("--node-ip-address")
        .arg(&a.node_ip_address)
        .arg("--object-store-memory")
        .arg(a.object_store_memory.to_string())
        .arg("--object-manager-port")
        .arg(a.object_manager_port.to_string())
        .args(flags)
        .arg("--heartbeat-period-ms")
        .arg(heartbeat_period_ms.to_string())
        .arg("--missed-heartbeats")
        .arg(missed_heartbeats.to_string())
        .args(resume.then_some("--resume"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().context("starting the head process")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(addr) = session.head_address() {
            undo.map(NewSession::keep);
            println!("rayr head started (pid {}) at {addr}", child.id());
            println!("  session: {}", session.dir.display());
            println!("  drivers on this host join it with rayr::init(); others with RAYR_ADDRESS={addr}");
            println!("  stop it with `rayr stop`");
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let mut log = String::new();
            let _ = std::fs::File::open(session.logs_dir().join("head.log")).and_then(|mut f| f.read_to_string(&mut log));
            bail!("the head process exited ({status}) before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            // Not left half-started: the session (with its log) goes only once it is gone.
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(session.logs_dir().join("head.log")).unwrap_or_default();
            bail!("the head did not come up within 20 s; its log said:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a rayr head answers at `addr` now.
fn head_answers(addr: &str) -> bool {
    tokio::runtime::Builder::new_current_thread().enable_all().build().is_ok_and(|rt| rt.block_on(connect::dial(addr)).is_ok())
}

/// Starts a node agent that joins the cluster whose head is at `head` (`rayr start
/// --address`), then waits until the head has admitted it.
fn start_node(a: &StartArgs, head: &str) -> anyhow::Result<()> {
    let resources = node_resources(a)?;
    let flags = node_flags(a)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let info = rt
        .block_on(async {
            let mut client = connect::dial(head).await?;
            anyhow::Ok(client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await?.into_inner())
        })
        .with_context(|| format!("no rayr head answers at {head}"))?;
    let head_session = Session::open(&info.session_dir);
    // On the head's host the node shares its session directory; on another host it makes
    // one of its own (its sockets, logs, fetched binaries), which drivers and commands of
    // this host find, and ships its event log to the head.
    let other_host = head_session.head_address().is_none();
    let (session, undo) = if other_host {
        let (local, undo) = NewSession::create()?;
        std::fs::write(local.head_address_file(), head)?;
        (local, Some(undo))
    } else {
        (head_session, None)
    };
    let node_id = new_id();
    let node_hex = hex(&node_id);
    let log_path = session.logs_dir().join(format!("node-{}.log", &node_hex[..16]));
    let log = std::fs::File::create(&log_path)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("__serve")
        .arg("--session")
        .arg(&session.dir)
        .arg("--join")
        .arg(head)
        .arg("--node-id")
        .arg(&node_hex)
        .arg("--resources-json")
        .arg(serde_json::to_string(&resources)?)
        .arg("--port")
        .arg("0")
        .arg("--node-ip-address")
        .arg(&a.node_ip_address)
        .arg("--object-store-memory")
        .arg(a.object_store_memory.to_string())
        .arg("--object-manager-port")
        .arg(a.object_manager_port.to_string())
        .args(flags)
        .arg("--head-timeout-s")
        .arg(a.head_timeout_s.unwrap_or(60).to_string())
        .args(other_host.then_some("--ship-events"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the node agent process")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let joined = rt.block_on(async {
            let mut client = connect::dial(head).await.ok()?;
            let nodes = client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await.ok()?.into_inner().nodes;
            // A member (the head annotates members with their last beat), not just a node
            // that recorded its start.
            nodes.into_iter().find(|n| n.node_id == node_id && n.state == "ALIVE" && n.last_heartbeat_us > 0)
        });
        if joined.is_some() {
            undo.map(NewSession::keep);
            println!("rayr node {node_hex} (pid {}) joined the cluster at {head} as {}", child.id(), a.node_ip_address);
            println!("  session: {}", session.dir.display());
            println!("  `rayr stop` on this host stops it (and every rayr process of the session here)");
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the node agent exited ({status}) before it joined:\n{log}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the node agent did not join within 20 s; its log said:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Blocks SIGTERM and SIGINT in every thread started after; `wait_for_stop` takes them.
fn block_stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    let _ = set.thread_block();
    set
}

/// The number of the stop signal taken (0 if waiting failed).
fn wait_for_stop(set: &SigSet) -> i32 {
    set.wait().map_or(0, |sig| sig as i32)
}

/// Sends `sig` to `pid`, never to a process group or every process (pid 0 or negative).
fn send_signal(pid: i32, sig: Signal) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// The long-running process `start` launches: the head and its node agent, or (`--join`)
/// a node agent that joins a cluster. Runs until SIGTERM/SIGINT, then stops cleanly.
fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // What the head and the node agent log goes to this process's stderr: the session's
    // logs/head.log or logs/node-<id>.log (`rayr logs` searches them). RAYR_LOG filters.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAYR_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
    let session = Session::open(&a.session);
    let resources: HashMap<String, f64> = serde_json::from_str(&a.resources_json)?;
    let cpus = resources.get("CPU").copied().unwrap_or(1.0);
    let mut cfg = rayr_node::NodeConfig::local(session.clone(), cpus);
    cfg.resources = resources.clone();
    cfg.ip_address = a.node_ip_address.clone();
    cfg.store_capacity = a.object_store_memory;
    cfg.store_prefault = cfg.store_prefault.min(a.object_store_memory);
    cfg.node_manager_port = a.node_manager_port;
    cfg.log_rotate = Some((a.log_rotate_bytes, a.log_rotate_keep));
    cfg.worker_ports = (a.min_worker_port != 0).then_some((a.min_worker_port, a.max_worker_port));
    cfg.labels = serde_json::from_str(&a.labels_json)?;
    cfg.transfer_address = Some(std::net::SocketAddr::new(
        a.node_ip_address.parse().map_err(|e| anyhow!("--node-ip-address {} is not an IP address: {e}", a.node_ip_address))?,
        a.object_manager_port,
    ).to_string());
    cfg.node_id = match &a.node_id {
        Some(h) => rayr_logs::parse_hex(h).and_then(|b| b.try_into().ok()).ok_or_else(|| anyhow!("--node-id {h} is not a 32-digit hex id"))?,
        None => new_id(),
    };
    let node_id = cfg.node_id;
    // What `rayr start` sends this process's output to.
    cfg.own_logs = vec![match &a.join {
        Some(_) => session.logs_dir().join(format!("node-{}.log", &hex(&node_id)[..16])),
        None => session.logs_dir().join("head.log"),
    }];
    let set = block_stop_signals();
    let node = rayr_node::start_node(cfg).context("starting the node agent")?;
    // Prometheus metrics: the node's, and the head's too in the head's process.
    let metrics_listener = std::net::TcpListener::bind((a.node_ip_address.as_str(), a.metrics_export_port))
        .with_context(|| format!("cannot serve metrics on {}:{} (--metrics-export-port)", a.node_ip_address, a.metrics_export_port))?;
    let metrics_address = metrics_listener.local_addr()?.to_string();
    let metrics_sources: Arc<parking_lot::Mutex<Vec<Box<dyn Fn() -> String + Send>>>> = Default::default();
    {
        let probe = node.resource_probe();
        metrics_sources.lock().push(Box::new(move || probe.metrics()));
    }
    serve_metrics(metrics_listener, metrics_sources.clone())?;
    let mut pids = std::fs::OpenOptions::new().create(true).append(true).open(session.pids_file())?;
    writeln!(pids, "{}", std::process::id())?;
    if let Some(head) = &a.join {
        let joining = rayr_node::membership::Joining {
            head: head.clone(),
            node_id,
            address: a.node_ip_address.clone(),
            resources,
            session_dir: session.dir.display().to_string(),
            agent_socket: node.client_address().to_string(),
            transfer_address: node.transfer_address().unwrap_or_default().to_string(),
            labels: serde_json::from_str(&a.labels_json)?,
            metrics_address: metrics_address.clone(),
            head_timeout: Duration::from_secs(a.head_timeout_s),
        };
        let joined = rayr_node::membership::join(&node, joining, a.ship_events).context("joining the cluster")?;
        if a.ship_events {
            // Drivers of this host attach to this node.
            std::fs::write(session.head_node_file(), node.socket_path().display().to_string())?;
        }
        eprintln!("rayr node {} joining the cluster at {head}", hex(&node_id));
        let sig = wait_for_stop(&set);
        joined.leave(node, &format!("asked to stop (signal {sig}): it left the cluster on purpose"));
        return Ok(());
    }
    let bind: std::net::SocketAddr = format!("{}:{}", a.node_ip_address, a.port)
        .parse()
        .map_err(|e| anyhow!("--node-ip-address {} is not an IP address: {e}", a.node_ip_address))?;
    let watch = rayr_head::MembershipConfig {
        heartbeat_period: Duration::from_millis(a.heartbeat_period_ms.max(1) as u64),
        missed_heartbeats: a.missed_heartbeats.max(1),
    };
    let head = rayr_head::start_head_with(session.clone(), bind, watch).map_err(|e| anyhow!("starting the head: {e}"))?;
    if a.resume {
        // The record's live nodes must register with this head again, or are declared dead.
        for n in head.index().nodes().map_err(|e| anyhow!("reading the session's record: {e}"))? {
            if n.state == "ALIVE"
                && let Ok(id) = <rayr_logs::Id>::try_from(n.node_id.as_slice())
                && id != node_id
            {
                head.membership().expect(id, &n.address, n.resources.clone());
            }
        }
    }
    // The head's own node: a member that needs no heartbeat; its free resources are read here.
    let transfer = node.transfer_address().unwrap_or_default().to_string();
    head.membership().add_head_node(node_id, &a.node_ip_address, node.client_address(), &transfer, &metrics_address, resources);
    {
        let head_metrics = head.metrics_source();
        metrics_sources.lock().push(Box::new(move || head_metrics()));
    }
    let membership = head.membership().clone();
    let following = rayr_node::membership::follow_in_process(&node, &head.address().to_string(), watch.heartbeat_period, move |available| {
        membership.head_node_available(&node_id, available);
        (membership.gone(), membership.view())
    })?;
    std::fs::write(session.head_node_file(), node.socket_path().display().to_string())?;
    eprintln!("rayr head serving at {} with node {}", head.address(), hex(&node_id));
    let sig = wait_for_stop(&set);
    eprintln!("rayr head stopping (signal {sig})");
    following.stop();
    node.shutdown_because(
        rayr_proto::NodeEndReason::AskedToStop,
        &format!("asked to stop (signal {sig}): the head's node left the cluster on purpose"),
    );
    head.shutdown();
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // A zombie counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Every process whose environment names this session (workers of any job).
fn session_processes(session: &Path) -> Vec<i32> {
    let needle = format!("RAYR_SESSION_DIR={}", session.display());
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                out.push(pid);
            }
    }
    out
}

fn stop(session: Option<PathBuf>) -> anyhow::Result<()> {
    let session = match session {
        Some(dir) if !dir.join("events").is_dir() => {
            bail!("--session {}: not a rayr session directory (no events/ in it); `ls $RAYR_TMPDIR` shows the sessions", dir.display())
        }
        Some(dir) => Session::open(dir),
        None => Session::latest(&rayr_logs::tmpdir()).ok_or_else(|| {
            anyhow!("no rayr session on this host ({} does not exist): nothing to stop", rayr_logs::tmpdir().join("session_latest").display())
        })?,
    };
    let mut pids: Vec<i32> = std::fs::read_to_string(session.pids_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(p) = std::fs::read_to_string(session.dir.join("embedded")) {
        pids.extend(p.trim().parse::<i32>().ok());
    }
    pids.retain(|p| process_alive(*p));
    let workers = session_processes(&session.dir);
    for &pid in &pids {
        send_signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever is left (a wedged head, workers whose agent was SIGKILLed) is killed.
    let mut killed = 0;
    for pid in pids.iter().chain(workers.iter()).copied().filter(|p| process_alive(*p)) {
        send_signal(pid, Signal::SIGKILL);
        killed += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().chain(workers.iter()).any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Sockets and shm stores of stopped processes.
    if let Ok(dir) = std::fs::read_dir(session.sockets_dir()) {
        for e in dir.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut stores = 0;
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let owner = name.strip_prefix("rayr-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok());
            if owner.is_some_and(|p| pids.contains(&p) || !process_alive(p)) {
                let _ = std::fs::remove_file(e.path());
                stores += 1;
            }
        }
    }
    let _ = std::fs::remove_file(session.head_address_file());
    if pids.is_empty() && workers.is_empty() {
        println!("nothing of session {} was running (stopped before); removed {stores} shm store(s)", session.dir.display());
        return Ok(());
    }
    println!(
        "stopped session {}: {} rayr process(es), {} worker(s){}; removed {} shm store(s)",
        session.dir.display(),
        pids.len(),
        workers.len(),
        if killed > 0 { format!(" ({killed} needed SIGKILL)") } else { String::new() },
        stores
    );
    Ok(())
}

async fn status(address: Option<String>, json: bool, metrics_urls: bool) -> anyhow::Result<()> {
    let cluster = connect::connect(address).await?;
    if metrics_urls {
        let connect::Cluster::Live(mut client) = cluster else {
            bail!("no cluster is running: metrics are served by running nodes only");
        };
        let nodes = client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await?.into_inner().nodes;
        let mut urls = Vec::new();
        for n in nodes.iter().filter(|n| n.state == "ALIVE") {
            if n.metrics_address.is_empty() {
                eprintln!("rayr: node {} serves no metrics (an embedded node)", hex(&n.node_id));
            } else {
                urls.push((hex(&n.node_id), format!("http://{}/metrics", n.metrics_address)));
            }
        }
        if json {
            let rows: Vec<_> = urls.iter().map(|(node, url)| serde_json::json!({"node_id": node, "url": url})).collect();
            println!("{}", serde_json::Value::Array(rows));
        } else {
            for (_, url) in urls {
                println!("{url}");
            }
        }
        return Ok(());
    }
    let now_us = rayr_logs::now_us();
    let (session, nodes, indexed, live) = match cluster {
        connect::Cluster::Live(mut client) => {
            let info = client.cluster_info(rayr_proto::ClusterInfoRequest::default()).await?.into_inner();
            (info.session_dir, info.nodes, info.events_indexed, true)
        }
        connect::Cluster::Offline(index) => {
            let dir = index.session().map(|s| s.dir.display().to_string()).unwrap_or_default();
            (dir, index.nodes()?, index.events_indexed()?, false)
        }
    };
    if json {
        let nodes: Vec<_> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node_id": hex(&n.node_id), "address": n.address, "state": n.state, "resources": n.resources,
                    "available_resources": n.available_resources, "store_capacity": n.store_capacity, "is_head": n.is_head,
                    "last_heartbeat_us": n.last_heartbeat_us, "reason": n.reason, "labels": n.labels,
                })
            })
            .collect();
        println!("{}", serde_json::json!({"session_dir": session, "running": live, "events_indexed": indexed, "nodes": nodes}));
        return Ok(());
    }
    println!("session: {session} ({})", if live { "running" } else { "not running: recorded state" });
    println!("events indexed: {indexed}");
    println!("{} node(s):", nodes.len());
    for n in nodes {
        let show = |r: &HashMap<String, f64>| {
            let mut v: Vec<String> = r.iter().map(|(k, v)| format!("{k}={v}")).collect();
            v.sort();
            v.join(" ")
        };
        let free = if n.state == "ALIVE" && live { format!("  free {}", show(&n.available_resources)) } else { String::new() };
        let head = if n.is_head { "  (head)" } else { "" };
        let beat = if live && n.state == "ALIVE" && n.last_heartbeat_us > 0 {
            format!("  beat {:.1}s ago", (now_us - n.last_heartbeat_us).max(0) as f64 / 1e6)
        } else {
            String::new()
        };
        let labels = if n.labels.is_empty() {
            String::new()
        } else {
            let mut v: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            v.sort();
            format!("  labels {}", v.join(","))
        };
        println!(
            "  {}  {:<15} {:<6} {}{free}  store {} MiB{labels}{beat}{head}",
            rayr_head::short_id(&n.node_id),
            n.address,
            n.state,
            show(&n.resources),
            n.store_capacity >> 20
        );
        if n.state == "DEAD" && !n.reason.is_empty() {
            println!("      {}", n.reason);
        }
    }
    if !live {
        // The head is gone, but its nodes may not be (it was killed): say what still runs
        // and the two ways on.
        let dir = PathBuf::from(&session);
        let mut running: Vec<i32> = std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| process_alive(*p))
            .collect();
        running.extend(session_processes(&dir));
        running.sort();
        running.dedup();
        if !running.is_empty() {
            println!(
                "\nthe head is not running, but {} process(es) of this session still run (node agents, workers: pids {}).\n  restart the head on this session (its nodes register again): rayr start --head --session {session} --port <its old port>\n  or end them all: rayr stop --session {session}",
                running.len(),
                running.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
            );
        } else {
            println!("(as last recorded: states are those the record held when the cluster stopped)");
        }
    }
    Ok(())
}

/// Asks the node agent of the latest session for its store usage.
fn memory(json: bool) -> anyhow::Result<()> {
    use rayr_proto::{ClientMessage, NodeMessage, client_message, node_message};
    let session = Session::latest(&rayr_logs::tmpdir()).ok_or_else(|| anyhow!("no rayr session on this host: start one with `rayr start --head`"))?;
    let socket = session
        .local_node_socket()
        .ok_or_else(|| anyhow!("the node agent of {} is not running", session.dir.display()))?;
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).with_context(|| format!("connecting to {}", socket.display()))?;
    let mut buf = Vec::new();
    rayr_proto::encode_frame(&ClientMessage { req_id: 1, body: Some(client_message::Body::StoreStats(Default::default())) }, &mut buf);
    stream.write_all(&buf)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = rayr_proto::frames::FrameReader::new(stream);
    let reply: NodeMessage = reader.next()?.ok_or_else(|| anyhow!("the node agent closed the connection"))?;
    let Some(node_message::Body::StoreStats(s)) = reply.body else { bail!("unexpected reply from the node agent") };
    if json {
        println!(
            "{}",
            serde_json::json!({"used_bytes": s.used_bytes, "capacity_bytes": s.capacity_bytes, "objects": s.objects,
                "copies": s.copies, "copy_bytes": s.copy_bytes, "pinned_copies": s.pinned_copies})
        );
    } else {
        println!("object store: {} objects, {} bytes used of {} ({:.1}%)", s.objects, s.used_bytes, s.capacity_bytes, 100.0 * s.used_bytes as f64 / s.capacity_bytes.max(1) as f64);
        if s.copies > 0 {
            println!(
                "  of which copies of other nodes' objects: {} ({} bytes; {} in use by readers, the others evicted first when room is needed)",
                s.copies, s.copy_bytes, s.pinned_copies
            );
        }
    }
    Ok(())
}

/// Serves `GET /metrics` (Prometheus text: every source's, one after another) on its own
/// thread, until the process ends.
fn serve_metrics(listener: std::net::TcpListener, sources: Arc<parking_lot::Mutex<Vec<Box<dyn Fn() -> String + Send>>>>) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("rayr-metrics".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text: String = sources.lock().iter().map(|s| s()).collect();
                    async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
                }),
            );
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("rayr: the metrics server stopped: {e}");
            }
        });
    })?;
    Ok(())
}
