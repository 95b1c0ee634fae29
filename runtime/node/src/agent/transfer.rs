//! Objects moving between nodes' stores.
//!
//! A reader that needs an object held in another node's store asks its own agent
//! (`PullObject`). The agent copies it into its store once, however many readers ask at
//! once (they wait on the same pull), and pins the copy for each reader until it sends
//! `ReleaseCopies`. The copy comes from the holding node's agent over gRPC (the
//! `ObjectTransfer` service, on TCP at `--object-manager-port`) as a stream of chunks,
//! each written straight into the store where the object will live.
//!
//! Copies are secondary: the owner learns of each one from its reader and frees them with
//! the object (`FreeCopies`, forwarded here to the nodes that hold them). An unpinned copy
//! stays cached for the next reader of this node, and is the first thing dropped when the
//! store needs room (OBJECT_EVICTED); primaries never are.
//!
//! A range being streamed to another node is not reused until the stream ends: freeing it
//! meanwhile only marks it (`Store::free_range`).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Weak};

use std::time::{Duration, Instant};

use rayr_logs::{Id, hex};
use rayr_proto::object_transfer_client::ObjectTransferClient;
use rayr_proto::object_transfer_server::{ObjectTransfer, ObjectTransferServer};
use rayr_proto::{EventKind, ObjectChunk, ObjectDetail, ObjectEndReason, PullReply, event, node_message};
use tonic::{Request, Response, Status};

use super::store::Store;
use super::{Agent, Conn, id_of};

/// Bytes per chunk on the wire: big enough that per-message costs vanish against the copy,
/// small enough that a chunk is written to the store while the next one is in flight.
const CHUNK: usize = 1 << 20;
/// HTTP/2 flow-control windows: the default 64 KiB would cap a stream at a fraction of
/// loopback speed.
const STREAM_WINDOW: u32 = 32 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
const MAX_FRAME: u32 = 1 << 20;
/// A source that sends nothing for this long (paused, partitioned) fails the attempt.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a pull keeps retrying a source that does not answer while the head still
/// counts it as a member (it may be slow, or about to be declared dead).
const PULL_PATIENCE: Duration = Duration::from_secs(60);

/// Why a pull failed.
enum PullError {
    /// The source answered that it does not hold the object.
    NotThere(String),
    /// The source could not be reached, or the stream broke.
    Transport(String),
    /// The source node is gone: (what happened, why the head says it is gone, NODE_DIED).
    SourceGone(String, String, Vec<u8>),
}

const FREED_BY_OWNER: &str = "its owner freed it";

/// A copy of another node's object in this node's store.
pub(super) struct Copy {
    pub offset: u64,
    pub size: u64,
    /// The readers (client ids) it is pinned for, with how many pulls each was answered
    /// (each is released once); unpinned copies may be evicted.
    pub pins: HashMap<Id, u32>,
    pub last_used: Instant,
    /// The owner freed the object while a reader still pinned it: dropped when unpinned.
    pub freed: bool,
    /// The object's owner (as the reader said): its end drops the copy.
    pub owner: Option<Id>,
}

/// A pull in flight, and the readers waiting for it.
pub(super) struct Pull {
    waiters: Vec<(Arc<Conn>, u64, Id)>,
    owner: Option<Id>,
    /// The owner freed the object while it was being pulled: the copy is dropped once its
    /// readers are done.
    freed: bool,
}

/// The transfer side of a running agent: its address, the runtime its gRPC server and
/// pulls run on, and one channel per source node.
pub(super) struct Transfer {
    pub address: String,
    pub(super) rt: tokio::runtime::Handle,
    channels: parking_lot::Mutex<HashMap<String, tonic::transport::Channel>>,
}

/// Binds `address` (IP:PORT, port 0 for any) and serves `ObjectTransfer` on a runtime the
/// caller keeps (dropped with the node). Returns the bound address.
pub(super) fn start(agent: &Arc<Agent>, address: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind the object transfer address {address}: {e}")))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("rayr-transfer").enable_all().build()?;
    let service = Service(Arc::downgrade(agent));
    let logs_service = super::logs::service(agent);
    let incoming = {
        let _guard = rt.enter();
        tokio_stream::wrappers::TcpListenerStream::new(tokio::net::TcpListener::from_std(listener)?)
    };
    rt.spawn(async move {
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .add_service(ObjectTransferServer::new(service).max_encoding_message_size(2 * CHUNK))
            .add_service(logs_service);
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!("the object transfer server stopped: {e}");
        }
    });
    let _ = agent.transfer.set(Transfer { address: bound, rt: rt.handle().clone(), channels: Default::default() });
    Ok(rt)
}

impl Agent {
    /// Allocates `size` bytes, evicting unpinned copies (least recently used first) when
    /// the store is full. `for_what` is recorded with each eviction.
    pub(super) fn allocate_evicting(&self, st: &mut Store, size: u64, for_what: &str) -> Option<u64> {
        loop {
            if let Some(offset) = st.alloc.allocate(size) {
                return Some(offset);
            }
            let victim = st
                .copies
                .iter()
                .filter(|(_, c)| c.pins.is_empty())
                .min_by_key(|(_, c)| c.last_used)
                .map(|(id, _)| *id)?;
            let c = st.copies.remove(&victim).unwrap();
            st.free_range(c.offset, c.size);
            self.counters.evictions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reason = format!(
                "the store needed {size} bytes for {for_what} ({} of {} in use): secondary copies go first",
                st.alloc.used(),
                st.alloc.capacity()
            );
            self.record_copy_dropped(victim, c.size, ObjectEndReason::StoreFull, reason);
        }
    }

    fn record_copy_dropped(&self, id: Id, size: u64, end: ObjectEndReason, reason: String) {
        let mut e = self.event(EventKind::ObjectEvicted);
        e.object_id = id.to_vec();
        e.detail = Some(event::Detail::Object(ObjectDetail { size, location: "shm".into(), reason, end: end as i32, ..Default::default() }));
        self.record(&e);
    }

    /// A reader (`client`) needs `id`, held by node `from`: answered on `conn` with where
    /// the copy is here, pinned for the reader.
    pub(super) fn pull_object(self: &Arc<Self>, conn: &Arc<Conn>, req: u64, client: Option<Id>, p: rayr_proto::PullObject) {
        let reply = |r: PullReply| conn.reply(req, node_message::Body::Pulled(PullReply { object_id: p.object_id.clone(), ..r }));
        let failed = |error: String| reply(PullReply { error, ..Default::default() });
        let Some(client) = client else { return failed("pull: register with the node agent first".into()) };
        let (Some(id), Some(from)) = (id_of(&p.object_id), id_of(&p.from_node)) else {
            return failed("pull: object and node ids must be 16 bytes".into());
        };
        let mut st = self.store.lock();
        if let Some(c) = st.copies.get_mut(&id) {
            *c.pins.entry(client).or_insert(0) += 1;
            c.last_used = Instant::now();
            let offset = c.offset;
            drop(st);
            return reply(PullReply { offset, ..Default::default() });
        }
        if let Some(o) = st.objects.get(&id) {
            // It is in this store after all (a result stored here for its owner).
            let offset = o.offset;
            drop(st);
            return reply(PullReply { offset, ..Default::default() });
        }
        // Readers of the same object from the same node share one pull. (One from another
        // node, which its owner named after the first was lost, is another pull.)
        if let Some(pull) = st.pulls.get_mut(&(id, from)) {
            pull.waiters.push((conn.clone(), req, client));
            return;
        }
        if from == self.cfg.node_id {
            drop(st);
            let error = format!("object {} is not in this node's store (freed, or its owner died)", hex(&id));
            return reply(PullReply { error, not_held: true, ..Default::default() });
        }
        let Some(transfer) = self.transfer.get() else {
            drop(st);
            return failed("this node serves no object transfers: start it with `rayr start` to read objects of other nodes".into());
        };
        let Some(offset) = self.allocate_evicting(&mut st, p.size, &format!("a copy of object {}", hex(&id))) else {
            let error = format!(
                "the object store of node {} is full: a copy of object {} needs {} bytes, {} of {} bytes are in use by primaries and pinned copies; free refs you no longer need or start the node with a larger --object-store-memory",
                hex(&self.cfg.node_id),
                hex(&id),
                p.size,
                st.alloc.used(),
                st.alloc.capacity()
            );
            drop(st);
            return failed(error);
        };
        st.pulls.insert((id, from), Pull { waiters: vec![(conn.clone(), req, client)], freed: false, owner: id_of(&p.owner) });
        drop(st);
        let agent = self.clone();
        let size = p.size;
        transfer.rt.spawn(async move {
            let started = Instant::now();
            let (outcome, source_ip) = agent.pull_patiently(id, from, offset, size).await;
            agent.pull_done(id, from, &source_ip, offset, size, started.elapsed(), outcome);
        });
    }

    /// Where node `from` serves transfers, as this node's view of the cluster says:
    /// Ok(Some((address, ip))), Ok(None) while it is not in the view (a node that just
    /// joined, or after a head restart), Err when the head said it is gone or it serves none.
    fn source_of(&self, from: Id) -> Result<Option<(String, String)>, PullError> {
        if let Some((reason, died)) = self.gone.lock().get(&from).cloned() {
            return Err(PullError::SourceGone("the head declared it gone".into(), reason, died));
        }
        match self.cluster.lock().iter().find(|n| n.node_id == from) {
            Some(n) if n.transfer_address.is_empty() => {
                Err(PullError::Transport(format!("node {} serves no object transfers (it is not part of a multi-node cluster)", hex(&from))))
            }
            Some(n) => Ok(Some((n.transfer_address.clone(), n.address.clone()))),
            None => Ok(None),
        }
    }

    /// Pulls until it works, the source says it lacks the object, or the source is gone
    /// (the head says so) or unreachable for `PULL_PATIENCE`. Returns the outcome and the
    /// source's IP (for the record).
    async fn pull_patiently(&self, id: Id, from: Id, offset: u64, size: u64) -> (Result<(), PullError>, String) {
        let deadline = Instant::now() + PULL_PATIENCE;
        let mut ip = String::new();
        loop {
            let why = match self.source_of(from) {
                Err(e) => return (Err(e), ip),
                Ok(None) => format!("node {} is not in this node's view of the cluster", hex(&from)),
                Ok(Some((source, at))) => {
                    ip = at;
                    match self.receive(id, &source, offset, size).await {
                        Ok(()) => return (Ok(()), ip),
                        Err(PullError::Transport(why)) => {
                            // A new connection next time: this one may be broken.
                            if let Some(t) = self.transfer.get() {
                                t.channels.lock().remove(&source);
                            }
                            why
                        }
                        Err(e) => return (Err(e), ip),
                    }
                }
            };
            if let Some((reason, died)) = self.gone.lock().get(&from).cloned() {
                return (Err(PullError::SourceGone(why, reason, died)), ip);
            }
            if Instant::now() > deadline {
                return (Err(PullError::Transport(format!("{why} (still failing after {} s)", PULL_PATIENCE.as_secs()))), ip);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn receive(&self, id: Id, source: &str, offset: u64, size: u64) -> Result<(), PullError> {
        let channel = self.channel(source).await.map_err(PullError::Transport)?;
        let mut client = ObjectTransferClient::new(channel).max_decoding_message_size(2 * CHUNK);
        let request = rayr_proto::PullRequest { object_id: id.to_vec(), requester_node: self.cfg.node_id.to_vec() };
        let mut stream = match tokio::time::timeout(CHUNK_TIMEOUT, client.pull(request)).await {
            Err(_) => return Err(PullError::Transport(format!("node at {source} did not answer for {} s", CHUNK_TIMEOUT.as_secs()))),
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => return Err(PullError::NotThere(s.message().to_string())),
            Ok(Err(s)) => return Err(PullError::Transport(s.message().to_string())),
        };
        let mut got = 0u64;
        loop {
            let chunk = match tokio::time::timeout(CHUNK_TIMEOUT, stream.message()).await {
                Err(_) => return Err(PullError::Transport(format!("node at {source} sent nothing for {} s", CHUNK_TIMEOUT.as_secs()))),
                Ok(Err(s)) => return Err(PullError::Transport(s.message().to_string())),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            let len = chunk.data.len() as u64;
            if chunk.total_size != size || chunk.offset != got || got + len > size {
                return Err(PullError::NotThere(format!(
                    "the source sent a chunk at {} of {len} bytes for an object of {} (expected {size} bytes, {got} received)",
                    chunk.offset, chunk.total_size
                )));
            }
            // SAFETY: `[offset, offset + size)` was allocated for this pull and nothing
            // else reads or writes it until `pull_done` publishes it.
            unsafe { self.arena.bytes_mut(offset + got, len) }.copy_from_slice(&chunk.data);
            got += len;
        }
        if got != size {
            return Err(PullError::Transport(format!("the stream ended after {got} of {size} bytes")));
        }
        Ok(())
    }

    pub(super) async fn channel(&self, address: &str) -> Result<tonic::transport::Channel, String> {
        let transfer = self.transfer.get().ok_or("no transfer runtime")?;
        if let Some(c) = transfer.channels.lock().get(address) {
            return Ok(c.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            // Data arrives in frames this large, not 16 KiB ones: fewer per-frame costs.
            .max_frame_size(Some(MAX_FRAME))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| format!("cannot reach node at {address}: {e}"))?;
        transfer.channels.lock().insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    #[allow(clippy::too_many_arguments)]
    fn pull_done(&self, id: Id, from: Id, from_ip: &str, offset: u64, size: u64, took: Duration, outcome: Result<(), PullError>) {
        let mut st = self.store.lock();
        let (waiters, freed, owner) = st.pulls.remove(&(id, from)).map(|p| (p.waiters, p.freed, p.owner)).unwrap_or_default();
        match outcome {
            Ok(()) if st.copies.contains_key(&id) || (freed && waiters.is_empty()) => {
                // Another pull (from another node) made the copy first, or nobody wants
                // this one any more: the range goes back.
                st.free_range(offset, size);
                let offset = st.copies.get_mut(&id).map(|c| {
                    for w in &waiters {
                        *c.pins.entry(w.2).or_insert(0) += 1;
                    }
                    c.offset
                });
                drop(st);
                for (conn, req, _) in waiters {
                    let reply = match offset {
                        Some(offset) => PullReply { offset, object_id: id.to_vec(), ..Default::default() },
                        None => PullReply { error: "the object was freed while it was being pulled".into(), object_id: id.to_vec(), ..Default::default() },
                    };
                    conn.reply(req, node_message::Body::Pulled(reply));
                }
            }
            Ok(()) => {
                let mut pins: HashMap<Id, u32> = HashMap::new();
                for w in &waiters {
                    *pins.entry(w.2).or_insert(0) += 1;
                }
                st.copies.insert(id, Copy { offset, size, pins, last_used: Instant::now(), freed, owner });
                self.counters.pulls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.counters.pulled_bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                drop(st);
                let secs = took.as_secs_f64().max(1e-6);
                let mut e = self.event(EventKind::ObjectPulled);
                e.object_id = id.to_vec();
                e.detail = Some(event::Detail::Object(ObjectDetail {
                    size,
                    location: "shm".into(),
                    copy_node: from.to_vec(),
                    reason: format!(
                        "copied from node {} ({from_ip}) in {:.1} ms ({:.2} GB/s) for {} reader(s)",
                        hex(&from),
                        secs * 1e3,
                        size as f64 / secs / 1e9,
                        waiters.len()
                    ),
                    ..Default::default()
                }));
                self.record(&e);
                for (conn, req, _) in waiters {
                    conn.reply(req, node_message::Body::Pulled(PullReply { offset, object_id: id.to_vec(), ..Default::default() }));
                }
            }
            Err(e) => {
                st.free_range(offset, size);
                drop(st);
                let failed = |why: &str| format!("pulling object {} from node {} ({from_ip}) failed: {why}", hex(&id), hex(&from));
                let reply = match e {
                    PullError::NotThere(why) => PullReply { error: failed(&why), not_held: true, ..Default::default() },
                    PullError::Transport(why) => PullReply { error: failed(&why), ..Default::default() },
                    PullError::SourceGone(why, reason, died) => PullReply {
                        error: failed(&format!("{why}; the node is gone: {reason}")),
                        source_gone: true,
                        cause: died,
                        ..Default::default()
                    },
                };
                let reply = PullReply { object_id: id.to_vec(), ..reply };
                for (conn, req, _) in waiters {
                    conn.reply(req, node_message::Body::Pulled(reply.clone()));
                }
            }
        }
    }

    /// `client` no longer reads these copies (they stay cached until freed or evicted).
    pub(super) fn release_copies(&self, client: Id, ids: &[Vec<u8>]) {
        let mut st = self.store.lock();
        let mut dropped = Vec::new();
        for id in ids.iter().filter_map(|b| id_of(b)) {
            let Some(c) = st.copies.get_mut(&id) else { continue };
            if let Some(n) = c.pins.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    c.pins.remove(&client);
                }
            }
            if c.pins.is_empty() && c.freed {
                // Its owner freed it while this reader still held it.
                let c = st.copies.remove(&id).unwrap();
                st.free_range(c.offset, c.size);
                dropped.push((id, c.size));
            }
        }
        drop(st);
        for (id, size) in dropped {
            self.record_copy_dropped(id, size, ObjectEndReason::FreedByOwner, FREED_BY_OWNER.into());
        }
    }

    /// A client is gone: whatever it pinned is unpinned.
    pub(super) fn unpin_copies_of(&self, client: Id) {
        let mut st = self.store.lock();
        // Pulls it waits for pin nothing for it when they end.
        for p in st.pulls.values_mut() {
            p.waiters.retain(|w| w.2 != client);
        }
        let mut ids = Vec::new();
        for (id, c) in &st.copies {
            for _ in 0..c.pins.get(&client).copied().unwrap_or(0) {
                ids.push(id.to_vec());
            }
        }
        drop(st);
        self.release_copies(client, &ids);
    }

    /// The owner freed `id` (which has copies on `nodes`): drops the copy here, and tells
    /// the other nodes to drop theirs.
    pub(super) fn free_copies(self: &Arc<Self>, f: rayr_proto::FreeCopies) {
        let me = self.cfg.node_id.to_vec();
        let mut others = Vec::new();
        for node in &f.nodes {
            if *node == me {
                self.drop_copies(std::slice::from_ref(&f.object_id), ObjectEndReason::FreedByOwner, FREED_BY_OWNER);
            } else if let Some(n) = self.cluster.lock().iter().find(|n| n.node_id == *node && !n.transfer_address.is_empty()) {
                others.push(n.transfer_address.clone());
            }
        }
        let Some(transfer) = self.transfer.get() else { return };
        for address in others {
            let request = rayr_proto::FreeRequest { object_ids: vec![f.object_id.clone()], reason: FREED_BY_OWNER.into() };
            let agent = self.clone();
            transfer.rt.spawn(async move {
                // A node that cannot be reached has gone, and its copies with it.
                if let Ok(channel) = agent.channel(&address).await {
                    let _ = ObjectTransferClient::new(channel).free(request).await;
                }
            });
        }
    }

    fn drop_copies(&self, ids: &[Vec<u8>], end: ObjectEndReason, reason: &str) {
        let mut st = self.store.lock();
        let mut dropped = Vec::new();
        for id in ids.iter().filter_map(|b| id_of(b)) {
            // A primary made here for an owner on another node (its owner recorded the free).
            if let Some(o) = st.objects.remove(&id) {
                st.free_range(o.offset, o.size);
            }
            for ((pulled, _), p) in st.pulls.iter_mut() {
                if *pulled == id {
                    p.freed = true;
                }
            }
            let Some(c) = st.copies.get_mut(&id) else { continue };
            if c.pins.is_empty() {
                let c = st.copies.remove(&id).unwrap();
                st.free_range(c.offset, c.size);
                dropped.push((id, c.size));
            } else {
                c.freed = true;
            }
        }
        drop(st);
        for (id, size) in dropped {
            self.record_copy_dropped(id, size, end, reason.to_string());
        }
    }
    /// The head's list of departed nodes: objects here owned on a node that just left are
    /// lost (OBJECT_LOST, caused by its NODE_DIED when it died).
    pub(super) fn nodes_gone(&self, nodes: Vec<rayr_proto::GoneNode>) {
        let mut fresh = Vec::new();
        {
            let mut gone = self.gone.lock();
            for n in nodes {
                let Some(id) = id_of(&n.node_id) else { continue };
                if let std::collections::hash_map::Entry::Vacant(e) = gone.entry(id) {
                    fresh.push((id, n.reason.clone(), n.died_event.clone()));
                    e.insert((n.reason, n.died_event));
                }
            }
        }
        for (node, reason, died) in fresh {
            // Its clients drop what they hold there now: a frozen or cut-off node's
            // connections stay open, and would hold their tasks and calls for good.
            let msg = rayr_proto::NodeMessage {
                req_id: 0,
                body: Some(rayr_proto::node_message::Body::NodeGone(rayr_proto::NodeGone {
                    node_id: node.to_vec(),
                    reason: reason.clone(),
                    died_event: died.clone(),
                })),
            };
            let conns: Vec<Arc<Conn>> = self.client_conns.lock().iter().filter_map(|c| c.upgrade()).collect();
            for c in conns {
                c.send(&msg);
            }
            let mut st = self.store.lock();
            let lost: Vec<Id> = st.objects.iter().filter(|(_, o)| o.owner_node == Some(node)).map(|(id, _)| *id).collect();
            let mut events = Vec::new();
            for id in lost {
                let o = st.objects.remove(&id).unwrap();
                st.free_range(o.offset, o.size);
                let mut e = self.event(EventKind::ObjectLost);
                e.object_id = id.to_vec();
                e.worker_id = o.owner.to_vec();
                e.cause = died.clone();
                e.detail = Some(event::Detail::Object(ObjectDetail {
                    size: o.size,
                    location: "shm".into(),
                    reason: format!("its owner's node {} is gone ({reason}): nobody can read or free it any more", hex(&node)),
                    end: ObjectEndReason::OwnerNodeGone as i32,
                    ..Default::default()
                }));
                events.push(e);
            }
            drop(st);
            for e in &events {
                self.record(e);
            }
        }
    }

    /// A process of this node ended: other nodes drop what it owned in their stores.
    pub(super) fn announce_owner_gone(self: &Arc<Self>, owner: Id) {
        let Some(transfer) = self.transfer.get() else { return };
        let me = self.cfg.node_id.to_vec();
        let others: Vec<String> =
            self.cluster.lock().iter().filter(|n| n.node_id != me && !n.transfer_address.is_empty()).map(|n| n.transfer_address.clone()).collect();
        for address in others {
            let agent = self.clone();
            let request = rayr_proto::OwnersGoneRequest {
                owners: vec![owner.to_vec()],
                reason: format!("its owner, worker {}, exited", hex(&owner)),
                node_id: self.cfg.node_id.to_vec(),
            };
            transfer.rt.spawn(async move {
                if let Ok(channel) = agent.channel(&address).await {
                    let _ = ObjectTransferClient::new(channel).owners_gone(request).await;
                }
            });
        }
    }

    /// Processes of node `node` ended: what they owned here is dropped. Only objects
    /// recorded as owned from that node, by those processes: a caller cannot drop what
    /// processes of this node or of other nodes own.
    fn owners_gone(&self, node: Id, owners: &[Vec<u8>], reason: &str) {
        let owners: HashSet<Id> = owners.iter().filter_map(|b| id_of(b)).collect();
        // Copies of their objects go too (pinned ones once their readers are done).
        let copies: Vec<Vec<u8>> =
            self.store.lock().copies.iter().filter(|(_, c)| c.owner.is_some_and(|o| owners.contains(&o))).map(|(id, _)| id.to_vec()).collect();
        if !copies.is_empty() {
            self.drop_copies(&copies, ObjectEndReason::OwnerDied, reason);
        }
        let mut st = self.store.lock();
        let lost: Vec<Id> =
            st.objects.iter().filter(|(_, o)| o.owner_node == Some(node) && owners.contains(&o.owner)).map(|(id, _)| *id).collect();
        let mut events = Vec::new();
        for id in lost {
            let o = st.objects.remove(&id).unwrap();
            st.free_range(o.offset, o.size);
            let mut e = self.event(EventKind::ObjectLost);
            e.object_id = id.to_vec();
            e.worker_id = o.owner.to_vec();
            e.detail = Some(event::Detail::Object(ObjectDetail {
                size: o.size,
                location: "shm".into(),
                reason: reason.to_string(),
                end: ObjectEndReason::OwnerDied as i32,
                ..Default::default()
            }));
            events.push(e);
        }
        drop(st);
        for e in &events {
            self.record(e);
        }
    }
}

/// A range of the store sent as a chunk without copying it out first. While one exists,
/// the object's range counts as being served.
struct StoreSlice {
    agent: Arc<Agent>,
    object_offset: u64,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a read-only view of sealed store bytes, kept mapped by the `Arc<Agent>`.
unsafe impl Send for StoreSlice {}

impl StoreSlice {
    fn new(agent: Arc<Agent>, object_offset: u64, at: u64, len: u64) -> StoreSlice {
        *agent.store.lock().serving.entry(object_offset).or_insert(0) += 1;
        // SAFETY: within the object, which is sealed and (being served) not freed.
        let bytes = unsafe { agent.arena.bytes(object_offset + at, len) };
        StoreSlice { ptr: bytes.as_ptr(), len: bytes.len(), agent, object_offset }
    }
}

impl AsRef<[u8]> for StoreSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `new`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for StoreSlice {
    fn drop(&mut self) {
        self.agent.store.lock().end_serving(self.object_offset);
    }
}

/// The gRPC face of the agent's store. Holds the agent weakly: a stopped node's server
/// answers nothing.
struct Service(Weak<Agent>);

type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ObjectChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ObjectTransfer for Service {
    type PullStream = ChunkStream;

    async fn pull(&self, request: Request<rayr_proto::PullRequest>) -> Result<Response<ChunkStream>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        let id = id_of(&r.object_id).ok_or_else(|| Status::invalid_argument("pull: an object id is 16 bytes"))?;
        let (offset, size) = {
            let mut st = agent.store.lock();
            let found = match st.objects.get(&id) {
                Some(o) => Some((o.offset, o.size)),
                None => st.copies.get_mut(&id).map(|c| {
                    c.last_used = Instant::now();
                    (c.offset, c.size)
                }),
            };
            let (offset, size) = found.ok_or_else(|| {
                Status::not_found(format!(
                    "object {} is not in the store of node {} (freed, or its owner died)",
                    hex(&id),
                    hex(&agent.cfg.node_id)
                ))
            })?;
            *st.serving.entry(offset).or_insert(0) += 1;
            (offset, size)
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let len = (size - sent).min(CHUNK as u64);
                // The chunk is a view of the store: the range stays marked as served (not
                // reused) until the last chunk made from it is dropped, after encoding.
                let data = bytes::Bytes::from_owner(StoreSlice::new(agent.clone(), offset, sent, len));
                if tx.send(Ok(ObjectChunk { offset: sent, data, total_size: size })).await.is_err() {
                    break; // the reader went away
                }
                sent += len;
                if sent >= size {
                    break;
                }
            }
            agent.store.lock().end_serving(offset);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn free(&self, request: Request<rayr_proto::FreeRequest>) -> Result<Response<rayr_proto::FreeReply>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        let reason = if r.reason.is_empty() { FREED_BY_OWNER.to_string() } else { r.reason };
        agent.drop_copies(&r.object_ids, ObjectEndReason::FreedByOwner, &reason);
        Ok(Response::new(rayr_proto::FreeReply {}))
    }

    async fn binary_of(&self, request: Request<rayr_proto::BinaryOfRequest>) -> Result<Response<rayr_proto::BinaryOfReply>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let job = request.into_inner().job_id;
        let (sha256, size) = tokio::task::spawn_blocking(move || agent.binary_of(&job)).await.map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(rayr_proto::BinaryOfReply { sha256, size }))
    }

    type FetchBinaryStream = ChunkStream;

    async fn fetch_binary(&self, request: Request<rayr_proto::FetchBinaryRequest>) -> Result<Response<ChunkStream>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let hash = request.into_inner().sha256;
        let path = agent.binary_by_hash(&hash).ok_or_else(|| Status::not_found(format!("no binary with sha256 {hash} here")))?;
        let rx = super::binaries::file_chunks(path);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn owners_gone(&self, request: Request<rayr_proto::OwnersGoneRequest>) -> Result<Response<rayr_proto::FreeReply>, Status> {
        let agent = self.0.upgrade().ok_or_else(|| Status::unavailable("the node agent is stopping"))?;
        let r = request.into_inner();
        let node = id_of(&r.node_id).ok_or_else(|| Status::invalid_argument("owners gone: a node id is 16 bytes"))?;
        agent.owners_gone(node, &r.owners, &r.reason);
        Ok(Response::new(rayr_proto::FreeReply {}))
    }
}
