//! The core worker: the part of rayr inside every driver and worker process.
//!
//! It holds this process's connection to its node agent, the objects this process owns
//! (with their reference counts), the submitter that leases workers and pushes tasks to
//! them, the peer server through which other processes push tasks here or ask for objects
//! owned here, and the event buffer. One mutex guards all of that state ([`State`]):
//! every path holds it briefly and never across a blocking wait or a user callback.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};
use rayr_logs::{Id, hex, new_id, now_us};
use rayr_proto::frames::FrameReader;
use rayr_proto::{
    ClientMessage, Event, EventKind, NodeMessage, ObjectDetail, ObjectLocation, PeerMessage, TaskDetail,
    TaskError, TaskSpec, client_message, encode_frame, event, node_message, peer_message,
};
use rayr_store::Arena;

use crate::error::Error;

/// How many tasks may be queued on one leased worker: enough to hide the round trip,
/// few enough that a long task does not hold many others behind it.
const MAX_IN_FLIGHT: usize = 32;
/// Bytes of pushes not yet answered, per worker. Kept below a socket's send buffer so that
/// pushing never blocks: the thread that pushes is also the one that reads results, and a
/// worker blocked on writing large results would otherwise never read the next push.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 10;
/// A lease with nothing to run is returned after this long (a sync loop reuses it).
const LEASE_IDLE: Duration = Duration::from_millis(10);
/// How often buffered events are flushed to the node agent.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

static CORE: RwLock<Option<Arc<Core>>> = RwLock::new(None);

/// The running core of this process, if `init` has run.
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
    Failed(Error),
}

/// An object owned by this process.
pub(crate) struct Owned {
    pub slot: Slot,
    /// `ObjectRef` handles alive in this process.
    pub local_refs: u32,
    /// Pending tasks that take it as an argument.
    pub submitted: u32,
    /// Other processes holding a reference.
    pub borrowers: HashSet<Id>,
    /// Serialized copies not yet deserialized anywhere.
    pub tokens: u32,
    /// Tasks of ours waiting for this value before they can be pushed.
    pub dependents: Vec<Id>,
    /// Remote readers waiting for the value: (connection, request id).
    pub remote_waiters: Vec<(Arc<ServerConn>, u64)>,
    pub created_event: Id,
}

impl Owned {
    fn new(slot: Slot) -> Owned {
        Owned {
            slot,
            local_refs: 0,
            submitted: 0,
            borrowers: HashSet::new(),
            tokens: 0,
            dependents: Vec::new(),
            remote_waiters: Vec::new(),
            created_event: [0; 16],
        }
    }
    fn referenced(&self) -> bool {
        self.local_refs > 0 || self.submitted > 0 || !self.borrowers.is_empty() || self.tokens > 0
    }
}

pub(crate) struct PendingTask {
    pub spec: TaskSpec,
    /// (argument index, object id owned here) still to be resolved.
    pub deps: Vec<(usize, Id)>,
    /// Owned objects counted in `submitted` (released when the task ends).
    pub owned_args: Vec<Id>,
    /// Borrowed objects this task keeps a reference to.
    pub borrowed_args: Vec<Id>,
    pub key: String,
    pub demand: HashMap<String, f64>,
    pub retry_exceptions: bool,
    pub worker: Option<Id>,
    pub last_event: Id,
}

struct Queue {
    demand: HashMap<String, f64>,
    ready: VecDeque<Id>,
    leases_requested: u32,
    workers: Vec<Id>,
}

struct Leased {
    conn: Arc<PeerConn>,
    key: String,
    /// Pushed tasks not yet answered, with the bytes each push took.
    in_flight: HashMap<Id, usize>,
    in_flight_bytes: usize,
    idle_since: Option<Instant>,
}

pub(crate) struct State {
    pub owned: HashMap<Id, Owned>,
    /// Handles alive here for objects owned elsewhere: id → (count, owner, owner address).
    pub borrowed: HashMap<Id, (u32, Id, String)>,
    /// Where borrowed objects in the shm store are: sealed values never move, and the
    /// borrow keeps them alive, so later reads skip the round trip to the owner.
    pub borrowed_locations: HashMap<Id, (u64, u64, u32)>,
    pub tasks: HashMap<Id, PendingTask>,
    queues: HashMap<String, Queue>,
    leased: HashMap<Id, Leased>,
    /// Lease requests in flight: request id → queue key.
    lease_requests: HashMap<u64, String>,
    /// Outgoing connections by address (owners and leased workers).
    pub peers: HashMap<String, Arc<PeerConn>>,
}

/// A connection this process opened to another core worker.
pub(crate) struct PeerConn {
    write: Mutex<UnixStream>,
    raw_fd: std::os::fd::RawFd,
    pub address: String,
    /// The worker at the other end, when it is a leased worker.
    pub worker: Mutex<Option<Id>>,
    waiters: Mutex<HashMap<u64, Sender<PeerMessage>>>,
    next_req: AtomicU64,
    pub closed: AtomicBool,
}

impl PeerConn {
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
    write: Mutex<UnixStream>,
    next_req: AtomicU64,
    waiters: Mutex<HashMap<u64, Sender<NodeMessage>>>,
    pub closed: AtomicBool,
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
    /// Sends a request and waits for its reply.
    pub fn call(&self, body: client_message::Body) -> crate::Result<node_message::Body> {
        let req = self.next_req();
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.waiters.lock().insert(req, tx);
        let lost = || Error::Connection("lost the connection to the node agent: is the cluster still running?".into());
        if self.send(req, body).is_err() {
            self.waiters.lock().remove(&req);
            return Err(lost());
        }
        let reply = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| lost());
        self.waiters.lock().remove(&req);
        reply?.body.ok_or_else(lost)
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<(Event, Spares)> = std::cell::RefCell::new(Default::default());
}

/// Overwrites `dst` with `src`, keeping its allocation.
#[inline]
pub(crate) fn put(dst: &mut Vec<u8>, src: &[u8]) {
    match <&Id>::try_from(src) {
        Ok(id) => put_id(dst, id),
        Err(_) => {
            dst.clear();
            dst.extend_from_slice(src);
        }
    }
}

/// `put` for an id: a fixed-size copy the compiler inlines (six events a task, five ids
/// each: a library memcpy call per id shows up).
#[inline]
pub(crate) fn put_id(dst: &mut Vec<u8>, id: &Id) {
    dst.clear();
    dst.extend_from_slice(id.as_slice());
}

/// Details of earlier events, kept so their buffers are reused (events alternate between
/// task and object details on the same thread).
#[derive(Default)]
pub(crate) struct Spares {
    task: Option<TaskDetail>,
    object: Option<ObjectDetail>,
}

/// An event being filled in place (see [`Core::record_with`]).
pub(crate) struct EventFill<'a> {
    pub e: &'a mut Event,
    spare: &'a mut Spares,
}

impl EventFill<'_> {
    /// The event's task detail, cleared, reusing an earlier one's buffers.
    pub fn task(&mut self) -> &mut TaskDetail {
        let mut t = self.spare.task.take().unwrap_or_default();
        t.function.clear();
        t.error.clear();
        t.reason.clear();
        t.backtrace.clear();
        t.error_type.clear();
        t.attempt = 0;
        t.max_retries = 0;
        t.r#final = false;
        t.pid = 0;
        self.e.detail = Some(event::Detail::Task(t));
        match &mut self.e.detail {
            Some(event::Detail::Task(t)) => t,
            _ => unreachable!(),
        }
    }

    /// The event's object detail, cleared, reusing an earlier one's buffers.
    pub fn object(&mut self) -> &mut ObjectDetail {
        let mut o = self.spare.object.take().unwrap_or_default();
        o.size = 0;
        o.location.clear();
        o.peer.clear();
        o.reason.clear();
        o.peer_kind.clear();
        self.e.detail = Some(event::Detail::Object(o));
        match &mut self.e.detail {
            Some(event::Detail::Object(o)) => o,
            _ => unreachable!(),
        }
    }
}

/// Buffered, already-encoded events; flushed to the node agent every few milliseconds.
/// Each thread appends to its own shard, so recording never contends for a lock or a
/// cache line with another thread (only the flush visits every shard).
pub(crate) struct EventBuffer {
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
}

#[derive(Default)]
struct Shard {
    frames: Vec<u8>,
    count: u32,
    /// An empty buffer with capacity, swapped with `frames` at each flush so the flush
    /// sends the frames without copying them and recording never waits for the send.
    spare: Vec<u8>,
}

thread_local! {
    /// This thread's shard of the event buffer with that id.
    static SHARD: std::cell::RefCell<(u64, Option<Arc<Mutex<Shard>>>)> = const { std::cell::RefCell::new((0, None)) };
}

impl EventBuffer {
    fn new() -> EventBuffer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        EventBuffer { id: NEXT.fetch_add(1, Ordering::Relaxed), shards: Mutex::new(Vec::new()) }
    }

    fn with_shard(&self, f: impl FnOnce(&mut Shard)) {
        SHARD.with(|s| {
            let mut s = s.borrow_mut();
            if s.0 != self.id || s.1.is_none() {
                let shard = Arc::new(Mutex::new(Shard { frames: Vec::with_capacity(16 << 10), count: 0, spare: Vec::new() }));
                self.shards.lock().push(shard.clone());
                *s = (self.id, Some(shard));
            }
            f(&mut s.1.as_ref().unwrap().lock());
        });
    }

    fn push(&self, e: &Event) {
        self.with_shard(|b| {
            encode_frame(e, &mut b.frames);
            b.count += 1;
        });
    }

    /// Appends a frame whose encoding is `prefix` (fields already encoded) followed by
    /// `e`'s own fields: protobuf fields may come in any order, and the fields every event
    /// of this process shares are encoded once, not per event.
    fn push_with_prefix(&self, prefix: &[u8], e: &Event) {
        use rayr_proto::Message;
        let len = prefix.len() + e.encoded_len();
        self.with_shard(|b| {
            b.frames.extend_from_slice(&(len as u32).to_le_bytes());
            b.frames.extend_from_slice(prefix);
            e.encode_raw(&mut b.frames);
            b.count += 1;
        });
    }

    /// Sends everything buffered so far, from every thread, as one frame of
    /// `ClientMessage { events: EventBatch { frames, count } }` through `send`, which gets
    /// the frame as slices (header, each thread's frames, trailer) for one vectored write:
    /// the frames are not copied, and no buffer is reallocated.
    fn flush_with(&self, send: impl FnOnce(&mut [std::io::IoSlice<'_>])) {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let shards: Vec<Arc<Mutex<Shard>>> = self.shards.lock().clone();
        let mut taken: Vec<(Arc<Mutex<Shard>>, Vec<u8>)> = Vec::new();
        let mut count = 0u32;
        for shard in shards {
            let mut s = shard.lock();
            if s.count > 0 {
                let mut full = std::mem::take(&mut s.spare);
                std::mem::swap(&mut full, &mut s.frames);
                count += std::mem::take(&mut s.count);
                drop(s);
                taken.push((shard, full));
            }
        }
        if count == 0 {
            return;
        }
        let frames_len: usize = taken.iter().map(|(_, f)| f.len()).sum();
        // EventBatch: frames = 1 (bytes) then count = 2 (varint); ClientMessage: events = 7
        // (req_id 0 is the default and not encoded).
        let mut trailer = Vec::with_capacity(11);
        encode_key(2, WireType::Varint, &mut trailer);
        encode_varint(count as u64, &mut trailer);
        let batch_len = 1 + encoded_len_varint(frames_len as u64) + frames_len + trailer.len();
        let msg_len = 1 + encoded_len_varint(batch_len as u64) + batch_len;
        let mut header = Vec::with_capacity(26);
        header.extend_from_slice(&(msg_len as u32).to_le_bytes());
        encode_key(7, WireType::LengthDelimited, &mut header);
        encode_varint(batch_len as u64, &mut header);
        encode_key(1, WireType::LengthDelimited, &mut header);
        encode_varint(frames_len as u64, &mut header);
        {
            let mut slices = Vec::with_capacity(taken.len() + 2);
            slices.push(std::io::IoSlice::new(&header));
            slices.extend(taken.iter().map(|(_, f)| std::io::IoSlice::new(f)));
            slices.push(std::io::IoSlice::new(&trailer));
            send(&mut slices);
        }
        for (shard, mut buf) in taken {
            buf.clear();
            shard.lock().spare = buf;
        }
    }
}

/// Writes every slice, however many calls that takes.
fn write_all_vectored(w: &mut impl Write, mut slices: &mut [std::io::IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A connection another process opened to us.
pub(crate) struct ServerConn {
    write: Mutex<UnixStream>,
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
    pub events: EventBuffer,
    pub record_events: bool,
    pub max_inline: usize,
    pub stopping: AtomicBool,
    /// Set in workers: pushed tasks run here.
    pub runs_tasks: bool,
    /// One task at a time in a worker, whichever connection pushed it.
    pub exec_lock: Mutex<()>,
    pub node_resources: HashMap<String, f64>,
    pub pid: u32,
    /// source_worker, encoded once (see push_with_prefix).
    event_prefix: Vec<u8>,
}

/// What `connect` needs to know.
pub(crate) struct ConnectParams {
    pub node_socket: PathBuf,
    pub worker_id: Id,
    pub job_id: Id,
    pub is_driver: bool,
    pub record_events: bool,
    pub max_inline: usize,
    /// Workers run pushed tasks; the node agent may lease a worker out (and a task may
    /// arrive) the moment it registers, so this is known before registering.
    pub runs_tasks: bool,
}

impl Core {
    /// Connects to the node agent, registers, maps the store and starts the peer server,
    /// the node reader and the ticker.
    pub fn connect(p: ConnectParams) -> crate::Result<Arc<Core>> {
        let conn_err = |what: &str, e: io::Error| {
            Error::Connection(format!("cannot {what} ({}): {e}; is the cluster running?", p.node_socket.display()))
        };
        let stream = UnixStream::connect(&p.node_socket).map_err(|e| conn_err("reach the node agent", e))?;
        let session_dir = p.node_socket.parent().and_then(|s| s.parent()).map(PathBuf::from).unwrap_or_default();
        let address = rayr_logs::Session::open(&session_dir).worker_socket(&hex(&p.worker_id));
        let _ = std::fs::remove_file(&address);
        let listener = UnixListener::bind(&address).map_err(|e| conn_err("open this process's socket", e))?;
        let binary = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default();
        let register = ClientMessage {
            req_id: 1,
            body: Some(client_message::Body::Register(rayr_proto::RegisterClient {
                worker_id: p.worker_id.to_vec(),
                job_id: p.job_id.to_vec(),
                is_driver: p.is_driver,
                pid: std::process::id(),
                address: address.display().to_string(),
                binary,
            })),
        };
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
        let arena = Arena::open(&reg.store_path).map_err(|e| Error::Connection(e.to_string()))?;
        let core = Arc::new(Core {
            me: p.worker_id,
            job: p.job_id,
            node: reg.node_id.as_slice().try_into().unwrap_or([0; 16]),
            is_driver: p.is_driver,
            address: address.display().to_string(),
            session_dir,
            node_conn: NodeConn {
                write: Mutex::new(stream),
                next_req: AtomicU64::new(1),
                waiters: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            },
            arena,
            state: Mutex::new(State {
                owned: HashMap::new(),
                borrowed: HashMap::new(),
                borrowed_locations: HashMap::new(),
                tasks: HashMap::new(),
                queues: HashMap::new(),
                leased: HashMap::new(),
                lease_requests: HashMap::new(),
                peers: HashMap::new(),
            }),
            ready: Condvar::new(),
            events: EventBuffer::new(),
            record_events: p.record_events,
            max_inline: p.max_inline,
            stopping: AtomicBool::new(false),
            runs_tasks: p.runs_tasks,
            exec_lock: Mutex::new(()),
            pid: std::process::id(),
            event_prefix: {
                use rayr_proto::Message;
                // Only who recorded it: the index derives the node from the log's name and
                // the job and pid from this process's WORKER_STARTED (fewer bytes per event).
                Event { source_worker: p.worker_id.to_vec(), ..Default::default() }.encode_to_vec()
            },
            node_resources: reg.node_resources,
        });
        let c = core.clone();
        std::thread::Builder::new().name("rayr-node-reader".into()).spawn(move || c.read_node(reader)).unwrap();
        let c = core.clone();
        std::thread::Builder::new().name("rayr-peer-accept".into()).spawn(move || c.accept_peers(listener)).unwrap();
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
                    std::thread::sleep(FLUSH_EVERY);
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

    // ---- events ----

    #[inline]
    pub fn event(&self, kind: EventKind) -> Event {
        Event {
            id: new_id().to_vec(),
            time_us: now_us(),
            node_id: self.node.to_vec(),
            source_worker: self.me.to_vec(),
            source_pid: self.pid,
            kind: kind as i32,
            job_id: self.job.to_vec(),
            ..Default::default()
        }
    }

    /// Records an event built in place in a per-thread scratch `Event` whose buffers are
    /// reused, so the hot path (six events per task) allocates nothing once warm.
    #[inline]
    pub fn record_with(&self, kind: EventKind, fill: impl FnOnce(&mut EventFill<'_>)) -> Id {
        let id = new_id();
        if !self.record_events {
            return id;
        }
        SCRATCH.with(|scratch| {
            let (e, spare) = &mut *scratch.borrow_mut();
            match e.detail.take() {
                Some(event::Detail::Task(t)) => spare.task = Some(t),
                Some(event::Detail::Object(o)) => spare.object = Some(o),
                _ => {}
            }
            for v in [&mut e.cause, &mut e.object_id, &mut e.task_id, &mut e.actor_id, &mut e.worker_id] {
                v.clear();
            }
            put(&mut e.id, &id);
            e.time_us = now_us();
            e.kind = kind as i32;
            fill(&mut EventFill { e, spare });
            self.events.push_with_prefix(&self.event_prefix, e);
        });
        id
    }

    /// Records an event; returns its id (the cause link for what follows).
    #[inline]
    pub fn record(&self, e: Event) -> Id {
        let id: Id = e.id.as_slice().try_into().unwrap_or([0; 16]);
        if self.record_events {
            self.events.push(&e);
        }
        id
    }

    pub fn flush_events(&self) {
        self.events.flush_with(|slices| {
            let _ = write_all_vectored(&mut *self.node_conn.write.lock(), slices);
        });
    }

    fn tick(self: &Arc<Self>) {
        self.flush_events();
        let now = Instant::now();
        let mut st = self.state.lock();
        let idle: Vec<Id> = st
            .leased
            .iter()
            .filter(|(_, l)| l.in_flight.is_empty() && l.idle_since.is_some_and(|t| now - t >= LEASE_IDLE))
            .map(|(w, _)| *w)
            .collect();
        for w in idle {
            self.return_lease_locked(&mut st, w);
        }
    }

    fn return_lease_locked(&self, st: &mut State, worker: Id) {
        if let Some(l) = st.leased.remove(&worker) {
            if let Some(q) = st.queues.get_mut(&l.key) {
                q.workers.retain(|w| *w != worker);
            }
            let _ = self.node_conn.send(0, client_message::Body::ReturnLease(rayr_proto::LeaseReturn { worker_id: worker.to_vec() }));
        }
    }

    // ---- the node agent connection ----

    fn read_node(self: Arc<Self>, mut reader: FrameReader<UnixStream>) {
        loop {
            let msg: NodeMessage = match reader.next() {
                Ok(Some(m)) => m,
                _ => break,
            };
            if let Some(node_message::Body::Lease(reply)) = &msg.body {
                let key = self.state.lock().lease_requests.remove(&msg.req_id);
                if let Some(key) = key {
                    self.lease_granted(key, reply.clone());
                    continue;
                }
            }
            if let Some(tx) = self.node_conn.waiters.lock().remove(&msg.req_id) {
                let _ = tx.send(msg);
            }
        }
        self.node_conn.closed.store(true, Ordering::Release);
        self.node_conn.waiters.lock().clear();
        if !self.is_driver && !self.stopping.load(Ordering::Acquire) {
            // The node agent is gone: nothing can reach this worker any more.
            std::process::exit(0);
        }
        self.fail_everything("the node agent went away");
    }

    fn fail_everything(self: &Arc<Self>, why: &str) {
        let mut st = self.state.lock();
        let tasks: Vec<Id> = st.tasks.keys().copied().collect();
        for t in tasks {
            let err = Error::Connection(format!("task {} cannot complete: {why}", hex(&t)));
            self.finish_task_locked(&mut st, t, Slot::Failed(err), None);
        }
        drop(st);
        self.ready.notify_all();
    }

    // ---- peers ----

    fn accept_peers(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let core = self.clone();
            let _ = std::thread::Builder::new().name("rayr-peer".into()).spawn(move || core.serve_peer(stream));
        }
    }

    fn serve_peer(self: Arc<Self>, stream: UnixStream) {
        let Ok(w) = stream.try_clone() else { return };
        let conn = Arc::new(ServerConn { write: Mutex::new(w) });
        let mut reader = FrameReader::new(stream);
        // Results of pushed tasks, written when no further push is already buffered: a
        // pipelined batch of tasks answers with one write.
        let mut results = Vec::new();
        while let Ok(Some(msg)) = reader.next::<PeerMessage>() {
            let req = msg.req_id;
            match msg.body {
                Some(peer_message::Body::Push(spec)) if self.runs_tasks => {
                    // Run it on this thread: no hand-off to another thread per task. A task
                    // blocked in `get` waits here; the replies it waits for arrive on other
                    // connections, each read by its own thread.
                    let result = {
                        let _one_at_a_time = self.exec_lock.lock();
                        crate::exec::run_task(&self, spec)
                    };
                    encode_frame(&result, &mut results);
                    if !reader.has_buffered_frame() {
                        conn.send_raw(&results);
                        results.clear();
                    }
                }
                Some(peer_message::Body::Get(g)) => self.serve_get(&conn, req, &g.object_id, g.probe),
                Some(peer_message::Body::Borrow(b)) => {
                    self.borrower_update(b);
                    conn.send(&PeerMessage { req_id: req, body: None });
                }
                _ => {}
            }
        }
    }

    /// The connection to another core worker, opened once and kept.
    pub fn peer(self: &Arc<Self>, address: &str) -> io::Result<Arc<PeerConn>> {
        if let Some(p) = self.state.lock().peers.get(address)
            && !p.closed.load(Ordering::Acquire) {
                return Ok(p.clone());
            }
        let stream = UnixStream::connect(address)?;
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

    fn read_peer(self: Arc<Self>, conn: Arc<PeerConn>, mut reader: FrameReader<UnixStream>) {
        // Results already read are handled together: one lock, one wake-up per batch.
        let mut results = Vec::new();
        loop {
            let msg: PeerMessage = match reader.next() {
                Ok(Some(m)) => m,
                _ => break,
            };
            match msg.body {
                Some(peer_message::Body::Result(r)) => {
                    results.push(r);
                    if !reader.has_buffered_frame() {
                        let worker = *conn.worker.lock();
                        if let Some(w) = worker {
                            self.task_results(w, std::mem::take(&mut results));
                        }
                        results.clear();
                    }
                }
                body => {
                    if let Some(tx) = conn.waiters.lock().remove(&msg.req_id) {
                        let _ = tx.send(PeerMessage { req_id: msg.req_id, body });
                    }
                }
            }
        }
        conn.closed.store(true, Ordering::Release);
        conn.waiters.lock().clear();
        {
            let mut st = self.state.lock();
            if st.peers.get(&conn.address).is_some_and(|p| Arc::ptr_eq(p, &conn)) {
                st.peers.remove(&conn.address);
            }
            // Locations learned from a peer that is gone may be freed and reused now.
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

    // ---- ownership ----

    /// Registers a new object owned here, holding one local reference.
    pub fn own(&self, st: &mut State, id: Id, slot: Slot) {
        let mut o = Owned::new(slot);
        o.local_refs = 1;
        st.owned.insert(id, o);
    }

    /// Records that an owned object has a value (OBJECT_CREATED, owner assigned) and wakes
    /// everything waiting for it.
    pub fn object_created(self: &Arc<Self>, st: &mut State, id: Id, slot: Slot, task: Option<Id>, cause: Option<Id>) {
        let (size, location) = match &slot {
            Slot::Inline(b, _) => (b.len() as u64, "inline"),
            Slot::Shm { size, .. } => (*size, "shm"),
            _ => (0, ""),
        };
        let mut ev = None;
        if !location.is_empty() {
            ev = Some(self.record_with(EventKind::ObjectCreated, |f| {
                put(&mut f.e.object_id, &id);
                put(&mut f.e.worker_id, &self.me);
                if let Some(t) = task {
                    put(&mut f.e.task_id, &t);
                }
                if let Some(c) = cause {
                    put(&mut f.e.cause, &c);
                }
                let d = f.object();
                d.size = size;
                d.location.push_str(location);
            }));
        }
        let Some(o) = st.owned.get_mut(&id) else {
            // Every reference was dropped before the value arrived: free it at once.
            if let Slot::Shm { .. } = slot {
                self.free_in_store(&[id]);
            }
            return;
        };
        o.slot = slot.clone();
        if let Some(e) = ev {
            o.created_event = e;
        }
        let dependents = std::mem::take(&mut o.dependents);
        let waiters = std::mem::take(&mut o.remote_waiters);
        let referenced = o.referenced();
        for (conn, req) in waiters {
            conn.send(&value_message(req, id, &slot));
        }
        for t in dependents {
            self.dependency_ready(st, t, id, &slot);
        }
        if !referenced {
            self.free_locked(st, id, "every reference was dropped before the value was computed");
        }
    }

    pub fn release_local(&self, id: Id, owner: Id) {
        let mut st = self.state.lock();
        if owner == self.me {
            if let Some(o) = st.owned.get_mut(&id) {
                o.local_refs = o.local_refs.saturating_sub(1);
                if !o.referenced() && !matches!(o.slot, Slot::Pending) {
                    self.free_locked(&mut st, id, "every reference was released");
                }
            }
        } else {
            self.release_borrowed_locked(&mut st, id);
        }
    }

    pub fn release_borrowed_locked(&self, st: &mut State, id: Id) {
        let Some(entry) = st.borrowed.get_mut(&id) else { return };
        entry.0 -= 1;
        if entry.0 > 0 {
            return;
        }
        let (_, owner, address) = st.borrowed.remove(&id).unwrap();
        st.borrowed_locations.remove(&id);
        let peer = st.peers.get(&address).cloned();
        let msg = PeerMessage {
            req_id: 0,
            body: Some(peer_message::Body::Borrow(rayr_proto::BorrowerUpdate {
                object_id: id.to_vec(),
                borrower: self.me.to_vec(),
                add: false,
                consumes_token: false,
            })),
        };
        let _ = owner;
        if let Some(p) = peer {
            let _ = p.send(&msg);
        }
    }

    pub fn free_locked(&self, st: &mut State, id: Id, reason: &str) {
        let Some(o) = st.owned.remove(&id) else { return };
        if let Slot::Shm { .. } = o.slot {
            self.free_in_store(&[id]);
        }
        if !matches!(o.slot, Slot::Failed(_)) {
            self.record_with(EventKind::ObjectFreed, |f| {
                put(&mut f.e.object_id, &id);
                put(&mut f.e.worker_id, &self.me);
                put(&mut f.e.cause, &o.created_event);
                f.object().reason.push_str(reason);
            });
        }
    }

    fn free_in_store(&self, ids: &[Id]) {
        let _ = self.node_conn.send(
            0,
            client_message::Body::FreeObjects(rayr_proto::FreeObjects { object_ids: ids.iter().map(|i| i.to_vec()).collect() }),
        );
    }

    fn borrower_update(&self, b: rayr_proto::BorrowerUpdate) {
        let Ok(id) = <Id>::try_from(b.object_id.as_slice()) else { return };
        let borrower: Option<Id> = b.borrower.as_slice().try_into().ok();
        let mut st = self.state.lock();
        let Some(o) = st.owned.get_mut(&id) else { return };
        let mut event = None;
        if b.consumes_token {
            o.tokens = o.tokens.saturating_sub(1);
        }
        match (b.add, borrower) {
            (true, Some(w)) => {
                if o.borrowers.insert(w) {
                    event = Some((EventKind::ObjectBorrowed, w));
                }
            }
            (true, None) => o.tokens += 1,
            (false, Some(w)) => {
                if o.borrowers.remove(&w) {
                    event = Some((EventKind::ObjectReleased, w));
                }
            }
            (false, None) => {}
        }
        let created = o.created_event;
        let free = !o.referenced() && !matches!(o.slot, Slot::Pending);
        if let Some((kind, w)) = event {
            let mut e = self.event(kind);
            e.object_id = id.to_vec();
            e.worker_id = self.me.to_vec();
            e.cause = created.to_vec();
            e.detail = Some(event::Detail::Object(ObjectDetail {
                peer: w.to_vec(),
                peer_kind: "borrower".into(),
                ..Default::default()
            }));
            self.record(e);
        }
        if free {
            self.free_locked(&mut st, id, "its last borrower released it");
        }
    }

    fn serve_get(self: &Arc<Self>, conn: &Arc<ServerConn>, req: u64, object: &[u8], probe: bool) {
        let Ok(id) = <Id>::try_from(object) else { return };
        let mut st = self.state.lock();
        match st.owned.get_mut(&id) {
            Some(o) if matches!(o.slot, Slot::Pending) && !probe => {
                // Reply when the value arrives (see object_created).
                o.remote_waiters.push((conn.clone(), req));
            }
            Some(o) => {
                let msg = value_message(req, id, &o.slot);
                drop(st);
                conn.send(&msg);
            }
            None => {
                drop(st);
                conn.send(&PeerMessage {
                    req_id: req,
                    body: Some(peer_message::Body::Value(rayr_proto::ObjectValue {
                        object_id: id.to_vec(),
                        value: Some(rayr_proto::object_value::Value::Error(format!(
                            "object {} is not held by its owner {} (freed, or never created there)",
                            hex(&id),
                            hex(&self.me)
                        ))),
                    })),
                });
            }
        }
    }

    // ---- submitting ----

    /// Queues a task whose dependencies are resolved, and pushes what can be pushed.
    pub fn enqueue_locked(self: &Arc<Self>, st: &mut State, task: Id) {
        let Some(t) = st.tasks.get(&task) else { return };
        let key = t.key.clone();
        let demand = t.demand.clone();
        let q = st.queues.entry(key.clone()).or_insert_with(|| Queue {
            demand,
            ready: VecDeque::new(),
            leases_requested: 0,
            workers: Vec::new(),
        });
        q.ready.push_back(task);
        self.dispatch_locked(st, &key);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State, key: &str) {
        let mut batches: Vec<(Arc<PeerConn>, Vec<u8>)> = Vec::new();
        loop {
            let Some(q) = st.queues.get(key) else { return };
            let Some(&task) = q.ready.front() else { break };
            let push_len = st.tasks.get(&task).map_or(0, |t| rayr_proto::Message::encoded_len(&t.spec) + 16);
            // The least loaded leased worker with room (an idle one takes any size).
            let best = q
                .workers
                .iter()
                .filter_map(|w| st.leased.get(w).map(|l| (*w, l.in_flight.len(), l.in_flight_bytes)))
                .filter(|&(_, n, bytes)| n == 0 || (n < MAX_IN_FLIGHT && bytes + push_len <= MAX_IN_FLIGHT_BYTES))
                .min_by_key(|&(_, n, _)| n)
                .map(|(w, n, _)| (w, n));
            let Some((worker, _)) = best else {
                let q = st.queues.get_mut(key).unwrap();
                if q.leases_requested == 0 {
                    q.leases_requested += 1;
                    let demand = q.demand.clone();
                    self.request_lease(st, key, demand, task);
                }
                break;
            };
            st.queues.get_mut(key).unwrap().ready.pop_front();
            let l = st.leased.get_mut(&worker).unwrap();
            l.in_flight.insert(task, push_len);
            l.in_flight_bytes += push_len;
            l.idle_since = None;
            let conn = l.conn.clone();
            let Some(t) = st.tasks.get_mut(&task) else { continue };
            t.worker = Some(worker);
            let id = self.record_with(EventKind::TaskScheduled, |f| {
                put(&mut f.e.task_id, &task);
                put(&mut f.e.worker_id, &worker);
                put(&mut f.e.cause, &t.last_event);
                // The function is named once, in TASK_SUBMITTED: fewer bytes per event.
                f.task().attempt = t.spec.attempt;
            });
            t.last_event = id;
            put(&mut t.spec.scheduled_event, &id);
            let buf = match batches.iter_mut().position(|(c, _)| Arc::ptr_eq(c, &conn)) {
                Some(i) => &mut batches[i].1,
                None => {
                    batches.push((conn, Vec::with_capacity(256)));
                    &mut batches.last_mut().unwrap().1
                }
            };
            encode_push_frame(&t.spec, buf);
        }
        for (conn, buf) in batches {
            // A failed write means the worker died; its reader thread handles that.
            let _ = conn.send_raw(&buf);
        }
    }

    fn request_lease(&self, st: &mut State, key: &str, demand: HashMap<String, f64>, task: Id) {
        let req = self.node_conn.next_req();
        st.lease_requests.insert(req, key.to_string());
        let body = client_message::Body::Lease(rayr_proto::LeaseRequest { resources: demand, job_id: self.job.to_vec(), task_id: task.to_vec() });
        if self.node_conn.send(req, body).is_err() {
            st.lease_requests.remove(&req);
        }
    }

    fn lease_granted(self: &Arc<Self>, key: String, reply: rayr_proto::LeaseReply) {
        if !reply.error.is_empty() {
            // Every queued task of this shape fails: infeasible or unstartable.
            let mut st = self.state.lock();
            let tasks: Vec<Id> = st.queues.get_mut(&key).map(|q| {
                q.leases_requested = 0;
                q.ready.drain(..).collect()
            }).unwrap_or_default();
            for t in tasks {
                let err = if reply.infeasible {
                    Error::Infeasible { task: crate::TaskId(t), demand: reply.error.clone() }
                } else {
                    Error::Connection(reply.error.clone())
                };
                let error_type = if reply.infeasible { "infeasible" } else { "worker_start_failed" };
                self.fail_task_final_locked(&mut st, t, err, error_type, &reply.error, None);
            }
            drop(st);
            self.ready.notify_all();
            return;
        }
        let Ok(worker) = <Id>::try_from(reply.worker_id.as_slice()) else { return };
        let conn = match self.peer(&reply.address) {
            Ok(c) => c,
            Err(_) => {
                // It died between the grant and our connect; its reaper will tell the node.
                let mut st = self.state.lock();
                if let Some(q) = st.queues.get_mut(&key) {
                    q.leases_requested = 0;
                }
                self.dispatch_locked(&mut st, &key);
                return;
            }
        };
        *conn.worker.lock() = Some(worker);
        let mut st = self.state.lock();
        let Some(q) = st.queues.get_mut(&key) else { return };
        q.leases_requested = 0;
        q.workers.push(worker);
        st.leased.insert(worker, Leased { conn, key: key.clone(), in_flight: HashMap::new(), in_flight_bytes: 0, idle_since: Some(Instant::now()) });
        self.dispatch_locked(&mut st, &key);
        let more = st.queues.get(&key).is_some_and(|q| !q.ready.is_empty());
        if more {
            // Everything leased is full and work remains: ask for one more worker.
            let q = st.queues.get_mut(&key).unwrap();
            if q.leases_requested == 0 {
                q.leases_requested = 1;
                let demand = q.demand.clone();
                let first = q.ready[0];
                self.request_lease(&mut st, &key, demand, first);
            }
        }
    }

    fn task_results(self: &Arc<Self>, worker: Id, results: Vec<rayr_proto::TaskResult>) {
        let mut st = self.state.lock();
        for r in results {
            self.task_result_locked(&mut st, worker, r);
        }
        // Refill the worker's pipeline once for the whole batch: one write.
        if let Some(key) = st.leased.get(&worker).map(|l| l.key.clone()) {
            self.dispatch_locked(&mut st, &key);
            if let Some(l) = st.leased.get_mut(&worker)
                && l.in_flight.is_empty() {
                    l.idle_since = Some(Instant::now());
                }
        }
        drop(st);
        self.ready.notify_all();
    }

    fn task_result_locked(self: &Arc<Self>, st: &mut State, worker: Id, r: rayr_proto::TaskResult) {
        let Ok(task) = <Id>::try_from(r.task_id.as_slice()) else { return };
        let finished_event: Option<Id> = r.finished_event.as_slice().try_into().ok();
        if let Some(l) = st.leased.get_mut(&worker)
            && let Some(bytes) = l.in_flight.remove(&task) {
                l.in_flight_bytes -= bytes;
            }
        let attempt_matches = st.tasks.get(&task).is_some_and(|t| t.spec.attempt == r.attempt);
        if attempt_matches {
            match r.outcome {
                Some(rayr_proto::task_result::Outcome::InlineValue(b)) => {
                    self.finish_task_locked(st, task, Slot::Inline(b.into(), crate::codec::POSTCARD), finished_event);
                }
                Some(rayr_proto::task_result::Outcome::Shm(loc)) => {
                    let slot = Slot::Shm { offset: loc.offset, size: loc.size, format: loc.format };
                    self.finish_task_locked(st, task, slot, finished_event);
                }
                Some(rayr_proto::task_result::Outcome::Error(err)) => {
                    self.task_error_locked(st, task, err, finished_event);
                }
                None => {}
            }
        }
    }

    fn task_error_locked(self: &Arc<Self>, st: &mut State, task: Id, err: TaskError, cause: Option<Id>) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        let retry = t.retry_exceptions && err.kind != "bad_argument" && t.spec.attempt < t.spec.max_retries;
        if retry {
            let reason = format!("{} in attempt {}: {}", err.kind, t.spec.attempt, err.message);
            self.retry_locked(st, task, reason, cause);
            return;
        }
        let e = Error::TaskFailed { task: crate::TaskId(task), message: err.message.clone(), backtrace: err.backtrace.clone() };
        self.finish_task_locked(st, task, Slot::Failed(e), cause);
    }

    fn retry_locked(self: &Arc<Self>, st: &mut State, task: Id, reason: String, cause: Option<Id>) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        t.spec.attempt += 1;
        t.worker = None;
        if self.record_events {
            let mut e = self.event(EventKind::TaskRetried);
            e.task_id = task.to_vec();
            if let Some(c) = cause {
                e.cause = c.to_vec();
            }
            e.detail = Some(event::Detail::Task(TaskDetail {
                function: t.spec.function.clone(),
                attempt: t.spec.attempt,
                max_retries: t.spec.max_retries,
                reason,
                ..Default::default()
            }));
            t.last_event = self.record(e);
        }
        self.enqueue_locked(st, task);
    }

    /// Fails a task for good from the submitter's side (the worker could not report it),
    /// recording TASK_FAILED.
    pub fn fail_task_final_locked(
        self: &Arc<Self>,
        st: &mut State,
        task: Id,
        err: Error,
        error_type: &str,
        message: &str,
        cause: Option<Id>,
    ) {
        let mut failed = None;
        if let Some(t) = st.tasks.get(&task) {
            let mut e = self.event(EventKind::TaskFailed);
            e.task_id = task.to_vec();
            if let Some(w) = t.worker {
                e.worker_id = w.to_vec();
            }
            e.cause = cause.unwrap_or(t.last_event).to_vec();
            e.detail = Some(event::Detail::Task(TaskDetail {
                function: t.spec.function.clone(),
                attempt: t.spec.attempt,
                max_retries: t.spec.max_retries,
                error: message.to_string(),
                r#final: true,
                error_type: error_type.to_string(),
                ..Default::default()
            }));
            failed = Some(self.record(e));
        }
        self.finish_task_locked(st, task, Slot::Failed(err), failed);
    }

    /// A task is done for good: its return object gets `slot`, its arguments are released.
    pub fn finish_task_locked(self: &Arc<Self>, st: &mut State, task: Id, slot: Slot, cause: Option<Id>) {
        let Some(t) = st.tasks.remove(&task) else { return };
        if t.worker.is_none() {
            // Never pushed, so it may still wait in its queue (cancelled, or failed before
            // dispatch). Tasks that ran are not queued: no O(queue) scan on the hot path.
            if let Some(q) = st.queues.get_mut(&t.key) {
                q.ready.retain(|x| *x != task);
            }
        }
        let ret: Id = t.spec.return_id.as_slice().try_into().unwrap_or([0; 16]);
        self.object_created(st, ret, slot, Some(task), cause);
        for id in t.owned_args {
            if let Some(o) = st.owned.get_mut(&id) {
                o.submitted = o.submitted.saturating_sub(1);
                if !o.referenced() && !matches!(o.slot, Slot::Pending) {
                    self.free_locked(st, id, "the last task using it finished");
                }
            }
        }
        for id in t.borrowed_args {
            self.release_borrowed_locked(st, id);
        }
    }

    fn dependency_ready(self: &Arc<Self>, st: &mut State, task: Id, dep: Id, slot: &Slot) {
        let Some(t) = st.tasks.get_mut(&task) else { return };
        let mut failed = None;
        t.deps.retain(|&(i, d)| {
            if d != dep {
                return true;
            }
            match slot {
                Slot::Inline(b, _) => t.spec.args[i].arg = Some(rayr_proto::task_arg::Arg::InlineValue(b.to_vec())),
                Slot::Shm { offset, size, format } => {
                    t.spec.args[i].arg = Some(rayr_proto::task_arg::Arg::Shm(ObjectLocation {
                        object_id: dep.to_vec(),
                        offset: *offset,
                        size: *size,
                        format: *format,
                    }))
                }
                Slot::Failed(e) => failed = Some(e.clone()),
                Slot::Pending => return true,
            }
            false
        });
        if let Some(e) = failed {
            let msg = format!("argument {} failed: {e}", hex(&dep));
            self.fail_task_final_locked(st, task, e, "dependency_failed", &msg, None);
            return;
        }
        if st.tasks.get(&task).is_some_and(|t| t.deps.is_empty()) {
            self.enqueue_locked(st, task);
        }
    }

    fn worker_lost(self: &Arc<Self>, worker: Id) {
        let tasks: Vec<Id> = {
            let mut st = self.state.lock();
            let Some(l) = st.leased.remove(&worker) else { return };
            if let Some(q) = st.queues.get_mut(&l.key) {
                q.workers.retain(|w| *w != worker);
            }
            l.in_flight.into_keys().collect()
        };
        if tasks.is_empty() {
            return;
        }
        let (exit_event, detail) = self.worker_exit(worker);
        let mut st = self.state.lock();
        for task in tasks {
            let Some(t) = st.tasks.get(&task) else { continue };
            if t.spec.attempt < t.spec.max_retries {
                let reason = format!("worker {} died: {detail}", hex(&worker));
                self.retry_locked(&mut st, task, reason, exit_event);
            } else {
                let err = Error::WorkerDied { worker: crate::WorkerId(worker), exit: detail.clone() };
                let msg = format!("worker {} died: {detail}; no retries left", hex(&worker));
                self.fail_task_final_locked(&mut st, task, err, "worker_died", &msg, exit_event);
            }
        }
        drop(st);
        self.ready.notify_all();
    }

    /// How a worker ended, from its node agent (waiting briefly for the reap).
    pub fn worker_exit(&self, worker: Id) -> (Option<Id>, String) {
        let body = client_message::Body::WorkerExit(rayr_proto::WorkerExitQuery { worker_id: worker.to_vec(), wait_ms: 3000 });
        match self.node_conn.call(body) {
            Ok(node_message::Body::WorkerExit(r)) if r.exited => {
                let exit = r.exit.unwrap_or_default();
                let pid = exit.pid;
                (r.exit_event.as_slice().try_into().ok(), format!("pid {pid} {}", exit.detail))
            }
            _ => (None, "the connection to it closed (its exit is not known to this node)".to_string()),
        }
    }

    pub fn shutdown(self: &Arc<Self>, reason: &str) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut st = self.state.lock();
            let workers: Vec<Id> = st.leased.keys().copied().collect();
            for w in workers {
                self.return_lease_locked(&mut st, w);
            }
        }
        self.flush_events();
        if self.is_driver {
            let _ = self.node_conn.send(0, client_message::Body::Disconnect(rayr_proto::Disconnect { reason: reason.to_string() }));
        }
        let _ = self.node_conn.write.lock().shutdown(std::net::Shutdown::Both);
        // Wake our accept loop so it exits, then remove our socket.
        let _ = UnixStream::connect(&self.address);
        let _ = std::fs::remove_file(&self.address);
    }
}

/// Appends `PeerMessage { push: spec }` as a frame without cloning the spec.
fn encode_push_frame(spec: &TaskSpec, buf: &mut Vec<u8>) {
    use rayr_proto::Message;
    let spec_len = spec.encoded_len();
    let body_len = 1 + prost::encoding::encoded_len_varint(spec_len as u64) + spec_len;
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(spec_len as u64, buf);
    spec.encode_raw(buf);
}

/// An owned object's value as a reply to a remote reader.
fn value_message(req: u64, id: Id, slot: &Slot) -> PeerMessage {
    use rayr_proto::object_value::Value;
    let value = match slot {
        Slot::Inline(b, _) => Value::InlineValue(b.to_vec()),
        Slot::Shm { offset, size, format } => {
            Value::Shm(ObjectLocation { object_id: id.to_vec(), offset: *offset, size: *size, format: *format })
        }
        Slot::Failed(e) => Value::Failure(crate::codec::encode(e).unwrap_or_default()),
        Slot::Pending => Value::Pending(true),
    };
    PeerMessage {
        req_id: req,
        body: Some(peer_message::Body::Value(rayr_proto::ObjectValue { object_id: id.to_vec(), value: Some(value) })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayr_proto::Message;

    #[test]
    fn buffered_events_travel_as_one_client_message() {
        let buf = EventBuffer::new();
        let take = |buf: &EventBuffer| {
            let mut got = None;
            buf.flush_with(|slices| {
                let mut all = Vec::new();
                write_all_vectored(&mut all, slices).unwrap();
                got = Some(all);
            });
            got
        };
        assert!(take(&buf).is_none(), "nothing buffered, nothing sent");
        let prefix = Event { source_worker: vec![7; 16], ..Default::default() }.encode_to_vec();
        for kind in [EventKind::TaskSubmitted, EventKind::TaskScheduled] {
            buf.push_with_prefix(&prefix, &Event { id: vec![1; 16], kind: kind as i32, ..Default::default() });
        }
        std::thread::scope(|s| {
            s.spawn(|| buf.push_with_prefix(&prefix, &Event { kind: EventKind::TaskStarted as i32, ..Default::default() }));
        });
        let frame = take(&buf).unwrap();
        let (body, used) = rayr_proto::split_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let Some(client_message::Body::Events(batch)) = ClientMessage::decode(body).unwrap().body else {
            panic!("not an event batch")
        };
        assert_eq!(batch.count, 3);
        let mut kinds = Vec::new();
        let mut rest = batch.frames.as_slice();
        while let Some((ev, used)) = rayr_proto::split_frame(rest).unwrap() {
            let ev = Event::decode(ev).unwrap();
            assert_eq!(ev.source_worker, vec![7; 16], "the prefix is part of every event");
            kinds.push(ev.kind);
            rest = &rest[used..];
        }
        kinds.sort();
        assert_eq!(kinds, vec![10, 11, 12]);
        assert!(take(&buf).is_none(), "taken once");
    }
}
