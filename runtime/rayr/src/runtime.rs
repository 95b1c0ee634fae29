//! Starting and stopping rayr in a driver: join a cluster, or embed one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rayr_logs::{Session, new_id};

use crate::core::{self, ConnectParams, Core};
use crate::error::{Error, Result};
use crate::options::Config;

/// The head and node agent of an embedded cluster, owned by this driver.
struct Embedded {
    /// The node following its head's membership, as the head's node of `rayr start` does.
    following: rayr_node::membership::Following,
    node: rayr_node::NodeHandle,
    head: rayr_head::HeadHandle,
}

static EMBEDDED: Mutex<Option<Embedded>> = Mutex::new(None);
static INIT_LOCK: Mutex<()> = Mutex::new(());
/// The driver's exit code as its `#[rayr::main]` returned (0 until it has), told to the
/// node agent as the driver disconnects: the job's outcome.
static MAIN_EXIT_CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// `#[rayr::main]` returned; `failed`: with an `Err`.
pub fn main_returned(failed: bool) {
    MAIN_EXIT_CODE.store(failed as i32, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn main_exit_code() -> i32 {
    MAIN_EXIT_CODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether what `main` returned is an `Err` (see `#[rayr::main]`).
pub trait MainReturnedErr {
    fn __rayr_main_failed(&self) -> bool;
}
impl<T, E> MainReturnedErr for Result<T, E> {
    fn __rayr_main_failed(&self) -> bool {
        self.is_err()
    }
}
/// The fallback of [`MainReturnedErr`]: any other return type.
pub trait MainReturnedOther {
    fn __rayr_main_failed(&self) -> bool;
}
impl<T> MainReturnedOther for &T {
    fn __rayr_main_failed(&self) -> bool {
        false
    }
}

/// Marks a session whose cluster lives inside one driver: other drivers never join it.
const EMBEDDED_MARKER: &str = "embedded";

/// Connects to `RAYR_ADDRESS`, else to a cluster started with `rayr start` on this host,
/// else starts an embedded one inside this process. Calling it again is a no-op.
pub fn init() -> Result<()> {
    init_with(Config::from_env()?)
}

/// [`init`] with explicit settings.
pub fn init_with(cfg: Config) -> Result<()> {
    let _guard = INIT_LOCK.lock();
    if core::current().is_some() {
        return Ok(());
    }
    if std::env::var(rayr_node::pool::env::WORKER_MODE).as_deref() == Ok("1") {
        // A node agent started this binary as a worker, but `main` ran as if it were the
        // driver: without #[rayr::main] the worker would start a cluster of its own.
        eprintln!(
            "rayr: this process was started as a rayr worker, but the program's `main` is not annotated with #[rayr::main]; add it so the binary can serve tasks"
        );
        std::process::exit(2);
    }
    let tmpdir = cfg.tmpdir.clone().unwrap_or_else(rayr_logs::tmpdir);
    let node_socket = if let Some(address) = &cfg.address {
        let session = session_of_head(address)?;
        node_socket_in(&session.dir)?
    } else if let Some(session) = running_local_cluster(&tmpdir) {
        node_socket_in(&session.dir)?
    } else {
        start_embedded(&cfg, &tmpdir)?
    };
    let params = ConnectParams {
        node_socket,
        worker_id: new_id(),
        job_id: new_id(),
        is_driver: true,
        record_events: cfg.record_events,
        max_inline: cfg.max_inline_bytes,
        executor: None,
    };
    let core = match Core::connect(params) {
        Ok(c) => c,
        Err(e) => {
            stop_embedded();
            return Err(e);
        }
    };
    crate::trace::init("rayr-driver", vec![("rayr.worker_id", rayr_logs::hex(&core.me)), ("rayr.node_id", rayr_logs::hex(&core.node))]);
    core::install(core);
    register_exit_hook();
    Ok(())
}

/// The session directory of the cluster this process is connected to.
pub fn session_dir() -> Result<PathBuf> {
    Ok(core::require()?.session_dir.clone())
}

/// Disconnects from the cluster; an embedded cluster stops (its workers exit, its socket
/// and shm store are removed; its logs and event record stay in the session directory).
pub fn shutdown() {
    let _guard = INIT_LOCK.lock();
    // The spans of this process's last tasks go out before it does.
    crate::trace::flush(Duration::from_secs(2));
    if let Some(core) = core::uninstall() {
        core.shutdown("rayr::shutdown()", main_exit_code());
        drop_core_later(core);
    }
    stop_embedded();
}

fn stop_embedded() {
    if let Some(e) = EMBEDDED.lock().take() {
        e.following.stop();
        e.node.shutdown();
        e.head.shutdown();
    }
}

/// Background threads may still hold the core for a moment; let them finish with it.
fn drop_core_later(core: Arc<Core>) {
    drop(core);
}

fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        if core::current().is_some() || EMBEDDED.lock().is_some() {
            shutdown();
        }
    }
    // SAFETY: registering a plain extern "C" fn.
    ONCE.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
}

fn start_embedded(cfg: &Config, tmpdir: &Path) -> Result<PathBuf> {
    let io = |what: &str, e: std::io::Error| Error::Connection(format!("cannot {what}: {e}"));
    let session = Session::create(tmpdir).map_err(|e| io(&format!("create a session under {}", tmpdir.display()), e))?;
    std::fs::write(session.dir.join(EMBEDDED_MARKER), std::process::id().to_string())
        .map_err(|e| io("write the session marker", e))?;
    let cpus = cfg.num_cpus.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0));
    let mut node_cfg = rayr_node::NodeConfig::local(session.clone(), cpus);
    if let Some(g) = cfg.num_gpus {
        node_cfg.resources.insert("GPU".into(), g);
    }
    if let Some(m) = cfg.object_store_memory {
        node_cfg.store_capacity = m;
        node_cfg.store_prefault = node_cfg.store_prefault.min(m);
    }
    let (address, resources) = (node_cfg.ip_address.clone(), node_cfg.resources.clone());
    let node = rayr_node::start_node(node_cfg).map_err(|e| io("start the embedded node agent", e))?;
    let socket = node.socket_path().to_path_buf();
    let head = match rayr_head::start_head(session, "127.0.0.1:0".parse().unwrap()) {
        Ok(h) => h,
        Err(e) => {
            node.shutdown();
            return Err(Error::Connection(format!("cannot start the embedded head: {e}")));
        }
    };
    // The head's node, wired as `rayr start --head` wires it (rayr_node::membership).
    let membership = head.membership().clone();
    let node_id = node.node_id();
    membership.add_head_node(node_id, &address, node.client_address(), "", "", resources);
    let period = membership.config().heartbeat_period;
    let following = match rayr_node::membership::follow_in_process(&node, &head.address().to_string(), period, move |available| {
        membership.head_node_available(&node_id, available);
        (membership.gone(), membership.view())
    }) {
        Ok(f) => f,
        Err(e) => {
            node.shutdown();
            head.shutdown();
            return Err(io("start the embedded node's membership thread", e));
        }
    };
    *EMBEDDED.lock() = Some(Embedded { following, node, head });
    Ok(socket)
}

/// The latest session on this host, when it is a `rayr start` cluster whose head answers.
fn running_local_cluster(tmpdir: &Path) -> Option<Session> {
    let session = Session::latest(tmpdir)?;
    if session.dir.join(EMBEDDED_MARKER).exists() {
        return None;
    }
    let address = session.head_address()?;
    let addr: std::net::SocketAddr = address.parse().ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    Some(session)
}

/// Asks the head at `address` where its session lives.
fn session_of_head(address: &str) -> Result<Session> {
    let bad = |why: String| {
        Error::Connection(format!(
            "cannot reach the rayr head at {address:?} (from RAYR_ADDRESS or Config::address): {why}; start one with `rayr start --head` or unset RAYR_ADDRESS to run embedded"
        ))
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| bad(e.to_string()))?;
    let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(url).map_err(|e| bad(e.to_string()))?.connect_timeout(Duration::from_secs(2));
        let channel = endpoint.connect().await.map_err(|e| bad(e.to_string()))?;
        let mut client = rayr_proto::head_client::HeadClient::new(channel);
        let info = client.cluster_info(rayr_proto::ClusterInfoRequest { quick: true }).await.map_err(|e| bad(e.message().to_string()))?;
        Ok(Session::open(info.into_inner().session_dir))
    })
}

/// The node agent socket of a session on this host.
fn node_socket_in(session_dir: &Path) -> Result<PathBuf> {
    let sockets = session_dir.join("sockets");
    Session::open(session_dir).local_node_socket().ok_or_else(|| {
        Error::Connection(format!(
            "no node agent socket in {}: the cluster's node agent is not running on this host",
            sockets.display()
        ))
    })
}
