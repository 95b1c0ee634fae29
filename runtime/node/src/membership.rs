//! A node's membership in its cluster: how the agent tells the head about itself and
//! learns the cluster from it. `rayr start` wires every node through here, one of two ways
//! by where the head runs:
//!
//! - **joined** ([`join`], `rayr start --address`): the head runs elsewhere. The node
//!   registers with it, beats every period with what it has free, ships its event log to
//!   it (`Head.AppendEvents`) when the head does not share its disk, and decides when it
//!   must go. The head being unreachable is not the node's death: its workers keep running
//!   and it keeps trying, for `head_timeout`; after that it exits saying so. A head that
//!   answers "unknown" (it restarted) gets a new registration; one that answers "dead" (it
//!   declared this node dead after missed beats) is obeyed: the node exits, since what it
//!   held has been declared lost. Leaving on purpose unregisters ([`Joined::leave`]).
//! - **the head's own node** ([`follow_in_process`], `rayr start --head`, and the embedded
//!   cluster of `rayr::init()` without one): the head's membership is in this process; the
//!   node needs no heartbeat, and each period it tells the head what it has free and takes
//!   the head's view of the cluster and of the nodes gone, in process.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rayr_logs::{Id, hex};
use rayr_proto::head_client::HeadClient;
use rayr_proto::heartbeat_reply::Standing;
use rayr_proto::{GoneNode, HeartbeatRequest, NodeEndReason, NodeView, RegisterNodeRequest, UnregisterNodeRequest};
use tonic::transport::{Channel, Endpoint};

use crate::resources::Resources;
use crate::{NodeHandle, ResourceProbe};

/// How long to wait for a head to answer before deciding it is not there.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// What a joining node tells the head about itself.
pub struct Joining {
    pub head: String,
    pub node_id: Id,
    pub address: String,
    pub resources: HashMap<String, f64>,
    pub session_dir: String,
    pub agent_socket: String,
    /// Where other nodes pull objects from this one.
    pub transfer_address: String,
    pub labels: HashMap<String, String>,
    pub metrics_address: String,
    /// How long the head may be unreachable before the node gives up.
    pub head_timeout: Duration,
}

/// Why the membership loop ended (the node then stops, recording this as NODE_STOPPED's
/// reason).
type Ending = Arc<Mutex<Option<(NodeEndReason, String)>>>;

/// A node joined to a head elsewhere (see [`join`]).
pub struct Joined {
    head: String,
    node_id: Id,
    ending: Ending,
    shipper: Option<EventShipper>,
}

/// Joins the cluster whose head is at `j.head`: starts the membership thread and, with
/// `ship_events`, the event shipper. When the membership decides the node must go, it
/// says why in its log and asks this process to stop (SIGTERM to itself: the process
/// waits for it, and then calls [`Joined::leave`]).
pub fn join(node: &NodeHandle, j: Joining, ship_events: bool) -> io::Result<Joined> {
    let (head, node_id) = (j.head.clone(), j.node_id);
    let ending: Ending = Default::default();
    let (probe, end) = (node.resource_probe(), ending.clone());
    probe.set_head_address(&head);
    std::thread::Builder::new().name("rayr-membership".into()).spawn(move || run(j, probe, end))?;
    let shipper = if ship_events { Some(EventShipper::start(&head, node_id, node.event_log())?) } else { None };
    Ok(Joined { head, node_id, ending, shipper })
}

impl Joined {
    /// The node leaves the cluster: for why the membership decided it must go, or else
    /// because it was asked to (`asked`: then it unregisters, best effort). The node stops
    /// (NODE_STOPPED, with that reason), and what it recorded last is shipped to the head
    /// when it can be (for 3 s at most). Returns the reason.
    pub fn leave(self, node: NodeHandle, asked: &str) -> String {
        let decided = self.ending.lock().take();
        let (end, reason) = match decided {
            Some(why) => why,
            None => {
                unregister(&self.head, self.node_id, asked);
                (NodeEndReason::AskedToStop, asked.to_string())
            }
        };
        eprintln!("rayr node stopping: {reason}");
        node.shutdown_because(end, &reason);
        if let Some(shipper) = self.shipper {
            // What it recorded last (its NODE_STOPPED) reaches the head too, if it can.
            shipper.finish(Duration::from_secs(3));
        }
        reason
    }
}

/// The head's own node, whose head (at `head_address`) runs in this process: every
/// `period`, `beat` tells the head's membership what the node has free and returns the
/// nodes gone and the live ones, as the head sees them, which the node takes. Until
/// [`Following::stop`] (or the handle is dropped).
pub fn follow_in_process(
    node: &NodeHandle,
    head_address: &str,
    period: Duration,
    mut beat: impl FnMut(Resources) -> (Vec<GoneNode>, Vec<NodeView>) + Send + 'static,
) -> io::Result<Following> {
    let probe = node.resource_probe();
    probe.set_head_address(head_address);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new().name("rayr-head-node".into()).spawn(move || {
        while !stopping.load(Ordering::Acquire) {
            let (gone, view) = beat(probe.available());
            // Gone first: a node leaving the view is in the gone list by then.
            probe.set_gone(gone);
            probe.set_cluster(view);
            std::thread::park_timeout(period);
        }
    })?;
    Ok(Following { stop, thread: Some(thread) })
}

/// The head's own node following its membership (see [`follow_in_process`]).
pub struct Following {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Following {
    /// Stops following (before the node or the head stops, in a process that goes on).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The membership thread: runs until the node must go; then stores why in `ending` and
/// asks this process to stop.
fn run(j: Joining, node: ResourceProbe, ending: Ending) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return leave(&ending, (NodeEndReason::Unspecified, format!("cannot start the membership loop: {e}"))),
    };
    let why = rt.block_on(membership(&j, &node));
    eprintln!("rayr node {}: {}", hex(&j.node_id), why.1);
    leave(&ending, why);
}

fn leave(ending: &Ending, why: (NodeEndReason, String)) {
    ending.lock().get_or_insert(why);
    // To the process, not this thread (which does not take it): the main thread waits for
    // SIGTERM.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM);
}

/// Connects and checks that a head answers there (a stale address may now be someone
/// else's port).
async fn dial(addr: &str) -> Result<HeadClient<Channel>, String> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| format!("`{addr}` is not an address of the form HOST:PORT ({e})"))?;
    let channel = tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect_timeout(DIAL_TIMEOUT).connect())
        .await
        .map_err(|_| format!("no answer within {DIAL_TIMEOUT:?}"))?
        .map_err(|e| error_chain(&e))?;
    // A cluster view of many nodes may pass tonic's 4 MiB default.
    let mut client = HeadClient::new(channel).max_decoding_message_size(256 << 20);
    tokio::time::timeout(DIAL_TIMEOUT * 2, client.cluster_info(rayr_proto::ClusterInfoRequest { quick: true }))
        .await
        .map_err(|_| format!("something listens there but did not answer as a rayr head within {:?}", DIAL_TIMEOUT * 2))?
        .map_err(|s| format!("something listens there but is not a rayr head ({})", s.message()))?;
    Ok(client)
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        source = inner.source();
    }
    s
}

async fn membership(j: &Joining, node: &ResourceProbe) -> (NodeEndReason, String) {
    let mut last_contact = Instant::now();
    'register: loop {
        let mut client = match dial(&j.head).await {
            Ok(c) => c,
            Err(e) => {
                if last_contact.elapsed() > j.head_timeout {
                    return (NodeEndReason::LostHead, format!("lost the head at {} for {} s ({e}): exiting, as configured", j.head, j.head_timeout.as_secs()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let request = RegisterNodeRequest {
            node_id: j.node_id.to_vec(),
            address: j.address.clone(),
            resources: j.resources.clone(),
            labels: j.labels.clone(),
            metrics_address: j.metrics_address.clone(),
            pid: std::process::id(),
            session_dir: j.session_dir.clone(),
            agent_socket: j.agent_socket.clone(),
            transfer_address: j.transfer_address.clone(),
        };
        let reply = match client.register_node(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                if last_contact.elapsed() > j.head_timeout {
                    return (NodeEndReason::RefusedByHead, format!("the head at {} refused every registration for {} s ({}): exiting", j.head, j.head_timeout.as_secs(), s.message()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !reply.error.is_empty() {
            return (NodeEndReason::RefusedByHead, format!("the head refused this node: {}", reply.error));
        }
        node.set_cluster(reply.cluster);
        last_contact = Instant::now();
        let period = Duration::from_millis(reply.heartbeat_period_ms.max(10) as u64);
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let beat = HeartbeatRequest { node_id: j.node_id.to_vec(), available_resources: node.available() };
            match tokio::time::timeout(period * 4, client.heartbeat(beat)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    last_contact = Instant::now();
                    match Standing::try_from(r.standing).unwrap_or(Standing::Ok) {
                        Standing::Ok => {
                            // Gone first: a node leaving the view is in the gone list by then.
                            node.set_gone(r.gone);
                            node.set_cluster(r.cluster);
                        }
                        Standing::Unknown => continue 'register,
                        Standing::Dead => return (NodeEndReason::RefusedByHead, format!("the head declared this node dead ({}): exiting", r.detail)),
                    }
                }
                // Unreachable for now: keep the workers running and keep trying.
                _ if last_contact.elapsed() <= j.head_timeout => {}
                _ => return (NodeEndReason::LostHead, format!("lost the head at {} for {} s: exiting, as configured", j.head, j.head_timeout.as_secs())),
            }
        }
    }
}

/// Tells the head the node leaves on purpose (best effort: the head may be gone).
fn unregister(head: &str, node: Id, reason: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(Ok(mut client)) = tokio::time::timeout(Duration::from_secs(2), dial(head)).await else { return };
        let req = UnregisterNodeRequest { node_id: node.to_vec(), reason: reason.to_string() };
        let _ = tokio::time::timeout(Duration::from_secs(2), client.unregister_node(req)).await;
    });
}

/// Ships a node's event log to the head (`Head.AppendEvents`), for a node on another host
/// than the head: every 50 ms, what was appended since, cut at the last whole frame. The
/// head's copy says where to go on (after a head restart, or a lost reply).
struct EventShipper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl EventShipper {
    fn start(head: &str, node: Id, log: std::path::PathBuf) -> io::Result<EventShipper> {
        let stop = Arc::new(AtomicBool::new(false));
        let (head, flag) = (head.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rayr-ship-events".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(ship(&head, node, &log, &flag));
            })?;
        Ok(EventShipper { stop, thread })
    }

    /// Ships what is left (waiting up to `limit`), then stops.
    fn finish(self, limit: Duration) {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn ship(head: &str, node: Id, log: &std::path::Path, stop: &AtomicBool) {
    let mut client = None;
    // Where the head's copy ends: asked for (with nothing to write) after each (re)connect.
    let mut offset: Option<u64> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if client.is_none() {
            client = dial(head).await.ok();
            offset = None;
        }
        let mut shipped_some = false;
        if let Some(c) = client.as_mut() {
            match ship_once(c, node, log, offset).await {
                Ok((at, sent)) => {
                    offset = Some(at);
                    shipped_some = sent;
                }
                Err(_) => client = None,
            }
        }
        if shipped_some {
            continue; // more may be waiting
        }
        if stopping && (client.is_none() || offset.is_some()) {
            return; // everything is shipped, or the head is gone
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ships what follows `offset` in the log (up to 4 MiB of whole frames); returns the head's
/// copy's size and whether anything was sent.
async fn ship_once(
    client: &mut rayr_proto::head_client::HeadClient<tonic::transport::Channel>,
    node: Id,
    log: &std::path::Path,
    offset: Option<u64>,
) -> Result<(u64, bool), tonic::Status> {
    use std::io::{Read, Seek, SeekFrom};
    let at = match offset {
        Some(o) => o,
        None => client.append_events(rayr_proto::AppendEventsRequest { node_id: node.to_vec(), offset: u64::MAX, data: Vec::new() }).await?.into_inner().size,
    };
    let mut buf = Vec::new();
    let read = std::fs::File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(at))?;
        f.take(4 << 20).read_to_end(&mut buf)
    });
    let whole = whole_frames(&buf);
    if read.is_err() || whole == 0 {
        return Ok((at, false));
    }
    buf.truncate(whole);
    let size = client.append_events(rayr_proto::AppendEventsRequest { node_id: node.to_vec(), offset: at, data: buf }).await?.into_inner().size;
    Ok((size, size != at))
}

/// How many leading bytes of `buf` are whole frames.
fn whole_frames(buf: &[u8]) -> usize {
    let mut used = 0;
    while let Ok(Some((_, n))) = rayr_proto::split_frame(&buf[used..]) {
        used += n;
    }
    used
}
