//! Actors: a value whose state lives in one dedicated worker process, called through
//! handles (`#[rayr::actor]` generates a typed `<Name>Handle` around [`ActorHandle`]).
//!
//! Creating an actor submits its constructor as a task on the actor's own queue; the
//! owner leases a *dedicated* worker for it, which hosts the state and serves no one else,
//! and which the node agent stops when the lease ends. The creation's result is the
//! actor's address ([`ActorInfo`]) and stands for the actor's life: handles hold a ref to
//! it, so an actor lives exactly as long as some handle (here, in a task, or inside
//! another object) does, by the same ownership and borrowing as any object. Calls are
//! tasks on the actor's queue: from one caller, over one connection, they run in the
//! order they were made. A process given a handle asks the actor's owner where the actor
//! lives (`ActorLocate`), at its first call and again after the actor's worker died: the
//! owner knows whether it restarted, and where.

use std::sync::Arc;

use rayr_logs::{Id, new_id};
use serde::{Deserialize, Serialize};

use crate::api::{ActorTask, ArgValue, submit};
use crate::core::{self, Slot};
use crate::error::Error;
use crate::object_ref::ObjectRef;
use crate::{ActorId, TaskOptions};

/// Where an actor lives: its worker, and that worker's socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActorInfo {
    pub worker: Id,
    pub address: String,
}

/// A handle to an actor; `Clone`, and serializable into task arguments and objects (the
/// receiver then holds the actor alive too).
#[derive(Clone, Serialize, Deserialize)]
pub struct ActorHandle {
    id: Id,
    info: ObjectRef<ActorInfo>,
}

impl std::fmt::Debug for ActorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle({})", rayr_logs::hex(&self.id))
    }
}

/// Creates an actor of `class` (its constructor's arguments in `args`) with `opts`
/// (generated code calls this). Never blocks; a failed creation fails the actor's calls.
pub fn create_actor(class: &'static str, args: Vec<ArgValue>, opts: &TaskOptions) -> ActorHandle {
    let id = new_id();
    let refused = if opts.max_concurrency > MAX_CONCURRENCY {
        Some(format!("max_concurrency {} asks for that many threads in its worker; at most {MAX_CONCURRENCY}", opts.max_concurrency))
    } else if opts.max_concurrency > 1 && crate::registry::actor_class(class).is_some_and(|c| !(c.sync)()) {
        Some(not_sync(class, opts.max_concurrency))
    } else {
        None
    };
    if let Some(why) = refused
        && let Some(core) = core::current()
    {
        // Said at once, in the actor's death: its worker would refuse it anyway.
        let info = failed(&core, Error::ActorDied { actor: ActorId(id), cause: why.clone() });
        core.actor_never_created(id, &why);
        return ActorHandle { id, info };
    }
    if opts.detached {
        return create_detached(id, class, args, opts);
    }
    let Some(core) = core::current() else {
        // `get` on its calls reports that rayr is not initialized.
        return ActorHandle { id, info: submit(class, args, opts, None) };
    };
    let ret = new_id();
    core.actor_configured(id, opts);
    if let Some(name) = &opts.name {
        // Claimed with the node before the constructor runs anywhere: a name taken by a
        // live actor ends this one at once.
        let claim = rayr_proto::ActorName {
            namespace: opts.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            actor_id: id.to_vec(),
            info_object: ret.to_vec(),
            owner: core.me.to_vec(),
            owner_address: core.address.clone(),
        };
        let refused = match core.node_conn.call(rayr_proto::client_message::Body::NameActor(claim.clone())) {
            Ok(rayr_proto::node_message::Body::ActorName(r)) if r.error.is_empty() => {
                core.actor_named(id, claim);
                None
            }
            Ok(rayr_proto::node_message::Body::ActorName(r)) => Some(r.error),
            Ok(_) => Some("the node agent answered the name claim with something else".to_string()),
            Err(e) => Some(format!("its name could not be claimed: {e}")),
        };
        if let Some(why) = refused {
            let info = failed(&core, Error::ActorDied { actor: ActorId(id), cause: why.clone() });
            core.actor_never_created(id, &why);
            return ActorHandle { id, info };
        }
    }
    let info: ObjectRef<ActorInfo> = submit(class, args, opts, Some(ActorTask { actor: id, creation: true, keep_alive: None, return_id: Some(ret) }));
    core.actor_created(id, info.handle.id);
    ActorHandle { id, info }
}

/// The most calls an actor may run at once (threads in its worker).
pub(crate) const MAX_CONCURRENCY: u32 = 1000;

/// Why an actor type that is not `Sync` cannot run calls concurrently.
pub(crate) fn not_sync(class: &str, max_concurrency: u32) -> String {
    format!(
        "max_concurrency {max_concurrency} runs its &self methods on several threads at once, but {class} is not Sync: make its fields thread-safe (atomics, Mutex) or leave max_concurrency at 1"
    )
}

/// A detached actor: its creation goes to the node agent, which holds it from then on (see
/// the node agent's `detached` module); this process only borrows it, like any holder of
/// a handle it was given. Never blocks on the constructor.
fn create_detached(id: Id, class: &'static str, args: Vec<ArgValue>, opts: &TaskOptions) -> ActorHandle {
    let Some(core) = core::current() else {
        // `get` on its calls reports that rayr is not initialized.
        return ActorHandle { id, info: submit(class, Vec::new(), opts, None) };
    };
    let never = |why: String| {
        let info = failed(&core, Error::ActorDied { actor: ActorId(id), cause: why.clone() });
        core.actor_never_created(id, &why);
        ActorHandle { id, info }
    };
    let mut values = Vec::with_capacity(args.len());
    for (i, a) in args.into_iter().enumerate() {
        match a {
            ArgValue::Value(Ok(bytes), nested) if nested.is_empty() => {
                values.push(rayr_proto::TaskArg { arg: Some(rayr_proto::task_arg::Arg::InlineValue(bytes)) })
            }
            ArgValue::Value(Err(e), _) => return never(format!("its constructor's argument {i} cannot be serialized: {e}")),
            _ => {
                return never(format!(
                    "its constructor's argument {i} is a ref (or holds one): a detached actor outlives its creator, whose refs end with it, and a restart re-runs the constructor; pass the value"
                ));
            }
        }
    }
    let (task, ret) = (new_id(), new_id());
    let submitted = core.emit(rayr_proto::EventKind::TaskSubmitted, |e| {
        e.task(&task).object(&ret).actor(&id);
        e.task_detail(|d| {
            d.function(class);
        });
    });
    let namespace = opts.namespace.clone().unwrap_or_default();
    let name = opts.name.clone().unwrap_or_default();
    let creation = rayr_proto::TaskSpec {
        task_id: task.to_vec(),
        job_id: core.job.to_vec(),
        function: class.to_string(),
        args: values,
        return_id: ret.to_vec(),
        actor_id: id.to_vec(),
        actor_creation: true,
        actor_name: if name.is_empty() { String::new() } else { format!("{namespace}/{name}") },
        actor_detached: true,
        actor_max_concurrency: opts.max_concurrency,
        // The cause of the agent's TASK_SCHEDULED.
        scheduled_event: submitted.to_vec(),
        ..Default::default()
    };
    let request = rayr_proto::CreateDetachedActor { creation: Some(creation), resources: opts.resources.clone(), max_restarts: opts.max_restarts, namespace, name, max_task_retries: opts.max_task_retries };
    let refused = |why: String| {
        // Its constructor's task ends here, with the actor.
        let mut f = core.event(rayr_proto::EventKind::TaskFailed);
        f.task_id = task.to_vec();
        f.actor_id = id.to_vec();
        f.cause = submitted.to_vec();
        f.detail = Some(rayr_proto::event::Detail::Task(rayr_proto::TaskDetail {
            function: class.to_string(),
            error: why.clone(),
            r#final: true,
            error_type: rayr_proto::TaskErrorKind::CreationRefused as i32,
            ..Default::default()
        }));
        core.record(f);
        never(why)
    };
    let reply = match core.node_conn.call(rayr_proto::client_message::Body::CreateDetached(request)) {
        Ok(rayr_proto::node_message::Body::Detached(r)) => r,
        Ok(_) => return refused("the node agent answered its creation with something else".into()),
        Err(e) => return refused(format!("the node agent could not be asked to create it: {e}")),
    };
    let Ok(owner) = <Id>::try_from(reply.owner.as_slice()) else {
        return refused(if reply.error.is_empty() { "the node agent named no owner for it".into() } else { reply.error });
    };
    if !reply.error.is_empty() {
        return refused(reply.error);
    }
    // Held by the agent: this process borrows its address object, as if given a handle.
    let handle = core.adopt(ret, owner, reply.owner_address, None, false);
    ActorHandle { id, info: ObjectRef::from_handle(handle) }
}

/// `<Name>Handle::get_named(namespace, name)`: the live actor with that name, as a handle
/// of this process (which then keeps it alive too).
pub fn get_named(namespace: &str, name: &str) -> crate::Result<ActorHandle> {
    let core = core::require()?;
    let ask = rayr_proto::ActorName { namespace: namespace.to_string(), name: name.to_string(), ..Default::default() };
    let found = match core.node_conn.call(rayr_proto::client_message::Body::LookupActor(ask))? {
        rayr_proto::node_message::Body::ActorName(r) if r.error.is_empty() => r.actor,
        _ => None,
    };
    let not_found = || Error::ActorNotFound { namespace: namespace.to_string(), name: name.to_string() };
    let a = found.ok_or_else(not_found)?;
    let (Ok(id), Ok(info), Ok(owner)) = (<Id>::try_from(a.actor_id.as_slice()), <Id>::try_from(a.info_object.as_slice()), <Id>::try_from(a.owner.as_slice())) else {
        return Err(not_found());
    };
    // A borrow of the owner's creation result, as if the handle had been sent here.
    let handle = core.adopt(info, owner, a.owner_address, None, false);
    Ok(ActorHandle { id, info: ObjectRef::from_handle(handle) })
}

impl ActorHandle {
    /// The actor's id (what `rayr why-died` explains).
    pub fn id(&self) -> ActorId {
        ActorId(self.id)
    }

    /// Calls `method` (`class::method`) with `args`; the result's ref, as for a task.
    pub fn call<R>(&self, method: &'static str, args: Vec<ArgValue>) -> ObjectRef<R> {
        if let Some(core) = core::current()
            && !core.actor_reachable(&self.id)
        {
            if let Some(err) = foreign(&core, self) {
                return failed(&core, err);
            }
            // Given this handle by someone else: its owner is asked where the actor lives
            // (once per life); this call queues meanwhile.
            core.start_locating(self.id, &self.info.handle.owner_address);
        }
        submit(method, args, &TaskOptions::default(), Some(ActorTask { actor: self.id, creation: false, keep_alive: Some(self.info.handle.clone()), return_id: None }))
    }
}

/// What `rayr::kill` takes: any actor handle.
pub trait AsActorHandle {
    fn actor_handle(&self) -> &ActorHandle;
}

impl AsActorHandle for ActorHandle {
    fn actor_handle(&self) -> &ActorHandle {
        self
    }
}

/// Kills an actor at once: its worker is stopped (mid-call if need be). With `no_restart`,
/// or no restarts left, the actor ends: its pending and later calls fail with
/// `Error::ActorDied` (ACTOR_DIED, cause `killed`); otherwise it restarts as after any
/// death of its worker (the calls that were running fail). Any process holding a handle may
/// kill it: one that did not create it asks the creator, which holds its worker.
pub fn kill<H: AsActorHandle>(handle: &H, no_restart: bool) -> crate::Result<()> {
    let core = core::require()?;
    let h = handle.actor_handle();
    if let Some(err) = foreign(&core, h) {
        return Err(err);
    }
    if h.info.handle.owner == core.me {
        return core.kill_actor(h.id, no_restart);
    }
    let gone = |e: String| Error::ActorDied { actor: ActorId(h.id), cause: format!("its owner cannot be reached to kill it ({e}): it has exited") };
    let owner = core.peer(&h.info.handle.owner_address).map_err(|e| gone(e.to_string()))?;
    let msg = rayr_proto::PeerMessage {
        req_id: 0,
        body: Some(rayr_proto::peer_message::Body::Kill(rayr_proto::ActorKill { actor_id: h.id.to_vec(), no_restart })),
    };
    match owner.call(msg, Some(std::time::Duration::from_secs(10))).map_err(|_| gone("no answer".into()))?.body {
        Some(rayr_proto::peer_message::Body::Killed(r)) if r.error.is_empty() => {
            if no_restart {
                // Ended: later calls from here fail at once, saying so.
                core.actor_dead_here(h.id, rayr_proto::ActorDeathCause::Killed, "killed by rayr::kill");
            }
            Ok(())
        }
        Some(rayr_proto::peer_message::Body::Killed(r)) => Err(Error::Connection(r.error)),
        _ => Err(Error::Connection("the actor's owner answered the kill with something else".into())),
    }
}

/// `Error::ForeignActor` when the handle's owner is not of this cluster: every process of
/// a cluster listens in its session's socket directory.
fn foreign(core: &core::Core, h: &ActorHandle) -> Option<Error> {
    let owner = std::path::Path::new(&*h.info.handle.owner_address);
    if owner.starts_with(rayr_logs::Session::open(&core.session_dir).sockets_dir()) {
        return None;
    }
    let cluster = rayr_logs::Session::of_socket(owner).map_or_else(|| h.info.handle.owner_address.to_string(), |s| format!("session {}", s.dir.display()));
    Some(Error::ForeignActor { actor: ActorId(h.id), cluster })
}

/// A ref whose value is `err`.
fn failed<R>(core: &Arc<core::Core>, err: Error) -> ObjectRef<R> {
    let id = new_id();
    let mut st = core.state.lock();
    core.own(&mut st, id, Slot::Failed(err));
    drop(st);
    ObjectRef::from_handle(core.owned_handle(id))
}
