//! The `rayr` command: start and stop clusters, and look at what they did.
//!
//! `start`/`stop`/`status`/`memory` live here; the read-only queries over the event record
//! (`list`, `summary`, `events`) live in [`query`], `why-died` in [`whydied`], and finding
//! the cluster a command talks about in [`connect`]. Every command exits non-zero with a
//! message that says what was wrong and what to do.

mod connect;
mod query;
mod whydied;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use rayr_logs::{Session, hex, new_id};

#[derive(Parser)]
#[command(name = "rayr", version, about = "rayr: distributed tasks for Rust, every decision recorded")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster's head (with a node agent) on this host, in the background.
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
    },
    /// List tasks, objects, workers, nodes, jobs or actors.
    List(query::ListArgs),
    /// Counts of tasks, actors or objects by state.
    Summary(query::SummaryArgs),
    /// Read the event record.
    Events(query::EventsArgs),
    /// How a task, worker, object, node or job ended, and why (the id an error named).
    WhyDied(whydied::WhyDiedArgs),
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
    /// Start the head of a new cluster (required until multi-node joining lands, issue #4).
    #[arg(long)]
    head: bool,
    /// Join the cluster whose head is at HOST:PORT.
    #[arg(long)]
    address: Option<String>,
    /// The head's gRPC port (0: any free port).
    #[arg(long, default_value_t = 6380)]
    port: u16,
    /// The address this node binds and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: String,
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
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = match cli.command {
        Command::Start(a) => start(a),
        Command::Stop { session } => stop(session),
        Command::Status { address, json } => rt.block_on(status(address, json)),
        Command::List(a) => rt.block_on(query::list(a)),
        Command::Summary(a) => rt.block_on(query::summary(a)),
        Command::Events(a) => rt.block_on(query::events(a)),
        Command::WhyDied(a) => rt.block_on(whydied::why_died(a)),
        Command::Memory { json } => memory(json),
        Command::Serve(a) => serve(a),
    };
    if let Err(e) = result {
        eprintln!("rayr: {e:#}");
        std::process::exit(1);
    }
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
    }
    let cpus = a.num_cpus.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0));
    if !cpus.is_finite() || cpus < 0.0 {
        bail!("--num-cpus {cpus} must be a non-negative number");
    }
    r.insert("CPU".into(), cpus);
    if let Some(g) = a.num_gpus {
        r.insert("GPU".into(), g);
    }
    if let Some(m) = a.memory {
        r.insert("memory".into(), m);
    }
    Ok(r)
}

/// Starts `rayr __serve` detached, then waits until its head answers.
fn start(a: StartArgs) -> anyhow::Result<()> {
    if let Some(addr) = &a.address {
        bail!(
            "joining the cluster at {addr} needs multi-node support, which is not built yet (issue #4); start a single-host cluster with `rayr start --head`"
        );
    }
    if !a.head {
        bail!("say what to start: `rayr start --head` starts a new cluster on this host");
    }
    let resources = node_resources(&a)?;
    if a.port != 0
        && let Err(e) = std::net::TcpListener::bind((a.node_ip_address.as_str(), a.port)) {
            bail!("cannot use {}:{} for the head: {e}; is another cluster running? pick another --port", a.node_ip_address, a.port);
        }
    let session = Session::create(&rayr_logs::tmpdir()).context("creating the session directory")?;
    let log = std::fs::File::create(session.logs_dir().join("head.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__serve")
        .arg("--session")
        .arg(&session.dir)
        .arg("--resources-json")
        .arg(serde_json::to_string(&resources)?)
        .arg("--port")
        .arg(a.port.to_string())
        .arg("--node-ip-address")
        .arg(&a.node_ip_address)
        .arg("--object-store-memory")
        .arg(a.object_store_memory.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let mut child = cmd.spawn().context("starting the head process")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(addr) = session.head_address() {
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
            bail!("the head did not come up within 20 s; see {}", session.logs_dir().join("head.log").display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The head + node agent process: runs until SIGTERM/SIGINT, then stops cleanly.
fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let session = Session::open(&a.session);
    let resources: HashMap<String, f64> = serde_json::from_str(&a.resources_json)?;
    let cpus = resources.get("CPU").copied().unwrap_or(1.0);
    let mut cfg = rayr_node::NodeConfig::local(session.clone(), cpus);
    cfg.resources = resources;
    cfg.ip_address = a.node_ip_address.clone();
    cfg.store_capacity = a.object_store_memory;
    cfg.store_prefault = cfg.store_prefault.min(a.object_store_memory);
    cfg.node_id = new_id();
    // Block the stop signals in every thread; this thread waits for them.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let node = rayr_node::start_node(cfg).context("starting the node agent")?;
    let bind: std::net::SocketAddr = format!("{}:{}", a.node_ip_address, a.port)
        .parse()
        .map_err(|e| anyhow!("--node-ip-address {} is not an IP address: {e}", a.node_ip_address))?;
    let head = rayr_head::start_head(session.clone(), bind).map_err(|e| anyhow!("starting the head: {e}"))?;
    let mut pids = std::fs::OpenOptions::new().create(true).append(true).open(session.pids_file())?;
    writeln!(pids, "{}", std::process::id())?;
    eprintln!("rayr head serving at {} with node {}", head.address(), hex(&node.node_id()));
    let mut sig = 0;
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("rayr head stopping (signal {sig})");
    node.shutdown();
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
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whatever is left (a wedged head, workers whose agent was SIGKILLed) is killed.
    let mut killed = 0;
    for pid in pids.iter().chain(workers.iter()).copied().filter(|p| process_alive(*p)) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
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

async fn status(address: Option<String>, json: bool) -> anyhow::Result<()> {
    let cluster = connect::connect(address).await?;
    let (session, nodes, indexed, live) = match cluster {
        connect::Cluster::Live(mut client) => {
            let info = client.cluster_info(rayr_proto::ClusterInfoRequest {}).await?.into_inner();
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
            .map(|n| serde_json::json!({"node_id": hex(&n.node_id), "address": n.address, "state": n.state, "resources": n.resources, "store_capacity": n.store_capacity}))
            .collect();
        println!("{}", serde_json::json!({"session_dir": session, "running": live, "events_indexed": indexed, "nodes": nodes}));
        return Ok(());
    }
    println!("session: {session} ({})", if live { "running" } else { "not running: recorded state" });
    println!("events indexed: {indexed}");
    println!("{} node(s):", nodes.len());
    for n in nodes {
        let mut res: Vec<String> = n.resources.iter().map(|(k, v)| format!("{k}={v}")).collect();
        res.sort();
        println!("  {}  {:<15} {:<6} {}  store {} MiB", &hex(&n.node_id)[..12], n.address, n.state, res.join(" "), n.store_capacity >> 20);
    }
    Ok(())
}

/// Asks the node agent of the latest session for its store usage.
fn memory(json: bool) -> anyhow::Result<()> {
    use rayr_proto::{ClientMessage, NodeMessage, client_message, node_message};
    let session = Session::latest(&rayr_logs::tmpdir()).ok_or_else(|| anyhow!("no rayr session on this host: start one with `rayr start --head`"))?;
    let socket = std::fs::read_dir(session.sockets_dir())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("node-") && n.ends_with(".sock")))
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
        println!("{}", serde_json::json!({"used_bytes": s.used_bytes, "capacity_bytes": s.capacity_bytes, "objects": s.objects}));
    } else {
        println!("object store: {} objects, {} bytes used of {} ({:.1}%)", s.objects, s.used_bytes, s.capacity_bytes, 100.0 * s.used_bytes as f64 / s.capacity_bytes.max(1) as f64);
    }
    Ok(())
}
