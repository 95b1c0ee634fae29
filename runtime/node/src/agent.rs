//! The node agent: its services, and the thin dispatcher that serves them on its sockets.
//!
//! Each client connection is read on a thread of its own (`serve_conn`), which decodes a
//! `ClientMessage` and hands it to the service that owns it:
//!
//! - the **worker pool** (`workers`: clients, processes started and reaped, idle workers by
//!   job, the jobs' binaries), with `spawn_worker` / `worker_exited` here;
//! - the **lease ledger** (`crate::ledger`: free resources and queued requests; pure
//!   decisions, carried out by `grant_pending` here), with spillback to other nodes;
//! - the **detached actors** the agent holds and restarts (`detached`);
//! - the **store objects** (`store`: the arena's ranges, primaries and copies) and their
//!   transfers between nodes (`transfer`);
//! - the **actor names** (`names`), unique across the cluster through the head (`placement`);
//! - the **event log**: clients' event areas drained into `events/events-<node>.log`.
//!
//! # Lock order
//!
//! A thread holding one of these locks takes only locks below it, never one above:
//!
//! 1. `state`: the worker pool, the lease ledger and the detached actors, under one lock
//!    because a grant decides over all three at once (an idle worker of the job, the
//!    resources, the actor it hosts). `exited` (a condvar) waits on it.
//! 2. `store`: the store's objects, copies, pulls and streamed ranges. Taken under `state`
//!    when a process's end frees what it owned; the transfer code takes it alone.
//! 3. `actor_names`: taken under `state` when a detached actor ends.
//! 4. the views and tables each taken for a moment and released before any other:
//!    `cluster`, `gone`, `head_address`, `client_conns`, `counters.exits`, the
//!    `binaries` tables, a transfer's `channels`.
//! 5. `draining`, then `event_areas`, then `events` (the log itself, last: an event is
//!    recorded under any of the above).
//!
//! `Conn::stream` (a client's write half) is a leaf too: replies are written under `state`.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};

use rayr_proto::frames::Stream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rayr_logs::event_area::EventArea;
use rayr_logs::{EventLogWriter, Id, Session, hex, new_id, now_us};
use rayr_proto::frames::FrameReader;
use rayr_proto::{
    ActorDeathCause, ClientMessage, CreateObjectReply, Event, EventKind, JobDetail, LeaseReply, NodeDetail,
    NodeEndReason, NodeMessage, ObjectDetail, ObjectEndReason, RegisterReply, WorkerExitReason, StoreStatsReply, WorkerExit, WorkerExitReply, WorkerStart, client_message,
    encode_frame, event, node_message,
};
use rayr_store::{Allocator, Arena};

use crate::pool::{self, env};
use store::{Store, StoreObject};
use workers::{Client, ExitRecord, Pool, RemoteClient, Spawned};
use nix::sys::signal::Signal;

mod binaries;
mod detached;
pub(crate) mod logs;
mod metrics;
mod names;
mod placement;
mod store;
mod transfer;
mod workers;
use crate::ledger::{self, Decision, Ledger, Request};
use crate::resources::{self, Resources};

/// What a node agent is started with. Every field is a `rayr start` flag.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub session: Session,
    pub node_id: Id,
    /// Total resources of this node: `CPU`, `GPU`, `memory` and custom names.
    pub resources: Resources,
    /// Size of the shm object store in bytes (sparse until used).
    pub store_capacity: u64,
    /// Bytes of the store faulted in at start, in the background.
    pub store_prefault: u64,
    /// The address shown for this node (`--node-ip-address`).
    pub ip_address: String,
    /// Most task worker processes alive at once (blocked workers free their CPU, so nested
    /// tasks can need more processes than CPUs); workers hosting actors come on top.
    pub max_workers: usize,
    /// IP:PORT the agent serves object transfers on (`--object-manager-port`; port 0: any
    /// free one). None: a lone node (embedded), which reads no other node's objects.
    pub transfer_address: Option<String>,
    /// Port of the agent's TCP listener for clients of other hosts (0: any free one).
    pub node_manager_port: u16,
    /// Ports the TCP listeners of its drivers and workers take (None: any free one).
    pub worker_ports: Option<(u16, u16)>,
    /// Labels the node was started with (`--labels`), recorded in NODE_STARTED.
    pub labels: HashMap<String, String>,
    /// The agent's own log files (what `rayr start` writes its output to), searched with
    /// its workers' logs.
    pub own_logs: Vec<PathBuf>,
    /// Workers' stdout/stderr files rotate past this many bytes, keeping this many old
    /// ones (None: the workers' defaults, 512 MiB and 5).
    pub log_rotate: Option<(u64, u32)>,
}

impl NodeConfig {
    /// A node on this host with `num_cpus` CPUs and defaults for everything else.
    pub fn local(session: Session, num_cpus: f64) -> NodeConfig {
        let mut resources = Resources::new();
        resources.insert("CPU".into(), num_cpus);
        NodeConfig {
            session,
            node_id: new_id(),
            resources,
            store_capacity: 2 << 30,
            store_prefault: 128 << 20,
            ip_address: "127.0.0.1".into(),
            max_workers: (num_cpus.ceil() as usize) * 4 + 16,
            transfer_address: None,
            node_manager_port: 0,
            worker_ports: None,
            labels: HashMap::new(),
            own_logs: Vec::new(),
            log_rotate: None,
        }
    }
}

/// A running node agent. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    agent: Arc<Agent>,
    /// The threads accepting clients (Unix, and TCP on a networked node).
    accepting: Option<rayr_proto::frames::Accepting>,
    /// Runs the object transfer server and pulls (multi-node clusters only).
    transfer_rt: Option<tokio::runtime::Runtime>,
    peer_accept_thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    pub fn socket_path(&self) -> &Path {
        &self.agent.socket_path
    }
    /// Where clients reach the agent: its socket, and on a networked node `|IP:PORT` for
    /// clients of other hosts (see `rayr_proto::frames::connect`).
    pub fn client_address(&self) -> &str {
        &self.agent.client_address
    }
    pub fn node_id(&self) -> Id {
        self.agent.cfg.node_id
    }
    pub fn store_path(&self) -> &Path {
        self.agent.arena.path()
    }
    /// Where other nodes pull objects from this one (IP:PORT), when it serves transfers.
    pub fn transfer_address(&self) -> Option<&str> {
        self.agent.transfer.get().map(|t| t.address.as_str())
    }
    /// The node's event log (what a node on another host than the head ships to it).
    pub fn event_log(&self) -> PathBuf {
        self.agent.cfg.session.event_log(&hex(&self.agent.cfg.node_id))
    }
    /// Bytes of the store in use by live objects.
    pub fn store_used(&self) -> u64 {
        self.agent.store.lock().alloc.used()
    }

    /// What the node has free now, readable from another thread (a heartbeat).
    pub fn resource_probe(&self) -> ResourceProbe {
        ResourceProbe(self.agent.clone())
    }

    /// Stops every worker (SIGTERM, then SIGKILL after 2 s), records NODE_STOPPED, and
    /// removes the socket and the shm file.
    pub fn shutdown(self) {
        self.shutdown_because(NodeEndReason::AskedToStop, "the node agent was asked to stop");
    }

    /// `shutdown`, with why (NODE_STOPPED's `end`, and `reason` in words).
    pub fn shutdown_because(mut self, end: NodeEndReason, reason: &str) {
        self.agent.shutdown(end, reason);
        // Threads still holding the agent keep the mapping; the file goes now.
        let _ = std::fs::remove_file(self.agent.arena.path());
        // Wake the accept loops so they see the flag.
        if let Some(a) = self.accepting.take() {
            a.stop();
        }
        let _ = UnixStream::connect(&self.agent.peer_socket_path);
        if let Some(t) = self.peer_accept_thread.take() {
            let _ = t.join();
        }
        if let Some(rt) = self.transfer_rt.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.agent.socket_path);
        let _ = std::fs::remove_file(&self.agent.peer_socket_path);
    }
}

/// What a node's membership loop reads from the node and tells it (see
/// [`NodeHandle::resource_probe`]).
pub struct ResourceProbe(Arc<Agent>);

impl ResourceProbe {
    /// Resources not held by any lease.
    pub fn available(&self) -> Resources {
        self.0.state.lock().leases.available().iter().map(|(k, v)| (k.clone(), v.max(0.0))).collect()
    }

    /// The cluster's live nodes, as the head last said (this node among them).
    pub fn set_cluster(&self, nodes: Vec<rayr_proto::NodeView>) {
        *self.0.cluster.lock() = nodes;
    }

    /// The node's metrics now, as Prometheus text.
    pub fn metrics(&self) -> String {
        self.0.metrics_text()
    }

    /// Where the head answers (it places actors).
    pub fn set_head_address(&self, address: &str) {
        *self.0.head_address.lock() = Some(address.to_string());
    }

    /// The nodes that left the cluster or died, as the head last said: objects here whose
    /// owners were there are lost.
    pub fn set_gone(&self, nodes: Vec<rayr_proto::GoneNode>) {
        self.0.nodes_gone(nodes);
    }
}

/// Starts the agent: creates the store, binds the socket, records NODE_STARTED.
pub fn start_node(cfg: NodeConfig) -> io::Result<NodeHandle> {
    let node_hex = hex(&cfg.node_id);
    cfg.session.prepare_sockets()?; // a resumed session's may have gone (rayr_logs::Session)
    let socket_path = cfg.session.node_socket(&node_hex);
    remove_stale_stores();
    let store_path = PathBuf::from(format!("/dev/shm/rayr-{}-{}", std::process::id(), &node_hex[..12]));
    let arena = Arena::create(&store_path, cfg.store_capacity).map_err(io::Error::other)?;
    let events = EventLogWriter::open(&cfg.session.event_log(&node_hex))?;
    let listener = UnixListener::bind(&socket_path)?;
    let peer_socket_path = cfg.session.node_peer_socket(&node_hex);
    let peer_listener = match UnixListener::bind(&peer_socket_path) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&socket_path);
            return Err(e);
        }
    };
    let alloc = Allocator::new(arena.capacity());
    // A networked node (one that serves transfers) takes clients of other hosts over TCP.
    let client_tcp = match &cfg.transfer_address {
        Some(_) => {
            let ip: std::net::IpAddr = cfg.ip_address.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("node address {:?}: {e}", cfg.ip_address)))?;
            let port = cfg.node_manager_port;
            Some(std::net::TcpListener::bind((ip, port)).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {ip}:{port} (--node-manager-port): {e}")))?)
        }
        None => None,
    };
    let mut client_address = socket_path.display().to_string();
    if let Some(l) = &client_tcp {
        client_address = format!("{client_address}|{}", l.local_addr()?);
    }
    let agent = Arc::new(Agent {
        client_address,
        socket_path,
        peer_socket_path,
        arena,
        events: Mutex::new(events),
        state: Mutex::new(State { pool: Pool::default(), leases: Ledger::new(cfg.resources.clone()), detached: HashMap::new() }),
        store: Mutex::new(Store::new(alloc)),
        exited: Condvar::new(),
        stopping: AtomicBool::new(false),
        open_conns: std::sync::atomic::AtomicUsize::new(0),
        client_conns: Mutex::new(Vec::new()),
        actor_names: Default::default(),
        event_areas: Mutex::new(Vec::new()),
        draining: Mutex::new(()),
        cluster: Mutex::new(Vec::new()),
        drainer: std::sync::OnceLock::new(),
        transfer: std::sync::OnceLock::new(),
        gone: Mutex::new(HashMap::new()),
        head_address: Mutex::new(None),
        binaries: Default::default(),
        counters: Default::default(),
        cfg,
    });
    let transfer_rt = match agent.cfg.transfer_address.clone() {
        Some(address) => match transfer::start(&agent, &address) {
            Ok(rt) => Some(rt),
            Err(e) => {
                let _ = std::fs::remove_file(&agent.socket_path);
                let _ = std::fs::remove_file(&agent.peer_socket_path);
                return Err(e);
            }
        },
        None => None,
    };
    let drain_agent = Arc::downgrade(&agent);
    let drainer = std::thread::Builder::new().name("rayr-event-drain".into()).spawn(move || {
        while let Some(agent) = drain_agent.upgrade() {
            if agent.stopping.load(Ordering::Acquire) {
                break;
            }
            agent.drain_events(None);
            drop(agent);
            std::thread::park_timeout(DRAIN_EVERY);
        }
    })?;
    let _ = agent.drainer.set(drainer.thread().clone());
    let prefault = agent.clone();
    std::thread::Builder::new()
        .name("rayr-store-prefault".into())
        .spawn(move || prefault.arena.prefault(prefault.cfg.store_prefault))?;
    let mut start = agent.event(EventKind::NodeStarted);
    start.detail = Some(event::Detail::Node(NodeDetail {
        address: agent.cfg.ip_address.clone(),
        reason: String::new(),
        end: 0,
        resources: agent.cfg.resources.clone(),
        store_capacity: agent.cfg.store_capacity,
        labels: agent.cfg.labels.clone(),
    }));
    agent.record(&start);
    let (stop, serve) = (agent.clone(), agent.clone());
    let accepting = rayr_proto::frames::accept_both(
        listener,
        client_tcp,
        move || stop.stopping.load(Ordering::Acquire),
        move |stream| {
            let agent = serve.clone();
            let _ = std::thread::Builder::new().name("rayr-node-conn".into()).spawn(move || agent.serve(stream));
        },
    )?;
    let peer_agent = agent.clone();
    let peer_accept_thread = std::thread::Builder::new().name("rayr-node-peers".into()).spawn(move || peer_agent.accept_peers(peer_listener))?;
    Ok(NodeHandle { agent, transfer_rt, accepting: Some(accepting), peer_accept_thread: Some(peer_accept_thread) })
}

/// Removes `/dev/shm/rayr-<pid>-*` stores and `rayr-ev-<pid>-*` event areas whose creating
/// process is gone (a node agent or embedded driver that was SIGKILLed cannot clean up
/// after itself; a client killed before it registered leaves its area).
fn remove_stale_stores() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        // Stores (rayr-<pid>-<node>) and event areas never mapped by an agent (rayr-ev-<pid>-…).
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("rayr-ev-").or_else(|| n.strip_prefix("rayr-"))) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if !pool::process_exists(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A client connection: replies are written whole under the lock.
struct Conn {
    stream: Mutex<Stream>,
}

impl Conn {
    fn send(&self, msg: &NodeMessage) {
        let mut buf = Vec::with_capacity(64);
        encode_frame(msg, &mut buf);
        let _ = io::Write::write_all(&mut *self.stream.lock(), &buf);
    }
    fn reply(&self, req_id: u64, body: node_message::Body) {
        self.send(&NodeMessage { req_id, body: Some(body) });
    }
}

/// Who a granted lease goes to.
enum LeaseFor {
    /// A client's request, answered on its connection.
    Client(Arc<Conn>, u64),
    /// A detached actor the agent holds itself (see `detached`).
    Detached(Id),
}

/// A lease request as the ledger queues it.
type PendingLease = Request<LeaseFor>;

/// What the state lock guards: the worker pool, the lease ledger and the detached actors,
/// one lock because a grant decides over all three at once (see the lock order above).
struct State {
    pool: Pool,
    /// Free resources and queued lease requests, and what is granted from them.
    leases: Ledger<LeaseFor>,
    /// Detached actors held here, ended ones included (their death is what a locate says).
    detached: HashMap<Id, detached::DetachedActor>,
}



struct Agent {
    cfg: NodeConfig,
    socket_path: PathBuf,
    /// `socket_path`, and `|IP:PORT` on a networked node (see `NodeHandle::client_address`).
    client_address: String,
    /// Where core workers ask about the detached actors held here (see `detached`).
    peer_socket_path: PathBuf,
    arena: Arena,
    events: Mutex<EventLogWriter>,
    state: Mutex<State>,
    /// The store's objects and copies (see `store`).
    store: Mutex<Store>,
    exited: Condvar,
    stopping: AtomicBool,
    /// Client connections still being read. Shutdown waits for them (each drains its
    /// client's event area a last time as it closes).
    open_conns: std::sync::atomic::AtomicUsize,
    /// Every client connection, to tell them what the head said unasked (a node gone).
    client_conns: Mutex<Vec<std::sync::Weak<Conn>>>,
    /// Named actors: (namespace, name) → who holds the name (freed when the actor ends or
    /// its owner goes).
    actor_names: names::ActorNames,
    /// Every client's event area, drained into the log by the drain thread.
    event_areas: Mutex<Vec<EventAreaEntry>>,
    /// One drain at a time (an area has one reader).
    draining: Mutex<()>,
    /// The cluster's live nodes, as the head last said (empty: this node alone).
    cluster: Mutex<Vec<rayr_proto::NodeView>>,
    drainer: std::sync::OnceLock<std::thread::Thread>,
    /// The object transfer service, when this node serves one.
    transfer: std::sync::OnceLock<transfer::Transfer>,
    /// Nodes no longer in the cluster, as the head last said: why, and their NODE_DIED.
    gone: Mutex<HashMap<Id, (String, Vec<u8>)>>,
    /// The head's gRPC address (HOST:PORT), which places actors; None: a lone node.
    head_address: Mutex<Option<String>>,
    /// Jobs' binaries by content hash (see `binaries`).
    binaries: binaries::Binaries,
    /// What `metrics` counts as it happens.
    counters: metrics::Counters,
}

struct EventAreaEntry {
    worker: Id,
    source: rayr_logs::RunSource,
    area: Arc<EventArea>,
}

/// How often the drain thread moves every client's events into the log (sooner when a
/// client asks: a ring is filling up).
const DRAIN_EVERY: Duration = Duration::from_millis(5);

fn id_of(bytes: &[u8]) -> Option<Id> {
    bytes.try_into().ok()
}

impl Agent {
    fn event(&self, kind: EventKind) -> Event {
        Event {
            id: new_id().to_vec(),
            time_us: now_us(),
            node_id: self.cfg.node_id.to_vec(),
            source_worker: self.cfg.node_id.to_vec(),
            source_pid: std::process::id(),
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn record(&self, event: &Event) {
        let mut buf = Vec::with_capacity(160);
        rayr_logs::encode_single_run_frame(event, &mut buf);
        if let Err(e) = self.events.lock().append(&buf) {
            tracing::error!("cannot append to the event log: {e}");
        }
    }

    fn serve(self: Arc<Self>, stream: Stream) {
        self.open_conns.fetch_add(1, Ordering::AcqRel);
        self.serve_conn(stream);
        self.open_conns.fetch_sub(1, Ordering::AcqRel);
    }

    fn serve_conn(self: &Arc<Self>, stream: Stream) {
        let over_tcp = matches!(stream, Stream::Tcp(_));
        let mut local_client = false;
        let Ok(write_half) = stream.try_clone() else { return };
        let conn = Arc::new(Conn { stream: Mutex::new(write_half) });
        {
            let mut conns = self.client_conns.lock();
            conns.retain(|c| c.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        let mut reader = FrameReader::new(stream);
        let mut me: Option<Id> = None;
        let mut said_goodbye: Option<rayr_proto::Disconnect> = None;
        loop {
            let body = match reader.next_raw() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("dropping a client connection: {e}");
                    break;
                }
            };
            let msg = match <ClientMessage as rayr_proto::Message>::decode(body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("dropping a client connection: undecodable message: {e}");
                    break;
                }
            };
            let Some(body) = msg.body else { continue };
            let req = msg.req_id;
            match body {
                client_message::Body::Register(r) => {
                    let (worker, remote) = (id_of(&r.worker_id), r.remote);
                    let reply = self.register_over(over_tcp, r);
                    if reply.error.is_empty() {
                        me = worker;
                        local_client = !remote;
                    }
                    conn.reply(req, node_message::Body::Registered(reply));
                }
                client_message::Body::Lease(l) => self.lease(&conn, me, req, l),
                client_message::Body::ReturnLease(r) => {
                    if let Some(w) = id_of(&r.worker_id) {
                        self.return_lease(w, (!r.kill.is_empty()).then_some(r.kill.as_str()));
                    }
                }
                client_message::Body::CreateObject(c) => conn.reply(req, node_message::Body::Created(self.create_object(c))),
                client_message::Body::FreeObjects(f) => self.free_objects(&f.object_ids),
                client_message::Body::PullObject(p) => self.pull_object(&conn, req, me, p),
                client_message::Body::ReleaseCopies(r) => {
                    if let Some(w) = me {
                        self.release_copies(w, &r.object_ids);
                    }
                }
                client_message::Body::FreeCopies(f) => self.free_copies(f),
                client_message::Body::DrainEvents(_) => {
                    if let Some(t) = self.drainer.get() {
                        t.unpark();
                    }
                }
                client_message::Body::Blocked(b) => {
                    if let Some(w) = me {
                        self.set_blocked(w, b.blocked);
                    }
                }
                client_message::Body::WorkerExit(q) => {
                    // It may wait for the reap (up to its deadline): not on this thread, which
                    // must keep reading the client's leases and events meanwhile.
                    let (agent, conn) = (self.clone(), conn.clone());
                    let _ = std::thread::Builder::new()
                        .name("rayr-exit-query".into())
                        .spawn(move || agent.worker_exit_query(&conn, req, q));
                }
                client_message::Body::NameActor(a) => conn.reply(req, node_message::Body::ActorName(self.name_actor(a))),
                client_message::Body::LookupActor(a) => conn.reply(req, node_message::Body::ActorName(self.lookup_actor(&a))),
                client_message::Body::UnnameActor(a) => self.unname_actor(a),
                client_message::Body::StoreStats(_) => conn.reply(req, node_message::Body::StoreStats(self.store_stats())),
                client_message::Body::CreateDetached(c) => {
                    let job = me.and_then(|w| self.state.lock().pool.clients.get(&w).map(|c| c.job));
                    conn.reply(req, node_message::Body::Detached(self.create_detached(job, c)));
                }
                client_message::Body::Disconnect(d) => said_goodbye = Some(d),
                client_message::Body::UpdateAddress(address) => {
                    if let Some(w) = me {
                        self.update_address(w, address);
                    }
                }
            }
        }
        if let Some(w) = me {
            // Its named actors end with it: their names are free again.
            self.release_names_of_owner(w);
            // What it recorded up to its end goes to the log, even if it was killed.
            self.drain_events(Some(w));
            self.event_areas.lock().retain(|e| e.worker != w);
            self.unpin_copies_of(w);
            // A process of this node (not a submitter of another leasing here) is gone: what
            // it owned in other nodes' stores goes too.
            if local_client {
                self.announce_owner_gone(w);
            }
            self.client_gone(w, said_goodbye);
            self.remote_client_gone(w);
        }
    }

    /// Moves what clients packed into their event areas into the log: all of them, or the
    /// one of a client whose connection closed (it has ended, or is about to).
    fn drain_events(&self, only: Option<Id>) {
        let _one_at_a_time = self.draining.lock();
        let areas: Vec<(rayr_logs::RunSource, Arc<EventArea>)> = self
            .event_areas
            .lock()
            .iter()
            .filter(|e| only.is_none_or(|w| w == e.worker))
            .map(|e| (e.source.clone(), e.area.clone()))
            .collect();
        for (source, area) in areas {
            let result = area.drain(&source, only.is_some(), |slices| self.events.lock().append_vectored(slices));
            if let Err(e) = result {
                tracing::error!("cannot append to the event log: {e}");
            }
        }
    }

    /// `Register`, on a connection over TCP (`over_tcp`) or the Unix socket.
    fn register_over(self: &Arc<Self>, over_tcp: bool, r: rayr_proto::RegisterClient) -> RegisterReply {
        if over_tcp && !r.remote {
            // Only submitters of other nodes come over the network: a process of this node
            // (which names binaries to run and files to remove) registers over the Unix socket.
            return RegisterReply { error: "register: only submitters of other nodes (remote) may register over TCP".into(), ..Default::default() };
        }
        if over_tcp && id_of(&r.binary_node).is_none_or(|n| n == self.cfg.node_id) {
            // Its binary is then fetched by hash from that node, never taken by path.
            return RegisterReply { error: "register: a submitter of another node must name its own node (binary_node)".into(), ..Default::default() };
        }
        self.register(r)
    }

    /// `UpdateAddress`: where client `w` listens now.
    fn update_address(&self, w: Id, address: String) {
        if let Some(c) = self.state.lock().pool.clients.get_mut(&w) {
            c.address = address;
        }
    }

    /// `StoreStats`: the store's use, and the resources of this node and of the cluster.
    fn store_stats(&self) -> StoreStatsReply {
        let available: Resources = self.state.lock().leases.available().iter().map(|(k, v)| (k.clone(), v.max(0.0))).collect();
        let st = self.store.lock();
        let mut reply = StoreStatsReply {
            used_bytes: st.alloc.used(),
            capacity_bytes: st.alloc.capacity(),
            objects: st.objects.len() as u64,
            copies: st.copies.len() as u64,
            copy_bytes: st.copies.values().map(|c| c.size).sum(),
            pinned_copies: st.copies.values().filter(|c| !c.pins.is_empty()).count() as u64,
            cluster_total: self.cfg.resources.clone(),
            cluster_available: available.clone(),
            available_resources: available,
            total_resources: self.cfg.resources.clone(),
        };
        drop(st);
        let me = self.cfg.node_id.to_vec();
        for n in self.cluster.lock().iter().filter(|n| n.node_id != me) {
            resources::add(&mut reply.cluster_total, &n.total);
            resources::add(&mut reply.cluster_available, &n.available);
        }
        reply
    }

    /// `FreeObjects`: their owner freed them.
    fn free_objects(&self, ids: &[Vec<u8>]) {
        let mut st = self.store.lock();
        for o in ids.iter().filter_map(|b| id_of(b)) {
            if let Some(obj) = st.objects.remove(&o) {
                st.free_range(obj.offset, obj.size);
            }
        }
    }

    fn register(self: &Arc<Self>, r: rayr_proto::RegisterClient) -> RegisterReply {
        let mut reply = RegisterReply {
            node_id: self.cfg.node_id.to_vec(),
            store_path: self.arena.path().display().to_string(),
            store_capacity: self.arena.capacity(),
            session_dir: self.cfg.session.dir.display().to_string(),
            node_resources: self.cfg.resources.clone(),
            error: String::new(),
            tcp_ip: if self.transfer.get().is_some() { self.cfg.ip_address.clone() } else { String::new() },
            tcp_ports: self.cfg.worker_ports.map(|(lo, hi)| format!("{lo}-{hi}")).unwrap_or_default(),
        };
        let (Some(worker), Some(job)) = (id_of(&r.worker_id), id_of(&r.job_id)) else {
            reply.error = "register: worker_id and job_id must be 16 bytes".into();
            return reply;
        };
        if !r.otlp_endpoint.is_empty() {
            self.state.lock().pool.otlp.insert(job, r.otlp_endpoint.clone());
        }
        if r.remote {
            // A submitter of another node: it only leases here. Its job's workers here run
            // its binary, fetched by hash from its node if this one lacks it.
            let known = self.state.lock().pool.jobs.contains_key(&job);
            if !known {
                let binary = match self.resolve_binary(job, &r.binary, &r.binary_node) {
                    Ok(b) => b,
                    Err(e) => {
                        reply.error = format!("register: cannot run job {} here: {e}", hex(&job));
                        return reply;
                    }
                };
                let mut st = self.state.lock();
                st.pool.jobs.entry(job).or_insert(binary);
                if r.no_events {
                    st.pool.silent_jobs.insert(job);
                }
            }
            self.state.lock().pool.remote_clients.insert(worker, RemoteClient { job, is_driver: r.is_driver });
            return reply;
        }
        if !r.event_area.is_empty() {
            // Only a file of ours, under /dev/shm, with an event area's layout.
            let path = Path::new(&r.event_area);
            if !path.starts_with("/dev/shm") || path.file_name().is_none_or(|n| !n.to_string_lossy().starts_with("rayr-ev-")) {
                reply.error = format!("register: {} is not an event area (expected /dev/shm/rayr-ev-*)", r.event_area);
                return reply;
            }
            match EventArea::open(path) {
                Ok(area) => {
                    // Mapped here and in the client: the name is no longer needed, and
                    // nothing is left behind whoever dies first.
                    let _ = std::fs::remove_file(path);
                    let source = rayr_logs::RunSource {
                        node_id: self.cfg.node_id,
                        source_worker: worker,
                        source_pid: r.pid,
                        job_id: job,
                        salt: area.salt(),
                    };
                    // A second registration of the same id replaces the first's area (drained).
                    self.drain_events(Some(worker));
                    let mut areas = self.event_areas.lock();
                    areas.retain(|e| e.worker != worker);
                    areas.push(EventAreaEntry { worker, source, area: Arc::new(area) });
                }
                Err(e) => {
                    reply.error = format!("register: cannot map the event area {}: {e}", r.event_area);
                    return reply;
                }
            }
        }
        let mut st = self.state.lock();
        st.pool.clients.insert(
            worker,
            Client {
                pid: r.pid,
                is_driver: r.is_driver,
                job,
                address: r.address,
                lease: None,
                lease_holder: None,
                blocked: false,
                dedicated: false,
                actor: None,
                served: false,
            },
        );
        if r.is_driver {
            st.pool.jobs.insert(job, PathBuf::from(&r.binary));
            if r.no_events {
                st.pool.silent_jobs.insert(job);
            }
            drop(st);
            let mut e = self.event(EventKind::JobStarted);
            e.job_id = job.to_vec();
            e.worker_id = worker.to_vec();
            e.detail = Some(event::Detail::Job(JobDetail { binary: r.binary.clone(), pid: r.pid, exit_code: 0 }));
            self.record(&e);
            let mut w = self.event(EventKind::WorkerStarted);
            w.worker_id = worker.to_vec();
            w.job_id = job.to_vec();
            w.cause = e.id.clone();
            w.detail = Some(event::Detail::WorkerStart(WorkerStart {
                pid: r.pid,
                binary: r.binary,
                is_driver: true,
                ..Default::default()
            }));
            self.record(&w);
            // Start workers ahead of demand: a cold start costs ~0.6 ms (ARCHITECTURE.md, "Costs").
            let cpus = self.cfg.resources.get("CPU").copied().unwrap_or(1.0).ceil().max(1.0) as usize;
            let mut st = self.state.lock();
            for _ in 0..cpus {
                self.spawn_worker(&mut st, job, false, None);
            }
        } else {
            let stopping = match st.pool.spawned.get_mut(&worker) {
                Some(sp) => {
                    sp.registered = true;
                    sp.intended_exit.is_some()
                }
                None => false,
            };
            // (One being stopped, its job having ended, is not leased again.)
            if !stopping {
                st.pool.idle.entry(job).or_default().push(worker);
            }
            self.grant_pending(&mut st);
        }
        reply
    }

    fn lease(self: &Arc<Self>, conn: &Arc<Conn>, requester: Option<Id>, req_id: u64, l: rayr_proto::LeaseRequest) {
        let Some(job) = id_of(&l.job_id) else {
            conn.reply(req_id, node_message::Body::Lease(LeaseReply { error: "lease: bad job id".into(), ..Default::default() }));
            return;
        };
        let demand: Resources = l.resources;
        let spill_ok = l.spillback_ok && !l.spilled;
        // An actor goes where the head places it.
        if spill_ok && l.dedicated {
            match self.place_actor(&demand, &l.actor_id, &l.task_id) {
                placement::Placement::There(reply) => {
                    conn.reply(req_id, node_message::Body::Lease(reply));
                    return;
                }
                placement::Placement::Here => {
                    let mut st = self.state.lock();
                    st.leases.enqueue(PendingLease { reply_to: LeaseFor::Client(conn.clone(), req_id), demand, job, requester, dedicated: true, actor: id_of(&l.actor_id) });
                    self.grant_pending(&mut st);
                    return;
                }
                placement::Placement::Unknown(why) => tracing::debug!("actor placed by its node: {why}"),
            }
        }
        // (The node's total never changes: no need for the state lock.)
        if !ledger::feasible(&demand, &self.cfg.resources) {
            if spill_ok && let Some(reply) = self.spill(&demand, &l.task_id, "this node can never hold it", false) {
                conn.reply(req_id, node_message::Body::Lease(reply));
                return;
            }
            let error = self.not_here("the task", &demand);
            conn.reply(req_id, node_message::Body::Lease(LeaseReply { error, infeasible: true, ..Default::default() }));
            return;
        }
        // Its large arguments are in another node's store and that node has the resources
        // free: it runs there, reading them in place instead of pulling them here.
        if spill_ok
            && let Some(node) = id_of(&l.preferred_node).filter(|n| *n != self.cfg.node_id)
            && let Some(reply) = self.spill_to_node(&demand, &l.task_id, node, l.preferred_bytes)
        {
            conn.reply(req_id, node_message::Body::Lease(reply));
            return;
        }
        let mut st = self.state.lock();
        // Not grantable now (its resources are taken, or others wait before it) and another
        // node has them free: it goes there (spillback), as Ray's raylets do.
        if spill_ok && st.leases.would_wait(&demand) {
            let why = format!("this node has {} free and {} lease(s) waiting", resources::describe(st.leases.available()), st.leases.queued());
            if let Some(reply) = self.spill(&demand, &l.task_id, &why, true) {
                drop(st);
                conn.reply(req_id, node_message::Body::Lease(reply));
                return;
            }
        }
        st.leases.enqueue(PendingLease { reply_to: LeaseFor::Client(conn.clone(), req_id), demand, job, requester, dedicated: l.dedicated, actor: id_of(&l.actor_id) });
        self.grant_pending(&mut st);
    }

    /// Picks another node with `demand` free (the most CPU free) — or, unless `free_now`,
    /// one that can hold it at all (it queues there) — records TASK_SPILLED (for `task`,
    /// because `why`), and says where to ask; `None`: no such node.
    fn spill(&self, demand: &Resources, task: &[u8], why: &str, free_now: bool) -> Option<LeaseReply> {
        let me = self.cfg.node_id.to_vec();
        let target = {
            let mut cluster = self.cluster.lock();
            let pick = ledger::spill_target(&cluster, &me, demand, free_now, new_id()[0] as usize)?;
            let best = &mut cluster[pick];
            let chosen = best.clone();
            // Counted as taken until that node's next heartbeat says otherwise, so the next
            // spill in the meantime picks by what is really left.
            resources::subtract(&mut best.available, demand);
            chosen
        };
        self.counters.leases_spilled.fetch_add(1, Ordering::Relaxed);
        let mut e = self.event(EventKind::TaskSpilled);
        e.task_id = task.to_vec();
        e.detail = Some(event::Detail::Task(rayr_proto::TaskDetail {
            reason: format!("{why}; node {} at {} has {} free", hex(&target.node_id), target.address, resources::describe(&target.available)),
            spilled_to: format!("{} {}", hex(&target.node_id), target.address),
            ..Default::default()
        }));
        self.record(&e);
        Some(LeaseReply { spill_to: target.agent_socket, spill_node: target.node_id, ..Default::default() })
    }

    /// Sends a lease to `node`, which holds `bytes` of its task's arguments, if that node
    /// has `demand` free (as far as its last heartbeat says); records TASK_SPILLED.
    fn spill_to_node(&self, demand: &Resources, task: &[u8], node: Id, bytes: u64) -> Option<LeaseReply> {
        let target = {
            let mut cluster = self.cluster.lock();
            let at = ledger::node_with_free(&cluster, &node, demand)?;
            let n = &mut cluster[at];
            let chosen = n.clone();
            resources::subtract(&mut n.available, demand);
            chosen
        };
        self.counters.leases_spilled.fetch_add(1, Ordering::Relaxed);
        let mut e = self.event(EventKind::TaskSpilled);
        e.task_id = task.to_vec();
        e.detail = Some(event::Detail::Task(rayr_proto::TaskDetail {
            reason: format!(
                "node {} at {} holds {:.1} MB of its arguments and has {} free: it runs there, reading them in place",
                hex(&target.node_id),
                target.address,
                bytes as f64 / 1e6,
                resources::describe(&target.available)
            ),
            spilled_to: format!("{} {}", hex(&target.node_id), target.address),
            ..Default::default()
        }));
        self.record(&e);
        Some(LeaseReply { spill_to: target.agent_socket, spill_node: target.node_id, ..Default::default() })
    }

    /// Why a demand this node can never hold fails: no node of the cluster can (naming the
    /// one that comes closest), or another node could but tasks are not placed across
    /// nodes yet.
    fn not_here(&self, what: &str, demand: &Resources) -> String {
        let me = self.cfg.node_id.to_vec();
        let cluster = self.cluster.lock();
        let others: Vec<&rayr_proto::NodeView> = cluster.iter().filter(|n| n.node_id != me).collect();
        ledger::infeasible_reason(what, demand, &self.cfg.ip_address, &self.cfg.resources, &others)
    }

    /// Grants queued leases in order while resources and workers allow; starts workers for
    /// the ones that only lack a process.
    fn grant_pending(self: &Arc<Self>, st: &mut State) {
        // Carrying out a pass's decisions can free resources (an unstartable detached actor
        // gives its lease back): passes repeat until one decides nothing. Each costs the
        // number of request classes, not of requests (see `ledger`).
        let waiting_for_worker = loop {
            let State { leases, pool, .. } = &mut *st;
            let Pool { start_failures, idle, clients, spawned, .. } = pool;
            let pass = leases.grant(
                |job| start_failures.get(job).cloned(),
                |job, dedicated| workers::take_idle(idle, clients, spawned, *job, dedicated),
            );
            if pass.decisions.is_empty() {
                break pass.lacking_workers;
            }
            for decision in pass.decisions {
                match decision {
                    Decision::Failed { request, error } => match request.reply_to {
                        LeaseFor::Client(conn, req) => conn.reply(req, node_message::Body::Lease(LeaseReply { error, ..Default::default() })),
                        LeaseFor::Detached(actor) => self.detached_unstartable(st, actor, &error),
                    },
                    Decision::Granted { request, worker } => {
                        let Some(client) = st.pool.clients.get_mut(&worker) else {
                            // (`take_idle` gives only registered clients; none leaves meanwhile.)
                            st.leases.release(&request.demand, false);
                            st.leases.enqueue(request);
                            continue;
                        };
                        client.lease = Some(request.demand);
                        client.lease_holder = request.requester;
                        client.dedicated = request.dedicated;
                        client.actor = request.actor;
                        client.served = true;
                        // A "blocked" left from before this lease would give back CPU it never took.
                        client.blocked = false;
                        let reply = LeaseReply {
                            worker_id: worker.to_vec(),
                            address: client.address.clone(),
                            pid: client.pid,
                            ..Default::default()
                        };
                        match request.reply_to {
                            LeaseFor::Client(conn, req) => conn.reply(req, node_message::Body::Lease(reply)),
                            LeaseFor::Detached(actor) => self.detached_granted(st, actor, worker, reply.address),
                        }
                    }
                }
            }
        };
        let mut starting: HashMap<Id, usize> = HashMap::new();
        for s in st.pool.spawned.values().filter(|s| !s.registered) {
            *starting.entry(s.job).or_default() += 1;
        }
        for ((job, for_actor), want) in waiting_for_worker {
            let started = starting.entry(job).or_default();
            while *started < want {
                if !self.spawn_worker(st, job, for_actor, None) {
                    break;
                }
                *started += 1;
            }
        }
        // A job whose driver is gone (its detached actors, or what they lease, live on)
        // keeps no idle workers: one is started when such a lease needs it.
        let ended: Vec<Id> = st.pool.idle.keys().filter(|j| !st.pool.jobs.contains_key(*j)).copied().collect();
        for job in ended {
            for w in st.pool.idle.remove(&job).unwrap_or_default() {
                if let Some(sp) = st.pool.spawned.get_mut(&w) {
                    sp.intended_exit = Some((WorkerExitReason::JobEnded, "its job ended, and no lease needs it".into()));
                    pool::send_signal(sp.pid, Signal::SIGTERM);
                }
            }
        }
    }

    /// Starts one worker process for `job`; false when the node is at its process limit.
    /// Starts a worker for `job`; `for_actor`: one an actor waits for, which the cap on
    /// task workers does not hold back (each actor is a process of its own for its life);
    /// `because`: the event that made it needed (a worker's death it replaces).
    fn spawn_worker(self: &Arc<Self>, st: &mut State, job: Id, for_actor: bool, because: Option<Id>) -> bool {
        let hosting_actors = st.pool.clients.values().filter(|c| c.dedicated).count();
        if self.stopping.load(Ordering::Acquire) || (!for_actor && st.pool.spawned.len() >= self.cfg.max_workers + hosting_actors) {
            return false;
        }
        // A detached actor's job may have ended: its binary is kept with the actor.
        let binary = st.pool.jobs.get(&job).or_else(|| st.detached.values().find(|d| d.job == job && d.live()).map(|d| &d.binary)).cloned();
        let Some(binary) = binary else { return false };
        let worker = new_id();
        let whex = hex(&worker);
        let session = &self.cfg.session;
        let out_tmp = session.logs_dir().join(format!("worker-{whex}.out"));
        let err_tmp = session.logs_dir().join(format!("worker-{whex}.err"));
        let (Ok(out), Ok(err)) = (std::fs::File::create(&out_tmp), std::fs::File::create(&err_tmp)) else {
            tracing::error!("cannot create worker log files in {}", session.logs_dir().display());
            return false;
        };
        let mut cmd = Command::new(&binary);
        if self.transfer.get().is_some() {
            cmd.env(env::NODE_IP, &self.cfg.ip_address);
            if let Some((lo, hi)) = self.cfg.worker_ports {
                cmd.env(env::WORKER_PORTS, format!("{lo}-{hi}"));
            }
        }
        if let Some((bytes, keep)) = self.cfg.log_rotate {
            cmd.env(env::LOG_ROTATE_BYTES, bytes.to_string()).env(env::LOG_ROTATE_KEEP, keep.to_string());
        }
        if let Some(endpoint) = st.pool.otlp.get(&job) {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        cmd.env(env::WORKER_MODE, "1")
            .env(env::NODE_SOCKET, &self.socket_path)
            .env(env::WORKER_ID, &whex)
            .env(env::JOB_ID, hex(&job))
            .env(env::SESSION_DIR, &session.dir)
            .env("RAYR_RECORD_EVENTS", if st.pool.silent_jobs.contains(&job) { "0" } else { "1" })
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C aimed at the driver does not kill workers
            // before the driver can shut them down and record why.
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot start worker binary {}: {e}", binary.display());
                st.pool.start_failures.insert(job, msg);
                return false;
            }
        };
        let pid = child.id();
        st.pool.worker_logs.push((worker, pid));
        self.counters.workers_started.fetch_add(1, Ordering::Relaxed);
        let out_path = session.worker_log(&whex, pid, "out");
        let err_path = session.worker_log(&whex, pid, "err");
        let _ = std::fs::rename(&out_tmp, &out_path);
        let _ = std::fs::rename(&err_tmp, &err_path);
        let mut e = self.event(EventKind::WorkerStarted);
        e.worker_id = worker.to_vec();
        e.job_id = job.to_vec();
        if let Some(c) = because {
            e.cause = c.to_vec();
        }
        e.detail = Some(event::Detail::WorkerStart(WorkerStart {
            pid,
            binary: binary.display().to_string(),
            is_driver: false,
            stdout_path: out_path.display().to_string(),
            stderr_path: err_path.display().to_string(),
        }));
        self.record(&e);
        let start_event = id_of(&e.id).unwrap();
        st.pool.spawned.insert(
            worker,
            Spawned { job, pid, stderr_path: err_path, registered: false, intended_exit: None, by_user: false, start_event },
        );
        let agent = self.clone();
        let _ = std::thread::Builder::new().name("rayr-reaper".into()).spawn(move || {
            // The child handle is not used for waiting: wait4 gives the exit status and the
            // rusage (peak RSS) together.
            std::mem::forget(child);
            let mut status = 0;
            // SAFETY: rusage is plain data; wait4 fills it.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            loop {
                let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
                if rc == pid as i32 {
                    break;
                }
                if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return;
                }
            }
            agent.worker_exited(worker, status, usage.ru_maxrss as u64 * 1024);
        });
        true
    }

    fn worker_exited(self: &Arc<Self>, worker: Id, status: libc::c_int, peak_rss: u64) {
        let mut st = self.state.lock();
        let Some(sp) = st.pool.spawned.remove(&worker) else { return };
        // A worker killed by a signal cannot remove its own socket.
        let _ = std::fs::remove_file(self.cfg.session.worker_socket(&hex(&worker)));
        let mut exit = pool::describe_exit(status, sp.intended_exit.as_ref().map(|(r, why)| (*r, why.as_str())), sp.by_user);
        exit.peak_rss_bytes = peak_rss;
        exit.pid = sp.pid;
        let kind = rayr_proto::WorkerExitType::try_from(exit.exit_type).map_or("UNSPECIFIED", |k| k.as_str_name());
        *self.counters.exits.lock().entry(kind.to_string()).or_insert(0) += 1;
        exit.stderr_tail = pool::tail_lines(&sp.stderr_path, 20);
        exit.stderr_path = sp.stderr_path.display().to_string();
        if !sp.registered && sp.intended_exit.is_none() && !st.pool.spawned.values().any(|s| s.job == sp.job && s.registered) {
            let binary = st.pool.jobs.get(&sp.job).map(|b| b.display().to_string()).unwrap_or_default();
            let failure = format!(
                "worker process {} of {binary} exited before connecting ({}): is `main` annotated with #[rayr::main]? See {}",
                sp.pid,
                exit.detail,
                sp.stderr_path.display()
            );
            if !st.pool.clients.values().any(|c| !c.is_driver && c.job == sp.job) {
                st.pool.start_failures.insert(sp.job, failure);
            }
        }
        let mut e = self.event(EventKind::WorkerExited);
        e.worker_id = worker.to_vec();
        e.job_id = sp.job.to_vec();
        e.cause = sp.start_event.to_vec();
        if sp.intended_exit.is_some() {
            e.cause.clear();
        }
        e.detail = Some(event::Detail::WorkerExit(exit.clone()));
        self.record(&e);
        let exit_event = id_of(&e.id).unwrap();
        // A pooled worker that died on its own (not stopped by rayr, not an actor's) is
        // replaced while its job runs, so the pool keeps its size.
        let replace = sp.registered
            && sp.intended_exit.is_none()
            && st.pool.jobs.contains_key(&sp.job)
            && st.pool.clients.get(&worker).is_some_and(|c| !c.is_driver && !c.dedicated);
        let hosted = st.pool.clients.get(&worker).and_then(|c| c.actor);
        if let Some(client) = st.pool.clients.remove(&worker)
            && let Some(held) = client.lease
        {
            st.leases.release(&held, client.blocked);
        }
        self.release_leases_of(&mut st, worker);
        // Objects in the store owned by the dead process are lost with it.
        let lost = self.store.lock().free_owned_by(worker);
        for (id, size) in lost {
            let mut l = self.event(EventKind::ObjectLost);
            l.object_id = id.to_vec();
            l.worker_id = worker.to_vec();
            l.cause = exit_event.to_vec();
            l.detail = Some(event::Detail::Object(ObjectDetail {
                size,
                location: "shm".into(),
                reason: format!("its owner, worker {}, died: {}", hex(&worker), exit.detail),
                end: ObjectEndReason::OwnerDied as i32,
                ..Default::default()
            }));
            self.record(&l);
        }
        st.pool.exits.insert(worker, ExitRecord { event_id: exit_event, exit: exit.clone() });
        if let Some(waiters) = st.pool.exit_waiters.remove(&worker) {
            for (conn, req) in waiters {
                conn.reply(req, node_message::Body::WorkerExit(exit_reply(st.pool.exits.get(&worker))));
            }
        }
        if replace {
            self.spawn_worker(&mut st, sp.job, false, Some(exit_event));
        }
        if let Some(actor) = hosted {
            self.detached_worker_died(&mut st, actor, worker, exit_event, &exit.detail);
        }
        self.grant_pending(&mut st);
        drop(st);
        self.exited.notify_all();
    }

    /// A client died: the leases it held come back and its queued requests go.
    fn release_leases_of(self: &Arc<Self>, st: &mut State, dead: Id) {
        st.leases.drop_requester(dead);
        let held: Vec<Id> = st.pool.clients.iter().filter(|(_, c)| c.lease.is_some() && c.lease_holder == Some(dead)).map(|(w, _)| *w).collect();
        for w in held {
            // An actor whose owner died dies with it; nobody else will say so.
            if let Some(actor) = st.pool.clients.get(&w).filter(|c| c.dedicated).and_then(|c| c.actor) {
                let mut e = self.event(EventKind::ActorDied);
                e.actor_id = actor.to_vec();
                e.worker_id = w.to_vec();
                let detail = format!("its owner {} exited", hex(&dead));
                e.detail = Some(event::Detail::Actor(rayr_proto::ActorDetail { cause: ActorDeathCause::OwnerDied as i32, detail, ..Default::default() }));
                self.record(&e);
            }
            self.return_lease_locked(st, w, "its owner exited");
        }
    }

    /// The holder gives a lease back; `kill`: it hosted an actor the user killed (why).
    fn return_lease(self: &Arc<Self>, worker: Id, kill: Option<&str>) {
        let mut st = self.state.lock();
        match kill {
            Some(why) => {
                if let Some(sp) = st.pool.spawned.get_mut(&worker) {
                    sp.by_user = true;
                }
                self.return_lease_locked(&mut st, worker, why)
            }
            None => self.return_lease_locked(&mut st, worker, "its owner let it go (no handle was left)"),
        }
        self.grant_pending(&mut st);
    }

    /// A lease ends: its resources come back, and its worker goes back to the pool or,
    /// when it hosted an actor (`why` the lease ended), is stopped.
    fn return_lease_locked(self: &Arc<Self>, st: &mut State, worker: Id, why: &str) {
        let Some(client) = st.pool.clients.get_mut(&worker) else { return };
        let Some(held) = client.lease.take() else { return };
        let blocked = std::mem::take(&mut client.blocked);
        let dedicated = std::mem::take(&mut client.dedicated);
        client.actor = None;
        let job = client.job;
        client.lease_holder = None;
        st.leases.release(&held, blocked);
        if dedicated {
            if let Some(sp) = st.pool.spawned.get_mut(&worker) {
                let reason = if sp.by_user { WorkerExitReason::KilledByUser } else { WorkerExitReason::ActorEnded };
                sp.intended_exit = Some((reason, format!("the actor it hosted ended: {why}")));
                // A killed actor stops at once, mid-call if need be (as Ray's kill does).
                let signal = if sp.by_user { Signal::SIGKILL } else { Signal::SIGTERM };
                pool::send_signal(sp.pid, signal);
            }
            return;
        }
        st.pool.idle.entry(job).or_default().push(worker);
    }

    /// A worker blocked in `get` gives its CPU back so the tasks it waits for can run;
    /// when it resumes it takes the CPU again even if that oversubscribes (as Ray does).
    fn set_blocked(self: &Arc<Self>, worker: Id, blocked: bool) {
        let mut st = self.state.lock();
        let Some(client) = st.pool.clients.get_mut(&worker) else { return };
        if client.blocked == blocked {
            return;
        }
        client.blocked = blocked;
        let cpu = client.lease.as_ref().and_then(|l| l.get("CPU")).copied().unwrap_or(0.0);
        st.leases.set_blocked(cpu, blocked);
        if blocked && cpu > 0.0 {
            self.grant_pending(&mut st);
        }
    }

    fn create_object(&self, c: rayr_proto::CreateObject) -> CreateObjectReply {
        let (Some(id), Some(owner)) = (id_of(&c.object_id), id_of(&c.owner)) else {
            return CreateObjectReply { offset: 0, error: "create: ids must be 16 bytes".into(), ..Default::default() };
        };
        let mut st = self.store.lock();
        if let Some(old) = st.objects.get(&id) {
            if old.owner != owner {
                return CreateObjectReply { offset: 0, error: format!("object {} already exists in the store", hex(&id)), ..Default::default() };
            }
            // A retried task storing its return value again (the worker that stored it first
            // died before reporting): the new value replaces the old.
            let old = st.objects.remove(&id).unwrap();
            st.free_range(old.offset, old.size);
        }
        match self.allocate_evicting(&mut st, c.size, &format!("object {}", hex(&id))) {
            Some(offset) => {
                let owner_node = id_of(&c.owner_node).filter(|n| *n != self.cfg.node_id);
                st.objects.insert(id, StoreObject { offset, size: c.size, owner, owner_node });
                CreateObjectReply { offset, error: String::new(), store_full: false }
            }
            None => CreateObjectReply {
                offset: 0,
                store_full: true,
                error: format!(
                    // `store_full` says what happened; this says how full it is and what to do.
                    "{} bytes requested, {} of {} bytes in use; free refs you no longer need or start the node with a larger --object-store-memory",
                    c.size,
                    st.alloc.used(),
                    st.alloc.capacity()
                ),
            },
        }
    }

    fn worker_exit_query(&self, conn: &Arc<Conn>, req: u64, q: rayr_proto::WorkerExitQuery) {
        let Some(w) = id_of(&q.worker_id) else {
            conn.reply(req, node_message::Body::WorkerExit(WorkerExitReply::default()));
            return;
        };
        let mut st = self.state.lock();
        if st.pool.exits.contains_key(&w) || !st.pool.spawned.contains_key(&w) {
            let reply = exit_reply(st.pool.exits.get(&w));
            drop(st);
            conn.reply(req, node_message::Body::WorkerExit(reply));
            return;
        }
        // The process is still being reaped (its socket closed first): answer when it is,
        // or after the deadline with what is known.
        st.pool.exit_waiters.entry(w).or_default().push((conn.clone(), req));
        drop(st);
        let agent_conn = conn.clone();
        let wait = Duration::from_millis(q.wait_ms.max(1) as u64);
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock();
        while !st.pool.exits.contains_key(&w) && Instant::now() < deadline {
            self.exited.wait_until(&mut st, deadline);
        }
        if !st.pool.exits.contains_key(&w) {
            if let Some(waiters) = st.pool.exit_waiters.get_mut(&w) {
                waiters.retain(|(c, r)| !(Arc::ptr_eq(c, &agent_conn) && *r == req));
            }
            drop(st);
            conn.reply(req, node_message::Body::WorkerExit(WorkerExitReply { known: true, ..Default::default() }));
        }
    }

    fn client_gone(self: &Arc<Self>, worker: Id, goodbye: Option<rayr_proto::Disconnect>) {
        let mut st = self.state.lock();
        let Some(client) = st.pool.clients.get(&worker) else { return };
        if !client.is_driver {
            // A worker's end is recorded by its reaper, which has the exit status.
            return;
        }
        let client = st.pool.clients.remove(&worker).unwrap();
        if goodbye.is_none() {
            // A crashed driver leaves its socket behind.
            let _ = std::fs::remove_file(rayr_proto::frames::split_address(&client.address).0);
        }
        let job = client.job;
        let to_kill = self.end_job_locked(&mut st, job, &format!("its job's driver (pid {}) disconnected", client.pid));
        self.store.lock().free_owned_by(worker);
        self.release_leases_of(&mut st, worker);
        drop(st);
        for pid in to_kill {
            pool::send_signal(pid, Signal::SIGTERM);
        }
        let mut e = self.event(EventKind::WorkerExited);
        e.worker_id = worker.to_vec();
        e.job_id = job.to_vec();
        // The driver's exit code: what its main returned (it said), or unknown (-1): it did
        // not say goodbye, so it crashed or was killed, and its job failed.
        let (kind, reason, detail, exit_code) = match &goodbye {
            Some(d) if d.exit_code == 0 => (
                rayr_proto::WorkerExitType::IntendedUserExit,
                WorkerExitReason::DriverShutdown,
                format!("driver disconnected: {}", d.reason),
                0,
            ),
            Some(d) => (
                rayr_proto::WorkerExitType::IntendedUserExit,
                WorkerExitReason::DriverShutdown,
                format!("driver disconnected: {}; its main returned an error (exit code {})", d.reason, d.exit_code),
                d.exit_code,
            ),
            None => (
                rayr_proto::WorkerExitType::SystemError,
                WorkerExitReason::DriverDisconnected,
                "driver disconnected without shutting down: it crashed or was killed".to_string(),
                -1,
            ),
        };
        e.detail = Some(event::Detail::WorkerExit(WorkerExit {
            exit_type: kind as i32,
            reason: reason as i32,
            exit_code,
            detail,
            pid: client.pid,
            ..Default::default()
        }));
        self.record(&e);
        let mut j = self.event(EventKind::JobFinished);
        j.job_id = job.to_vec();
        j.worker_id = worker.to_vec();
        j.cause = e.id.clone();
        j.detail = Some(event::Detail::Job(JobDetail { pid: client.pid, exit_code, ..Default::default() }));
        self.record(&j);
    }

    /// A job's driver is gone from this node (its own, or a remote one leasing here): the
    /// job's workers are stopped (their pids returned, to signal off the lock) except those
    /// hosting detached actors and what they lease; its queued leases go.
    fn end_job_locked(&self, st: &mut State, job: Id, reason: &str) -> Vec<u32> {
        st.pool.jobs.remove(&job);
        st.pool.silent_jobs.remove(&job);
        let reason = reason.to_string();
        let mut to_kill = Vec::new();
        // Workers hosting detached actors outlive the job, and so do the workers they lease
        // (tasks they run, actors they made), and those that those lease; idle ones are no
        // longer leased to anyone.
        let mut spared: std::collections::HashSet<Id> = st.pool.spawned.keys().filter(|w| Self::hosts_detached(st, w)).copied().collect();
        loop {
            let more: Vec<Id> = st
                .pool.clients
                .iter()
                .filter(|(w, c)| !spared.contains(*w) && c.lease.is_some() && c.lease_holder.is_some_and(|h| spared.contains(&h)))
                .map(|(w, _)| *w)
                .collect();
            if more.is_empty() {
                break;
            }
            spared.extend(more);
        }
        st.pool.idle.remove(&job);
        for (_, sp) in st.pool.spawned.iter_mut().filter(|(w, s)| s.job == job && !spared.contains(*w)) {
            sp.intended_exit = Some((WorkerExitReason::JobEnded, reason.clone()));
            to_kill.push(sp.pid);
        }
        st.leases.retain(|j, reply_to, requester| *j != job || matches!(reply_to, LeaseFor::Detached(_)) || requester.is_some_and(|r| spared.contains(&r)));
        to_kill
    }

    /// A submitter of another node that leased here is gone: its leases come back; if it
    /// was its job's driver, the job ends here too.
    fn remote_client_gone(self: &Arc<Self>, client: Id) {
        let mut st = self.state.lock();
        let Some(gone) = st.pool.remote_clients.remove(&client) else { return };
        self.release_leases_of(&mut st, client);
        let mut to_kill = Vec::new();
        let driver_left = gone.is_driver && !st.pool.remote_clients.values().any(|c| c.job == gone.job && c.is_driver);
        let local_driver = st.pool.clients.values().any(|c| c.is_driver && c.job == gone.job);
        if driver_left && !local_driver {
            to_kill = self.end_job_locked(&mut st, gone.job, "its job's driver, on another node, disconnected");
        }
        self.grant_pending(&mut st);
        drop(st);
        for pid in to_kill {
            pool::send_signal(pid, Signal::SIGTERM);
        }
    }

    fn shutdown(self: &Arc<Self>, end: NodeEndReason, reason: &str) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.end_detached_actors(reason);
        let pids: Vec<u32> = {
            let mut st = self.state.lock();
            st.pool.spawned
                .values_mut()
                .map(|s| {
                    s.intended_exit = Some((WorkerExitReason::NodeStopping, format!("node shutting down: {reason}")));
                    s.pid
                })
                .collect()
        };
        for &pid in &pids {
            pool::send_signal(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut st = self.state.lock();
        while !st.pool.spawned.is_empty() && Instant::now() < deadline {
            self.exited.wait_until(&mut st, deadline);
        }
        let stragglers: Vec<u32> = st.pool.spawned.values().map(|s| s.pid).collect();
        drop(st);
        for pid in stragglers {
            pool::send_signal(pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut st = self.state.lock();
        while !st.pool.spawned.is_empty() && Instant::now() < deadline {
            self.exited.wait_until(&mut st, deadline);
        }
        drop(st);
        // Every client's last events: each connection drains its client's area as it closes.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.open_conns.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.drain_events(None);
        let mut e = self.event(EventKind::NodeStopped);
        e.detail = Some(event::Detail::Node(NodeDetail { reason: reason.to_string(), end: end as i32, ..Default::default() }));
        self.record(&e);
        // Drivers still attached are cut off from the cluster: their jobs end here (nobody
        // else will record it), caused by the node's stop.
        let drivers: Vec<(Id, Id, u32)> =
            self.state.lock().pool.clients.iter().filter(|(_, c)| c.is_driver).map(|(w, c)| (*w, c.job, c.pid)).collect();
        for (worker, job, pid) in drivers {
            let mut x = self.event(EventKind::WorkerExited);
            x.worker_id = worker.to_vec();
            x.job_id = job.to_vec();
            x.cause = e.id.clone();
            x.detail = Some(event::Detail::WorkerExit(WorkerExit {
                exit_type: rayr_proto::WorkerExitType::IntendedSystemExit as i32,
                reason: WorkerExitReason::DriverCutOff as i32,
                exit_code: -1,
                detail: format!("driver cut off: its node stopped ({reason}) while it ran; the process itself may still run"),
                pid,
                ..Default::default()
            }));
            self.record(&x);
            let mut j = self.event(EventKind::JobFinished);
            j.job_id = job.to_vec();
            j.worker_id = worker.to_vec();
            j.cause = x.id.clone();
            j.detail = Some(event::Detail::Job(JobDetail { pid, exit_code: -1, ..Default::default() }));
            self.record(&j);
        }
    }
}

fn exit_reply(rec: Option<&ExitRecord>) -> WorkerExitReply {
    match rec {
        Some(r) => WorkerExitReply { exited: true, exit_event: r.event_id.to_vec(), exit: Some(r.exit.clone()), known: true },
        None => WorkerExitReply::default(),
    }
}

