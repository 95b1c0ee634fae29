//! Detached actors (`lifetime_detached`): actors the node agent holds instead of the
//! process that created them, so they outlive its job.
//!
//! An ordinary actor's owner (its creator) leases its worker, pushes its constructor,
//! restarts it and answers where it lives. A detached actor's creator hands all of that to
//! the agent (`CreateDetachedActor`), which plays the owner: it leases the worker to
//! itself (no client holds the lease, so no client's exit ends it), pushes the constructor
//! over the worker's peer socket, restarts it when its worker dies (`max_restarts`, the
//! job's binary kept after the job ended), holds its name, and answers `ActorLocate`,
//! `ActorKill`, borrows and gets of its address object on the agent's own peer socket
//! (`sockets/node-<id>.peer`), exactly as an owner would. Callers then talk to the
//! actor's worker directly, as they do to any actor. It ends when killed or when the node
//! stops; every step is an event (TASK_SCHEDULED of its constructor, ACTOR_RESTARTED,
//! ACTOR_DIED with its cause).

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rayr_logs::{Id, hex, new_id};
use rayr_proto::frames::FrameReader;
use rayr_proto::{
    ActorDeathCause, TaskErrorKind,
    ActorDetail, ActorLocation, EventKind, PeerMessage, TaskDetail, TaskSpec, encode_frame, event, peer_message, task_arg,
    task_result,
};

use super::{Agent, LeaseFor, PendingLease, State, id_of};
use crate::resources::{self, Resources};

/// A detached actor as the agent holds it.
pub(super) struct DetachedActor {
    pub job: Id,
    /// The job's binary: its workers are started from it after the job ended.
    pub binary: PathBuf,
    /// The constructor's call, re-run on each restart (its arguments are values).
    creation: TaskSpec,
    demand: Resources,
    /// The object handles hold (its first creation's result; owned here).
    info_object: Id,
    restarts_left: i32,
    restarts: u32,
    /// Told to callers: how often a call running when its worker dies runs again.
    max_task_retries: i32,
    /// The worker hosting it (leased, or being created there).
    worker: Option<Id>,
    /// Its worker's socket once the constructor returned: callers may come.
    alive_at: Option<String>,
    /// Why it ended.
    pub dead: Option<String>,
    /// The latest event of its creation (the cause of the next).
    last_event: Vec<u8>,
    /// Its constructor's task is submitted and has not answered (it fails if the actor
    /// ends first).
    creating: bool,
}

impl DetachedActor {
    pub fn live(&self) -> bool {
        self.dead.is_none()
    }
}

impl Agent {
    /// `CreateDetachedActor` from a client of job `job`: checked, its name claimed, its
    /// worker leased. The reply names the agent as the actor's owner.
    pub(super) fn create_detached(self: &Arc<Self>, job: Option<Id>, c: rayr_proto::CreateDetachedActor) -> rayr_proto::DetachedActorReply {
        let mut reply = rayr_proto::DetachedActorReply {
            owner: self.cfg.node_id.to_vec(),
            owner_address: self.peer_socket_path.display().to_string(),
            error: String::new(),
        };
        let refuse = |mut reply: rayr_proto::DetachedActorReply, why: String| {
            reply.error = why;
            reply
        };
        let Some(job) = job else {
            return refuse(reply, "create a detached actor: register first (this connection is not a rayr client)".into());
        };
        let Some(spec) = c.creation else {
            return refuse(reply, "create a detached actor: the request has no constructor call".into());
        };
        let (Some(actor), Some(_), Some(info_object)) = (id_of(&spec.actor_id), id_of(&spec.task_id), id_of(&spec.return_id)) else {
            return refuse(reply, "create a detached actor: actor, task and result ids must be 16 bytes".into());
        };
        if !spec.actor_creation || spec.function.is_empty() {
            return refuse(reply, "create a detached actor: the call is not an actor's constructor".into());
        }
        if spec.args.iter().any(|a| !matches!(a.arg, Some(task_arg::Arg::InlineValue(_)))) {
            return refuse(
                reply,
                "a detached actor's constructor takes its arguments by value (a ref's owner may end before the actor does, and a restart re-runs the constructor): pass the values".into(),
            );
        }
        if !resources::fits(&c.resources, &self.cfg.resources) {
            let why = self.not_here("the actor", &c.resources);
            return refuse(reply, why);
        }
        let Some(binary) = self.state.lock().pool.jobs.get(&job).cloned() else {
            return refuse(reply, "create a detached actor: the job has ended".into());
        };
        // Checked, named and entered under one lock: nothing sees the name before the actor.
        let mut st = self.state.lock();
        if st.detached.contains_key(&actor) {
            drop(st);
            return refuse(reply, format!("create a detached actor: actor {} already exists", hex(&actor)));
        }
        if !c.name.is_empty() {
            let claim = rayr_proto::ActorName {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                actor_id: actor.to_vec(),
                info_object: info_object.to_vec(),
                owner: reply.owner.clone(),
                owner_address: reply.owner_address.clone(),
            };
            let claimed = self.name_actor(claim);
            if !claimed.error.is_empty() {
                drop(st);
                return refuse(reply, claimed.error);
            }
        }
        let last_event = spec.scheduled_event.clone();
        st.detached.insert(
            actor,
            DetachedActor {
                job,
                binary,
                creation: spec,
                demand: c.resources.clone(),
                info_object,
                restarts_left: c.max_restarts.max(-1),
                restarts: 0,
                max_task_retries: c.max_task_retries.max(-1),
                worker: None,
                alive_at: None,
                dead: None,
                last_event,
                creating: true,
            },
        );
        self.lease_for_detached(&mut st, actor);
        reply.error.clear();
        reply
    }

    fn lease_for_detached(self: &Arc<Self>, st: &mut State, actor: Id) {
        let Some(d) = st.detached.get(&actor) else { return };
        let (demand, job) = (d.demand.clone(), d.job);
        st.leases.enqueue(PendingLease { reply_to: LeaseFor::Detached(actor), demand, job, requester: None, dedicated: true, actor: Some(actor) });
        self.grant_pending(st);
    }

    /// Its worker is leased (`worker`, listening at `address`): the constructor is pushed
    /// there, off the state lock.
    pub(super) fn detached_granted(self: &Arc<Self>, st: &mut State, actor: Id, worker: Id, address: String) {
        let Some(d) = st.detached.get_mut(&actor) else { return };
        d.worker = Some(worker);
        let mut e = self.event(EventKind::TaskScheduled);
        e.task_id = d.creation.task_id.clone();
        e.actor_id = actor.to_vec();
        e.worker_id = worker.to_vec();
        e.job_id = d.job.to_vec();
        e.cause = d.last_event.clone();
        e.detail = Some(event::Detail::Task(TaskDetail { function: d.creation.function.clone(), attempt: d.creation.attempt, ..Default::default() }));
        self.record(&e);
        d.last_event = e.id.clone();
        let mut spec = d.creation.clone();
        spec.owner = self.cfg.node_id.to_vec();
        spec.owner_address = self.peer_socket_path.display().to_string();
        spec.scheduled_event = e.id;
        let agent = self.clone();
        let _ = std::thread::Builder::new().name("rayr-detached".into()).spawn(move || agent.run_constructor(actor, worker, address, spec));
    }

    /// Pushes the constructor to the worker and waits for its result: the actor is alive,
    /// or its creation failed. A worker that dies first is seen by its reaper instead.
    fn run_constructor(self: &Arc<Self>, actor: Id, worker: Id, address: String, spec: TaskSpec) {
        let result = (|| -> io::Result<Option<rayr_proto::TaskResult>> {
            let mut stream = rayr_proto::frames::connect(&address)?;
            let mut buf = Vec::new();
            encode_frame(&PeerMessage { req_id: 0, body: Some(peer_message::Body::Push(spec.clone())) }, &mut buf);
            io::Write::write_all(&mut stream, &buf)?;
            let mut reader = FrameReader::new(stream);
            while let Some(msg) = reader.next::<PeerMessage>()? {
                if let Some(peer_message::Body::Result(r)) = msg.body
                    && r.task_id == spec.task_id
                {
                    return Ok(Some(r));
                }
            }
            Ok(None)
        })();
        let Ok(Some(r)) = result else { return };
        let mut st = self.state.lock();
        let Some(d) = st.detached.get_mut(&actor).filter(|d| d.live() && d.worker == Some(worker)) else { return };
        d.last_event = r.finished_event.clone();
        d.creating = false;
        match r.outcome {
            Some(task_result::Outcome::Error(err)) => {
                let detail = format!("its constructor failed: {}", err.message);
                let because = id_of(&r.finished_event);
                self.end_detached(&mut st, actor, ActorDeathCause::CreationFailed, &detail, because);
            }
            Some(task_result::Outcome::Shm(loc)) => {
                // Its address is tiny and comes inline; a value in the store is not used.
                if let Some(o) = id_of(&loc.object_id) {
                    let mut store = self.store.lock();
                    if let Some(obj) = store.objects.remove(&o) {
                        store.free_range(obj.offset, obj.size);
                    }
                }
                st.detached.get_mut(&actor).unwrap().alive_at = Some(address);
            }
            _ => d.alive_at = Some(address),
        }
    }

    /// The actor's worker exited (`exit_event`, `detail`): it restarts while it has
    /// restarts left (ACTOR_RESTARTED caused by the exit), otherwise it is dead.
    pub(super) fn detached_worker_died(self: &Arc<Self>, st: &mut State, actor: Id, worker: Id, exit_event: Id, detail: &str) {
        let Some(d) = st.detached.get_mut(&actor).filter(|d| d.live() && d.worker == Some(worker)) else { return };
        d.alive_at = None;
        let why = format!("its worker {} died: {detail}", hex(&worker));
        if self.stopping.load(Ordering::Acquire) || d.restarts_left == 0 {
            // (ACTOR_DIED names the worker; its lease ended with it.)
            self.end_detached(st, actor, ActorDeathCause::WorkerDied, &why, Some(exit_event));
            return;
        }
        d.worker = None;
        if d.restarts_left > 0 {
            d.restarts_left -= 1;
        }
        d.restarts += 1;
        let mut e = self.event(EventKind::ActorRestarted);
        e.actor_id = actor.to_vec();
        e.job_id = d.job.to_vec();
        e.worker_id = worker.to_vec();
        e.cause = exit_event.to_vec();
        e.detail = Some(event::Detail::Actor(ActorDetail { cause: ActorDeathCause::WorkerDied as i32, detail: why, restart: d.restarts, ..Default::default() }));
        self.record(&e);
        // The constructor runs again as a new task on a new worker.
        d.creation.task_id = new_id().to_vec();
        d.creation.return_id = new_id().to_vec();
        d.creation.attempt = d.restarts;
        d.creating = true;
        let mut s = self.event(EventKind::TaskSubmitted);
        s.task_id = d.creation.task_id.clone();
        s.object_id = d.creation.return_id.clone();
        s.actor_id = actor.to_vec();
        s.job_id = d.job.to_vec();
        s.cause = e.id;
        s.detail = Some(event::Detail::Task(TaskDetail { function: d.creation.function.clone(), attempt: d.restarts, ..Default::default() }));
        self.record(&s);
        d.last_event = s.id;
        self.lease_for_detached(st, actor);
    }

    /// No worker could be started for it (`why`): its creation failed.
    pub(super) fn detached_unstartable(self: &Arc<Self>, st: &mut State, actor: Id, why: &str) {
        let detail = format!("no worker could be started for it: {why}");
        self.end_detached(st, actor, ActorDeathCause::CreationFailed, &detail, None);
    }

    /// The actor ends (`cause`, `detail`, caused by `because`): ACTOR_DIED, its name is
    /// free, a lease waiting for it goes, and its worker is stopped.
    fn end_detached(self: &Arc<Self>, st: &mut State, actor: Id, cause: ActorDeathCause, detail: &str, because: Option<Id>) {
        let Some(d) = st.detached.get_mut(&actor).filter(|d| d.live()) else { return };
        d.dead = Some(format!("{detail} ({})", cause.word()));
        d.alive_at = None;
        let worker = d.worker.take();
        // Nothing re-runs the constructor now: its arguments go.
        d.creation.args.clear();
        if std::mem::take(&mut d.creating) {
            // Its constructor's task never answered: it ends with the actor.
            let mut f = self.event(EventKind::TaskFailed);
            f.task_id = d.creation.task_id.clone();
            f.actor_id = actor.to_vec();
            f.job_id = d.job.to_vec();
            f.cause = d.last_event.clone();
            f.detail = Some(event::Detail::Task(TaskDetail {
                function: d.creation.function.clone(),
                attempt: d.creation.attempt,
                error: format!("the actor ended first: {detail}"),
                r#final: true,
                error_type: TaskErrorKind::ActorDied as i32,
                ..Default::default()
            }));
            self.record(&f);
        }
        let mut e = self.event(EventKind::ActorDied);
        e.actor_id = actor.to_vec();
        e.job_id = d.job.to_vec();
        if let Some(w) = worker {
            e.worker_id = w.to_vec();
        }
        if let Some(c) = because {
            e.cause = c.to_vec();
        }
        let max_restarts = if d.restarts_left < 0 { -1 } else { d.restarts as i32 + d.restarts_left };
        e.detail = Some(event::Detail::Actor(ActorDetail {
            cause: cause as i32,
            detail: detail.into(),
            restart: d.restarts,
            max_restarts,
            detached: true,
            ..Default::default()
        }));
        self.record(&e);
        self.release_name_of_actor(actor);
        st.leases.retain(|_, reply_to, _| !matches!(reply_to, LeaseFor::Detached(a) if *a == actor));
        if let Some(w) = worker {
            self.return_lease_locked(st, w, detail);
        }
    }

    /// `rayr::kill` of a detached actor: with `no_restart` (or none left) it ends (ACTOR_DIED
    /// killed) and its worker is SIGKILLed; otherwise the worker is SIGKILLed and the actor
    /// restarts as after any death of its worker.
    fn kill_detached(self: &Arc<Self>, actor: Id, no_restart: bool) -> Result<(), String> {
        let mut st = self.state.lock();
        let Some(d) = st.detached.get(&actor) else {
            return Err(format!("actor {} is not held by this node agent", hex(&actor)));
        };
        if !d.live() {
            return Ok(()); // already ended: nothing to kill
        }
        let (worker, restarts_left) = (d.worker, d.restarts_left);
        if let Some(w) = worker
            && let Some(sp) = st.pool.spawned.get_mut(&w)
        {
            sp.by_user = true;
        }
        if !no_restart && restarts_left != 0 {
            if let Some(sp) = worker.and_then(|w| st.pool.spawned.get_mut(&w)) {
                sp.intended_exit = Some((rayr_proto::WorkerExitReason::KilledByUser, "killed by rayr::kill (the actor restarts)".into()));
                // Its reaper restarts the actor.
                crate::pool::send_signal(sp.pid, nix::sys::signal::Signal::SIGKILL);
            }
            return Ok(());
        }
        self.end_detached(&mut st, actor, ActorDeathCause::Killed, "killed by rayr::kill", None);
        drop(st);
        Ok(())
    }

    /// The node is stopping: every detached actor ends with it (its worker is being
    /// stopped).
    pub(super) fn end_detached_actors(self: &Arc<Self>, reason: &str) {
        let mut st = self.state.lock();
        let live: Vec<Id> = st.detached.iter().filter(|(_, d)| d.live()).map(|(id, _)| *id).collect();
        for actor in live {
            if let Some(d) = st.detached.get_mut(&actor) {
                // Its worker is stopped with every other: not stopped twice here.
                d.worker = None;
            }
            self.end_detached(&mut st, actor, ActorDeathCause::NodeStopped, &format!("its node agent stopped: {reason}"), None);
        }
    }

    /// Whether `worker` hosts a live detached actor (it outlives its job's driver).
    pub(super) fn hosts_detached(st: &State, worker: &Id) -> bool {
        st.pool.clients.get(worker).and_then(|c| c.actor).is_some_and(|a| st.detached.get(&a).is_some_and(|d| d.live()))
    }

    // ---- the agent's peer socket ----

    /// Serves core workers asking about detached actors, until the agent stops.
    pub(super) fn accept_peers(self: Arc<Self>, listener: UnixListener) {
        for stream in listener.incoming() {
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let agent = self.clone();
            let _ = std::thread::Builder::new().name("rayr-node-peer".into()).spawn(move || agent.serve_peer(stream));
        }
    }

    fn serve_peer(self: Arc<Self>, stream: UnixStream) {
        let Ok(mut write) = stream.try_clone() else { return };
        let mut reader = FrameReader::new(stream);
        loop {
            let msg = match reader.next::<PeerMessage>() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("dropping a peer connection: {e}");
                    break;
                }
            };
            let req_id = msg.req_id;
            let body = match msg.body {
                Some(peer_message::Body::Locate(l)) => Some(peer_message::Body::Location(self.locate_detached(&l.actor_id))),
                Some(peer_message::Body::Kill(k)) => {
                    let error = match id_of(&k.actor_id) {
                        Some(actor) => self.kill_detached(actor, k.no_restart).err().unwrap_or_default(),
                        None => "kill: an actor id is 16 bytes".into(),
                    };
                    Some(peer_message::Body::Killed(rayr_proto::ActorKillReply { error }))
                }
                // A detached actor lives until killed, whoever holds handles: borrows of
                // its address object are acknowledged and not counted.
                Some(peer_message::Body::Borrow(_)) => None,
                Some(peer_message::Body::Get(g)) => Some(peer_message::Body::Value(self.detached_address_value(&g.object_id, g.probe))),
                Some(peer_message::Body::Push(spec)) => {
                    // Not a worker: the task fails instead of waiting for ever.
                    let err = rayr_proto::TaskError {
                        message: "a node agent runs no tasks (a push reached its peer socket)".into(),
                        kind: TaskErrorKind::BadArgument as i32,
                        ..Default::default()
                    };
                    let r = rayr_proto::TaskResult { task_id: spec.task_id, attempt: spec.attempt, outcome: Some(task_result::Outcome::Error(err)), ..Default::default() };
                    Some(peer_message::Body::Result(r))
                }
                _ => continue,
            };
            let mut buf = Vec::new();
            encode_frame(&PeerMessage { req_id, body }, &mut buf);
            if io::Write::write_all(&mut write, &buf).is_err() {
                break;
            }
        }
    }

    /// The answer to `ActorLocate` for an actor held here.
    fn locate_detached(&self, actor: &[u8]) -> ActorLocation {
        let mut out = ActorLocation::default();
        let st = self.state.lock();
        match id_of(actor).and_then(|a| st.detached.get(&a)) {
            None => out.dead = format!("node agent {} holds no such detached actor", hex(&self.cfg.node_id)),
            Some(d) => match (&d.dead, d.worker, &d.alive_at) {
                (Some(why), _, _) => out.dead = why.clone(),
                (None, Some(w), Some(address)) => {
                    out.worker_id = w.to_vec();
                    out.address = address.clone();
                    out.max_concurrency = d.creation.actor_max_concurrency;
                    out.max_task_retries = d.max_task_retries;
                }
                _ => out.pending = true,
            },
        }
        out
    }

    /// The value of a detached actor's address object (`ActorInfo`, postcard: the worker's
    /// 16 id bytes, then its socket as a length-prefixed string).
    fn detached_address_value(&self, object: &[u8], probe: bool) -> rayr_proto::ObjectValue {
        use rayr_proto::object_value::Value;
        let st = self.state.lock();
        let found = id_of(object).and_then(|o| st.detached.values().find(|d| d.info_object == o));
        let value = match found {
            Some(d) => match (&d.dead, d.worker, &d.alive_at) {
                (None, Some(w), Some(address)) => {
                    let mut bytes = w.to_vec();
                    let mut n = address.len();
                    while n >= 0x80 {
                        bytes.push((n as u8) | 0x80);
                        n >>= 7;
                    }
                    bytes.push(n as u8);
                    bytes.extend_from_slice(address.as_bytes());
                    Value::InlineValue(bytes)
                }
                (Some(why), _, _) => Value::Error(format!("the actor is dead: {why}")),
                // Only a probe may be told "not yet"; a reader waiting for the value asks
                // again (or asks where the actor lives, which waits).
                _ if probe => Value::Pending(true),
                _ => Value::Error("the actor is being created: ask where it lives (ActorLocate) instead".into()),
            },
            None => Value::Error(format!("object {} is not known to node agent {}", hex(object), hex(&self.cfg.node_id))),
        };
        rayr_proto::ObjectValue { object_id: object.to_vec(), value: Some(value), inline_format: 0 }
    }
}
