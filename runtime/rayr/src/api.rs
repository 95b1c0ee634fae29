//! The runtime functions of the public API: submit, get, put, wait, and friends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rayr_logs::{Id, hex, new_id};
use rayr_proto::{EventKind, TaskArg, client_message, node_message, task_arg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::core::fetch::{Fetched, OwnerAnswer, ask_owner, fetch};
use crate::core::{self, Core, PendingTask, Slot};
use crate::error::{Error, Result};
use crate::object_ref::{ObjectRef, RefHandle};
use crate::{TaskOptions, WorkerId};

/// One argument of a task as the caller gave it.
pub enum ArgValue {
    /// A serialized value, and the refs serialized inside it.
    Value(std::result::Result<Vec<u8>, String>, #[doc(hidden)] Vec<Arc<RefHandle>>),
    Ref(Arc<RefHandle>),
}

/// What a remote function accepts for a parameter of type `T`: a `T`, or a ref to one.
pub trait IntoArg<T> {
    fn into_arg(self) -> ArgValue;
}

impl<T: Serialize> IntoArg<T> for T {
    fn into_arg(self) -> ArgValue {
        let (bytes, nested) = crate::object_ref::capture_nested(|| codec::encode(&self));
        ArgValue::Value(bytes, nested)
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> ArgValue {
        ArgValue::Ref(self.handle.clone())
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> ArgValue {
        ArgValue::Ref(self.handle)
    }
}

/// Submits a task (generated code calls this). Never blocks on the task; problems with
/// the arguments become the task's error, seen at `get`.
pub fn submit_task<R>(function: &'static str, args: Vec<ArgValue>, opts: &TaskOptions) -> ObjectRef<R> {
    submit(function, args, opts, None)
}

/// What makes a task an actor's: its creation, or a call, which keeps the actor alive
/// (`keep_alive`: the creation's result, which the handles hold) while it is pending.
pub(crate) struct ActorTask {
    pub actor: Id,
    pub creation: bool,
    pub keep_alive: Option<Arc<RefHandle>>,
    /// The creation's result id, chosen before (a named actor's name claim names it).
    pub return_id: Option<Id>,
}

pub(crate) fn submit<R>(function: &'static str, args: Vec<ArgValue>, opts: &TaskOptions, actor: Option<ActorTask>) -> ObjectRef<R> {
    let Some(core) = core::current() else {
        // `get` on this ref reports that rayr is not initialized.
        return ObjectRef::from_handle(Arc::new(RefHandle { id: new_id(), owner: [0; 16], owner_address: "".into() }));
    };
    let task = new_id();
    let ret = actor.as_ref().and_then(|a| a.return_id).unwrap_or_else(new_id);
    // The job, owner, owner address and owner node are added to each push (see
    // `core::spec`): not stored with every pending task.
    let mut spec = core::PendingSpec::new(task, ret, function);
    spec.args.reserve_exact(args.len());
    // An actor's task runs where its state is: it is not retried on another worker.
    spec.max_retries = if actor.is_some() { 0 } else { opts.max_retries };
    spec.retry_exceptions = opts.retry_exceptions && actor.is_none();
    spec.actor_id = actor.as_ref().map(|a| a.actor);
    spec.actor_creation = actor.as_ref().is_some_and(|a| a.creation);
    if let (Some(a), Some(name)) = (&actor, &opts.name)
        && a.creation
    {
        spec.actor_name = Some(format!("{}/{name}", opts.namespace.as_deref().unwrap_or_default()).into());
    }
    if let Some(a) = &actor
        && a.creation
    {
        spec.actor_max_concurrency = opts.max_concurrency;
    }
    // TASK_SUBMITTED and, when a worker is free, TASK_SCHEDULED: one batch of events.
    let events = core.event_batch();
    let submitted = core.emit(EventKind::TaskSubmitted, |e| {
        e.task(&task).object(&ret);
        if let Some(a) = &actor {
            e.actor(&a.actor);
        }
        e.task_detail(|d| {
            d.function(function).max_retries(spec.max_retries);
        });
    });

    // Exact sizes: a pending task's lists are kept as long as it waits (a queue may hold
    // a million), and a Vec grown by pushes reserves room for four.
    let refs = args.iter().filter(|a| matches!(a, ArgValue::Ref(_))).count();
    let mut st = core.state.lock();
    core.own(&mut st, ret, Slot::Pending);
    let (shape, demand) = st.shape(&opts.resources);
    let mut pending = PendingTask {
        spec: core::PendingSpec::new(task, ret, function),
        deps: Vec::new(),
        owned_args: Vec::with_capacity(refs + actor.as_ref().map_or(0, |a| a.keep_alive.is_some() as usize)),
        borrowed_args: Vec::new(),
        key: actor.as_ref().map_or(shape, |a| core::QueueKey::Actor(a.actor)),
        demand,
        worker: None,
        in_ready_queue: false,
        last_event: submitted,
        seq: st.next_seq,
        trace: None,
    };
    if crate::trace::enabled() {
        // A span from submit to result; the worker's execute span is its child.
        let (ids, parent) = crate::trace::new_span();
        pending.trace = Some(Box::new(core::TaskTrace { ids, parent, start_ns: crate::trace::now_ns() }));
        spec.trace = Some(Box::new((ids.0, ids.1)));
    }
    st.next_seq += 1;
    if let Some(h) = actor.as_ref().and_then(|a| a.keep_alive.as_ref()) {
        // The actor lives while its calls are pending, as an argument would.
        if core.pin_locked(&mut st, h.id, h.owner) {
            if h.owner == core.me {
                pending.owned_args.push(h.id);
            } else {
                pending.borrowed_args.push(h.id);
            }
        }
    }
    let mut failure: Option<(Error, String)> = None;
    if actor.is_none() && (opts.max_restarts != 0 || opts.max_task_retries != 0 || opts.detached || opts.max_concurrency > 1) {
        let mut names = Vec::new();
        if opts.max_concurrency > 1 {
            names.push("max_concurrency");
        }
        if opts.detached {
            names.push("lifetime_detached");
        }
        if opts.max_restarts != 0 {
            names.push("max_restarts");
        }
        if opts.max_task_retries != 0 {
            names.push("max_task_retries");
        }
        let msg = format!("{} apply to actors, not to a task", names.join(", "));
        failure = Some((Error::TaskFailed { task: crate::TaskId(task), message: msg.clone(), backtrace: String::new() }, msg));
    }
    // Handles given by value die here; dropping one re-locks `state` (it may be the last
    // reference), so they are kept until the lock is released.
    let mut handles = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        if let ArgValue::Ref(h) = &a {
            handles.push(h.clone());
        }
        let arg = match a {
            ArgValue::Value(Ok(bytes), nested) => {
                // Refs inside the value stay alive while the task is pending, retries
                // included, like refs passed directly.
                for n in nested {
                    if core.pin_locked(&mut st, n.id, n.owner) {
                        if n.owner == core.me {
                            pending.owned_args.push(n.id);
                        } else {
                            pending.borrowed_args.push(n.id);
                        }
                    }
                    handles.push(n);
                }
                task_arg::Arg::InlineValue(bytes)
            }
            ArgValue::Value(Err(e), nested) => {
                // (Refs captured before the failure: dropped after the lock.)
                handles.extend(nested);
                let msg = format!("argument {i} cannot be serialized: {e}");
                failure.get_or_insert((Error::Serialization(msg.clone()), msg));
                task_arg::Arg::InlineValue(Vec::new())
            }
            ArgValue::Ref(h) if h.owner == core.me => {
                pending.owned_args.push(h.id);
                match st.owned.get_mut(&h.id) {
                    Some(o) => {
                        o.submitted += 1;
                        match &o.slot {
                            Slot::Pending => {
                                if pending.deps.capacity() == 0 {
                                    pending.deps.reserve_exact(refs);
                                }
                                pending.deps.push((i, h.id));
                                st.waits.wait(h.id, task);
                                task_arg::Arg::InlineValue(Vec::new())
                            }
                            Slot::Inline(b, _) => task_arg::Arg::InlineValue(b.to_vec()),
                            Slot::Shm { offset, size, format } => task_arg::Arg::Shm(rayr_proto::ObjectLocation {
                                object_id: h.id.to_vec(),
                                offset: *offset,
                                size: *size,
                                format: *format,
                                node: Vec::new(),
                            }),
                            Slot::OnNode { .. } => task_arg::Arg::ByRef(rayr_proto::ObjectRefArg {
                                object_id: h.id.to_vec(),
                                owner: core.me.to_vec(),
                                owner_address: core.address.clone(),
                            }),
                            Slot::Failed(e) => {
                                let msg = format!("argument {i} ({}) failed: {e}", hex(&h.id));
                                failure.get_or_insert((e.clone(), msg));
                                task_arg::Arg::InlineValue(Vec::new())
                            }
                        }
                    }
                    None => {
                        let msg = format!("argument {i} ({}) was already freed", hex(&h.id));
                        failure.get_or_insert((Error::ObjectLost { object: crate::ObjectId(h.id) }, msg));
                        task_arg::Arg::InlineValue(Vec::new())
                    }
                }
            }
            ArgValue::Ref(h) => {
                pending.borrowed_args.push(h.id);
                st.borrowed.entry(h.id).or_insert_with(|| (0, h.owner, h.owner_address.to_string())).0 += 1;
                task_arg::Arg::ByRef(rayr_proto::ObjectRefArg {
                    object_id: h.id.to_vec(),
                    owner: h.owner.to_vec(),
                    owner_address: h.owner_address.to_string(),
                })
            }
        };
        spec.args.push(TaskArg { arg: Some(arg) });
    }
    pending.spec = spec;
    let ready = pending.deps.is_empty();
    let actor_call = pending.spec.actor_id.is_some();
    st.tasks.insert(task, Box::new(pending));
    if let Some((err, msg)) = failure {
        core.fail_task_final_locked(&mut st, task, err, rayr_proto::TaskErrorKind::BadArgument, &msg, None);
    } else if ready || actor_call {
        core.enqueue_locked(&mut st, task);
    }
    drop(st);
    drop(events);
    drop(handles);
    ObjectRef::from_handle(core.owned_handle(ret))
}

/// Blocks until the object's value is available and returns a copy of it.
pub fn get<T: DeserializeOwned>(r: &ObjectRef<T>) -> Result<T> {
    get_timeout(r, None)
}

/// Like [`get`], giving up with `Error::Timeout` after `timeout`.
pub fn get_timeout<T: DeserializeOwned>(r: &ObjectRef<T>, timeout: Option<Duration>) -> Result<T> {
    let core = core::require()?;
    let h = &r.handle;
    fetch(&core, h.id, h.owner, &h.owner_address, timeout)?.decode(&core)
}

/// Gets every ref, in order; the first error is returned.
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    refs.iter().map(get).collect()
}

/// Splits `refs` into (ready, not ready) once `num_returns` are ready or `timeout` passes.
/// Both lists keep the order given. A ref whose value failed counts as ready (`get` then
/// returns the error), as in Ray.
pub fn wait<T>(refs: &[ObjectRef<T>], num_returns: usize, timeout: Option<Duration>) -> (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>) {
    let Some(core) = core::current() else { return (Vec::new(), refs.to_vec()) };
    // A task waiting here may wait for a result its own thread holds for batching.
    core::send_held_results();
    let deadline = timeout.map(|t| Instant::now() + t);
    let want = num_returns.min(refs.len());
    let mut ready = vec![false; refs.len()];
    loop {
        // Owned here: the table says. Owned elsewhere: ask the owner without waiting.
        let mut remote = Vec::new();
        {
            let st = core.state.lock();
            for (i, r) in refs.iter().enumerate() {
                if ready[i] {
                    continue;
                }
                if r.handle.owner == core.me {
                    ready[i] = Core::is_ready_locked(&st, &r.handle.id);
                } else if st.borrowed_locations.contains_key(&r.handle.id) {
                    ready[i] = true;
                } else {
                    remote.push(i);
                }
            }
        }
        for i in remote {
            if ready.iter().filter(|b| **b).count() >= want {
                break;
            }
            let h = &refs[i].handle;
            ready[i] = !matches!(
                ask_owner(&core, h.id, h.owner, &h.owner_address, true, Some(Duration::from_secs(5))),
                Ok(OwnerAnswer::Pending) | Err(Error::Timeout)
            );
        }
        let n = ready.iter().filter(|b| **b).count();
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        if n >= want || expired {
            let mut yes = Vec::new();
            let mut no = Vec::new();
            for (r, ok) in refs.iter().zip(&ready) {
                if *ok && yes.len() < want { yes.push(r.clone()) } else { no.push(r.clone()) }
            }
            return (yes, no);
        }
        // Owned values wake us; remote ones are polled.
        let pause = Duration::from_millis(2);
        let until = deadline.map_or(Instant::now() + pause, |d| d.min(Instant::now() + pause));
        let mut st = core.state.lock();
        core.ready.wait_until(&mut st, until);
    }
}

/// Stores a value in the cluster once; pass the ref to many tasks instead of the value.
pub fn put<T: Serialize>(value: T) -> Result<ObjectRef<T>> {
    let core = core::require()?;
    let (bytes, nested) = crate::object_ref::capture_nested(|| codec::encode(&value));
    let bytes =
        bytes.map_err(|e| Error::Serialization(format!("put: the value cannot be serialized ({e}): check its Serialize impl")))?;
    let id = new_id();
    let slot = if bytes.len() <= core.max_inline {
        Slot::Inline(bytes.into(), codec::POSTCARD)
    } else {
        store_bytes_for(&core, &bytes, codec::POSTCARD, core.me, &[], id)?.0
    };
    let handle = own_new(&core, id, slot);
    if !nested.is_empty() {
        // The container keeps what it refers to, until it is freed itself.
        let mut st = core.state.lock();
        let pinned: Vec<_> = nested
            .iter()
            .filter(|n| core.pin_locked(&mut st, n.id, n.owner))
            .map(|n| core::NestedRef { id: n.id, owner: n.owner })
            .collect();
        if let Some(o) = st.owned.get_mut(&id)
            && !pinned.is_empty()
        {
            o.more_mut().contains = pinned;
        }
        // `nested` (handles: dropping one may lock `state`) goes after the lock.
        drop(st);
    }
    Ok(ObjectRef::from_handle(handle))
}

/// Copies a slice of plain data into the shm store; read it back zero-copy with
/// [`get_slice`], or as an owned `Vec` with [`get`].
pub fn put_slice<P: bytemuck::Pod>(data: &[P]) -> Result<ObjectRef<Vec<P>>> {
    let core = core::require()?;
    let id = new_id();
    let slot = store_bytes_for(&core, bytemuck::cast_slice(data), codec::RAW_POD, core.me, &[], id)?.0;
    Ok(ObjectRef::from_handle(own_new(&core, id, slot)))
}

/// Registers a value this process just created (put) as owned here, with one handle.
fn own_new(core: &Arc<Core>, id: Id, slot: Slot) -> Arc<RefHandle> {
    let mut st = core.state.lock();
    core.own(&mut st, id, Slot::Pending);
    core.object_created(&mut st, id, slot, None, None);
    drop(st);
    core.owned_handle(id)
}

/// Allocates object `id` in the node's store for `owner` and copies `bytes` in.
pub(crate) fn store_bytes_for(core: &Core, bytes: &[u8], format: u32, owner: Id, owner_node: &[u8], id: Id) -> Result<(Slot, Id)> {
    let size = bytes.len() as u64;
    let body = client_message::Body::CreateObject(rayr_proto::CreateObject {
        object_id: id.to_vec(),
        size,
        owner: owner.to_vec(),
        owner_node: owner_node.to_vec(),
    });
    let offset = match core.node_conn.call(body)? {
        node_message::Body::Created(c) if c.error.is_empty() => c.offset,
        node_message::Body::Created(c) if c.store_full => {
            return Err(Error::ObjectStoreFull { node: crate::NodeId(core.node), detail: c.error });
        }
        node_message::Body::Created(c) => return Err(Error::Connection(c.error)),
        _ => return Err(Error::Connection("the node agent answered an object creation with something else".into())),
    };
    // SAFETY: the range was just allocated to us and nobody else knows it yet.
    unsafe { core.arena.bytes_mut(offset, size) }.copy_from_slice(bytes);
    Ok((Slot::Shm { offset, size, format }, id))
}

/// A zero-copy view of a `put_slice` object in shared memory; keeps the object alive.
pub struct SliceGuard<P> {
    _ref: Arc<RefHandle>,
    _core: Arc<Core>,
    ptr: *const P,
    len: usize,
}

// SAFETY: the guard only gives out shared references into memory that stays mapped and
// unmodified while the guard (and its ref) lives.
unsafe impl<P: Sync> Send for SliceGuard<P> {}
unsafe impl<P: Sync> Sync for SliceGuard<P> {}

impl<P> std::ops::Deref for SliceGuard<P> {
    type Target = [P];
    fn deref(&self) -> &[P] {
        // SAFETY: see the Send/Sync note; ptr is aligned (objects start on 64 bytes).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Reads a `put_slice` object in place: the returned guard derefs to `&[P]` pointing into
/// the shm store; nothing is copied.
pub fn get_slice<P: bytemuck::Pod>(r: &ObjectRef<Vec<P>>) -> Result<SliceGuard<P>> {
    let core = core::require()?;
    let h = &r.handle;
    match fetch(&core, h.id, h.owner, &h.owner_address, None)? {
        Fetched::Shm { offset, size, format: codec::RAW_POD } => {
            // SAFETY: sealed object, alive while the guard holds its ref.
            let bytes = unsafe { core.arena.bytes(offset, size) };
            let view: &[P] = bytemuck::try_cast_slice(bytes)
                .map_err(|e| Error::Serialization(format!("get_slice: the object is not a slice of this type: {e}")))?;
            Ok(SliceGuard { ptr: view.as_ptr(), len: view.len(), _ref: h.clone(), _core: core.clone() })
        }
        _ => Err(Error::Serialization(
            "get_slice reads objects made by put_slice; this one was serialized (use rayr::get)".into(),
        )),
    }
}

/// Cancels a task that has not started yet: its ref then fails with `Error::Cancelled`.
/// Returns whether it was cancelled (false once it was pushed to a worker or finished).
pub fn cancel<T>(r: &ObjectRef<T>) -> Result<bool> {
    let core = core::require()?;
    let mut st = core.state.lock();
    let task = st.tasks.iter().find(|(_, t)| t.spec.return_id == r.handle.id && t.worker.is_none()).map(|(id, _)| id);
    let Some(task) = task else { return Ok(false) };
    core.fail_task_final_locked(&mut st, task, Error::Cancelled, rayr_proto::TaskErrorKind::Cancelled, "cancelled by rayr::cancel", None);
    drop(st);
    core.send_outbox();
    core.ready.notify_all();
    Ok(true)
}

/// Where the calling code runs.
#[derive(Clone, Debug)]
pub struct RuntimeContext {
    pub task_id: Option<crate::TaskId>,
    pub actor_id: Option<crate::ActorId>,
    pub node_id: crate::NodeId,
    pub worker_id: WorkerId,
    pub job_id: crate::JobId,
    pub gpu_ids: Vec<u32>,
    /// Which try of the current task this is (0 for the first).
    pub attempt: u32,
}

/// The current task, worker, node and job.
pub fn runtime_context() -> Result<RuntimeContext> {
    let core = core::require()?;
    let (task, attempt) = crate::exec::current_task();
    Ok(RuntimeContext {
        task_id: task.map(crate::TaskId),
        actor_id: crate::exec::current_actor().map(crate::ActorId),
        node_id: crate::NodeId(core.node),
        worker_id: WorkerId(core.me),
        job_id: crate::JobId(core.job),
        gpu_ids: Vec::new(),
        attempt,
    })
}

/// The total resources of the cluster's live nodes.
pub fn cluster_resources() -> Result<std::collections::HashMap<String, f64>> {
    node_stats().map(|s| s.cluster_total)
}

fn node_stats() -> Result<rayr_proto::StoreStatsReply> {
    let core = core::require()?;
    match core.node_conn.call(client_message::Body::StoreStats(rayr_proto::StoreStatsRequest {}))? {
        node_message::Body::StoreStats(s) => Ok(s),
        _ => Err(Error::Connection("unexpected reply to a node query".into())),
    }
}

/// Bytes of this node's shm store in use and its capacity.
pub fn store_usage() -> Result<(u64, u64)> {
    node_stats().map(|s| (s.used_bytes, s.capacity_bytes))
}

/// Resources of the cluster's live nodes not held by any lease right now (this node's as
/// of now, the others' as of their last heartbeat; a worker blocked in `get` gives its
/// CPU back, so this can exceed what idle workers alone would free).
pub fn available_resources() -> Result<std::collections::HashMap<String, f64>> {
    node_stats().map(|s| s.cluster_available)
}
