//! Reading an object's value: from this process's own objects, from the owner of a
//! borrowed one (asking it, and learning how it died when it cannot answer), and from
//! another node's store (having this node's agent pull a copy, and telling the owner,
//! who frees it with the object). `get`, `wait` and a worker reading its task's
//! arguments all go through here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayr_logs::{Id, hex};
use rayr_proto::{EventKind, ObjectDetail, client_message, event, peer_message};
use serde::de::DeserializeOwned;

use super::{CallError, Core, Slot};
use crate::codec;
use crate::error::{Error, Result};
use crate::WorkerId;

/// Where a value can be read from.
pub(crate) enum Fetched {
    Inline(Arc<[u8]>, u32),
    Shm { offset: u64, size: u64, format: u32 },
    /// In another node's store (only between `ask_owner` and `fetch`, which pulls it).
    Elsewhere { node: Id, size: u64, format: u32 },
}

impl Fetched {
    pub(crate) fn decode<T: DeserializeOwned>(&self, core: &Core) -> Result<T> {
        match self {
            Fetched::Inline(b, f) => codec::decode(b, *f),
            // SAFETY: the object is sealed and stays allocated while the caller's ref lives.
            Fetched::Shm { offset, size, format } => codec::decode(unsafe { core.arena.bytes(*offset, *size) }, *format),
            Fetched::Elsewhere { .. } => Err("internal: a value in another node's store was not pulled".into()),
        }
        .map_err(Error::Serialization)
    }
}

/// While a worker waits, its CPU goes back to the node so the tasks it waits for can run.
struct BlockedGuard<'a>(Option<&'a Core>);

impl<'a> BlockedGuard<'a> {
    fn new(core: &'a Core) -> Self {
        // What this thread is about to wait for may need a result it holds for batching.
        super::send_held_results();
        if core.is_driver {
            return BlockedGuard(None);
        }
        let _ = core.node_conn.send(0, client_message::Body::Blocked(rayr_proto::BlockedChange { blocked: true }));
        BlockedGuard(Some(core))
    }
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        if let Some(core) = self.0 {
            let _ = core.node_conn.send(0, client_message::Body::Blocked(rayr_proto::BlockedChange { blocked: false }));
        }
    }
}

/// Waits for an object's value (owned here or fetched from its owner).
pub(crate) fn fetch(core: &Arc<Core>, id: Id, owner: Id, address: &str, timeout: Option<Duration>) -> Result<Fetched> {
    fetch_for(core, id, owner, address, timeout, false)
}

/// `fetch`; for a task's argument (`argument`), a copy of it pulled into this node's store
/// stays pinned for the task until [`argument_done`] (the task may hold no handle to the
/// object, so no borrow keeps it), counted in the same critical section that finds it.
fn fetch_for(core: &Arc<Core>, id: Id, owner: Id, address: &str, timeout: Option<Duration>, argument: bool) -> Result<Fetched> {
    let deadline = timeout.map(|t| Instant::now() + t);
    if owner == core.me {
        let mut st = core.state.lock();
        let mut blocked = None;
        loop {
            match st.owned.get(&id).map(|o| &o.slot) {
                Some(Slot::Pending) => {
                    if blocked.is_none() {
                        blocked = Some(BlockedGuard::new(core));
                    }
                    match deadline {
                        Some(d) => {
                            if core.ready.wait_until(&mut st, d).timed_out() && Instant::now() >= d {
                                return Err(Error::Timeout);
                            }
                        }
                        None => core.ready.wait(&mut st),
                    }
                }
                Some(Slot::Inline(b, f)) => return Ok(Fetched::Inline(b.clone(), *f)),
                Some(Slot::Shm { offset, size, format }) => {
                    return Ok(Fetched::Shm { offset: *offset, size: *size, format: *format });
                }
                Some(&Slot::OnNode { node, size, format, .. }) => {
                    drop(st);
                    match pull_copy(core, id, owner, address, node, size, format, argument, deadline) {
                        Ok(offset) => return Ok(Fetched::Shm { offset, size, format }),
                        Err(PullFailure::Gone { cause, reason }) => {
                            // Made again from its task if it can be (then waited for here).
                            core.object_lost_on(id, node, cause, &reason);
                            st = core.state.lock();
                        }
                        Err(PullFailure::Failed(e)) => return Err(e),
                    }
                }
                Some(Slot::Failed(e)) => return Err(e.clone()),
                None => return Err(Error::ObjectLost { object: crate::ObjectId(id) }),
            }
        }
    }
    if owner == [0; 16] {
        return Err(Error::Connection("rayr was not initialized when this task was submitted: call rayr::init() first".into()));
    }
    {
        // A cached location is good while the owner is connected: its death drops the
        // connection and, with it, every location learned from it (see read_peer).
        let mut st = core.state.lock();
        let owner_connected = st.peers.get(address).is_some_and(|p| p.alive());
        if let (true, Some(&(offset, size, format))) = (owner_connected, st.borrowed_locations.get(&id)) {
            if argument && let Some(c) = st.local_copies.get_mut(&id) {
                c.1 += 1;
            }
            return Ok(Fetched::Shm { offset, size, format });
        }
    }
    let _blocked = BlockedGuard::new(core);
    let mut lost: Option<Lost> = None;
    let mut losses = 0;
    let fetched = loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let fetched = match ask_owner_after_loss(core, id, owner, address, remaining, lost.take())? {
            OwnerAnswer::Value(f) => f,
            OwnerAnswer::Pending => unreachable!("only probes are answered with pending"),
        };
        match fetched {
            // In another node's store: this node's agent copies it here (once for the
            // node), so this read and later ones are local and zero-copy (`get_slice` too).
            Fetched::Elsewhere { node, size, format } => match pull_copy(core, id, owner, address, node, size, format, argument, deadline) {
                Ok(offset) => break Fetched::Shm { offset, size, format },
                // That node is gone: its owner makes it again, or says it is lost. (An owner
                // that keeps naming a node that does not hold it: lost, not a loop.)
                Err(PullFailure::Gone { cause, reason }) if losses < 3 => {
                    losses += 1;
                    lost = Some(Lost { node, cause, reason });
                }
                Err(PullFailure::Gone { reason, .. }) => {
                    let mut e = core.event(EventKind::ObjectLost);
                    e.object_id = id.to_vec();
                    e.worker_id = owner.to_vec();
                    let end = rayr_proto::ObjectEndReason::Unreadable as i32;
                    e.detail = Some(event::Detail::Object(ObjectDetail { size, location: "shm".into(), reason, end, ..Default::default() }));
                    core.record(e);
                    core.drain_events_now();
                    return Err(Error::ObjectLost { object: crate::ObjectId(id) });
                }
                Err(PullFailure::Failed(e)) => return Err(e),
            },
            f => break f,
        }
    };
    if let Fetched::Shm { offset, size, format } = fetched {
        let mut st = core.state.lock();
        if st.borrowed.get(&id).is_some_and(|b| b.0 > 0) {
            st.borrowed_locations.insert(id, (offset, size, format));
        }
    }
    Ok(fetched)
}

/// `fetch` for a task's argument: a copy pulled for it stays pinned until
/// [`argument_done`] (the task may hold no handle to the object, so no borrow keeps it).
pub(crate) fn fetch_argument(core: &Arc<Core>, id: Id, owner: Id, address: &str) -> Result<Fetched> {
    fetch_for(core, id, owner, address, None, true)
}

/// A task that read these objects as arguments is done with them: copies neither another
/// such task nor a borrow still needs are released to the agent.
pub(crate) fn argument_done(core: &Core, ids: &[Id]) {
    let mut released = Vec::new();
    let mut st = core.state.lock();
    for id in ids {
        let Some(c) = st.local_copies.get_mut(id) else { continue };
        c.1 = c.1.saturating_sub(1);
        if c.1 == 0 && st.borrowed.get(id).is_none_or(|b| b.0 == 0) {
            st.local_copies.remove(id);
            released.push(*id);
        }
    }
    drop(st);
    if !released.is_empty() {
        core.release_copies(&released);
    }
}

/// Why a pull did not give a copy.
pub(crate) enum PullFailure {
    /// The node holding the value is gone (with its NODE_DIED event, when known).
    Gone { cause: Vec<u8>, reason: String },
    Failed(Error),
}

/// A value its reader could not pull because the node holding it is gone (told to the
/// owner, who makes it again or says it is lost).
pub(crate) struct Lost {
    node: Id,
    cause: Vec<u8>,
    reason: String,
}

/// Has this node's agent copy `id` from `node`'s store into its own, pinned for this
/// process (see `State::local_copies`); the owner (told, when it is another process)
/// frees the copy with the object. Returns the copy's offset.
#[allow(clippy::too_many_arguments)]
fn pull_copy(
    core: &Arc<Core>,
    id: Id,
    owner: Id,
    address: &str,
    node: Id,
    size: u64,
    format: u32,
    argument: bool,
    deadline: Option<Instant>,
) -> std::result::Result<u64, PullFailure> {
    if let Some(c) = core.state.lock().local_copies.get_mut(&id) {
        c.1 += argument as u32;
        return Ok(c.0);
    }
    let request = rayr_proto::PullObject { object_id: id.to_vec(), from_node: node.to_vec(), size, format, owner: owner.to_vec() };
    // No time limit but the reader's own: the agent fails a pull that stops making progress.
    let limit = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let reply = match core.node_conn.call_within(client_message::Body::PullObject(request), limit).map_err(PullFailure::Failed)? {
        rayr_proto::node_message::Body::Pulled(r) => r,
        _ => return Err(PullFailure::Failed(Error::Connection("the node agent answered a pull with something else".into()))),
    };
    if reply.source_gone || reply.not_held {
        // That node is gone, or no longer holds it: its owner makes it again if it can.
        return Err(PullFailure::Gone { cause: reply.cause, reason: reply.error });
    }
    if !reply.error.is_empty() {
        // Not a loss: the copy could not be made here (store full, node unreachable).
        return Err(PullFailure::Failed(Error::Connection(reply.error)));
    }
    let mut st = core.state.lock();
    let first = match st.local_copies.entry(id) {
        std::collections::hash_map::Entry::Occupied(mut o) => {
            // Another thread pulled it meanwhile: one pin per process is enough.
            o.get_mut().1 += argument as u32;
            let offset = o.get().0;
            drop(st);
            core.release_copies(&[id]);
            return Ok(offset);
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert((reply.offset, argument as u32));
            true
        }
    };
    if owner == core.me {
        core.copy_made_locked(&mut st, id, core.node);
        return Ok(reply.offset);
    }
    drop(st);
    if first && let Ok(peer) = core.peer(address) {
        // Answered before the read goes on: the owner knows of the copy before any result
        // computed from it can lead it to free the object.
        let copy = rayr_proto::ObjectCopy { object_id: id.to_vec(), node: core.node.to_vec() };
        let _ = peer.call(rayr_proto::PeerMessage { req_id: 0, body: Some(peer_message::Body::Copy(copy)) }, Some(Duration::from_secs(5)));
    }
    Ok(reply.offset)
}

pub(crate) enum OwnerAnswer {
    Value(Fetched),
    Pending,
}

/// Asks the owner of `id` for its value (waiting for it unless `probe`).
pub(crate) fn ask_owner(
    core: &Arc<Core>,
    id: Id,
    owner: Id,
    address: &str,
    probe: bool,
    timeout: Option<Duration>,
) -> Result<OwnerAnswer> {
    ask(core, id, owner, address, probe, timeout, None)
}

/// `ask_owner` for a value, saying that where it answered last time is gone.
fn ask_owner_after_loss(core: &Arc<Core>, id: Id, owner: Id, address: &str, timeout: Option<Duration>, lost: Option<Lost>) -> Result<OwnerAnswer> {
    ask(core, id, owner, address, false, timeout, lost)
}

fn ask(
    core: &Arc<Core>,
    id: Id,
    owner: Id,
    address: &str,
    probe: bool,
    timeout: Option<Duration>,
    lost: Option<Lost>,
) -> Result<OwnerAnswer> {
    use rayr_proto::object_value::Value;
    let peer = match core.peer(address) {
        Ok(p) => p,
        Err(_) => return Err(owner_died(core, id, owner)),
    };
    let msg = rayr_proto::PeerMessage {
        req_id: 0,
        body: Some(peer_message::Body::Get(rayr_proto::GetObject {
            object_id: id.to_vec(),
            requester: core.me.to_vec(),
            probe,
            requester_node: core.node.to_vec(),
            lost_on_node: lost.as_ref().map(|l| l.node.to_vec()).unwrap_or_default(),
            lost_cause: lost.as_ref().map(|l| l.cause.clone()).unwrap_or_default(),
            lost_reason: lost.map(|l| l.reason).unwrap_or_default(),
        })),
    };
    let lost = || Error::ObjectLost { object: crate::ObjectId(id) };
    match peer.call(msg, timeout) {
        Ok(reply) => match reply.body {
            Some(peer_message::Body::Value(v)) => match v.value {
                Some(Value::InlineValue(b)) => Ok(OwnerAnswer::Value(Fetched::Inline(b.into(), v.inline_format))),
                Some(Value::Shm(loc)) => match <Id>::try_from(loc.node.as_slice()) {
                    Ok(node) if node != core.node => {
                        Ok(OwnerAnswer::Value(Fetched::Elsewhere { node, size: loc.size, format: loc.format }))
                    }
                    _ => Ok(OwnerAnswer::Value(Fetched::Shm { offset: loc.offset, size: loc.size, format: loc.format })),
                },
                Some(Value::Failure(bytes)) => Err(codec::decode::<Error>(&bytes, codec::POSTCARD).unwrap_or_else(|_| lost())),
                Some(Value::Pending(_)) => Ok(OwnerAnswer::Pending),
                Some(Value::Error(_)) | None => Err(lost()),
            },
            _ => Err(lost()),
        },
        Err(CallError::Timeout) => Err(Error::Timeout),
        Err(CallError::Disconnected) => Err(owner_died(core, id, owner)),
    }
}

/// The owner of `id` is unreachable: find out how it ended, record the loss, and say so.
fn owner_died(core: &Arc<Core>, id: Id, owner: Id) -> Error {
    let (exit_event, detail) = core.worker_exit(owner);
    let mut e = core.event(EventKind::ObjectLost);
    e.object_id = id.to_vec();
    e.worker_id = owner.to_vec();
    if let Some(c) = exit_event {
        e.cause = c.to_vec();
    }
    let reason = format!("its owner, worker {}, died: {detail}", hex(&owner));
    let end = rayr_proto::ObjectEndReason::OwnerDied as i32;
    e.detail = Some(event::Detail::Object(ObjectDetail { reason: reason.clone(), end, ..Default::default() }));
    core.record(e);
    core.drain_events_now();
    Error::OwnerDied { object: crate::ObjectId(id), owner: format!("worker {} died: {detail}", WorkerId(owner)) }
}

