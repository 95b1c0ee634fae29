//! The core worker: the part of rayr inside every driver and worker process.
//!
//! It holds this process's connection to its node agent, the objects this process owns
//! (with their reference counts), the submitter that leases workers and pushes tasks to
//! them, the peer server through which other processes push tasks here or ask for objects
//! owned here, and the event buffer. One mutex guards all of that state ([`State`]):
//! every path holds it briefly and never across a blocking wait or a user callback.
//!
//! This file has the state, the connections and start-up/shutdown; [`owner`] has the
//! ownership rules, [`submit`] the leases, pushes, results and retries, [`fetch`] the
//! reading of values (from the owner, or pulled from another node), and [`events`] the
//! event recording. [`spec`], [`waits`] and [`idmap`] keep pending tasks small (a driver
//! may hold millions).
//!
//! Core is the bottom layer of the crate: it does not call up into `api`, `exec`, `actor`
//! or `runtime`. What it needs from above is handed to it: the executor of pushed tasks
//! ([`Executor`], at connect) and the driver's exit code (at shutdown).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use rayr_proto::frames::Stream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};
use rayr_logs::{Id, hex};
use rayr_proto::frames::FrameReader;
use rayr_proto::{
    ClientMessage, NodeMessage, PeerMessage,
    client_message, encode_frame, node_message, peer_message,
};
use rayr_store::Arena;

use crate::error::Error;

mod events;
pub(crate) mod fetch;
mod idmap;
mod owner;
mod spec;
mod submit;
mod waits;

pub(crate) use idmap::IdMap;
pub(crate) use spec::PendingSpec;
pub(crate) use waits::DependencyWaits;

pub(crate) use events::{Batch, EventBuffer};


/// How many tasks may be queued on one leased worker: enough to hide the round trip,
/// few enough that a long task does not hold many others behind it.
const MAX_IN_FLIGHT: usize = 32;
/// Bytes of pushes not yet answered, per worker. Kept below a socket's send buffer so that
/// pushing never blocks: the thread that pushes is also the one that reads results, and a
/// worker blocked on writing large results would otherwise never read the next push.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 10;
/// A lease with nothing to run is returned after this long (a sync loop reuses it).
const LEASE_IDLE: Duration = Duration::from_millis(10);
/// How often the ticker sends results held back and returns idle leases.
const TICK_EVERY: Duration = Duration::from_millis(5);

static CORE: RwLock<Option<Arc<Core>>> = RwLock::new(None);

/// The running core of this process, if `init` has run.
/// How long a peer-socket reader with nothing buffered keeps its CPU, polling for the next
/// message, before it blocks. On a VM, waking a thread whose vCPU went idle costs tens of
/// µs (a round trip between the two vCPUs here is ~45 µs, ~8 on one: BENCHMARKS.md); an
/// exchange answered within the window never pays it (sync actor calls 21–24k/s → 38–44k/s,
/// and pipelined tasks and calls gain too). The poll yields to any runnable thread, so the
/// window spends only time the CPU would have idled.
const SPIN_BEFORE_BLOCK: Duration = Duration::from_micros(60);

/// Waits up to `SPIN_BEFORE_BLOCK` for `fd` to be readable, yielding the CPU between polls.
fn spin_until_readable(fd: std::os::fd::RawFd) {
    let start = Instant::now();
    loop {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        if unsafe { libc::poll(&mut p, 1, 0) } != 0 || start.elapsed() >= SPIN_BEFORE_BLOCK {
            return;
        }
        // SAFETY: no arguments; lets runnable threads of this CPU go first.
        unsafe { libc::sched_yield() };
    }
}

pub(crate) fn current() -> Option<Arc<Core>> {
    CORE.read().clone()
}

pub(crate) fn require() -> crate::Result<Arc<Core>> {
    current().ok_or_else(|| Error::Connection("rayr is not initialized: call rayr::init() first".into()))
}

pub(crate) fn install(core: Arc<Core>) {
    *CORE.write() = Some(core);
}

pub(crate) fn uninstall() -> Option<Arc<Core>> {
    CORE.write().take()
}

/// An object's value as its owner knows it.
#[derive(Clone)]
pub(crate) enum Slot {
    Pending,
    Inline(Arc<[u8]>, u32),
    Shm { offset: u64, size: u64, format: u32 },
    /// In another node's store: a task's result made there (its primary copy). Read by
    /// pulling a copy; lost with that node (then made again from `State::lineage`).
    OnNode { node: Id, offset: u64, size: u64, format: u32 },
    Failed(Error),
}

/// An object owned by this process. Kept small: a driver may own a million results of
/// queued tasks at once, and most never get a borrower, a remote reader or a copy (those
/// live in [`OwnedMore`], allocated when first needed).
pub(crate) struct Owned {
    pub slot: Slot,
    /// `ObjectRef` handles alive in this process.
    pub local_refs: u32,
    /// Pending tasks that take it as an argument.
    pub submitted: u32,
    /// Serialized copies not yet deserialized anywhere.
    pub tokens: u32,
    pub created_event: Id,
    /// What few objects need; None while all of it is empty.
    more: Option<Box<OwnedMore>>,
}

/// The rarely used part of an [`Owned`] object.
#[derive(Default)]
pub(crate) struct OwnedMore {
    /// Other processes holding a reference.
    pub borrowers: HashSet<Id>,
    /// Readers in other processes waiting for the value: (connection, request id).
    pub remote_waiters: Vec<(Arc<ServerConn>, u64)>,
    /// Refs serialized inside this object's value (a `put` container): kept alive while
    /// it exists, released when it is freed.
    pub contains: Vec<NestedRef>,
    /// Nodes holding a copy of its shm value (readers there pulled it): freed with it.
    pub copies: Vec<Id>,
}

impl Owned {
    fn new(slot: Slot) -> Owned {
        Owned { slot, local_refs: 0, submitted: 0, tokens: 0, created_event: [0; 16], more: None }
    }
    fn referenced(&self) -> bool {
        self.local_refs > 0 || self.submitted > 0 || self.tokens > 0 || self.more.as_ref().is_some_and(|m| !m.borrowers.is_empty())
    }
    /// The rarely used part, to read (None: all empty).
    pub fn more(&self) -> Option<&OwnedMore> {
        self.more.as_deref()
    }
    /// The rarely used part, to change (allocated on first use).
    pub fn more_mut(&mut self) -> &mut OwnedMore {
        self.more.get_or_insert_with(Default::default)
    }
    /// Nodes holding a copy of its value.
    pub fn copies(&self) -> &[Id] {
        self.more().map_or(&[], |m| &m.copies)
    }
}

/// A ref found inside a value (a `put` container's): the object, and its owner.
#[derive(Clone, Copy)]
pub(crate) struct NestedRef {
    pub id: Id,
    pub owner: Id,
}

/// Which queue a task waits in for a worker: tasks of one resource shape share leased
/// workers; an actor's calls go to its one worker.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) enum QueueKey {
    /// Tasks with this resource demand (its canonical text, shared by every such task).
    Shape(Arc<str>),
    Actor(Id),
}

pub(crate) struct PendingTask {
    pub spec: PendingSpec,
    /// (argument index, object id owned here) still to be resolved.
    pub deps: Vec<(usize, Id)>,
    /// Owned objects counted in `submitted` (released when the task ends).
    pub owned_args: Vec<Id>,
    /// Borrowed objects this task keeps a reference to.
    pub borrowed_args: Vec<Id>,
    pub key: QueueKey,
    /// Its resource demand, shared by every task of the same shape.
    pub demand: Arc<HashMap<String, f64>>,
    pub worker: Option<Id>,
    /// It is in its queue's `ready` list (what must be scanned to take it out early).
    pub in_ready_queue: bool,
    pub last_event: Id,
    /// Submission order here (an actor's calls retried after a restart keep it).
    pub seq: u64,
    /// Its `rayr.task` span, when tracing is on: ids, parent, start.
    pub trace: Option<Box<TaskTrace>>,
}

#[derive(Clone, Copy)]
pub(crate) struct TaskTrace {
    pub ids: ([u8; 16], [u8; 8]),
    pub parent: Option<[u8; 8]>,
    pub start_ns: u64,
}

struct Queue {
    demand: Arc<HashMap<String, f64>>,
    ready: VecDeque<Id>,
    leases_requested: u32,
    workers: Vec<Id>,
    /// An actor's queue (`actor:<id>`): one worker, leased once (by the actor's owner, who
    /// keeps it while the actor lives) or found from the actor's handle (by anyone else).
    actor: Option<ActorQueue>,
}

struct ActorQueue {
    id: Id,
    /// This process created the actor (and leased its worker).
    owned: bool,
    /// Its worker was asked for (once per life of the actor).
    leased: bool,
    /// Restarts left (−1: without end), restarts so far, and the creation to re-run (its
    /// arguments resolved), kept once the first creation succeeded.
    restarts_left: i32,
    restarts: u32,
    /// Retries of a call that was running when the actor's worker died (−1: without end).
    max_task_retries: i32,
    creation: Option<PendingSpec>,
    /// The owner's answer to "where is it?": its worker and socket, and whether the
    /// current life's constructor has run (calls may go there directly).
    location: Option<(Id, String)>,
    ready: bool,
    /// Its name, claimed with the node (freed when it ends).
    name: Option<rayr_proto::ActorName>,
    /// Why its calls fail now, and the ACTOR_DIED event saying so: the actor died.
    dead: Option<(String, Option<Id>)>,
    /// Calls it runs at once: how many may be in flight to its worker (at least
    /// `MAX_IN_FLIGHT`).
    max_concurrency: u32,
    /// Its constructor's arguments by reference (owned, borrowed), kept while it may
    /// restart; released when it ends.
    kept_args: (Vec<Id>, Vec<Id>),
    /// Where its owner answers (a process that did not create it), and the last worker of
    /// it seen dead here (the owner may still name it for a moment).
    owner_address: Option<String>,
    lost_worker: Option<Id>,
    /// A thread is asking its owner where it lives (`start_locating`).
    locating: bool,
}

impl ActorQueue {
    /// `owned`: created here; `leased`: its worker is not to be leased from here (it has
    /// been, or it is someone else's).
    fn new(id: Id, owned: bool, leased: bool) -> ActorQueue {
        ActorQueue {
            id,
            owned,
            leased,
            restarts_left: 0,
            restarts: 0,
            max_task_retries: 0,
            creation: None,
            location: None,
            ready: false,
            name: None,
            dead: None,
            max_concurrency: 1,
            kept_args: (Vec::new(), Vec::new()),
            owner_address: None,
            lost_worker: None,
            locating: false,
        }
    }

    fn max_in_flight(&self) -> usize {
        MAX_IN_FLIGHT.max(self.max_concurrency as usize)
    }
}

struct Leased {
    conn: Arc<PeerConn>,
    key: QueueKey,
    /// Pushed tasks not yet answered, with the bytes each push took.
    in_flight: HashMap<Id, usize>,
    in_flight_bytes: usize,
    idle_since: Option<Instant>,
    /// An actor's worker: kept while the actor lives; `leased_here` says whether this
    /// process holds its lease (its owner) or only talks to it.
    actor: bool,
    leased_here: bool,
    /// Most tasks pushed and not answered (`MAX_IN_FLIGHT`, more for a concurrent actor).
    max_in_flight: usize,
    /// The node agent of another node that granted it (a spillback); `None`: this node's.
    lessor: Option<Arc<NodeConn>>,
}

pub(crate) struct State {
    /// Boxed (here and in `tasks`): a table of large values would be rehashed and
    /// over-allocated at twice its size as it grows; a table of pointers stays small.
    pub owned: IdMap<Box<Owned>>,
    /// Handles alive here for objects owned elsewhere: id → (count, owner, owner address).
    pub borrowed: HashMap<Id, (u32, Id, String)>,
    /// Where borrowed objects in the shm store are: sealed values never move, and the
    /// borrow keeps them alive, so later reads skip the round trip to the owner.
    pub borrowed_locations: HashMap<Id, (u64, u64, u32)>,
    /// Objects of other nodes' stores copied into this node's store for this process
    /// (the agent keeps each pinned for us until we release it: when the borrow ends, or
    /// when the last task reading it as an argument is done). id → (offset of the copy,
    /// tasks reading it as an argument now).
    pub local_copies: HashMap<Id, (u64, u32)>,
    /// Results held in other nodes' stores, by object: the task that made each, kept (with
    /// its arguments) to make it again if that node goes, while it has retries left.
    pub lineage: IdMap<Box<PendingTask>>,
    pub tasks: IdMap<Box<PendingTask>>,
    /// Tasks waiting for objects owned here, by object.
    pub waits: DependencyWaits,
    /// Resource shapes seen, by their canonical text: the key and demand every task of
    /// that shape shares (one per distinct demand the program uses).
    shapes: HashMap<String, (QueueKey, Arc<HashMap<String, f64>>)>,
    /// The next task's `seq`.
    pub next_seq: u64,
    /// Actors created here: the creation's result object (which handles hold) → actor.
    pub actors: HashMap<Id, Id>,
    queues: HashMap<QueueKey, Queue>,
    leased: HashMap<Id, Leased>,
    /// Lease requests in flight: request id → queue key, and the node agent asked when it
    /// is another node's (a spillback).
    lease_requests: HashMap<u64, (QueueKey, Option<Arc<NodeConn>>)>,
    /// Node agents of other nodes this process leases from, by socket.
    remote_agents: HashMap<String, Arc<NodeConn>>,
    /// Outgoing connections by address (owners and leased workers).
    pub peers: HashMap<String, Arc<PeerConn>>,
    /// Values for remote readers, sent once the lock is released (a write may block; see
    /// `send_outbox`).
    pub outbox: Vec<(Arc<ServerConn>, PeerMessage)>,
    /// Nodes the head declared gone: their NODE_DIED (empty if they left) and why.
    pub gone_nodes: HashMap<Id, (Vec<u8>, String)>,
}

impl State {
    /// The queue key and shared demand of tasks needing `resources` (interned: every task
    /// of a shape shares one key and one demand, with no allocation of its own).
    pub(crate) fn shape(&mut self, resources: &HashMap<String, f64>) -> (QueueKey, Arc<HashMap<String, f64>>) {
        let mut parts: Vec<(&str, f64)> = resources.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        parts.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::with_capacity(16 * parts.len());
        for (i, (k, v)) in parts.iter().enumerate() {
            use std::fmt::Write as _;
            let _ = write!(text, "{}{k}={v}", if i > 0 { "," } else { "" });
        }
        if let Some((key, demand)) = self.shapes.get(&text) {
            return (key.clone(), demand.clone());
        }
        let entry = (QueueKey::Shape(Arc::from(text.as_str())), Arc::new(resources.clone()));
        self.shapes.insert(text, entry.clone());
        entry
    }
}

/// How long a loss on another node whose agent stopped answering waits for the head to
/// declare that node dead (so that it names the node's death as its cause).
const NODE_DEATH_WAIT: Duration = Duration::from_secs(10);

/// A connection this process opened to another core worker.
pub(crate) struct PeerConn {
    write: Mutex<Stream>,
    raw_fd: std::os::fd::RawFd,
    pub address: String,
    /// The worker at the other end, when it is a leased worker.
    pub worker: Mutex<Option<Id>>,
    waiters: Mutex<HashMap<u64, Sender<PeerMessage>>>,
    next_req: AtomicU64,
    pub closed: AtomicBool,
}

impl PeerConn {
    /// Ends the connection from this side: its reader sees it closed, as when the other
    /// end dies (for an end that cannot say so: a frozen node's worker).
    pub fn hang_up(&self) {
        // SAFETY: shutting down a socket this connection owns; the fd stays open.
        unsafe { libc::shutdown(self.raw_fd, libc::SHUT_RDWR) };
    }

    pub fn send(&self, msg: &PeerMessage) -> io::Result<()> {
        let mut buf = Vec::with_capacity(128);
        encode_frame(msg, &mut buf);
        self.write.lock().write_all(&buf)
    }
    pub fn send_raw(&self, frames: &[u8]) -> io::Result<()> {
        self.write.lock().write_all(frames)
    }
    /// Whether the other end is still there: asks the kernel, without reading, whether the
    /// peer hung up (a process that died has, the moment it died).
    pub fn alive(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut pfd = libc::pollfd { fd: self.raw_fd, events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: polling one fd we own, without waiting.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        !(n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
    }
    /// Sends a request and waits for the reply with the same id.
    pub fn call(&self, mut msg: PeerMessage, timeout: Option<Duration>) -> Result<PeerMessage, CallError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed) + 1;
        msg.req_id = req;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.waiters.lock().insert(req, tx);
        if self.closed.load(Ordering::Acquire) || self.send(&msg).is_err() {
            self.waiters.lock().remove(&req);
            return Err(CallError::Disconnected);
        }
        let got = match timeout {
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => CallError::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => CallError::Disconnected,
            }),
            None => rx.recv().map_err(|_| CallError::Disconnected),
        };
        self.waiters.lock().remove(&req);
        got
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum CallError {
    Disconnected,
    Timeout,
}

/// The connection to the node agent.
pub(crate) struct NodeConn {
    write: Mutex<Stream>,
    next_req: AtomicU64,
    waiters: Mutex<HashMap<u64, Sender<NodeMessage>>>,
    pub closed: AtomicBool,
    /// Another node's agent: which node (set when a spillback names it).
    pub node: Mutex<Option<Id>>,
}

impl NodeConn {
    pub fn send(&self, req_id: u64, body: client_message::Body) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64);
        encode_frame(&ClientMessage { req_id, body: Some(body) }, &mut buf);
        self.write.lock().write_all(&buf)
    }
    pub fn next_req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed) + 1
    }
    /// Sends a request and waits for its reply (30 s at most).
    pub fn call(&self, body: client_message::Body) -> crate::Result<node_message::Body> {
        self.call_within(body, Some(Duration::from_secs(30)))
    }

    /// `call`, waiting up to `limit` (None: as long as the agent takes, for requests whose
    /// progress the agent watches itself, like pulls).
    pub fn call_within(&self, body: client_message::Body, limit: Option<Duration>) -> crate::Result<node_message::Body> {
        let req = self.next_req();
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.waiters.lock().insert(req, tx);
        let lost = || Error::Connection("lost the connection to the node agent: is the cluster still running?".into());
        // (Closed before the waiter was in: nothing would answer or clear it.)
        if self.closed.load(Ordering::Acquire) || self.send(req, body).is_err() {
            self.waiters.lock().remove(&req);
            return Err(lost());
        }
        let reply = match limit {
            Some(limit) => rx.recv_timeout(limit).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => Error::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => lost(),
            }),
            None => rx.recv().map_err(|_| lost()),
        };
        self.waiters.lock().remove(&req);
        reply?.body.ok_or_else(lost)
    }
}

/// Results of tasks one connection's thread ran and has not sent yet (held back so that a
/// pipelined batch answers with one write).
pub(crate) struct HeldResults {
    conn: Arc<ServerConn>,
    /// Encoded result frames, and when the oldest of them was held.
    buf: Mutex<(Vec<u8>, Option<Instant>)>,
}

impl HeldResults {
    fn hold(&self, result: &PeerMessage) {
        let mut b = self.buf.lock();
        encode_frame(result, &mut b.0);
        b.1.get_or_insert_with(Instant::now);
    }

    /// Sends what is held (if it has been held at least `min_age`).
    fn send(&self, min_age: Duration) {
        let mut b = self.buf.lock();
        if b.1.is_some_and(|since| since.elapsed() >= min_age) {
            self.conn.send_raw(&b.0);
            b.0.clear();
            b.1 = None;
        }
    }
}

thread_local! {
    /// The held results of the connection this thread serves.
    static HELD: std::cell::RefCell<Option<Arc<HeldResults>>> = const { std::cell::RefCell::new(None) };
}

/// Sends the results this thread holds back for batching. Called before a task on this
/// thread waits for anything (what it waits for may need one of them); the ticker sends
/// any held longer than `MAX_RESULT_HOLD` (a long task behind a short one in a batch).
pub(crate) fn send_held_results() {
    HELD.with(|h| {
        if let Some(held) = &*h.borrow() {
            held.send(Duration::ZERO);
        }
    });
}

/// Longest a finished task's result waits for its batch-mates.
const MAX_RESULT_HOLD: Duration = Duration::from_millis(2);

/// A connection another process opened to us.
pub(crate) struct ServerConn {
    write: Mutex<Stream>,
}

impl ServerConn {
    pub fn send_raw(&self, frames: &[u8]) {
        let _ = self.write.lock().write_all(frames);
    }
    pub fn send(&self, msg: &PeerMessage) {
        let mut buf = Vec::with_capacity(128);
        encode_frame(msg, &mut buf);
        let _ = self.write.lock().write_all(&buf);
    }
}

pub(crate) struct Core {
    pub me: Id,
    pub job: Id,
    pub node: Id,
    pub is_driver: bool,
    pub address: String,
    pub session_dir: PathBuf,
    pub node_conn: NodeConn,
    pub arena: Arena,
    pub state: Mutex<State>,
    pub ready: Condvar,
    /// None when events are off.
    pub events: Option<EventBuffer>,
    /// The process that started this one (a worker's node agent), as it was at start.
    pub parent_pid: i32,
    pub record_events: bool,
    pub max_inline: usize,
    pub stopping: AtomicBool,
    /// Set in workers: pushed tasks run here, by `executor`.
    pub runs_tasks: bool,
    executor: Option<Executor>,
    /// One task at a time in a worker, whichever connection pushed it.
    pub exec_lock: Mutex<()>,
    /// Held results of every connection serving tasks (the ticker sends stale ones).
    held_results: Mutex<Vec<std::sync::Weak<HeldResults>>>,
    pub pid: u32,
    /// The threads accepting peers (woken at shutdown).
    accepting: Mutex<Option<rayr_proto::frames::Accepting>>,
    /// The fields every task pushed from here shares (job, owner, its address and node),
    /// encoded once: appended to each push instead of being stored in every pending task.
    push_tail: Vec<u8>,
    /// `address`, shared by every handle to an object owned here.
    pub handle_address: Arc<str>,
}

/// A concurrent actor's call, handed from the connection that read it to the actor's
/// pool of threads, with the connection to answer on.
pub(crate) type Call = (rayr_proto::TaskSpec, Arc<ServerConn>);

/// What runs the tasks pushed to a worker: the layer above core (`exec`) hands it over at
/// connect, so that core reads pushes without knowing how user code is run.
#[derive(Clone, Copy)]
pub(crate) struct Executor {
    /// Runs one pushed task on the calling thread and returns the message answering it.
    /// `events`: the open batch the previous task's TASK_FINISHED is in (see `exec`).
    pub run: for<'c> fn(&'c Arc<Core>, rayr_proto::TaskSpec, &mut Option<Batch<'c>>) -> PeerMessage,
    /// Where a concurrent actor's calls go, once this worker hosts one (`None`: they run
    /// on the reading thread, in order).
    pub call_pool: fn() -> Option<&'static std::sync::mpsc::SyncSender<Call>>,
}

/// What `connect` needs to know.
pub(crate) struct ConnectParams {
    pub node_socket: PathBuf,
    pub worker_id: Id,
    pub job_id: Id,
    pub is_driver: bool,
    pub record_events: bool,
    pub max_inline: usize,
    /// Workers run pushed tasks with it; the node agent may lease a worker out (and a
    /// task may arrive) the moment it registers, so it is given before registering.
    pub executor: Option<Executor>,
}

impl Core {
    /// Connects to the node agent, registers, maps the store and starts the peer server,
    /// the node reader and the ticker.
    pub fn connect(p: ConnectParams) -> crate::Result<Arc<Core>> {
        let conn_err = |what: &str, e: io::Error| {
            Error::Connection(format!("cannot {what} ({}): {e}; is the cluster running?", p.node_socket.display()))
        };
        let stream = Stream::Unix(UnixStream::connect(&p.node_socket).map_err(|e| conn_err("reach the node agent", e))?);
        let session_dir = rayr_logs::Session::of_socket(&p.node_socket).map(|s| s.dir).unwrap_or_default();
        let address = rayr_logs::Session::open(&session_dir).worker_socket(&hex(&p.worker_id));
        let _ = std::fs::remove_file(&address);
        let listener = UnixListener::bind(&address).map_err(|e| conn_err("open this process's socket", e))?;
        // Processes of other hosts reach this one over TCP, on its node's address: a worker
        // knows it from its agent before it registers (it may be leased the moment it does).
        let mut tcp = match std::env::var(rayr_node::pool::env::NODE_IP) {
            Ok(ip) if !ip.is_empty() => {
                let ports = std::env::var(rayr_node::pool::env::WORKER_PORTS).unwrap_or_default();
                Some(bind_tcp(&ip, &ports).map_err(|e| Error::Connection(format!("cannot listen on {ip} for other hosts: {e}")))?)
            }
            _ => None,
        };
        let mut address = address.display().to_string();
        if let Some((_, at)) = &tcp {
            address = format!("{address}|{at}");
        }
        let binary = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
        let events = if p.record_events {
            let source = rayr_logs::RunSource {
                source_worker: p.worker_id,
                source_pid: std::process::id(),
                job_id: p.job_id,
                salt: rayr_logs::process_salt(),
                ..Default::default()
            };
            Some(EventBuffer::create(source).map_err(|e| Error::Connection(format!("cannot create this process's event area under /dev/shm: {e}")))?)
        } else {
            None
        };
        let register = ClientMessage {
            req_id: 1,
            body: Some(client_message::Body::Register(rayr_proto::RegisterClient {
                worker_id: p.worker_id.to_vec(),
                job_id: p.job_id.to_vec(),
                is_driver: p.is_driver,
                pid: std::process::id(),
                address: address.clone(),
                binary,
                no_events: !p.record_events,
                event_area: events.as_ref().map(|e| e.area_path().display().to_string()).unwrap_or_default(),
                remote: false,
                binary_node: Vec::new(),
                otlp_endpoint: if p.is_driver { crate::trace::endpoint().unwrap_or_default() } else { String::new() },
            })),
        };
        let registered = (|| {
            let mut buf = Vec::new();
            encode_frame(&register, &mut buf);
            (&stream).write_all(&buf).map_err(|e| conn_err("register with the node agent", e))?;
            let mut reader = FrameReader::new(stream.try_clone().map_err(|e| conn_err("clone the socket", e))?);
            let reply: NodeMessage = reader
                .next()
                .map_err(|e| conn_err("read the node agent's reply", e))?
                .ok_or_else(|| Error::Connection("the node agent closed the connection during registration".into()))?;
            let Some(node_message::Body::Registered(reg)) = reply.body else {
                return Err(Error::Connection("the node agent answered registration with something else".into()));
            };
            if !reg.error.is_empty() {
                return Err(Error::Connection(format!("the node agent refused registration: {}", reg.error)));
            }
            Ok((reader, reg))
        })();
        let (reader, reg) = match registered {
            Ok(r) => r,
            Err(e) => {
                // The agent did not take the area (it removes the name once it has).
                if let Some(events) = &events {
                    events.remove_name();
                }
                return Err(e);
            }
        };
        if tcp.is_none() && !reg.tcp_ip.is_empty() {
            // A driver learns its node's address from the registration; nothing knows its
            // own until it hands refs out, after this.
            let (listener, at) = bind_tcp(&reg.tcp_ip, &reg.tcp_ports)
                .map_err(|e| Error::Connection(format!("cannot listen on {} for other hosts: {e}", reg.tcp_ip)))?;
            address = format!("{address}|{at}");
            tcp = Some((listener, at));
            let update = ClientMessage { req_id: 0, body: Some(client_message::Body::UpdateAddress(address.clone())) };
            let mut buf = Vec::new();
            encode_frame(&update, &mut buf);
            (&stream).write_all(&buf).map_err(|e| conn_err("register with the node agent", e))?;
        }
        let arena = Arena::open(&reg.store_path).map_err(|e| Error::Connection(e.to_string()))?;
        let node: Id = reg.node_id.as_slice().try_into().unwrap_or([0; 16]);
        let push_tail = spec::push_tail(p.job_id, p.worker_id, &address, node);
        let handle_address: Arc<str> = Arc::from(address.as_str());
        let core = Arc::new(Core {
            me: p.worker_id,
            job: p.job_id,
            node,
            is_driver: p.is_driver,
            address,
            session_dir,
            node_conn: NodeConn {
                write: Mutex::new(stream),
                next_req: AtomicU64::new(1),
                waiters: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                node: Mutex::new(None),
            },
            arena,
            state: Mutex::new(State {
                owned: IdMap::default(),
                borrowed: HashMap::new(),
                borrowed_locations: HashMap::new(),
                local_copies: HashMap::new(),
                lineage: IdMap::default(),
                tasks: IdMap::default(),
                waits: DependencyWaits::default(),
                shapes: HashMap::new(),
                next_seq: 0,
                actors: HashMap::new(),
                queues: HashMap::new(),
                leased: HashMap::new(),
                lease_requests: HashMap::new(),
                remote_agents: HashMap::new(),
                peers: HashMap::new(),
                outbox: Vec::new(),
                gone_nodes: HashMap::new(),
            }),
            ready: Condvar::new(),
            events,
            // SAFETY: getppid has no preconditions.
            parent_pid: unsafe { libc::getppid() },
            record_events: p.record_events,
            max_inline: p.max_inline,
            stopping: AtomicBool::new(false),
            runs_tasks: p.executor.is_some(),
            executor: p.executor,
            exec_lock: Mutex::new(()),
            held_results: Mutex::new(Vec::new()),
            pid: std::process::id(),
            accepting: Mutex::new(None),
            push_tail,
            handle_address,
        });
        let c = core.clone();
        std::thread::Builder::new().name("rayr-node-reader".into()).spawn(move || c.read_node(reader)).unwrap();
        if core.runs_tasks {
            // A worker may be leased (and pushed a task) the moment it registered: the task
            // must find this core installed.
            install(core.clone());
        }
        let (stop, serve) = (Arc::downgrade(&core), Arc::downgrade(&core));
        let accepting = rayr_proto::frames::accept_both(
            listener,
            tcp.map(|t| t.0),
            move || stop.upgrade().is_none_or(|c| c.stopping.load(Ordering::Acquire)),
            move |stream| {
                if let Some(core) = serve.upgrade() {
                    let _ = std::thread::Builder::new().name("rayr-peer".into()).spawn(move || core.serve_peer(stream));
                }
            },
        )
        .map_err(|e| conn_err("start accepting peers", e))?;
        *core.accepting.lock() = Some(accepting);
        let c = Arc::downgrade(&core);
        std::thread::Builder::new()
            .name("rayr-ticker".into())
            .spawn(move || {
                while let Some(core) = c.upgrade() {
                    if core.stopping.load(Ordering::Acquire) {
                        break;
                    }
                    core.tick();
                    drop(core);
                    std::thread::sleep(TICK_EVERY);
                }
            })
            .unwrap();
        // Fault the store's first pages into this process too, off the hot path.
        let c = Arc::downgrade(&core);
        std::thread::Builder::new()
            .name("rayr-store-map".into())
            .spawn(move || {
                if let Some(core) = c.upgrade() {
                    core.arena.prefault(64 << 20);
                }
            })
            .unwrap();
        Ok(core)
    }

    // ---- the node agent connection ----

    fn read_node(self: Arc<Self>, mut reader: FrameReader<Stream>) {
        loop {
            let msg: NodeMessage = match reader.next() {
                Ok(Some(m)) => m,
                _ => break,
            };
            if let Some(node_message::Body::NodeGone(g)) = &msg.body {
                self.node_gone(g);
                continue;
            }
            if let Some(node_message::Body::Lease(reply)) = &msg.body {
                let key = self.state.lock().lease_requests.remove(&msg.req_id);
                if let Some((key, lessor)) = key {
                    self.lease_granted(key, reply.clone(), lessor);
                    continue;
                }
            }
            let waiter = self.node_conn.waiters.lock().remove(&msg.req_id);
            match (waiter, &msg.body) {
                (Some(tx), _) => {
                    let _ = tx.send(msg);
                }
                // A pull answered after its reader gave up (its timeout passed): the copy
                // the agent pinned for it is not needed.
                (None, Some(node_message::Body::Pulled(p))) if p.error.is_empty() => {
                    if let Ok(id) = <Id>::try_from(p.object_id.as_slice())
                        && !self.state.lock().local_copies.contains_key(&id)
                    {
                        self.release_copies(&[id]);
                    }
                }
                _ => {}
            }
        }
        self.node_conn.closed.store(true, Ordering::Release);
        self.node_conn.waiters.lock().clear();
        if !self.is_driver && !self.stopping.load(Ordering::Acquire) {
            // The node agent is gone: nothing can reach this worker any more. If it died
            // (rather than closing the connection, after draining it), what this process
            // recorded since its last drain would die with the area: saved beside the
            // node's log instead (the head indexes it with the rest).
            if self.parent_died()
                && let Some(events) = &self.events
            {
                let session = rayr_logs::Session::open(&self.session_dir);
                let path = session.events_dir().join(format!("events-{}-orphan-{}.log", hex(&self.node), &hex(&self.me)[..16]));
                let _ = events.save_to(&path, self.node);
            }
            std::process::exit(0);
        }
        self.fail_everything("the node agent went away");
    }

    /// The head declared node `g` gone: what this process holds there is dropped now (a
    /// frozen or cut-off node keeps its sockets open). Its agent's connection closes, so
    /// lease requests sent there are asked again; connections to workers leased there
    /// close, so their tasks and calls are retried (or fail) as after any worker's death,
    /// caused by the node's death.
    fn node_gone(self: &Arc<Self>, g: &rayr_proto::NodeGone) {
        let Ok(node) = <Id>::try_from(g.node_id.as_slice()) else { return };
        let mut st = self.state.lock();
        st.gone_nodes.insert(node, (g.died_event.clone(), g.reason.clone()));
        // Losses waiting to learn how a worker there ended (see `worker_exit_from`).
        self.ready.notify_all();
        let agents: Vec<Arc<NodeConn>> = st.remote_agents.values().filter(|c| *c.node.lock() == Some(node)).cloned().collect();
        let peers: Vec<Arc<PeerConn>> = st
            .leased
            .values()
            .filter(|l| l.lessor.as_ref().is_some_and(|c| agents.iter().any(|a| Arc::ptr_eq(a, c))))
            .map(|l| l.conn.clone())
            .collect();
        drop(st);
        for p in peers {
            p.hang_up();
        }
        for a in agents {
            let _ = a.write.lock().shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether the process that started this one has died (this one was handed to init, or
    /// a subreaper). Its sockets close before it is reaped: waits a moment for that.
    fn parent_died(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } != self.parent_pid {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node agent of another node (at `socket`), to lease from after a spillback:
    /// connected and registered as a remote submitter once, then kept.
    pub(crate) fn remote_agent(self: &Arc<Self>, socket: &str) -> io::Result<Arc<NodeConn>> {
        if let Some(c) = self.state.lock().remote_agents.get(socket)
            && !c.closed.load(Ordering::Acquire)
        {
            return Ok(c.clone());
        }
        let stream = rayr_proto::frames::connect(socket)?;
        let register = ClientMessage {
            req_id: 1,
            body: Some(client_message::Body::Register(rayr_proto::RegisterClient {
                worker_id: self.me.to_vec(),
                job_id: self.job.to_vec(),
                is_driver: self.is_driver,
                pid: self.pid,
                binary: std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
                no_events: !self.record_events,
                remote: true,
                binary_node: self.node.to_vec(),
                otlp_endpoint: crate::trace::endpoint().unwrap_or_default(),
                ..Default::default()
            })),
        };
        let mut buf = Vec::new();
        encode_frame(&register, &mut buf);
        (&stream).write_all(&buf)?;
        // (That agent may fetch this job's binary first: a minute at most.)
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut reader = FrameReader::new(stream.try_clone()?);
        let reply: NodeMessage = reader.next()?.ok_or_else(|| io::Error::other("the node agent closed the connection"))?;
        stream.set_read_timeout(None)?;
        match reply.body {
            Some(node_message::Body::Registered(r)) if r.error.is_empty() => {}
            Some(node_message::Body::Registered(r)) => return Err(io::Error::other(r.error)),
            _ => return Err(io::Error::other("the node agent answered the registration with something else")),
        }
        let conn = Arc::new(NodeConn {
            write: Mutex::new(stream),
            next_req: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            node: Mutex::new(None),
        });
        self.state.lock().remote_agents.insert(socket.to_string(), conn.clone());
        let (core, c, socket) = (self.clone(), conn.clone(), socket.to_string());
        std::thread::Builder::new().name("rayr-remote-node".into()).spawn(move || core.read_remote_agent(c, reader, socket))?;
        Ok(conn)
    }

    fn read_remote_agent(self: Arc<Self>, conn: Arc<NodeConn>, mut reader: FrameReader<Stream>, socket: String) {
        while let Ok(Some(msg)) = reader.next::<NodeMessage>() {
            match msg.body {
                Some(node_message::Body::Lease(reply)) => {
                    let key = self.state.lock().lease_requests.remove(&msg.req_id);
                    if let Some((key, lessor)) = key {
                        self.lease_granted(key, reply, lessor);
                    }
                }
                // A reply to `conn.call` (how one of its workers ended). Leases are asked
                // with this process's numbers, calls with the connection's: only non-lease
                // replies are looked up here.
                _ => {
                    if let Some(tx) = conn.waiters.lock().remove(&msg.req_id) {
                        let _ = tx.send(msg);
                    }
                }
            }
        }
        conn.closed.store(true, Ordering::Release);
        // What waits on a reply from it is answered now: the node is gone.
        conn.waiters.lock().clear();
        // That node is gone: what was asked of it is asked again (here, or elsewhere).
        let mut st = self.state.lock();
        if st.remote_agents.get(&socket).is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            st.remote_agents.remove(&socket);
        }
        let lost: Vec<(u64, QueueKey)> = st
            .lease_requests
            .iter()
            .filter(|(_, (_, l))| l.as_ref().is_some_and(|l| Arc::ptr_eq(l, &conn)))
            .map(|(r, (k, _))| (*r, k.clone()))
            .collect();
        for (req, key) in lost {
            st.lease_requests.remove(&req);
            if let Some(q) = st.queues.get_mut(&key) {
                q.leases_requested = 0;
            }
            if !self.stopping.load(Ordering::Acquire) {
                self.dispatch_locked(&mut st, &key);
            }
        }
    }

    fn fail_everything(self: &Arc<Self>, why: &str) {
        let mut st = self.state.lock();
        let tasks: Vec<Id> = st.tasks.keys().collect();
        for t in tasks {
            let err = Error::Connection(format!(
                "task {} cannot complete: {why}; `rayr status` shows the cluster, and `rayr why-died {}` how the task ended once the head has recorded it",
                hex(&t),
                hex(&t)
            ));
            self.finish_task_locked(&mut st, t, Slot::Failed(err), None);
        }
        // Lease requests in flight will never be answered.
        st.lease_requests.clear();
        for q in st.queues.values_mut() {
            q.leases_requested = 0;
        }
        drop(st);
        self.send_outbox();
        self.ready.notify_all();
    }

    // ---- peers ----

    fn serve_peer(self: Arc<Self>, stream: Stream) {
        let Ok(w) = stream.try_clone() else { return };
        let conn = Arc::new(ServerConn { write: Mutex::new(w) });
        let held = Arc::new(HeldResults { conn: conn.clone(), buf: Mutex::new((Vec::new(), None)) });
        if self.runs_tasks {
            self.held_results.lock().push(Arc::downgrade(&held));
            HELD.with(|h| *h.borrow_mut() = Some(held.clone()));
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let mut reader = FrameReader::new(stream);
        let mut borrowers: HashSet<Id> = HashSet::new();
        // A task's TASK_FINISHED and the next pushed task's TASK_STARTED, when it is
        // already here, are one batch of events (one clock reading, one publish).
        let mut events = None;
        loop {
            if !reader.has_buffered_frame() {
                spin_until_readable(fd);
            }
            let Ok(Some(msg)) = reader.next::<PeerMessage>() else { break };
            let req = msg.req_id;
            match msg.body {
                Some(peer_message::Body::Push(spec))
                    if !spec.actor_creation && !spec.actor_id.is_empty() && self.executor.is_some_and(|x| (x.call_pool)().is_some()) =>
                {
                    // A concurrent actor's call: its pool runs it and answers on `conn`. What
                    // this thread held back (the constructor's result) goes first.
                    events = None;
                    held.send(Duration::ZERO);
                    if let Some(pool) = self.executor.and_then(|x| (x.call_pool)()) {
                        let _ = pool.send((spec, conn.clone()));
                    }
                    continue;
                }
                Some(peer_message::Body::Push(spec)) if let Some(executor) = self.executor => {
                    // Run it on this thread: no hand-off to another thread per task. A task
                    // blocked in `get` waits here; the replies it waits for arrive on other
                    // connections, each read by its own thread.
                    let result = {
                        let _one_at_a_time = self.exec_lock.lock();
                        (executor.run)(&self, spec, &mut events)
                    };
                    held.hold(&result);
                    if !reader.has_buffered_frame() {
                        events = None;
                        held.send(Duration::ZERO);
                    }
                    continue;
                }
                _ => events = None,
            }
            match msg.body {
                Some(peer_message::Body::Get(g)) => {
                    held.send(Duration::ZERO);
                    self.serve_get(&conn, req, &g)
                }
                Some(peer_message::Body::Kill(k)) => {
                    held.send(Duration::ZERO);
                    let error = match <Id>::try_from(k.actor_id.as_slice()) {
                        Ok(actor) => self.kill_actor(actor, k.no_restart).err().map(|e| e.to_string()).unwrap_or_default(),
                        Err(_) => "not an actor id".into(),
                    };
                    conn.send(&PeerMessage { req_id: req, body: Some(peer_message::Body::Killed(rayr_proto::ActorKillReply { error })) });
                }
                Some(peer_message::Body::Locate(l)) => {
                    held.send(Duration::ZERO);
                    let location = self.locate_actor(&l.actor_id);
                    conn.send(&PeerMessage { req_id: req, body: Some(peer_message::Body::Location(location)) });
                }
                Some(peer_message::Body::Copy(c)) => {
                    held.send(Duration::ZERO);
                    self.copy_made(&c);
                    conn.send(&PeerMessage { req_id: req, body: None });
                }
                Some(peer_message::Body::Borrow(b)) => {
                    held.send(Duration::ZERO);
                    if let Ok(w) = <Id>::try_from(b.borrower.as_slice()) {
                        borrowers.insert(w);
                    }
                    self.borrower_update(b);
                    conn.send(&PeerMessage { req_id: req, body: None });
                }
                _ => held.send(Duration::ZERO),
            }
        }
        drop(events);
        held.send(Duration::ZERO);
        // A borrower talks to us over its one connection: when it closes, the process is
        // gone (or shut down), and so are its borrows.
        if !self.stopping.load(Ordering::Acquire) {
            for w in borrowers {
                self.borrower_gone(w);
            }
        }
    }

    /// The connection to another core worker, opened once and kept.
    pub fn peer(self: &Arc<Self>, address: &str) -> io::Result<Arc<PeerConn>> {
        if let Some(p) = self.state.lock().peers.get(address)
            && !p.closed.load(Ordering::Acquire) {
                return Ok(p.clone());
            }
        let stream = rayr_proto::frames::connect(address)?;
        let reader = FrameReader::new(stream.try_clone()?);
        let raw_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let conn = Arc::new(PeerConn {
            raw_fd,
            write: Mutex::new(stream),
            address: address.to_string(),
            worker: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        self.state.lock().peers.insert(address.to_string(), conn.clone());
        let core = self.clone();
        let c = conn.clone();
        std::thread::Builder::new().name("rayr-peer-reader".into()).spawn(move || core.read_peer(c, reader))?;
        Ok(conn)
    }

    fn read_peer(self: Arc<Self>, conn: Arc<PeerConn>, mut reader: FrameReader<Stream>) {
        // Results already read are handled together: one lock, one wake-up per batch.
        let mut results = Vec::new();
        loop {
            if !reader.has_buffered_frame() {
                spin_until_readable(conn.raw_fd);
            }
            let msg: PeerMessage = match reader.next() {
                Ok(Some(m)) => m,
                _ => break,
            };
            match msg.body {
                Some(peer_message::Body::Result(r)) => results.push(r),
                body => {
                    if let Some(tx) = conn.waiters.lock().remove(&msg.req_id) {
                        let _ = tx.send(PeerMessage { req_id: msg.req_id, body });
                    }
                }
            }
            // Whatever came last, nothing more is waiting in the buffer: handle the batch.
            if !results.is_empty() && !reader.has_buffered_frame() {
                let worker = *conn.worker.lock();
                if let Some(w) = worker {
                    self.task_results(w, std::mem::take(&mut results));
                }
                results.clear();
            }
        }
        if !results.is_empty() {
            if let Some(w) = *conn.worker.lock() {
                self.task_results(w, std::mem::take(&mut results));
            }
        }
        conn.closed.store(true, Ordering::Release);
        conn.waiters.lock().clear();
        {
            let mut st = self.state.lock();
            if st.peers.get(&conn.address).is_some_and(|p| Arc::ptr_eq(p, &conn)) {
                st.peers.remove(&conn.address);
            }
            // Locations learned from a peer that is gone may be freed and reused now; a copy
            // made here is not read again either (its owner died: the object is lost, as its
            // readers are told), and is freed when its borrow ends.
            let stale: Vec<Id> = st.borrowed.iter().filter(|(_, b)| b.2 == conn.address).map(|(id, _)| *id).collect();
            for id in stale {
                st.borrowed_locations.remove(&id);
            }
        }
        let worker = *conn.worker.lock();
        if let Some(w) = worker
            && !self.stopping.load(Ordering::Acquire) {
                self.worker_lost(w);
            }
    }

    /// Sends the values queued for remote readers while the lock was held. Called after
    /// the paths that complete objects release the lock, and by the ticker as a backstop.
    pub(crate) fn send_outbox(&self) {
        let out = {
            let mut st = self.state.lock();
            if st.outbox.is_empty() {
                return;
            }
            std::mem::take(&mut st.outbox)
        };
        for (conn, msg) in out {
            conn.send(&msg);
        }
    }

    /// Sends results held longer than `MAX_RESULT_HOLD` (the ticker calls it).
    fn send_stale_results(&self) {
        let held: Vec<Arc<HeldResults>> = {
            let mut list = self.held_results.lock();
            list.retain(|w| w.strong_count() > 0);
            list.iter().filter_map(|w| w.upgrade()).collect()
        };
        for h in held {
            h.send(MAX_RESULT_HOLD);
        }
    }

    /// How a worker of this node ended, from the node agent (waiting briefly for the reap).
    pub fn worker_exit(&self, worker: Id) -> (Option<Id>, String) {
        self.worker_exit_from(worker, None)
    }

    /// How a worker ended, from the agent that leased it (`via`; None: this node's). Never
    /// called on the thread that reads that agent's replies.
    pub(crate) fn worker_exit_from(&self, worker: Id, via: Option<&NodeConn>) -> (Option<Id>, String) {
        // A worker of a node the head declared gone went with it (its agent may not answer).
        let node = via.and_then(|c| *c.node.lock());
        let gone = |st: &State| {
            let node = node?;
            st.gone_nodes.get(&node).map(|(died, reason)| {
                (<Id>::try_from(died.as_slice()).ok(), format!("its node {} was declared gone: {reason}", hex(&node)))
            })
        };
        if let Some(known) = gone(&self.state.lock()) {
            return known;
        }
        let body = client_message::Body::WorkerExit(rayr_proto::WorkerExitQuery { worker_id: worker.to_vec(), wait_ms: 3000 });
        match via.unwrap_or(&self.node_conn).call(body) {
            Ok(node_message::Body::WorkerExit(r)) if r.exited => {
                let exit = r.exit.unwrap_or_default();
                let pid = exit.pid;
                (r.exit_event.as_slice().try_into().ok(), format!("pid {pid} {}", exit.detail))
            }
            _ => {
                // Another node's agent that cannot answer died with its node, most likely:
                // the head says so within its heartbeat window; the loss then names it.
                if node.is_some() {
                    let deadline = Instant::now() + NODE_DEATH_WAIT;
                    let mut st = self.state.lock();
                    loop {
                        if let Some(known) = gone(&st) {
                            return known;
                        }
                        if self.ready.wait_until(&mut st, deadline).timed_out() {
                            break;
                        }
                    }
                }
                (None, "the connection to it closed (its exit is not known to this node)".to_string())
            }
        }
    }

    /// Ends this process's part in the cluster; a driver tells its node agent `exit_code`
    /// (what its `main` returned: 0 or 1).
    pub fn shutdown(self: &Arc<Self>, reason: &str, exit_code: i32) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut st = self.state.lock();
            // Its actors end with it (their workers are stopped as their leases come back).
            let actors: Vec<Id> = st.queues.values().filter_map(|q| q.actor.as_ref().filter(|a| a.owned && a.dead.is_none()).map(|a| a.id)).collect();
            let detail = format!("its owner {} shut down: {reason}", hex(&self.me));
            for actor in actors {
                self.end_actor_locked(&mut st, actor, submit::ActorEnd { cause: rayr_proto::ActorDeathCause::OwnerDied, detail: &detail, because: None, kill: false }, Vec::new());
            }
            let workers: Vec<Id> = st.leased.keys().copied().collect();
            for w in workers {
                self.return_lease_locked(&mut st, w);
            }
            // Our objects go with us (the node agent frees what is in its store); copies
            // on other nodes are freed here, since only we know where they are.
            for (id, o) in st.owned.iter().filter(|(_, o)| !o.copies().is_empty()) {
                let nodes = o.copies().iter().map(|n| n.to_vec()).collect();
                let _ = self.node_conn.send(0, client_message::Body::FreeCopies(rayr_proto::FreeCopies { object_id: id.to_vec(), nodes }));
            }
        }
        self.drain_events_now();
        if self.is_driver {
            let _ = self.node_conn.send(0, client_message::Body::Disconnect(rayr_proto::Disconnect { reason: reason.to_string(), exit_code }));
        }
        let _ = self.node_conn.write.lock().shutdown(std::net::Shutdown::Both);
        // Wake our accept loops so they exit, then remove our socket.
        if let Some(a) = self.accepting.lock().take() {
            a.wake();
        }
        let _ = std::fs::remove_file(rayr_proto::frames::split_address(&self.address).0);
    }
}

/// A TCP listener on `ip`, on the first free port of `ports` ("MIN-MAX"; empty: any free
/// port), and the address it got.
fn bind_tcp(ip: &str, ports: &str) -> io::Result<(std::net::TcpListener, String)> {
    let ip: std::net::IpAddr = ip.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{ip:?} is not an IP address: {e}")))?;
    let listener = match ports.split_once('-').and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))) {
        Some((lo, hi)) => (lo..=hi).find_map(|p| std::net::TcpListener::bind((ip, p)).ok()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::AddrInUse, format!("every port of {lo}-{hi} (--min/max-worker-port) is taken"))
        })?,
        None => std::net::TcpListener::bind((ip, 0))?,
    };
    let at = listener.local_addr()?.to_string();
    Ok((listener, at))
}
