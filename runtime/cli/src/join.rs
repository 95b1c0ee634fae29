//! A node agent's membership in a cluster whose head runs elsewhere (`rayr start
//! --address`): it registers with the head, beats every period with what it has free, and
//! decides when it must go.
//!
//! The head being unreachable is not the node's death: its workers keep running and it
//! keeps trying, for `head_timeout`; after that it exits saying so. A head that answers
//! "unknown" (it restarted) gets a new registration; one that answers "dead" (it declared
//! this node dead after missed beats) is obeyed: the node exits, since what it held has
//! been declared lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rayr_logs::{Id, hex};
use rayr_proto::heartbeat_reply::Standing;
use rayr_proto::{HeartbeatRequest, NodeEndReason, RegisterNodeRequest, UnregisterNodeRequest};

/// What the node tells the head about itself.
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
pub type Ending = Arc<Mutex<Option<(NodeEndReason, String)>>>;

/// Runs until the node must go; then stores why in `ending` and asks this process to stop
/// (SIGTERM to itself, which the main thread waits for). `available`: what the node has
/// free now.
pub fn run(j: Joining, node: rayr_node::ResourceProbe, ending: Ending) {
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
    // SAFETY: signalling this process; the main thread waits for SIGTERM.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

async fn membership(j: &Joining, node: &rayr_node::ResourceProbe) -> (NodeEndReason, String) {
    let mut last_contact = Instant::now();
    'register: loop {
        let mut client = match crate::connect::dial(&j.head).await {
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
pub fn unregister(head: &str, node: Id, reason: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(Ok(mut client)) = tokio::time::timeout(Duration::from_secs(2), crate::connect::dial(head)).await else { return };
        let req = UnregisterNodeRequest { node_id: node.to_vec(), reason: reason.to_string() };
        let _ = tokio::time::timeout(Duration::from_secs(2), client.unregister_node(req)).await;
    });
}

/// Ships a node's event log to the head (`Head.AppendEvents`), for a node on another host
/// than the head: every 50 ms, what was appended since, cut at the last whole frame. The
/// head's copy says where to go on (after a head restart, or a lost reply).
pub struct EventShipper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl EventShipper {
    pub fn start(head: &str, node: Id, log: std::path::PathBuf) -> EventShipper {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (head, flag) = (head.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rayr-ship-events".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(ship(&head, node, &log, &flag));
            })
            .expect("a thread to ship events");
        EventShipper { stop, thread }
    }

    /// Ships what is left (waiting up to `limit`), then stops.
    pub fn finish(self, limit: Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn ship(head: &str, node: Id, log: &std::path::Path, stop: &std::sync::atomic::AtomicBool) {
    let mut client = None;
    // Where the head's copy ends: asked for (with nothing to write) after each (re)connect.
    let mut offset: Option<u64> = None;
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::Acquire);
        if client.is_none() {
            client = crate::connect::dial(head).await.ok();
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
